//! The pod garbage collector (upstream's pkg/controller/podgc): every 20 s it force-deletes
//! - terminated pods (phase Succeeded or Failed) beyond `--terminated-pod-gc-threshold` (12500),
//!   evicted ones first, then the oldest;
//! - pods bound to a node that no longer exists, once the node has been missing for 40 s (the
//!   quarantine covers a node that a watch has not shown yet) and a GET confirms it is gone. In
//!   vkube that is how a pod bound to a fake node the syncer removed goes away;
//! - terminating pods that were never scheduled (no kubelet will finish them);
//! - terminating pods on a node that is not ready and carries the
//!   `node.kubernetes.io/out-of-service` taint.
//!
//! A pod not yet terminated is first marked `Failed` (with a `DisruptionTarget` condition for
//! an orphan), as upstream does: otherwise it would stay Running forever in any client that saw
//! it before its deletion. Deletion is with a grace period of 0.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};

use crate::{Context, Result};

/// How often a round runs (upstream's gcCheckPeriod).
const PERIOD: Duration = Duration::from_secs(20);
/// How long a pod's node must be missing before the pod counts as orphaned.
const QUARANTINE: Duration = Duration::from_secs(40);
/// kube-controller-manager's `--terminated-pod-gc-threshold` default.
pub const TERMINATED_THRESHOLD: usize = 12500;
const OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";

pub(crate) async fn run(ctx: Arc<Context>) {
    let mut gc = PodGc::new(TERMINATED_THRESHOLD);
    loop {
        if let Err(err) = gc.round(&ctx).await {
            tracing::warn!(%err, "pod garbage collection failed; trying again next round");
        }
        tokio::time::sleep(PERIOD).await;
    }
}

/// The collector's memory between rounds: when each missing node was first seen missing.
pub(crate) struct PodGc {
    threshold: usize,
    missing_since: BTreeMap<String, Timestamp>,
}

impl PodGc {
    pub(crate) fn new(threshold: usize) -> Self {
        PodGc {
            threshold,
            missing_since: BTreeMap::new(),
        }
    }

    /// One round over every pod and node.
    pub(crate) async fn round(&mut self, ctx: &Context) -> Result<()> {
        let pods: Api<Pod> = Api::all(ctx.client.clone());
        let nodes: Api<Node> = Api::all(ctx.client.clone());
        let pods = pods.list(&ListParams::default()).await?.items;
        let nodes = nodes.list(&ListParams::default()).await?.items;
        let existing: BTreeMap<&str, &Node> = nodes
            .iter()
            .filter_map(|n| Some((n.metadata.name.as_deref()?, n)))
            .collect();
        let mut doomed: Vec<(&Pod, Option<PodCondition>)> = Vec::new();

        if self.threshold > 0 {
            let mut terminated: Vec<&Pod> = pods.iter().filter(|p| terminated(p)).collect();
            if terminated.len() > self.threshold {
                terminated.sort_by_key(|p| deletion_rank(p));
                let excess = terminated.len() - self.threshold;
                doomed.extend(terminated.into_iter().take(excess).map(|p| (p, None)));
            }
        }
        for pod in pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_some())
        {
            // Never scheduled (no kubelet will finish it), or on an out-of-service node.
            let node = node_name(pod);
            let out_of_service = || {
                existing
                    .get(node)
                    .is_some_and(|n| !ready(n) && tainted(n, OUT_OF_SERVICE))
            };
            if node.is_empty() || out_of_service() {
                doomed.push((pod, None));
            }
        }
        for pod in self.orphans(ctx, &pods, &existing).await? {
            let condition = PodCondition {
                type_: "DisruptionTarget".into(),
                status: "True".into(),
                reason: Some("DeletionByPodGC".into()),
                message: Some("PodGC: node no longer exists".into()),
                last_transition_time: Some(Time(ctx.clock.now())),
                ..PodCondition::default()
            };
            doomed.push((pod, Some(condition)));
        }

