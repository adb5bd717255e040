//! The DaemonSet controller against the fake API: placement, eligibility, nodes coming and
//! going, rolling updates (maxUnavailable, maxSurge, OnDelete), failed pods, revisions, status.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams};
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use super::*;
use crate::clock::FakeClock;
use crate::testing::FakeApi;

const NODES: &str = "/api/v1/nodes";
const PODS: &str = "/api/v1/namespaces/ns/pods";
const SETS: &str = "/apis/apps/v1/namespaces/ns/daemonsets";
const REVISIONS: &str = "/apis/apps/v1/namespaces/ns/controllerrevisions";
const EVENTS: &str = "/api/v1/namespaces/ns/events";

struct Fixture {
    fake: FakeApi,
    clock: Arc<FakeClock>,
    ctx: Arc<Context>,
    failures: Arc<Failures>,
}

impl Fixture {
    fn new() -> Self {
        let fake = FakeApi::default();
        let clock = Arc::new(FakeClock::new("2026-01-01T00:00:00Z".parse().unwrap()));
        let mut ctx = Context::new(fake.client());
        ctx.clock = clock.clone();
        Self {
            fake,
            clock,
            ctx: Arc::new(ctx),
            failures: Arc::default(),
        }
    }

    fn node(&self, name: &str, labels: Value, taints: Value) {
        self.fake.put(
            NODES,
            json!({"apiVersion": "v1", "kind": "Node",
                   "metadata": {"name": name, "labels": labels}, "spec": {"taints": taints}}),
        );
    }

    fn daemonset(&self, spec_extra: Value, template_spec_extra: Value) {
        let mut template_spec = json!({"containers": [{"name": "agent", "image": "agent:1"}]});
        merge(&mut template_spec, &template_spec_extra);
        let mut spec = json!({
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {"metadata": {"labels": {"app": "agent"}}, "spec": template_spec},
        });
        merge(&mut spec, &spec_extra);
        self.fake.put(
            SETS,
            json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
                   "metadata": {"name": "agent"}, "spec": spec}),
        );
    }

    async fn sync(&self) -> Action {
        let ds: DaemonSet = serde_json::from_value(self.fake.get(SETS, "agent").unwrap()).unwrap();
        reconcile(Arc::new(ds), self.ctx.clone(), self.failures.clone())
            .await
            .unwrap()
    }

    fn pods(&self) -> Vec<Pod> {
        self.fake
            .list(PODS)
            .into_iter()
            .map(|p| serde_json::from_value(p).unwrap())
            .collect()
    }

    /// Node name → image of each pod for it.
    fn placement(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .pods()
            .iter()
            .map(|p| {
                let image = p.spec.as_ref().unwrap().containers[0].image.clone();
                (nodes::target_node(p).unwrap(), image.unwrap_or_default())
            })
            .collect();
        out.sort();
        out
    }

    /// The reasons of the events recorded so far.
    fn events(&self) -> Vec<String> {
        self.fake
            .list(EVENTS)
            .iter()
            .map(|e| {
                assert_eq!(e["source"]["component"], "daemonset-controller");
                e["reason"].as_str().unwrap().to_string()
            })
            .collect()
    }

    fn status(&self) -> Value {
        self.fake.get(SETS, "agent").unwrap()["status"].clone()
    }

    /// Plays the kubelet: every pod running and ready.
    fn all_ready(&self) {
        for pod in self.pods() {
            self.set_phase(pod.metadata.name.as_deref().unwrap(), "Running", true);
        }
    }

    fn set_phase(&self, pod: &str, phase: &str, ready: bool) {
        let ready = if ready { "True" } else { "False" };
        self.fake.edit(PODS, pod, |p| {
            p["status"] =
                json!({"phase": phase, "conditions": [{"type": "Ready", "status": ready}]});
        });
    }

    /// Changes the template's image, as `kubectl set image` does.
    fn set_image(&self, image: &str) {
        self.fake.edit(SETS, "agent", |ds| {
            ds["spec"]["template"]["spec"]["containers"][0]["image"] = json!(image);
            let g = ds["metadata"]["generation"].as_i64().unwrap();
            ds["metadata"]["generation"] = json!(g + 1);
        });
    }

    fn creates_and_deletes(&self, since: usize) -> (usize, usize) {
        let writes = self.fake.writes();
        let w = &writes[since..];
        let creates = w.iter().filter(|w| *w == &format!("POST {PODS}")).count();
        let deletes = w
            .iter()
            .filter(|w| w.starts_with(&format!("DELETE {PODS}/")))
            .count();
        (creates, deletes)
    }
}

