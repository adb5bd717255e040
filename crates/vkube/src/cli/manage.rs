//! `vkube list`, `delete`, `pause` and `resume`.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;
use vkube_syncer::names::CLUSTER_LABEL;

use super::create::CREATED_FOR_LABEL;
use super::host::{Host, explain};
use super::progress::Progress;
use super::release;
use super::{HostFlags, namespace_of};

/// On a paused virtual cluster's StatefulSet: how many replicas to bring back.
const PAUSED_REPLICAS: &str = "vkube.dev/paused-replicas";
/// On a paused virtual cluster's StatefulSet: how many workload pods it had on the host.
const PAUSED_WORKLOADS: &str = "vkube.dev/paused-workloads";

pub fn is_paused(set: &StatefulSet) -> bool {
    set.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(PAUSED_REPLICAS))
}

#[derive(clap::Args)]
pub struct ListArgs {
    /// Output format: table or json.
    #[arg(short = 'o', long, default_value = "table", value_parser = ["table", "json"])]
    pub output: String,
    #[command(flatten)]
    pub host: HostFlags,
}

#[derive(clap::Args)]
pub struct DeleteArgs {
    pub name: String,
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Keep the control plane's volumes (its data) on the host.
    #[arg(long)]
    pub keep_pvc: bool,
    /// Delete the namespace too (default: only if `vkube create` made it).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub delete_namespace: Option<bool>,
    /// Wait until everything is gone.
    #[arg(long)]
    pub wait: bool,
    /// A missing virtual cluster is not an error.
    #[arg(long)]
    pub ignore_not_found: bool,
    #[command(flatten)]
    pub host: HostFlags,
}

#[derive(clap::Args)]
pub struct PauseArgs {
    pub name: String,
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// How long `resume` waits for the replicas.
    #[arg(long, default_value = "5m", value_parser = super::parse_timeout)]
    pub timeout: Duration,
    #[command(flatten)]
    pub host: HostFlags,
}

pub async fn list(args: ListArgs) -> Result<()> {
    let host = Host::connect(&args.host).await?;
    let params = ListParams::default().labels("app=vkube,release");
    let sets = match Api::<StatefulSet>::all(host.client.clone())
        .list(&params)
        .await
    {
        Ok(list) => list.items,
        // Without cluster-wide read, the kubeconfig's namespace is what this user can see.
        Err(kube::Error::Api(s)) if s.code == 403 => {
            Api::<StatefulSet>::default_namespaced(host.client.clone())
                .list(&params)
                .await
                .map_err(|e| explain(e, "listing StatefulSets"))?
                .items
        }
        Err(e) => return Err(explain(e, "listing StatefulSets on the host")),
    };
    let connected = super::connect::current_connection();
    let now = k8s_openapi::jiff::Timestamp::now();
    let mut rows = Vec::new();
    for set in &sets {
        let name = set.metadata.name.clone().unwrap_or_default();
        let namespace = set.metadata.namespace.clone().unwrap_or_default();
        let wanted = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let ready = set
            .status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0);
        let status = if is_paused(set) {
            "Paused"
        } else if wanted > 0 && ready >= wanted {
            "Running"
        } else {
            "Pending"
        };
        let version = set
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|s| s.containers.first())
            .and_then(|c| c.image.as_deref())
            .and_then(|i| i.rsplit_once(':'))
            .map(|(_, tag)| tag.to_string())
            .unwrap_or_default();
        let is_connected = connected
            .as_ref()
            .is_some_and(|(n, ns)| *n == name && *ns == namespace);
        let created = set.metadata.creation_timestamp.as_ref().map(|t| t.0);
        rows.push(json!({
            "name": name, "namespace": namespace, "status": status, "version": version,
            "connected": is_connected, "replicas": wanted, "readyReplicas": ready,
            "created": created.map(|t| t.to_string()),
            "age": created.map(|t| age(now.duration_since(t).as_secs())).unwrap_or_default(),
        }));
    }
    if args.output == "json" {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let header: Vec<String> = ["NAME", "NAMESPACE", "STATUS", "VERSION", "CONNECTED", "AGE"]
        .map(str::to_string)
        .to_vec();
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            vec![
                s("name"),
                s("namespace"),
                s("status"),
                s("version"),
                if r["connected"] == true {
                    "True"
                } else {
                    "False"
                }
                .to_string(),
                s("age"),
            ]
        })
        .collect();
    crate::check::print_table(&header, &table);
    Ok(())
}

