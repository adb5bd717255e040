//! TLS: rustls with the aws-lc-rs provider, ALPN h2 and http/1.1 (client-go speaks h2), and client
//! certificates checked against the cluster CA. A client without a certificate still connects;
//! the HTTP layer then answers 401 where it must (anonymous /healthz stays possible).
//!
//! The serving certificate sits behind [`ServingCert`], which hands each handshake the current
//! one: a renewed certificate is swapped in for new connections while open ones carry on, so
//! renewal needs no restart (kube-apiserver's dynamic serving certificates do the same).

use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

use crate::identity::CertKey;

#[derive(Debug, thiserror::Error)]
#[error("TLS setup: {0}")]
pub struct TlsError(String);

fn err(e: impl std::fmt::Display) -> TlsError {
    TlsError(e.to_string())
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The serving certificate each new handshake gets; [`ServingCert::set`] replaces it.
pub struct ServingCert {
    provider: Arc<CryptoProvider>,
    current: RwLock<(CertKey, Arc<CertifiedKey>)>,
}

impl std::fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServingCert")
    }
}

impl ServingCert {
    pub fn new(pair: &CertKey) -> Result<Arc<ServingCert>, TlsError> {
        let provider = provider();
        let key = certified(&provider, pair)?;
        Ok(Arc::new(ServingCert {
            provider,
            current: RwLock::new((pair.clone(), key)),
        }))
    }

    /// The certificate served now.
    pub fn get(&self) -> CertKey {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone()
    }

    /// Serves `pair` from the next handshake on. A pair that does not load (or whose key does
    /// not match its certificate) is refused and the current one kept.
    pub fn set(&self, pair: &CertKey) -> Result<(), TlsError> {
        let key = certified(&self.provider, pair)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = (pair.clone(), key);
        Ok(())
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .1
                .clone(),
        )
    }
}

fn certified(provider: &CryptoProvider, pair: &CertKey) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(pair.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;
    if chain.is_empty() {
        return Err(TlsError(
            "the serving certificate file holds no certificate".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes()).map_err(err)?;
    Ok(Arc::new(
        CertifiedKey::from_der(chain, key, provider).map_err(err)?,
    ))
}

pub fn server_config(
    ca_pem: &str,
    serving: Arc<ServingCert>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.map_err(err)?).map_err(err)?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(err)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(err)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(serving);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Ca, Validity};

    /// The validity of the certificate a TLS handshake with `addr` presents.
    async fn presented(ca: &Ca, addr: std::net::SocketAddr) -> Validity {
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca.cert_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(client))
            .connect(name, tcp)
            .await
            .expect("the handshake succeeds and the certificate verifies");
        let der = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        Validity::of_der(&der).unwrap()
    }

    #[tokio::test]
    async fn a_new_certificate_is_served_to_new_connections_without_a_restart() {
        let ca = Ca::generate().unwrap();
        let now = time::OffsetDateTime::now_utc();
        let names = ["localhost".to_string()];
        let old = ca
            .serving_cert_for(
                &names,
                (
                    now - time::Duration::days(360),
                    now + time::Duration::days(5),
                ),
            )
            .unwrap();
        let serving = ServingCert::new(&old).unwrap();
        let acceptor =
            tokio_rustls::TlsAcceptor::from(server_config(&ca.cert_pem, serving.clone()).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut s) = acceptor.accept(tcp).await {
                        let _ = tokio::io::AsyncReadExt::read(&mut s, &mut [0u8; 1]).await;
                    }
                });
            }
        });
        let before = presented(&ca, addr).await;
        assert_eq!(before, Validity::of_pem(&old.cert_pem).unwrap());

        let new = ca.serving_cert(&names).unwrap();
        serving.set(&new).unwrap();
        let after = presented(&ca, addr).await;
        assert_eq!(after, Validity::of_pem(&new.cert_pem).unwrap());
        assert!(after.not_after > before.not_after);

        // A pair whose key is not its certificate's is refused; the current one stays.
        let other = ca.serving_cert(&names).unwrap();
        let mismatched = CertKey {
            cert_pem: other.cert_pem,
            key_pem: new.key_pem.clone(),
        };
        assert!(serving.set(&mismatched).is_err());
        assert_eq!(serving.get(), new);
        assert_eq!(presented(&ca, addr).await, after);
    }
}
