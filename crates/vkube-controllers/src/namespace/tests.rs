use std::sync::Arc;

use serde_json::{Value, json};

use super::*;
use crate::clock::FakeClock;
use crate::testing::FakeApi;

const NAMESPACES: &str = "/api/v1/namespaces";
const DELETED_AT: &str = "2026-01-01T00:00:00Z";

fn resource(name: &str, kind: &str, verbs: &[&str]) -> Value {
    json!({"resource": name, "responseKind": {"group": "", "version": "", "kind": kind},
           "scope": "Namespaced", "verbs": verbs})
}

/// An API serving pods, configmaps, services (no `deletecollection`, as upstream's) and
/// example.com widgets, with namespace `doomed` deleted at [`DELETED_AT`].
fn setup(finalizers: &[&str]) -> (FakeApi, Context, Arc<FakeClock>) {
    let fake = FakeApi::default();
    let all = ["create", "get", "list", "delete", "deletecollection"];
    fake.serve(
        "/api",
        json!({"kind": "APIGroupDiscoveryList", "items": [{"metadata": {"name": ""}, "versions": [
            {"version": "v1", "freshness": "Current", "resources": [
                resource("pods", "Pod", &all),
                resource("configmaps", "ConfigMap", &all),
                resource("services", "Service", &["create", "get", "list", "delete"]),
                {"resource": "namespaces", "responseKind": {"kind": "Namespace"}, "scope": "Cluster", "verbs": all},
            ]}]}]}),
    );
    fake.serve(
        "/apis",
        json!({"kind": "APIGroupDiscoveryList", "items": [{"metadata": {"name": "example.com"}, "versions": [
            {"version": "v1", "freshness": "Current", "resources": [resource("widgets", "Widget", &all)]}]}]}),
    );
    for (name, deleted) in [("doomed", true), ("kept", false)] {
        let mut ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name},
                            "spec": {"finalizers": finalizers}, "status": {"phase": "Active"}});
        if deleted {
            ns["metadata"]["deletionTimestamp"] = json!(DELETED_AT);
        }
        fake.put(NAMESPACES, ns);
    }
    let clock = Arc::new(FakeClock::new(DELETED_AT.parse().unwrap()));
    let mut ctx = Context::new(fake.client());
    ctx.clock = clock.clone();
    (fake, ctx, clock)
}

fn put(fake: &FakeApi, ns: &str, path: &str, kind: &str, name: &str, extra: Value) {
    let mut obj = json!({"kind": kind, "metadata": {"name": name}});
    if let (Some(obj), Some(extra)) = (obj.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            if k == "metadata" {
                for (mk, mv) in v.as_object().unwrap() {
                    obj["metadata"][mk] = mv.clone();
                }
            } else {
                obj.insert(k.clone(), v.clone());
            }
        }
    }
    fake.put(&path.replace("NS", ns), obj);
}

const PODS: &str = "/api/v1/namespaces/NS/pods";
const MAPS: &str = "/api/v1/namespaces/NS/configmaps";
const SERVICES: &str = "/api/v1/namespaces/NS/services";
const WIDGETS: &str = "/apis/example.com/v1/namespaces/NS/widgets";

fn namespace(fake: &FakeApi, name: &str) -> Value {
    fake.get(NAMESPACES, name).expect("the namespace")
}

