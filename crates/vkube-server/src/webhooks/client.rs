//! Calling a webhook: a `url` is called as written; a `service` is resolved to a ready endpoint
//! of that Service in the virtual cluster (its EndpointSlices, else its Endpoints, else its
//! clusterIP), as kube-apiserver with `--enable-aggregator-routing` does, and verified as
//! `<service>.<namespace>.svc`. One HTTP/1.1 POST per call over rustls. Failures read as Go's
//! `net/http` client words them (`Post "URL": dial tcp …: connect: connection refused`), since
//! upstream's messages embed them.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Full, Limited};
use rustls::pki_types::ServerName;
use serde_json::Value;
use vkube_store::Store;

use super::hook::{Endpoint, Hook};

/// The most of a webhook's answer that is read (upstream's client reads up to 3 MiB plus the
/// rest of the object's limit; the review holds at most the object and a patch).
const MAX_RESPONSE: usize = 6 * 1024 * 1024;

/// Where one call goes.
pub struct Target {
    /// The URL as upstream's messages show it (with client-go's `?timeout=` parameter).
    pub url: String,
    /// The host and port to connect to.
    connect: (String, u16),
    /// The name the certificate must carry.
    server_name: String,
    host_header: String,
    path: String,
}

#[cfg(test)]
impl Target {
    pub fn connect_to(&self) -> (String, u16) {
        self.connect.clone()
    }
}

