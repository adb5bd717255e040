//! What the collector does with one item, through the API (upstream's `attemptToDeleteItem`,
//! `processDeletingDependentsItem`, `attemptToOrphanWorker` and their helpers in
//! garbagecollector.go and operations.go). The graph says what to look at; every decision is
//! made on live reads (the item, and each owner by a GET with its uid compared), and every
//! write is conditional (uid and resourceVersion), so a stale graph only costs a retry.

use std::sync::Mutex;

use kube::api::{
    Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy,
};
use serde_json::{Value, json};

use super::graph::{FOREGROUND, Graph, Node, ORPHAN, Owner, Work, has_finalizer, owners_of};
use crate::resources::{Resources, Served};
use crate::{Context, Error, Result};

/// How an owner of a kind discovery does not list fails (upstream's RESTMapping error).
pub(super) const UNMAPPED: &str = "unable to get REST mapping for";

/// Attempts of a write that lost a race (client-go's `retry.DefaultBackoff` makes 5).
const ATTEMPTS: usize = 5;

fn api(ctx: &Context, served: &Served, namespace: Option<&str>) -> Api<DynamicObject> {
    match namespace.filter(|_| served.namespaced) {
        Some(ns) => Api::namespaced_with(ctx.client.clone(), ns, &served.api),
        None => Api::all_with(ctx.client.clone(), &served.api),
    }
}

fn is(err: &kube::Error, code: u16) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == code)
}

fn uid_of(obj: &DynamicObject) -> &str {
    obj.metadata.uid.as_deref().unwrap_or_default()
}

/// Reads the object `name` if it is still `uid`.
async fn get_live(
    api: &Api<DynamicObject>,
    name: &str,
    uid: &str,
) -> Result<Option<DynamicObject>> {
    Ok(api.get_opt(name).await?.filter(|o| uid_of(o) == uid))
}

/// One look at `work`; returns what else is worth a look.
pub(crate) async fn attempt(
    ctx: &Context,
    graph: &Mutex<Graph>,
    resources: &Resources,
    work: &Work,
) -> Result<Vec<Work>> {
    match work {
        Work::Delete(uid) => attempt_to_delete(ctx, graph, resources, uid).await,
        Work::Orphan(uid) => attempt_to_orphan(ctx, graph, uid).await,
    }
}

fn node(graph: &Mutex<Graph>, uid: &str) -> Option<Node> {
    graph.lock().expect("graph lock").get(uid).cloned()
}

/// The item is not there (or is another object by now): the graph forgets it (upstream's
/// virtual delete event), and its dependents and waiting owners get a look.
fn gone(graph: &Mutex<Graph>, uid: &str) -> Vec<Work> {
    graph.lock().expect("graph lock").remove(uid)
}

/// How an item's owners stand (upstream's `classifyReferences`).
#[derive(Default)]
struct Classified {
    solid: Vec<Owner>,
    dangling: Vec<Owner>,
    /// Owners being deleted in the foreground, which wait for this item.
    waiting: Vec<Owner>,
}

async fn attempt_to_delete(
    ctx: &Context,
    graph: &Mutex<Graph>,
    resources: &Resources,
    uid: &str,
) -> Result<Vec<Work>> {
    let Some(item) = node(graph, uid) else {
        return Ok(Vec::new());
    };
    // Being deleted is a one-way trip: its dependents are looked at when it is gone.
    if item.deleting && !item.deleting_dependents {
        return Ok(Vec::new());
    }
    // Every owner seen by the graph and none waiting: nothing to collect (upstream only
    // queues items whose owners are missing from its graph or being deleted).
    if !item.deleting_dependents && graph.lock().expect("graph lock").owners_all_present(&item) {
        return Ok(Vec::new());
    }
    let api = api(ctx, &item.resource, item.namespace.as_deref());
    let Some(latest) = get_live(&api, &item.name, uid).await? else {
        return Ok(gone(graph, uid));
    };
    if item.deleting_dependents {
        return deleting_dependents(graph, &api, &item, uid).await;
    }
    let owners = owners_of(&latest.metadata);
    if owners.is_empty() {
        return Ok(Vec::new());
    }
    let Some(refs) = classify(ctx, resources, &item, &owners).await? else {
        return Ok(Vec::new());
    };
    let rv = latest.metadata.resource_version.clone().unwrap_or_default();
    if !refs.solid.is_empty() {
        if refs.dangling.is_empty() && refs.waiting.is_empty() {
            return Ok(Vec::new());
        }
        // A valid owner keeps it: only the references to gone or waiting owners go (the
        // waiting ones would otherwise wait for it forever).
        let drop: Vec<&str> = refs
            .dangling
            .iter()
            .chain(&refs.waiting)
            .map(|o| o.uid.as_str())
            .collect();
        remove_references(&api, &item.name, uid, &drop).await?;
        return Ok(Vec::new());
    }
    let dependents = graph.lock().expect("graph lock").dependents_of(uid);
    if !refs.waiting.is_empty() && !dependents.is_empty() {
        // An owner waits for it and it has dependents of its own: deleted in the foreground.
        // A dependent that already deletes its dependents may be a circle back to this item,
        // which is broken by no longer blocking the owners.
        let mut latest = latest;
        if dependents.iter().any(|(_, d)| d.deleting_dependents) {
            unblock_owners(&api, &latest).await?;
            // Deleted as it is now, not as it was before the patch.
            let Some(now) = get_live(&api, &item.name, uid).await? else {
                return Ok(gone(graph, uid));
            };
            latest = now;
        }
        let owners = owners_of(&latest.metadata);
        delete(&api, &latest, &owners, PropagationPolicy::Foreground).await?;
        return Ok(Vec::new());
    }
    // No owner left: collected, honouring a policy its finalizers already chose.
    let policy = if has_finalizer(&latest.metadata, ORPHAN) {
        PropagationPolicy::Orphan
    } else if has_finalizer(&latest.metadata, FOREGROUND) {
        PropagationPolicy::Foreground
    } else {
        PropagationPolicy::Background
    };
    tracing::debug!(item = %item.name, %uid, %rv, ?policy, "garbage collector: deleting");
    delete(&api, &latest, &owners, policy).await?;
    Ok(Vec::new())
}

