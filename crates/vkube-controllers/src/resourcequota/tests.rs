use serde_json::json;

use super::*;
use crate::clock::FakeClock;
use crate::testing::FakeApi;

const QUOTAS: &str = "/api/v1/namespaces/ns/resourcequotas";
const PODS: &str = "/api/v1/namespaces/ns/pods";
const MAPS: &str = "/api/v1/namespaces/ns/configmaps";

fn pod(name: &str, cpu: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "ns"},
           "spec": {"containers": [{"name": "c", "image": "i",
                    "resources": {"requests": {"cpu": cpu, "memory": "1Gi"}}}]}})
}

fn quota(hard: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q", "namespace": "ns"},
           "spec": {"hard": hard}})
}

async fn setup() -> (FakeApi, Context, Resources) {
    let fake = FakeApi::default();
    crate::resources::tests::serve_discovery(&fake);
    let mut ctx = Context::new(fake.client());
    ctx.clock = Arc::new(FakeClock::new("2026-01-01T00:00:00Z".parse().unwrap()));
    let mut resources = Resources::default();
    resources.refresh(&ctx.client).await.unwrap();
    (fake, ctx, resources)
}

#[tokio::test]
async fn status_mirrors_the_spec_and_counts_the_namespace_through_the_status_subresource() {
    let (fake, ctx, resources) = setup().await;
    fake.put(
        QUOTAS,
        quota(json!({"pods": "3", "requests.cpu": "2", "configmaps": "5", "count/widgets.example.com": "1"})),
    );
    fake.put(PODS, pod("a", "500m"));
    fake.put(PODS, pod("b", "250m"));
    fake.put(MAPS, json!({"metadata": {"name": "m"}}));
    // Another namespace's objects are not counted.
    fake.put("/api/v1/namespaces/other/pods", pod("x", "1"));
    sync_namespace(&ctx, &resources, "ns").await.unwrap();
    let q = fake.get(QUOTAS, "q").unwrap();
    assert_eq!(q["status"]["hard"], q["spec"]["hard"]);
    assert_eq!(
        q["status"]["used"],
        json!({"pods": "2", "requests.cpu": "750m", "configmaps": "1", "count/widgets.example.com": "0"})
    );
    assert_eq!(
        fake.writes().last().unwrap(),
        "PUT /api/v1/namespaces/ns/resourcequotas/q/status"
    );
    // Nothing changed: nothing written.
    let before = fake.writes().len();
    sync_namespace(&ctx, &resources, "ns").await.unwrap();
    assert_eq!(fake.writes().len(), before);
    // A pod that finished costs nothing any more.
    fake.edit(PODS, "a", |p| p["status"]["phase"] = json!("Succeeded"));
    sync_namespace(&ctx, &resources, "ns").await.unwrap();
    let used = &fake.get(QUOTAS, "q").unwrap()["status"]["used"];
    assert_eq!(
        (used["pods"].as_str(), used["requests.cpu"].as_str()),
        (Some("1"), Some("250m"))
    );
}

#[tokio::test]
async fn a_refused_status_write_is_an_error_to_retry() {
    let (fake, ctx, resources) = setup().await;
    fake.put(QUOTAS, quota(json!({"pods": "1"})));
    fake.refuse("PUT", QUOTAS, 500, "InternalError", "etcd is down");
    assert!(sync_namespace(&ctx, &resources, "ns").await.is_err());
}

fn typed<K: serde::de::DeserializeOwned>(v: Value) -> K {
    serde_json::from_value(v).unwrap()
}

#[test]
fn only_spec_changes_and_missing_usage_ask_for_a_recount() {
    let mut state = State::default();
    let mut q = quota(json!({"pods": "1"}));
    let apply = |s: &mut State, q: &Value| s.on_quota(watcher::Event::Apply(typed(q.clone())));
    assert_eq!(apply(&mut state, &q).as_deref(), Some("ns"), "a new quota");
    q["status"] = json!({"hard": {"pods": "1"}, "used": {"pods": "0"}});
    assert_eq!(apply(&mut state, &q), None, "the controller's own write");
    // Admission's charge changes only status.used: not undone.
    q["status"]["used"]["pods"] = json!("1");
    assert_eq!(apply(&mut state, &q), None);
    q["spec"]["hard"]["pods"] = json!("2");
    assert_eq!(apply(&mut state, &q).as_deref(), Some("ns"), "a new limit");
    assert_eq!(
        state.measured(),
        BTreeSet::from([("".to_string(), "pods".to_string())])
    );
    state.on_quota(watcher::Event::Delete(typed(q)));
    assert!(state.quotas.is_empty());
}

#[test]
fn deletes_and_released_usage_replenish_but_creates_do_not() {
    let mut state = State::default();
    let now = to_time(jiff::Timestamp::UNIX_EPOCH);
    state.on_quota(watcher::Event::Apply(typed(quota(json!({"pods": "1"})))));
    let pods = ("".to_string(), "pods".to_string());
    let mut on = |e: watcher::Event<DynamicObject>| state.on_object(pods.clone(), e, now);
    let a = pod("a", "1");
    assert_eq!(
        on(watcher::Event::InitApply(typed(a.clone()))),
        None,
        "listed"
    );
    assert_eq!(
        on(watcher::Event::Apply(typed(pod("b", "1")))),
        None,
        "created"
    );
    let mut labelled = a.clone();
    labelled["metadata"]["labels"] = json!({"x": "y"});
    assert_eq!(
        on(watcher::Event::Apply(typed(labelled))),
        None,
        "costs the same"
    );
    let mut done = a.clone();
    done["status"]["phase"] = json!("Failed");
    assert_eq!(
        on(watcher::Event::Apply(typed(done))).as_deref(),
        Some("ns")
    );
    assert_eq!(on(watcher::Event::Delete(typed(a))).as_deref(), Some("ns"));
    // A namespace without quotas has nothing to replenish.
    let mut elsewhere = pod("c", "1");
    elsewhere["metadata"]["namespace"] = json!("other");
    assert_eq!(on(watcher::Event::Delete(typed(elsewhere))), None);
}
