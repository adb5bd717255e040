//! What makes the API behave before any controller runs: the default namespaces, the `kubernetes`
//! Service and the bootstrap RBAC policy (every replica, at start); and the leader's upkeep loop
//! (ClusterRole aggregation, Service IP release).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::task::AbortHandle;
use vkube_api::object;
use vkube_api::registry::{self, Resource};
use vkube_store::StoreError;

use crate::rest::encode;
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

/// The leader's upkeep loop: ClusterRoles aggregated again when one changes, and a deleted
/// Service's IP and ports released. (Namespace deletion is vkube-controllers' `namespace`
/// controller, a client of the API.)
pub fn start(api: Arc<Api>) -> AbortHandle {
    let task = tokio::spawn(async move {
        loop {
            // Subscribe first, then aggregate: no ClusterRole change falls between the two.
            let Ok((_, mut changes)) = api.hub.subscribe(api.hub.last()) else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            aggregate_all(&api).await;
            // Ends on a lag or a closed hub: subscribed again. A Service delete missed meanwhile
            // is released by the repair loop (service_repair).
            while let Ok(c) = changes.recv().await {
                if c.key.starts_with("/registry/clusterroles/") {
                    aggregate_all(&api).await;
                }
                if c.key.starts_with("/registry/services/") && c.object.is_none() {
                    if let Some(svc) = &c.prev {
                        crate::services::release(api.store.as_ref(), svc).await;
                    }
                }
            }
        }
    });
    task.abort_handle()
}
