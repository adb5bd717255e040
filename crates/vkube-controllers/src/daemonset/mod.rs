//! The DaemonSet controller (upstream's pkg/controller/daemon): one pod per node that should run
//! it (the template's nodeSelector, required node affinity and tolerations against the node's
//! labels and taints, see [`nodes`]), placed as upstream places it since 1.12: by a required node
//! affinity on the node's name, left to the scheduler to bind. Pods on nodes that should no
//! longer run one go, failed pods are deleted and replaced (with a per-node backoff), and a
//! changed template rolls out by RollingUpdate (`maxUnavailable`, `maxSurge`) or OnDelete, with
//! ControllerRevisions ([`history`]) and the status `kubectl rollout status` reads.
//!
//! Every pass reads the DaemonSet, the nodes, the pods and the revisions from the API, so a
//! pass never acts on a view older than its own writes (upstream's expectations); a pass that
//! created or deleted pods leaves the rolling update to the next pass, as upstream does until
//! its expectations are met.

mod history;
mod nodes;
#[cfg(test)]
mod tests;
mod update;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{StreamExt, future};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Node, Pod, PodTemplateSpec, Taint};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher::{self, Event};

use crate::pods::{claim, controller_ref, from_template, is_available, is_ready, selector_query};
use crate::{Context, Error, Result, runner};

pub use history::HASH_LABEL;

/// The annotation the API keeps a DaemonSet's template generation in, and the pod label that
/// copies it (upstream's `DaemonSetTemplateGenerationKey`, from before revision hashes).
const TEMPLATE_GENERATION_ANNOTATION: &str = "deprecated.daemonset.template.generation";
const TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";
/// Upstream's `BurstReplicas`: creations and deletions per pass.
const BURST: usize = 250;
/// The failed-pod backoff (kube-controller-manager's: 1 s doubling to 15 min).
const FAILED_BACKOFF_INITIAL: Duration = Duration::from_secs(1);
const FAILED_BACKOFF_MAX: Duration = Duration::from_secs(15 * 60);

pub(crate) async fn run(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let controller = Controller::new(
        Api::<DaemonSet>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(Api::<Pod>::all(client.clone()), watcher::Config::default())
    .reconcile_all_on(node_changes(Api::<Node>::all(client)));
    let failures = Arc::new(Failures::default());
    runner::drive("daemonset", controller, ctx, move |ds, ctx| {
        reconcile(ds, ctx, failures.clone())
    })
    .await;
}

/// One item per node event that can change where daemon pods belong: a node added or deleted,
/// or its labels or taints changed (upstream ignores other node updates), and a re-list.
fn node_changes(api: Api<Node>) -> impl futures_util::Stream<Item = ()> + Send + 'static {
    let seen: Mutex<HashMap<String, String>> = Mutex::default();
    let fingerprint = |n: &Node| {
        let taints: Option<&Vec<Taint>> = n.spec.as_ref().and_then(|s| s.taints.as_ref());
        serde_json::to_string(&(&n.metadata.labels, taints)).unwrap_or_default()
    };
    watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .filter_map(move |event| {
            let mut seen = seen.lock().expect("node fingerprints");
            let changed = match event {
                Ok(Event::Apply(n)) => {
                    let name = n.metadata.name.clone().unwrap_or_default();
                    let print = fingerprint(&n);
                    seen.insert(name, print.clone()).as_ref() != Some(&print)
                }
                // A (re-)list: one trigger once it is complete.
                Ok(Event::InitApply(n)) => {
                    let name = n.metadata.name.clone().unwrap_or_default();
                    seen.insert(name, fingerprint(&n));
                    false
                }
                Ok(Event::Delete(n)) => {
                    seen.remove(n.metadata.name.as_deref().unwrap_or_default());
                    true
                }
                Ok(Event::InitDone) => true,
                Ok(Event::Init) | Err(_) => false,
            };
            future::ready(changed.then_some(()))
        })
}

/// Upstream's `failedPodsBackoff`: per DaemonSet and node, when the last failed pod was deleted
/// and how long to wait before deleting the next.
#[derive(Default)]
pub(crate) struct Failures(Mutex<HashMap<String, (Duration, Timestamp)>>);

impl Failures {
    fn since(now: Timestamp, then: Timestamp) -> Duration {
        Duration::try_from(now.duration_since(then)).unwrap_or_default()
    }