        let mut seen = BTreeSet::new();
        for (pod, condition) in doomed {
            // A pod can qualify twice (an orphan that is also terminating); once is enough.
            if seen.insert(pod.metadata.uid.clone()) {
                force_delete(ctx, pod, condition).await?;
            }
        }
        Ok(())
    }

    /// Pods bound to nodes missing for at least the quarantine, confirmed gone by a GET.
    async fn orphans<'p>(
        &mut self,
        ctx: &Context,
        pods: &'p [Pod],
        existing: &BTreeMap<&str, &Node>,
    ) -> Result<Vec<&'p Pod>> {
        let now = ctx.clock.now();
        let missing: BTreeSet<&str> = pods
            .iter()
            .map(node_name)
            .filter(|n| !n.is_empty() && !existing.contains_key(n))
            .collect();
        self.missing_since
            .retain(|node, _| missing.contains(node.as_str()));
        let nodes: Api<Node> = Api::all(ctx.client.clone());
        let mut gone = BTreeSet::new();
        for node in missing {
            let since = *self.missing_since.entry(node.to_string()).or_insert(now);
            let waited = Duration::try_from(now.duration_since(since)).unwrap_or_default();
            if waited >= QUARANTINE && nodes.get_opt(node).await?.is_none() {
                gone.insert(node);
            }
        }
        Ok(pods
            .iter()
            .filter(|p| gone.contains(node_name(p)))
            .collect())
    }
}

fn node_name(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or_default()
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

/// Upstream's isPodTerminated: any phase but Pending, Running and Unknown (an empty phase
/// counts, as in Go).
fn terminated(pod: &Pod) -> bool {
    !matches!(phase(pod), "Pending" | "Running" | "Unknown")
}

/// The kubelet's eviction marker: phase Failed with reason Evicted.
fn evicted(pod: &Pod) -> bool {
    phase(pod) == "Failed"
        && pod.status.as_ref().and_then(|s| s.reason.as_deref()) == Some("Evicted")
}

/// Evicted pods first, then by creation time, then by name: a key per pod, so the order is
/// total (see the ReplicaSet ranking's note on pairwise orders).
fn deletion_rank(pod: &Pod) -> (bool, Option<Timestamp>, String) {
    (
        !evicted(pod),
        pod.metadata.creation_timestamp.as_ref().map(|t| t.0),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

fn ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

fn tainted(node: &Node, key: &str) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key == key))
}

