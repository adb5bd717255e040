use serde_json::{Value, json};

use super::*;
use crate::clock::FakeClock;
use crate::testing::FakeApi;

const CRDS: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
const NAME: &str = "widgets.example.com";

fn setup() -> (FakeApi, Context) {
    let fake = FakeApi::default();
    fake.hold_finalizers();
    let mut ctx = Context::new(fake.client());
    ctx.clock = Arc::new(FakeClock::new("2026-01-01T00:00:00Z".parse().unwrap()));
    (fake, ctx)
}

fn crd() -> Value {
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": NAME},
           "spec": {"group": "example.com", "scope": "Namespaced",
                    "names": {"plural": "widgets", "kind": "Widget"},
                    "versions": [{"name": "v1", "served": true, "storage": true}]}})
}

fn stored(fake: &FakeApi) -> CustomResourceDefinition {
    serde_json::from_value(fake.get(CRDS, NAME).expect("the CRD")).unwrap()
}

async fn look(fake: &FakeApi, ctx: &Context) -> Action {
    reconcile(&stored(fake), &[], ctx).await.unwrap()
}

/// `type → (status, reason)`.
fn condition_of(fake: &FakeApi, kind: &str) -> (String, String) {
    let crd = fake.get(CRDS, NAME).unwrap();
    let c = crd["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind).cloned())
        .unwrap_or_default();
    (
        c["status"].as_str().unwrap_or_default().into(),
        c["reason"].as_str().unwrap_or_default().into(),
    )
}

#[tokio::test]
async fn a_new_crd_is_named_and_established_through_its_status() {
    let (fake, ctx) = setup();
    fake.put(CRDS, crd());
    look(&fake, &ctx).await;
    assert_eq!(
        fake.writes().last().unwrap(),
        &format!("PUT {CRDS}/{NAME}/status")
    );
    assert_eq!(
        condition_of(&fake, "NamesAccepted"),
        ("True".into(), "NoConflicts".into())
    );
    assert_eq!(
        condition_of(&fake, "Established"),
        ("True".into(), "InitialNamesAccepted".into())
    );
    let before = fake.writes().len();
    look(&fake, &ctx).await;
    assert_eq!(fake.writes().len(), before, "nothing more to write");
}

#[tokio::test]
async fn a_deleted_crd_loses_its_objects_then_its_finalizer() {
    let (fake, ctx) = setup();
    fake.put(CRDS, crd());
    look(&fake, &ctx).await;
    for (ns, name, finalizers) in [
        ("a", "w1", json!([])),
        ("b", "w2", json!(["example.com/hold"])),
    ] {
        fake.put(
            &format!("/apis/example.com/v1/namespaces/{ns}/widgets"),
            json!({"metadata": {"name": name, "finalizers": finalizers}}),
        );
    }
    fake.edit(CRDS, NAME, |c| {
        c["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        c["metadata"]["finalizers"] = json!([CLEANUP_FINALIZER]);
    });
    // One object waits for its own finalizer: the CRD waits too.
    assert_eq!(
        look(&fake, &ctx).await,
        Action::requeue(std::time::Duration::from_secs(5))
    );
    assert_eq!(
        condition_of(&fake, "Terminating"),
        ("True".into(), "InstanceDeletionInProgress".into())
    );
    let writes = fake.writes();
    for ns in ["a", "b"] {
        let collection = format!("DELETE /apis/example.com/v1/namespaces/{ns}/widgets");
        assert!(writes.contains(&collection), "{writes:?}");
    }
    assert!(
        fake.get("/apis/example.com/v1/namespaces/a/widgets", "w1")
            .is_none()
    );
    assert!(fake.get(CRDS, NAME).is_some());
    // Its finalizer done, the object goes, and then the CRD.
    let w2 = "/apis/example.com/v1/namespaces/b/widgets";
    fake.edit(w2, "w2", |w| w["metadata"]["finalizers"] = json!([]));
    look(&fake, &ctx).await;
    let crd_left = fake.get(CRDS, NAME);
    assert!(crd_left.is_none(), "{crd_left:?}");
    assert_eq!(
        fake.writes().last().unwrap(),
        &format!("PATCH {CRDS}/{NAME}")
    );
}

#[tokio::test]
async fn a_crd_never_established_is_released_at_once() {
    let (fake, ctx) = setup();
    let mut c = crd();
    c["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    c["metadata"]["finalizers"] = json!([CLEANUP_FINALIZER, "example.com/other"]);
    fake.put(CRDS, c);
    look(&fake, &ctx).await;
    assert_eq!(
        condition_of(&fake, "Terminating"),
        ("False".into(), "NeverEstablished".into())
    );
    let left = fake.get(CRDS, NAME).unwrap();
    assert_eq!(left["metadata"]["finalizers"], json!(["example.com/other"]));
}
