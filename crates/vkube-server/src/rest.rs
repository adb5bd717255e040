//! The REST verbs on stored objects: get, list, create, update, patch, delete and
//! deletecollection (watch is in `watch_stream`), with kube-apiserver's semantics for
//! resourceVersion, preconditions, finalizers, namespaces and dry runs.

use std::collections::HashMap;

use bytes::Bytes;
use http::Response;
use serde_json::{Value, json};
use vkube_api::object::{self, set_resource_version};
use vkube_api::registry::custom;
use vkube_api::{Resource, Status, registry, schema, table};
use vkube_store::{KeyValue, StoreError};

pub(crate) use crate::body::{parse_body, parse_object};
pub(crate) use crate::delete::{delete_one, delete_options};
use crate::request::RequestInfo;
use crate::response::{self, Body};
use crate::router::Api;
use crate::webhooks::Operation;

type Query = HashMap<String, String>;

/// A store failure as the API reports it.
pub fn store_status(err: StoreError) -> Status {
    match err {
        StoreError::Compacted {
            requested,
            compact_revision,
        } => Status::expired(format!(
            "too old resource version: {requested} ({compact_revision})"
        )),
        // Upstream's 504, not a server error: the client named a revision from the future.
        StoreError::FutureRevision { requested, current } => {
            Status::too_large_resource_version(requested as u64, current as u64)
        }
        other => Status::internal(other),
    }
}

pub fn decode(kv: &KeyValue) -> Result<Value, Status> {
    let mut obj: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| Status::internal(format!("decoding {}: {e}", kv.key)))?;
    set_resource_version(&mut obj, kv.mod_revision);
    Ok(obj)
}

/// The bytes stored for an object: everything but its resourceVersion, which is the revision.
pub fn encode(obj: &Value) -> Vec<u8> {
    let mut obj = obj.clone();
    if let Some(meta) = obj["metadata"].as_object_mut() {
        meta.remove("resourceVersion");
    }
    serde_json::to_vec(&obj).unwrap_or_default()
}