/// Marks `pod` Failed (adding `condition`) unless it already terminated, then deletes it with
/// no grace period. Both steps name the pod's uid, so a new pod of the same name is left alone;
/// a pod already gone is no error.
async fn force_delete(ctx: &Context, pod: &Pod, condition: Option<PodCondition>) -> Result<()> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    tracing::info!(pod = %format!("{ns}/{name}"), "PodGC is force deleting Pod");
    if !matches!(phase(pod), "Succeeded" | "Failed") {
        let mut conditions = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        if let Some(condition) = condition {
            set_condition(&mut conditions, condition);
        }
        // A merge patch of the status, as upstream's (its role grants `patch` on pods/status,
        // not `update`); the resourceVersion makes it conditional.
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": pod.metadata.resource_version},
            "status": {"phase": "Failed", "conditions": conditions},
        });
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
            // Changed meanwhile (a kubelet's status): the next round sees the new pod.
            Err(kube::Error::Api(e)) if e.code == 409 => return Ok(()),
            Err(err) => return Err(err.into()),
        }
    }
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// Upstream's UpdatePodCondition: a condition of the same type is replaced, keeping its
/// transition time when the status did not change.
fn set_condition(conditions: &mut Vec<PodCondition>, mut condition: PodCondition) {
    match conditions.iter_mut().find(|c| c.type_ == condition.type_) {
        Some(old) => {
            if old.status == condition.status {
                condition.last_transition_time = old.last_transition_time.clone();
            }
            *old = condition;
        }
        None => conditions.push(condition),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;
    use crate::testing::FakeApi;
    use serde_json::{Value, json};

    const PODS: &str = "/api/v1/namespaces/ns/pods";
    const NODES: &str = "/api/v1/nodes";

    fn context(fake: &FakeApi, clock: Arc<FakeClock>) -> Context {
        let mut ctx = Context::new(fake.client());
        ctx.clock = clock;
        ctx
    }

    fn pod(name: &str, node: &str, phase: &str) -> Value {
        let mut p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": phase}});
        if !node.is_empty() {
            p["spec"]["nodeName"] = json!(node);
        }
        p
    }

    fn node(name: &str, ready: bool, taint: Option<&str>) -> Value {
        let mut n = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}});
        if let Some(key) = taint {
            n["spec"] = json!({"taints": [{"key": key, "effect": "NoExecute"}]});
        }
        n
    }

    fn names(fake: &FakeApi) -> Vec<String> {
        fake.list(PODS)
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    }

    #[tokio::test]
    async fn pods_of_a_missing_node_go_after_the_quarantine_marked_failed() {
        let fake = FakeApi::default();
        let clock = Arc::new(FakeClock::new("2026-01-01T00:00:00Z".parse().unwrap()));
        let ctx = context(&fake, clock.clone());
        fake.put(NODES, node("here", true, None));
        fake.put(PODS, pod("kept", "here", "Running"));
        fake.put(PODS, pod("orphan", "gone", "Running"));
        let mut gc = PodGc::new(TERMINATED_THRESHOLD);
        gc.round(&ctx).await.unwrap();
        assert_eq!(
            names(&fake),
            ["kept", "orphan"],
            "deleted inside the quarantine"
        );
        clock.advance(Duration::from_secs(39));
        gc.round(&ctx).await.unwrap();
        assert_eq!(names(&fake), ["kept", "orphan"]);
        clock.advance(Duration::from_secs(1));
        gc.round(&ctx).await.unwrap();
        assert_eq!(names(&fake), ["kept"]);
        let writes: Vec<String> = fake
            .writes()
            .into_iter()
            .filter(|w| !w.starts_with("POST"))
            .collect();
        assert_eq!(
            writes,
            [
                "PATCH /api/v1/namespaces/ns/pods/orphan/status",
                "DELETE /api/v1/namespaces/ns/pods/orphan"
            ]
        );
    }

    #[tokio::test]
    async fn a_node_that_comes_back_ends_the_quarantine() {
        let fake = FakeApi::default();
        let clock = Arc::new(FakeClock::new("2026-01-01T00:00:00Z".parse().unwrap()));
        let ctx = context(&fake, clock.clone());
        fake.put(PODS, pod("p", "late", "Running"));
        let mut gc = PodGc::new(TERMINATED_THRESHOLD);
        gc.round(&ctx).await.unwrap();
        fake.put(NODES, node("late", true, None));
        clock.advance(Duration::from_secs(60));
        gc.round(&ctx).await.unwrap();
        assert_eq!(names(&fake), ["p"]);
        assert!(gc.missing_since.is_empty());
    }

    #[tokio::test]
    async fn terminated_pods_beyond_the_threshold_go_evicted_first_then_oldest() {
        let fake = FakeApi::default();
        let clock = Arc::new(FakeClock::new("2026-01-01T00:00:00Z".parse().unwrap()));
        let ctx = context(&fake, clock);
        fake.put(NODES, node("n", true, None));
        for (name, phase) in [
            ("a-done", "Succeeded"),
            ("b-failed", "Failed"),
            ("c-evicted", "Failed"),
            ("d-running", "Running"),
        ] {
            fake.put(PODS, pod(name, "n", phase));
        }
        fake.edit(PODS, "c-evicted", |p| {
            p["status"]["reason"] = json!("Evicted")
        });
        // The fake gives every object the same creation time: names break the tie.
        let mut gc = PodGc::new(1);
        gc.round(&ctx).await.unwrap();
        assert_eq!(names(&fake), ["b-failed", "d-running"]);
        // Terminated pods are not marked again: only deletes.
        assert!(
            fake.writes()
                .iter()
                .all(|w| w.starts_with("DELETE") || w.starts_with("POST")),
            "{:?}",
            fake.writes()
        );
    }

    #[tokio::test]
    async fn unscheduled_and_out_of_service_terminating_pods_are_force_deleted() {
        let fake = FakeApi::default();
        let clock = Arc::new(FakeClock::new("2026-01-01T00:00:00Z".parse().unwrap()));
        let ctx = context(&fake, clock);
        fake.put(NODES, node("down", false, Some(OUT_OF_SERVICE)));
        fake.put(NODES, node("up", true, Some(OUT_OF_SERVICE)));
        for (name, node) in [("unscheduled", ""), ("on-down", "down"), ("on-up", "up")] {
            fake.put(PODS, pod(name, node, "Pending"));
            fake.edit(PODS, name, |p| {
                p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z")
            });
        }
        fake.put(PODS, pod("pending", "", "Pending"));
        PodGc::new(TERMINATED_THRESHOLD).round(&ctx).await.unwrap();
        assert_eq!(names(&fake), ["on-up", "pending"]);
    }

    #[test]
    fn a_condition_of_the_same_type_is_replaced_keeping_its_transition_time() {
        let at = |s: &str| Some(Time(s.parse().unwrap()));
        let mut conditions = vec![PodCondition {
            type_: "DisruptionTarget".into(),
            status: "True".into(),
            last_transition_time: at("2026-01-01T00:00:00Z"),
            ..PodCondition::default()
        }];
        set_condition(
            &mut conditions,
            PodCondition {
                type_: "DisruptionTarget".into(),
                status: "True".into(),
                reason: Some("DeletionByPodGC".into()),
                last_transition_time: at("2026-02-01T00:00:00Z"),
                ..PodCondition::default()
            },
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].reason.as_deref(), Some("DeletionByPodGC"));
        assert_eq!(
            conditions[0].last_transition_time,
            at("2026-01-01T00:00:00Z")
        );
    }
}