/// kubectl's AGE: 45s, 12m, 5h, 3d.
fn age(secs: i64) -> String {
    match secs.max(0) {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

pub async fn delete(args: DeleteArgs) -> Result<()> {
    let host = Host::connect(&args.host).await?;
    let name = args.name.as_str();
    let namespace = namespace_of(name, &args.namespace);
    let revisions = release::revisions(&host.client, &namespace, name).await?;
    let latest = revisions.last().map(release::from_secret).transpose()?;
    if latest
        .as_ref()
        .is_some_and(|r| r.chart != release::CHART_NAME)
    {
        bail!(
            "the Helm release {name} in namespace {namespace} is not a virtual cluster; remove it with `helm uninstall {name} -n {namespace}`"
        );
    }
    let sets: Api<StatefulSet> = Api::namespaced(host.client.clone(), &namespace);
    let set = sets
        .get_opt(name)
        .await
        .map_err(|e| explain(e, "reading the StatefulSet"))?;
    if latest.is_none() && set.is_none() {
        if args.ignore_not_found {
            eprintln!(
                "virtual cluster {name} not found in namespace {namespace}; nothing to delete"
            );
            return Ok(());
        }
        bail!(
            "virtual cluster {name} not found in namespace {namespace} (`vkube list` shows them; --ignore-not-found makes this not an error)"
        );
    }
    let mut progress = Progress::new();
    super::connect::forget(name, &namespace)?;
    // The release's objects, as `helm uninstall` removes them.
    let mut removed = 0;
    if let Some(latest) = &latest {
        for object in release::manifest_objects(&latest.manifest)? {
            removed += usize::from(host.delete(&object).await?);
        }
    } else if set.is_some() {
        sets.delete(name, &DeleteParams::background())
            .await
            .map_err(|e| explain(e, "deleting the StatefulSet"))?;
        removed += 1;
    }
    let secrets: Api<Secret> = Api::namespaced(host.client.clone(), &namespace);
    for secret in revisions
        .iter()
        .filter_map(|s| s.metadata.name.clone())
        .chain([super::connect::kubeconfig_secret(name)])
    {
        match secrets.delete(&secret, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(explain(e, &format!("deleting Secret {secret}"))),
        }
    }
    progress.done(format!("release {name}: {removed} objects deleted"));
    let synced = delete_synced(&host, &namespace, name).await?;
    progress.done(format!("{synced} synced host objects deleted"));
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(host.client.clone(), &namespace);
    if !args.keep_pvc {
        let selector = format!("app=vkube,release={name}");
        claims
            .delete_collection(
                &DeleteParams::background(),
                &ListParams::default().labels(&selector),
            )
            .await
            .map_err(|e| explain(e, "deleting the control plane's volume claims"))?;
        progress.done("volume claims deleted");
    }
    let namespaces: Api<Namespace> = Api::all(host.client.clone());
    let made_by_us = namespaces
        .get_opt(&namespace)
        .await
        .ok()
        .flatten()
        .and_then(|ns| ns.metadata.labels)
        .is_some_and(|l| l.get(CREATED_FOR_LABEL).is_some_and(|v| v == name));
    let delete_namespace = args.delete_namespace.unwrap_or(made_by_us);
    if delete_namespace {
        match namespaces
            .delete(&namespace, &DeleteParams::background())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(explain(e, &format!("deleting namespace {namespace}"))),
        }
        progress.done(format!("namespace {namespace} deleted"));
    }
    if args.wait {
        let deadline = Instant::now() + Duration::from_secs(300);
        let pods: Api<Pod> = Api::namespaced(host.client.clone(), &namespace);
        loop {
            let ours = format!("app=vkube,release={name}");
            let synced = format!("{CLUSTER_LABEL}={name}");
            let left = pods
                .list(&ListParams::default().labels(&ours))
                .await
                .map(|l| l.items.len())
                .unwrap_or(0)
                + pods
                    .list(&ListParams::default().labels(&synced))
                    .await
                    .map(|l| l.items.len())
                    .unwrap_or(0);
            let ns_left = delete_namespace
                && namespaces
                    .get_opt(&namespace)
                    .await
                    .ok()
                    .flatten()
                    .is_some();
            if left == 0 && !ns_left {
                break;
            }
            progress.waiting(format!(
                "{left} pods to go{}",
                if ns_left { ", the namespace" } else { "" }
            ));
            if Instant::now() >= deadline {
                bail!(
                    "timed out after 300s waiting for {left} pods of {name} in {namespace} to go"
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        progress.done("everything gone");
    }
    progress.finish();
    eprintln!("deleted virtual cluster {name} in namespace {namespace}");
    Ok(())
}

/// The host copies the syncer made (pods, Services, ConfigMaps, Secrets, claims), by its label.
async fn delete_synced(host: &Host, namespace: &str, name: &str) -> Result<usize> {
    let selector = ListParams::default().labels(&format!("{CLUSTER_LABEL}={name}"));
    let mut count = 0;
    macro_rules! sweep {
        ($kind:ty) => {{
            let api: Api<$kind> = Api::namespaced(host.client.clone(), namespace);
            let items = api
                .list(&selector)
                .await
                .map_err(|e| explain(e, concat!("listing synced ", stringify!($kind))))?
                .items;
            count += items.len();
            if !items.is_empty() {
                api.delete_collection(&DeleteParams::background(), &selector)
                    .await
                    .map_err(|e| explain(e, concat!("deleting synced ", stringify!($kind))))?;
            }
        }};
    }
    sweep!(Pod);
    sweep!(k8s_openapi::api::core::v1::ConfigMap);
    sweep!(Secret);
    sweep!(PersistentVolumeClaim);
    sweep!(k8s_openapi::api::discovery::v1::EndpointSlice);
    // Services have no delete-collection: one by one.
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(host.client.clone(), namespace);
    for s in services
        .list(&selector)
        .await
        .map_err(|e| explain(e, "listing synced Services"))?
        .items
    {
        if let Some(n) = s.metadata.name {
            let _ = services.delete(&n, &DeleteParams::background()).await;
            count += 1;
        }
    }
    Ok(count)
}

pub(crate) async fn stateful_set(
    host: &Host,
    namespace: &str,
    name: &str,
) -> Result<(Api<StatefulSet>, StatefulSet)> {
    let sets: Api<StatefulSet> = Api::namespaced(host.client.clone(), namespace);
    let set = sets
        .get_opt(name)
        .await
        .map_err(|e| explain(e, &format!("reading StatefulSet {namespace}/{name}")))?
        .ok_or_else(|| anyhow!("virtual cluster {name} not found in namespace {namespace} (`vkube list` shows them)"))?;
    Ok((sets, set))
}

pub async fn pause(args: PauseArgs) -> Result<()> {
    let host = Host::connect(&args.host).await?;
    let name = args.name.as_str();
    let namespace = namespace_of(name, &args.namespace);
    let mut progress = Progress::new();
    if !pause_cluster(&host, &namespace, name, args.timeout, &mut progress).await? {
        eprintln!("virtual cluster {name} is already paused");
        return Ok(());
    }
    progress.finish();
    eprintln!("paused virtual cluster {name}; `vkube resume {name} -n {namespace}` brings it back");
    Ok(())
}

/// Scales the control plane to 0 (remembering how many replicas and workload pods it had),
/// waits until its pods are gone and stops its workloads' host pods. False if it was paused
/// already.
pub(crate) async fn pause_cluster(
    host: &Host,
    namespace: &str,
    name: &str,
    timeout: Duration,
    progress: &mut Progress,
) -> Result<bool> {
    let (sets, set) = stateful_set(host, namespace, name).await?;
    if is_paused(&set) {
        return Ok(false);
    }
    let replicas = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let pods: Api<Pod> = Api::namespaced(host.client.clone(), namespace);
    let selector = ListParams::default().labels(&format!("{CLUSTER_LABEL}={name}"));
    let workloads = pods
        .list(&selector)
        .await
        .map_err(|e| explain(e, "listing workloads"))?
        .items
        .len();
    // Remember first, then scale: a pause cut short can always be resumed.
    let patch = json!({
        "metadata": {"annotations": {PAUSED_REPLICAS: replicas.to_string(), PAUSED_WORKLOADS: workloads.to_string()}},
        "spec": {"replicas": 0},
    });
    sets.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| explain(e, "scaling the control plane to 0"))?;
    progress.done(format!("control plane scaled from {replicas} to 0"));
    // The control plane is down; its workloads on the host go too (vcluster does the same). On
    // resume the syncer sees their host pods gone and the controllers make them anew.
    let deadline = Instant::now() + timeout;
    while !host.control_plane_pods(namespace, name).await?.is_empty() {
        if Instant::now() >= deadline {
            bail!("timed out waiting for the control plane pods of {name} to stop");
        }
        progress.waiting("control plane pods stopping");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if workloads > 0 {
        pods.delete_collection(&DeleteParams::background(), &selector)
            .await
            .map_err(|e| explain(e, "deleting the workloads' host pods"))?;
    }
    progress.done(format!("{workloads} workload pods stopped"));
    Ok(true)
}

pub async fn resume(args: PauseArgs) -> Result<()> {
    let host = Host::connect(&args.host).await?;
    let name = args.name.as_str();
    let namespace = namespace_of(name, &args.namespace);
    let mut progress = Progress::new();
    if !resume_cluster(&host, &namespace, name, args.timeout, &mut progress).await? {
        eprintln!("virtual cluster {name} is not paused");
        return Ok(());
    }
    progress.finish();
    eprintln!(
        "resumed virtual cluster {name}; its workloads start again as the syncer recreates them"
    );
    Ok(())
}

/// Scales a paused control plane back and waits until it is ready. False if it was not paused.
pub(crate) async fn resume_cluster(
    host: &Host,
    namespace: &str,
    name: &str,
    timeout: Duration,
    progress: &mut Progress,
) -> Result<bool> {
    let (sets, set) = stateful_set(host, namespace, name).await?;
    let Some(replicas) = set
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PAUSED_REPLICAS))
        .and_then(|r| r.parse::<i32>().ok())
    else {
        return Ok(false);
    };
    let patch = json!({
        "metadata": {"annotations": {PAUSED_REPLICAS: null, PAUSED_WORKLOADS: null}},
        "spec": {"replicas": replicas},
    });
    sets.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| explain(e, "scaling the control plane back"))?;
    progress.done(format!("control plane scaled to {replicas}"));
    super::create::wait_ready(host, namespace, name, replicas as usize, timeout, progress).await?;
    Ok(true)
}
