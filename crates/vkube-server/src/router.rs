//! The filter chain and dispatch: audit ID → panic recovery → request info → authentication →
//! audit → impersonation → flow control (or in-flight limits) → authorization → body limit → handler (the order
//! is kube-apiserver's; see [`crate::filters`]).
//! Non-resource paths (health, version, discovery) are answered here; resources go to `rest`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{Method, Request, Response, header};
use http_body_util::BodyExt;
use hyper::body::{Bytes, Incoming};
use serde_json::json;
use vkube_api::{Status, discovery, openapi};
use vkube_store::Store;

use crate::hub::Hub;
use crate::request::{RequestInfo, query};
use crate::response::{self, Body};

/// Request bodies above this get 413, as kube-apiserver limits them.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

pub struct Api {
    pub store: Arc<dyn Store>,
    pub hub: Arc<Hub>,
    pub ca_pem: String,
    /// The cluster CA with its key: what `kubectl certificate approve` gets signed with.
    pub ca: crate::identity::Ca,
    /// False once shutdown began: /readyz then fails, so load balancers drain this replica.
    pub serving: AtomicBool,
    /// The token authenticators (service accounts, OIDC issuers) and the anonymous setting.
    pub auth: Arc<vkube_auth::chain::Chain>,
    /// RBAC over the watch-fed view of roles and bindings.
    pub authorizer: Arc<crate::authz::Authorizer>,
    /// The custom resources of the established CRDs, fed by the same watch.
    pub crds: Arc<crate::crds::CrdView>,
    /// Leader election (set once started): leader-only work and `vkube_leader`.
    pub leader: std::sync::OnceLock<Arc<crate::leader::Elector>>,
    /// Why this replica's configuration disagrees with the others' (then it is not ready).
    pub divergent: std::sync::RwLock<Option<String>>,
    /// What `/metrics` reports.
    pub metrics: crate::metrics::Metrics,
    /// The filters' state (in-flight counts, panic counter): see [`crate::filters`].
    pub filters: crate::filters::Filters,
    /// Where this replica serves: the `kubernetes` Service's endpoint.
    pub listen: std::net::SocketAddr,
    /// Where pods' kubelet subresources go (the host cluster), if anywhere.
    pub host_proxy: Option<crate::host_proxy::HostProxyHandle>,
    /// Where Services get their addresses: the host, if pods run on one.
    pub host_services: Option<crate::host_services::HostServicesHandle>,
    /// `default/kubernetes` as host pods reach it, if they run on a host.
    pub kubernetes_service: Option<crate::host_services::KubernetesService>,
    /// The audit policy and log (`--audit-policy-file`, `--audit-log-path`), if auditing.
    pub audit: Option<Arc<crate::audit::Auditor>>,
}

/// A request's body: from a connection, or from an in-process client ([`InProcess`]).
pub enum RequestBody {
    Wire(Incoming),
    InProcess(http_body_util::Full<Bytes>),
}

impl hyper::body::Body for RequestBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            RequestBody::Wire(b) => std::pin::Pin::new(b).poll_frame(cx).map_err(Into::into),
            RequestBody::InProcess(b) => std::pin::Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Wire(b) => b.is_end_stream(),
            RequestBody::InProcess(b) => b.is_end_stream(),
        }
    }
}

/// The server's request path for clients in this process (the controllers): a request is served
/// exactly as one that arrived on a connection whose client certificate names `user`, through
/// RBAC, the in-flight limits, admission, validation, defaulting and managedFields.
#[derive(Clone)]
pub struct InProcess(pub(crate) Arc<Api>);

impl InProcess {
    pub async fn call(&self, user: vkube_auth::UserInfo, req: Request<Bytes>) -> Response<Body> {
        let req = req.map(|b| RequestBody::InProcess(http_body_util::Full::new(b)));
        self.0.clone().handle(Some(user), req).await
    }

    /// The cluster CA (the CertificateSigningRequest signer's).
    pub fn cluster_ca(&self) -> crate::identity::Ca {
        self.0.ca.clone()
    }
}

