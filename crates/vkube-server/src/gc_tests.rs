use super::*;
use vkube_store::MemoryStore;

fn pod(name: &str, uid: &str, owners: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": "ns", "uid": uid, "ownerReferences": owners}})
}

fn rc(name: &str, uid: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ReplicationController",
           "metadata": {"name": name, "namespace": "ns", "uid": uid}})
}

fn owned_by(kind: &str, name: &str, uid: &str, block: bool) -> Value {
    json!({"apiVersion": "v1", "kind": kind, "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": block})
}

fn key(plural: &str, name: &str) -> String {
    registry::find("", "v1", plural).unwrap().key("ns", name)
}

async fn put(store: &dyn Store, plural: &str, obj: Value) {
    let k = key(plural, obj["metadata"]["name"].as_str().unwrap());
    store.create(&k, encode(&obj), None).await.unwrap();
}

async fn put_pod(store: &dyn Store, name: &str, owners: Value) {
    put(store, "pods", pod(name, &format!("u-{name}"), owners)).await;
}

async fn put_rc(store: &dyn Store, name: &str, uid: &str) {
    put(store, "replicationcontrollers", rc(name, uid)).await;
}

fn by_rc(name: &str, uid: &str, block: bool) -> Value {
    owned_by("ReplicationController", name, uid, block)
}

async fn read(store: &dyn Store, plural: &str, name: &str) -> Option<Value> {
    let kv = store.get(&key(plural, name), None).await.unwrap()?;
    Some(decode(&kv).unwrap())
}

/// Deletes as the DELETE handler does: the finalizers of the policy, marked or removed.
async fn delete(store: &dyn Store, plural: &str, name: &str, p: Propagation) {
    let uid = read(store, plural, name).await.unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        delete_object(store, &key(plural, name), &uid, p)
            .await
            .unwrap()
    );
}

/// Runs the collector over a fresh graph until nothing more happens.
async fn settle(store: &dyn Store) {
    for _ in 0..20 {
        let (graph, todo) = build(store).await.unwrap();
        let before = store.current_revision().await.unwrap();
        let mut queue = Queue::default();
        queue.extend(todo);
        while let Some(k) = queue.pop() {
            if let Step::Next(more) = process(store, &graph, &k).await.unwrap() {
                queue.extend(more);
            }
        }
        if store.current_revision().await.unwrap() == before {
            return;
        }
    }
    panic!("the collector did not settle");
}

#[test]
fn delete_options_choose_the_finalizers() {
    let q = HashMap::new();
    let parse = |v: Value| Policy::parse(&v, &q);
    let obj = json!({"metadata": {"finalizers": ["x"]}});
    let fg = parse(json!({"propagationPolicy": "Foreground"})).unwrap();
    assert_eq!(
        deletion_finalizers(&obj, &fg),
        Some(vec!["x".into(), FOREGROUND.into()])
    );
    let orphan = parse(json!({"orphanDependents": true})).unwrap();
    assert_eq!(
        deletion_finalizers(&obj, &orphan),
        Some(vec!["x".into(), ORPHAN.into()])
    );
    let bg = parse(json!({"propagationPolicy": "Background"})).unwrap();
    assert_eq!(deletion_finalizers(&obj, &bg), None);
    // Without options, a finalizer already there decides; a new policy replaces it.
    let marked = json!({"metadata": {"finalizers": [ORPHAN]}});
    assert_eq!(deletion_finalizers(&marked, &Policy::default()), None);
    assert_eq!(deletion_finalizers(&marked, &bg), Some(vec![]));
    let both = parse(json!({"propagationPolicy": "Orphan", "orphanDependents": false}));
    assert_eq!(both.unwrap_err().code, 422);
    assert_eq!(
        parse(json!({"propagationPolicy": "Sideways"}))
            .unwrap_err()
            .code,
        422
    );
    let from_query = HashMap::from([("propagationPolicy".to_string(), "Orphan".to_string())]);
    assert_eq!(
        Policy::parse(&json!({}), &from_query).unwrap(),
        Policy::explicit(Propagation::Orphan)
    );
}