pub(crate) fn name_of(obj: &Value) -> String {
    obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

pub(crate) struct Ctx<'a> {
    pub(crate) api: &'a Api,
    /// Who is asking (after impersonation).
    pub(crate) user: &'a vkube_auth::UserInfo,
    pub(crate) info: &'a RequestInfo,
    pub(crate) resource: &'static Resource,
    pub(crate) q: &'a Query,
    pub(crate) accept: &'a str,
    /// `Warning` headers for the response.
    warnings: std::sync::Mutex<Vec<String>>,
    /// Audit annotations admission adds (admission policies), for the audit event.
    audit_annotations: std::sync::Mutex<Vec<(String, String)>>,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(
        api: &'a Api,
        user: &'a vkube_auth::UserInfo,
        info: &'a RequestInfo,
        resource: &'static Resource,
        q: &'a Query,
        accept: &'a str,
    ) -> Ctx<'a> {
        Ctx {
            api,
            user,
            info,
            resource,
            q,
            accept,
            warnings: Default::default(),
            audit_annotations: Default::default(),
        }
    }

    /// The same request, addressing another resource (the pods a `bindings` request names).
    pub(crate) fn with_resource(&self, resource: &'static Resource) -> Ctx<'a> {
        Ctx::new(
            self.api,
            self.user,
            self.info,
            resource,
            self.q,
            self.accept,
        )
    }

    /// Records an audit annotation (the first value of a key stays, as upstream's
    /// `AddAnnotation`).
    pub(crate) fn audit_annotate(&self, key: String, value: String) {
        let mut all = self
            .audit_annotations
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !all.iter().any(|(k, _)| *k == key) {
            all.push((key, value));
        }
    }

    /// Adds a `Warning` header to the response (admission webhooks' warnings).
    pub(crate) fn warn(&self, text: String) {
        self.warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(text);
    }

    pub(crate) fn key(&self, name: &str) -> String {
        self.resource.key(&self.info.namespace, name)
    }

    pub(crate) fn not_found(&self, name: &str) -> Status {
        Status::not_found(self.resource.plural, self.resource.group, name)
    }

    /// An object read from the store, in the version the request addresses.
    pub(crate) fn load(&self, kv: &KeyValue) -> Result<Value, Status> {
        vkube_api::custom_objects::served(self.resource, decode(kv)?)
    }

    /// An object read from the store, in the version the request addresses; through its CRD's
    /// conversion webhook when it has one (conversion/).
    pub(crate) async fn read(&self, kv: &KeyValue) -> Result<Value, Status> {
        if !crate::conversion::by_webhook(self.resource) {
            return self.load(kv);
        }
        let store = self.api.store.as_ref();
        let objs =
            crate::conversion::served(store, self.resource, vec![decode(kv)?], false).await?;
        Ok(objs.into_iter().next().unwrap_or_default())
    }

    /// What a write answers: upstream decodes what it stored, so an object whose CRD has a
    /// conversion webhook comes back through it from the storage version.
    pub(crate) async fn written(&self, mut obj: Value, kv: &KeyValue) -> Result<Value, Status> {
        if crate::conversion::by_webhook(self.resource) && !kv.value.is_empty() {
            return self.read(kv).await;
        }
        set_resource_version(&mut obj, kv.mod_revision);
        Ok(obj)
    }

    /// The stored object `name` (404 when absent): its store record, and the object in the
    /// version the request addresses. Every read-modify-write loop starts here.
    pub(crate) async fn current(&self, name: &str) -> Result<(KeyValue, Value), Status> {
        let kv = self
            .api
            .store
            .get(&self.key(name), None)
            .await
            .map_err(store_status)?
            .ok_or_else(|| self.not_found(name))?;
        let obj = self.read(&kv).await?;
        Ok((kv, obj))
    }

    /// The bytes to store for an object, in its storage version (converted by its CRD's
    /// webhook when it has one: conversion/).
    pub(crate) async fn store_bytes(&self, obj: &Value) -> Result<Vec<u8>, Status> {
        let store = self.api.store.as_ref();
        Ok(encode(
            &crate::conversion::stored(store, self.resource, obj).await?,
        ))
    }

    /// Field validation (`fieldValidation`, default Warn): unknown fields are dropped, and either
    /// refused (Strict) or reported in `Warning` headers (Warn).
    fn validate_fields(&self, obj: &mut Value, body: Option<&[u8]>) -> Result<(), Status> {
        let r = self.resource;
        let problems = match custom::definition(r) {
            Some(d) => schema::Problems {
                unknown: vkube_api::custom_objects::prune(&d, obj),
                wrong_types: Vec::new(),
            },
            None => schema::check(r.group, r.version, r.kind, obj).unwrap_or_default(),
        };
        let cannot = |why: String| {
            Status::bad_request(format!(
                "{kind} in version \"{version}\" cannot be handled as a {kind}: {why}",
                kind = r.kind,
                version = r.version,
            ))
        };
        // Upstream's decoder stops at the first value of the wrong type, whatever the mode.
        if let Some(first) = problems.wrong_types.first() {
            return Err(cannot(first.clone()));
        }
        let unknown = problems.unknown;
        let duplicates = body
            .map(vkube_api::duplicates::duplicate_fields)
            .unwrap_or_default();
        let listed: Vec<String> = unknown
            .iter()
            .map(|f| format!("unknown field \"{f}\""))
            .chain(
                duplicates
                    .iter()
                    .map(|f| format!("duplicate field \"{f}\"")),
            )
            .collect();
        if listed.is_empty() {
            return Ok(());
        }
        match self.q.get("fieldValidation").map(String::as_str) {
            Some("Strict") => Err(cannot(format!(
                "strict decoding error: {}",
                listed.join(", ")
            ))),
            Some("Ignore") => Ok(()),
            _ => {
                self.warnings
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(listed);
                Ok(())
            }
        }
    }

    /// Defaulting: upstream's SetDefaults for a built-in kind, the schema's for a custom one.
    fn default(&self, obj: &mut Value) {
        match custom::definition(self.resource) {
            Some(d) => vkube_api::custom_objects::default(&d, obj),
            None => vkube_api::defaults::apply(self.resource, obj),
        }
    }

    /// Validation: the built-in kind's, or the custom kind's schema and rules.
    fn validate(&self, obj: &Value, old: Option<&Value>) -> Result<(), Status> {
        match custom::definition(self.resource) {
            Some(d) => vkube_api::custom_objects::validate(&d, obj, old),
            None => vkube_api::validation::validate(self.resource, obj, old),
        }
    }

    pub(crate) fn include(&self) -> table::Include {
        table::Include::parse(self.q.get("includeObject").map(String::as_str))
    }

    pub(crate) fn dry_run(&self) -> bool {
        self.q.get("dryRun").is_some_and(|v| v == "All")
    }

    pub(crate) fn respond(&self, code: u16, obj: &Value) -> Response<Body> {
        let mut resp = if table::wanted(self.accept) {
            let meta = json!({"resourceVersion": obj["metadata"]["resourceVersion"]});
            let table = table::table(
                self.resource,
                std::slice::from_ref(obj),
                meta,
                self.include(),
            );
            response::json(code, &table)
        } else {
            response::json(code, obj)
        };
        self.add_warnings(&mut resp);
        resp
    }

    /// The `Warning` headers gathered for the request (field validation, admission webhooks).
    pub(crate) fn add_warnings(&self, resp: &mut Response<Body>) {
        for warning in self
            .warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let quoted = warning.replace('\\', "\\\\").replace('"', "\\\"");
            if let Ok(v) = http::HeaderValue::from_str(&format!("299 - \"{quoted}\"")) {
                resp.headers_mut().append(http::header::WARNING, v);
            }
        }
    }
}

