use std::collections::HashSet;

use kube::api::PropagationPolicy;
use kube::core::PartialObjectMetaExt;
use serde_json::{Value, json};

use super::*;
use crate::testing::FakeApi;

const PODS: &str = "/api/v1/namespaces/ns/pods";
const MAPS: &str = "/api/v1/namespaces/ns/configmaps";
const RCS: &str = "/api/v1/namespaces/ns/replicationcontrollers";
const WIDGETS: &str = "/apis/example.com/v2/namespaces/ns/widgets";
const GIZMOS: &str = "/apis/example.com/v2/gizmos";

struct Gc {
    fake: FakeApi,
    ctx: Context,
    graph: Mutex<Graph>,
    resources: Resources,
    feeder: Feeder,
}

async fn setup() -> Gc {
    let fake = FakeApi::default();
    crate::resources::tests::serve_discovery(&fake);
    fake.hold_finalizers();
    let ctx = Context::new(fake.client());
    let mut resources = Resources::default();
    resources.refresh(&ctx.client).await.unwrap();
    Gc {
        fake,
        ctx,
        graph: Mutex::new(Graph::default()),
        resources,
        feeder: Feeder::new(),
    }
}

fn owned_by(kind: &str, name: &str, uid: &str, block: bool) -> Value {
    json!({"apiVersion": "v1", "kind": kind, "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": block})
}

fn by_rc(name: &str, block: bool) -> Value {
    owned_by("ReplicationController", name, &format!("uid-{name}"), block)
}

fn put(gc: &Gc, collection: &str, name: &str, owners: Value) {
    let mut obj = json!({"metadata": {"name": name}});
    if owners.as_array().is_some_and(|o| !o.is_empty()) {
        obj["metadata"]["ownerReferences"] = owners;
    }
    gc.fake.put(collection, obj);
}

impl Gc {
    /// Feeds the graph as a re-list of every watched resource would.
    async fn relist(&mut self) -> Queue {
        let mut queue = Queue::default();
        let all: Vec<Served> = self
            .resources
            .all()
            .iter()
            .filter(|r| collectable(r))
            .cloned()
            .collect();
        for r in all {
            let served = Arc::new(r.clone());
            let api: Api<DynamicObject> = Api::all_with(self.ctx.client.clone(), &r.api);
            let listed = api.list(&Default::default()).await.unwrap().items;
            queue.extend(
                self.feeder
                    .feed(&self.graph, served.clone(), watcher::Event::Init),
            );
            for obj in listed {
                let meta = obj.metadata.into_response_partial();
                let event = watcher::Event::InitApply(meta);
                queue.extend(self.feeder.feed(&self.graph, served.clone(), event));
            }
            queue.extend(
                self.feeder
                    .feed(&self.graph, served, watcher::Event::InitDone),
            );
        }
        queue
    }

    /// Runs the collector until it writes nothing more.
    async fn settle(&mut self) {
        for _ in 0..20 {
            let before = self.fake.writes().len();
            let mut queue = self.relist().await;
            while let Some(work) = queue.pop(&HashSet::new()) {
                let more = attempt::attempt(&self.ctx, &self.graph, &self.resources, &work)
                    .await
                    .unwrap();
                queue.extend(more);
            }
            if self.fake.writes().len() == before {
                return;
            }
        }
        panic!("the collector did not settle: {:?}", self.fake.writes());
    }

    /// Deletes as a client would, with a propagation policy.
    async fn delete(&self, collection: &str, name: &str, policy: &str) {
        let client = self.ctx.client.clone();
        let req = http::Request::delete(format!("{collection}/{name}"))
            .body(serde_json::to_vec(&json!({"propagationPolicy": policy})).unwrap())
            .unwrap();
        client.request::<Value>(req).await.unwrap();
    }
}

#[tokio::test]
async fn dependents_of_a_gone_owner_are_deleted_with_their_uid_as_precondition() {
    let mut gc = setup().await;
    put(&gc, RCS, "keep", json!([]));
    put(&gc, PODS, "a", json!([by_rc("rc", true)]));
    put(&gc, PODS, "b", json!([by_rc("keep", true)]));
    // Same name, other uid: a different object, so the owner is gone.
    put(&gc, RCS, "other", json!([]));
    put(
        &gc,
        PODS,
        "c",
        json!([owned_by(
            "ReplicationController",
            "other",
            "uid-stale",
            true
        )]),
    );
    let seeded = gc.fake.writes().len();
    gc.settle().await;
    assert!(gc.fake.get(PODS, "a").is_none());
    assert!(gc.fake.get(PODS, "c").is_none());
    assert!(gc.fake.get(PODS, "b").is_some());
    let writes = &gc.fake.writes()[seeded..];
    assert_eq!(writes.len(), 2);
    assert!(
        writes
            .iter()
            .all(|w| w.starts_with("DELETE /api/v1/namespaces/ns/pods/"))
    );
}