/// `type → (status, reason, message)`.
fn condition(ns: &Value, kind: &str) -> (String, String, String) {
    let c = ns["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .unwrap_or_else(|| panic!("no {kind} in {ns}"));
    let s = |f: &str| c[f].as_str().unwrap_or_default().to_string();
    (s("status"), s("reason"), s("message"))
}

#[tokio::test]
async fn a_deleted_namespace_is_emptied_marked_and_finalized() {
    let (fake, ctx, _) = setup(&["kubernetes", "example.com/hold"]);
    for ns in ["doomed", "kept"] {
        put(&fake, ns, PODS, "Pod", "web", json!({}));
        put(&fake, ns, MAPS, "ConfigMap", "settings", json!({}));
        put(&fake, ns, SERVICES, "Service", "web", json!({}));
        put(&fake, ns, WIDGETS, "Widget", "w", json!({}));
    }
    let seeded = fake.writes().len();
    assert_eq!(delete("doomed", &ctx).await.unwrap(), Outcome::Done);
    for path in [PODS, MAPS, SERVICES, WIDGETS] {
        assert!(
            fake.list(&path.replace("NS", "doomed")).is_empty(),
            "{path}"
        );
        assert_eq!(fake.list(&path.replace("NS", "kept")).len(), 1, "{path}");
    }
    let writes = fake.writes().split_off(seeded);
    for write in [
        "PUT /api/v1/namespaces/doomed/status",
        "DELETE /api/v1/namespaces/doomed/configmaps",
        "DELETE /apis/example.com/v1/namespaces/doomed/widgets",
        // No deletecollection on services: one delete per object.
        "DELETE /api/v1/namespaces/doomed/services/web",
        "PUT /api/v1/namespaces/doomed/finalize",
    ] {
        assert!(writes.iter().any(|w| w == write), "{write} in {writes:?}");
    }
    assert!(!writes.iter().any(|w| w.contains("/kept")), "{writes:?}");
    let ns = namespace(&fake, "doomed");
    assert_eq!(ns["status"]["phase"], "Terminating");
    // Only ours goes; another owner's spec finalizer stays.
    assert_eq!(ns["spec"]["finalizers"], json!(["example.com/hold"]));
    for (kind, reason, message) in [
        (
            "NamespaceDeletionDiscoveryFailure",
            "ResourcesDiscovered",
            "All resources successfully discovered",
        ),
        (
            "NamespaceDeletionGroupVersionParsingFailure",
            "ParsedGroupVersions",
            "All legacy kube types successfully parsed",
        ),
        (
            "NamespaceDeletionContentFailure",
            "ContentDeleted",
            "All content successfully deleted, may be waiting on finalization",
        ),
        (
            "NamespaceContentRemaining",
            "ContentRemoved",
            "All content successfully removed",
        ),
        (
            "NamespaceFinalizersRemaining",
            "ContentHasNoFinalizers",
            "All content-preserving finalizers finished",
        ),
    ] {
        assert_eq!(
            condition(&ns, kind),
            ("False".into(), reason.into(), message.into())
        );
    }
    // A namespace that is not being deleted is not touched; one that is gone is done.
    let before = fake.writes().len();
    let kept: Namespace = serde_json::from_value(namespace(&fake, "kept")).unwrap();
    let backoff = Backoff::default();
    let action = reconcile(&kept, &ctx, &backoff).await.unwrap();
    assert_eq!(action, Action::await_change());
    assert_eq!(delete("never-was", &ctx).await.unwrap(), Outcome::Done);
    assert_eq!(fake.writes().len(), before);
}

#[tokio::test]
async fn content_with_finalizers_holds_the_namespace_and_its_conditions_say_so() {
    let (fake, ctx, _) = setup(&["kubernetes"]);
    fake.hold_finalizers();
    let held = json!({"metadata": {"finalizers": ["example.com/x"]}});
    put(&fake, "doomed", MAPS, "ConfigMap", "held", held.clone());
    put(&fake, "doomed", WIDGETS, "Widget", "w1", held.clone());
    put(
        &fake,
        "doomed",
        WIDGETS,
        "Widget",
        "w2",
        json!({"metadata": {"finalizers": ["example.com/x", "example.com/y"]}}),
    );
    put(&fake, "doomed", MAPS, "ConfigMap", "free", json!({}));
    let ns: Namespace = serde_json::from_value(namespace(&fake, "doomed")).unwrap();
    let backoff = Backoff::default();
    // Upstream's 15 s finalizer estimate: looked at again in 15/2 + 1 s.
    let action = reconcile(&ns, &ctx, &backoff).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(8)));
    let maps = MAPS.replace("NS", "doomed");
    assert!(fake.get(&maps, "free").is_none());
    assert!(fake.get(&maps, "held").unwrap()["metadata"]["deletionTimestamp"].is_string());
    let ns = namespace(&fake, "doomed");
    assert_eq!(
        condition(&ns, "NamespaceContentRemaining"),
        (
            "True".into(),
            "SomeResourcesRemain".into(),
            "Some resources are remaining: configmaps. has 1 resource instances, widgets.example.com has 2 resource instances".into()
        )
    );
    assert_eq!(
        condition(&ns, "NamespaceFinalizersRemaining"),
        (
            "True".into(),
            "SomeFinalizersRemain".into(),
            "Some content in the namespace has finalizers remaining: example.com/x in 3 resource instances, example.com/y in 1 resource instances".into()
        )
    );
    assert_eq!(condition(&ns, "NamespaceDeletionContentFailure").0, "False");
    assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
    assert!(!fake.writes().iter().any(|w| w.ends_with("/finalize")));

    // Their owners finish: the namespace is finalized and the conditions turn False.
    let gone = |fake: &FakeApi, path: &str, name: &str| {
        fake.edit(path, name, |o| o["metadata"]["finalizers"] = json!([]));
    };
    gone(&fake, &maps, "held");
    let widgets = WIDGETS.replace("NS", "doomed");
    gone(&fake, &widgets, "w1");
    gone(&fake, &widgets, "w2");
    assert_eq!(delete("doomed", &ctx).await.unwrap(), Outcome::Done);
    let ns = namespace(&fake, "doomed");
    assert_eq!(ns["spec"]["finalizers"], json!([]));
    assert_eq!(condition(&ns, "NamespaceContentRemaining").0, "False");
    assert_eq!(condition(&ns, "NamespaceFinalizersRemaining").0, "False");
}