/// Go's `time.Duration` text for whole seconds (`10s`, `1m0s`).
fn go_seconds(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// Where `hook` is reached; an error is the reason the call could not be made.
pub async fn target(store: &dyn Store, hook: &Hook) -> Result<Target, String> {
    target_at(store, &hook.endpoint, hook.timeout).await
}

/// Where a webhook at `endpoint` called with `timeout` is reached (admission webhooks, and CRD
/// conversion webhooks: conversion/).
pub async fn target_at(
    store: &dyn Store,
    endpoint: &Result<Endpoint, String>,
    timeout: Duration,
) -> Result<Target, String> {
    let timeout = go_seconds(timeout);
    match endpoint.as_ref().map_err(Clone::clone)? {
        Endpoint::Url(url) => {
            let parsed = url::Url::parse(url).map_err(|e| format!("parse {url:?}: {e}"))?;
            if parsed.scheme() != "https" {
                return Err(format!("unsupported protocol scheme {:?}", parsed.scheme()));
            }
            let host = parsed.host_str().unwrap_or_default().to_string();
            let port = parsed.port_or_known_default().unwrap_or(443);
            let mut shown = parsed.clone();
            shown
                .query_pairs_mut()
                .append_pair("timeout", &timeout)
                .finish();
            let path = match shown.query() {
                Some(q) => format!("{}?{q}", shown.path()),
                None => shown.path().to_string(),
            };
            let bare = host.trim_matches(['[', ']']).to_string();
            Ok(Target {
                url: shown.to_string(),
                connect: (bare.clone(), port),
                server_name: bare,
                host_header: match parsed.port() {
                    Some(p) => format!("{host}:{p}"),
                    None => host,
                },
                path,
            })
        }
        Endpoint::Service {
            namespace,
            name,
            path,
            port,
        } => {
            let host = format!("{name}.{namespace}.svc");
            let path = if path.starts_with('/') {
                path.clone()
            } else {
                format!("/{path}")
            };
            let path = format!("{path}?timeout={timeout}");
            let connect = resolve(store, namespace, name, *port).await?;
            Ok(Target {
                url: format!("https://{host}:{port}{path}"),
                connect,
                server_name: host.clone(),
                host_header: format!("{host}:{port}"),
                path,
            })
        }
    }
}

async fn get(store: &dyn Store, resource: (&str, &str), ns: &str, name: &str) -> Option<Value> {
    let r = vkube_api::registry::find(resource.0, "v1", resource.1)?;
    let kv = store.get(&r.key(ns, name), None).await.ok()??;
    serde_json::from_slice(&kv.value).ok()
}

/// A ready endpoint of Service `ns/name` for its port `port`: upstream's endpoint resolver.
pub(crate) async fn resolve(
    store: &dyn Store,
    ns: &str,
    name: &str,
    port: u16,
) -> Result<(String, u16), String> {
    let Some(svc) = get(store, ("", "services"), ns, name).await else {
        return Err(format!("service \"{name}\" not found"));
    };
    let svc_port = svc["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["port"].as_u64() == Some(u64::from(port)))
        .cloned()
        .ok_or_else(|| format!("no service port {port} found for service \"{name}\""))?;
    let port_name = svc_port["name"].as_str().unwrap_or_default();
    if svc["spec"]["type"] == "ExternalName" {
        let host = svc["spec"]["externalName"].as_str().unwrap_or_default();
        return Ok((host.to_string(), port));
    }
    if let Some(found) = from_slices(store, ns, name, port_name).await {
        return Ok(found);
    }
    if let Some(found) = from_endpoints(store, ns, name, port_name).await {
        return Ok(found);
    }
    match svc["spec"]["clusterIP"].as_str() {
        Some(ip) if !ip.is_empty() && ip != "None" => Ok((ip.to_string(), port)),
        _ => Err(format!("no endpoints available for service \"{name}\"")),
    }
}

/// The first ready address of the Service's EndpointSlices, with the port named as the
/// Service's port.
async fn from_slices(
    store: &dyn Store,
    ns: &str,
    name: &str,
    port_name: &str,
) -> Option<(String, u16)> {
    let r = vkube_api::registry::find("discovery.k8s.io", "v1", "endpointslices")?;
    let page = store
        .list(&r.key(ns, ""), vkube_store::ListOptions::default())
        .await
        .ok()?;
    page.items.iter().find_map(|kv| {
        let slice: Value = serde_json::from_slice(&kv.value).ok()?;
        if slice["metadata"]["labels"]["kubernetes.io/service-name"] != name {
            return None;
        }
        let port = slice["ports"]
            .as_array()?
            .iter()
            .find(|p| p["name"].as_str().unwrap_or_default() == port_name)?["port"]
            .as_u64()?;
        let address = slice["endpoints"].as_array()?.iter().find_map(|e| {
            let ready = e["conditions"]["ready"].as_bool().unwrap_or(true);
            ready.then(|| e["addresses"][0].as_str()).flatten()
        })?;
        Some((address.to_string(), u16::try_from(port).ok()?))
    })
}

async fn from_endpoints(
    store: &dyn Store,
    ns: &str,
    name: &str,
    port_name: &str,
) -> Option<(String, u16)> {
    let ep = get(store, ("", "endpoints"), ns, name).await?;
    ep["subsets"].as_array()?.iter().find_map(|s| {
        let port = s["ports"]
            .as_array()?
            .iter()
            .find(|p| p["name"].as_str().unwrap_or_default() == port_name)?["port"]
            .as_u64()?;
        let ip = s["addresses"][0]["ip"].as_str()?;
        Some((ip.to_string(), u16::try_from(port).ok()?))
    })
}

/// Go's words for a failed TLS handshake.
fn tls_error(err: &std::io::Error, name: &str) -> String {
    use rustls::{CertificateError, Error as E};
    let inner = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    match inner {
        // A CA of the same name that did not sign it: Go also says "unknown authority".
        Some(E::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        )) => "tls: failed to verify certificate: x509: certificate signed by unknown authority"
            .into(),
        Some(E::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => {
            format!("tls: failed to verify certificate: x509: certificate is not valid for {name}")
        }
        Some(E::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        )) => {
            "tls: failed to verify certificate: x509: certificate has expired or is not yet valid"
                .into()
        }
        Some(other) => format!("tls: {other}"),
        None => err.to_string(),
    }
}

/// POSTs `body` to the target; the answer's status and body, or Go's words for the failure
/// (without the `Post "URL": ` prefix, which the caller adds).
pub async fn post(
    tls: &tokio_rustls::TlsConnector,
    target: &Target,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<(u16, Bytes), String> {
    tokio::time::timeout(timeout, post_inner(tls, target, body))
        .await
        .unwrap_or_else(|_| Err("context deadline exceeded".into()))
}

/// A TLS connection to `host:port` verified as `server_name`, or Go's words for the failure
/// (also for the aggregation proxy: aggregation/).
pub(crate) async fn dial(
    tls: &tokio_rustls::TlsConnector,
    (host, port): (&str, u16),
    server_name: &str,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| {
            let addr = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            match e.kind() {
                std::io::ErrorKind::ConnectionRefused => {
                    format!("dial tcp {addr}: connect: connection refused")
                }
                _ => format!("dial tcp {addr}: {e}"),
            }
        })?;
    let name = ServerName::try_from(server_name.to_string()).map_err(|e| e.to_string())?;
    tls.connect(name, tcp)
        .await
        .map_err(|e| tls_error(&e, server_name))
}

async fn post_inner(
    tls: &tokio_rustls::TlsConnector,
    target: &Target,
    body: Vec<u8>,
) -> Result<(u16, Bytes), String> {
    let (host, port) = &target.connect;
    let stream = dial(tls, (host, *port), &target.server_name).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::post(&target.path)
        .header(header::HOST, &target.host_header)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json, */*")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let code = resp.status().as_u16();
    let body = Limited::new(resp.into_body(), MAX_RESPONSE)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((code, body))
}
