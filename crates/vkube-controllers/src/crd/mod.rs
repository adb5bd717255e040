//! The CustomResourceDefinition controllers kube-apiserver runs itself (apiextensions-apiserver's
//! naming, establishing and finalizer controllers), here as clients of the API on the server's
//! loopback identity (`system:apiserver`, group `system:masters`), on the leader: a CRD's names
//! are accepted (or refused on a conflict in its group) and it is established; a deleted CRD's
//! objects are deleted through the API before its `customresourcecleanup.apiextensions.k8s.io`
//! finalizer is removed. Which CRDs the API serves (the registry, and waiting for it to catch up
//! with the store) stays the server's own view.

use std::sync::Arc;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use serde_json::Value;

use crate::{Context, Error, Result, runner};

mod finalizer;
mod naming;
#[cfg(test)]
mod tests;

/// The finalizer the API puts on every CRD it deletes: its objects go first.
pub(crate) const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// The `customresourcedefinition` controllers.
pub(crate) async fn run(ctx: Arc<Context>) {
    let crds: Api<CustomResourceDefinition> = Api::all(ctx.client.clone());
    let controller = Controller::new(crds.clone(), watcher::Config::default());
    let store = controller.store();
    let group = store.clone();
    // A CRD that takes or releases a name concerns its group's others (upstream's
    // requeueAllOtherGroupCRDs).
    let controller = controller.watches(crds, watcher::Config::default(), move |crd| {
        same_group(&group, &crd)
    });
    runner::drive(
        "customresourcedefinition",
        controller,
        ctx,
        move |crd, ctx| {
            let others = store.state();
            async move { reconcile(&crd, &others, &ctx).await }
        },
    )
    .await;
}

fn same_group(
    store: &Store<CustomResourceDefinition>,
    crd: &CustomResourceDefinition,
) -> Vec<ObjectRef<CustomResourceDefinition>> {
    store
        .state()
        .iter()
        .filter(|c| c.spec.group == crd.spec.group && c.metadata.name != crd.metadata.name)
        .map(|c| ObjectRef::from_obj(c.as_ref()))
        .collect()
}

fn value(crd: &CustomResourceDefinition) -> Value {
    serde_json::to_value(crd).unwrap_or_default()
}

/// `metav1.Time` as written: whole seconds.
fn now(ctx: &Context) -> String {
    let t = ctx.clock.now();
    jiff::Timestamp::from_second(t.as_second())
        .unwrap_or(t)
        .to_string()
}

/// Writes `new`'s status; `Ok(None)` when the CRD is gone or changed meanwhile (its watch
/// brings the change, and with it another look).
async fn write_status(ctx: &Context, new: Value) -> Result<Option<CustomResourceDefinition>> {
    let crd: CustomResourceDefinition =
        serde_json::from_value(new).map_err(|e| Error::Invalid(e.to_string()))?;
    let api: Api<CustomResourceDefinition> = Api::all(ctx.client.clone());
    let name = crd.metadata.name.clone().unwrap_or_default();
    match api
        .replace_status(&name, &PostParams::default(), &crd)
        .await
    {
        Ok(written) => Ok(Some(written)),
        Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409) => Ok(None),
        Err(err) => Err(err.into()),
    }
}

pub(crate) async fn reconcile(
    crd: &CustomResourceDefinition,
    all: &[Arc<CustomResourceDefinition>],
    ctx: &Context,
) -> Result<Action> {
    if crd.metadata.deletion_timestamp.is_some() {
        return finalizer::finalize(crd, ctx).await;
    }
    let current = value(crd);
    let others: Vec<Value> = all
        .iter()
        .filter(|c| c.metadata.name != crd.metadata.name)
        .map(|c| value(c))
        .collect();
    let mut new = current.clone();
    naming::accept_names(&mut new, &others, &now(ctx));
    if new != current {
        write_status(ctx, new).await?;
    }
    Ok(Action::await_change())
}
