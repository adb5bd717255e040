//! The leader's aggregation upkeep, as kube-apiserver's autoregister controller, the local and
//! remote available-condition controllers and the `extension-apiserver-authentication`
//! publisher, written through the API as `system:apiserver`:
//!
//! - the local APIServices of the built-in group/versions (`v1.`, `v1.apps`, …) exist, with
//!   upstream's priorities and `Available=True` (`Local`);
//! - each APIService with a Service gets `Available` from upstream's checks: the Service exists
//!   (`ServiceNotFound`), a ClusterIP Service has the port (`ServicePortError`), its endpoints
//!   exist (`EndpointsNotFound`) with a ready address for the port's name (`MissingEndpoints`),
//!   and its `/apis/GROUP/VERSION` answers 2xx or 3xx (`FailedDiscoveryCheck`); else `Passed`;
//! - `kube-system/extension-apiserver-authentication` holds the front-proxy CA.
//!
//! Upstream's controllers are event-driven with a resync; here a round runs every [`PERIOD`].

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::task::AbortHandle;
use vkube_auth::UserInfo;
use vkube_store::Store;

use super::{Aggregation, Registration};
use crate::router::{Api, RequestBody};

const PERIOD: Duration = Duration::from_secs(2);
const BASE: &str = "/apis/apiregistration.k8s.io/v1/apiservices";
const AUTOMANAGED: &str = "kube-aggregator.kubernetes.io/automanaged";
const READER: &str = "extension-apiserver-authentication-reader";

/// Upstream's priorities of the built-in group/versions (group minimum, version); a built-in
/// group/version not listed gets no APIService, as upstream skips it.
const PRIORITIES: &[(&str, &str, i64, i64)] = &[
    ("", "v1", 18000, 1),
    ("apiregistration.k8s.io", "v1", 18000, 15),
    ("apps", "v1", 17800, 15),
    ("events.k8s.io", "v1", 17750, 15),
    ("authentication.k8s.io", "v1", 17700, 15),
    ("authorization.k8s.io", "v1", 17600, 15),
    ("autoscaling", "v1", 17500, 15),
    ("autoscaling", "v2", 17500, 30),
    ("batch", "v1", 17400, 15),
    ("certificates.k8s.io", "v1", 17300, 15),
    ("networking.k8s.io", "v1", 17200, 15),
    ("policy", "v1", 17100, 15),
    ("rbac.authorization.k8s.io", "v1", 17000, 15),
    ("storage.k8s.io", "v1", 16800, 15),
    ("apiextensions.k8s.io", "v1", 16700, 15),
    ("admissionregistration.k8s.io", "v1", 16700, 15),
    ("scheduling.k8s.io", "v1", 16600, 15),
    ("coordination.k8s.io", "v1", 16500, 15),
    ("node.k8s.io", "v1", 16300, 15),
    ("discovery.k8s.io", "v1", 16200, 15),
    ("flowcontrol.apiserver.k8s.io", "v1", 16100, 21),
];

/// Who the availability check and discovery fetches are made as (upstream's).
pub fn aggregator_user() -> UserInfo {
    UserInfo {
        username: "system:kube-aggregator".into(),
        groups: vec!["system:masters".into()],
        ..Default::default()
    }
}

fn local(group: &str, version: &str, label: &str, priorities: (i64, i64)) -> Value {
    json!({
        "apiVersion": "apiregistration.k8s.io/v1",
        "kind": "APIService",
        "metadata": {"name": format!("{version}.{group}"), "labels": {AUTOMANAGED: label}},
        "spec": {"group": group, "version": version, "service": null,
                 "groupPriorityMinimum": priorities.0, "versionPriority": priorities.1},
    })
}

/// The local APIServices upstream creates: for the built-in group/versions vkube serves
/// (`onstart`), and for each group/version of an established CRD (`true`, with the CRD
/// registration controller's priorities 1000/100).
pub fn local_apiservices() -> Vec<Value> {
    let served = vkube_api::registry::RESOURCES;
    let mut locals: Vec<Value> = PRIORITIES
        .iter()
        .filter(|(g, v, _, _)| served.iter().any(|r| r.group == *g && r.version == *v))
        .map(|(group, version, gp, vp)| local(group, version, "onstart", (*gp, *vp)))
        .collect();
    for r in vkube_api::registry::custom::resources() {
        let crd = local(r.group, r.version, "true", (1000, 100));
        if !locals.contains(&crd) {
            locals.push(crd);
        }
    }
    locals
}