impl Api {
    /// Serves one request and records it in the request metrics.
    pub async fn handle(
        self: Arc<Self>,
        cert_user: Option<vkube_auth::UserInfo>,
        req: Request<RequestBody>,
    ) -> Response<Body> {
        let started = std::time::Instant::now();
        let received = std::time::SystemTime::now();
        let method = req.method().clone();
        let q = query(req.uri().query());
        let info = RequestInfo::parse(&method, req.uri().path(), &q);
        let dry_run = q.get("dryRun").is_some_and(|v| v == "All");
        let api = self.clone();
        let path = req.uri().path().to_string();
        // Outside panic recovery, as upstream's WithAuditInit: every answer has an Audit-Id.
        let audit = crate::audit::Tracker::new(self.audit.as_ref(), &req, &info, received);
        // Flow control's classification, for the answer's headers; holds the seat until then.
        let mut flow = None;
        let resp = api
            .filters
            .panics
            .recover(
                &method,
                &path,
                audit.guard(self.serve(cert_user, req, &audit, &mut flow)),
            )
            .await;
        let resp = match &flow {
            Some(ticket) => crate::flowcontrol::Ticket::decorate(ticket, resp),
            None => resp,
        };
        let resp = audit.finish(resp).await;
        api.metrics.observe(
            &info,
            &method,
            dry_run,
            resp.status().as_u16(),
            started.elapsed(),
        );
        resp
    }

