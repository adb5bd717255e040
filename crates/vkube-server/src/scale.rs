//! The `scale` subresource: the `autoscaling/v1` Scale view of a workload's `spec.replicas`,
//! which `kubectl scale` and autoscalers read and write.

use bytes::Bytes;
use http::Response;
use serde_json::{Value, json};
use vkube_api::object::set_resource_version;
use vkube_api::{Status, selector};
use vkube_store::StoreError;

use crate::response::{self, Body};
use crate::rest::{Ctx, parse_body, store_status};

/// The `autoscaling/v1` Scale view of a workload.
fn to_scale(obj: &Value) -> Value {
    let meta = &obj["metadata"];
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(1)},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector::spec_selector_string(obj)},
    })
}

/// GET, PUT and PATCH of `…/scale`: reads and writes the parent's `spec.replicas`.
pub(crate) async fn scale(
    ctx: &Ctx<'_>,
    body: &Bytes,
    content_type: &str,
) -> Result<Response<Body>, Status> {
    let name = ctx.info.name.clone();
    let key = ctx.key(&name);
    loop {
        let (cur, old) = ctx.current(&name).await?;
        let current = to_scale(&old);
        let wanted = match ctx.info.verb.as_str() {
            "get" => return Ok(response::json(200, &current)),
            "update" => parse_body(body)?,
            "patch" => crate::patch::apply(&current, body, content_type)?,
            _ => return Err(Status::method_not_allowed()),
        };
        let wanted_rv = wanted["metadata"]["resourceVersion"]
            .as_str()
            .filter(|v| !v.is_empty())
            .map(str::to_string);
        if wanted_rv
            .as_ref()
            .is_some_and(|rv| *rv != cur.mod_revision.to_string())
        {
            return Err(Status::conflict(
                ctx.resource.plural,
                ctx.resource.group,
                &name,
                Status::MODIFIED,
            ));
        }
        let replicas = match wanted["spec"]["replicas"].as_i64() {
            Some(r) if r >= 0 => r,
            other => {
                let shown =
                    other.map_or_else(|| wanted["spec"]["replicas"].to_string(), |r| r.to_string());
                return Err(Status::invalid(
                    "Scale",
                    "autoscaling",
                    &name,
                    vec![vkube_api::status::Cause {
                        reason: "FieldValueInvalid".into(),
                        message: format!(
                            "Invalid value: {shown}: must be greater than or equal to 0"
                        ),
                        field: "spec.replicas".into(),
                    }],
                ));
            }
        };
        let mut new = old.clone();
        new["spec"]["replicas"] = json!(replicas);
        if new == old || ctx.dry_run() {
            return Ok(response::json(200, &to_scale(&new)));
        }
        new["metadata"]["generation"] =
            json!(old["metadata"]["generation"].as_i64().unwrap_or(0) + 1);
        match ctx
            .api
            .store
            .update(&key, ctx.store_bytes(&new)?, cur.mod_revision, None)
            .await
        {
            Ok(kv) => {
                set_resource_version(&mut new, kv.mod_revision);
                return Ok(response::json(200, &to_scale(&new)));
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
            Err(err) => return Err(store_status(err)),
        }
    }
}
