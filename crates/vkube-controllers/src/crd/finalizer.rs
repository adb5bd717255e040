//! Upstream's CRDFinalizer: a deleted CRD is marked `Terminating`, its objects are deleted
//! through the API (a `deletecollection` per namespace that holds some), and once none is left
//! the `customresourcecleanup.apiextensions.k8s.io` finalizer is removed, so the API deletes
//! the CRD. Upstream polls for the objects to go (every 5 s, for a minute) inside one sync; here
//! the CRD is looked at again every 5 s instead, and the worker is free meanwhile.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::ApiResource;
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use super::naming::{condition, set_condition};
use super::{CLEANUP_FINALIZER, now, value, write_status};
use crate::{Context, Error, Result};

/// How often a terminating CRD's objects are counted again while some remain.
const POLL: Duration = Duration::from_secs(5);

/// The CRD's resource in a served version (the storage version when it is served), by its
/// accepted names.
fn resource(crd: &Value) -> Option<(ApiResource, bool)> {
    let spec = &crd["spec"];
    let group = spec["group"].as_str()?;
    let names = match &crd["status"]["acceptedNames"] {
        n if n["plural"].as_str().is_some_and(|p| !p.is_empty()) => n,
        _ => &spec["names"],
    };
    let versions = spec["versions"].as_array()?;
    let version = versions
        .iter()
        .find(|v| v["served"] == true && v["storage"] == true)
        .or_else(|| versions.iter().find(|v| v["served"] == true))?["name"]
        .as_str()?;
    let api = ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: format!("{group}/{version}"),
        kind: names["kind"].as_str()?.into(),
        plural: names["plural"].as_str()?.into(),
    };
    Some((api, spec["scope"] != "Cluster"))
}

fn terminating(status: &mut Value, value: bool, reason: &str, message: &str, now: &str) {
    set_condition(status, "Terminating", value, reason, message, now);
}

/// `Ok(None)`: every object is gone; `Ok(Some(n))`: `n` remain (being finalized).
async fn delete_instances(
    ctx: &Context,
    api: &ApiResource,
    namespaced: bool,
) -> Result<Option<usize>, (String, kube::Error)> {
    let all: Api<DynamicObject> = Api::all_with(ctx.client.clone(), api);
    let listed = all
        .list(&ListParams::default())
        .await
        .map_err(|e| (format!("could not list instances: {e}"), e))?;
    if listed.items.is_empty() {
        return Ok(None);
    }
    let namespaces: BTreeSet<Option<String>> = listed
        .items
        .iter()
        .map(|o| o.metadata.namespace.clone().filter(|_| namespaced))
        .collect();
    let mut errors = Vec::new();
    for ns in namespaces {
        let scoped: Api<DynamicObject> = match &ns {
            Some(ns) => Api::namespaced_with(ctx.client.clone(), ns, api),
            None => Api::all_with(ctx.client.clone(), api),
        };
        if let Err(err) = scoped
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await
        {
            errors.push(err);
        }
    }
    if let Some(err) = errors.pop() {
        let mut all_errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        all_errors.push(err.to_string());
        return Err((
            format!("could not issue all deletes: [{}]", all_errors.join(", ")),
            err,
        ));
    }
    let left = all.list(&ListParams::default()).await.map_err(|e| {
        (
            format!("could not confirm zero CustomResources remaining: {e}"),
            e,
        )
    })?;
    Ok((!left.items.is_empty()).then_some(left.items.len()))
}

pub(super) async fn finalize(crd: &CustomResourceDefinition, ctx: &Context) -> Result<Action> {
    let finalizers = crd.metadata.finalizers.clone().unwrap_or_default();
    if !finalizers.iter().any(|f| f == CLEANUP_FINALIZER) {
        return Ok(Action::await_change());
    }
    let now = now(ctx);
    let mut current = value(crd);
    let mut marked = current.clone();
    terminating(
        &mut marked["status"],
        true,
        "InstanceDeletionInProgress",
        "CustomResource deletion is in progress",
        &now,
    );
    if marked != current {
        let Some(written) = write_status(ctx, marked).await? else {
            return Ok(Action::await_change());
        };
        current = value(&written);
    }
    let mut done = current.clone();
    match resource(&current).filter(|_| condition(&current, "Established")) {
        Some((api, namespaced)) => match delete_instances(ctx, &api, namespaced).await {
            Ok(None) => terminating(
                &mut done["status"],
                false,
                "InstanceDeletionCompleted",
                "removed all instances",
                &now,
            ),
            Ok(Some(left)) => {
                tracing::debug!(crd = ?crd.metadata.name, left, "waiting for custom objects to be removed");
                return Ok(Action::requeue(POLL));
            }
            Err((message, err)) => {
                terminating(
                    &mut done["status"],
                    true,
                    "InstanceDeletionFailed",
                    &message,
                    &now,
                );
                if let Err(write) = write_status(ctx, done).await {
                    tracing::info!(%write, "could not record the failed deletion");
                }
                return Err(err.into());
            }
        },
        None => terminating(
            &mut done["status"],
            false,
            "NeverEstablished",
            "resource was never established",
            &now,
        ),
    }
    let written = if done != current {
        match write_status(ctx, done).await? {
            Some(w) => w,
            None => return Ok(Action::await_change()),
        }
    } else {
        crd.clone()
    };
    // Upstream removes the finalizer in the same status write; vkube's status subresource
    // keeps metadata as it is, so the finalizer goes by a patch of the CRD itself.
    let kept: Vec<&String> = finalizers
        .iter()
        .filter(|f| *f != CLEANUP_FINALIZER)
        .collect();
    let patch = json!({"metadata": {
        "finalizers": if kept.is_empty() { Value::Null } else { json!(kept) },
        "resourceVersion": written.metadata.resource_version,
    }});
    let api: Api<CustomResourceDefinition> = Api::all(ctx.client.clone());
    let name = crd.metadata.name.clone().unwrap_or_default();
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        Ok(_) => Ok(Action::await_change()),
        Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409) => Ok(Action::await_change()),
        Err(err) => Err(Error::Api(err)),
    }
}
