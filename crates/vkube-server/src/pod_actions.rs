//! The Pod subresources that act rather than store: `binding` (what a scheduler posts to place a
//! pod on a node; also the top-level `bindings` resource) and `eviction` (what `kubectl drain`
//! posts: a delete that honours PodDisruptionBudgets).

use bytes::Bytes;
use http::Response;
use serde_json::{Value, json};
use vkube_api::object::{cause, now};
use vkube_api::{Status, selector};
use vkube_store::StoreError;

use crate::response::{self, Body};
use crate::rest::{Ctx, delete_one, delete_options, parse_object, store_status};

fn created() -> Response<Body> {
    let mut status = vkube_api::status::success();
    status["code"] = json!(201);
    response::json(201, &status)
}

/// POST `pods/NAME/binding` or `bindings`: sets `spec.nodeName` once, and marks the pod scheduled.
pub(crate) async fn bind(ctx: &Ctx<'_>, body: &Bytes) -> Result<Response<Body>, Status> {
    let binding = parse_object(body)?;
    let name = if ctx.info.name.is_empty() {
        binding["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    } else {
        ctx.info.name.clone()
    };
    let target = &binding["target"];
    let mut causes = vec![];
    if !matches!(target["kind"].as_str(), None | Some("") | Some("Node")) {
        causes.push(cause(
            "FieldValueNotSupported",
            "target.kind",
            format!(
                "Unsupported value: {}: supported values: \"Node\"",
                target["kind"]
            ),
        ));
    }
    let node = target["name"].as_str().unwrap_or_default();
    if node.is_empty() {
        causes.push(cause(
            "FieldValueRequired",
            "target.name",
            "Required value".into(),
        ));
    }
    if !causes.is_empty() {
        return Err(Status::invalid("Binding", "", &name, causes));
    }
    let pods = pods_ctx(ctx);
    let key = pods.key(&name);
    loop {
        let (cur, mut pod) = pods.current(&name).await?;
        if let Some(assigned) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
            return Err(Status::conflict(
                "pods/binding",
                "",
                &name,
                &format!("pod {name} is already assigned to node {assigned:?}"),
            ));
        }
        if pod["metadata"]["deletionTimestamp"].is_string() {
            return Err(Status::conflict(
                "pods/binding",
                "",
                &name,
                &format!("pod {name} is being deleted, cannot be assigned to a host"),
            ));
        }
        pod["spec"]["nodeName"] = json!(node);
        let conditions = pod["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut conditions: Vec<Value> = conditions
            .into_iter()
            .filter(|c| c["type"] != "PodScheduled")
            .collect();
        conditions.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now()}));
        pod["status"]["conditions"] = Value::Array(conditions);
        if ctx.dry_run() {
            return Ok(created());
        }
        match ctx
            .api
            .store
            .update(&key, pods.store_bytes(&pod).await?, cur.mod_revision, None)
            .await
        {
            Ok(_) => return Ok(created()),
            Err(StoreError::Conflict { .. }) => continue,
            Err(StoreError::NotFound { .. }) => return Err(pods.not_found(&name)),
            Err(err) => return Err(store_status(err)),
        }
    }
}

/// POST `pods/NAME/eviction`: deletes the pod unless a disruption budget forbids it now.
pub(crate) async fn evict(ctx: &Ctx<'_>, body: &Bytes) -> Result<Response<Body>, Status> {
    let eviction = parse_object(body)?;
    let name = &ctx.info.name;
    if eviction["metadata"]["name"]
        .as_str()
        .is_some_and(|n| n != name)
    {
        return Err(Status::bad_request(
            "name in URL does not match name in Eviction object",
        ));
    }
    let options = match eviction.get("deleteOptions").filter(|o| !o.is_null()) {
        Some(o) => Bytes::from(serde_json::to_vec(o).unwrap_or_default()),
        None => Bytes::new(),
    };
    let opts = delete_options(&options, ctx.q)?;
    let (_, pod) = ctx.current(name).await?;
    // Pods that are not running cost no availability: upstream evicts them whatever the budget.
    let ignores_budget = matches!(
        pod["status"]["phase"].as_str(),
        Some("Pending" | "Succeeded" | "Failed")
    ) || pod["metadata"]["deletionTimestamp"].is_string();
    if !ignores_budget {
        take_disruption(ctx, &pod).await?;
    }
    delete_one(ctx, name, &opts).await?;
    Ok(created())
}

/// Checks the pod's one PodDisruptionBudget and spends one allowed disruption from it.
async fn take_disruption(ctx: &Ctx<'_>, pod: &Value) -> Result<(), Status> {
    let namespace = &ctx.info.namespace;
    let prefix = format!("/registry/poddisruptionbudgets/{namespace}/");
    loop {
        let list = ctx
            .api
            .store
            .list(&prefix, Default::default())
            .await
            .map_err(store_status)?;
        let mut matching = vec![];
        for kv in &list.items {
            let pdb: Value =
                serde_json::from_slice(&kv.value).map_err(|e| Status::internal(e.to_string()))?;
            let sel = &pdb["spec"]["selector"];
            let empty = json!({});
            let labels = pod["metadata"].get("labels").unwrap_or(&empty);
            if sel.is_object() && selector::label_selector_matches(sel, labels) {
                matching.push((kv.clone(), pdb));
            }
        }
        let (kv, mut pdb) = match matching.len() {
            0 => return Ok(()),
            1 => matching.remove(0),
            _ => {
                return Err(Status::internal(
                    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                ));
            }
        };
        let pdb_name = pdb["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let observed = pdb["status"]["observedGeneration"].as_i64().unwrap_or(0);
        if observed < pdb["metadata"]["generation"].as_i64().unwrap_or(0) {
            return Err(Status::disruption_budget(format!(
                "The disruption budget {pdb_name} is still being processed by the server."
            )));
        }
        let allowed = pdb["status"]["disruptionsAllowed"].as_i64().unwrap_or(0);
        if allowed <= 0 {
            return Err(Status::disruption_budget(format!(
                "The disruption budget {pdb_name} needs {} healthy pods and has {} currently",
                pdb["status"]["desiredHealthy"].as_i64().unwrap_or(0),
                pdb["status"]["currentHealthy"].as_i64().unwrap_or(0)
            )));
        }
        pdb["status"]["disruptionsAllowed"] = json!(allowed - 1);
        let pod_name = pod["metadata"]["name"].as_str().unwrap_or_default();
        pdb["status"]["disruptedPods"][pod_name] = json!(now());
        if ctx.dry_run() {
            return Ok(());
        }
        let bytes = serde_json::to_vec(&pdb).map_err(|e| Status::internal(e.to_string()))?;
        match ctx
            .api
            .store
            .update(&kv.key, bytes, kv.mod_revision, None)
            .await
        {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict { .. }) => continue,
            Err(err) => return Err(store_status(err)),
        }
    }
}

/// A context for the pods a `bindings` request names (the top-level resource has its own).
fn pods_ctx<'a>(ctx: &Ctx<'a>) -> Ctx<'a> {
    let pods = vkube_api::registry::find("", "v1", "pods").expect("pods are registered");
    ctx.with_resource(pods)
}