    /// How much longer `key` is backing off, if it is.
    fn waiting(&self, key: &str, now: Timestamp) -> Option<Duration> {
        let map = self.0.lock().expect("backoff lock");
        let (backoff, last) = *map.get(key)?;
        let elapsed = Self::since(now, last);
        (elapsed <= 2 * FAILED_BACKOFF_MAX && elapsed < backoff).then(|| backoff - elapsed)
    }

    fn next(&self, key: &str, now: Timestamp) {
        let mut map = self.0.lock().expect("backoff lock");
        // Entries long expired go (upstream's periodic backoff GC).
        map.retain(|_, (_, last)| Self::since(now, *last) <= 2 * FAILED_BACKOFF_MAX);
        let backoff = match map.get(key) {
            Some((b, last)) if Self::since(now, *last) <= 2 * FAILED_BACKOFF_MAX => {
                (*b * 2).min(FAILED_BACKOFF_MAX)
            }
            _ => FAILED_BACKOFF_INITIAL,
        };
        map.insert(key.to_string(), (backoff, now));
    }
}

/// What one pass works from.
pub(crate) struct Pass {
    pub ds: DaemonSet,
    pub nodes: Vec<Node>,
    pub hash: String,
}

/// The template generation the API recorded, if any.
fn template_generation(ds: &DaemonSet) -> Option<String> {
    ds.metadata
        .annotations
        .as_ref()?
        .get(TEMPLATE_GENERATION_ANNOTATION)
        .filter(|g| g.parse::<i64>().is_ok())
        .cloned()
}

/// Upstream's `IsPodUpdated`: the pod carries the current revision's hash, or the current
/// template generation.
pub(crate) fn is_updated(ds: &DaemonSet, pod: &Pod, hash: &str) -> bool {
    let labels = pod.metadata.labels.as_ref();
    let label = |k: &str| labels.and_then(|l| l.get(k));
    (!hash.is_empty() && label(HASH_LABEL).map(String::as_str) == Some(hash))
        || template_generation(ds).is_some_and(|g| label(TEMPLATE_GENERATION_LABEL) == Some(&g))
}

/// Upstream's `podByCreationTimestampAndPhase`: bound pods first, then the oldest, then by name.
fn sort_pods(pods: &mut [&Pod]) {
    pods.sort_by_key(|p| {
        let bound = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty());
        (
            !bound,
            p.metadata.creation_timestamp.as_ref().map(|t| t.0),
            p.metadata.name.clone(),
        )
    });
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

/// The DaemonSet's pods by the node each is for (bound, or named by its affinity); pods that
/// finished and are being deleted are left out, as upstream does.
fn by_node(pods: &[Pod]) -> BTreeMap<String, Vec<Pod>> {
    let mut out: BTreeMap<String, Vec<Pod>> = BTreeMap::new();
    for pod in pods {
        let terminal = matches!(phase(pod), "Succeeded" | "Failed");
        if terminal && pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        match nodes::target_node(pod) {
            Some(node) => out.entry(node).or_default().push(pod.clone()),
            None => tracing::debug!(pod = ?pod.metadata.name, "daemon pod without a node"),
        }
    }
    out
}

