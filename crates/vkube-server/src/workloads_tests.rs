use super::*;
use vkube_store::MemoryStore;

async fn setup() -> Arc<MemoryStore> {
    let store = MemoryStore::new();
    let ns_key = registry::find("", "v1", "namespaces")
        .unwrap()
        .key("", "ns");
    let ns = json!({"metadata": {"name": "ns"}, "status": {"phase": "Active"}});
    store.create(&ns_key, encode(&ns), None).await.unwrap();
    store
}

fn template(labels: Value, image: &str) -> Value {
    json!({"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": image}]}})
}

async fn put(store: &dyn Store, r: &Resource, obj: Value) -> String {
    let created = create(store, r, "ns", obj).await.unwrap().unwrap();
    r.key("ns", meta_str(&created, "name"))
}

/// Syncs every controller a few times (each pass sees the previous one's writes).
async fn settle(store: &dyn Store) {
    for _ in 0..4 {
        for key in all_keys(store).await.unwrap() {
            sync(store, &key).await.unwrap();
        }
    }
}

async fn items(store: &dyn Store, r: &Resource) -> Vec<Value> {
    list(store, r, "ns")
        .await
        .unwrap()
        .into_iter()
        .map(|(_, v)| v)
        .collect()
}

async fn get(store: &dyn Store, key: &str) -> Value {
    decode(&store.get(key, None).await.unwrap().unwrap()).unwrap()
}

async fn edit(store: &dyn Store, key: &str, f: impl FnOnce(&mut Value)) {
    let kv = store.get(key, None).await.unwrap().unwrap();
    let mut obj = decode(&kv).unwrap();
    f(&mut obj);
    store
        .update(key, encode(&obj), kv.mod_revision, None)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_replication_controller_keeps_its_replicas() {
    let store = setup().await;
    let s = store.as_ref();
    let rc = json!({"metadata": {"name": "web"}, "spec": {"replicas": 3, "selector": {"app": "web"},
                    "template": template(json!({"app": "web"}), "nginx")}});
    let key = put(s, rcs(), rc).await;
    settle(s).await;
    let listed = items(s, pods()).await;
    assert_eq!(listed.len(), 3);
    for p in &listed {
        assert!(meta_str(p, "name").starts_with("web-") && meta_str(p, "name").len() == 9);
        assert_eq!(p["metadata"]["labels"]["app"], "web");
        let c = controller_of(p).unwrap();
        assert_eq!(
            (c["kind"].as_str(), c["blockOwnerDeletion"].as_bool()),
            (Some("ReplicationController"), Some(true))
        );
    }
    let status = &get(s, &key).await["status"];
    assert_eq!(
        (
            status["replicas"].as_i64(),
            status["fullyLabeledReplicas"].as_i64()
        ),
        (Some(3), Some(3))
    );
    assert_eq!(status["readyReplicas"], 0);

    // Scale down; an orphan that matches is adopted, a pod that stops matching is released.
    edit(s, &key, |rc| rc["spec"]["replicas"] = json!(2)).await;
    settle(s).await;
    assert_eq!(items(s, pods()).await.len(), 2);
    let orphan = json!({"metadata": {"name": "stray", "labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}});
    put(s, pods(), orphan).await;
    let all = items(s, pods()).await;
    let first = all
        .iter()
        .map(|p| meta_str(p, "name"))
        .find(|n| n.starts_with("web-"));
    let first = first.unwrap().to_string();
    edit(s, &pods().key("ns", &first), |p| {
        p["metadata"]["labels"]["app"] = json!("other")
    })
    .await;
    settle(s).await;
    let listed = items(s, pods()).await;
    let released = listed
        .iter()
        .find(|p| meta_str(p, "name") == first)
        .unwrap();
    assert!(controller_of(released).is_none());
    let owned: Vec<&Value> = listed
        .iter()
        .filter(|p| controller_of(p).is_some())
        .collect();
    assert_eq!(owned.len(), 2);
    assert!(owned.iter().any(|p| meta_str(p, "name") == "stray"));
}

#[tokio::test]
async fn a_controller_being_deleted_creates_nothing() {
    let store = setup().await;
    let s = store.as_ref();
    let rs = json!({"metadata": {"name": "rs", "finalizers": ["x"]}, "spec": {"replicas": 2,
                    "selector": {"matchLabels": {"app": "rs"}}, "template": template(json!({"app": "rs"}), "nginx")}});
    let key = put(s, replicasets(), rs).await;
    edit(s, &key, |rs| {
        rs["metadata"]["deletionTimestamp"] = json!(object::now())
    })
    .await;
    settle(s).await;
    assert!(items(s, pods()).await.is_empty());
}

#[tokio::test]
async fn a_deployment_keeps_one_replicaset_per_template() {
    let store = setup().await;
    let s = store.as_ref();
    let d = json!({"metadata": {"name": "app"}, "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "a"}},
                   "template": template(json!({"app": "a"}), "nginx:1")}});
    let key = put(s, deployments(), d).await;
    settle(s).await;
    let sets = items(s, replicasets()).await;
    assert_eq!(sets.len(), 1);
    let rs = &sets[0];
    let hash = rs["metadata"]["labels"][HASH_LABEL]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(meta_str(rs, "name"), format!("app-{hash}"));
    assert_eq!(
        rs["spec"]["selector"]["matchLabels"][HASH_LABEL],
        hash.as_str()
    );
    assert_eq!(
        rs["spec"]["template"]["metadata"]["labels"][HASH_LABEL],
        hash.as_str()
    );
    assert_eq!(rs["spec"]["replicas"], 2);
    assert_eq!(items(s, pods()).await.len(), 2);
    let status = &get(s, &key).await["status"];
    assert_eq!(
        (
            status["replicas"].as_i64(),
            status["updatedReplicas"].as_i64()
        ),
        (Some(2), Some(2))
    );
    assert_eq!(status["observedGeneration"], 1);

    // A new template: a new ReplicaSet gets the replicas, the old one none.
    edit(s, &key, |d| {
        d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
        d["metadata"]["generation"] = json!(2);
    })
    .await;
    settle(s).await;
    let sets = items(s, replicasets()).await;
    assert_eq!(sets.len(), 2);
    let old = sets
        .iter()
        .find(|r| meta_str(r, "name") == meta_str(rs, "name"))
        .unwrap();
    let new = sets
        .iter()
        .find(|r| meta_str(r, "name") != meta_str(rs, "name"))
        .unwrap();
    assert_eq!(
        (
            old["spec"]["replicas"].as_i64(),
            new["spec"]["replicas"].as_i64()
        ),
        (Some(0), Some(2))
    );
    assert_eq!(new["metadata"]["annotations"][REVISION], "2");
    let listed = items(s, pods()).await;
    assert_eq!(listed.len(), 2);
    assert!(
        listed
            .iter()
            .all(|p| p["spec"]["containers"][0]["image"] == "nginx:2")
    );
    assert_eq!(get(s, &key).await["metadata"]["annotations"][REVISION], "2");
}

#[test]
fn template_hashes_are_stable_and_safe() {
    let t = template(json!({"app": "a"}), "nginx");
    assert_eq!(template_hash(&t, None), template_hash(&t.clone(), None));
    assert_ne!(template_hash(&t, None), template_hash(&t, Some(1)));
    assert!(
        template_hash(&t, None)
            .bytes()
            .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b))
    );
}
