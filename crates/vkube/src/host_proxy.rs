//! The host side of pods' kubelet subresources: `kubectl logs`, `exec`, `attach`, `port-forward`
//! and `cp` reach the host pod through the host's API with the syncer's credentials. The client's
//! request is sent on under the host pod's name; an upgrade (SPDY for kubectl ≤ 1.29, WebSocket
//! for newer kubectl) is answered with the host's 101 and the two connections are spliced, so
//! every protocol the host speaks works end to end.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use vkube_server::ResponseBody;

/// Headers of the client's request that the host must see: the upgrade handshake and what the
/// client accepts.
const FORWARDED: &[&str] = &[
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
    "x-stream-protocol-version",
    "accept",
    "content-type",
];

/// The largest request body a proxy forwards (kube-apiserver's own request limit is 3 MiB).
const MAX_PROXIED_BODY: usize = 16 << 20;

pub struct KubeHostProxy {
    pub client: kube::Client,
    pub namespace: String,
    pub cluster: String,
}

impl vkube_server::host_proxy::HostProxy for KubeHostProxy {
    fn forward(
        &self,
        namespace: &str,
        name: &str,
        subresource: &str,
        req: Request<Incoming>,
    ) -> Pin<Box<dyn Future<Output = Response<ResponseBody>> + Send>> {
        let virtual_name = vkube_server::host_proxy::object_name(name).to_string();
        // `/api/v1/namespaces/NS/RESOURCE/NAME/…`
        let (kind, resource) = match req.uri().path().split('/').nth(5) {
            Some("services") => ("Service", "services"),
            _ => ("Pod", "pods"),
        };
        let host_name =
            vkube_syncer::names::host_name(kind, namespace, &virtual_name, &self.cluster);
        // `NAME:PORT` and `SCHEME:NAME:PORT` keep their scheme and port; a proxy keeps the path
        // after `proxy`.
        let name_spec = name.replacen(&virtual_name, &host_name, 1);
        let rest = rest_after(req.uri().path(), subresource);
        let path = format!(
            "/api/v1/namespaces/{}/{resource}/{name_spec}/{subresource}{rest}",
            self.namespace
        );
        let client = self.client.clone();
        Box::pin(async move {
            match forward(client, path, req, &host_name, &virtual_name).await {
                Ok(resp) => resp,
                Err(why) => error_response(&why),
            }
        })
    }
}

/// What follows the subresource in the client's path (`/a/b` of `…/proxy/a/b`), empty for
/// the kubelet's subresources.
fn rest_after(path: &str, subresource: &str) -> String {
    let marker = format!("/{subresource}");
    match path.find(&marker) {
        Some(at) if subresource == "proxy" => path[at + marker.len()..].to_string(),
        _ => String::new(),
    }
}

async fn forward(
    client: kube::Client,
    path: String,
    mut req: Request<Incoming>,
    host_name: &str,
    virtual_name: &str,
) -> Result<Response<ResponseBody>, String> {
    let query = req
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let mut builder = Request::builder()
        .method(req.method().clone())
        .uri(format!("{path}{query}"));
    for name in FORWARDED {
        for value in req.headers().get_all(*name) {
            builder = builder.header(*name, value);
        }
    }
    // A proxied request's body goes along (an upgrade has none: the streams follow it).
    let body = if req.headers().contains_key(header::UPGRADE) {
        kube::client::Body::empty()
    } else {
        let bytes = http_body_util::Limited::new(req.body_mut(), MAX_PROXIED_BODY)
            .collect()
            .await
            .map_err(|e| format!("reading the request body: {e}"))?
            .to_bytes();
        kube::client::Body::from(bytes.to_vec())
    };
    let client_upgrade = hyper::upgrade::on(&mut req);
    let host_req = builder
        .body(body)
        .map_err(|e| format!("building the host request: {e}"))?;
    let mut resp = client
        .send(host_req)
        .await
        .map_err(|e| format!("the host cluster's API: {e}"))?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let host_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            match tokio::try_join!(client_upgrade, host_upgrade) {
                Ok((client_io, host_io)) => {
                    let (mut c, mut h) = (TokioIo::new(client_io), TokioIo::new(host_io));
                    // Either side closing ends the session; the error is the client going away.
                    let _ = tokio::io::copy_bidirectional(&mut c, &mut h).await;
                }
                Err(err) => tracing::warn!(%err, "upgrading a pod stream"),
            }
        });
        let mut out = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
        for (name, value) in resp.headers() {
            out = out.header(name, value);
        }
        return out
            .body(http_body_util::Empty::new().boxed())
            .map_err(|e| e.to_string());
    }
    let (parts, body) = resp.into_parts();
    if parts.status.is_success() {
        // Logs stream (`-f`) for as long as the host sends them.
        let mut out = Response::builder().status(parts.status);
        for name in [header::CONTENT_TYPE, header::TRANSFER_ENCODING] {
            if let Some(v) = parts.headers.get(&name) {
                out = out.header(name, v);
            }
        }
        return out.body(stream(body).boxed()).map_err(|e| e.to_string());
    }
    // The host's refusal ("container x is waiting to start", a bad query) names the host's pod:
    // the tenant reads the name it knows.
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).replace(host_name, virtual_name);
    let mut out = Response::builder().status(parts.status);
    if let Some(v) = parts.headers.get(header::CONTENT_TYPE) {
        out = out.header(header::CONTENT_TYPE, v);
    }
    out.body(http_body_util::Full::new(Bytes::from(text)).boxed())
        .map_err(|e| e.to_string())
}

/// A 502 Status: the host could not be asked.
fn error_response(why: &str) -> Response<ResponseBody> {
    let status = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("the host cluster could not be reached: {why}"),
        "reason": "ServiceUnavailable", "code": 503,
    });
    Response::builder()
        .status(StatusCode::SERVICE_UNAVAILABLE)
        .header(header::CONTENT_TYPE, "application/json")
        .body(http_body_util::Full::new(Bytes::from(status.to_string())).boxed())
        .unwrap_or_else(|_| Response::new(http_body_util::Empty::new().boxed()))
}

/// The host's streamed body as the server's: a task pumps its data into a channel (the
/// server's body type must be `Sync`, the client's is not). An error ends the stream, as when a
/// kubelet's log stream breaks; the client going away ends the pump.
fn stream(mut body: kube::client::Body) -> ChannelBody {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data()
                        && tx.send(data).await.is_err()
                    {
                        return;
                    }
                }
                Err(err) => {
                    tracing::debug!(%err, "a pod stream from the host ended");
                    return;
                }
            }
        }
    });
    ChannelBody(rx)
}

struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|data| data.map(|d| Ok(Frame::data(d))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxy_keeps_the_path_after_the_subresource() {
        assert_eq!(
            rest_after(
                "/api/v1/namespaces/a/pods/web:8080/proxy/healthz/x",
                "proxy"
            ),
            "/healthz/x"
        );
        assert_eq!(
            rest_after("/api/v1/namespaces/a/pods/web/proxy", "proxy"),
            ""
        );
        assert_eq!(rest_after("/api/v1/namespaces/a/pods/web/log", "log"), "");
    }
}