    async fn serve(
        self: Arc<Self>,
        cert_user: Option<vkube_auth::UserInfo>,
        req: Request<RequestBody>,
        audit: &crate::audit::Tracker,
        flow: &mut Option<crate::flowcontrol::Ticket>,
    ) -> Response<Body> {
        let path = req.uri().path().to_string();
        let user = match crate::authn::authenticate(&self, cert_user, req.headers(), &path).await {
            Ok(u) => u,
            Err(status) => {
                audit.unauthenticated();
                return response::status(&status);
            }
        };
        audit.begin(&user).await;
        let user = match crate::authn::impersonate(&self, user, req.headers()).await {
            Ok(u) if req.headers().contains_key("impersonate-user") => {
                audit.impersonated(&u);
                u
            }
            Ok(u) => u,
            Err(status) => return response::status(&status),
        };
        let mut q = query(req.uri().query());
        // Writes without a fieldManager are recorded under the client's name, as upstream
        // derives it from the User-Agent (`kubectl/v1.33.0 (…)` → `kubectl`).
        if let Some(agent) = req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
        {
            let name: String = agent
                .split('/')
                .next()
                .unwrap_or_default()
                .chars()
                .take(128)
                .collect();
            q.insert(crate::apply::AGENT_MANAGER.into(), name);
        }
        let info = RequestInfo::parse(req.method(), &path, &q);
        let _slot = match self.filters.admit(&info, &user, &path, flow).await {
            Ok(slot) => slot,
            Err(too_many) => return too_many,
        };
        match crate::authz::authorize(&self.authorizer, &user, &info, req.method(), &path).await {
            Ok(reason) => audit.authorized(true, &reason),
            Err(status) => {
                // RBAC gives no reason for a deny (upstream's reason is its authorizers'
                // joined reasons, empty unless one failed).
                audit.authorized(false, "");
                return response::status(&status);
            }
        }
        // An aggregated group/version goes to its APIService's backend, after vkube's own
        // authentication and authorization, as kube-aggregator proxies.
        if let Some(aggregation) = self.hub.aggregation.get()
            && let Some(reg) = aggregation.route(&path).await
        {
            return aggregation
                .forward(self.store.as_ref(), &reg, &user, req)
                .await;
        }
        let accept = req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if !info.is_resource {
            return self.non_resource(req.method(), &path, &q, &accept).await;
        }
        let kubelet_subresource = info.group.is_empty()
            && info.version == "v1"
            && crate::host_proxy::forwarded(&info.resource, &info.subresource);
        if kubelet_subresource {
            // Admission first, as upstream's connect handler: a webhook may refuse an exec.
            let raw_query = req.uri().query().unwrap_or_default().to_string();
            if let Err(status) =
                crate::webhooks::connect::admit(&self, &user, &info, &q, &raw_query).await
            {
                return response::status(&status);
            }
        }
        if let Some(proxy) = &self.host_proxy
            && kubelet_subresource
        {
            // The pod (or Service) must exist here; the host's answer about one it lacks would
            // name the host's.
            let Some(resource) = vkube_api::registry::find("", "v1", &info.resource) else {
                return response::status(&Status::path_not_found());
            };
            let name = crate::host_proxy::object_name(&info.name);
            return match self
                .store
                .get(&resource.key(&info.namespace, name), None)
                .await
            {
                Ok(Some(_)) => {
                    let (parts, body) = req.into_parts();
                    let RequestBody::Wire(body) = body else {
                        return response::status(&Status::bad_request(
                            "the kubelet's subresources need a connection",
                        ));
                    };
                    let req = Request::from_parts(parts, body);
                    proxy
                        .0
                        .forward(&info.namespace, &info.name, &info.subresource, req)
                        .await
                }
                Ok(None) => response::status(&Status::not_found(&info.resource, "", name)),
                Err(err) => response::status(&Status::internal(err.to_string())),
            };
        }
        if info.resource.is_empty() {
            return self.discovery_response(&path, &accept).await;
        }
        if !acceptable(&accept) {
            return response::status(&Status::not_acceptable());
        }
        let (parts, body) = req.into_parts();
        let body = match http_body_util::Limited::new(body, MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e)
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                return response::status(&Status::too_large(MAX_BODY));
            }
            Err(e) => {
                return response::status(&Status::bad_request(format!("reading the body: {e}")));
            }
        };
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        // An unknown path is 404 before its body is read as anything.
        if vkube_api::registry::find(&info.group, &info.version, &info.resource).is_none()
            && !(self.crds.catch_up().await
                && vkube_api::registry::find(&info.group, &info.version, &info.resource).is_some())
        {
            return response::status(&Status::path_not_found());
        }
        // Objects are created on their collection; a named path has no POST (subresources such
        // as binding, eviction and token do).
        if parts.method == Method::POST && !info.name.is_empty() && info.subresource.is_empty() {
            return response::status(&Status::method_not_allowed());
        }
        let (content_type, body) = match decode_body(&parts.method, content_type, body) {
            Ok(decoded) => decoded,
            Err(status) => return response::status(&status),
        };
        audit.request_body(&parts.method, &body);
        crate::rest::handle(&self, &user, &info, &q, &accept, &content_type, body).await
    }

    async fn non_resource(
        &self,
        method: &Method,
        path: &str,
        q: &std::collections::HashMap<String, String>,
        accept: &str,
    ) -> Response<Body> {
        if method != Method::GET && method != Method::HEAD {
            return response::status(&Status::method_not_allowed());
        }
        match path.trim_end_matches('/') {
            "/version" => response::json(200, &version()),
            "/healthz" | "/livez" | "/readyz" => {
                let checks = self.checks(path.trim_start_matches('/')).await;
                let ok = checks.iter().all(|(_, ok)| *ok);
                let code = if ok { 200 } else { 500 };
                if q.contains_key("verbose") {
                    let mut body: String = checks
                        .iter()
                        .map(|(n, ok)| {
                            format!(
                                "[{}]{n} {}\n",
                                if *ok { "+" } else { "-" },
                                if *ok { "ok" } else { "failed" }
                            )
                        })
                        .collect();
                    if let Some(why) = self.divergent.read().expect("lock").clone() {
                        body.push_str(&format!("config-agreement: {why}\n"));
                    }
                    if path.starts_with("/readyz") {
                        // Issuers do not gate readiness (an unreachable IdP must not take the API
                        // down), but say why their tokens fail.
                        for (issuer, health) in self.auth.issuer_health() {
                            if let Err(why) = health {
                                body.push_str(&format!("[+]authenticator {issuer} not initialized (its tokens fail until it is): {why}\n"));
                            }
                        }
                    }
                    body.push_str(&format!(
                        "{} check {}\n",
                        path.trim_start_matches('/'),
                        if ok { "passed" } else { "failed" }
                    ));
                    response::text(code, body)
                } else if ok {
                    response::text(200, "ok")
                } else {
                    let failed: Vec<_> = checks
                        .iter()
                        .filter(|(_, ok)| !ok)
                        .map(|(n, _)| format!("[-]{n} failed: reason withheld\n"))
                        .collect();
                    response::text(
                        code,
                        format!(
                            "{}{} check failed",
                            failed.concat(),
                            path.trim_start_matches('/')
                        ),
                    )
                }
            }
            p if p.starts_with("/healthz/")
                || p.starts_with("/livez/")
                || p.starts_with("/readyz/") =>
            {
                let (endpoint, check) = p
                    .trim_start_matches('/')
                    .split_once('/')
                    .unwrap_or_default();
                match self
                    .checks(endpoint)
                    .await
                    .into_iter()
                    .find(|(n, _)| *n == check)
                {
                    Some((_, true)) => response::text(200, "ok"),
                    Some((_, false)) => {
                        response::text(500, format!("internal server error: {check} failed"))
                    }
                    None => response::text(404, "404 page not found"),
                }
            }
            "/openapi/v3" => {
                let mut index = openapi::v3_index();
                if let Some(aggregation) = self.hub.aggregation.get() {
                    aggregation.extend_openapi_index(&mut index).await;
                }
                response::json(200, &index)
            }
            "/vkube/replicas" => match crate::replicas::list(self).await {
                Ok(members) => response::json(200, &serde_json::json!({"replicas": members})),
                Err(err) => response::status(&Status::service_unavailable(err.to_string())),
            },
            "/metrics" => {
                self.metrics
                    .set_leader(self.leader.get().is_some_and(|l| l.is_leader()));
                // Behind this cluster's last change at or below the store's revision, as the
                // hub's watch places it: another cluster's writes on a shared etcd are no lag.
                match self.hub.sync(Duration::from_millis(500)).await {
                    Some(target) => self.metrics.set_lag(target - self.authorizer.revision()),
                    None => {
                        if let Ok(now) = self.store.current_revision().await {
                            self.metrics.set_lag(now - self.authorizer.revision());
                        }
                    }
                }
                let mut resp = response::text(200, self.metrics.text());
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                resp
            }
            "/.well-known/openid-configuration" => {
                response::json(200, &self.auth.service_accounts.discovery_document())
            }
            "/openid/v1/jwks" => {
                response::json(200, &self.auth.service_accounts.key.jwks_document())
            }
            // JSON unless protobuf is asked for, as upstream negotiates.
            "/openapi/v2" if !accept.contains("protobuf") => {
                response::json(200, &vkube_api::openapi_v2::document_json())
            }
            "/openapi/v2" => {
                let mut resp = response::bytes(vkube_api::openapi_v2::document());
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/octet-stream"),
                );
                resp
            }
            p if p.starts_with("/openapi/v3/") => {
                let gv = &p["/openapi/v3/".len()..];
                if let Some(doc) = openapi::v3_group_version(gv) {
                    return response::json(200, &doc);
                }
                // An aggregated group/version's document is its backend's (aggregation/).
                let aggregated = match self.hub.aggregation.get() {
                    Some(aggregation) => aggregation.openapi_v3(self.store.as_ref(), gv).await,
                    None => None,
                };
                match aggregated {
                    Some(doc) => response::json(200, &doc),
                    None => response::status(&Status::path_not_found()),
                }
            }
            _ => response::status(&Status::path_not_found()),
        }
    }

    /// Named checks, upstream's style: `ping`, `etcd` (the store), and for readiness the watch
    /// cache having caught up with the store and the server not shutting down.
    async fn checks(&self, endpoint: &str) -> Vec<(&'static str, bool)> {
        let mut checks = vec![("ping", true)];
        let store =
            tokio::time::timeout(Duration::from_secs(2), self.store.current_revision()).await;
        let revision = store.ok().and_then(Result::ok);
        checks.push(("etcd", revision.is_some()));
        if endpoint == "readyz" {
            // Caught up with the store's revision as the hub's watch reports it: a write of
            // another cluster on a shared etcd raises the revision but sends the hub nothing.
            let synced =
                revision.is_some() && self.hub.sync(Duration::from_secs(2)).await.is_some();
            checks.push(("informer-sync", synced));
            checks.push(("shutdown", self.serving.load(Ordering::Relaxed)));
            checks.push((
                "config-agreement",
                self.divergent.read().expect("lock").is_none(),
            ));
        }
        checks
    }
}

