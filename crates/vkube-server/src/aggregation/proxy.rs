//! Proxying to an aggregated API server, as kube-aggregator's `proxyHandler`: after vkube's own
//! authentication and authorization, the request goes with its method, path, query and body to
//! a ready endpoint of the APIService's Service, over TLS verified with `spec.caBundle` as
//! `<service>.<namespace>.svc` (or not verified, with `insecureSkipTLSVerify`), presenting the
//! front-proxy client certificate, with the user in `X-Remote-User`/`-Group`/`-Extra-*`. The
//! answer streams back as it comes (a watch too). Connection upgrades (exec-like) are not
//! proxied.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, header};
use hyper::body::{Frame, Incoming};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use vkube_auth::UserInfo;

use super::front_proxy::{EXTRA_PREFIX, FrontProxy, GROUP_HEADER, USER_HEADER};
use crate::response::{self, Body};

/// The TLS client for one APIService: its caBundle as the only roots (or no verification), the
/// front-proxy certificate as the client's.
pub fn tls_client(
    front: &FrontProxy,
    ca_bundle: Option<&str>,
    insecure: bool,
) -> Result<tokio_rustls::TlsConnector, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
    } else {
        let mut roots = rustls::RootCertStore::empty();
        if let Some(b64) = ca_bundle {
            use base64::Engine as _;
            let pem = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| format!("caBundle: {e}"))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                roots
                    .add(cert.map_err(|e| format!("caBundle: {e}"))?)
                    .map_err(|e| format!("caBundle: {e}"))?;
            }
        }
        builder.with_root_certificates(roots)
    };
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(front.client_cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::from_pem_slice(front.client_key_pem.as_bytes())
        .map_err(|e| e.to_string())?;
    let config = builder
        .with_client_auth_cert(chain, key)
        .map_err(|e| e.to_string())?;
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// `insecureSkipTLSVerify`, and the availability check (upstream's is insecure too): the
/// server's signatures are still checked, its certificate is not.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Go's `http.Error`: plain text and a newline.
pub fn error(code: u16, message: &str) -> Response<Body> {
    let mut resp = response::text(code, format!("{message}\n"));
    resp.headers_mut().insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// Headers not passed on: hop-by-hop ones, the client's credentials, and any user headers the
/// client set itself (only vkube's are believed).
fn dropped(name: &HeaderName) -> bool {
    let n = name.as_str();
    matches!(
        n,
        "authorization"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "host"
    ) || n.starts_with("impersonate-")
        || n.starts_with("x-remote-")
}

/// Go's `url.PathEscape` of an extra key, as `transport.SetAuthProxyHeaders` writes it.
fn escape_key(key: &str) -> String {
    key.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Writes the user's identity as the requestheader authenticator reads it.
pub fn set_user(headers: &mut http::HeaderMap, user: &UserInfo) {
    let mut put = |name: String, value: &str| {
        if let (Ok(n), Ok(v)) = (
            HeaderName::try_from(name),
            HeaderValue::try_from(value.to_string()),
        ) {
            headers.append(n, v);
        }
    };
    put(USER_HEADER.into(), &user.username);
    for group in &user.groups {
        put(GROUP_HEADER.into(), group);
    }
    for (key, values) in &user.extra {
        for value in values {
            put(format!("{EXTRA_PREFIX}{}", escape_key(key)), value);
        }
    }
}

/// Sends `req` (path and query as they are) over `stream`, the answer's body streaming.
pub async fn send<B>(
    stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    req: Request<B>,
) -> Result<Response<Incoming>, String>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    sender.send_request(req).await.map_err(|e| e.to_string())
}

/// The request to the backend: the client's, its credentials and user headers replaced.
pub fn outgoing<B>(req: Request<B>, host: &str, user: &UserInfo) -> Request<B> {
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    parts.uri = path.parse().unwrap_or_default();
    parts.version = http::Version::HTTP_11;
    let names: Vec<HeaderName> = parts.headers.keys().cloned().collect();
    for name in names.iter().filter(|n| dropped(n)) {
        parts.headers.remove(name);
    }
    if let Ok(h) = HeaderValue::try_from(host) {
        parts.headers.insert(header::HOST, h);
    }
    set_user(&mut parts.headers, user);
    Request::from_parts(parts, body)
}

/// The backend's answer as vkube's response: its body streams until it ends or fails.
pub fn incoming(resp: Response<Incoming>) -> Response<Body> {
    use http_body_util::BodyExt;
    let (mut parts, body) = resp.into_parts();
    for name in ["connection", "keep-alive", "transfer-encoding"] {
        parts.headers.remove(name);
    }
    Response::from_parts(parts, Passthrough(body).boxed())
}

/// A backend's body; a broken connection ends it (the client sees a truncated answer, as
/// through upstream's reverse proxy).
struct Passthrough(Incoming);

impl hyper::body::Body for Passthrough {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match Pin::new(&mut self.get_mut().0).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(Some(Err(_)) | None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }
}

/// One GET of `path` at `(host, port)` (the availability check and discovery): its status and
/// body, or Go's words for the failure.
pub async fn get(
    tls: &tokio_rustls::TlsConnector,
    connect: (&str, u16),
    server_name: &str,
    path: &str,
    user: &UserInfo,
    timeout: Duration,
) -> Result<(u16, Bytes), String> {
    let call = async {
        use http_body_util::BodyExt;
        let stream = crate::webhooks::dial(tls, connect, server_name).await?;
        let mut req = Request::get(path)
            .header(header::HOST, format!("{server_name}:{}", connect.1))
            .header(header::ACCEPT, "application/json")
            .body(http_body_util::Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        set_user(req.headers_mut(), user);
        let resp = send(stream, req).await?;
        let code = resp.status().as_u16();
        let body = http_body_util::Limited::new(resp.into_body(), 8 * 1024 * 1024)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((code, body))
    };
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or_else(|_| {
            Err("context deadline exceeded (Client.Timeout exceeded while awaiting headers)".into())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_goes_in_request_headers_and_the_clients_own_are_dropped() {
        let user = UserInfo {
            username: "jane".into(),
            groups: vec!["dev".into(), "system:authenticated".into()],
            extra: [("scopes.example.com/x y".to_string(), vec!["a".to_string()])]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        let req = Request::get("https://vkube:6443/apis/g/v1/things?limit=2")
            .header("authorization", "Bearer secret")
            .header("x-remote-user", "mallory")
            .header("impersonate-user", "root")
            .header("accept", "application/json")
            .body(())
            .unwrap();
        let out = outgoing(req, "api.ns.svc:443", &user);
        assert_eq!(out.uri().to_string(), "/apis/g/v1/things?limit=2");
        let h = out.headers();
        assert!(h.get("authorization").is_none() && h.get("impersonate-user").is_none());
        assert_eq!(
            h.get_all("x-remote-user").iter().collect::<Vec<_>>(),
            ["jane"]
        );
        assert_eq!(
            h.get_all("x-remote-group").iter().collect::<Vec<_>>(),
            ["dev", "system:authenticated"]
        );
        assert_eq!(h["x-remote-extra-scopes.example.com%2Fx%20y"], "a");
        assert_eq!(h["host"], "api.ns.svc:443");
        assert_eq!(h["accept"], "application/json");
    }

    #[test]
    fn errors_read_as_gos_http_error() {
        let resp = error(503, "service unavailable");
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.headers()["content-type"], "text/plain; charset=utf-8");
        assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    }
}
