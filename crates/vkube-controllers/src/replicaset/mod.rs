//! The ReplicaSet and ReplicationController controllers (upstream's pkg/controller/replicaset,
//! which serves both): each claims the pods its selector matches, creates pods from its template
//! in slow-start batches or deletes the least valuable ones until it has `spec.replicas`, and
//! reports `replicas`, `fullyLabeledReplicas`, `readyReplicas`, `availableReplicas`,
//! `observedGeneration` and a `ReplicaFailure` condition when creating or deleting fails.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::Resource;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::{Context, Error, Result, pods, runner};

/// kube-controller-manager's `BurstReplicas`: at most this many creates or deletes per sync.
const BURST_REPLICAS: usize = 500;
/// The first slow-start batch (upstream's `SlowStartInitialBatchSize`).
const SLOW_START_INITIAL_BATCH: usize = 1;
const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// What the controller needs of a ReplicaSet or a ReplicationController.
pub(crate) trait Replicated:
    Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Serialize
    + Debug
    + Send
    + Sync
    + 'static
{
    /// The selector as a `LabelSelector` (an RC's map becomes `matchLabels`).
    fn selector(&self) -> Option<LabelSelector>;
    fn replicas(&self) -> i32;
    fn min_ready_seconds(&self) -> i32;
    fn template(&self) -> Option<&PodTemplateSpec>;
    /// The controller's name in its events' source.
    const COMPONENT: &'static str;
}

impl Replicated for ReplicaSet {
    const COMPONENT: &'static str = "replicaset-controller";
    fn selector(&self) -> Option<LabelSelector> {
        self.spec.as_ref().map(|s| s.selector.clone())
    }
    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }
}

impl Replicated for ReplicationController {
    const COMPONENT: &'static str = "replication-controller";
    fn selector(&self) -> Option<LabelSelector> {
        let spec = self.spec.as_ref()?;
        // The API defaults an RC's selector to its template's labels; an RC without either
        // selects nothing (upstream refuses it at validation).
        let labels = spec
            .selector
            .clone()
            .filter(|s| !s.is_empty())
            .or_else(|| spec.template.as_ref()?.metadata.as_ref()?.labels.clone())?;
        Some(LabelSelector {
            match_labels: Some(labels),
            match_expressions: None,
        })
    }
    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }
}

pub(crate) async fn run_replicasets(ctx: Arc<Context>) {
    run::<ReplicaSet>("replicaset", ctx).await;
}

pub(crate) async fn run_replication_controllers(ctx: Arc<Context>) {
    run::<ReplicationController>("replicationcontroller", ctx).await;
}

async fn run<K: Replicated>(name: &'static str, ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let controller = Controller::new(Api::<K>::all(client.clone()), watcher::Config::default());
    let store = controller.store();
    let controller = controller.watches(
        Api::<Pod>::all(client),
        watcher::Config::default(),
        move |pod: Pod| pods::concerned(&store, &pod, |o: &K| o.selector()),
    );
    runner::drive(name, controller, ctx, |obj: Arc<K>, ctx| async move {
        sync(obj.as_ref(), &ctx).await
    })
    .await;
}

/// The message of an API error as upstream prints it (`pods "x" is forbidden: …`).
pub(crate) fn message(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(s) if !s.message.is_empty() => s.message.clone(),
        other => other.to_string(),
    }
}

