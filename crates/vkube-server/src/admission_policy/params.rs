//! The params a binding gives a policy (upstream's `CollectParams`), and the request's
//! namespace object. Both are read from the store itself, at its current revision, so every
//! replica sees the same params for the same request (upstream reads an informer, and falls
//! back to the API when the informer has not seen a param yet).

use serde_json::Value;
use vkube_api::Status;
use vkube_store::ListOptions;

use super::policy::{Binding, Policy};
use crate::webhooks::Admission;

/// The params to evaluate the policy with: `[None]` when it takes none, an empty list when none
/// was found and parameterNotFoundAction is Allow. The error is a configuration error.
pub async fn collect(
    adm: &Admission<'_>,
    policy: &Policy,
    binding: &Binding,
    namespace: &str,
) -> Result<Vec<Option<Value>>, String> {
    let (Some(kind), Some(param_ref)) = (&policy.param_kind, &binding.param_ref) else {
        return Ok(vec![None]);
    };
    let Some(resource) = kind.resource() else {
        return Err(format!(
            "paramKind kind `&ParamKind{{APIVersion:{},Kind:{},}}` not known",
            kind.api_version, kind.kind
        ));
    };
    let params_namespace = if !resource.namespaced {
        if !param_ref.namespace.is_empty() {
            return Err(
                "paramRef.namespace must not be provided for a cluster-scoped `paramKind`".into(),
            );
        }
        ""
    } else if !param_ref.namespace.is_empty() {
        param_ref.namespace.as_str()
    } else if !namespace.is_empty() {
        namespace
    } else {
        return Err(
            "cannot use namespaced paramRef in policy binding that matches cluster-scoped resources"
                .into(),
        );
    };
    let store = adm.ctx.api.store.as_ref();
    // In the paramKind's version: through its CRD's conversion webhook when it has one.
    let served = async |kv: &vkube_store::KeyValue| -> Result<Value, String> {
        let obj = crate::rest::decode(kv).map_err(|s| s.message)?;
        let objs = crate::conversion::served(store, resource, vec![obj], false).await;
        Ok(objs.map_err(|s| s.message)?.pop().unwrap_or_default())
    };
    let mut params = Vec::new();
    if !param_ref.name.is_empty() {
        let key = resource.key(params_namespace, &param_ref.name);
        if let Some(kv) = store.get(&key, None).await.map_err(|e| e.to_string())? {
            params.push(Some(served(&kv).await?));
        }
    } else {
        let selector = param_ref.selector.clone().unwrap_or(Value::Null);
        let prefix = resource.key(params_namespace, "");
        let page = store
            .list(&prefix, ListOptions::default())
            .await
            .map_err(|e| e.to_string())?;
        for kv in &page.items {
            // A cluster-wide list of a namespaced kind is never asked for here, but the prefix
            // of namespace `a` must not take namespace `ab`'s objects.
            if kv.key[prefix.len()..].contains('/') {
                continue;
            }
            let obj = served(kv).await?;
            let labels = obj["metadata"]
                .get("labels")
                .cloned()
                .unwrap_or_else(|| Value::Object(Default::default()));
            if vkube_api::selector::label_selector_matches(&selector, &labels) {
                params.push(Some(obj));
            }
        }
    }
    if params.is_empty() && param_ref.deny_when_missing {
        return Err(
            "no params found for policy binding with `Deny` parameterNotFoundAction".into(),
        );
    }
    Ok(params)
}

/// `namespaceObject`: the request's namespace (none for cluster-scoped resources and for a
/// Namespace itself), with upstream's fields only (no managedFields or ownerReferences).
pub async fn namespace_object(adm: &Admission<'_>) -> Result<Value, Status> {
    let namespace = adm.ctx.info.namespace.as_str();
    let r = adm.resource();
    if namespace.is_empty() || (r.group.is_empty() && r.plural == "namespaces") {
        return Ok(Value::Null);
    }
    let Some(namespaces) = vkube_api::registry::find("", "v1", "namespaces") else {
        return Ok(Value::Null);
    };
    let kv = adm
        .ctx
        .api
        .store
        .get(&namespaces.key("", namespace), None)
        .await
        .map_err(crate::rest::store_status)?
        .ok_or_else(|| Status::not_found("namespaces", "", namespace))?;
    let mut ns = crate::rest::decode(&kv)?;
    if let Some(meta) = ns["metadata"].as_object_mut() {
        meta.remove("managedFields");
        meta.remove("ownerReferences");
    }
    Ok(ns)
}
