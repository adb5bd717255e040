//! The minimum controllers that make the API behave: the default namespaces exist; deleting a
//! namespace deletes its contents, then the namespace. (With HA these run on the leader only.)

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::AbortHandle;
use vkube_api::object;
use vkube_api::registry::{self, Resource};
use vkube_store::{ListOptions, StoreError};

use crate::rest::{decode, encode};
use crate::router::Api;

pub const DEFAULT_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];


fn core(plural: &str) -> &'static Resource {
    registry::find("", "v1", plural).expect("a core resource of the registry")
}

/// Creates an object unless it exists; a concurrent creator winning is fine.
async fn ensure(
    api: &Api,
    resource: &Resource,
    namespace: &str,
    mut obj: Value,
) -> Result<(), StoreError> {
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let key = resource.key(namespace, &name);
    if api.store.get(&key, None).await?.is_some() {
        return Ok(());
    }
    if object::check_type(resource, &mut obj).is_err()
        || object::prepare_create(resource, &mut obj).is_err()
    {
        return Ok(());
    }
    vkube_api::defaults::apply(resource, &mut obj);
    match api.store.create(&key, encode(&obj), None).await {
        Ok(_) | Err(StoreError::AlreadyExists { .. }) => Ok(()),
        Err(err) => Err(err),
    }
}

/// Aggregates until nothing changes (edit aggregates view, admin aggregates edit).
async fn aggregate_all(api: &Api) {
    for _ in 0..5 {
        match crate::rbac_policy::aggregate(api).await {
            Ok(0) => return,
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(%err, "clusterrole aggregation");
                return;
            }
        }
    }
}

/// `default/kubernetes`: the Service, Endpoints and EndpointSlice through which pods reach the
/// API, on the first address of the service range as upstream.
async fn kubernetes_service(api: &Api) -> Result<(), StoreError> {
    let (ip, endpoint) = match &api.kubernetes_service {
        Some(k) => (k.cluster_ip.clone(), k.endpoint),
        None => (crate::services::first_ip(), api.listen),
    };
    let (host, port) = (endpoint.ip().to_string(), endpoint.port());
    let labels = json!({"component": "apiserver", "provider": "kubernetes"});
    let service = json!({
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": labels},
        "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip], "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]},
    });
    // A cluster that moved onto a host (or off it) needs the address its pods can reach, and a
    // ClusterIP never changes in place: the Service is made anew.
    let fresh = renew_if(api, core("services"), "kubernetes", |s| {
        s["spec"]["clusterIP"] != ip.as_str()
    })
    .await?;
    if fresh && api.kubernetes_service.is_none() {
        let _ = crate::services::claim_ip(api.store.as_ref(), &ip, "default", "kubernetes").await;
    }
    ensure(api, core("services"), "default", service).await?;
    // On a host, every replica advertises the one address of the host Service; elsewhere the
    // first replica's stays (each replica's own listen address differs).
    let on_host = api.kubernetes_service.is_some();
    let endpoints = json!({
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": host}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
    });
    let subsets = endpoints["subsets"].clone();
    renew_if(api, core("endpoints"), "kubernetes", |e| {
        on_host && e["subsets"] != subsets
    })
    .await?;
    ensure(api, core("endpoints"), "default", endpoints).await?;
    let slices = registry::find("discovery.k8s.io", "v1", "endpointslices").expect("registered");
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"kubernetes.io/service-name": "kubernetes"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [host], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    });
    let addresses = slice["endpoints"][0]["addresses"].clone();
    renew_if(api, slices, "kubernetes", |e| {
        on_host && e["endpoints"][0]["addresses"] != addresses
    })
    .await?;
    ensure(api, slices, "default", slice).await
}

/// Deletes `default/NAME` of `resource` if `stale` says so; true when it is absent afterwards.
async fn renew_if(
    api: &Api,
    resource: &Resource,
    name: &str,
    stale: impl Fn(&Value) -> bool,
) -> Result<bool, StoreError> {
    let key = resource.key("default", name);
    let Some(kv) = api.store.get(&key, None).await? else {
        return Ok(true);
    };
    let stored: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
    if !stale(&stored) {
        return Ok(false);
    }
    match api.store.delete(&key, Some(kv.mod_revision)).await {
        Ok(_) | Err(StoreError::NotFound { .. }) | Err(StoreError::Conflict { .. }) => Ok(true),
        Err(err) => Err(err),
    }
}

pub fn namespace_object(name: &str) -> Value {
    json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    })
}

/// What must exist before a replica reports ready: the default namespaces, the `kubernetes`
/// Service and the bootstrap RBAC policy. Every replica does it at start; each step is an
/// idempotent create-if-absent or compare-and-swap, so replicas starting together agree.
pub async fn bootstrap(api: &Api) -> Result<(), StoreError> {
    // All at once, so the store's group commit writes them together (start → ready time).
    let namespaces = futures_util::future::join_all(
        DEFAULT_NAMESPACES
            .iter()
            .map(|ns| ensure(api, core("namespaces"), "", namespace_object(ns))),
    );
    let (namespaces, service, policy) = tokio::join!(
        namespaces,
        kubernetes_service(api),
        crate::rbac_policy::reconcile_bootstrap(api)
    );
    namespaces.into_iter().collect::<Result<Vec<_>, _>>()?;
    service?;
    policy?;
    aggregate_all(api).await;
    Ok(())
}

