//! The Deployment controller with the ReplicaSet controller against the fake API; the tests
//! play kubelet by marking pods Ready.

use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use serde_json::{Value, json};

use super::*;
use crate::replicaset::tests::{PODS, T0, context, make_ready};
use crate::testing::FakeApi;

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/ns/deployments";
const RSS: &str = "/apis/apps/v1/namespaces/ns/replicasets";

fn deployment(replicas: i32, strategy: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "ns", "annotations": {"note": "n1"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}},
            "strategy": strategy,
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600,
        },
    })
}

fn rolling(surge: Value, unavailable: Value) -> Value {
    json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}})
}

fn get_d(fake: &FakeApi) -> Value {
    fake.get(DEPLOYMENTS, "web").unwrap()
}

async fn sync_d(fake: &FakeApi, ctx: &Context) -> Action {
    let d: Deployment = serde_json::from_value(get_d(fake)).unwrap();
    sync(&d, ctx).await.unwrap()
}

async fn sync_rss(fake: &FakeApi, ctx: &Context, check: &dyn Fn(&FakeApi)) {
    for rs in fake.list(RSS) {
        let rs: ReplicaSet = serde_json::from_value(rs).unwrap();
        crate::replicaset::sync(&rs, ctx).await.unwrap();
        check(fake);
    }
}

/// Runs both controllers until neither writes, `check`ing the world after every sync.
async fn settle_checked(fake: &FakeApi, ctx: &Context, check: &dyn Fn(&FakeApi)) -> Action {
    for _ in 0..40 {
        let before = fake.writes().len();
        let action = sync_d(fake, ctx).await;
        check(fake);
        sync_rss(fake, ctx, check).await;
        if fake.writes().len() == before {
            return action;
        }
    }
    panic!("the controllers never settle: {:#?}", fake.writes());
}

async fn settle(fake: &FakeApi, ctx: &Context) -> Action {
    settle_checked(fake, ctx, &|_| {}).await
}

/// Plays kubelet for every pod not yet ready.
fn kubelet(fake: &FakeApi) {
    while kubelet_one(fake) {}
}

/// Makes one pod ready; false when all are.
fn kubelet_one(fake: &FakeApi) -> bool {
    let pending = fake
        .list(PODS)
        .into_iter()
        .find(|p| p["status"]["conditions"].is_null());
    match pending {
        Some(p) => {
            make_ready(fake, p["metadata"]["name"].as_str().unwrap(), T0);
            true
        }
        None => false,
    }
}

/// Changes the Deployment's spec as a client would (the generation goes up).
fn edit_spec(fake: &FakeApi, change: impl FnOnce(&mut Value)) {
    fake.edit(DEPLOYMENTS, "web", |d| {
        change(&mut d["spec"]);
        let g = d["metadata"]["generation"].as_i64().unwrap();
        d["metadata"]["generation"] = json!(g + 1);
    });
}

fn set_image(fake: &FakeApi, image: &str) {
    edit_spec(fake, |s| {
        s["template"]["spec"]["containers"][0]["image"] = json!(image)
    });
}