/// Turns a protobuf or YAML body of a create or update into JSON, the one format the handlers
/// read. Patches stay JSON (or apply YAML); other media types get 415.
fn decode_body(
    method: &Method,
    content_type: String,
    body: Bytes,
) -> Result<(String, Bytes), Status> {
    let media = content_type.split(';').next().unwrap_or("").trim();
    if body.is_empty() || json_body(media) {
        return Ok((content_type, body));
    }
    if *method == Method::PATCH {
        return Err(Status::unsupported_media_type(&content_type));
    }
    let value = match media {
        vkube_api::protobuf::MEDIA_TYPE => {
            vkube_api::protobuf::decode_body(&body).map_err(|e| {
                Status::bad_request(format!("the body of the request could not be decoded: {e}"))
            })?
        }
        "application/yaml" => std::str::from_utf8(&body)
            .map_err(|e| e.to_string())
            .and_then(crate::yaml::to_json)
            .map_err(|e| Status::bad_request(format!("error converting YAML to JSON: {e}")))?,
        _ => return Err(Status::unsupported_media_type(&content_type)),
    };
    let json = serde_json::to_vec(&value).map_err(|e| Status::internal(e.to_string()))?;
    Ok(("application/json".to_string(), Bytes::from(json)))
}

/// Whether a request body is JSON (or a JSON patch).
fn json_body(content_type: &str) -> bool {
    let media = content_type.split(';').next().unwrap_or("").trim();
    media.is_empty()
        || media == "application/json"
        || media.ends_with("patch+json")
        || media == "application/apply-patch+yaml"
}