async fn reconcile(
    obj: Arc<DaemonSet>,
    ctx: Arc<Context>,
    failures: Arc<Failures>,
) -> Result<Action> {
    let ns = obj.metadata.namespace.clone().unwrap_or_default();
    let name = obj.metadata.name.clone().unwrap_or_default();
    let client = &ctx.client;
    let Some(ds) = Api::<DaemonSet>::namespaced(client.clone(), &ns)
        .get_opt(&name)
        .await?
    else {
        return Ok(Action::await_change());
    };
    let spec = ds.spec.clone().unwrap_or_default();
    let selector = &spec.selector;
    if selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(|m| m.is_empty())
    {
        let why = "This daemon set is selecting all pods. A non-empty selector is required.";
        event(&ctx, &ds, "Warning", "SelectingAll", why).await;
        return Err(Error::Invalid(format!(
            "daemon set {ns}/{name} is selecting all pods; a non-empty selector is required"
        )));
    }
    selector_query(&spec.selector)?;
    if ds.metadata.deletion_timestamp.is_some() {
        // Its pods and revisions may be going with it: no status can be told (upstream).
        return Ok(Action::await_change());
    }
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let Some((current, old)) = history::construct(client, &ds).await? else {
        return Ok(Action::requeue(Duration::from_millis(10)));
    };
    let hash = current
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(HASH_LABEL))
        .cloned()
        .unwrap_or_default();
    let pass = Pass { ds, nodes, hash };
    let now = ctx.clock.now();
    let mut pods = claim(client, &pass.ds, &spec.selector).await?;
    let mut requeue: Option<Duration> = None;
    let mut failed = Vec::new();
    let (delete, create) = manage(
        &pass,
        &by_node(&pods),
        &failures,
        now,
        &mut requeue,
        &mut failed,
    );
    for message in failed {
        event(&ctx, &pass.ds, "Warning", "FailedDaemonPod", &message).await;
    }
    // As upstream, the status is written even when creating or deleting failed (a quota, say);
    // the failure is returned after it.
    let mut outcome = Ok(());
    let mut wrote = sync(&ctx, &pass, &delete, &create)
        .await
        .unwrap_or_else(|err| {
            outcome = Err(err);
            true
        });
    let on_delete = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        == Some("OnDelete");
    if !wrote && !on_delete {
        let (delete, create) = update::plan(&pass, &by_node(&pods), now)?;
        wrote = sync(&ctx, &pass, &delete, &create)
            .await
            .unwrap_or_else(|err| {
                outcome = Err(err);
                true
            });
    }
    if wrote {
        pods = claim(client, &pass.ds, &spec.selector).await?;
    }
    let live: BTreeSet<String> = pods
        .iter()
        .filter_map(|p| p.metadata.labels.as_ref()?.get(HASH_LABEL).cloned())
        .collect();
    history::cleanup(client, &pass.ds, old, &live).await?;
    let (ready, available) = store_status(client, &pass, &by_node(&pods), now).await?;
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    if min_ready > 0 && ready != available {
        // Pods become available with time, no event says so.
        let after = Duration::from_secs(min_ready as u64);
        requeue = Some(requeue.map_or(after, |r| r.min(after)));
    }
    outcome?;
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// Upstream's `manage` and `podsShouldBeOnNode`: the nodes that need a pod, and the pods to
/// delete (on nodes that should not run one, failed or finished ones, extra ones, and pods
/// waiting for a node that is gone).
fn manage(
    pass: &Pass,
    by_node: &BTreeMap<String, Vec<Pod>>,
    failures: &Failures,
    now: Timestamp,
    requeue: &mut Option<Duration>,
    failed: &mut Vec<String>,
) -> (Vec<String>, Vec<String>) {
    let ds = &pass.ds;
    let template = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .unwrap_or_default();
    let min_ready = ds
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0);
    let surge = update::allows_surge(ds);
    let name_of = |p: &Pod| p.metadata.name.clone().unwrap_or_default();
    let (mut create, mut delete) = (Vec::new(), Vec::new());
    for node in &pass.nodes {
        let node_name = node.metadata.name.clone().unwrap_or_default();
        let (run, keep) = nodes::should_run(&template, node);
        let pods = by_node.get(&node_name);
        match pods {
            None if run => create.push(node_name),
            None => {}
            Some(pods) if keep => {
                let mut running = Vec::new();
                for pod in pods
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                {
                    match phase(pod) {
                        "Failed" => {
                            let key = format!(
                                "{}/{}/{node_name}",
                                ds.metadata.uid.as_deref().unwrap_or_default(),
                                ds.status
                                    .as_ref()
                                    .and_then(|s| s.observed_generation)
                                    .unwrap_or(0)
                            );
                            if let Some(wait) = failures.waiting(&key, now) {
                                tracing::debug!(pod = ?pod.metadata.name, ?wait, "deleting the failed daemon pod is backing off");
                                *requeue = Some(requeue.map_or(wait, |r| r.min(wait)));
                                continue;
                            }
                            failures.next(&key, now);
                            failed.push(format!(
                                "Found failed daemon pod {}/{} on node {node_name}, will try to kill it",
                                pod.metadata.namespace.as_deref().unwrap_or_default(),
                                name_of(pod)
                            ));
                            delete.push(name_of(pod));
                        }
                        "Succeeded" => delete.push(name_of(pod)),
                        _ => running.push(pod),
                    }
                }
                sort_pods(&mut running);
                if !surge {
                    delete.extend(running.iter().skip(1).map(|p| name_of(p)));
                    continue;
                }
                if running.len() <= 1 {
                    if running.is_empty() && run {
                        create.push(node_name);
                    }
                    continue;
                }
                // Surging: an old and a new pod may share a node while the new one is not yet
                // available and the old one is ready; every other pod goes.
                let (mut oldest_new, mut oldest_old) = (None, None);
                for pod in running {
                    let slot = if pod.metadata.labels.as_ref().and_then(|l| l.get(HASH_LABEL))
                        == Some(&pass.hash)
                    {
                        &mut oldest_new
                    } else {
                        &mut oldest_old
                    };
                    if slot.is_none() {
                        *slot = Some(pod);
                    } else {
                        delete.push(name_of(pod));
                    }
                }
                if let (Some(new), Some(old)) = (oldest_new, oldest_old)
                    && (!is_ready(old) || is_available(new, min_ready, now))
                {
                    delete.push(name_of(old));
                }
            }
            Some(pods) => delete.extend(
                pods.iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .map(name_of),
            ),
        }
    }
    // Pods for a node that is gone: never scheduled, so nothing else deletes them.
    let known: BTreeSet<&str> = pass
        .nodes
        .iter()
        .filter_map(|n| n.metadata.name.as_deref())
        .collect();
    for (node, pods) in by_node {
        if known.contains(node.as_str()) {
            continue;
        }
        for pod in pods {
            let bound = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_some_and(|n| !n.is_empty());
            if !bound && pod.metadata.deletion_timestamp.is_none() {
                delete.push(name_of(pod));
            }
        }
    }
    (delete, create)
}