pub async fn handle(
    api: &Api,
    user: &vkube_auth::UserInfo,
    info: &RequestInfo,
    q: &Query,
    accept: &str,
    content_type: &str,
    body: Bytes,
) -> Response<Body> {
    let Some(resource) = registry::find(&info.group, &info.version, &info.resource) else {
        return response::status(&Status::path_not_found());
    };
    if !resource.namespaced && !info.namespace.is_empty() {
        return response::status(&Status::path_not_found());
    }
    let ctx = Ctx::new(api, user, info, resource, q, accept);
    let dry_run = q.get("dryRun").map(String::as_str);
    if let Err(status) = crate::body::check_dry_run(&info.verb, dry_run) {
        return response::status(&status);
    }
    let result = if info.subresource.is_empty() {
        if !resource.allows(&info.verb) {
            return response::status(&Status::method_not_allowed());
        }
        match info.verb.as_str() {
            "get" => get(&ctx).await,
            "list" => crate::list::list(&ctx).await,
            "watch" => return crate::watch_stream::watch(api, resource, info, q, accept).await,
            "create" if resource.kind == "Binding" => crate::pod_actions::bind(&ctx, &body).await,
            "create" if resource.kind.ends_with("Review") && table::only(accept) => {
                Err(Status::not_acceptable())
            }
            "create" if resource.kind.ends_with("SubjectAccessReview") => {
                crate::reviews::access_review(&ctx, &body).await
            }
            "create" if resource.kind == "SelfSubjectRulesReview" => {
                crate::reviews::rules_review(&ctx, &body)
            }
            "create" if resource.kind == "SelfSubjectReview" => {
                crate::reviews::self_subject_review(&ctx)
            }
            "create" if resource.kind == "TokenReview" => {
                crate::reviews::token_review(&ctx, &body).await
            }
            "create" => create(&ctx, &body).await,
            "update" => update(&ctx, Edit::Replace(&body)).await,
            "patch" => update(&ctx, Edit::Patch(&body, content_type)).await,
            "delete" => crate::delete::delete(&ctx, &body).await,
            "deletecollection" => crate::delete::delete_collection(&ctx, &body).await,
            _ => Err(Status::method_not_allowed()),
        }
    } else {
        subresource(&ctx, &body, content_type).await
    };
    let mut resp = result.unwrap_or_else(|s| {
        // A refused write still carries the warnings admission gave (kubectl prints them).
        let mut resp = response::status(&s);
        ctx.add_warnings(&mut resp);
        resp
    });
    let annotations = std::mem::take(
        &mut *ctx
            .audit_annotations
            .lock()
            .unwrap_or_else(|e| e.into_inner()),
    );
    if !annotations.is_empty() {
        resp.extensions_mut()
            .insert(crate::audit::Annotations(annotations));
    }
    resp
}

