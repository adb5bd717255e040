//! Pods, both ways: a virtual pod runs as its host copy, and the host pod's status, node and
//! fate flow back.
//!
//! Level-triggered (DESIGN rule 7): a reconcile looks at the virtual pod and its host copy (by
//! the pure host name) and does what the pair needs:
//! - no host pod, virtual pod never ran: create the host pod;
//! - no host pod, virtual pod ran (bound, with a host IP), or the host pod is being deleted
//!   though the virtual pod is not: the host pod was lost, so the virtual pod goes too and its
//!   owner makes a new one;
//! - host pod of an older virtual pod of the same name (another uid): delete it first;
//! - host pod scheduled, virtual pod unbound: bind the virtual pod to the virtual node of that
//!   name (made from the host node, or a fake node when the host does not show its nodes);
//! - otherwise carry image and deadline changes down and the status up.
//!
//! A virtual pod deleted deletes its host pod (with the host pod's uid as precondition), at once
//! through a watch of deletes, and by the orphan sweep after a restart that missed the event.

use crate::{Config, Error, configs, names, nodes, tokens, translate, volumes, write_status};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{
    Binding, ConfigMap, ObjectReference, Pod, PodCondition, PodStatus, Secret,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use std::sync::Arc;
use std::time::Duration;

pub async fn run(config: Config) -> Result<(), Error> {
    let virtual_pods: Api<Pod> = Api::all(config.virtual_client.clone());
    let controller = crate::paired_controller::<Pod>(&config, "Pod");
    let store = controller.store();
    let ctx = Arc::new(config.clone());
    let reconciling = controller
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!(%err, "pod reconcile");
            }
        });
    tokio::select! {
        _ = reconciling => Ok(()),
        r = follow_deletes(config.clone(), virtual_pods) => r,
        r = sweep_orphans(config, store) => r,
    }
}

fn host_api(config: &Config) -> Api<Pod> {
    Api::namespaced(config.host_client.clone(), &config.host_namespace)
}

