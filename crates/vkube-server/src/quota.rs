//! ResourceQuota enforcement, as kube-apiserver's quota admission and kube-controller-manager's
//! resourcequota controller do it (the arithmetic is `vkube_api::quota`).
//!
//! Admission ([`admit`]) reads the namespace's quotas from the store, refuses a write that would
//! exceed one (403, upstream's wording), and otherwise charges it by a compare-and-swap of each
//! quota's `status.used` before the object is stored, so two replicas cannot both admit the last
//! unit. The leader's controller ([`start`]) keeps every quota's `status.hard` equal to
//! `spec.hard` and recomputes `status.used` from the namespace's objects, read at one revision,
//! whenever an object of a namespace with quotas changes (and every [`RESYNC`]): that releases
//! what deleted or finished objects held, and corrects a charge whose write then failed. Like
//! upstream's controller it ignores the status-only quota writes admission makes, so it does not
//! undo a charge whose object is about to be stored.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::AbortHandle;
use vkube_api::quota::{self, Evaluator};
use vkube_api::{Resource, Status, registry};
use vkube_store::{KeyValue, ListOptions, Revision, Store, StoreError};

use crate::hub::Change;
use crate::rest::{Ctx, encode, store_status};
use crate::router::Api;

/// How often every quota is recomputed even when nothing seems to have changed.
const RESYNC: Duration = Duration::from_secs(30);
/// Compare-and-swap attempts before a write gives up (upstream retries three times).
const ATTEMPTS: usize = 5;

fn quotas_resource() -> &'static Resource {
    registry::find("", "v1", "resourcequotas").expect("resourcequotas are built in")
}

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// The stored quotas of a namespace (and the revision they were read at).
async fn quotas(
    store: &dyn Store,
    namespace: &str,
) -> Result<(Vec<(KeyValue, Value)>, Revision), StoreError> {
    let page = store
        .list(
            &quotas_resource().key(namespace, ""),
            ListOptions::default(),
        )
        .await?;
    let items = page
        .items
        .into_iter()
        .filter_map(|kv| {
            let q = serde_json::from_slice(&kv.value).ok()?;
            Some((kv, q))
        })
        .collect();
    Ok((items, page.revision))
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
        let (mut listed, _) = quotas(store, namespace).await.map_err(store_status)?;
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

/// The namespaced resource a quota evaluator measures, in any served version.
fn measured(ev: &Evaluator) -> Option<&'static Resource> {
    let (group, plural) = ev.resource();
    registry::all()
        .into_iter()
        .find(|r| r.namespaced && r.group == group && r.plural == plural)
}

/// Recomputes the status of every quota of a namespace from its objects, all read at the
/// revision the quotas were read at, and writes the ones that changed.
async fn sync_namespace(store: &dyn Store, namespace: &str) -> Result<(), StoreError> {
    for _ in 0..ATTEMPTS {
        let (listed, revision) = quotas(store, namespace).await?;
        if listed.is_empty() {
            return Ok(());
        }
        let mut needed: Vec<Evaluator> = listed
            .iter()
            .flat_map(|(_, q)| quota::evaluators(q))
            .collect();
        needed.sort();
        needed.dedup();
        let mut objects = BTreeMap::new();
        for ev in needed {
            let Some(resource) = measured(&ev) else {
                continue;
            };
            let at = ListOptions {
                revision: Some(revision),
                ..ListOptions::default()
            };
            let page = store.list(&resource.key(namespace, ""), at).await?;
            let items: Vec<Value> = page
                .items
                .iter()
                .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
                .collect();
            objects.insert(ev, items);
        }
        let mut raced = false;
        for (kv, mut q) in listed {
            let status = quota::status(&q, &objects, now());
            if q["status"] == status {
                continue;
            }
            q["status"] = status;
            match store
                .update(&kv.key, encode(&q), kv.mod_revision, None)
                .await
            {
                Ok(_) | Err(StoreError::NotFound { .. }) => {}
                Err(StoreError::Conflict { .. }) => raced = true,
                Err(err) => return Err(err),
            }
        }
        if !raced {
            return Ok(());
        }
    }
    Ok(())
}

