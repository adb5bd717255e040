//! The kubelet's subresources of a pod (`log`, `exec`, `attach`, `portforward`) go to the host
//! cluster, where the pod runs, after this server's own authentication and RBAC allowed them: a
//! tenant without `pods/exec` is refused here with upstream's message and never reaches the
//! host. The server only knows that some [`HostProxy`] answers them; the binary gives it the one
//! that speaks to the host with the syncer's credentials, so the server and the syncer stay
//! independent of each other.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::response::Body;

/// The subresources that a kubelet serves.
pub const KUBELET_SUBRESOURCES: &[&str] = &["log", "exec", "attach", "portforward"];

/// Whether `resource`/`subresource` goes to the host: a pod's kubelet subresources, and the
/// `proxy` of a pod or a Service (upstream's apiserver connects to the pod or the Service's
/// endpoint itself; here the host's API does, where the pods run).
pub fn forwarded(resource: &str, subresource: &str) -> bool {
    match resource {
        "pods" => KUBELET_SUBRESOURCES.contains(&subresource) || subresource == "proxy",
        "services" => subresource == "proxy",
        _ => false,
    }
}

/// The object a proxy name designates: `NAME`, `NAME:PORT` or `SCHEME:NAME:PORT` (upstream's
/// `net.SplitSchemeNamePort`).
pub fn object_name(name_spec: &str) -> &str {
    let parts: Vec<&str> = name_spec.split(':').collect();
    match parts.as_slice() {
        [_scheme, name, _port] => name,
        [name, ..] => name,
        [] => name_spec,
    }
}

/// Answers a kubelet subresource of the virtual pod `namespace`/`name`, or the proxy of a pod or
/// Service (the request's path says which, and the port); the request is the client's own
/// (method, path, query, body, upgrade headers and the connection's upgrade).
pub trait HostProxy: Send + Sync {
    fn forward(
        &self,
        namespace: &str,
        name: &str,
        subresource: &str,
        req: Request<Incoming>,
    ) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>>;
}

/// The server's handle on a [`HostProxy`] (a newtype, so `Config` stays `Debug`).
#[derive(Clone)]
pub struct HostProxyHandle(pub Arc<dyn HostProxy>);

impl std::fmt::Debug for HostProxyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HostProxy")
    }
}