async fn subresource(
    ctx: &Ctx<'_>,
    body: &Bytes,
    content_type: &str,
) -> Result<Response<Body>, Status> {
    let Some(sub) = ctx.resource.subresource(&ctx.info.subresource) else {
        return Err(Status::path_not_found());
    };
    if sub.kubelet {
        return Err(Status::service_unavailable(format!(
            "{} \"{}\": the {} subresource needs a kubelet, and this vkube runs no pods: start it with --host-kubeconfig to run them on a host cluster",
            ctx.resource.plural, ctx.info.name, sub.name
        )));
    }
    match (sub.name, ctx.info.verb.as_str()) {
        ("scale", _) => return crate::scale::scale(ctx, body, content_type).await,
        ("binding", "create") => return crate::pod_actions::bind(ctx, body).await,
        ("eviction", "create") => return crate::pod_actions::evict(ctx, body).await,
        ("token", "create") => return crate::reviews::token_request(ctx, body).await,
        ("status" | "finalize" | "approval" | "ephemeralcontainers" | "resize", _) => {}
        _ => return Err(Status::path_not_found()),
    }
    match ctx.info.verb.as_str() {
        "get" => get(ctx).await,
        "update" => update(ctx, Edit::Replace(body)).await,
        "patch" => update(ctx, Edit::Patch(body, content_type)).await,
        _ => Err(Status::method_not_allowed()),
    }
}

async fn get(ctx: &Ctx<'_>) -> Result<Response<Body>, Status> {
    let name = &ctx.info.name;
    // The watch cache once it has caught up with the store (cache/), else the store.
    let kv = crate::cache::get(&ctx.api.hub, &ctx.key(name))
        .await
        .map_err(store_status)?;
    let obj = ctx.read(&kv.ok_or_else(|| ctx.not_found(name))?).await?;
    Ok(ctx.respond(200, &obj))
}

/// Refuses writes into a namespace that does not exist or is being deleted.
async fn check_namespace_open(ctx: &Ctx<'_>, name: &str) -> Result<(), Status> {
    if !ctx.resource.namespaced {
        return Ok(());
    }
    let ns = &ctx.info.namespace;
    let key = registry::find("", "v1", "namespaces")
        .map(|r| r.key("", ns))
        .unwrap_or_default();
    match ctx.api.store.get(&key, None).await.map_err(store_status)? {
        None => Err(Status::not_found("namespaces", "", ns)),
        Some(kv) if decode(&kv)?["metadata"]["deletionTimestamp"].is_string() => {
            Err(Status::forbidden(
                ctx.resource.plural,
                ctx.resource.group,
                name,
                &format!(
                    "unable to create new content in namespace {ns} because it is being terminated"
                ),
            ))
        }
        Some(_) => Ok(()),
    }
}

pub(crate) fn is_crd(r: &Resource) -> bool {
    r.group == "apiextensions.k8s.io" && r.plural == "customresourcedefinitions"
}

async fn create(ctx: &Ctx<'_>, body: &Bytes) -> Result<Response<Body>, Status> {
    create_object(ctx, parse_body(body)?, Some(body), false).await
}

/// A create; `raw`: the body as sent (for duplicate fields); `applied`: by a server-side
/// apply, whose managedFields are already set.
async fn create_object(
    ctx: &Ctx<'_>,
    mut obj: Value,
    raw: Option<&[u8]>,
    applied: bool,
) -> Result<Response<Body>, Status> {
    let definition = vkube_api::registry::custom::definition(ctx.resource);
    if definition.as_ref().is_some_and(|d| d.terminating) {
        return Err(Status::method_not_allowed_because(
            "create not allowed while custom resource definition is terminating",
        ));
    }
    object::check_type(ctx.resource, &mut obj)?;
    ctx.validate_fields(&mut obj, raw)?;
    object::check_namespace(ctx.resource, &mut obj, &ctx.info.namespace)?;
    ctx.default(&mut obj);
    let name = object::prepare_create(ctx.resource, &mut obj)?;
    if ctx.resource.group.is_empty() && ctx.resource.plural == "pods" {
        crate::service_accounts::admit_pod(ctx, &name, &mut obj).await?;
    }
    // Admission webhooks (webhooks/): the mutating ones here, the validating ones before quota.
    let admission = crate::webhooks::Admission::new(ctx, Operation::Create, ctx.dry_run());
    if admission.mutate(Some(&mut obj), None).await? {
        ctx.default(&mut obj);
    }
    ctx.validate(&obj, None)?;
    crate::authz::check_escalation(&ctx.api.authorizer, ctx.user, ctx.resource, &obj).await?;
    check_namespace_open(ctx, &name).await?;
    vkube_api::strategy::prepare_for_create(ctx.resource, &mut obj);
    if !applied {
        crate::apply::track(ctx, None, &mut obj);
    }
    admission.validate(Some(&obj), None).await?;
    crate::quota::admit(ctx, &obj, None).await?;
    if ctx.dry_run() {
        return Ok(ctx.respond(201, &obj));
    }
    let service = ctx.resource.group.is_empty() && ctx.resource.plural == "services";
    let host = ctx
        .api
        .host_services
        .as_ref()
        .filter(|_| service && crate::host_services::on_host(&obj));
    if let Some(host) = host {
        host.0.create(&mut obj).await?;
    } else if service {
        crate::services::allocate(ctx.api.store.as_ref(), &mut obj).await?;
    }
    let created = ctx
        .api
        .store
        .create(&ctx.key(&name), ctx.store_bytes(&obj).await?, None)
        .await;
    if let Some(host) = host.filter(|_| created.is_err()) {
        host.0.release(&obj).await;
    } else if service && created.is_err() {
        crate::services::release(ctx.api.store.as_ref(), &obj).await;
    }
    match created {
        Ok(kv) => {
            let obj = ctx.written(obj, &kv).await?;
            Ok(ctx.respond(201, &obj))
        }
        Err(StoreError::AlreadyExists { .. }) => Err(Status::already_exists(
            ctx.resource.plural,
            ctx.resource.group,
            &name,
        )),
        Err(err) => Err(store_status(err)),
    }
}