/// Whether a quota write asks the controller for a recomputation: a new quota, a changed spec,
/// or a status that does not reflect the spec (hard differs, or a used entry is missing).
/// Admission's charges change only `status.used`, and are left alone.
fn quota_needs_sync(change: &Change) -> bool {
    let Some(q) = &change.object else {
        return false;
    };
    let Some(prev) = &change.prev else {
        return true;
    };
    let hard = quota::parse_list(&q["spec"]["hard"]);
    let used = quota::parse_list(&q["status"]["used"]);
    prev["spec"] != q["spec"]
        || quota::parse_list(&q["status"]["hard"]) != hard
        || hard.keys().any(|k| !used.contains_key(k))
}

/// The namespaces that hold quotas, each with its quota names.
type Holders = BTreeMap<String, BTreeSet<String>>;

async fn holders(store: &dyn Store) -> Result<Holders, StoreError> {
    let prefix = quotas_resource().key("", "");
    let page = store.list(&prefix, ListOptions::default()).await?;
    let mut out = Holders::new();
    for kv in page.items {
        if let Some((ns, name)) = kv.key[prefix.len()..].split_once('/') {
            out.entry(ns.into()).or_default().insert(name.into());
        }
    }
    Ok(out)
}

/// Which namespace (if any) a change asks to recompute, keeping `holders` current.
fn affected(change: &Change, holders: &mut Holders) -> Option<String> {
    let prefix = quotas_resource().key("", "");
    if let Some(rest) = change.key.strip_prefix(&prefix) {
        let (ns, name) = rest.split_once('/')?;
        if change.object.is_some() {
            holders.entry(ns.into()).or_default().insert(name.into());
        } else if let Some(names) = holders.get_mut(ns) {
            names.remove(name);
            if names.is_empty() {
                holders.remove(ns);
            }
        }
        return quota_needs_sync(change).then(|| ns.to_string());
    }
    if change.key.starts_with("/registry/events/") {
        return None;
    }
    // A create was charged by admission before it was stored: recounting now could miss a
    // create that is charged but not stored yet and undo its charge, letting one more through
    // (upstream's replenishment likewise reacts to deletes and updates, not to creates).
    change.prev.as_ref()?;
    let obj = change.object.as_ref().or(change.prev.as_ref())?;
    let ns = obj["metadata"]["namespace"].as_str()?;
    holders.contains_key(ns).then(|| ns.to_string())
}

/// The leader's resourcequota controller: every quota at start and each [`RESYNC`], and a
/// namespace's quotas promptly after a change in it.
pub fn start(api: Arc<Api>) -> AbortHandle {
    let task = tokio::spawn(async move {
        loop {
            // Subscribe first, then scan: nothing falls between the two.
            let Ok((_, mut changes)) = api.hub.subscribe(api.hub.last()) else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let mut holding = match holders(api.store.as_ref()).await {
                Ok(h) => h,
                Err(err) => {
                    tracing::warn!(%err, "resourcequota controller: listing quotas failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let mut pending: BTreeSet<String> = holding.keys().cloned().collect();
            let mut resync = tokio::time::Instant::now() + RESYNC;
            'watching: loop {
                let mut retry = BTreeSet::new();
                for ns in std::mem::take(&mut pending) {
                    if let Err(err) = sync_namespace(api.store.as_ref(), &ns).await {
                        tracing::warn!(%err, namespace = %ns, "resourcequota controller");
                        retry.insert(ns);
                    }
                }
                let wake = if retry.is_empty() {
                    resync
                } else {
                    tokio::time::Instant::now() + Duration::from_secs(1)
                };
                pending = retry;
                tokio::select! {
                    _ = tokio::time::sleep_until(wake) => {
                        if tokio::time::Instant::now() >= resync {
                            pending.extend(holding.keys().cloned());
                            resync = tokio::time::Instant::now() + RESYNC;
                        }
                    }
                    change = changes.recv() => {
                        let mut next = change;
                        // Take what else arrived meanwhile, so a burst costs one pass.
                        loop {
                            match next {
                                Ok(c) => pending.extend(affected(&c, &mut holding)),
                                Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => break 'watching,
                            }
                            next = match changes.try_recv() {
                                Ok(c) => Ok(c),
                                Err(tokio::sync::broadcast::error::TryRecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
                                Err(_) => break,
                            };
                        }
                    }
                }
            }
        }
    });
    task.abort_handle()
}