/// The controllers' loop (namespace lifecycle, per-namespace defaults, ClusterRole aggregation,
/// Service IP release), run by the leader only.
pub fn start(api: Arc<Api>) -> AbortHandle {
    let task = tokio::spawn(async move {
        loop {
            // Subscribe first, then scan: nothing falls between the two.
            let Ok((_, mut changes)) = api.hub.subscribe(api.hub.last()) else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let mut pending: BTreeSet<String> = match namespaces(&api).await {
                Ok(all) => all,
                Err(err) => {
                    tracing::warn!(%err, "namespace controller: listing namespaces failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            loop {
                let mut retry = BTreeSet::new();
                for ns in std::mem::take(&mut pending) {
                    match reconcile(&api, &ns).await {
                        Ok(true) => {}
                        Ok(false) => drop(retry.insert(ns)),
                        Err(err) => {
                            tracing::warn!(%err, namespace = %ns, "namespace controller");
                            retry.insert(ns);
                        }
                    }
                }
                let wait = if retry.is_empty() {
                    Duration::from_secs(3600)
                } else {
                    Duration::from_secs(1)
                };
                pending = retry;
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    change = changes.recv() => match change {
                        Ok(c) => {
                            if let Some(name) = c.key.strip_prefix("/registry/namespaces/") {
                                pending.insert(name.to_string());
                            }
                            if c.key.starts_with("/registry/clusterroles/") {
                                aggregate_all(&api).await;
                            }
                            if c.key.starts_with("/registry/services/") && c.object.is_none() {
                                if let Some(svc) = &c.prev {
                                    crate::services::release(api.store.as_ref(), svc).await;
                                }
                            }
                        }
                        Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => break,
                    },
                }
            }
        }
    });
    task.abort_handle()
}

async fn namespaces(api: &Api) -> Result<BTreeSet<String>, StoreError> {
    let prefix = core("namespaces").key("", "");
    let page = api.store.list(&prefix, ListOptions::default()).await?;
    Ok(page
        .items
        .iter()
        .map(|kv| kv.key.trim_start_matches(&prefix).to_string())
        .collect())
}

/// Brings one namespace to its desired state; `false` when it must be looked at again soon.
async fn reconcile(api: &Api, name: &str) -> Result<bool, StoreError> {
    let key = core("namespaces").key("", name);
    let Some(kv) = api.store.get(&key, None).await? else {
        return Ok(true);
    };
    let Ok(ns) = decode(&kv) else { return Ok(true) };
    if ns["metadata"]["deletionTimestamp"].is_string() {
        if !empty_namespace(api, name).await? {
            return Ok(false);
        }
        // Content gone: drop our own spec finalizer. Others' ("finalize" subresource) and
        // metadata finalizers keep the namespace Terminating until their owners remove them.
        let spec_finalizers: Vec<Value> = ns["spec"]["finalizers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if spec_finalizers.iter().any(|f| f == "kubernetes") {
            let mut ns = ns.clone();
            let rest: Vec<Value> = spec_finalizers
                .into_iter()
                .filter(|f| f != "kubernetes")
                .collect();
            ns["spec"]["finalizers"] = Value::Array(rest);
            return match api
                .store
                .update(&key, encode(&ns), kv.mod_revision, None)
                .await
            {
                Ok(_) | Err(StoreError::NotFound { .. }) => Ok(true),
                Err(StoreError::Conflict { .. }) => Ok(false),
                Err(err) => Err(err),
            };
        }
        let held = |v: &Value| v.as_array().is_some_and(|f| !f.is_empty());
        if held(&ns["spec"]["finalizers"]) || held(&ns["metadata"]["finalizers"]) {
            return Ok(true);
        }
        return match api.store.delete(&key, Some(kv.mod_revision)).await {
            Ok(_) | Err(StoreError::NotFound { .. }) => Ok(true),
            Err(StoreError::Conflict { .. }) => Ok(false),
            Err(err) => Err(err),
        };
    }
    // The `default` ServiceAccount and `kube-root-ca.crt` come from vkube-controllers'
    // `serviceaccount` and `root-ca-cert-publisher`, through the API.
    Ok(true)
}

/// Deletes what a terminating namespace holds; objects with finalizers are marked and waited for.
/// Returns whether the namespace is empty.
async fn empty_namespace(api: &Api, namespace: &str) -> Result<bool, StoreError> {
    let mut empty = true;
    let storages: BTreeSet<&str> = registry::all()
        .into_iter()
        .filter(|r| r.namespaced)
        .map(|r| r.storage)
        .collect();
    for storage in storages {
        let prefix = format!("/registry/{storage}/{namespace}/");
        empty &= empty_prefix(api, &prefix).await?;
    }
    Ok(empty)
}

/// Deletes every object under a key prefix; objects with finalizers are marked deleted and
/// left to their finalizers' owners. Returns whether nothing was left.
pub(crate) async fn empty_prefix(api: &Api, prefix: &str) -> Result<bool, StoreError> {
    let mut empty = true;
    for kv in api.store.list(prefix, ListOptions::default()).await?.items {
        let Ok(mut obj) = decode(&kv) else { continue };
        let finalizers = obj["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if !finalizers {
            match api.store.delete(&kv.key, Some(kv.mod_revision)).await {
                Ok(_) | Err(StoreError::NotFound { .. }) => continue,
                Err(StoreError::Conflict { .. }) => {}
                Err(err) => return Err(err),
            }
        } else if !obj["metadata"]["deletionTimestamp"].is_string() {
            obj["metadata"]["deletionTimestamp"] = json!(object::now());
            let _ = api
                .store
                .update(&kv.key, encode(&obj), kv.mod_revision, None)
                .await;
        }
        empty = false;
    }
    Ok(empty)
}
