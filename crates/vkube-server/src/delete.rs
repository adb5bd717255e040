//! DELETE and deletecollection with kube-apiserver's semantics: preconditions (uid,
//! resourceVersion), dry runs, the admission of a DELETE (its object is the old object), the
//! finalizers that hold an object (a CRD's cleanup, the garbage collector's orphan and
//! foreground, a Namespace's lifecycle), and the deletion itself as a compare-and-swap.

use std::collections::HashMap;

use bytes::Bytes;
use http::Response;
use serde_json::{Value, json};
use vkube_api::Status;
use vkube_api::object::{self, set_resource_version};
use vkube_store::StoreError;

use crate::response::{self, Body};
use crate::rest::{Ctx, is_crd, is_namespace, name_of, parse_body, store_status};
use crate::webhooks::Operation;

/// DeleteOptions, from the body or the query.
pub(crate) struct DeleteOptions {
    uid: Option<String>,
    resource_version: Option<String>,
    dry_run: bool,
    /// propagationPolicy / orphanDependents (gc.rs).
    gc: crate::gc::Policy,
}

pub(crate) fn delete_options(
    body: &Bytes,
    q: &HashMap<String, String>,
) -> Result<DeleteOptions, Status> {
    let opts: Value = if body.is_empty() {
        json!({})
    } else {
        parse_body(body)?
    };
    // The body's dryRun is checked as the query's: only `All`.
    for value in opts["dryRun"].as_array().into_iter().flatten() {
        crate::body::check_dry_run("delete", Some(value.as_str().unwrap_or_default()))?;
    }
    let dry_run = q.get("dryRun").is_some_and(|v| v == "All")
        || opts["dryRun"]
            .as_array()
            .is_some_and(|d| d.iter().any(|v| v == "All"));
    Ok(DeleteOptions {
        uid: opts["preconditions"]["uid"].as_str().map(str::to_string),
        resource_version: opts["preconditions"]["resourceVersion"]
            .as_str()
            .map(str::to_string),
        dry_run,
        gc: crate::gc::Policy::parse(&opts, q)?,
    })
}

/// Deletes one object: marks it when finalizers (or the namespace lifecycle) must run first.
pub(crate) async fn delete_one(
    ctx: &Ctx<'_>,
    name: &str,
    opts: &DeleteOptions,
) -> Result<Value, Status> {
    let key = ctx.key(name);
    loop {
        let (cur, mut obj) = ctx.current(name).await?;
        let precondition = |what: &str, want: &str, have: &str| {
            Status::conflict(
                ctx.resource.plural,
                ctx.resource.group,
                name,
                &format!(
                    "Precondition failed: {what} in precondition: {want}, {what} in object meta: {have}"
                ),
            )
        };
        if let Some(uid) = &opts.uid {
            let have = obj["metadata"]["uid"].as_str().unwrap_or_default();
            if uid != have {
                return Err(precondition("UID", uid, have));
            }
        }
        if let Some(rv) = &opts.resource_version {
            if *rv != cur.mod_revision.to_string() {
                return Err(precondition(
                    "ResourceVersion",
                    rv,
                    &cur.mod_revision.to_string(),
                ));
            }
        }
        // Admission webhooks (webhooks/): a DELETE's object is the old object.
        let admission = crate::webhooks::Admission::new(ctx, Operation::Delete, opts.dry_run);
        admission.mutate(None, Some(&obj)).await?;
        admission.validate(None, Some(&obj)).await?;
        let is_namespace = is_namespace(ctx.resource);
        if is_crd(ctx.resource) && !obj["metadata"]["deletionTimestamp"].is_string() {
            // A CRD's objects are deleted before it (upstream's cleanup finalizer).
            let finalizers = &mut obj["metadata"]["finalizers"];
            match finalizers.as_array_mut() {
                Some(f) if f.iter().any(|f| f == crate::crds::CLEANUP_FINALIZER) => {}
                Some(f) => f.push(json!(crate::crds::CLEANUP_FINALIZER)),
                None => *finalizers = json!([crate::crds::CLEANUP_FINALIZER]),
            }
        }
        // Garbage collection: the orphan/foreground finalizers the options ask for (gc.rs).
        let gc_finalizers = crate::gc::deletion_finalizers(&obj, &opts.gc);
        if let Some(f) = &gc_finalizers {
            obj["metadata"]["finalizers"] = json!(f);
        }
        let already = obj["metadata"]["deletionTimestamp"].is_string();
        let has_finalizers = obj["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        // A namespace's first delete only marks it; a later one deletes it once no spec
        // finalizer is left (upstream's namespace REST `Delete`).
        let namespace_held = is_namespace
            && (!already
                || obj["spec"]["finalizers"]
                    .as_array()
                    .is_some_and(|f| !f.is_empty()));
        if namespace_held || has_finalizers {
            if (already && gc_finalizers.is_none()) || opts.dry_run {
                return Ok(obj);
            }
            if !already {
                obj["metadata"]["deletionTimestamp"] = json!(object::now());
            }
            obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            if is_namespace {
                obj["status"]["phase"] = json!("Terminating");
            }
            match ctx
                .api
                .store
                .update(&key, ctx.store_bytes(&obj).await?, cur.mod_revision, None)
                .await
            {
                Ok(kv) => {
                    set_resource_version(&mut obj, kv.mod_revision);
                    return Ok(obj);
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(err) => return Err(store_status(err)),
            }
        }
        if opts.dry_run {
            return Ok(obj);
        }
        match ctx.api.store.delete(&key, Some(cur.mod_revision)).await {
            Ok(_) => return Ok(obj),
            Err(StoreError::Conflict { .. }) => continue,
            Err(StoreError::NotFound { .. }) => return Err(ctx.not_found(name)),
            Err(err) => return Err(store_status(err)),
        }
    }
}

pub(crate) async fn delete(ctx: &Ctx<'_>, body: &Bytes) -> Result<Response<Body>, Status> {
    let opts = delete_options(body, ctx.q)?;
    let obj = delete_one(ctx, &ctx.info.name, &opts).await?;
    let mut resp = response::json(200, &obj);
    ctx.add_warnings(&mut resp);
    Ok(resp)
}

pub(crate) async fn delete_collection(
    ctx: &Ctx<'_>,
    body: &Bytes,
) -> Result<Response<Body>, Status> {
    let opts = delete_options(body, ctx.q)?;
    let page = crate::list::select(ctx).await?;
    let (items, revision) = (page.items, page.revision);
    let mut deleted = Vec::new();
    for obj in items {
        match delete_one(ctx, &name_of(&obj), &opts).await {
            Ok(obj) => deleted.push(obj),
            Err(s) if s.code == 404 => {}
            Err(s) => return Err(s),
        }
    }
    Ok(response::json(
        200,
        &json!({"kind": format!("{}List", ctx.resource.kind), "apiVersion": ctx.resource.api_version(),
                "metadata": {"resourceVersion": revision.to_string()}, "items": deleted}),
    ))
}