/// Whether the client accepts JSON (protobuf-only clients get 406).
fn acceptable(accept: &str) -> bool {
    accept.is_empty()
        || accept.split(',').any(|a| {
            let media = a.split(';').next().unwrap_or("").trim();
            matches!(
                media,
                "application/json" | "*/*" | "application/*" | "application/json-patch+json"
            )
        })
}

pub fn version() -> serde_json::Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": concat!("v1.33.0-vkube.", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if std::env::consts::ARCH == "x86_64" { "amd64" } else { std::env::consts::ARCH }),
    })
}

/// The aggregated-discovery version an Accept header asks for, if any.
fn aggregated_version(accept: &str) -> Option<&'static str> {
    accept.split(',').find_map(|part| {
        let params: Vec<&str> = part.split(';').map(str::trim).collect();
        let has = |p: &str| params.contains(&p);
        if !(has("as=APIGroupDiscoveryList") && has("g=apidiscovery.k8s.io")) {
            return None;
        }
        ["v2", "v2beta1"]
            .into_iter()
            .find(|v| has(&format!("v={v}")))
    })
}

impl Api {
    /// `/api`, `/apis`, `/apis/G`, `/api/v1`, `/apis/G/V`, with aggregated discovery when asked
    /// for; the aggregated APIServices' groups join `/apis` (aggregation/).
    async fn discovery_response(&self, path: &str, accept: &str) -> Response<Body> {
        let aggregation = self.hub.aggregation.get();
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        if let (["apis"], Some(version), Some(aggregation)) =
            (parts.as_slice(), aggregated_version(accept), aggregation)
        {
            let mut resp = discovery_response(path, accept);
            if let Ok(mut doc) = serde_json::from_slice::<serde_json::Value>(
                &resp
                    .body_mut()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default(),
            ) {
                aggregation
                    .extend_aggregated(self.store.as_ref(), &mut doc)
                    .await;
                let content_type = if version == "v2" {
                    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
                } else {
                    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
                };
                return response::json_with(200, &doc, content_type);
            }
        }
        if let Some(aggregation) = aggregation {
            match parts.as_slice() {
                ["apis"] => {
                    aggregation.view.catch_up().await;
                    let mut doc = discovery::api_group_list();
                    crate::aggregation::discovery::extend_group_list(
                        &mut doc,
                        &aggregation.view.all(),
                    );
                    return response::json(200, &doc);
                }
                ["apis", g] if discovery::api_group(g).is_none() => {
                    aggregation.view.catch_up().await;
                    if let Some(doc) =
                        crate::aggregation::discovery::api_group(g, &aggregation.view.all())
                    {
                        return response::json(200, &doc);
                    }
                }
                _ => {}
            }
        }
        discovery_response(path, accept)
    }
}

/// `/api`, `/apis`, `/apis/G`, `/api/v1`, `/apis/G/V`, with aggregated discovery when asked for.
fn discovery_response(path: &str, accept: &str) -> Response<Body> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    if let (["api"] | ["apis"], Some(version)) = (parts.as_slice(), aggregated_version(accept)) {
        let doc = discovery::aggregated(parts[0] == "api", version);
        let content_type = if version == "v2" {
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
        } else {
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
        };
        return response::json_with(200, &doc, content_type);
    }
    let doc = match parts.as_slice() {
        ["api"] => Some(discovery::api_versions()),
        ["apis"] => Some(discovery::api_group_list()),
        ["api", v] => discovery::resource_list("", v),
        ["apis", g] => discovery::api_group(g),
        ["apis", g, v] => discovery::resource_list(g, v),
        _ => None,
    };
    match doc {
        Some(doc) => response::json(200, &doc),
        None => response::status(&Status::path_not_found()),
    }
}
