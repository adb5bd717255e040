//! Custom objects between their CRD's versions. A CRD with `spec.conversion.strategy: Webhook`
//! has its objects converted by its webhook, as kube-apiserver 1.33's webhook converter does:
//! every object that is not in the wanted version goes in one ConversionReview (v1, or v1beta1
//! when the CRD lists that first), the answer is checked as upstream checks it, and a failure is
//! upstream's plain 500 (`conversion webhook for stable.example.com/v1, Kind=Foo failed: …`).
//! Everything else (built-in kinds, `None` CRDs) converts in place (`vkube_api::convert`).
//!
//! Conversion happens where stored bytes become the object a request sees (get, list, watch,
//! the answers of writes) and where a written object becomes bytes to store, so it applies the
//! same whether the object came from the store or the watch cache. The webhook is reached as
//! the admission webhooks are (webhooks/client.rs): a `url`, or a ready endpoint of the Service,
//! verified against the caBundle.

mod review;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use serde_json::Value;
use vkube_api::registry::custom::{self, Definition};
use vkube_api::{Resource, Status, convert};
use vkube_store::Store;

use crate::webhooks::hook::{Endpoint, endpoint, tls_client};

/// client-go's timeout for the webhook's REST client (the `?timeout=30s` of upstream's errors).
const TIMEOUT: Duration = Duration::from_secs(30);

/// Upstream's errors from the converter are plain Go errors: 500 without a reason.
fn failed(message: String) -> Status {
    Status {
        code: 500,
        reason: "",
        message,
        details: None,
        continue_token: None,
    }
}

/// An object with nothing but apiVersion and kind (a bookmark's shape): upstream converts it
/// without calling the webhook.
fn is_empty_object(o: &Value) -> bool {
    o.as_object()
        .is_some_and(|m| m.len() == 2 && m.contains_key("apiVersion") && m.contains_key("kind"))
}

fn needs_conversion(o: &Value, to: &str) -> bool {
    o["apiVersion"]
        .as_str()
        .is_some_and(|v| !v.is_empty() && v != to)
        && !is_empty_object(o)
}

/// The CRD definition behind `resource` when its objects convert through a webhook.
fn webhook_definition(resource: &Resource) -> Option<std::sync::Arc<Definition>> {
    custom::definition(resource).filter(|d| d.converts_by_webhook())
}

/// Whether `resource`'s objects convert through a webhook (then conversion is async).
pub(crate) fn by_webhook(resource: &Resource) -> bool {
    webhook_definition(resource).is_some()
}

/// One object in apiVersion `to`.
pub(crate) async fn one(
    store: &dyn Store,
    resource: &Resource,
    obj: Value,
    to: &str,
) -> Result<Value, Status> {
    let mut out = convert_all(store, resource, vec![obj], to, false).await?;
    Ok(out.pop().unwrap_or_default())
}

/// Stored objects as the request's version serves them: converted, then the schema's defaults
/// (upstream defaults on read too).
pub(crate) async fn served(
    store: &dyn Store,
    resource: &Resource,
    objs: Vec<Value>,
    list: bool,
) -> Result<Vec<Value>, Status> {
    let converted = convert_all(store, resource, objs, &resource.api_version(), list).await?;
    converted
        .into_iter()
        .map(|o| vkube_api::custom_objects::served(resource, o))
        .collect()
}

/// A watch event's object and previous object in the watch's version, each as one object (as
/// upstream decodes them). The previous object only says whether the object was selected
/// before; when nothing selects (`every`) and the object still exists, it is not converted.
pub(crate) async fn event(
    store: &dyn Store,
    resource: &Resource,
    object: Option<Value>,
    prev: Option<Value>,
    every: bool,
) -> Result<(Option<Value>, Option<Value>), Status> {
    let object = match object {
        Some(o) => served(store, resource, vec![o], false).await?.pop(),
        None => None,
    };
    let prev = match prev {
        Some(p) if every && object.is_some() => Some(p),
        Some(p) => served(store, resource, vec![p], false).await?.pop(),
        None => None,
    };
    Ok((object, prev))
}

