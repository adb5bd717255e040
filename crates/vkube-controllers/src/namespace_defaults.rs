//! What every namespace holds from its creation on, each kept by its own controller as
//! upstream's:
//! - the `default` ServiceAccount (pkg/controller/serviceaccount, `serviceaccount`), made again
//!   when deleted;
//! - the `kube-root-ca.crt` ConfigMap with the cluster CA's certificate
//!   (pkg/controller/certificates/rootcacertpublisher, `root-ca-cert-publisher`), made again
//!   when deleted and put back when edited.
//!
//! Each is keyed by namespace and also woken by a change of its object, so a deletion or an
//! edit is repaired at once. A namespace that is terminating gets nothing new.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use crate::{Context, Result};

const DEFAULT_ACCOUNT: &str = "default";
const ROOT_CA: &str = "kube-root-ca.crt";
const DESCRIPTION: &str = "kubernetes.io/description";
/// Upstream's text, word for word (rootcacertpublisher's `descriptionAnnotation`).
const ROOT_CA_DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

/// The `serviceaccount` controller.
pub(crate) async fn run_service_accounts(ctx: Arc<Context>) {
    let accounts: Api<ServiceAccount> = Api::all(ctx.client.clone());
    let controller = per_namespace(&ctx).watches(
        accounts,
        watcher::Config::default().fields(&format!("metadata.name={DEFAULT_ACCOUNT}")),
        |sa: ServiceAccount| namespace_of(&sa.metadata),
    );
    crate::runner::drive("serviceaccount", controller, ctx, |ns, ctx| async move {
        ensure_default_account(&ns, &ctx).await
    })
    .await;
}

/// The `root-ca-cert-publisher` controller, publishing `ca_pem`.
pub async fn run_root_ca_publisher(ctx: Context, ca_pem: String) {
    let ctx = Arc::new(ctx);
    let maps: Api<ConfigMap> = Api::all(ctx.client.clone());
    let controller = per_namespace(&ctx).watches(
        maps,
        watcher::Config::default().fields(&format!("metadata.name={ROOT_CA}")),
        |cm: ConfigMap| namespace_of(&cm.metadata),
    );
    let ca_pem = Arc::new(ca_pem);
    crate::runner::drive("root-ca-cert-publisher", controller, ctx, move |ns, ctx| {
        let ca_pem = ca_pem.clone();
        async move { ensure_root_ca(&ns, &ctx, &ca_pem).await }
    })
    .await;
}

fn per_namespace(ctx: &Context) -> Controller<Namespace> {
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    Controller::new(namespaces, watcher::Config::default())
}

fn namespace_of(meta: &ObjectMeta) -> Option<ObjectRef<Namespace>> {
    meta.namespace.as_deref().map(ObjectRef::new)
}

/// The namespace's name, or `None` when it is going away.
fn active(ns: &Namespace) -> Option<&str> {
    let terminating = ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    ns.metadata.name.as_deref().filter(|_| !terminating)
}

/// The object `name`, read as a list by name: upstream reads through its informers (lists and
/// watches as kube-controller-manager), and these controllers' own roles may not `get`.
async fn named<K>(api: &Api<K>, name: &str) -> Result<Option<K>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let params = ListParams::default().fields(&format!("metadata.name={name}"));
    Ok(api.list(&params).await?.items.into_iter().next())
}

/// A create that lost to another writer (409) or to the namespace's deletion (403: "is being
/// terminated"; 404) is done: the next event brings the next look.
fn settled<T>(result: kube::Result<T>) -> Result<Action> {
    match result {
        Ok(_) => Ok(Action::await_change()),
        Err(kube::Error::Api(e)) if matches!(e.code, 403 | 404 | 409) => Ok(Action::await_change()),
        Err(err) => Err(err.into()),
    }
}

async fn ensure_default_account(ns: &Namespace, ctx: &Context) -> Result<Action> {
    let Some(name) = active(ns) else {
        return Ok(Action::await_change());
    };
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), name);
    if named(&api, DEFAULT_ACCOUNT).await?.is_some() {
        return Ok(Action::await_change());
    }
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(DEFAULT_ACCOUNT.into()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    settled(api.create(&PostParams::default(), &account).await)
}