#[tokio::test]
async fn dependents_of_a_gone_owner_are_deleted() {
    let store = MemoryStore::new();
    put_rc(store.as_ref(), "keep", "u-keep").await;
    put_pod(store.as_ref(), "a", json!([by_rc("rc", "u-rc", true)])).await;
    put_pod(store.as_ref(), "b", json!([by_rc("keep", "u-keep", true)])).await;
    // Same name, other uid: a different object, so the owner is gone.
    put_rc(store.as_ref(), "rc", "u-other").await;
    settle(store.as_ref()).await;
    assert!(read(store.as_ref(), "pods", "a").await.is_none());
    assert!(read(store.as_ref(), "pods", "b").await.is_some());
}

#[tokio::test]
async fn foreground_deletes_dependents_first_and_keeps_those_with_another_owner() {
    let store = MemoryStore::new();
    put_rc(store.as_ref(), "rc1", "u1").await;
    put_rc(store.as_ref(), "rc2", "u2").await;
    put_pod(store.as_ref(), "a", json!([by_rc("rc1", "u1", true)])).await;
    let two = json!([by_rc("rc1", "u1", true), by_rc("rc2", "u2", false)]);
    put_pod(store.as_ref(), "b", two).await;
    delete(
        store.as_ref(),
        "replicationcontrollers",
        "rc1",
        Propagation::Foreground,
    )
    .await;
    let marked = read(store.as_ref(), "replicationcontrollers", "rc1")
        .await
        .unwrap();
    assert!(deleting(&marked));
    assert_eq!(finalizers_of(&marked), [FOREGROUND]);
    settle(store.as_ref()).await;
    assert!(
        read(store.as_ref(), "replicationcontrollers", "rc1")
            .await
            .is_none()
    );
    assert!(read(store.as_ref(), "pods", "a").await.is_none());
    let b = read(store.as_ref(), "pods", "b").await.unwrap();
    assert!(!deleting(&b));
    assert_eq!(owners_of(&b).len(), 1);
    assert_eq!(owners_of(&b)[0].uid, "u2");
}

#[tokio::test]
async fn orphaning_removes_the_references_then_the_owner() {
    let store = MemoryStore::new();
    put_rc(store.as_ref(), "rc", "u-rc").await;
    put_pod(store.as_ref(), "a", json!([by_rc("rc", "u-rc", true)])).await;
    delete(
        store.as_ref(),
        "replicationcontrollers",
        "rc",
        Propagation::Orphan,
    )
    .await;
    settle(store.as_ref()).await;
    assert!(
        read(store.as_ref(), "replicationcontrollers", "rc")
            .await
            .is_none()
    );
    let a = read(store.as_ref(), "pods", "a").await.unwrap();
    assert!(a["metadata"].get("ownerReferences").is_none());
    assert!(!deleting(&a));
}

#[tokio::test]
async fn a_dependency_circle_does_not_block_foreground_deletion() {
    let store = MemoryStore::new();
    let by = |name: &str| json!([owned_by("Pod", name, &format!("u-{name}"), true)]);
    put_pod(store.as_ref(), "p1", by("p3")).await;
    put_pod(store.as_ref(), "p2", by("p1")).await;
    put_pod(store.as_ref(), "p3", by("p2")).await;
    delete(store.as_ref(), "pods", "p1", Propagation::Foreground).await;
    settle(store.as_ref()).await;
    for p in ["p1", "p2", "p3"] {
        assert!(
            read(store.as_ref(), "pods", p).await.is_none(),
            "{p} remains"
        );
    }
}

#[test]
fn the_graph_asks_about_dependents_of_a_deleted_owner() {
    let mut graph = Graph::default();
    let a = pod("a", "u-a", json!([by_rc("rc", "u-rc", true)]));
    let change = |key: &str, object: Option<Value>, prev: Option<Value>| Change {
        revision: 1,
        key: key.into(),
        object,
        prev,
    };
    assert_eq!(
        graph.apply(&change(&key("pods", "a"), Some(a.clone()), None)),
        [key("pods", "a")]
    );
    // A status-only update of the dependent asks nothing.
    assert!(
        graph
            .apply(&change(&key("pods", "a"), Some(a.clone()), Some(a.clone())))
            .is_empty()
    );
    let owner = rc("rc", "u-rc");
    let todo = graph.apply(&change(
        &key("replicationcontrollers", "rc"),
        None,
        Some(owner),
    ));
    assert_eq!(todo, [key("pods", "a")]);
}