fn merge(target: &mut Value, extra: &Value) {
    if let (Value::Object(t), Value::Object(e)) = (target, extra) {
        for (k, v) in e {
            t.insert(k.clone(), v.clone());
        }
    }
}

#[tokio::test]
async fn one_pod_per_node_pinned_by_affinity_with_upstreams_tolerations() {
    let f = Fixture::new();
    for n in ["n1", "n2", "n3"] {
        f.node(n, json!({}), json!([]));
    }
    f.daemonset(json!({}), json!({}));
    f.sync().await;
    assert_eq!(
        f.placement(),
        [("n1", "agent:1"), ("n2", "agent:1"), ("n3", "agent:1")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let revisions = f.fake.list(REVISIONS);
    assert_eq!(revisions.len(), 1);
    let hash = revisions[0]["metadata"]["labels"][HASH_LABEL]
        .as_str()
        .unwrap();
    assert_eq!(revisions[0]["metadata"]["name"], format!("agent-{hash}"));
    assert_eq!(revisions[0]["revision"], 1);
    assert_eq!(
        revisions[0]["data"]["spec"]["template"]["$patch"], "replace",
        "the revision restores the template"
    );
    let pod = serde_json::to_value(&f.pods()[0]).unwrap();
    assert_eq!(pod["metadata"]["generateName"], "agent-");
    assert_eq!(pod["metadata"]["labels"][HASH_LABEL], hash);
    assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "DaemonSet");
    assert_eq!(pod["metadata"]["ownerReferences"][0]["controller"], true);
    assert!(
        pod["spec"]["nodeName"].is_null(),
        "placed by affinity, not bound"
    );
    assert_eq!(
        pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"],
        json!({"nodeSelectorTerms": [{"matchFields": [
            {"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]})
    );
    let tolerations: Vec<(String, String)> = pod["spec"]["tolerations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            assert_eq!(t["operator"], "Exists");
            (
                t["key"].as_str().unwrap().to_string(),
                t["effect"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want = [
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    assert_eq!(
        tolerations,
        want.map(|(k, e)| (k.to_string(), e.to_string()))
    );
    let status = f.status();
    assert_eq!(status["desiredNumberScheduled"], 3);
    assert_eq!(status["currentNumberScheduled"], 3);
    assert_eq!(status["updatedNumberScheduled"], 3);
    assert_eq!(status["numberReady"], 0);
    assert_eq!(status["numberAvailable"], 0);
    assert_eq!(status["numberUnavailable"], 3);
    assert_eq!(status["numberMisscheduled"], 0);
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(f.events(), ["SuccessfulCreate"; 3]);

    // Nothing more to do.
    let before = f.fake.writes().len();
    f.sync().await;
    assert_eq!(
        f.fake.writes().len(),
        before,
        "{:?}",
        &f.fake.writes()[before..]
    );

    f.all_ready();
    f.sync().await;
    let status = f.status();
    assert_eq!(status["numberReady"], 3);
    assert_eq!(status["numberAvailable"], 3);
    assert_eq!(status["numberUnavailable"], 0);
}

#[tokio::test]
async fn node_selector_affinity_and_taints() {
    let f = Fixture::new();
    f.node("plain", json!({}), json!([]));
    f.node("ssd", json!({"disk": "ssd"}), json!([]));
    f.node(
        "dedicated",
        json!({"disk": "ssd"}),
        json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]),
    );
    // Cordoned: daemon pods tolerate it.
    f.node(
        "cordoned",
        json!({"disk": "ssd"}),
        json!([{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]),
    );
    // PreferNoSchedule does not keep daemon pods away.
    f.node(
        "preferred",
        json!({"disk": "ssd", "zone": "b"}),
        json!([{"key": "x", "effect": "PreferNoSchedule"}]),
    );
    f.node("zone-c", json!({"disk": "ssd", "zone": "c"}), json!([]));
    f.daemonset(
        json!({}),
        json!({"nodeSelector": {"disk": "ssd"}, "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["c"]}]}]}}}}),
    );
    f.sync().await;
    let nodes: Vec<String> = f.placement().into_iter().map(|(n, _)| n).collect();
    assert_eq!(nodes, ["cordoned", "preferred", "ssd"]);
    assert_eq!(f.status()["desiredNumberScheduled"], 3);

    // A NoSchedule taint keeps running pods; NoExecute evicts them.
    f.fake.edit(NODES, "ssd", |n| {
        n["spec"]["taints"] = json!([{"key": "maintenance", "effect": "NoSchedule"}]);
    });
    f.sync().await;
    assert_eq!(f.pods().len(), 3);
    assert_eq!(f.status()["desiredNumberScheduled"], 2);
    assert_eq!(f.status()["numberMisscheduled"], 1);
    f.fake.edit(NODES, "ssd", |n| {
        n["spec"]["taints"] = json!([{"key": "maintenance", "effect": "NoExecute"}]);
    });
    f.sync().await;
    let nodes: Vec<String> = f.placement().into_iter().map(|(n, _)| n).collect();
    assert_eq!(nodes, ["cordoned", "preferred"]);
    assert_eq!(f.status()["numberMisscheduled"], 0);
}

#[test]
fn tolerations_match_as_upstream() {
    let node = |taints: Value| -> Node {
        serde_json::from_value(json!({"metadata": {"name": "n"}, "spec": {"taints": taints}}))
            .unwrap()
    };
    let spec = |tolerations: Value| -> k8s_openapi::api::core::v1::PodSpec {
        serde_json::from_value(json!({"containers": [], "tolerations": tolerations})).unwrap()
    };
    let taint = json!([{"key": "k", "value": "v", "effect": "NoSchedule"}]);
    let cases = [
        (json!([]), (false, true)),
        (
            json!([{"key": "k", "operator": "Equal", "value": "v"}]),
            (true, true),
        ),
        (json!([{"key": "k", "value": "w"}]), (false, true)),
        (
            json!([{"key": "k", "operator": "Exists", "effect": "NoSchedule"}]),
            (true, true),
        ),
        (
            json!([{"key": "k", "operator": "Exists", "effect": "NoExecute"}]),
            (false, true),
        ),
        (json!([{"operator": "Exists"}]), (true, true)),
    ];
    for (tolerations, want) in cases {
        assert_eq!(
            nodes::should_run(&spec(tolerations.clone()), &node(taint.clone())),
            want,
            "{tolerations}"
        );
    }
    let no_execute = json!([{"key": "k", "effect": "NoExecute"}]);
    assert_eq!(
        nodes::should_run(&spec(json!([])), &node(no_execute)),
        (false, false)
    );
    // The host network tolerates a network that is not ready; other pods do not.
    let net = json!([{"key": "node.kubernetes.io/network-unavailable", "effect": "NoSchedule"}]);
    assert_eq!(
        nodes::should_run(&spec(json!([])), &node(net.clone())),
        (false, true)
    );
    let mut host = spec(json!([]));
    host.host_network = Some(true);
    assert_eq!(nodes::should_run(&host, &node(net)), (true, true));
    // The daemon tolerations replace the template's of the same key (tolerationSeconds goes).
    let mut s = spec(
        json!([{"key": "node.kubernetes.io/not-ready", "operator": "Exists",
        "effect": "NoExecute", "tolerationSeconds": 300}]),
    );
    nodes::add_daemon_tolerations(&mut s);
    let tolerations = s.tolerations.unwrap();
    assert_eq!(tolerations.len(), 6);
    assert_eq!(tolerations[0].toleration_seconds, None);
}

#[tokio::test]
async fn nodes_added_and_removed() {
    let f = Fixture::new();
    f.node("n1", json!({}), json!([]));
    f.daemonset(json!({}), json!({}));
    f.sync().await;
    assert_eq!(f.pods().len(), 1);
    f.node("n2", json!({}), json!([]));
    f.sync().await;
    let nodes: Vec<String> = f.placement().into_iter().map(|(n, _)| n).collect();
    assert_eq!(nodes, ["n1", "n2"]);
    Api::<Node>::all(f.ctx.client.clone())
        .delete("n1", &DeleteParams::default())
        .await
        .unwrap();
    f.sync().await;
    let nodes: Vec<String> = f.placement().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        nodes,
        ["n2"],
        "the unscheduled pod for the gone node is deleted"
    );
    assert_eq!(f.status()["desiredNumberScheduled"], 1);
}

#[tokio::test]
async fn rolling_update_respects_max_unavailable() {
    let f = Fixture::new();
    for n in ["n1", "n2", "n3", "n4", "n5"] {
        f.node(n, json!({}), json!([]));
    }
    f.daemonset(
        json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "40%"}}}),
        json!({}),
    );
    f.sync().await;
    f.all_ready();
    f.sync().await;
    f.set_image("agent:2");
    let mut rounds = 0;
    loop {
        let since = f.fake.writes().len();
        f.sync().await;
        let (creates, deletes) = f.creates_and_deletes(since);
        let placement = f.placement();
        // 40% of 5 rounds up to 2: never more than 2 nodes without an available pod.
        let old_ready = placement.iter().filter(|(_, i)| i == "agent:1").count();
        let new_pods = placement.len() - old_ready;
        assert!(deletes <= 2, "round {rounds}: {deletes} deletions");
        assert!(
            creates == 0 || deletes == 0,
            "create and delete in one pass"
        );
        assert!(old_ready + new_pods >= 3, "round {rounds}: {placement:?}");
        if placement.iter().all(|(_, i)| i == "agent:2") && placement.len() == 5 {
            let status = f.status();
            if status["numberAvailable"] == 5 {
                break;
            }
        }
        // The kubelet starts whatever is new; the unready new pods hold the update back.
        if rounds % 2 == 1 {
            f.all_ready();
        }
        rounds += 1;
        assert!(rounds < 20, "the update never finished: {placement:?}");
    }
    let status = f.status();
    assert_eq!(status["updatedNumberScheduled"], 5);
    assert_eq!(status["observedGeneration"], 2);
    let mut revisions: Vec<i64> = f
        .fake
        .list(REVISIONS)
        .iter()
        .map(|r| r["revision"].as_i64().unwrap())
        .collect();
    revisions.sort();
    assert_eq!(revisions, [1, 2]);
}

#[tokio::test]
async fn surge_starts_the_new_pod_before_the_old_goes() {
    let f = Fixture::new();
    for n in ["n1", "n2", "n3"] {
        f.node(n, json!({}), json!([]));
    }
    f.daemonset(
        json!({"updateStrategy": {"type": "RollingUpdate",
               "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}}),
        json!({}),
    );
    f.sync().await;
    f.all_ready();
    f.sync().await;
    f.set_image("agent:2");
    f.sync().await;
    let placement = f.placement();
    assert_eq!(
        placement.len(),
        4,
        "one new pod beside the old: {placement:?}"
    );
    assert_eq!(placement.iter().filter(|(_, i)| i == "agent:2").count(), 1);
    // Not ready yet: nothing more happens.
    f.sync().await;
    assert_eq!(f.placement().len(), 4);
    for _ in 0..10 {
        f.all_ready();
        f.sync().await;
        let p = f.placement();
        assert!(p.len() <= 4 && p.len() >= 3, "{p:?}");
    }
    assert_eq!(
        f.placement(),
        ["n1", "n2", "n3"].map(|n| (n.to_string(), "agent:2".to_string()))
    );
}

#[tokio::test]
async fn on_delete_waits_for_pods_to_be_deleted() {
    let f = Fixture::new();
    f.node("n1", json!({}), json!([]));
    f.node("n2", json!({}), json!([]));
    f.daemonset(json!({"updateStrategy": {"type": "OnDelete"}}), json!({}));
    f.sync().await;
    f.all_ready();
    f.set_image("agent:2");
    f.sync().await;
    assert!(f.placement().iter().all(|(_, i)| i == "agent:1"));
    assert_eq!(f.status()["updatedNumberScheduled"], 0);
    let first = f.pods()[0].metadata.name.clone().unwrap();
    Api::<Pod>::namespaced(f.ctx.client.clone(), "ns")
        .delete(&first, &DeleteParams::default())
        .await
        .unwrap();
    f.sync().await;
    let images: Vec<String> = f.placement().into_iter().map(|(_, i)| i).collect();
    assert_eq!(images, ["agent:2", "agent:1"]);
    assert_eq!(f.status()["updatedNumberScheduled"], 1);
}

#[tokio::test]
async fn failed_pods_are_replaced_with_backoff() {
    let f = Fixture::new();
    f.node("n1", json!({}), json!([]));
    f.daemonset(json!({}), json!({}));
    f.sync().await;
    let fail_the_pod = || {
        let name = f.pods()[0].metadata.name.clone().unwrap();
        f.set_phase(&name, "Failed", false);
        name
    };
    let first = fail_the_pod();
    f.sync().await;
    assert!(
        f.fake.get(PODS, &first).is_none(),
        "the failed pod is deleted"
    );
    assert!(f.events().contains(&"FailedDaemonPod".to_string()));
    assert!(f.events().contains(&"SuccessfulDelete".to_string()));
    f.sync().await;
    assert_eq!(f.pods().len(), 1, "and made again");
    let second = fail_the_pod();
    let action = f.sync().await;
    assert!(f.fake.get(PODS, &second).is_some(), "backing off");
    assert_eq!(action, Action::requeue(Duration::from_secs(1)));
    f.clock.advance(Duration::from_secs(1));
    f.sync().await;
    assert!(f.fake.get(PODS, &second).is_none());
}

#[tokio::test]
async fn history_is_kept_to_its_limit() {
    let f = Fixture::new();
    f.node("n1", json!({}), json!([]));
    f.daemonset(json!({"revisionHistoryLimit": 1}), json!({}));
    for version in 2..=4 {
        f.sync().await;
        f.all_ready();
        f.sync().await;
        f.set_image(&format!("agent:{version}"));
    }
    for _ in 0..4 {
        f.sync().await;
        f.all_ready();
    }
    let mut revisions: Vec<i64> = f
        .fake
        .list(REVISIONS)
        .iter()
        .map(|r| r["revision"].as_i64().unwrap())
        .collect();
    revisions.sort();
    assert_eq!(revisions, [3, 4], "the current one and one old one");

    // Back to an earlier template: its revision is made again with the next number.
    f.set_image("agent:3");
    f.sync().await;
    let current: Vec<Value> = f
        .fake
        .list(REVISIONS)
        .into_iter()
        .filter(|r| r["data"]["spec"]["template"]["spec"]["containers"][0]["image"] == "agent:3")
        .collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["revision"], 5);
}

#[tokio::test]
async fn min_ready_seconds_gates_availability() {
    let f = Fixture::new();
    f.node("n1", json!({}), json!([]));
    f.daemonset(json!({"minReadySeconds": 30}), json!({}));
    f.sync().await;
    let name = f.pods()[0].metadata.name.clone().unwrap();
    f.fake.edit(PODS, &name, |p| {
        p["status"] = json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True",
            "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
    });
    let action = f.sync().await;
    assert_eq!(f.status()["numberReady"], 1);
    assert_eq!(f.status()["numberAvailable"], 0);
    assert_eq!(action, Action::requeue(Duration::from_secs(30)));
    f.clock.advance(Duration::from_secs(30));
    f.sync().await;
    assert_eq!(f.status()["numberAvailable"], 1);
}

#[tokio::test]
async fn selecting_everything_is_refused() {
    let f = Fixture::new();
    f.node("n1", json!({}), json!([]));
    f.daemonset(json!({"selector": {}}), json!({}));
    let ds: DaemonSet = serde_json::from_value(f.fake.get(SETS, "agent").unwrap()).unwrap();
    let err = reconcile(Arc::new(ds), f.ctx.clone(), f.failures.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err}");
    assert!(f.pods().is_empty());
}

#[test]
fn percentages_round_up() {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    assert_eq!(
        update::scaled(Some(&IntOrString::String("40%".into())), 5).unwrap(),
        2
    );
    assert_eq!(
        update::scaled(Some(&IntOrString::String("10%".into())), 3).unwrap(),
        1
    );
    assert_eq!(update::scaled(Some(&IntOrString::Int(3)), 5).unwrap(), 3);
    assert!(update::scaled(Some(&IntOrString::String("x".into())), 5).is_err());
}

#[tokio::test]
async fn surge_retires_pods_of_tainted_nodes_only_while_enough_stay_available() {
    let f = Fixture::new();
    f.node("n1", json!({}), json!([]));
    f.node("n2", json!({}), json!([]));
    f.daemonset(
        json!({"updateStrategy": {"type": "RollingUpdate",
               "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}}),
        json!({}),
    );
    f.sync().await;
    f.all_ready();
    // n2 is tainted NoSchedule: its pod may stay, no new one goes there.
    f.fake.edit(NODES, "n2", |n| {
        n["spec"]["taints"] = json!([{"key": "maintenance", "effect": "NoSchedule"}]);
    });
    f.set_image("agent:2");
    f.sync().await;
    // n1 surges; n2's old pod is the one left over (2 available, 1 node wants a pod).
    assert_eq!(
        f.placement(),
        [("n1", "agent:1"), ("n1", "agent:2")].map(|(a, b)| (a.to_string(), b.to_string())),
    );
    for _ in 0..4 {
        f.all_ready();
        f.sync().await;
    }
    assert_eq!(f.placement(), [("n1".to_string(), "agent:2".to_string())]);
    assert_eq!(f.status()["desiredNumberScheduled"], 1);
}

#[tokio::test]
async fn a_refused_creation_stops_the_slow_start_and_the_status_is_still_written() {
    let f = Fixture::new();
    for n in ["n1", "n2", "n3", "n4"] {
        f.node(n, json!({}), json!([]));
    }
    f.daemonset(json!({}), json!({}));
    f.fake.refuse(
        "POST",
        PODS,
        403,
        "Forbidden",
        "pods \"agent-x\" is forbidden: exceeded quota: pods",
    );
    let ds: DaemonSet = serde_json::from_value(f.fake.get(SETS, "agent").unwrap()).unwrap();
    let err = reconcile(Arc::new(ds), f.ctx.clone(), f.failures.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Api(kube::Error::Api(e)) if e.code == 403),
        "{err}"
    );
    assert_eq!(
        f.creates_and_deletes(0),
        (1, 0),
        "the first batch of one failed"
    );
    assert_eq!(f.events(), ["FailedCreate"]);
    assert_eq!(f.status()["desiredNumberScheduled"], 4);
    assert_eq!(f.status()["currentNumberScheduled"], 0);
    f.fake.accept();
    f.sync().await;
    assert_eq!(f.pods().len(), 4);
}

#[tokio::test]
async fn a_revision_go_wrote_matches_the_same_template() {
    let f = Fixture::new();
    f.node("n1", json!({}), json!([]));
    f.daemonset(json!({}), json!({}));
    f.sync().await;
    let name = f.fake.list(REVISIONS)[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    f.fake.edit(REVISIONS, &name, |r| {
        let template = &mut r["data"]["spec"]["template"];
        template["metadata"]["creationTimestamp"] = Value::Null;
        template["spec"]["containers"][0]["resources"] = json!({});
    });
    let before = f.fake.writes().len();
    f.sync().await;
    assert_eq!(f.fake.list(REVISIONS).len(), 1);
    assert_eq!(
        f.fake.writes().len(),
        before,
        "{:?}",
        &f.fake.writes()[before..]
    );
}

/// The revision's bytes are what Go's `json.Marshal` writes for the template (upstream's
/// `getPatch`), which clients compare byte for byte (`daemon.Match`).
#[test]
fn revision_data_is_the_bytes_go_writes() {
    let ds: DaemonSet = serde_json::from_value(json!({
        "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": {
            "metadata": {"labels": {"app": "x"}},
            "spec": {"containers": [{"name": "app", "image": "img", "imagePullPolicy": "IfNotPresent",
                "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"}],
                "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
                "securityContext": {}, "schedulerName": "default-scheduler"}}}
    }))
    .unwrap();
    assert_eq!(
        serde_json::to_string(&super::history::revision_data(&ds)).unwrap(),
        r#"{"spec":{"template":{"$patch":"replace","metadata":{"creationTimestamp":null,"labels":{"app":"x"}},"spec":{"containers":[{"image":"img","imagePullPolicy":"IfNotPresent","name":"app","resources":{},"terminationMessagePath":"/dev/termination-log","terminationMessagePolicy":"File"}],"dnsPolicy":"ClusterFirst","restartPolicy":"Always","schedulerName":"default-scheduler","securityContext":{},"terminationGracePeriodSeconds":30}}}}"#
    );
}