#[tokio::test]
async fn a_custom_resource_owns_and_a_dependent_with_another_owner_only_loses_the_reference() {
    let mut gc = setup().await;
    put(&gc, WIDGETS, "w", json!([]));
    let widget =
        json!({"apiVersion": "example.com/v2", "kind": "Widget", "name": "w", "uid": "uid-w"});
    put(&gc, MAPS, "owned", json!([widget]));
    put(&gc, MAPS, "shared", json!([widget, by_rc("gone", false)]));
    gc.settle().await;
    assert!(gc.fake.get(MAPS, "owned").is_some());
    let shared = gc.fake.get(MAPS, "shared").unwrap();
    assert_eq!(shared["metadata"]["ownerReferences"], json!([widget]));
    gc.delete(WIDGETS, "w", "Background").await;
    gc.settle().await;
    assert!(gc.fake.get(MAPS, "owned").is_none());
    assert!(gc.fake.get(MAPS, "shared").is_none());
}

#[tokio::test]
async fn foreground_deletes_blocking_dependents_first_then_the_owner() {
    let mut gc = setup().await;
    put(&gc, RCS, "rc1", json!([]));
    put(&gc, RCS, "rc2", json!([]));
    put(&gc, PODS, "a", json!([by_rc("rc1", true)]));
    put(
        &gc,
        PODS,
        "b",
        json!([by_rc("rc1", true), by_rc("rc2", false)]),
    );
    gc.settle().await;
    gc.delete(RCS, "rc1", "Foreground").await;
    let marked = gc.fake.get(RCS, "rc1").unwrap();
    assert_eq!(
        marked["metadata"]["finalizers"],
        json!(["foregroundDeletion"])
    );
    gc.settle().await;
    assert!(gc.fake.get(RCS, "rc1").is_none());
    assert!(gc.fake.get(PODS, "a").is_none());
    let b = gc.fake.get(PODS, "b").unwrap();
    assert!(b["metadata"]["deletionTimestamp"].is_null());
    assert_eq!(
        b["metadata"]["ownerReferences"],
        json!([by_rc("rc2", false)])
    );
}

#[tokio::test]
async fn orphaning_removes_the_references_then_the_finalizer() {
    let mut gc = setup().await;
    put(&gc, RCS, "rc", json!([]));
    put(&gc, PODS, "a", json!([by_rc("rc", true)]));
    gc.settle().await;
    gc.delete(RCS, "rc", "Orphan").await;
    gc.settle().await;
    assert!(gc.fake.get(RCS, "rc").is_none());
    let a = gc.fake.get(PODS, "a").unwrap();
    assert!(a["metadata"].get("ownerReferences").is_none());
    assert!(a["metadata"]["deletionTimestamp"].is_null());
    let writes = gc.fake.writes();
    assert!(writes.contains(&"PATCH /api/v1/namespaces/ns/pods/a".to_string()));
    assert_eq!(
        writes.last().unwrap(),
        "PATCH /api/v1/namespaces/ns/replicationcontrollers/rc"
    );
}

#[tokio::test]
async fn a_dependency_circle_does_not_block_foreground_deletion() {
    let mut gc = setup().await;
    let by = |name: &str| json!([owned_by("Pod", name, &format!("uid-{name}"), true)]);
    put(&gc, PODS, "p1", by("p3"));
    put(&gc, PODS, "p2", by("p1"));
    put(&gc, PODS, "p3", by("p2"));
    gc.settle().await;
    assert_eq!(gc.fake.list(PODS).len(), 3, "each has its owner");
    gc.delete(PODS, "p1", "Foreground").await;
    gc.settle().await;
    assert!(gc.fake.list(PODS).is_empty(), "{:?}", gc.fake.list(PODS));
}

