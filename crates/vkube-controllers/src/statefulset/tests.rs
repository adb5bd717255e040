use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::Clock;
use crate::clock::FakeClock;
use crate::testing::FakeApi;

const SETS: &str = "/apis/apps/v1/namespaces/ns/statefulsets";
const PODS: &str = "/api/v1/namespaces/ns/pods";
const CLAIMS: &str = "/api/v1/namespaces/ns/persistentvolumeclaims";
const REVISIONS: &str = "/apis/apps/v1/namespaces/ns/controllerrevisions";
const EVENTS: &str = "/api/v1/namespaces/ns/events";

struct Test {
    fake: FakeApi,
    ctx: Arc<Context>,
    clock: Arc<FakeClock>,
}

/// A set `web` as the API stores it after defaulting, with `spec` merged over the defaults.
fn setup(spec: Value) -> Test {
    let fake = FakeApi::default();
    let clock = Arc::new(FakeClock::new("2026-01-01T00:00:00Z".parse().unwrap()));
    let mut ctx = Context::new(fake.client());
    ctx.clock = clock.clone();
    let mut set = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "web", "annotations": {"kubernetes.io/change-cause": "first"}},
        "spec": {
            "replicas": 3,
            "serviceName": "web",
            "selector": {"matchLabels": {"app": "web"}},
            "podManagementPolicy": "OrderedReady",
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
            "revisionHistoryLimit": 10,
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "img:1"}]}
            }
        }
    });
    for (k, v) in spec.as_object().unwrap() {
        set["spec"][k] = v.clone();
    }
    fake.put(SETS, set);
    Test {
        fake,
        ctx: Arc::new(ctx),
        clock,
    }
}

impl Test {
    async fn sync(&self) -> Action {
        let set: StatefulSet = serde_json::from_value(self.fake.get(SETS, "web").unwrap()).unwrap();
        reconcile(Arc::new(set), self.ctx.clone()).await.unwrap()
    }

    /// Syncs until nothing is written.
    async fn settle(&self) {
        for _ in 0..20 {
            let before = self.fake.writes().len();
            self.sync().await;
            if self.fake.writes().len() == before {
                return;
            }
        }
        panic!("no steady state: {:?}", self.fake.writes());
    }

    fn pods(&self) -> Vec<String> {
        names(&self.fake.list(PODS))
    }

    fn pod(&self, name: &str) -> Value {
        self.fake.get(PODS, name).unwrap()
    }

    /// Plays the kubelet: the pod runs and is Ready from now.
    fn ready(&self, name: &str) {
        let now = self.clock.now().to_string();
        self.fake.edit(PODS, name, |p| {
            p["status"] = json!({"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": now}]});
        });
    }

    /// Every pod ready, syncing until the set is steady.
    async fn all_ready(&self) {
        for _ in 0..10 {
            for name in self.pods() {
                if self.pod(&name)["status"]["phase"] != "Running" {
                    self.ready(&name);
                }
            }
            self.settle().await;
        }
    }

    /// Changes the spec as a client's update would (the generation grows).
    fn change(&self, f: impl FnOnce(&mut Value)) {
        self.fake.edit(SETS, "web", |s| {
            f(&mut s["spec"]);
            let g = s["metadata"]["generation"].as_i64().unwrap();
            s["metadata"]["generation"] = json!(g + 1);
        });
    }

    fn status(&self) -> Value {
        self.fake.get(SETS, "web").unwrap()["status"].clone()
    }

    async fn delete_pod(&self, name: &str) {
        let api: Api<Pod> = Api::namespaced(self.fake.client(), "ns");
        api.delete(name, &DeleteParams::default()).await.unwrap();
    }

    fn writes_since(&self, n: usize) -> Vec<String> {
        self.fake.writes()[n..].to_vec()
    }
}

