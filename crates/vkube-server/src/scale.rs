//! The `scale` subresource: the `autoscaling/v1` Scale view of a workload's `spec.replicas` (or,
//! for a custom resource, of the paths its CRD's `subresources.scale` names), which `kubectl
//! scale` and autoscalers read and write.

use bytes::Bytes;
use http::Response;
use serde_json::{Value, json};
use vkube_api::object::set_resource_version;
use vkube_api::{Status, selector};
use vkube_store::StoreError;

use crate::response::{self, Body};
use crate::rest::{Ctx, parse_object, store_status};

/// Where a kind keeps what Scale shows.
struct Paths {
    spec: Vec<String>,
    status: Vec<String>,
    /// `None`: the workload's `spec.selector`, rendered as a string.
    selector: Option<Vec<String>>,
    /// What `spec.replicas` reads as when absent (1 for the workloads, whose default it is).
    default_replicas: i64,
}

fn dotted(path: &str) -> Vec<String> {
    path.trim_start_matches('.')
        .split('.')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

impl Paths {
    fn of(ctx: &Ctx<'_>) -> Paths {
        let custom =
            vkube_api::registry::custom::definition(ctx.resource).and_then(|d| d.scale.clone());
        match custom {
            Some(scale) => Paths {
                spec: dotted(
                    scale["specReplicasPath"]
                        .as_str()
                        .unwrap_or(".spec.replicas"),
                ),
                status: dotted(
                    scale["statusReplicasPath"]
                        .as_str()
                        .unwrap_or(".status.replicas"),
                ),
                selector: Some(
                    scale["labelSelectorPath"]
                        .as_str()
                        .map(dotted)
                        .unwrap_or_default(),
                ),
                default_replicas: 0,
            },
            None => Paths {
                spec: dotted("spec.replicas"),
                status: dotted("status.replicas"),
                selector: None,
                default_replicas: 1,
            },
        }
    }
}

fn at<'a>(obj: &'a Value, path: &[String]) -> &'a Value {
    path.iter().fold(obj, |v, k| &v[k.as_str()])
}

fn set_at(obj: &mut Value, path: &[String], value: Value) {
    let mut v = obj;
    for k in path {
        v = &mut v[k.as_str()];
    }
    *v = value;
}

/// The `autoscaling/v1` Scale view of a workload.
fn to_scale(obj: &Value, paths: &Paths) -> Value {
    let meta = &obj["metadata"];
    let selector = match &paths.selector {
        None => json!(selector::spec_selector_string(obj)),
        Some(p) if p.is_empty() => json!(""),
        Some(p) => at(obj, p).clone(),
    };
    let mut scale = json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": at(obj, &paths.spec).as_i64().unwrap_or(paths.default_replicas)},
        "status": {"replicas": at(obj, &paths.status).as_i64().unwrap_or(0), "selector": selector},
    });
    if scale["status"]["selector"]
        .as_str()
        .is_none_or(str::is_empty)
    {
        scale["status"]
            .as_object_mut()
            .map(|s| s.remove("selector"));
    }
    scale
}

/// GET, PUT and PATCH of `…/scale`: reads and writes the parent's `spec.replicas`.
pub(crate) async fn scale(
    ctx: &Ctx<'_>,
    body: &Bytes,
    content_type: &str,
) -> Result<Response<Body>, Status> {
    let name = ctx.info.name.clone();
    let key = ctx.key(&name);
    let paths = Paths::of(ctx);
    loop {
        let (cur, old) = ctx.current(&name).await?;
        let current = to_scale(&old, &paths);
        let wanted = match ctx.info.verb.as_str() {
            "get" => return Ok(response::json(200, &current)),
            "update" => parse_object(body)?,
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
        set_at(&mut new, &paths.spec, json!(replicas));
        if new == old || ctx.dry_run() {
            return Ok(response::json(200, &to_scale(&new, &paths)));
        }
        new["metadata"]["generation"] =
            json!(old["metadata"]["generation"].as_i64().unwrap_or(0) + 1);
        match ctx
            .api
            .store
            .update(&key, ctx.store_bytes(&new).await?, cur.mod_revision, None)
            .await
        {
            Ok(kv) => {
                set_resource_version(&mut new, kv.mod_revision);
                return Ok(response::json(200, &to_scale(&new, &paths)));
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
