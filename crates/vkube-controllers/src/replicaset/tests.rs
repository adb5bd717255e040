use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::clock::FakeClock;
use crate::testing::FakeApi;

pub(crate) const PODS: &str = "/api/v1/namespaces/ns/pods";
const RSS: &str = "/apis/apps/v1/namespaces/ns/replicasets";
const RCS: &str = "/api/v1/namespaces/ns/replicationcontrollers";
pub(crate) const T0: &str = "2026-01-01T00:00:00Z";

pub(crate) fn context(fake: &FakeApi) -> (Context, Arc<FakeClock>) {
    let clock = Arc::new(FakeClock::new(T0.parse().unwrap()));
    let ctx = Context {
        client: fake.client(),
        clock: clock.clone(),
        workers: 1,
        resync: Duration::from_secs(600),
        max_endpoints_per_slice: 100,
    };
    (ctx, clock)
}

fn rs(name: &str, replicas: i32, min_ready: i32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {
            "replicas": replicas, "minReadySeconds": min_ready,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name, "tier": "x"}},
                         "spec": {"containers": [{"name": "c", "image": "nginx"}]}},
        },
    })
}

pub(crate) fn pod_names(fake: &FakeApi) -> Vec<String> {
    fake.list(PODS)
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

/// Plays kubelet: the pod runs and has been ready since `since`.
pub(crate) fn make_ready(fake: &FakeApi, name: &str, since: &str) {
    fake.edit(PODS, name, |p| {
        p["status"] = json!({"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": since}]});
    });
}

async fn sync_rs(fake: &FakeApi, ctx: &Context, name: &str) -> Result<Action> {
    let obj: ReplicaSet = serde_json::from_value(fake.get(RSS, name).unwrap()).unwrap();
    sync(&obj, ctx).await
}

fn status(fake: &FakeApi, name: &str) -> Value {
    fake.get(RSS, name).unwrap()["status"].clone()
}

#[tokio::test]
async fn scales_up_with_owned_pods_and_reports_status() {
    let fake = FakeApi::default();
    let (ctx, _) = context(&fake);
    fake.put(RSS, rs("web", 3, 0));
    sync_rs(&fake, &ctx, "web").await.unwrap();
    let pods = fake.list(PODS);
    assert_eq!(pods.len(), 3);
    let events = fake.list("/api/v1/namespaces/ns/events");
    assert_eq!(events.len(), 3);
    assert_eq!(events[0]["reason"], "SuccessfulCreate");
    assert!(
        events[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("Created pod: web-")
    );
    assert_eq!(events[0]["involvedObject"]["kind"], "ReplicaSet");
    for p in &pods {
        assert!(p["metadata"]["name"].as_str().unwrap().starts_with("web-"));
        assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "ReplicaSet");
        assert_eq!(p["metadata"]["ownerReferences"][0]["uid"], "uid-web");
        assert_eq!(p["metadata"]["labels"]["tier"], "x");
    }
    let s = status(&fake, "web");
    assert_eq!(s["replicas"], 3);
    assert_eq!(s["fullyLabeledReplicas"], 3);
    assert_eq!(s["observedGeneration"], 1);
    assert!(s["readyReplicas"].is_null());
    // In sync: nothing more is written.
    let before = fake.writes().len();
    sync_rs(&fake, &ctx, "web").await.unwrap();
    assert_eq!(fake.writes().len(), before);
}

