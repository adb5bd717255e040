//! Server-side apply and field ownership at the REST layer: which manager a write is recorded
//! under, which part of the object it owns, the schema its lists merge by, and the
//! `application/apply-patch+yaml` request itself (`vkube_api::managed_fields` does the merging).

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use vkube_api::Status;
use vkube_api::managed_fields::{self, Manager, Part, Shape};
use vkube_api::registry::custom::{self, Definition};

use crate::rest::Ctx;

/// The query key under which the router passes the User-Agent's manager name.
pub const AGENT_MANAGER: &str = "\u{1}userAgentManager";

pub const APPLY: &str = "application/apply-patch+yaml";

/// Whether a patch's media type is an apply.
pub fn is_apply(content_type: &str) -> bool {
    content_type.split(';').next().unwrap_or("").trim() == APPLY
}

fn manager(ctx: &Ctx<'_>) -> Manager {
    let name = ctx
        .q
        .get("fieldManager")
        .or_else(|| ctx.q.get(AGENT_MANAGER))
        .cloned()
        .unwrap_or_default();
    Manager {
        name,
        api_version: ctx.resource.api_version(),
        subresource: ctx.info.subresource.clone(),
    }
}

fn part(ctx: &Ctx<'_>) -> Part {
    match ctx.info.subresource.as_str() {
        "status" => Part::Status,
        "" if ctx.resource.subresource("status").is_some() => Part::NoStatus,
        _ => Part::Whole,
    }
}

/// The definition a custom kind's shape borrows its schema from.
fn definition(ctx: &Ctx<'_>) -> Option<Arc<Definition>> {
    custom::definition(ctx.resource)
}

fn shape<'d>(ctx: &Ctx<'_>, def: &'d Option<Arc<Definition>>) -> Shape<'d> {
    let custom = def.as_ref().map(|d| d.schema().unwrap_or(&Value::Null));
    match custom {
        Some(schema) if schema.is_object() => Shape::Json(schema),
        Some(_) => Shape::Any,
        None => Shape::root(&ctx.resource.api_version(), ctx.resource.kind, None),
    }
}

fn now() -> String {
    vkube_api::object::now()
}

/// Records a write that is not an apply in `new`'s managedFields.
pub fn track(ctx: &Ctx<'_>, old: Option<&Value>, new: &mut Value) {
    let def = definition(ctx);
    managed_fields::track_update(old, new, shape(ctx, &def), part(ctx), &manager(ctx), &now());
}

fn force(ctx: &Ctx<'_>) -> Option<bool> {
    // Go's ParseBool, as upstream decodes query parameters (the Python client sends `True`).
    ctx.q
        .get("force")
        .map(|f| matches!(f.as_str(), "1" | "t" | "T" | "true" | "TRUE" | "True"))
}

/// PatchOptions as upstream validates them: an apply names its fieldManager; `force` is for
/// applies only.
pub fn check_options(ctx: &Ctx<'_>, applying: bool) -> Result<(), Status> {
    let invalid = |field: &str, reason: &str, message: &str| {
        Status::invalid(
            "PatchOptions",
            "meta.k8s.io",
            "",
            vec![vkube_api::status::Cause {
                reason: reason.into(),
                message: message.into(),
                field: field.into(),
            }],
        )
    };
    if applying && ctx.q.get("fieldManager").is_none_or(|m| m.is_empty()) {
        return Err(invalid(
            "fieldManager",
            "FieldValueRequired",
            "Required value: is required for apply patch",
        ));
    }
    if !applying && force(ctx).is_some() {
        return Err(invalid(
            "force",
            "FieldValueForbidden",
            "Forbidden: may not be specified for non-apply patch",
        ));
    }
    Ok(())
}

/// The applied configuration of an apply request, checked as upstream checks it.
pub fn applied(ctx: &Ctx<'_>, body: &Bytes) -> Result<Value, Status> {
    check_options(ctx, true)?;
    let text = std::str::from_utf8(body)
        .map_err(|e| Status::bad_request(format!("error decoding YAML: {e}")))?;
    let (obj, duplicate) = crate::yaml::to_json_lenient(text)
        .map_err(|e| Status::bad_request(format!("error decoding YAML: {e}")))?;
    if !obj.is_object() {
        return Err(Status::bad_request(
            "error decoding YAML: the applied configuration is not an object",
        ));
    }
    if let Some(duplicate) =
        duplicate.filter(|_| ctx.q.get("fieldValidation").is_some_and(|v| v == "Strict"))
    {
        return Err(Status::bad_request(format!(
            "error strict decoding YAML: error converting YAML to JSON: yaml: unmarshal errors:\n  {duplicate}"
        )));
    }
    undeclared(ctx, &obj)?;
    Ok(obj)
}

/// An applied configuration may only hold fields the kind's schema declares: upstream's typed
/// conversion refuses it whatever `fieldValidation` says (it answers 500; vkube 400).
fn undeclared(ctx: &Ctx<'_>, applied: &Value) -> Result<(), Status> {
    let mut copy = applied.clone();
    let r = ctx.resource;
    let unknown = match definition(ctx) {
        Some(d) => vkube_api::custom_objects::prune(&d, &mut copy),
        None => vkube_api::schema::check(r.group, r.version, r.kind, &mut copy)
            .map(|p| p.unknown)
            .unwrap_or_default(),
    };
    if unknown.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = unknown
        .iter()
        .map(|p| format!(".{p}: field not declared in schema"))
        .collect();
    let listed = match lines.as_slice() {
        [one] => one.clone(),
        many => format!("errors:\n  {}", many.join("\n  ")),
    };
    let meta = &applied["metadata"];
    Err(Status::bad_request(format!(
        "failed to create typed patch object ({}/{}; {}, Kind={}): {listed}",
        meta["namespace"].as_str().unwrap_or(&ctx.info.namespace),
        meta["name"].as_str().unwrap_or_default(),
        r.api_version(),
        r.kind
    )))
}

/// The object an apply makes of `live` (`None`: it does not exist yet), or upstream's 409.
pub fn merge(ctx: &Ctx<'_>, live: Option<&Value>, applied: &Value) -> Result<Value, Status> {
    let def = definition(ctx);
    let force = force(ctx).unwrap_or(false);
    managed_fields::apply(
        live,
        applied,
        shape(ctx, &def),
        part(ctx),
        &manager(ctx),
        force,
        &now(),
    )
    .map_err(|c| managed_fields::conflict_status(&c))
}