#[tokio::test]
async fn a_cluster_scoped_object_naming_a_namespaced_owner_is_left_alone() {
    let mut gc = setup().await;
    put(&gc, GIZMOS, "g", json!([by_rc("nowhere", true)]));
    // An owner of a kind the API does not serve: an error to retry, never a delete.
    let unknown =
        json!({"apiVersion": "example.com/v9", "kind": "Nothing", "name": "x", "uid": "u-x"});
    put(&gc, MAPS, "m", json!([unknown]));
    let mut queue = gc.relist().await;
    let mut errors = 0;
    while let Some(work) = queue.pop(&HashSet::new()) {
        match attempt::attempt(&gc.ctx, &gc.graph, &gc.resources, &work).await {
            Ok(more) => queue.extend(more),
            Err(_) => errors += 1,
        }
    }
    assert_eq!(errors, 1);
    assert!(gc.fake.get(GIZMOS, "g").is_some());
    assert!(gc.fake.get(MAPS, "m").is_some());
}

#[tokio::test]
async fn a_stale_resource_version_is_retried_on_the_uid_when_the_owners_are_unchanged() {
    let gc = setup().await;
    put(&gc, PODS, "a", json!([by_rc("gone", true)]));
    let api: Api<DynamicObject> = Api::namespaced_with(
        gc.ctx.client.clone(),
        "ns",
        &gc.resources.by_resource("", "pods").unwrap().api,
    );
    let read = api.get("a").await.unwrap();
    // A label changes meanwhile: the owners are the same, so the delete goes ahead.
    gc.fake
        .edit(PODS, "a", |p| p["metadata"]["labels"] = json!({"x": "y"}));
    let owners = graph::owners_of(&read.metadata);
    attempt::delete(&api, &read, &owners, PropagationPolicy::Background)
        .await
        .unwrap();
    assert!(gc.fake.get(PODS, "a").is_none());
    // The owners changed meanwhile: not deleted, looked at again.
    put(&gc, PODS, "b", json!([by_rc("gone", true)]));
    let read = api.get("b").await.unwrap();
    gc.fake.edit(PODS, "b", |p| {
        p["metadata"]["ownerReferences"] = json!([by_rc("new", true)])
    });
    assert!(
        attempt::delete(&api, &read, &owners, PropagationPolicy::Background)
            .await
            .is_err()
    );
    assert!(gc.fake.get(PODS, "b").is_some());
}

#[test]
fn the_graph_asks_about_dependents_of_a_deleted_owner_and_owners_waiting_for_them() {
    let served = Arc::new(Served {
        api: kube::core::ApiResource::erase::<k8s_openapi::api::core::v1::Pod>(&()),
        namespaced: true,
        verbs: vec![],
    });
    let meta = |name: &str, owners: Value, extra: Value| {
        let mut m = json!({"name": name, "namespace": "ns", "uid": format!("u-{name}"), "ownerReferences": owners});
        for (k, v) in extra.as_object().unwrap() {
            m[k] = v.clone();
        }
        serde_json::from_value::<kube::core::ObjectMeta>(m).unwrap()
    };
    let mut graph = Graph::default();
    let owner = meta("o", json!([]), json!({}));
    assert!(
        graph
            .apply("u-o", Node::of(served.clone(), &owner))
            .is_empty()
    );
    let dep = meta("d", json!([owned_by("Pod", "o", "u-o", true)]), json!({}));
    assert!(
        graph
            .apply("u-d", Node::of(served.clone(), &dep))
            .is_empty(),
        "its owner is known"
    );
    let stray = meta("s", json!([owned_by("Pod", "x", "u-x", true)]), json!({}));
    assert_eq!(
        graph.apply("u-s", Node::of(served.clone(), &stray)),
        [Work::Delete("u-s".into())]
    );
    let fg = meta(
        "o",
        json!([]),
        json!({"deletionTimestamp": "2026-01-01T00:00:00Z", "finalizers": ["foregroundDeletion"]}),
    );
    assert_eq!(
        graph.apply("u-o", Node::of(served.clone(), &fg)),
        [Work::Delete("u-o".into()), Work::Delete("u-d".into())]
    );
    // The dependent goes: the owner waiting for it gets a look.
    assert_eq!(graph.remove("u-d"), [Work::Delete("u-o".into())]);
    let orphaning = meta(
        "s",
        json!([]),
        json!({"deletionTimestamp": "2026-01-01T00:00:00Z", "finalizers": ["orphan"]}),
    );
    assert_eq!(
        graph.apply("u-s", Node::of(served, &orphaning)),
        [Work::Orphan("u-s".into())]
    );
}