/// One sync of `seen` (upstream's `syncReplicaSet`), reading it again first.
pub(crate) async fn sync<K: Replicated>(seen: &K, ctx: &Context) -> Result<Action> {
    let namespace = seen.meta().namespace.clone().unwrap_or_default();
    let name = seen.meta().name.clone().unwrap_or_default();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(obj) = api.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    let Some(selector) = obj.selector() else {
        return Err(Error::Invalid(format!("{name}: no selector")));
    };
    pods::selector_query(&selector)?;
    let mut owned: Vec<Pod> = pods::claim(&ctx.client, &obj, &selector)
        .await?
        .into_iter()
        .filter(pods::is_active)
        .collect();

    let mut failure = None;
    if obj.meta().deletion_timestamp.is_none() {
        let diff = owned.len() as i64 - i64::from(obj.replicas().max(0));
        let outcome = if diff < 0 {
            create(ctx, &obj, &namespace, &mut owned, (-diff) as usize).await
        } else if diff > 0 {
            delete(ctx, &obj, &namespace, &mut owned, diff as usize).await
        } else {
            Ok(())
        };
        if let Err(err) = outcome {
            let reason = if diff < 0 {
                "FailedCreate"
            } else {
                "FailedDelete"
            };
            failure = Some((reason, err));
        }
    }

    let now = ctx.clock.now();
    let status = status_of(&obj, &owned, failure.as_ref().map(|(r, e)| (*r, e)), now);
    let current = serde_json::to_value(&obj)
        .ok()
        .map(|v| v["status"].clone())
        .unwrap_or(Value::Null);
    if !same_status(&current, &status) {
        // An update of the status subresource, as upstream (its role may not patch it).
        let mut whole = serde_json::to_value(&obj).map_err(kube::Error::SerdeError)?;
        let mut merged = current.as_object().cloned().unwrap_or_default();
        for (k, v) in status.as_object().into_iter().flatten() {
            if v.is_null() {
                merged.remove(k);
            } else {
                merged.insert(k.clone(), v.clone());
            }
        }
        whole["status"] = Value::Object(merged);
        let updated: K = serde_json::from_value(whole).map_err(kube::Error::SerdeError)?;
        api.replace_status(&name, &PostParams::default(), &updated)
            .await?;
    }
    if let Some((_, err)) = failure {
        return Err(err.into());
    }
    // Pods ready but not yet ready for minReadySeconds: look again when the first of them
    // becomes available.
    let min_ready = obj.min_ready_seconds();
    if min_ready > 0 {
        let wait = owned
            .iter()
            .filter_map(|p| pods::ready_since(p).flatten())
            .filter_map(|since| {
                since
                    .checked_add(jiff::SignedDuration::from_secs(min_ready.into()))
                    .ok()
            })
            .filter(|at| *at > now)
            .map(|at| at.duration_since(now))
            .min();
        if let Some(wait) = wait {
            let wait = Duration::try_from(wait).unwrap_or(Duration::from_secs(1));
            return Ok(Action::requeue(wait + Duration::from_millis(10)));
        }
    }
    Ok(Action::await_change())
}

/// Records an event about `obj`, as upstream's pod control does (best effort).
async fn event<K: Replicated>(ctx: &Context, obj: &K, type_: &str, reason: &str, message: &str) {
    crate::events::record_as(ctx, K::COMPONENT, obj, type_, reason, message).await;
}

/// Creates `count` pods (at most [`BURST_REPLICAS`]) in batches of 1, 2, 4, …, stopping at the
/// first batch with a failure (upstream's `slowStartBatch`); the made pods join `owned`.
async fn create<K: Replicated>(
    ctx: &Context,
    obj: &K,
    namespace: &str,
    owned: &mut Vec<Pod>,
    count: usize,
) -> kube::Result<()> {
    let template = obj.template().cloned().unwrap_or_default();
    let generate_name = format!("{}-", obj.meta().name.as_deref().unwrap_or_default());
    let pod = pods::from_template(&template, pods::controller_ref(obj), &generate_name);
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let mut remaining = count.min(BURST_REPLICAS);
    let mut batch = SLOW_START_INITIAL_BATCH.min(remaining);
    let pp = PostParams::default();
    while batch > 0 {
        let results =
            futures_util::future::join_all((0..batch).map(|_| api.create(&pp, &pod))).await;
        let mut first_error = None;
        for result in results {
            match result {
                Ok(made) => {
                    let msg = format!(
                        "Created pod: {}",
                        made.metadata.name.as_deref().unwrap_or_default()
                    );
                    event(ctx, obj, "Normal", "SuccessfulCreate", &msg).await;
                    owned.push(made);
                }
                Err(err) => {
                    let msg = format!("Error creating: {}", message(&err));
                    event(ctx, obj, "Warning", "FailedCreate", &msg).await;
                    first_error.get_or_insert(err);
                }
            }
        }
        if let Some(err) = first_error {
            return Err(err);
        }
        remaining -= batch;
        batch = (2 * batch).min(remaining);
    }
    Ok(())
}