#[tokio::test]
async fn scales_down_least_valuable_pods_first() {
    let fake = FakeApi::default();
    let (ctx, clock) = context(&fake);
    clock.advance(Duration::from_secs(600));
    fake.put(RSS, rs("web", 6, 0));
    sync_rs(&fake, &ctx, "web").await.unwrap();
    let names = pod_names(&fake);
    // 0: unassigned, pending. 1: assigned, pending. 2: running, not ready.
    // 3: ready recently. 4: ready long ago, restarted. 5: ready long ago.
    for (i, n) in names.iter().enumerate() {
        fake.edit(PODS, n, |p| {
            if i > 0 {
                p["spec"]["nodeName"] = json!(format!("node-{i}"));
            }
            match i {
                2 => p["status"] = json!({"phase": "Running"}),
                3 => {
                    p["status"] = json!({"phase": "Running", "conditions": [
                        {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:09:00Z"}]})
                }
                4 | 5 => {
                    p["status"] = json!({"phase": "Running", "conditions": [
                        {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:01:00Z"}],
                        "containerStatuses": [{"name": "c", "image": "nginx", "imageID": "", "ready": true,
                            "restartCount": if i == 4 { 3 } else { 0 }}]})
                }
                _ => {}
            }
        });
    }
    let mut expected_order = names.clone();
    for keep in (1..=6).rev() {
        fake.edit(RSS, "web", |r| r["spec"]["replicas"] = json!(keep - 1));
        sync_rs(&fake, &ctx, "web").await.unwrap();
        let gone = expected_order.remove(0);
        assert!(!pod_names(&fake).contains(&gone), "{gone} goes next");
        assert_eq!(pod_names(&fake).len(), keep as usize - 1);
    }
    assert_eq!(status(&fake, "web")["replicas"], 0);
}

#[test]
fn newer_pods_go_first_by_logarithmic_age_then_uid() {
    let pod = |name: &str, created: &str| -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": name, "creationTimestamp": created}, "spec": {"containers": []}}),
        )
        .unwrap()
    };
    let mut pods = vec![
        pod("old", "2026-01-01T00:00:00Z"),
        pod("new", "2026-01-02T00:00:00Z"),
    ];
    let none = HashMap::new();
    rank_for_deletion(&mut pods, "2026-01-03T00:00:00Z".parse().unwrap(), &none);
    assert_eq!(pods[0].metadata.name.as_deref(), Some("new"));
    // 40 and 50 days old: the same rank (2^52 ns ≈ 52 days), so the uid decides.
    let mut pods = vec![
        pod("b", "2026-01-01T00:00:00Z"),
        pod("a", "2026-01-11T00:00:00Z"),
    ];
    pods[0].metadata.uid = Some("1".into());
    pods[1].metadata.uid = Some("2".into());
    rank_for_deletion(&mut pods, "2026-02-20T00:00:00Z".parse().unwrap(), &none);
    assert_eq!(pods[0].metadata.name.as_deref(), Some("b"));
}

/// Scaling 500 pods down once panicked: equal creation times skipped the uid tiebreak that
/// near-equal ones used, so the comparison was not a total order.
#[test]
fn many_pods_with_equal_and_near_equal_times_sort_in_a_total_order() {
    let none = HashMap::new();
    let mut pods: Vec<Pod> = (0..500)
        .map(|i| {
            let second = [0, 0, 1, 1, 2][i % 5];
            serde_json::from_value(json!({"metadata": {"name": format!("p{i}"), "uid": format!("{:03}", (i * 7919) % 500),
                "creationTimestamp": format!("2026-01-01T00:00:0{second}Z")}, "spec": {"containers": []}}))
            .unwrap()
        })
        .collect();
    rank_for_deletion(&mut pods, "2026-01-01T00:00:03Z".parse().unwrap(), &none);
    let uids: Vec<_> = pods
        .iter()
        .map(|p| p.metadata.uid.clone().unwrap())
        .collect();
    let mut sorted = uids.clone();
    sorted.sort();
    assert_ne!(
        uids, sorted,
        "newer pods (a lower rank) go first, before the uid decides"
    );
}

#[tokio::test]
async fn adopts_orphans_releases_strays_and_leaves_others_alone() {
    let fake = FakeApi::default();
    let (ctx, _) = context(&fake);
    fake.put(RSS, rs("web", 2, 0));
    fake.put(
        PODS,
        json!({"metadata": {"name": "orphan", "labels": {"app": "web"}}}),
    );
    fake.put(
        PODS,
        json!({"metadata": {"name": "foreign", "labels": {"app": "web"}, "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "other", "uid": "uid-other", "controller": true}]}}),
    );
    fake.put(
        PODS,
        json!({"metadata": {"name": "stray", "labels": {"app": "db"}, "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "uid-web", "controller": true}]}}),
    );
    sync_rs(&fake, &ctx, "web").await.unwrap();
    let orphan = fake.get(PODS, "orphan").unwrap();
    assert_eq!(orphan["metadata"]["ownerReferences"][0]["uid"], "uid-web");
    let stray = fake.get(PODS, "stray").unwrap();
    assert_eq!(stray["metadata"]["ownerReferences"], json!([]));
    let foreign = fake.get(PODS, "foreign").unwrap();
    assert_eq!(
        foreign["metadata"]["ownerReferences"][0]["uid"],
        "uid-other"
    );
    // The adopted orphan counts: one more pod, not two.
    assert_eq!(fake.list(PODS).len(), 4);
    assert_eq!(status(&fake, "web")["replicas"], 2);
}

#[tokio::test]
async fn available_after_min_ready_seconds_with_a_timed_requeue() {
    let fake = FakeApi::default();
    let (ctx, clock) = context(&fake);
    fake.put(RSS, rs("web", 2, 10));
    sync_rs(&fake, &ctx, "web").await.unwrap();
    for n in pod_names(&fake) {
        make_ready(&fake, &n, T0);
    }
    clock.advance(Duration::from_secs(4));
    let action = sync_rs(&fake, &ctx, "web").await.unwrap();
    let s = status(&fake, "web");
    assert_eq!(s["readyReplicas"], 2);
    assert!(s["availableReplicas"].is_null());
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(6) + Duration::from_millis(10))
    );
    clock.advance(Duration::from_secs(6));
    let action = sync_rs(&fake, &ctx, "web").await.unwrap();
    assert_eq!(status(&fake, "web")["availableReplicas"], 2);
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn refused_creates_set_replica_failure_until_they_succeed() {
    let fake = FakeApi::default();
    let (ctx, _) = context(&fake);
    fake.put(RSS, rs("web", 2, 0));
    let quota = "pods \"web-x\" is forbidden: exceeded quota: q, requested: pods=1, used: pods=0, limited: pods=0";
    fake.refuse("POST", PODS, 403, "Forbidden", quota);
    let err = sync_rs(&fake, &ctx, "web").await.unwrap_err();
    assert!(matches!(err, Error::Api(_)));
    let s = status(&fake, "web");
    assert_eq!(s["conditions"][0]["type"], "ReplicaFailure");
    assert_eq!(s["conditions"][0]["reason"], "FailedCreate");
    assert_eq!(s["conditions"][0]["message"], quota);
    // One refused pod, the slow start stops there.
    let pod_posts = fake
        .writes()
        .iter()
        .filter(|w| w.as_str() == format!("POST {PODS}"))
        .count();
    assert_eq!(pod_posts, 1);
    let events = fake.list("/api/v1/namespaces/ns/events");
    assert_eq!(events[0]["reason"], "FailedCreate");
    assert_eq!(events[0]["message"], format!("Error creating: {quota}"));
    assert_eq!(events[0]["source"]["component"], "replicaset-controller");
    fake.accept();
    sync_rs(&fake, &ctx, "web").await.unwrap();
    assert!(status(&fake, "web")["conditions"].is_null());
    assert_eq!(fake.list(PODS).len(), 2);
}

#[tokio::test]
async fn replication_controllers_select_by_map() {
    let fake = FakeApi::default();
    let (ctx, _) = context(&fake);
    fake.put(
        RCS,
        json!({"apiVersion": "v1", "kind": "ReplicationController",
            "metadata": {"name": "fg"},
            "spec": {"replicas": 3, "selector": {"app": "fg"},
                "template": {"metadata": {"labels": {"app": "fg"}},
                             "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}),
    );
    fake.put(
        PODS,
        json!({"metadata": {"name": "orphan", "labels": {"app": "fg"}}}),
    );
    let rc: ReplicationController = serde_json::from_value(fake.get(RCS, "fg").unwrap()).unwrap();
    sync(&rc, &ctx).await.unwrap();
    assert_eq!(fake.list(PODS).len(), 3);
    let orphan = fake.get(PODS, "orphan").unwrap();
    assert_eq!(
        orphan["metadata"]["ownerReferences"][0]["kind"],
        "ReplicationController"
    );
    assert_eq!(fake.get(RCS, "fg").unwrap()["status"]["replicas"], 3);
}

#[tokio::test]
async fn a_deleted_set_is_left_alone() {
    let fake = FakeApi::default();
    let (ctx, _) = context(&fake);
    let mut obj = rs("web", 2, 0);
    obj["metadata"]["deletionTimestamp"] = json!(T0);
    fake.put(RSS, obj);
    sync_rs(&fake, &ctx, "web").await.unwrap();
    assert!(fake.list(PODS).is_empty());
}

/// A Deployment's ReplicaSet deletes first where its siblings' pods crowd the node.
#[tokio::test]
async fn pods_doubled_up_with_siblings_go_first() {
    let fake = FakeApi::default();
    let (ctx, _) = context(&fake);
    let owner = json!([{"apiVersion": "apps/v1", "kind": "Deployment", "name": "d", "uid": "uid-d", "controller": true}]);
    let mut new = rs("new", 2, 0);
    new["metadata"]["ownerReferences"] = owner.clone();
    fake.put(RSS, new);
    let mut old = rs("old", 1, 0);
    old["metadata"]["ownerReferences"] = owner;
    fake.put(RSS, old);
    let rs_of = |name: &str| -> ReplicaSet {
        serde_json::from_value(fake.get(RSS, name).unwrap()).unwrap()
    };
    sync(&rs_of("new"), &ctx).await.unwrap();
    sync(&rs_of("old"), &ctx).await.unwrap();
    let place = |app: &str, node: &str| {
        for p in fake.list(PODS) {
            if p["metadata"]["labels"]["app"] == app {
                let name = p["metadata"]["name"].as_str().unwrap().to_string();
                if p["spec"]["nodeName"].is_null() {
                    fake.edit(PODS, &name, |p| p["spec"]["nodeName"] = json!(node));
                    return name;
                }
            }
        }
        unreachable!()
    };
    let crowded = place("new", "n1");
    let alone = place("new", "n2");
    place("old", "n1");
    fake.edit(RSS, "new", |r| r["spec"]["replicas"] = json!(1));
    sync(&rs_of("new"), &ctx).await.unwrap();
    let names = pod_names(&fake);
    assert!(!names.contains(&crowded), "{names:?}");
    assert!(names.contains(&alone), "{names:?}");
}
