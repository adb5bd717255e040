//! One HTTPS client for both servers, configured from a kubeconfig: vkube's admin kubeconfig holds
//! a client certificate, the upstream oracle's (scripts/upstream-apiserver) a bearer token.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;

/// A server to send the script to.
pub(crate) struct Target {
    pub(crate) label: &'static str,
    port: u16,
    tls: Arc<rustls::ClientConfig>,
    token: Option<String>,
}

/// What came back, before normalization.
pub(crate) struct Answer {
    pub(crate) code: u16,
    pub(crate) warnings: Vec<String>,
    pub(crate) body: Vec<u8>,
}

pub(crate) fn b64(config: &Value, path: &[&str]) -> Option<Vec<u8>> {
    use base64::Engine;
    let mut v = config;
    for p in path {
        v = v.get(p)?;
    }
    Some(
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str()?.trim())
            .expect("base64 in kubeconfig"),
    )
}

impl Target {
    /// The TLS configuration, with the kubeconfig's client certificate if it has one.
    pub(crate) fn tls(&self) -> Arc<rustls::ClientConfig> {
        self.tls.clone()
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn from_kubeconfig(label: &'static str, path: &std::path::Path) -> Target {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let config: Value = serde_saphyr::from_str(&text).expect("kubeconfig YAML");
        let cluster = &config["clusters"][0]["cluster"];
        let user = &config["users"][0]["user"];
        let server = cluster["server"]
            .as_str()
            .expect("clusters[0].cluster.server");
        let port = server
            .rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse().ok())
            .unwrap_or_else(|| panic!("no port in {server}"));
        let mut roots = rustls::RootCertStore::empty();
        let ca = b64(cluster, &["certificate-authority-data"]).expect("certificate-authority-data");
        for c in CertificateDer::pem_slice_iter(&ca) {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let token = user["token"].as_str().map(str::to_string);
        let tls = match (
            b64(user, &["client-certificate-data"]),
            b64(user, &["client-key-data"]),
        ) {
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(
                    CertificateDer::pem_slice_iter(&cert)
                        .collect::<Result<Vec<_>, _>>()
                        .unwrap(),
                    PrivateKeyDer::from_pem_slice(&key).unwrap(),
                )
                .unwrap(),
            _ => {
                assert!(token.is_some(), "{}: no credentials", path.display());
                builder.with_no_client_auth()
            }
        };
        Target {
            label,
            port,
            tls: Arc::new(tls),
            token,
        }
    }

    /// Sends one request on a connection of its own (a watch holds its connection until the
    /// server ends it at `timeoutSeconds`).
    pub(crate) async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> Result<Answer, String> {
        let send = async {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .map_err(|e| e.to_string())?;
            tcp.set_nodelay(true).map_err(|e| e.to_string())?;
            let stream = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .map_err(|e| e.to_string())?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            let mut req = http::Request::builder()
                .method(method)
                .uri(path)
                .header("host", "localhost");
            for (k, v) in headers {
                req = req.header(k.as_str(), v.as_str());
            }
            if let Some(t) = &self.token {
                req = req.header("authorization", format!("Bearer {t}"));
            }
            let req = req
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| e.to_string())?;
            let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
            let code = resp.status().as_u16();
            let warnings = resp
                .headers()
                .get_all("warning")
                .iter()
                .map(|v| warning_text(&String::from_utf8_lossy(v.as_bytes())))
                .collect();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes()
                .to_vec();
            Ok(Answer {
                code,
                warnings,
                body,
            })
        };
        tokio::time::timeout(Duration::from_secs(30), send)
            .await
            .map_err(|_| format!("{method} {path}: no answer in 30 s"))?
    }
}

/// `299 - "text"` → `text`: the agent field differs by server and carries nothing.
fn warning_text(header: &str) -> String {
    let rest = header.strip_prefix("299 ").unwrap_or(header);
    let rest = rest.split_once(' ').map_or(rest, |(_, r)| r);
    rest.trim()
        .trim_matches('"')
        .replace("\\\"", "\"")
        .to_string()
}