/// `None`: the item cannot be collected at all (a cluster-scoped object naming a namespaced
/// owner, which upstream reports and does not retry).
async fn classify(
    ctx: &Context,
    resources: &Resources,
    item: &Node,
    owners: &[Owner],
) -> Result<Option<Classified>> {
    let mut refs = Classified::default();
    for o in owners {
        let Some(served) = resources.by_kind(&o.api_version, &o.kind) else {
            return Err(Error::Invalid(format!(
                "{UNMAPPED} {}/{}.",
                o.kind, o.api_version
            )));
        };
        if served.namespaced && item.namespace.is_none() {
            tracing::warn!(item = %item.name, owner = %o.name, kind = %o.kind,
                "garbage collector: a cluster-scoped object refers to a namespaced owner, which cannot exist");
            return Ok(None);
        }
        let owner = get_live(
            &api(ctx, &served, item.namespace.as_deref()),
            &o.name,
            &o.uid,
        )
        .await?;
        match owner {
            None => refs.dangling.push(o.clone()),
            Some(owner)
                if owner.metadata.deletion_timestamp.is_some()
                    && has_finalizer(&owner.metadata, FOREGROUND) =>
            {
                refs.waiting.push(o.clone())
            }
            Some(_) => refs.solid.push(o.clone()),
        }
    }
    Ok(Some(refs))
}

/// An owner deleting its dependents (upstream's `processDeletingDependentsItem`): its
/// finalizer goes once no dependent blocks it; until then the blocking ones get a look.
async fn deleting_dependents(
    graph: &Mutex<Graph>,
    api: &Api<DynamicObject>,
    item: &Node,
    uid: &str,
) -> Result<Vec<Work>> {
    let blocking = graph.lock().expect("graph lock").blocking_dependents(uid);
    if blocking.is_empty() {
        remove_finalizer(api, &item.name, uid, FOREGROUND).await?;
        return Ok(Vec::new());
    }
    Ok(blocking
        .into_iter()
        .filter(|(_, d)| !d.deleting_dependents)
        .map(|(d, _)| Work::Delete(d))
        .collect())
}

/// An owner deleted with the `orphan` finalizer: its dependents' references to it go, then the
/// finalizer.
async fn attempt_to_orphan(ctx: &Context, graph: &Mutex<Graph>, uid: &str) -> Result<Vec<Work>> {
    let Some(owner) = node(graph, uid) else {
        return Ok(Vec::new());
    };
    let dependents = graph.lock().expect("graph lock").dependents_of(uid);
    for (dep_uid, dep) in dependents {
        let dep_api = api(ctx, &dep.resource, dep.namespace.as_deref());
        remove_references(&dep_api, &dep.name, &dep_uid, &[uid]).await?;
    }
    let owner_api = api(ctx, &owner.resource, owner.namespace.as_deref());
    remove_finalizer(&owner_api, &owner.name, uid, ORPHAN).await?;
    Ok(Vec::new())
}

/// A JSON merge patch of `metadata` guarded by the object's uid and resourceVersion; `Ok(false)`
/// when that resourceVersion is stale.
async fn patch_metadata(
    api: &Api<DynamicObject>,
    obj: &DynamicObject,
    mut meta: Value,
) -> Result<bool> {
    meta["uid"] = json!(uid_of(obj));
    meta["resourceVersion"] = json!(obj.metadata.resource_version);
    let name = obj.metadata.name.clone().unwrap_or_default();
    match api
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": meta})),
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(err) if is(&err, 404) => Ok(true),
        Err(err) if is(&err, 409) => Ok(false),
        Err(err) => Err(err.into()),
    }
}

