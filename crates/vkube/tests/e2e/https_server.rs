//! An HTTPS server in the test process for the webhooks vkube calls (admission and conversion
//! webhooks): a CA of its own (rcgen), a certificate for 127.0.0.1 signed by it, and a handler
//! that turns each JSON body POSTed to a path into the JSON answer. Runs until dropped.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;

/// What a handler returns: the answer, maybe after a while.
pub(crate) type Answer = Pin<Box<dyn Future<Output = Value> + Send>>;

pub(crate) struct HttpsServer {
    pub(crate) port: u16,
    pub(crate) ca_pem: String,
    _rt: tokio::runtime::Runtime,
}

impl HttpsServer {
    /// Serves `handle(path, body)` on 127.0.0.1 (a free port).
    pub(crate) fn start(handle: impl Fn(String, Value) -> Answer + Send + Sync + 'static) -> Self {
        let handle = Arc::new(handle);
        let (ca_pem, cert, key) = serving_cert("webhook test CA", "127.0.0.1");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let rt = tokio::runtime::Runtime::new().unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        rt.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, handle) = (acceptor.clone(), handle.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let handle = handle.clone();
                            async move {
                                let path = req.uri().path().to_string();
                                let body = req.into_body().collect().await.unwrap().to_bytes();
                                let body: Value = serde_json::from_slice(&body).unwrap();
                                let out = handle(path, body).await;
                                Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                                    Bytes::from(out.to_string()),
                                )))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        HttpsServer {
            port,
            ca_pem,
            _rt: rt,
        }
    }

    /// The CA as a clientConfig's `caBundle`.
    pub(crate) fn ca_bundle(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.ca_pem)
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }
}

/// A CA of its own named `ca_name` (PEM) and a serving certificate for `name` it signed.
pub(crate) fn serving_cert(
    ca_name: &str,
    name: &str,
) -> (String, CertificateDer<'static>, PrivateKeyDer<'static>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, ca_name);
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec![name.to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    (
        ca_cert.pem(),
        CertificateDer::from_pem_slice(leaf.pem().as_bytes()).unwrap(),
        PrivateKeyDer::from_pem_slice(leaf_key.serialize_pem().as_bytes()).unwrap(),
    )
}