/// An event about `ds` from `daemonset-controller` (upstream's event source), best effort.
async fn event(ctx: &Context, ds: &DaemonSet, type_: &str, reason: &str, message: &str) {
    crate::events::record_as(ctx, "daemonset-controller", ds, type_, reason, message).await;
}

/// Upstream's `CreatePodTemplate`: the template with the daemon tolerations, the template
/// generation and the revision's hash.
fn pod_template(ds: &DaemonSet, hash: &str) -> PodTemplateSpec {
    let mut template = ds
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    nodes::add_daemon_tolerations(template.spec.get_or_insert_with(Default::default));
    let labels = template
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .get_or_insert_with(Default::default);
    if let Some(generation) = template_generation(ds) {
        labels.insert(TEMPLATE_GENERATION_LABEL.into(), generation);
    }
    if !hash.is_empty() {
        labels.insert(HASH_LABEL.into(), hash.into());
    }
    template
}

/// Upstream's `syncNodes`: deletes `delete` and creates a pod on each node of `create` (at most
/// [`BURST`] of each; creations in batches of 1, 2, 4, … that stop at the first failure, as
/// upstream's slow start). Whether it wrote anything.
async fn sync(ctx: &Context, pass: &Pass, delete: &[String], create: &[String]) -> Result<bool> {
    if delete.is_empty() && create.is_empty() {
        return Ok(false);
    }
    let ds = &pass.ds;
    let ns = ds.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let template = pod_template(ds, &pass.hash);
    let generate = format!("{}-", ds.metadata.name.as_deref().unwrap_or_default());
    let mut pending = create.iter().take(BURST).peekable();
    let mut batch = 1;
    let mut result: Result<()> = Ok(());
    while pending.peek().is_some() {
        let made = future::join_all(pending.by_ref().take(batch).map(|node| {
            let mut pod = from_template(&template, controller_ref(ds), &generate);
            let spec = pod.spec.get_or_insert_with(Default::default);
            spec.affinity = Some(nodes::pin_to_node(spec.affinity.take(), node));
            let api = api.clone();
            async move { api.create(&PostParams::default(), &pod).await }
        }))
        .await;
        let mut failure = None;
        for made in made {
            match made {
                Ok(pod) => {
                    let message = format!("Created pod: {}", pod.metadata.name.unwrap_or_default());
                    event(ctx, ds, "Normal", "SuccessfulCreate", &message).await;
                }
                // The namespace is going: every later creation fails too (upstream ignores it).
                Err(kube::Error::Api(e))
                    if e.details.as_ref().is_some_and(|d| {
                        d.causes.iter().any(|c| c.reason == "NamespaceTerminating")
                    }) => {}
                Err(err) => {
                    let message = format!("Error creating: {err}");
                    event(ctx, ds, "Warning", "FailedCreate", &message).await;
                    failure.get_or_insert(err);
                }
            }
        }
        if let Some(err) = failure {
            result = Err(err.into());
            break;
        }
        batch *= 2;
    }
    let deleted = future::join_all(delete.iter().take(BURST).map(|name| {
        let api = api.clone();
        async move {
            let r = history::ignore_gone(api.delete(name, &DeleteParams::default()).await);
            (name, r)
        }
    }))
    .await;
    for (name, r) in deleted {
        match r {
            Ok(Some(_)) => {
                let message = format!("Deleted pod: {name}");
                event(ctx, ds, "Normal", "SuccessfulDelete", &message).await;
            }
            Ok(None) => {}
            Err(err) => {
                let message = format!("Error deleting: {err}");
                event(ctx, ds, "Warning", "FailedDelete", &message).await;
                result = result.and(Err(err.into()));
            }
        }
    }
    result.map(|()| true)
}