#[tokio::test]
async fn running_pods_give_their_grace_period_until_it_has_passed() {
    let (fake, ctx, clock) = setup(&["kubernetes"]);
    fake.hold_finalizers();
    let pod = json!({"metadata": {"finalizers": ["example.com/x"]},
                     "spec": {"terminationGracePeriodSeconds": 30}, "status": {"phase": "Running"}});
    put(&fake, "doomed", PODS, "Pod", "slow", pod);
    // Finished pods do not count.
    let done =
        json!({"spec": {"terminationGracePeriodSeconds": 600}, "status": {"phase": "Succeeded"}});
    put(&fake, "doomed", PODS, "Pod", "done", done);
    assert_eq!(
        delete("doomed", &ctx).await.unwrap(),
        Outcome::Remaining(30)
    );
    clock.advance(Duration::from_secs(31));
    assert_eq!(
        delete("doomed", &ctx).await.unwrap(),
        Outcome::Remaining(15)
    );
}

#[tokio::test]
async fn failures_show_as_conditions_and_keep_the_finalizer() {
    let (fake, ctx, _) = setup(&["kubernetes"]);
    put(&fake, "doomed", MAPS, "ConfigMap", "settings", json!({}));
    fake.refuse(
        "DELETE",
        "/api/v1/namespaces/doomed/configmaps",
        403,
        "Forbidden",
        "configmaps is forbidden: refused by a policy",
    );
    // A group whose discovery is stale: what it serves is not known.
    fake.serve(
        "/apis",
        json!({"kind": "APIGroupDiscoveryList", "items": [{"metadata": {"name": "metrics.example"}, "versions": [
            {"version": "v1beta1", "freshness": "Stale", "resources": []}]}]}),
    );
    let Err(Failed(why)) = delete("doomed", &ctx).await else {
        panic!("a failure");
    };
    assert!(why.contains("configmaps is forbidden"), "{why}");
    let ns = namespace(&fake, "doomed");
    assert_eq!(
        condition(&ns, "NamespaceDeletionDiscoveryFailure"),
        (
            "True".into(),
            "DiscoveryFailed".into(),
            "Discovery failed for some groups, 1 failing: unable to retrieve the complete list of server APIs: metrics.example/v1beta1: stale GroupVersion discovery: metrics.example/v1beta1".into()
        )
    );
    assert_eq!(
        condition(&ns, "NamespaceDeletionContentFailure"),
        (
            "True".into(),
            "ContentDeletionFailed".into(),
            "Failed to delete all resource types, 1 remaining: configmaps is forbidden: refused by a policy".into()
        )
    );
    assert_eq!(
        condition(&ns, "NamespaceContentRemaining").2,
        "All content successfully removed"
    );
    assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
    // Retried with backoff, not at the finalizer estimate.
    let obj: Namespace = serde_json::from_value(ns).unwrap();
    let backoff = Backoff::default();
    let action = reconcile(&obj, &ctx, &backoff).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_millis(5)));
}
