//! ResourceQuota admission, as kube-apiserver's (the arithmetic is `vkube_api::quota`).
//!
//! Admission ([`admit`]) reads the namespace's quotas from the store, refuses a write that would
//! exceed one (403, upstream's wording), and otherwise charges it by a compare-and-swap of each
//! quota's `status.used` before the object is stored, so two replicas cannot both admit the last
//! unit. What deleted or finished objects held is released by kube-controller-manager's
//! resourcequota controller (vkube-controllers), a client of the API, which ignores these
//! status-only charges so that it does not undo one whose object is about to be stored.

use std::collections::BTreeSet;

use serde_json::Value;
use vkube_api::quota::{self, Evaluator};
use vkube_api::{Resource, Status, registry};
use vkube_store::{KeyValue, ListOptions, Revision, StoreError};

use crate::rest::{Ctx, encode, store_status};

/// Compare-and-swap attempts before a write gives up (upstream retries three times).
const ATTEMPTS: usize = 5;

fn quotas_resource() -> &'static Resource {
    registry::find("", "v1", "resourcequotas").expect("resourcequotas are built in")
}

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// The stored quotas of a namespace (and the revision they were read at): from the watch cache
/// once it has caught up with the store's current revision (cache/), else from the store.
async fn quotas(
    hub: &crate::hub::Hub,
    namespace: &str,
) -> Result<(Vec<(KeyValue, Value)>, Revision), StoreError> {
    let prefix = quotas_resource().key(namespace, "");
    let (listed, revision) = match crate::cache::list(hub, &prefix).await {
        Some((entries, at)) => (entries.iter().map(|e| e.kv.clone()).collect(), at),
        None => {
            let page = hub.store().list(&prefix, ListOptions::default()).await?;
            (page.items, page.revision)
        }
    };
    let items = listed
        .into_iter()
        .filter_map(|kv| {
            let q = serde_json::from_slice(&kv.value).ok()?;
            Some((kv, q))
        })
        .collect();
    Ok((items, revision))
}

/// Quota admission for a create (`old` is `None`) or update of `obj` in the request's
/// namespace: refuses it when it would exceed a quota, else charges the quotas it counts
/// against (not for dry runs). Subresources and cluster-scoped objects are not measured.
pub(crate) async fn admit(ctx: &Ctx<'_>, obj: &Value, old: Option<&Value>) -> Result<(), Status> {
    let (r, namespace) = (ctx.resource, &ctx.info.namespace);
    if !r.namespaced || namespace.is_empty() || !ctx.info.subresource.is_empty() {
        return Ok(());
    }
    let Some(ev) = Evaluator::for_resource(r.group, r.plural) else {
        return Ok(());
    };
    if !ev.handles(obj, old) {
        return Ok(());
    }
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let store = ctx.api.store.as_ref();
    // After a lost race, only the quotas whose charge failed are looked at again.
    let mut only: Option<BTreeSet<String>> = None;
    let mut lost = String::new();
    for _ in 0..ATTEMPTS {
        let (mut listed, _) = quotas(&ctx.api.hub, namespace)
            .await
            .map_err(store_status)?;
        if let Some(only) = &only {
            listed.retain(|(_, q)| only.contains(q["metadata"]["name"].as_str().unwrap_or("")));
        }
        if listed.is_empty() {
            return Ok(());
        }
        let values: Vec<Value> = listed.iter().map(|(_, q)| q.clone()).collect();
        let charges = quota::check(&ev, &values, obj, old, now())
            .map_err(|why| Status::forbidden(r.plural, r.group, name, &why))?;
        if ctx.dry_run() {
            return Ok(());
        }
        let mut failed = BTreeSet::new();
        for (i, used) in charges {
            let (kv, mut q) = listed[i].clone();
            q["status"]["used"] = quota::to_json(&used);
            match store
                .update(&kv.key, encode(&q), kv.mod_revision, None)
                .await
            {
                Ok(_) | Err(StoreError::NotFound { .. }) => {}
                Err(StoreError::Conflict { .. }) => {
                    lost = q["metadata"]["name"].as_str().unwrap_or_default().into();
                    failed.insert(lost.clone());
                }
                Err(err) => return Err(store_status(err)),
            }
        }
        if failed.is_empty() {
            return Ok(());
        }
        only = Some(failed);
    }
    Err(Status::conflict(
        "resourcequotas",
        "",
        &lost,
        Status::MODIFIED,
    ))
}