/// A custom resource's generation counts changes to anything but its metadata (and its status,
/// when a status subresource owns it), as upstream's custom resource strategy does.
fn custom_generation(resource: &Resource, old: &Value, obj: &mut Value) {
    let status_owned = resource.subresource("status").is_some();
    let content = |v: &Value| -> Value {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            m.remove("metadata");
            if status_owned {
                m.remove("status");
            }
        }
        v
    };
    let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
    let changed = content(old) != content(obj);
    obj["metadata"]["generation"] = json!(if changed { generation + 1 } else { generation });
}

enum Edit<'a> {
    Replace(&'a Bytes),
    Patch(&'a Bytes, &'a str),
}

/// PUT and PATCH, on the object or one of its parts (status, finalize, approval, …): compare-and-swap on the stored revision, retried
/// when the client gave no resourceVersion (an unconditional update).
async fn update(ctx: &Ctx<'_>, edit: Edit<'_>) -> Result<Response<Body>, Status> {
    let name = ctx.info.name.clone();
    let key = ctx.key(&name);
    let part = ctx.info.subresource.as_str();
    let applying = matches!(edit, Edit::Patch(_, ct) if crate::apply::is_apply(ct));
    if let Edit::Patch(..) = edit {
        crate::apply::check_options(ctx, applying)?;
    }
    loop {
        let (cur, old) = match ctx.current(&name).await {
            // An apply to an object that does not exist creates it.
            Err(s) if s.code == 404 && applying && part.is_empty() => {
                let Edit::Patch(body, _) = edit else {
                    return Err(s);
                };
                let applied = crate::apply::applied(ctx, body)?;
                let obj = crate::apply::merge(ctx, None, &applied)?;
                return create_object(ctx, obj, None, true).await;
            }
            other => other?,
        };
        let mut obj = match edit {
            Edit::Replace(body) => parse_body(body)?,
            Edit::Patch(body, _) if applying => {
                let applied = crate::apply::applied(ctx, body)?;
                crate::apply::merge(ctx, Some(&old), &applied)?
            }
            Edit::Patch(body, content_type) => crate::patch::apply(&old, body, content_type)?,
        };
        object::check_type(ctx.resource, &mut obj)?;
        let raw = match edit {
            Edit::Replace(body) => Some(&body[..]),
            Edit::Patch(..) => None,
        };
        ctx.validate_fields(&mut obj, raw)?;
        object::check_namespace(ctx.resource, &mut obj, &ctx.info.namespace)?;
        ctx.default(&mut obj);
        // A replace names its precondition in the object; a patch only if the patch itself sets a
        // resourceVersion (upstream's patcher): one that merely inherits the current one retries
        // on a conflict with a concurrent write, re-applied to the newer object. On that retry a
        // resourceVersion the patch did set no longer matches, and the conflict is the client's.
        let rv_of = |v: &Value| {
            v["metadata"]["resourceVersion"]
                .as_str()
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let wanted_rv = match edit {
            Edit::Patch(..) if rv_of(&obj) == rv_of(&old) => None,
            _ => rv_of(&obj),
        };
        if let Some(rv) = &wanted_rv {
            if *rv != cur.mod_revision.to_string() {
                return Err(Status::conflict(
                    ctx.resource.plural,
                    ctx.resource.group,
                    &name,
                    Status::MODIFIED,
                ));
            }
        }
        // Admission webhooks (webhooks/): the mutating ones here, the validating ones before quota.
        let admission = crate::webhooks::Admission::new(ctx, Operation::Update, ctx.dry_run());
        if admission.mutate(Some(&mut obj), Some(&old)).await? {
            ctx.default(&mut obj);
        }
        let mut new = if !part.is_empty() {
            let new = vkube_api::strategy::apply_part(ctx.resource, part, &old, &obj)?;
            if part != "status" || ctx.resource.custom {
                ctx.validate(&new, Some(&old))?;
            }
            new
        } else {
            object::prepare_update(&old, &mut obj)?;
            if ctx.resource.custom {
                custom_generation(ctx.resource, &old, &mut obj);
            }
            let service = ctx.resource.group.is_empty() && ctx.resource.plural == "services";
            if service {
                crate::services::keep_allocated(&old, &mut obj)?;
            }
            if is_crd(ctx.resource) {
                // Upstream's CRD strategy: the stored status stays, and a new storage version
                // joins status.storedVersions (conversion/ reads objects of the old one).
                vkube_api::crd::definition::prepare_for_update(&mut obj, &old);
            }
            ctx.validate(&obj, Some(&old))?;
            if let Some(host) = ctx
                .api
                .host_services
                .as_ref()
                .filter(|_| service && crate::host_services::on_host(&obj) && !ctx.dry_run())
            {
                host.0.update(&mut obj).await?;
            }
            vkube_api::validation::validate_object_update(ctx.resource, &obj, &old)?;
            crate::authz::check_escalation(&ctx.api.authorizer, ctx.user, ctx.resource, &obj)
                .await?;
            if ctx.resource.subresource("status").is_some() && !is_crd(ctx.resource) {
                // The main resource ignores status where a status subresource exists.
                match old.get("status") {
                    Some(s) => obj["status"] = s.clone(),
                    None => drop(obj.as_object_mut().and_then(|m| m.remove("status"))),
                }
            }
            obj
        };
        if !applying {
            crate::apply::track(ctx, Some(&old), &mut new);
        }
        set_resource_version(&mut new, cur.mod_revision);
        admission.validate(Some(&new), Some(&old)).await?;
        crate::quota::admit(ctx, &new, Some(&old)).await?;
        // An unchanged object is not written, unless encryption at rest wants it rewritten.
        let unchanged = new == old
            && !ctx
                .api
                .store
                .stale(&key, cur.mod_revision)
                .await
                .map_err(store_status)?;
        if unchanged || ctx.dry_run() {
            return Ok(ctx.respond(200, &new));
        }
        match ctx
            .api
            .store
            .update(&key, ctx.store_bytes(&new).await?, cur.mod_revision, None)
            .await
        {
            Ok(kv) => {
                if finalized(ctx.resource, &new) {
                    let _ = ctx.api.store.delete(&key, Some(kv.mod_revision)).await;
                }
                let new = ctx.written(new, &kv).await?;
                return Ok(ctx.respond(200, &new));
            }
            Err(StoreError::Conflict { .. }) if wanted_rv.is_none() => continue,
            Err(StoreError::Conflict { .. }) => {
                return Err(Status::conflict(
                    ctx.resource.plural,
                    ctx.resource.group,
                    &name,
                    Status::MODIFIED,
                ));
            }
            Err(StoreError::NotFound { .. }) => return Err(ctx.not_found(&name)),
            Err(err) => return Err(store_status(err)),
        }
    }
}

/// An object marked for deletion whose last finalizer is gone; a Namespace's spec finalizers
/// count too (upstream's `ShouldDeleteNamespaceDuringUpdate`): the namespace controller's
/// `finalize` that takes off `kubernetes` deletes an emptied namespace.
fn finalized(resource: &Resource, obj: &Value) -> bool {
    let none = |v: &Value| v.as_array().is_none_or(Vec::is_empty);
    obj["metadata"]["deletionTimestamp"].is_string()
        && none(&obj["metadata"]["finalizers"])
        && (!is_namespace(resource) || none(&obj["spec"]["finalizers"]))
}

pub(crate) fn is_namespace(r: &Resource) -> bool {
    r.group.is_empty() && r.plural == "namespaces"
}