/// Upstream's `updateDaemonSetStatus`: counts over the nodes, written with the generation seen
/// when they changed. Returns the number ready and the number available.
async fn store_status(
    client: &kube::Client,
    pass: &Pass,
    by_node: &BTreeMap<String, Vec<Pod>>,
    now: Timestamp,
) -> Result<(i32, i32)> {
    let ds = &pass.ds;
    let spec = ds.spec.clone().unwrap_or_default();
    let template = spec.template.spec.clone().unwrap_or_default();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let mut s = DaemonSetStatus::default();
    let (mut available, mut updated) = (0, 0);
    for node in &pass.nodes {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        let (run, _) = nodes::should_run(&template, node);
        let pods: Vec<&Pod> = by_node
            .get(name)
            .map(|p| p.iter().collect())
            .unwrap_or_default();
        if !run {
            if !pods.is_empty() {
                s.number_misscheduled += 1;
            }
            continue;
        }
        s.desired_number_scheduled += 1;
        let mut pods = pods;
        sort_pods(&mut pods);
        let Some(pod) = pods.first() else {
            continue;
        };
        s.current_number_scheduled += 1;
        if is_ready(pod) {
            s.number_ready += 1;
            if is_available(pod, min_ready, now) {
                available += 1;
            }
        }
        if is_updated(ds, pod, &pass.hash) {
            updated += 1;
        }
    }
    let generation = ds.metadata.generation;
    let have = ds.status.clone().unwrap_or_default();
    s.updated_number_scheduled = Some(updated);
    s.number_available = Some(available);
    s.number_unavailable = Some(s.desired_number_scheduled - available);
    s.observed_generation = generation.max(have.observed_generation);
    s.collision_count = have.collision_count;
    s.conditions = have.conditions.clone();
    let same = |a: &DaemonSetStatus| {
        let n = |v: Option<i32>| v.unwrap_or(0);
        (
            a.desired_number_scheduled,
            a.current_number_scheduled,
            a.number_misscheduled,
            a.number_ready,
            n(a.updated_number_scheduled),
            n(a.number_available),
            n(a.number_unavailable),
            a.observed_generation.unwrap_or(0),
        )
    };
    let out = (s.number_ready, available);
    if same(&have) == same(&s) {
        return Ok(out);
    }
    let ns = ds.metadata.namespace.clone().unwrap_or_default();
    let name = ds.metadata.name.clone().unwrap_or_default();
    let api: Api<DaemonSet> = Api::namespaced(client.clone(), &ns);
    let mut to_write = ds.clone();
    for attempt in 0..2 {
        let mut status = s.clone();
        let fresh = to_write.status.clone().unwrap_or_default();
        status.collision_count = fresh.collision_count;
        status.conditions = fresh.conditions;
        to_write.status = Some(status);
        match api
            .replace_status(&name, &PostParams::default(), &to_write)
            .await
        {
            Ok(_) => return Ok(out),
            Err(kube::Error::Api(e)) if e.code == 409 && attempt == 0 => {
                to_write = api.get(&name).await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}