/// The (status, reason, message) of an APIService's `Available` condition.
pub type Availability = (&'static str, &'static str, String);

fn service_ready(
    svc: &Value,
    endpoints: Option<&Value>,
    slices: &[Value],
    backend: &super::view::Backend,
) -> Result<(), Availability> {
    let (ns, name) = (&backend.namespace, &backend.name);
    if svc["spec"]["type"].as_str().unwrap_or("ClusterIP") != "ClusterIP" {
        return Ok(());
    }
    let port = svc["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["port"].as_u64() == Some(u64::from(backend.port)));
    let Some(port) = port else {
        return Err((
            "False",
            "ServicePortError",
            format!(
                "service/{name} in {ns:?} is not listening on port {}",
                backend.port
            ),
        ));
    };
    let port_name = port["name"].as_str().unwrap_or_default();
    let ready = match endpoints {
        Some(ep) => ep["subsets"].as_array().into_iter().flatten().any(|s| {
            s["addresses"].as_array().is_some_and(|a| !a.is_empty())
                && s["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| p["name"].as_str().unwrap_or_default() == port_name)
        }),
        None if slices.is_empty() => {
            return Err((
                "False",
                "EndpointsNotFound",
                format!("cannot find endpoints for service/{name} in {ns:?}"),
            ));
        }
        None => slices.iter().any(|s| {
            s["endpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| e["conditions"]["ready"].as_bool().unwrap_or(true))
                && s["ports"].as_array().into_iter().flatten().any(|p| {
                    p["name"].as_str().unwrap_or_default() == port_name && p["port"].is_u64()
                })
        }),
    };
    if ready {
        Ok(())
    } else {
        Err((
            "False",
            "MissingEndpoints",
            format!(
                "endpoints for service/{name} in {ns:?} have no addresses with port name {port_name:?}"
            ),
        ))
    }
}

async fn read(store: &dyn Store, group: &str, plural: &str, ns: &str, name: &str) -> Option<Value> {
    let r = vkube_api::registry::find(group, "v1", plural)?;
    let kv = store.get(&r.key(ns, name), None).await.ok()??;
    serde_json::from_slice(&kv.value).ok()
}

async fn slices_of(store: &dyn Store, ns: &str, name: &str) -> Vec<Value> {
    let Some(r) = vkube_api::registry::find("discovery.k8s.io", "v1", "endpointslices") else {
        return Vec::new();
    };
    let Ok(page) = store
        .list(&r.key(ns, ""), vkube_store::ListOptions::default())
        .await
    else {
        return Vec::new();
    };
    page.items
        .iter()
        .filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
        .filter(|s| s["metadata"]["labels"]["kubernetes.io/service-name"] == name)
        .collect()
}

impl Aggregation {
    /// Upstream's remote availability check of one APIService with a Service.
    pub async fn availability(&self, store: &dyn Store, reg: &Registration) -> Availability {
        let Some(backend) = &reg.backend else {
            return (
                "True",
                "Local",
                "Local APIServices are always available".into(),
            );
        };
        let (ns, name) = (&backend.namespace, &backend.name);
        let Some(svc) = read(store, "", "services", ns, name).await else {
            return (
                "False",
                "ServiceNotFound",
                format!("service/{name} in {ns:?} is not present"),
            );
        };
        let endpoints = read(store, "", "endpoints", ns, name).await;
        let slices = slices_of(store, ns, name).await;
        if let Err(why) = service_ready(&svc, endpoints.as_ref(), &slices, backend) {
            return why;
        }
        let failed = |m: String| ("False", "FailedDiscoveryCheck", m);
        let connect = match crate::webhooks::resolve(store, ns, name, backend.port).await {
            Ok(c) => c,
            Err(err) => return failed(err),
        };
        let host = if connect.0.contains(':') {
            format!("[{}]:{}", connect.0, connect.1)
        } else {
            format!("{}:{}", connect.0, connect.1)
        };
        let url = format!("https://{host}/apis/{}/{}", reg.group, reg.version);
        let tls = match self.client(None, true) {
            Ok(tls) => tls,
            Err(err) => return failed(err),
        };
        let answer = super::proxy::get(
            &tls,
            (&connect.0, connect.1),
            &format!("{name}.{ns}.svc"),
            &format!("/apis/{}/{}", reg.group, reg.version),
            &aggregator_user(),
            Duration::from_secs(5),
        )
        .await;
        match answer {
            Ok((code, _)) if (200..300).contains(&code) => {
                ("True", "Passed", "all checks passed".into())
            }
            Ok((code, _)) => failed(format!(
                "failing or missing response from {url}: bad status from {url}: {code}"
            )),
            Err(err) => failed(format!(
                "failing or missing response from {url}: Get \"{url}\": {err}"
            )),
        }
    }
}

/// `obj` with its `Available` condition set; `None` when it already says so. The transition
/// time moves only when the status does.
pub fn with_condition(
    obj: &Value,
    (status, reason, message): &Availability,
    now: &str,
) -> Option<Value> {
    let conditions = obj["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let old = conditions.iter().find(|c| c["type"] == "Available");
    if let Some(old) = old
        && old["status"] == *status
        && old["reason"] == *reason
        && old["message"] == message.as_str()
    {
        return None;
    }
    let since = match old {
        Some(old) if old["status"] == *status => old["lastTransitionTime"].clone(),
        _ => json!(now),
    };
    let mut conditions: Vec<Value> = conditions
        .into_iter()
        .filter(|c| c["type"] != "Available")
        .collect();
    conditions.push(json!({
        "type": "Available", "status": status, "lastTransitionTime": since,
        "reason": reason, "message": message,
    }));
    let mut out = obj.clone();
    out["status"] = json!({"conditions": conditions});
    Some(out)
}

struct Client(Arc<Api>);

impl Client {
    async fn call(&self, method: Method, uri: &str, body: Option<&Value>) -> (u16, Value) {
        let user = UserInfo {
            username: "system:apiserver".into(),
            groups: vec!["system:authenticated".into(), "system:masters".into()],
            ..Default::default()
        };
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let Ok(req) = Request::builder()
            .method(method)
            .uri(uri)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json")
            .body(RequestBody::InProcess(http_body_util::Full::new(body)))
        else {
            return (400, Value::Null);
        };
        let resp = self.0.clone().handle(Some(user), req).await;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map(|b| b.to_bytes());
        let value = body
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        if status >= 400 && status != 404 && status != 409 {
            tracing::warn!(uri, status, body = %value, "aggregation upkeep");
        }
        (status, value)
    }

    async fn ensure_configmap(&self, agg: &Aggregation) {
        let uri = "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication";
        let data = agg.front_proxy.configmap_data(&self.0.ca_pem);
        let (code, current) = self.call(Method::GET, uri, None).await;
        if code == 404 {
            let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "extension-apiserver-authentication", "namespace": "kube-system"},
                "data": data});
            self.call(
                Method::POST,
                "/api/v1/namespaces/kube-system/configmaps",
                Some(&cm),
            )
            .await;
        } else if code == 200 && current["data"] != data {
            let mut cm = current;
            cm["data"] = data;
            self.call(Method::PUT, uri, Some(&cm)).await;
        }
    }

    /// Upstream's bootstrap Role that lets aggregated API servers read the ConfigMap.
    async fn ensure_reader_role(&self) {
        let base = "/apis/rbac.authorization.k8s.io/v1/namespaces/kube-system/roles";
        let (code, _) = self
            .call(Method::GET, &format!("{base}/{READER}"), None)
            .await;
        if code == 404 {
            let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": READER, "namespace": "kube-system",
                    "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
                    "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
                "rules": [{"apiGroups": [""], "resources": ["configmaps"],
                    "resourceNames": ["extension-apiserver-authentication"],
                    "verbs": ["get", "list", "watch"]}]});
            self.call(Method::POST, base, Some(&role)).await;
        }
    }

    async fn round(&self, agg: &Aggregation) {
        self.ensure_configmap(agg).await;
        self.ensure_reader_role().await;
        let present = agg.view.all();
        let wanted = local_apiservices();
        for local in &wanted {
            let name = local["metadata"]["name"].as_str().unwrap_or_default();
            if !present.iter().any(|r| r.name == name) {
                self.call(Method::POST, BASE, Some(local)).await;
            }
        }
        // A CRD's group/version that is no longer served loses its APIService, as upstream's
        // CRD registration controller removes it.
        for stale in present.iter().filter(|r| {
            r.backend.is_none()
                && r.automanaged.as_deref() == Some("true")
                && !wanted
                    .iter()
                    .any(|w| w["metadata"]["name"] == r.name.as_str())
        }) {
            self.call(Method::DELETE, &format!("{BASE}/{}", stale.name), None)
                .await;
        }
        let now = crate::identity::rfc3339(std::time::SystemTime::now());
        for reg in agg.view.all() {
            let verdict = agg.availability(self.0.store.as_ref(), &reg).await;
            // The view says it already (no read, no write).
            if reg
                .condition
                .as_ref()
                .is_some_and(|(status, reason, message)| {
                    (status.as_str(), reason.as_str(), message)
                        == (verdict.0, verdict.1, &verdict.2)
                })
            {
                continue;
            }
            let uri = format!("{BASE}/{}", reg.name);
            let (code, obj) = self.call(Method::GET, &uri, None).await;
            if code != 200 {
                continue;
            }
            if let Some(updated) = with_condition(&obj, &verdict, &now) {
                self.call(Method::PUT, &format!("{uri}/status"), Some(&updated))
                    .await;
            }
        }
    }
}

