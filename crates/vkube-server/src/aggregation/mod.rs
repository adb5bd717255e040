//! API aggregation (kube-aggregator's job): APIServices with a Service are proxied to
//! (proxy.rs), appear in discovery (discovery.rs), and have their `Available` condition kept by
//! the leader (available.rs), which also keeps the local APIServices of the built-in groups and
//! `kube-system/extension-apiserver-authentication` with the front-proxy CA (front_proxy.rs).

pub mod available;
pub mod discovery;
pub mod front_proxy;
pub mod proxy;
pub mod view;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use http::{Request, Response};
use vkube_auth::UserInfo;
use vkube_store::Store;

use crate::response::Body;
use crate::router::RequestBody;
pub use front_proxy::FrontProxy;
pub use view::{ApiServiceView, Registration};

/// The aggregation state of one replica: the watch-fed APIService view, the shared front-proxy
/// identity, and the TLS clients built from them.
pub struct Aggregation {
    pub view: Arc<ApiServiceView>,
    pub front_proxy: FrontProxy,
    /// By (caBundle, insecureSkipTLSVerify); `None` caBundle is the availability check's
    /// unverified client.
    clients: Mutex<HashMap<(Option<String>, bool), tokio_rustls::TlsConnector>>,
    discovery: discovery::Cache,
}

impl Aggregation {
    pub fn new(view: Arc<ApiServiceView>, front_proxy: FrontProxy) -> Aggregation {
        Aggregation {
            view,
            front_proxy,
            clients: Mutex::default(),
            discovery: discovery::Cache::default(),
        }
    }

    fn client(
        &self,
        ca_bundle: Option<&str>,
        insecure: bool,
    ) -> Result<tokio_rustls::TlsConnector, String> {
        let key = (ca_bundle.map(str::to_string), insecure);
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let client = proxy::tls_client(&self.front_proxy, ca_bundle, insecure)?;
        clients.insert(key, client.clone());
        Ok(client)
    }

    /// The APIService with a backend for `/apis/GROUP/VERSION/...`, if `path` is one. A group
    /// vkube serves itself is looked up only after the view caught up, so a new APIService is
    /// proxied to by every replica on the next request.
    pub async fn route(&self, path: &str) -> Option<Arc<Registration>> {
        let mut parts = path.trim_start_matches('/').split('/');
        let (Some("apis"), Some(group), Some(version)) = (parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        if version.is_empty() {
            return None;
        }
        if let Some(r) = self.view.remote(group, version) {
            return Some(r);
        }
        if vkube_api::registry::in_group_version(group, version).is_empty() {
            self.view.catch_up().await;
            return self.view.remote(group, version);
        }
        None
    }

    /// Proxies `req` to `reg`'s backend, as kube-aggregator's proxy handler.
    pub async fn forward(
        &self,
        store: &dyn Store,
        reg: &Registration,
        user: &UserInfo,
        req: Request<RequestBody>,
    ) -> Response<Body> {
        let Some(backend) = &reg.backend else {
            return proxy::error(404, "");
        };
        if !reg.available {
            return proxy::error(503, "service unavailable");
        }
        if req.headers().contains_key(http::header::UPGRADE) {
            return proxy::error(
                501,
                "connection upgrades are not proxied to aggregated API servers by vkube",
            );
        }
        let tls = match self.client(reg.ca_bundle.as_deref(), reg.insecure) {
            Ok(tls) => tls,
            Err(err) => return proxy::error(500, &err),
        };
        let Ok(connect) =
            crate::webhooks::resolve(store, &backend.namespace, &backend.name, backend.port).await
        else {
            return proxy::error(503, "service unavailable");
        };
        let server_name = format!("{}.{}.svc", backend.name, backend.namespace);
        let stream = match crate::webhooks::dial(&tls, (&connect.0, connect.1), &server_name).await
        {
            Ok(s) => s,
            Err(err) => return proxy::error(503, &err),
        };
        let req = proxy::outgoing(req, &format!("{server_name}:{}", backend.port), user);
        match proxy::send(stream, req).await {
            Ok(resp) => proxy::incoming(resp),
            Err(err) => proxy::error(503, &err),
        }
    }
}