/// A written object in its storage version.
pub(crate) async fn stored(
    store: &dyn Store,
    resource: &Resource,
    obj: &Value,
) -> Result<Value, Status> {
    one(
        store,
        resource,
        obj.clone(),
        &convert::storage_version(resource),
    )
    .await
}

async fn convert_all(
    store: &dyn Store,
    resource: &Resource,
    mut objs: Vec<Value>,
    to: &str,
    list: bool,
) -> Result<Vec<Value>, Status> {
    let Some(def) = webhook_definition(resource) else {
        return objs.into_iter().map(|o| convert::convert(o, to)).collect();
    };
    let pending: Vec<usize> = (0..objs.len())
        .filter(|&i| needs_conversion(&objs[i], to))
        .collect();
    if pending.is_empty() {
        return Ok(objs);
    }
    let sent: Vec<Value> = pending.iter().map(|&i| objs[i].clone()).collect();
    // Upstream names the list it converts (in the requested version), or the object as it was.
    let gvk = if list {
        review::gvk(to, &def.list_kind)
    } else {
        review::gvk(
            sent[0]["apiVersion"].as_str().unwrap_or_default(),
            sent[0]["kind"].as_str().unwrap_or_default(),
        )
    };
    let batch = review::Batch {
        objects: &sent,
        desired: to,
        gvk,
        list,
    };
    let converted = call(store, &def.conversion, &batch).await.map_err(failed)?;
    for (i, obj) in pending.into_iter().zip(converted) {
        objs[i] = obj;
    }
    Ok(objs)
}

/// The TLS clients of the caBundles in use, so a conversion does not parse its roots again.
fn tls_for(ca_bundle: Option<&str>) -> Result<tokio_rustls::TlsConnector, String> {
    static CLIENTS: OnceLock<Mutex<HashMap<String, tokio_rustls::TlsConnector>>> = OnceLock::new();
    let key = ca_bundle.unwrap_or_default().to_string();
    let mut clients = CLIENTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(c) = clients.get(&key) {
        return Ok(c.clone());
    }
    let client = tls_client(ca_bundle)?;
    // Bundles change rarely; a cluster that rotates many just starts the cache over.
    if clients.len() >= 64 {
        clients.clear();
    }
    clients.insert(key, client.clone());
    Ok(client)
}

/// One ConversionReview exchange for `batch`, under the CRD's `spec.conversion`.
async fn call(
    store: &dyn Store,
    conversion: &Value,
    batch: &review::Batch<'_>,
) -> Result<Vec<Value>, String> {
    let webhook = &conversion["webhook"];
    let version = webhook["conversionReviewVersions"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|v| match v.as_str() {
            Some("v1") => Some("v1"),
            Some("v1beta1") => Some("v1beta1"),
            _ => None,
        })
        .ok_or("no supported conversion review versions")?;
    let gvk = &batch.gvk;
    let fail = |why: String| format!("conversion webhook for {gvk} failed: {why}");
    let client = &webhook["clientConfig"];
    let place: Result<Endpoint, String> = endpoint(client);
    let tls = tls_for(client["caBundle"].as_str().filter(|b| !b.is_empty()))
        .map_err(|e| fail(e.to_string()))?;
    let target = crate::webhooks::target_at(store, &place, TIMEOUT)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let uid = uuid::Uuid::new_v4().to_string();
    let body = review::request(version, &uid, batch.desired, batch.objects);
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let (code, answer) = crate::webhooks::post(&tls, &target, bytes, TIMEOUT)
        .await
        .map_err(|e| fail(format!("Post {:?}: {e}", target.url)))?;
    if !(200..300).contains(&code) {
        return Err(fail(crate::webhooks::review::http_error(code, &answer)));
    }
    let parsed: Value = serde_json::from_slice(&answer).map_err(|e| fail(e.to_string()))?;
    let converted = review::converted_objects(version, &uid, &parsed).map_err(fail)?;
    review::accept(batch, converted)
}