/// Runs the upkeep every [`PERIOD`], first at once; for the leader.
pub fn start(api: Arc<Api>, agg: Arc<Aggregation>) -> AbortHandle {
    let client = Client(api);
    tokio::spawn(async move {
        loop {
            client.round(&agg).await;
            tokio::time::sleep(PERIOD).await;
        }
    })
    .abort_handle()
}

#[cfg(test)]
mod tests {
    use super::super::view::Backend;
    use super::*;

    fn backend() -> Backend {
        Backend {
            namespace: "ns".into(),
            name: "api".into(),
            port: 443,
        }
    }

    #[test]
    fn service_checks_read_as_upstream() {
        let svc = json!({"spec": {"type": "ClusterIP", "ports": [{"name": "https", "port": 443}]}});
        let wrong_port = json!({"spec": {"ports": [{"port": 8443}]}});
        let why = service_ready(&wrong_port, None, &[], &backend()).unwrap_err();
        assert_eq!(why.1, "ServicePortError");
        assert_eq!(why.2, "service/api in \"ns\" is not listening on port 443");
        let why = service_ready(&svc, None, &[], &backend()).unwrap_err();
        assert_eq!(
            (why.1, why.2.as_str()),
            (
                "EndpointsNotFound",
                "cannot find endpoints for service/api in \"ns\""
            )
        );
        let empty = json!({"subsets": []});
        let why = service_ready(&svc, Some(&empty), &[], &backend()).unwrap_err();
        assert_eq!(why.1, "MissingEndpoints");
        assert_eq!(
            why.2,
            "endpoints for service/api in \"ns\" have no addresses with port name \"https\""
        );
        let ep = json!({"subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "https", "port": 9443}]}]});
        assert!(service_ready(&svc, Some(&ep), &[], &backend()).is_ok());
        let slice = json!({"endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
                           "ports": [{"name": "https", "port": 9443}]});
        assert!(service_ready(&svc, None, &[slice], &backend()).is_ok());
        let external = json!({"spec": {"type": "ExternalName"}});
        assert!(service_ready(&external, None, &[], &backend()).is_ok());
    }

    #[test]
    fn the_condition_moves_its_time_only_when_its_status_does() {
        let ok = ("True", "Passed", "all checks passed".to_string());
        let first = with_condition(&json!({"metadata": {}}), &ok, "T1").unwrap();
        assert_eq!(first["status"]["conditions"][0]["lastTransitionTime"], "T1");
        assert!(with_condition(&first, &ok, "T2").is_none());
        let down = ("False", "FailedDiscoveryCheck", "x".to_string());
        let second = with_condition(&first, &down, "T3").unwrap();
        assert_eq!(
            second["status"]["conditions"][0]["lastTransitionTime"],
            "T3"
        );
        let third =
            with_condition(&second, &("False", "MissingEndpoints", "y".into()), "T4").unwrap();
        assert_eq!(third["status"]["conditions"][0]["lastTransitionTime"], "T3");
    }

    #[test]
    fn local_apiservices_cover_the_served_builtin_groups() {
        let locals = local_apiservices();
        let names: Vec<&str> = locals
            .iter()
            .map(|a| a["metadata"]["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"v1.") && names.contains(&"v1.apps"));
        let core = &locals[0];
        assert_eq!(core["spec"]["group"], "");
        assert_eq!(core["spec"]["groupPriorityMinimum"], 18000);
        assert!(core["spec"]["service"].is_null());
    }
}