/// The active pods per node of every set with the same controller as `obj` (the siblings of a
/// Deployment's ReplicaSet; upstream's `getIndirectlyRelatedPods`); none for a set without one.
async fn related_on_node<K: Replicated>(
    ctx: &Context,
    obj: &K,
    namespace: &str,
) -> kube::Result<HashMap<String, usize>> {
    let mut on_node = HashMap::new();
    let Some(owner) = pods::controller_of(obj.meta()).map(|r| r.uid.clone()) else {
        return Ok(on_node);
    };
    let sets: Vec<LabelSelector> = Api::<K>::namespaced(ctx.client.clone(), namespace)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|o| pods::controller_of(o.meta()).is_some_and(|r| r.uid == owner))
        .filter_map(|o| o.selector())
        .collect();
    let all = Api::<Pod>::namespaced(ctx.client.clone(), namespace)
        .list(&ListParams::default())
        .await?;
    for pod in all.items {
        let related = sets
            .iter()
            .any(|s| pods::selects(s, pod.metadata.labels.as_ref()));
        if related && pods::is_active(&pod) {
            *on_node.entry(node_of(&pod).to_string()).or_default() += 1;
        }
    }
    Ok(on_node)
}

/// Deletes the `count` least valuable pods of `owned` (upstream's `getPodsToDelete`).
async fn delete<K: Replicated>(
    ctx: &Context,
    obj: &K,
    namespace: &str,
    owned: &mut Vec<Pod>,
    count: usize,
) -> kube::Result<()> {
    let count = count.min(BURST_REPLICAS);
    let on_node = related_on_node(ctx, obj, namespace).await?;
    rank_for_deletion(owned, ctx.clock.now(), &on_node);
    let victims: Vec<Pod> = owned.drain(..count.min(owned.len())).collect();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let dp = DeleteParams::default();
    let results = futures_util::future::join_all(
        victims
            .iter()
            .map(|p| api.delete(p.metadata.name.as_deref().unwrap_or_default(), &dp)),
    )
    .await;
    let mut first_error = None;
    for (pod, result) in victims.into_iter().zip(results) {
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        match result {
            Ok(_) => {
                let msg = format!("Deleted pod: {name}");
                event(ctx, obj, "Normal", "SuccessfulDelete", &msg).await;
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(err) => {
                let msg = format!("Error deleting: {}", message(&err));
                event(ctx, obj, "Warning", "FailedDelete", &msg).await;
                // Still there: it counts.
                owned.push(pod);
                first_error.get_or_insert(err);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn phase_ordinal(pod: &Pod) -> u8 {
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 0,
    }
}

fn node_of(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or_default()
}

fn max_restarts(pod: &Pod) -> i32 {
    let status = pod.status.as_ref();
    status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .chain(status.and_then(|s| s.init_container_statuses.as_ref()))
        .flatten()
        .map(|c| c.restart_count)
        .max()
        .unwrap_or(0)
}

/// Sorts `pods` so the first ones are the ones to delete first (upstream's
/// `ActivePodsWithRanks`): unassigned before assigned; Pending, Unknown, then Running; not ready
/// before ready; lower `pod-deletion-cost` first; more related pods (`on_node`) on the same node
/// first;
/// ready for less time first; more restarts first; newer first (times compared by logarithmic
/// rank at `now`).
pub(crate) fn rank_for_deletion(
    pods: &mut [Pod],
    now: Timestamp,
    on_node: &HashMap<String, usize>,
) {
    let rank = |p: &Pod| on_node.get(node_of(p)).copied().unwrap_or(0);
    let cost = |p: &Pod| {
        p.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(DELETION_COST))
            .and_then(|v| v.parse::<i32>().ok())
            .unwrap_or(0)
    };
    // A key per pod, not a comparison of two: upstream's `Less` is not transitive where equal
    // times skip the uid tiebreak and near-equal ones use it, and Rust's sort may panic on such
    // an order (it did, scaling 500 pods down). The key keeps upstream's criteria in its order,
    // with the uid last.
    pods.sort_by_cached_key(|p| {
        let ready = pods::is_ready(p);
        let ready_rank = if ready {
            log_rank(pods::ready_since(p).flatten(), now)
        } else {
            0
        };
        let created = p.metadata.creation_timestamp.as_ref().map(|t| t.0);
        (
            !node_of(p).is_empty(),
            phase_ordinal(p),
            ready,
            cost(p),
            std::cmp::Reverse(rank(p)),
            ready_rank,
            std::cmp::Reverse(max_restarts(p)),
            log_rank(created, now),
            p.metadata.uid.clone().unwrap_or_default(),
        )
    });
}

/// The base-2 logarithm of the age at `now` (upstream's `LogarithmicScaleDown`, GA since 1.31):
/// pods of about the same age rank the same, newer ranks lower; an unknown time ranks lowest
/// (upstream's `afterOrZero`: the zero time sorts first).
fn log_rank(t: Option<Timestamp>, now: Timestamp) -> i64 {
    let Some(t) = t else {
        return i64::MIN;
    };
    let age = now.duration_since(t).as_nanos();
    if age > 0 {
        (age as f64).log2() as i64
    } else {
        -1
    }
}

/// The status upstream's `calculateStatus` computes for `obj` with the active pods `owned`.
fn status_of<K: Replicated>(
    obj: &K,
    owned: &[Pod],
    failure: Option<(&str, &kube::Error)>,
    now: Timestamp,
) -> Value {
    let template_labels: BTreeMap<String, String> = obj
        .template()
        .and_then(|t| t.metadata.as_ref()?.labels.clone())
        .unwrap_or_default();
    let fully_labeled = owned
        .iter()
        .filter(|p| {
            let labels = p.metadata.labels.clone().unwrap_or_default();
            template_labels
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
        })
        .count();
    let ready = owned.iter().filter(|p| pods::is_ready(p)).count();
    let available = owned
        .iter()
        .filter(|p| pods::is_available(p, obj.min_ready_seconds(), now))
        .count();
    let current = serde_json::to_value(obj)
        .ok()
        .map(|v| v["status"].clone())
        .unwrap_or(Value::Null);
    let mut conditions: Vec<Value> = current["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let has_failure = conditions.iter().any(|c| c["type"] == "ReplicaFailure");
    match failure {
        Some((reason, err)) if !has_failure => conditions.push(json!({
            "type": "ReplicaFailure", "status": "True", "reason": reason,
            "message": message(err),
            "lastTransitionTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now),
        })),
        None if has_failure => conditions.retain(|c| c["type"] != "ReplicaFailure"),
        _ => {}
    }
    let count = |n: usize| if n == 0 { Value::Null } else { json!(n) };
    json!({
        "replicas": owned.len(),
        "fullyLabeledReplicas": count(fully_labeled),
        "readyReplicas": count(ready),
        "availableReplicas": count(available),
        "observedGeneration": obj.meta().generation,
        "conditions": if conditions.is_empty() { Value::Null } else { json!(conditions) },
    })
}

/// Whether the stored status already says what `wanted` (a merge patch) would write.
fn same_status(current: &Value, wanted: &Value) -> bool {
    wanted.as_object().is_some_and(|fields| {
        fields.iter().all(|(k, v)| {
            let have = current.get(k).unwrap_or(&Value::Null);
            match (k.as_str(), have, v) {
                (_, Value::Null, Value::Null) => true,
                // Zeroes are left out as upstream does.
                (_, Value::Number(n), Value::Null) => n.as_i64() == Some(0),
                _ => have == v,
            }
        })
    })
}

#[cfg(test)]
pub(crate) mod tests;