/// (name, spec.replicas, revision) of each ReplicaSet, by revision.
fn replicasets(fake: &FakeApi) -> Vec<(String, i64, String)> {
    let mut out: Vec<_> = fake
        .list(RSS)
        .iter()
        .map(|rs| {
            (
                rs["metadata"]["name"].as_str().unwrap().to_string(),
                rs["spec"]["replicas"].as_i64().unwrap(),
                rs["metadata"]["annotations"][REVISION]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    out.sort_by_key(|(_, _, r)| r.parse::<i64>().unwrap_or(0));
    out
}

fn image_of(rs: &Value) -> &str {
    rs["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
}

fn condition_of(d: &Value, type_: &str) -> Value {
    d["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == type_)
        .cloned()
        .unwrap_or(Value::Null)
}

fn ready_pods(fake: &FakeApi) -> usize {
    fake.list(PODS)
        .iter()
        .filter(|p| p["status"]["conditions"][0]["status"] == "True")
        .count()
}

#[tokio::test]
async fn creates_a_hashed_replicaset_and_reports_progress() {
    let fake = FakeApi::default();
    let (ctx, _) = context(&fake);
    fake.put(
        DEPLOYMENTS,
        deployment(3, rolling(json!("25%"), json!("25%"))),
    );
    sync_d(&fake, &ctx).await;
    let rss = fake.list(RSS);
    assert_eq!(rss.len(), 1);
    let rs = &rss[0];
    let hash = rs["metadata"]["labels"][HASH_LABEL].as_str().unwrap();
    assert_eq!(rs["metadata"]["name"], format!("web-{hash}"));
    assert_eq!(rs["spec"]["selector"]["matchLabels"][HASH_LABEL], hash);
    assert_eq!(
        rs["spec"]["template"]["metadata"]["labels"][HASH_LABEL],
        hash
    );
    assert_eq!(rs["spec"]["replicas"], 3);
    let a = &rs["metadata"]["annotations"];
    assert_eq!(a[REVISION], "1");
    assert_eq!(a[DESIRED_REPLICAS], "3");
    assert_eq!(a[MAX_REPLICAS], "4");
    assert_eq!(a["note"], "n1");
    assert_eq!(rs["metadata"]["ownerReferences"][0]["kind"], "Deployment");
    let d = get_d(&fake);
    assert_eq!(d["metadata"]["annotations"][REVISION], "1");
    let p = condition_of(&d, "Progressing");
    assert_eq!(p["reason"], NEW_RS_CREATED);
    assert_eq!(
        p["message"],
        format!("Created new replica set \"web-{hash}\"")
    );

    let scaled: Vec<Value> = fake
        .list("/api/v1/namespaces/ns/events")
        .into_iter()
        .filter(|e| e["reason"] == "ScalingReplicaSet")
        .collect();
    assert_eq!(scaled.len(), 1);
    assert_eq!(
        scaled[0]["message"],
        format!("Scaled up replica set web-{hash} from 0 to 3")
    );
    assert_eq!(scaled[0]["involvedObject"]["kind"], "Deployment");
    settle(&fake, &ctx).await;
    assert_eq!(fake.list(PODS).len(), 3);
    let d = get_d(&fake);
    assert_eq!(condition_of(&d, "Available")["reason"], MIN_UNAVAILABLE);
    assert_eq!(
        condition_of(&d, "Available")["message"],
        "Deployment does not have minimum availability."
    );
    kubelet(&fake);
    settle(&fake, &ctx).await;
    let d = get_d(&fake);
    let s = &d["status"];
    assert_eq!(
        (
            &s["replicas"],
            &s["updatedReplicas"],
            &s["readyReplicas"],
            &s["availableReplicas"]
        ),
        (&json!(3), &json!(3), &json!(3), &json!(3))
    );
    assert!(s["unavailableReplicas"].is_null());
    assert_eq!(s["observedGeneration"], 1);
    let a = condition_of(&d, "Available");
    assert_eq!(
        (&a["status"], &a["reason"]),
        (&json!("True"), &json!(MIN_AVAILABLE))
    );
    assert_eq!(a["message"], "Deployment has minimum availability.");
    let p = condition_of(&d, "Progressing");
    assert_eq!(p["reason"], NEW_RS_AVAILABLE);
    assert_eq!(
        p["message"],
        format!("ReplicaSet \"web-{hash}\" has successfully progressed.")
    );
}

/// A rolling update with maxSurge 1 and maxUnavailable 1 of 4 replicas, the kubelet making
/// one pod ready at a time: never more than 5 pods, never fewer than 3 ready.
#[tokio::test]
async fn rolling_updates_stay_within_surge_and_unavailability() {
    let fake = FakeApi::default();
    let (ctx, _) = context(&fake);
    fake.put(DEPLOYMENTS, deployment(4, rolling(json!(1), json!(1))));
    settle(&fake, &ctx).await;
    kubelet(&fake);
    settle(&fake, &ctx).await;
    assert_eq!(ready_pods(&fake), 4);

    set_image(&fake, "nginx:2");
    let check = |fake: &FakeApi| {
        let pods = fake.list(PODS).len();
        assert!(pods <= 5, "{pods} pods: more than replicas + maxSurge");
        let ready = ready_pods(fake);
        assert!(
            ready >= 3,
            "{ready} ready: fewer than replicas - maxUnavailable"
        );
    };
    let mut steps = 0;
    loop {
        settle_checked(&fake, &ctx, &check).await;
        if steps == 1 {
            let p = condition_of(&get_d(&fake), "Progressing");
            let new = &replicasets(&fake)[1].0;
            assert_eq!(
                (&p["status"], &p["reason"]),
                (&json!("True"), &json!(RS_UPDATED))
            );
            assert_eq!(
                p["message"],
                format!("ReplicaSet \"{new}\" is progressing.")
            );
        }
        if !kubelet_one(&fake) {
            break;
        }
        steps += 1;
        assert!(steps < 20);
    }
    settle_checked(&fake, &ctx, &check).await;
    let rss = replicasets(&fake);
    assert_eq!(rss.len(), 2);
    assert_eq!((rss[0].1, rss[0].2.as_str()), (0, "1"));
    assert_eq!((rss[1].1, rss[1].2.as_str()), (4, "2"));
    let new = fake.get(RSS, &rss[1].0).unwrap();
    assert_eq!(image_of(&new), "nginx:2");
    assert_eq!(fake.list(PODS).len(), 4);
    let d = get_d(&fake);
    assert_eq!(d["metadata"]["annotations"][REVISION], "2");
    assert_eq!(d["status"]["updatedReplicas"], 4);
    assert_eq!(d["status"]["availableReplicas"], 4);
    assert_eq!(d["status"]["observedGeneration"], 2);
    assert_eq!(condition_of(&d, "Progressing")["reason"], NEW_RS_AVAILABLE);
}

#[tokio::test]
async fn recreate_removes_old_pods_before_creating_new_ones() {
    let fake = FakeApi::default();
    let (ctx, _) = context(&fake);
    fake.put(DEPLOYMENTS, deployment(2, json!({"type": "Recreate"})));
    settle(&fake, &ctx).await;
    kubelet(&fake);
    settle(&fake, &ctx).await;
    set_image(&fake, "nginx:2");
    // The old ReplicaSet goes to 0 and nothing new is created yet.
    sync_d(&fake, &ctx).await;
    assert_eq!(replicasets(&fake).len(), 1);
    assert_eq!(replicasets(&fake)[0].1, 0);
    assert_eq!(fake.list(PODS).len(), 2);
    // Its pods still run: the Deployment waits.
    sync_d(&fake, &ctx).await;
    assert_eq!(replicasets(&fake).len(), 1);
    // Even when its ReplicaSet no longer counts them (terminating pods).
    let old = replicasets(&fake)[0].0.clone();
    fake.edit(RSS, &old, |rs| rs["status"]["replicas"] = json!(0));
    sync_d(&fake, &ctx).await;
    assert_eq!(replicasets(&fake).len(), 1);
    settle(&fake, &ctx).await;
    let rss = replicasets(&fake);
    assert_eq!(rss.len(), 2);
    assert_eq!(rss[1].1, 2);
    assert_eq!(fake.list(PODS).len(), 2);
    let d = get_d(&fake);
    assert_eq!(d["status"]["updatedReplicas"], 2);
    assert_eq!(condition_of(&d, "Available")["status"], "False");
}

async fn roll_to(fake: &FakeApi, ctx: &Context, image: &str) {
    set_image(fake, image);
    for _ in 0..20 {
        settle(fake, ctx).await;
        kubelet(fake);
    }
    settle(fake, ctx).await;
}

#[tokio::test]
async fn history_beyond_the_limit_goes_oldest_first() {
    let fake = FakeApi::default();
    let (ctx, _) = context(&fake);
    let mut d = deployment(2, rolling(json!(1), json!(0)));
    d["spec"]["revisionHistoryLimit"] = json!(1);
    fake.put(DEPLOYMENTS, d);
    roll_to(&fake, &ctx, "nginx:1").await;
    roll_to(&fake, &ctx, "nginx:2").await;
    roll_to(&fake, &ctx, "nginx:3").await;
    roll_to(&fake, &ctx, "nginx:4").await;
    let rss = replicasets(&fake);
    let revisions: Vec<&str> = rss.iter().map(|r| r.2.as_str()).collect();
    assert_eq!(revisions, ["3", "4"]);
    assert_eq!((rss[0].1, rss[1].1), (0, 2));
}

/// `kubectl rollout undo` puts the old template back: its ReplicaSet is used again with the
/// next revision (its old one kept in the revision history) and scaled up.
#[tokio::test]
async fn a_template_seen_before_reuses_its_replicaset() {
    let fake = FakeApi::default();
    let (ctx, _) = context(&fake);
    fake.put(DEPLOYMENTS, deployment(2, rolling(json!(1), json!(0))));
    roll_to(&fake, &ctx, "nginx:1").await;
    let first = replicasets(&fake)[0].0.clone();
    roll_to(&fake, &ctx, "nginx:2").await;
    roll_to(&fake, &ctx, "nginx:1").await;
    let rss = replicasets(&fake);
    assert_eq!(rss.len(), 2);
    assert_eq!(rss[1].0, first);
    assert_eq!((rss[1].1, rss[1].2.as_str()), (2, "3"));
    assert_eq!(rss[0].1, 0);
    let reused = fake.get(RSS, &first).unwrap();
    assert_eq!(reused["metadata"]["annotations"][REVISION_HISTORY], "1");
    assert_eq!(get_d(&fake)["metadata"]["annotations"][REVISION], "3");
    assert_eq!(fake.list(PODS).len(), 2);
}

#[tokio::test]
async fn paused_deployments_scale_but_do_not_roll_out() {
    let fake = FakeApi::default();
    let (ctx, _) = context(&fake);
    fake.put(DEPLOYMENTS, deployment(2, rolling(json!(1), json!(0))));
    roll_to(&fake, &ctx, "nginx:1").await;
    edit_spec(&fake, |s| s["paused"] = json!(true));
    set_image(&fake, "nginx:2");
    settle(&fake, &ctx).await;
    assert_eq!(replicasets(&fake).len(), 1);
    let p = condition_of(&get_d(&fake), "Progressing");
    assert_eq!(
        (&p["status"], &p["reason"]),
        (&json!("Unknown"), &json!(PAUSED))
    );
    assert_eq!(p["message"], "Deployment is paused");
    edit_spec(&fake, |s| s["replicas"] = json!(3));
    settle(&fake, &ctx).await;
    assert_eq!(replicasets(&fake)[0].1, 3);
    assert_eq!(fake.list(PODS).len(), 3);

    edit_spec(&fake, |s| s["paused"] = json!(false));
    sync_d(&fake, &ctx).await;
    assert_eq!(replicasets(&fake).len(), 2);
    for _ in 0..10 {
        settle(&fake, &ctx).await;
        kubelet(&fake);
    }
    settle(&fake, &ctx).await;
    let rss = replicasets(&fake);
    assert_eq!((rss[0].1, rss[1].1), (0, 3));
    assert_eq!(
        condition_of(&get_d(&fake), "Progressing")["reason"],
        NEW_RS_AVAILABLE
    );
}

/// upstream's documented example: 10 replicas, maxSurge 3, maxUnavailable 2, a rollout stuck
/// at 8 old and 5 new; scaled to 15, the old get 3 more and the new 2.
#[tokio::test]
async fn scaling_mid_rollout_is_proportional() {
    let fake = FakeApi::default();
    let (ctx, _) = context(&fake);
    fake.put(DEPLOYMENTS, deployment(10, rolling(json!(3), json!(2))));
    settle(&fake, &ctx).await;
    kubelet(&fake);
    settle(&fake, &ctx).await;
    set_image(&fake, "nginx:does-not-exist");
    settle(&fake, &ctx).await;
    let rss = replicasets(&fake);
    assert_eq!((rss[0].1, rss[1].1), (8, 5));
    edit_spec(&fake, |s| s["replicas"] = json!(15));
    settle(&fake, &ctx).await;
    let rss = replicasets(&fake);
    assert_eq!((rss[0].1, rss[1].1), (11, 7));
    let messages: Vec<String> = fake
        .list("/api/v1/namespaces/ns/events")
        .iter()
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .collect();
    let old_scaled = format!("Scaled up replica set {} from 8 to 11", rss[0].0);
    assert!(messages.contains(&old_scaled), "{messages:#?}");
    for (name, _, _) in &rss {
        let rs = fake.get(RSS, name).unwrap();
        assert_eq!(rs["metadata"]["annotations"][DESIRED_REPLICAS], "15");
        assert_eq!(rs["metadata"]["annotations"][MAX_REPLICAS], "18");
    }
}

#[tokio::test]
async fn a_stuck_rollout_exceeds_its_progress_deadline() {
    let fake = FakeApi::default();
    let (ctx, clock) = context(&fake);
    let mut d = deployment(2, rolling(json!(1), json!(0)));
    d["spec"]["progressDeadlineSeconds"] = json!(30);
    fake.put(DEPLOYMENTS, d);
    let action = settle(&fake, &ctx).await;
    assert_eq!(action, Action::requeue(Duration::from_secs(31)));
    clock.advance(Duration::from_secs(20));
    assert_eq!(
        sync_d(&fake, &ctx).await,
        Action::requeue(Duration::from_secs(11))
    );
    clock.advance(Duration::from_secs(11));
    settle(&fake, &ctx).await;
    let d = get_d(&fake);
    let p = condition_of(&d, "Progressing");
    assert_eq!(
        (&p["status"], &p["reason"]),
        (&json!("False"), &json!(TIMED_OUT))
    );
    let rs = replicasets(&fake)[0].0.clone();
    assert_eq!(
        p["message"],
        format!("ReplicaSet \"{rs}\" has timed out progressing.")
    );
    // Progress afterwards does not undo the verdict, completion does.
    kubelet(&fake);
    settle(&fake, &ctx).await;
    assert_eq!(
        condition_of(&get_d(&fake), "Progressing")["reason"],
        NEW_RS_AVAILABLE
    );
}

#[tokio::test]
async fn orphan_replicasets_are_adopted_and_strays_released() {
    let fake = FakeApi::default();
    let (ctx, _) = context(&fake);
    fake.put(DEPLOYMENTS, deployment(1, rolling(json!(1), json!(0))));
    fake.put(
        RSS,
        json!({"metadata": {"name": "orphan", "labels": {"app": "web"}},
               "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}},
                                     "spec": {"containers": [{"name": "c", "image": "old"}]}}}}),
    );
    fake.put(
        RSS,
        json!({"metadata": {"name": "stray", "labels": {"app": "db"}, "ownerReferences": [
                  {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "uid-web", "controller": true}]},
               "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "db"}},
                        "template": {"metadata": {"labels": {"app": "db"}}}}}),
    );
    sync_d(&fake, &ctx).await;
    let orphan = fake.get(RSS, "orphan").unwrap();
    assert_eq!(orphan["metadata"]["ownerReferences"][0]["uid"], "uid-web");
    assert_eq!(
        fake.get(RSS, "stray").unwrap()["metadata"]["ownerReferences"],
        json!([])
    );
    // The adopted one is an old revision; the new one gets revision 1 above it (0 + 1).
    let rss = replicasets(&fake);
    assert_eq!(rss.len(), 3);
    assert_eq!(rss[2].2, "1");
}

#[tokio::test]
async fn templates_equal_but_for_the_hash_label() {
    let t = |labels: Value| -> k8s_openapi::api::core::v1::PodTemplateSpec {
        serde_json::from_value(json!({"metadata": {"labels": labels}, "spec": {"containers": []}}))
            .unwrap()
    };
    assert!(equal_ignore_hash(
        &t(json!({"app": "a", HASH_LABEL: "x"})),
        &t(json!({"app": "a"}))
    ));
    assert!(!equal_ignore_hash(
        &t(json!({"app": "a"})),
        &t(json!({"app": "b"}))
    ));
}

/// A ReplicaSet with another template already has the name `<deployment>-<hash>`: the
/// Deployment counts a collision and the next sync hashes with it.
#[tokio::test]
async fn a_hash_collision_raises_the_collision_count() {
    let fake = FakeApi::default();
    let (ctx, _) = context(&fake);
    fake.put(DEPLOYMENTS, deployment(1, rolling(json!(1), json!(0))));
    let d: Deployment = serde_json::from_value(get_d(&fake)).unwrap();
    let hash = template_hash(&d.spec.unwrap().template, None);
    fake.put(
        RSS,
        json!({"metadata": {"name": format!("web-{hash}"), "labels": {"app": "other"}},
               "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "other"}},
                        "template": {"metadata": {"labels": {"app": "other"}}}}}),
    );
    let d: Deployment = serde_json::from_value(get_d(&fake)).unwrap();
    assert!(sync(&d, &ctx).await.is_err());
    assert_eq!(get_d(&fake)["status"]["collisionCount"], 1);
    sync_d(&fake, &ctx).await;
    let ours: Vec<Value> = fake
        .list(RSS)
        .into_iter()
        .filter(|rs| rs["metadata"]["ownerReferences"][0]["uid"] == "uid-web")
        .collect();
    assert_eq!(ours.len(), 1);
    let collided = template_hash(
        &serde_json::from_value(get_d(&fake)["spec"]["template"].clone()).unwrap(),
        Some(1),
    );
    assert_eq!(ours[0]["metadata"]["name"], format!("web-{collided}"));
}

#[tokio::test]
async fn min_ready_seconds_hold_availability_back() {
    let fake = FakeApi::default();
    let (ctx, clock) = context(&fake);
    let mut d = deployment(2, rolling(json!(1), json!(0)));
    d["spec"]["minReadySeconds"] = json!(5);
    fake.put(DEPLOYMENTS, d);
    settle(&fake, &ctx).await;
    let rs = replicasets(&fake)[0].0.clone();
    assert_eq!(fake.get(RSS, &rs).unwrap()["spec"]["minReadySeconds"], 5);
    kubelet(&fake);
    settle(&fake, &ctx).await;
    let d = get_d(&fake);
    assert_eq!(d["status"]["readyReplicas"], 2);
    assert!(d["status"]["availableReplicas"].is_null());
    assert_eq!(d["status"]["unavailableReplicas"], 2);
    clock.advance(Duration::from_secs(6));
    settle(&fake, &ctx).await;
    let d = get_d(&fake);
    assert_eq!(d["status"]["availableReplicas"], 2);
    assert_eq!(condition_of(&d, "Available")["status"], "True");
}

/// A Deployment being deleted only reports status: no new ReplicaSet, no scaling.
#[tokio::test]
async fn a_deleted_deployment_only_reports_status() {
    let fake = FakeApi::default();
    let (ctx, _) = context(&fake);
    fake.put(DEPLOYMENTS, deployment(2, rolling(json!(1), json!(0))));
    settle(&fake, &ctx).await;
    fake.edit(DEPLOYMENTS, "web", |d| {
        d["metadata"]["deletionTimestamp"] = json!(T0);
        d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
    });
    settle(&fake, &ctx).await;
    let rss = replicasets(&fake);
    assert_eq!(rss.len(), 1);
    assert_eq!(rss[0].1, 2);
    assert_eq!(get_d(&fake)["status"]["replicas"], 2);
}