async fn ensure_root_ca(ns: &Namespace, ctx: &Context, ca_pem: &str) -> Result<Action> {
    let Some(name) = active(ns) else {
        return Ok(Action::await_change());
    };
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), name);
    let data = BTreeMap::from([("ca.crt".to_string(), ca_pem.to_string())]);
    let Some(mut current) = named(&api, ROOT_CA).await? else {
        let map = ConfigMap {
            metadata: ObjectMeta {
                name: Some(ROOT_CA.into()),
                annotations: Some(BTreeMap::from([(
                    DESCRIPTION.to_string(),
                    ROOT_CA_DESCRIPTION.to_string(),
                )])),
                ..ObjectMeta::default()
            },
            data: Some(data),
            ..ConfigMap::default()
        };
        return settled(api.create(&PostParams::default(), &map).await);
    };
    // Upstream rewrites the data and the description and leaves every other field alone.
    let described = current
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DESCRIPTION))
        .is_some_and(|d| d == ROOT_CA_DESCRIPTION);
    if current.data.as_ref() == Some(&data) && current.binary_data.is_none() && described {
        return Ok(Action::await_change());
    }
    current.data = Some(data);
    current.binary_data = None;
    current
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(DESCRIPTION.into(), ROOT_CA_DESCRIPTION.into());
    settled(api.replace(ROOT_CA, &PostParams::default(), &current).await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeApi;
    use serde_json::json;

    const NAMESPACES: &str = "/api/v1/namespaces";

    fn namespace(fake: &FakeApi, name: &str, terminating: bool) -> Namespace {
        let mut ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        if terminating {
            ns["status"] = json!({"phase": "Terminating"});
        }
        serde_json::from_value(fake.put(NAMESPACES, ns)).unwrap()
    }

    #[tokio::test]
    async fn every_active_namespace_gets_its_default_account_again_after_a_deletion() {
        let fake = FakeApi::default();
        let ctx = Context::new(fake.client());
        let team = namespace(&fake, "team", false);
        let gone = namespace(&fake, "gone", true);
        ensure_default_account(&team, &ctx).await.unwrap();
        ensure_default_account(&gone, &ctx).await.unwrap();
        let accounts = "/api/v1/namespaces/team/serviceaccounts";
        assert!(fake.get(accounts, "default").is_some());
        assert!(
            fake.list("/api/v1/namespaces/gone/serviceaccounts")
                .is_empty()
        );
        // Present: nothing written. Deleted: made again.
        let before = fake.writes().len();
        ensure_default_account(&team, &ctx).await.unwrap();
        assert_eq!(fake.writes().len(), before);
        let api: Api<ServiceAccount> = Api::namespaced(fake.client(), "team");
        api.delete("default", &Default::default()).await.unwrap();
        assert!(fake.get(accounts, "default").is_none());
        ensure_default_account(&team, &ctx).await.unwrap();
        assert!(fake.get(accounts, "default").is_some());
    }

    #[tokio::test]
    async fn the_root_ca_is_published_and_put_back_when_edited() {
        let fake = FakeApi::default();
        let ctx = Context::new(fake.client());
        let team = namespace(&fake, "team", false);
        let maps = "/api/v1/namespaces/team/configmaps";
        ensure_root_ca(&team, &ctx, "PEM-1").await.unwrap();
        let map = fake.get(maps, ROOT_CA).unwrap();
        assert_eq!(map["data"], json!({"ca.crt": "PEM-1"}));
        assert_eq!(
            map["metadata"]["annotations"][DESCRIPTION],
            ROOT_CA_DESCRIPTION
        );
        // Unchanged: no write.
        let before = fake.writes().len();
        ensure_root_ca(&team, &ctx, "PEM-1").await.unwrap();
        assert_eq!(fake.writes().len(), before);
        // Edited by a tenant (data and a label): the data is put back, the label kept.
        fake.edit(maps, ROOT_CA, |m| {
            m["data"]["ca.crt"] = json!("forged");
            m["metadata"]["labels"] = json!({"mine": "yes"});
        });
        ensure_root_ca(&team, &ctx, "PEM-1").await.unwrap();
        let map = fake.get(maps, ROOT_CA).unwrap();
        assert_eq!(map["data"], json!({"ca.crt": "PEM-1"}));
        assert_eq!(map["metadata"]["labels"], json!({"mine": "yes"}));
        // A new CA bundle is published.
        ensure_root_ca(&team, &ctx, "PEM-2").await.unwrap();
        assert_eq!(fake.get(maps, ROOT_CA).unwrap()["data"]["ca.crt"], "PEM-2");
    }
}