/// `reason: message` of every event, oldest first.
fn events(t: &Test) -> Vec<String> {
    let mut events = t.fake.list(EVENTS);
    events.sort_by_key(|e| {
        e["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    });
    events
        .iter()
        .map(|e| {
            assert_eq!(e["involvedObject"]["kind"], "StatefulSet");
            assert_eq!(e["source"]["component"], "statefulset-controller");
            format!(
                "{}: {}",
                e["reason"].as_str().unwrap(),
                e["message"].as_str().unwrap()
            )
        })
        .collect()
}

fn names(objects: &[Value]) -> Vec<String> {
    let mut names: Vec<String> = objects
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn ordered_scale_up_waits_for_each_pod_to_be_running_and_ready() {
    let t = setup(json!({}));
    t.sync().await;
    assert_eq!(t.pods(), ["web-0"]);
    t.sync().await;
    assert_eq!(t.pods(), ["web-0"], "web-1 waits for web-0");
    t.fake
        .edit(PODS, "web-0", |p| p["status"] = json!({"phase": "Running"}));
    t.sync().await;
    assert_eq!(t.pods(), ["web-0"], "Running but not Ready is not enough");

    t.ready("web-0");
    t.sync().await;
    assert_eq!(t.pods(), ["web-0", "web-1"]);
    t.ready("web-1");
    t.sync().await;
    assert_eq!(t.pods(), ["web-0", "web-1", "web-2"]);
    t.ready("web-2");
    t.settle().await;

    let pod = t.pod("web-1");
    assert_eq!(pod["metadata"]["generateName"], "web-");
    assert_eq!(pod["spec"]["hostname"], "web-1");
    assert_eq!(pod["spec"]["subdomain"], "web");
    let labels = &pod["metadata"]["labels"];
    assert_eq!(labels["app"], "web");
    assert_eq!(labels[POD_NAME_LABEL], "web-1");
    assert_eq!(labels[POD_INDEX_LABEL], "1");
    let owner = &pod["metadata"]["ownerReferences"][0];
    assert_eq!(
        (&owner["kind"], &owner["name"], &owner["controller"]),
        (&json!("StatefulSet"), &json!("web"), &json!(true))
    );

    let status = t.status();
    let revision = status["updateRevision"].as_str().unwrap().to_string();
    assert_eq!(labels[REVISION_LABEL], revision.as_str());
    assert_eq!(status["replicas"], 3);
    assert_eq!(status["readyReplicas"], 3);
    assert_eq!(status["availableReplicas"], 3);
    assert_eq!(status["currentReplicas"], 3);
    assert_eq!(status["updatedReplicas"], 3);
    assert_eq!(status["currentRevision"], revision.as_str());
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(status["collisionCount"], 0);
    assert_eq!(
        events(&t),
        [
            "SuccessfulCreate: create Pod web-0 in StatefulSet web successful",
            "SuccessfulCreate: create Pod web-1 in StatefulSet web successful",
            "SuccessfulCreate: create Pod web-2 in StatefulSet web successful",
        ]
    );
    assert!(
        t.fake
            .writes()
            .iter()
            .any(|w| w.ends_with("/statefulsets/web/status")),
        "the status goes through the subresource"
    );
}

#[tokio::test]
async fn parallel_creates_and_deletes_all_at_once() {
    let t = setup(json!({"podManagementPolicy": "Parallel", "replicas": 4}));
    t.sync().await;
    assert_eq!(t.pods(), ["web-0", "web-1", "web-2", "web-3"]);
    t.change(|s| s["replicas"] = json!(1));
    t.sync().await;
    assert_eq!(t.pods(), ["web-0"], "not ready, deleted all the same");
}

#[tokio::test]
async fn ordinals_start_where_the_spec_says() {
    let t =
        setup(json!({"podManagementPolicy": "Parallel", "replicas": 2, "ordinals": {"start": 5}}));
    t.sync().await;
    assert_eq!(t.pods(), ["web-5", "web-6"]);
    assert_eq!(t.pod("web-6")["metadata"]["labels"][POD_INDEX_LABEL], "6");
}

#[tokio::test]
async fn scale_down_removes_the_highest_ordinal_first_one_at_a_time() {
    let t = setup(json!({}));
    t.all_ready().await;
    assert_eq!(t.pods(), ["web-0", "web-1", "web-2"]);

    // With web-0 not ready, nothing is removed.
    t.fake.edit(PODS, "web-0", |p| {
        p["status"]["conditions"][0]["status"] = json!("False")
    });
    t.change(|s| s["replicas"] = json!(1));
    t.sync().await;
    assert_eq!(t.pods(), ["web-0", "web-1", "web-2"]);

    t.ready("web-0");
    let before = t.fake.writes().len();
    t.sync().await;
    assert_eq!(t.pods(), ["web-0", "web-1"]);
    let deletes: Vec<_> = t
        .writes_since(before)
        .into_iter()
        .filter(|w| w.starts_with("DELETE"))
        .collect();
    assert_eq!(deletes, ["DELETE /api/v1/namespaces/ns/pods/web-2"]);
    assert_eq!(
        events(&t).last().unwrap(),
        "SuccessfulDelete: delete Pod web-2 in StatefulSet web successful"
    );
    t.sync().await;
    assert_eq!(t.pods(), ["web-0"]);
    t.settle().await;
    assert_eq!(t.status()["replicas"], 1);
}

#[tokio::test]
async fn scale_down_waits_for_the_pods_below_unless_the_condemned_is_the_first_unhealthy() {
    let t = setup(json!({}));
    t.all_ready().await;
    t.change(|s| s["replicas"] = json!(1));
    // web-2 is unhealthy and the lowest unhealthy pod: it may go.
    t.fake.edit(PODS, "web-2", |p| {
        p["status"]["conditions"][0]["status"] = json!("False")
    });
    t.sync().await;
    assert_eq!(t.pods(), ["web-0", "web-1"]);
}

#[tokio::test]
async fn claims_are_made_per_template_before_their_pod() {
    let t = setup(json!({
        "replicas": 2,
        "volumeClaimTemplates": [
            {"metadata": {"name": "data", "labels": {"tier": "db"}},
             "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}},
            {"metadata": {"name": "logs"},
             "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}
        ],
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "img:1"}],
                     "volumes": [{"name": "cfg", "emptyDir": {}}]}
        }
    }));
    t.sync().await;
    let writes = t.fake.writes();
    let claim = writes
        .iter()
        .position(|w| w == &format!("POST {CLAIMS}"))
        .unwrap();
    let pod = writes
        .iter()
        .position(|w| w == &format!("POST {PODS}"))
        .unwrap();
    assert!(claim < pod, "claims first: {writes:?}");
    assert_eq!(
        events(&t)[..3],
        [
            "SuccessfulCreate: create Claim data-web-0 Pod web-0 in StatefulSet web success",
            "SuccessfulCreate: create Claim logs-web-0 Pod web-0 in StatefulSet web success",
            "SuccessfulCreate: create Pod web-0 in StatefulSet web successful",
        ]
    );
    t.all_ready().await;
    assert_eq!(
        names(&t.fake.list(CLAIMS)),
        ["data-web-0", "data-web-1", "logs-web-0", "logs-web-1"]
    );
    let data = t.fake.get(CLAIMS, "data-web-1").unwrap();
    assert_eq!(
        data["metadata"]["labels"],
        json!({"app": "web", "tier": "db"})
    );
    assert_eq!(data["spec"]["resources"]["requests"]["storage"], "1Gi");
    assert!(
        data["metadata"]["ownerReferences"].is_null(),
        "Retain: no owner"
    );
    let volumes = &t.pod("web-1")["spec"]["volumes"];
    assert_eq!(
        volumes,
        &json!([
            {"name": "data", "persistentVolumeClaim": {"claimName": "data-web-1", "readOnly": false}},
            {"name": "logs", "persistentVolumeClaim": {"claimName": "logs-web-1", "readOnly": false}},
            {"name": "cfg", "emptyDir": {}}
        ])
    );
    // A claim that went away is made again for the pod that names it.
    t.fake
        .edit(PODS, "web-1", |p| p["status"]["phase"] = json!("Pending"));
    let api: Api<PersistentVolumeClaim> = Api::namespaced(t.fake.client(), "ns");
    api.delete("logs-web-1", &DeleteParams::default())
        .await
        .unwrap();
    t.sync().await;
    assert!(t.fake.get(CLAIMS, "logs-web-1").is_some());
}

#[tokio::test]
async fn retention_policy_sets_the_owners_upstream_sets() {
    let t = setup(json!({
        "replicas": 2,
        "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Delete"},
        "volumeClaimTemplates": [{"metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]
    }));
    t.all_ready().await;
    let owners = |claim: &str| -> Vec<(String, String)> {
        t.fake.get(CLAIMS, claim).unwrap()["metadata"]["ownerReferences"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|r| {
                assert_eq!(r["controller"], true);
                (
                    r["kind"].as_str().unwrap().into(),
                    r["uid"].as_str().unwrap().into(),
                )
            })
            .collect()
    };
    assert_eq!(
        owners("data-web-1"),
        [("StatefulSet".into(), "uid-web".into())]
    );

    t.change(|s| s["replicas"] = json!(1));
    t.sync().await;
    // The condemned pod's claim is handed to the pod, then the pod goes (the garbage collector
    // takes the claim after it).
    assert_eq!(owners("data-web-1"), [("Pod".into(), "uid-web-1".into())]);
    assert_eq!(
        owners("data-web-0"),
        [("StatefulSet".into(), "uid-web".into())]
    );
    assert_eq!(t.pods(), ["web-0"]);

    // Scaling up again while the claim still names the old pod: no pod until it is collected.
    t.change(|s| s["replicas"] = json!(2));
    assert_eq!(t.sync().await, Action::requeue(CLAIM_WAIT));
    assert_eq!(t.pods(), ["web-0"]);
    let api: Api<PersistentVolumeClaim> = Api::namespaced(t.fake.client(), "ns");
    api.delete("data-web-1", &DeleteParams::default())
        .await
        .unwrap();
    t.sync().await;
    assert_eq!(t.pods(), ["web-0", "web-1"]);
    assert_eq!(
        owners("data-web-1"),
        [("StatefulSet".into(), "uid-web".into())]
    );

    // Retain on deletion, Delete on scale: no owner while in range.
    t.change(|s| {
        s["persistentVolumeClaimRetentionPolicy"] =
            json!({"whenDeleted": "Retain", "whenScaled": "Delete"})
    });
    t.all_ready().await;
    assert_eq!(owners("data-web-0"), []);
    assert_eq!(owners("data-web-1"), []);
}

/// The revision names of the set, oldest first, with their numbers.
fn revisions(t: &Test) -> Vec<(i64, String)> {
    let mut r: Vec<(i64, String)> = t
        .fake
        .list(REVISIONS)
        .iter()
        .map(|r| {
            (
                r["revision"].as_i64().unwrap(),
                r["metadata"]["name"].as_str().unwrap().into(),
            )
        })
        .collect();
    r.sort();
    r
}

fn set_image(t: &Test, image: &str) {
    let image = image.to_string();
    t.change(move |s| s["template"]["spec"]["containers"][0]["image"] = json!(image));
}

fn image_of(t: &Test, pod: &str) -> String {
    t.pod(pod)["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .into()
}

#[tokio::test]
async fn rolling_update_replaces_from_the_highest_ordinal_down_to_the_partition() {
    let t = setup(json!({}));
    t.all_ready().await;
    let first = t.status()["currentRevision"].as_str().unwrap().to_string();
    t.change(|s| s["updateStrategy"]["rollingUpdate"]["partition"] = json!(1));
    set_image(&t, "img:2");

    t.sync().await;
    assert_eq!(t.pods(), ["web-0", "web-1"], "web-2 goes first");
    t.sync().await;
    assert_eq!(image_of(&t, "web-2"), "img:2");
    let second = t.status()["updateRevision"].as_str().unwrap().to_string();
    assert_ne!(first, second);
    assert_eq!(
        t.pod("web-2")["metadata"]["labels"][REVISION_LABEL],
        second.as_str()
    );
    t.sync().await;
    assert_eq!(t.pods().len(), 3, "web-1 waits for web-2 to be ready");
    assert_eq!(image_of(&t, "web-1"), "img:1");

    t.all_ready().await;
    assert_eq!(image_of(&t, "web-1"), "img:2");
    assert_eq!(image_of(&t, "web-0"), "img:1", "below the partition");
    let status = t.status();
    assert_eq!(status["currentRevision"], first.as_str());
    assert_eq!(status["updateRevision"], second.as_str());
    assert_eq!(status["currentReplicas"], 1);
    assert_eq!(status["updatedReplicas"], 2);

    // A pod below the partition made again is made at the current revision.
    t.delete_pod("web-0").await;
    t.all_ready().await;
    assert_eq!(image_of(&t, "web-0"), "img:1");

    t.change(|s| s["updateStrategy"]["rollingUpdate"]["partition"] = json!(0));
    t.all_ready().await;
    assert_eq!(image_of(&t, "web-0"), "img:2");
    let status = t.status();
    assert_eq!(status["currentRevision"], second.as_str());
    assert_eq!(status["currentReplicas"], 3);
    assert_eq!(status["updatedReplicas"], 3);
    assert_eq!(
        revisions(&t).iter().map(|r| r.0).collect::<Vec<_>>(),
        [1, 2]
    );
}

#[tokio::test]
async fn max_unavailable_replaces_that_many_at_once() {
    let t = setup(json!({"updateStrategy": {"type": "RollingUpdate",
        "rollingUpdate": {"partition": 0, "maxUnavailable": 2}}}));
    t.all_ready().await;
    set_image(&t, "img:2");
    t.sync().await;
    assert_eq!(t.pods(), ["web-0"]);
    t.all_ready().await;
    assert_eq!(image_of(&t, "web-0"), "img:2");
}

#[tokio::test]
async fn on_delete_waits_for_the_user_to_delete() {
    let t = setup(json!({"updateStrategy": {"type": "OnDelete"}}));
    t.all_ready().await;
    set_image(&t, "img:2");
    t.settle().await;
    assert_eq!(t.pods().len(), 3);
    assert_eq!(image_of(&t, "web-2"), "img:1");
    assert_eq!(t.status()["updatedReplicas"], Value::Null);

    t.delete_pod("web-1").await;
    t.all_ready().await;
    assert_eq!(image_of(&t, "web-1"), "img:2");
    assert_eq!(image_of(&t, "web-2"), "img:1");
    assert_eq!(t.status()["updatedReplicas"], 1);
    assert_eq!(t.status()["currentReplicas"], 2);
}

#[tokio::test]
async fn revisions_hold_the_template_and_roll_back_by_renumbering() {
    let t = setup(json!({}));
    t.all_ready().await;
    let [(1, first)] = &revisions(&t)[..] else {
        panic!("{:?}", revisions(&t))
    };
    let stored = t.fake.get(REVISIONS, first).unwrap();
    assert!(first.starts_with("web-"));
    assert_eq!(stored["data"]["spec"]["template"]["$patch"], "replace");
    assert_eq!(
        stored["data"]["spec"]["template"]["spec"]["containers"][0]["image"],
        "img:1"
    );
    assert_eq!(stored["metadata"]["labels"]["app"], "web");
    let hash = first.strip_prefix("web-").unwrap();
    assert_eq!(stored["metadata"]["labels"][revisions::HASH_LABEL], hash);
    assert_eq!(
        stored["metadata"]["annotations"]["kubernetes.io/change-cause"],
        "first"
    );
    assert_eq!(stored["metadata"]["ownerReferences"][0]["uid"], "uid-web");

    set_image(&t, "img:2");
    t.all_ready().await;
    set_image(&t, "img:1");
    t.all_ready().await;
    let now = revisions(&t);
    assert_eq!(now.len(), 2, "{now:?}");
    assert_eq!(
        now[1],
        (3, first.clone()),
        "the first revision is the newest again"
    );
    assert_eq!(t.status()["currentRevision"], first.as_str());
    assert_eq!(image_of(&t, "web-0"), "img:1");
}

#[tokio::test]
async fn history_is_cut_to_the_limit_keeping_live_revisions() {
    let t = setup(
        json!({"replicas": 1, "revisionHistoryLimit": 1, "updateStrategy": {"type": "OnDelete"}}),
    );
    t.all_ready().await;
    for image in ["img:2", "img:3", "img:4"] {
        set_image(&t, image);
        t.settle().await;
    }
    // web-0 still runs revision 1 (OnDelete): live, kept with the current and update ones.
    let now: Vec<i64> = revisions(&t).iter().map(|r| r.0).collect();
    assert_eq!(now, [1, 3, 4]);
    t.delete_pod("web-0").await;
    t.all_ready().await;
    for image in ["img:5", "img:6"] {
        set_image(&t, image);
        t.settle().await;
    }
    // Live: 1 (still the current revision: OnDelete never completes a rollout), 4 (web-0's) and
    // 6 (the update revision); of the others only the newest one is kept.
    let now: Vec<i64> = revisions(&t).iter().map(|r| r.0).collect();
    assert_eq!(now, [1, 4, 5, 6]);
}

#[tokio::test]
async fn history_is_cut_as_rollouts_complete() {
    let t = setup(json!({"replicas": 0, "revisionHistoryLimit": 1}));
    t.settle().await;
    for image in ["img:2", "img:3", "img:4"] {
        set_image(&t, image);
        t.settle().await;
    }
    let now: Vec<i64> = revisions(&t).iter().map(|r| r.0).collect();
    assert_eq!(now, [3, 4]);
}

#[tokio::test]
async fn failed_and_succeeded_pods_are_deleted_and_made_again() {
    let t = setup(json!({}));
    t.all_ready().await;
    t.fake
        .edit(PODS, "web-1", |p| p["status"]["phase"] = json!("Failed"));
    t.sync().await;
    assert_eq!(t.pods(), ["web-0", "web-2"]);
    t.sync().await;
    assert_eq!(t.pods(), ["web-0", "web-1", "web-2"]);
    t.fake
        .edit(PODS, "web-2", |p| p["status"]["phase"] = json!("Succeeded"));
    t.all_ready().await;
    assert_eq!(t.pods().len(), 3);
    assert_eq!(t.status()["readyReplicas"], 3);
}

#[tokio::test]
async fn min_ready_seconds_gates_availability_and_the_next_pod() {
    let t = setup(json!({"replicas": 2, "minReadySeconds": 10}));
    t.sync().await;
    t.ready("web-0");
    let action = t.sync().await;
    assert_eq!(action, Action::requeue(Duration::from_secs(10)));
    assert_eq!(t.pods(), ["web-0"], "web-1 waits for web-0 to be available");
    let status = t.status();
    assert_eq!(status["readyReplicas"], 1);
    assert_eq!(status["availableReplicas"], 0);

    t.clock.advance(Duration::from_secs(10));
    t.sync().await;
    assert_eq!(t.pods(), ["web-0", "web-1"]);
    assert_eq!(t.status()["availableReplicas"], 1);
}

#[tokio::test]
async fn pods_of_others_and_unnamed_pods_are_left_alone_and_orphans_adopted() {
    let t = setup(json!({"replicas": 1}));
    // An orphan named after the set is adopted; a matching pod of another name is not.
    t.fake.put(
        PODS,
        json!({"metadata": {"name": "web-0", "labels": {"app": "web"}}}),
    );
    t.fake.put(
        PODS,
        json!({"metadata": {"name": "other", "labels": {"app": "web"}}}),
    );
    // A pod it controls whose name is not its own is released.
    t.fake.put(
        PODS,
        json!({"metadata": {"name": "stray", "labels": {"app": "web"},
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web",
                             "uid": "uid-web", "controller": true}]}}),
    );
    t.sync().await;
    assert_eq!(
        t.pod("web-0")["metadata"]["ownerReferences"][0]["uid"],
        "uid-web"
    );
    assert!(t.pod("other")["metadata"]["ownerReferences"].is_null());
    assert_eq!(t.pod("stray")["metadata"]["ownerReferences"], json!([]));
    // The adopted pod gets its identity labels.
    t.ready("web-0");
    t.settle().await;
    assert_eq!(
        t.pod("web-0")["metadata"]["labels"][POD_NAME_LABEL],
        "web-0"
    );
    assert_eq!(t.pods(), ["other", "stray", "web-0"]);
}

#[test]
fn names_parse_as_upstream() {
    assert_eq!(parent_and_ordinal("web-12"), Some(("web", 12)));
    assert_eq!(parent_and_ordinal("my-web-0"), Some(("my-web", 0)));
    assert_eq!(parent_and_ordinal("web"), None);
    assert_eq!(parent_and_ordinal("web-x1"), None);
    assert_eq!(max_unavailable(&IntOrString::String("50%".into()), 3), 1);
    assert_eq!(max_unavailable(&IntOrString::String("10%".into()), 3), 1);
    assert_eq!(max_unavailable(&IntOrString::Int(2), 3), 2);
}

#[tokio::test]
async fn refused_creates_stop_the_slow_start_and_are_reported() {
    let t = setup(json!({"podManagementPolicy": "Parallel", "replicas": 4}));
    let quota = "pods \"web-0\" is forbidden: exceeded quota: q, requested: pods=1, used: pods=0, limited: pods=0";
    t.fake.refuse("POST", PODS, 403, "Forbidden", quota);
    let set: StatefulSet = serde_json::from_value(t.fake.get(SETS, "web").unwrap()).unwrap();
    let err = reconcile(Arc::new(set), t.ctx.clone()).await.unwrap_err();
    assert!(
        matches!(err, Error::Api(kube::Error::Api(ref s)) if s.code == 403),
        "{err}"
    );
    let creates = t
        .fake
        .writes()
        .iter()
        .filter(|w| *w == &format!("POST {PODS}"))
        .count();
    assert_eq!(
        creates, 1,
        "the first batch (one pod) failed: no more are tried"
    );
    assert_eq!(
        events(&t),
        [format!(
            "FailedCreate: create Pod web-0 in StatefulSet web failed error: {quota}"
        )]
    );
    t.fake.accept();
    t.sync().await;
    assert_eq!(t.pods(), ["web-0", "web-1", "web-2", "web-3"]);
}

#[tokio::test]
async fn a_set_being_deleted_only_reports() {
    let t = setup(json!({"podManagementPolicy": "Parallel"}));
    t.all_ready().await;
    t.fake.edit(SETS, "web", |s| {
        s["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        s["metadata"]["finalizers"] = json!(["foregroundDeletion"]);
    });
    t.delete_pod("web-1").await;
    t.sync().await;
    assert_eq!(t.pods(), ["web-0", "web-2"], "nothing is made again");
    assert_eq!(t.status()["replicas"], 2);
}