fn error_policy(_pod: Arc<Pod>, err: &Error, _config: Arc<Config>) -> Action {
    tracing::warn!(%err, "pod sync failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// The pod's namespace, name and uid.
fn identity(pod: &Pod) -> (String, String, String) {
    let m = &pod.metadata;
    (
        m.namespace.clone().unwrap_or_default(),
        m.name.clone().unwrap_or_default(),
        m.uid.clone().unwrap_or_default(),
    )
}

async fn reconcile(vpod: Arc<Pod>, config: Arc<Config>) -> Result<Action, Error> {
    let (ns, name, uid) = identity(&vpod);
    let host_name = names::host_name("Pod", &ns, &name, &config.cluster);
    let host_pods = host_api(&config);
    let virtual_pods: Api<Pod> = Api::namespaced(config.virtual_client.clone(), &ns);
    // A pod this process has not seen yet is almost always new: its host copy is created without
    // asking first (a copy that exists answers 409, and the next reconcile reads it).
    let first = first_sight(&uid)
        && vpod.metadata.deletion_timestamp.is_none()
        && vpod.spec.as_ref().is_some_and(|s| s.node_name.is_none());
    let host = if first {
        None
    } else {
        host_pods.get_opt(&host_name).await?
    };
    if let Some(h) = &host {
        match names::virtual_of(h.metadata.annotations.as_ref()) {
            Some((hns, hname, huid)) if hns == ns && hname == name => {
                if huid != uid {
                    // The host pod of an earlier virtual pod of this name: it goes first.
                    crate::delete_exact(&host_pods, h).await?;
                    return Ok(Action::requeue(Duration::from_secs(1)));
                }
            }
            _ => {
                let message = format!(
                    "host pod {host_name} in namespace {} belongs to another object; the syncer leaves it alone",
                    config.host_namespace
                );
                report(&virtual_pods, &vpod, "HostNameTaken", &message).await?;
                return Ok(Action::requeue(config.resync));
            }
        }
    }
    if vpod.metadata.deletion_timestamp.is_some() {
        if let Some(h) = &host {
            crate::delete_exact(&host_pods, h).await?;
        }
        return Ok(Action::await_change());
    }
    let host_deleting = host
        .as_ref()
        .is_some_and(|h| h.metadata.deletion_timestamp.is_some());
    let Some(host) = host.filter(|_| !host_deleting) else {
        let spec = vpod.spec.as_ref();
        let status = vpod.status.as_ref();
        if host_deleting
            || (spec.is_some_and(|s| s.node_name.is_some())
                && status.is_some_and(|s| s.host_ip.is_some()))
        {
            // It ran, and its host pod is gone or going (deleted out of band, or its node went
            // away): the virtual pod goes too, so its owner replaces it.
            tracing::info!(namespace = %ns, pod = %name, "host pod gone; deleting the virtual pod");
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            ignore_gone(virtual_pods.delete(&name, &params).await.map(|_| ()))?;
            return Ok(Action::await_change());
        }
        // What the pod uses goes first, as a kubelet waits for it.
        for r in translate::references(&vpod) {
            let found = match r.kind {
                "ConfigMap" => configs::ensure::<ConfigMap>(&config, &ns, &r.name).await?,
                _ => configs::ensure::<Secret>(&config, &ns, &r.name).await?,
            };
            if !found && !r.optional {
                let message = format!("{} {:?} not found", r.kind.to_ascii_lowercase(), r.name);
                report(&virtual_pods, &vpod, "CreateContainerConfigError", &message).await?;
                return Ok(Action::requeue(Duration::from_secs(2)));
            }
        }
        // Its claims too: the host copy of each must exist for the host pod to be scheduled.
        for claim in translate::claims(&vpod) {
            if !volumes::ensure(&config, &ns, &claim).await? {
                let message = format!("persistentvolumeclaim {claim:?} not found");
                report(&virtual_pods, &vpod, "Unschedulable", &message).await?;
                return Ok(Action::requeue(Duration::from_secs(2)));
            }
        }
        let wanted = translate::host_pod(&vpod, &config.environment());
        if wanted.is_ok()
            && let Err(err) = tokens::ensure(&config, &vpod, None, first).await
        {
            let message = format!("service account token: {err}");
            report(&virtual_pods, &vpod, "CreateContainerConfigError", &message).await?;
            return Ok(Action::requeue(Duration::from_secs(2)));
        }
        match wanted {
            Err(unsupported) => {
                report(&virtual_pods, &vpod, "SyncUnsupported", &unsupported.0).await?;
            }
            Ok(mut wanted) => match host_pods
                .create(&PostParams::default(), {
                    // Added later through the subresource, as the API requires.
                    if let Some(spec) = wanted.spec.as_mut() {
                        spec.ephemeral_containers = None;
                    }
                    &wanted
                })
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    return Ok(Action::requeue(Duration::from_millis(200)));
                }
                // The host refused it (quota, Pod Security, validation): the tenant sees why.
                Err(kube::Error::Api(e)) => {
                    let message = format!("the host cluster refused the pod: {}", e.message);
                    report(&virtual_pods, &vpod, "HostRefused", &message).await?;
                    return Ok(Action::requeue(Duration::from_secs(10)));
                }
                Err(e) => return Err(e.into()),
            },
        }
        return Ok(Action::requeue(config.resync));
    };
    // Tokens are renewed as a kubelet would; the next reconcile comes no later than that.
    let refresh = tokens::ensure(&config, &vpod, Some(&host), false)
        .await?
        .map_or(config.resync, |d| d.min(config.resync));
    if let Ok(wanted) = translate::host_pod(&vpod, &config.environment()) {
        if let Some(next) = translate::spec_update(&host, &wanted) {
            host_pods
                .replace(&host_name, &PostParams::default(), &next)
                .await?;
        }
        // `kubectl debug` and in-place resize: through the host pod's subresources.
        for (sub, next) in [
            (
                "ephemeralcontainers",
                translate::ephemeral_update(&host, &wanted),
            ),
            ("resize", translate::resize_update(&host, &wanted)),
        ] {
            let Some(next) = next else { continue };
            match host_pods
                .replace_subresource(sub, &host_name, &PostParams::default(), &next)
                .await
            {
                Ok(_) => {}
                // The host pod changed meanwhile: the next reconcile sees the new one.
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    return Ok(Action::requeue(Duration::from_millis(200)));
                }
                Err(kube::Error::Api(e)) => {
                    let message =
                        format!("the host cluster refused the pod's {sub}: {}", e.message);
                    tracing::warn!(pod = %name, %message);
                    crate::events::emit(&config, &vpod, "Warning", "HostRefused", &message).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    let host_node = host.spec.as_ref().and_then(|s| s.node_name.clone());
    let virtual_node = vpod.spec.as_ref().and_then(|s| s.node_name.clone());
    if let Some(node) = host_node
        && virtual_node.is_none()
    {
        // The node exists from before the binding until after it (an unused fake node is not
        // removed in between).
        let _binding = nodes::binding().await;
        let host_ip = host.status.as_ref().and_then(|s| s.host_ip.as_deref());
        nodes::ensure(&config, &node, host_ip).await?;
        bind(&virtual_pods, &name, &node).await?;
        // The binding changed the virtual pod; its status follows on the next reconcile.
        return Ok(Action::requeue(Duration::from_millis(50)));
    }
    if !sync_status(&virtual_pods, &vpod, &host).await? {
        // The virtual pod changed under us (a binding, say): again with the new version.
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    Ok(Action::requeue(refresh))
}

async fn bind(virtual_pods: &Api<Pod>, name: &str, node: &str) -> Result<(), Error> {
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        target: ObjectReference {
            kind: Some("Node".into()),
            api_version: Some("v1".into()),
            name: Some(node.to_string()),
            ..Default::default()
        },
    };
    let bound: Result<serde_json::Value, _> = virtual_pods
        .create_subresource("binding", name, &PostParams::default(), &binding)
        .await;
    match bound {
        Ok(_) => Ok(()),
        // Bound meanwhile (by an earlier reconcile whose answer was lost): fine.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The host pod's status, as the virtual pod's. `Ok(false)`: the virtual pod changed meanwhile.
async fn sync_status(virtual_pods: &Api<Pod>, vpod: &Pod, host: &Pod) -> Result<bool, Error> {
    if host.status.is_none() || vpod.status == host.status {
        return Ok(true);
    }
    let mut next = vpod.clone();
    next.status = host.status.clone();
    write_status(virtual_pods, &next).await
}

/// Why the pod does not run, as the condition a scheduler sets on a pod it cannot place:
/// `kubectl describe` and `get -o yaml` show it, and the pod is not silently Pending.
async fn report(
    virtual_pods: &Api<Pod>,
    vpod: &Pod,
    reason: &str,
    message: &str,
) -> Result<(), Error> {
    let mut status = vpod.status.clone().unwrap_or_default();
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    if conditions.iter().any(|c| {
        c.type_ == "PodScheduled"
            && c.reason.as_deref() == Some(reason)
            && c.message.as_deref() == Some(message)
    }) {
        return Ok(());
    }
    tracing::warn!(pod = ?vpod.metadata.name, reason, message, "pod not synced to the host");
    conditions.retain(|c| c.type_ != "PodScheduled");
    conditions.push(PodCondition {
        type_: "PodScheduled".into(),
        status: "False".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_transition_time: Some(Time(now())),
        ..Default::default()
    });
    if status.phase.is_none() {
        status = PodStatus {
            phase: Some("Pending".into()),
            ..status
        };
    }
    let mut next = vpod.clone();
    next.status = Some(status);
    write_status(virtual_pods, &next).await.map(|_| ())
}

fn now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}

/// A delete that found the object gone, or replaced (uid precondition), did its job.
fn ignore_gone(result: Result<(), kube::Error>) -> Result<(), Error> {
    match result {
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        other => other.map_err(Error::from),
    }
}

/// Deletes of virtual pods, as they happen: the host copy goes at once.
async fn follow_deletes(config: Config, virtual_pods: Api<Pod>) -> Result<(), Error> {
    // Deletes are carried out concurrently (a scale-down of hundreds must not queue behind one
    // another's round trips), at most this many at once.
    let limit = Arc::new(tokio::sync::Semaphore::new(32));
    let mut events = std::pin::pin!(watcher(virtual_pods, watcher::Config::default()));
    while let Some(event) = events.next().await {
        let Ok(watcher::Event::Delete(vpod)) = event else {
            continue;
        };
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        let config = config.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let (ns, name, uid) = identity(&vpod);
            forget_sight(&uid);
            let host_name = names::host_name("Pod", &ns, &name, &config.cluster);
            if let Err(err) =
                crate::delete_copy_of(&host_api(&config), &host_name, Some(&uid)).await
            {
                tracing::warn!(%err, pod = %name, "deleting the host pod; the sweep will retry");
            }
            let secret = translate::token_secret_name(&ns, &name, &config.cluster);
            if let Err(err) = tokens::delete(&config, &secret, &uid).await {
                tracing::warn!(%err, pod = %name, "deleting the pod's token secret");
            }
        });
    }
    Ok(())
}

/// The virtual pods (by uid) this process has reconciled.
fn sightings() -> &'static std::sync::Mutex<std::collections::HashSet<String>> {
    static SEEN: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<String>>> =
        std::sync::OnceLock::new();
    SEEN.get_or_init(Default::default)
}

/// True the first time this process reconciles the pod with `uid`.
fn first_sight(uid: &str) -> bool {
    let mut seen = sightings().lock().unwrap_or_else(|e| e.into_inner());
    seen.insert(uid.to_string())
}

fn forget_sight(uid: &str) {
    let mut seen = sightings().lock().unwrap_or_else(|e| e.into_inner());
    seen.remove(uid);
}

/// Host pods whose virtual pod is gone (a delete missed while no syncer ran): deleted, after
/// asking the virtual API itself, since the cache may lag.
async fn sweep_orphans(config: Config, store: Store<Pod>) -> Result<(), Error> {
    let host_pods = host_api(&config);
    let selector = names::selector("Pod", &config.cluster);
    store
        .wait_until_ready()
        .await
        .map_err(|e| Error::Invalid(e.to_string()))?;
    loop {
        match host_pods
            .list(&ListParams::default().labels(&selector))
            .await
        {
            Ok(list) => {
                for host in list.items {
                    if let Err(err) = sweep_one(&config, &store, &host_pods, &host).await {
                        tracing::warn!(%err, "orphan sweep");
                    }
                }
            }
            Err(err) => tracing::warn!(%err, "listing host pods for the orphan sweep"),
        }
        tokio::time::sleep(config.resync.min(Duration::from_secs(10))).await;
    }
}

async fn sweep_one(
    config: &Config,
    store: &Store<Pod>,
    host_pods: &Api<Pod>,
    host: &Pod,
) -> Result<(), Error> {
    // Only host pods whose annotations name a virtual pod are ours to judge (rule 8).
    let Some((ns, name, uid)) = names::virtual_of(host.metadata.annotations.as_ref()) else {
        return Ok(());
    };
    let cached = store.get(&ObjectRef::new(&name).within(&ns));
    if cached.is_some_and(|p| p.metadata.uid.as_deref() == Some(uid.as_str())) {
        return Ok(());
    }
    let virtual_pods: Api<Pod> = Api::namespaced(config.virtual_client.clone(), &ns);
    let live = virtual_pods.get_opt(&name).await?;
    if live.is_some_and(|p| p.metadata.uid.as_deref() == Some(uid.as_str())) {
        return Ok(());
    }
    tracing::info!(namespace = %ns, pod = %name, "deleting an orphaned host pod");
    crate::delete_exact(host_pods, host).await
}
