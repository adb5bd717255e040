//! HTTPS GET of small JSON or JWT documents (discovery, JWKS, distributed claims): one HTTP/1.1
//! request per connection through rustls, trusting the configured CA bundle or the system roots.
//! Bounded in size and time, so a slow or hostile issuer cannot hold a request.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

const MAX_BODY: usize = 1024 * 1024;
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct FetchError(pub String);

fn err(e: impl std::fmt::Display) -> FetchError {
    FetchError(e.to_string())
}

/// A client for one issuer: its trust roots are fixed when the configuration is read.
#[derive(Clone)]
pub struct Client {
    tls: tokio_rustls::TlsConnector,
}

impl Client {
    /// Trusts `ca_pem` when given, else the system's roots.
    pub fn new(ca_pem: Option<&str>) -> Result<Client, FetchError> {
        let mut roots = RootCertStore::empty();
        match ca_pem {
            Some(pem) => {
                for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                    roots.add(cert.map_err(err)?).map_err(err)?;
                }
                if roots.is_empty() {
                    return Err(FetchError("the CA bundle holds no certificate".into()));
                }
            }
            None => {
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(cert);
                }
            }
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(err)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Client {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    /// The TLS connector with these roots, for callers that speak more than GET (admission
    /// webhooks POST to their servers).
    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        self.tls.clone()
    }

    /// GETs `url` (https only) and returns the body of a 200.
    pub async fn get(&self, url: &str, bearer: Option<&str>) -> Result<Bytes, FetchError> {
        tokio::time::timeout(TIMEOUT, self.get_inner(url, bearer))
            .await
            .map_err(|_| FetchError(format!("GET {url}: timed out")))?
    }

    async fn get_inner(&self, url: &str, bearer: Option<&str>) -> Result<Bytes, FetchError> {
        let parsed = url::Url::parse(url).map_err(err)?;
        if parsed.scheme() != "https" {
            return Err(FetchError(format!("{url}: only https URLs are fetched")));
        }
        let host = parsed
            .host_str()
            .ok_or_else(|| FetchError(format!("{url}: no host")))?
            .to_string();
        let port = parsed.port_or_known_default().unwrap_or(443);
        let tcp = TcpStream::connect((host.trim_matches(['[', ']']), port))
            .await
            .map_err(err)?;
        let name = ServerName::try_from(host.trim_matches(['[', ']']).to_string()).map_err(err)?;
        let stream = self.tls.connect(name, tcp).await.map_err(err)?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(err)?;
        tokio::spawn(conn);
        let path = match parsed.query() {
            Some(q) => format!("{}?{q}", parsed.path()),
            None => parsed.path().to_string(),
        };
        let authority = match parsed.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let mut req = Request::get(path)
            .header(header::HOST, authority)
            .header(header::ACCEPT, "application/json, application/jwt");
        if let Some(token) = bearer {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let resp = sender
            .send_request(req.body(Empty::<Bytes>::new()).map_err(err)?)
            .await
            .map_err(err)?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| FetchError(format!("GET {url}: reading the body: {e}")))?
            .to_bytes();
        if status != StatusCode::OK {
            return Err(FetchError(format!("GET {url}: {status}")));
        }
        Ok(body)
    }
}