/// Reads `name` (if still `uid`) and writes `change`'s metadata patch of it, again after a
/// conflict; `change` returns `None` when there is nothing to write.
async fn edit(
    api: &Api<DynamicObject>,
    name: &str,
    uid: &str,
    change: impl Fn(&DynamicObject) -> Option<Value>,
) -> Result<()> {
    for _ in 0..ATTEMPTS {
        let Some(obj) = get_live(api, name, uid).await? else {
            return Ok(());
        };
        let Some(meta) = change(&obj) else {
            return Ok(());
        };
        if patch_metadata(api, &obj, meta).await? {
            return Ok(());
        }
    }
    Err(Error::Invalid(format!(
        "updateMaxRetries({ATTEMPTS}) has reached. The garbage collector will retry later for {name}"
    )))
}

fn references(obj: &DynamicObject) -> Vec<Value> {
    obj.metadata
        .owner_references
        .iter()
        .flatten()
        .filter_map(|r| serde_json::to_value(r).ok())
        .collect()
}

/// Removes the item's references to the owners `drop` (upstream's
/// `deleteOwnerRefJSONMergePatch`).
async fn remove_references(
    api: &Api<DynamicObject>,
    name: &str,
    uid: &str,
    drop: &[&str],
) -> Result<()> {
    edit(api, name, uid, |obj| {
        let refs = references(obj);
        let kept: Vec<Value> = refs
            .iter()
            .filter(|r| !drop.contains(&r["uid"].as_str().unwrap_or_default()))
            .cloned()
            .collect();
        if kept.len() == refs.len() {
            return None;
        }
        Some(json!({"ownerReferences": if kept.is_empty() { Value::Null } else { json!(kept) }}))
    })
    .await
}

/// Sets `blockOwnerDeletion: false` on every reference that blocks (upstream's
/// `unblockOwnerReferencesJSONMergePatch`).
async fn unblock_owners(api: &Api<DynamicObject>, obj: &DynamicObject) -> Result<()> {
    let name = obj.metadata.name.clone().unwrap_or_default();
    edit(api, &name, uid_of(obj), |obj| {
        let mut refs = references(obj);
        let mut changed = false;
        for r in &mut refs {
            if r["blockOwnerDeletion"] == true {
                r["blockOwnerDeletion"] = json!(false);
                changed = true;
            }
        }
        changed.then(|| json!({"ownerReferences": refs}))
    })
    .await
}

/// Removes one finalizer (upstream's `removeFinalizer`); the API deletes an object marked
/// deleted whose last finalizer this was.
async fn remove_finalizer(
    api: &Api<DynamicObject>,
    name: &str,
    uid: &str,
    finalizer: &str,
) -> Result<()> {
    edit(api, name, uid, |obj| {
        if !has_finalizer(&obj.metadata, finalizer) {
            return None;
        }
        let kept: Vec<&String> = obj
            .metadata
            .finalizers
            .iter()
            .flatten()
            .filter(|f| *f != finalizer)
            .collect();
        Some(json!({"finalizers": if kept.is_empty() { Value::Null } else { json!(kept) }}))
    })
    .await
}

/// Deletes the item as it was read (upstream's `deleteObject`): preconditioned on its uid and
/// resourceVersion; when that version is stale but the owners it was judged on are unchanged,
/// again on its uid alone.
pub(super) async fn delete(
    api: &Api<DynamicObject>,
    latest: &DynamicObject,
    owners: &[Owner],
    policy: PropagationPolicy,
) -> Result<()> {
    let name = latest.metadata.name.clone().unwrap_or_default();
    let uid = uid_of(latest).to_string();
    let params = |rv: Option<String>| DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.clone()),
            resource_version: rv,
        }),
        propagation_policy: Some(policy.clone()),
        ..DeleteParams::default()
    };
    let first = api
        .delete(&name, &params(latest.metadata.resource_version.clone()))
        .await;
    match first {
        Ok(_) => return Ok(()),
        Err(err) if is(&err, 404) => return Ok(()),
        Err(err) if is(&err, 409) => {}
        Err(err) => return Err(err.into()),
    }
    let Some(live) = get_live(api, &name, &uid).await? else {
        return Ok(());
    };
    if owners_of(&live.metadata) != owners {
        return Err(Error::Invalid(format!(
            "the owner references of {name} changed; the garbage collector looks again"
        )));
    }
    match api.delete(&name, &params(None)).await {
        Ok(_) => Ok(()),
        Err(err) if is(&err, 404) => Ok(()),
        Err(err) => Err(err.into()),
    }
}
