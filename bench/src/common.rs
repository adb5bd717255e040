//! What the benchmarks share: a server process that is killed when dropped, RSS readings, and an
//! HTTP/2 client holding the kubeconfig's credential (client certificate or bearer token).
//! Each benchmark binary uses part of it.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::sync::Mutex;

pub struct Server {
    pub child: std::process::Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Server {
    /// Waits until /readyz answers "ok" and returns the client that saw it. Both vkube and
    /// `scripts/upstream-apiserver` write admin.kubeconfig before the server listens.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<Client> {
        let started = Instant::now();
        loop {
            if self.dir.path().join("admin.kubeconfig").exists() {
                if let Ok(client) = Client::connect(self).await {
                    if let Ok((200, body)) = client.request("GET", "/readyz", None).await {
                        if body == "ok" {
                            return Ok(client);
                        }
                    }
                }
            }
            if started.elapsed() > timeout {
                bail!("server not ready after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// The `p` quantile of sorted samples, in milliseconds (0 when there are none).
pub fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

pub fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// One HTTP/2 connection with the admin credential of the kubeconfig (vkube's client
/// certificate, or kube-apiserver's bearer token).
#[derive(Clone)]
pub struct Client {
    sender: Arc<Mutex<SendRequest<Full<Bytes>>>>,
    pub token: Option<String>,
}

pub fn kubeconfig_field(config: &str, field: &str) -> Result<Vec<u8>> {
    let line = config
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{field}: ")))
        .context(field.to_string())?;
    Ok(base64::engine::general_purpose::STANDARD.decode(line.trim())?)
}

impl Client {
    pub async fn connect(server: &Server) -> Result<Client> {
        Client::connect_as(server, None).await
    }

    /// Connects with `token` instead of the kubeconfig's credential, when given.
    pub async fn connect_as(server: &Server, bearer: Option<String>) -> Result<Client> {
        let config = std::fs::read_to_string(server.dir.path().join("admin.kubeconfig"))?;
        let ca = kubeconfig_field(&config, "certificate-authority-data")?;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&ca) {
            roots.add(c?)?;
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let token = bearer.or_else(|| {
            config
                .lines()
                .find_map(|l| l.trim().strip_prefix("token: "))
                .map(|t| t.trim().to_string())
        });
        let mut tls = match &token {
            Some(_) => builder.with_no_client_auth(),
            None => {
                let cert = kubeconfig_field(&config, "client-certificate-data")?;
                let key = kubeconfig_field(&config, "client-key-data")?;
                builder.with_client_auth_cert(
                    CertificateDer::pem_slice_iter(&cert).collect::<Result<Vec<_>, _>>()?,
                    PrivateKeyDer::from_pem_slice(&key)?,
                )?
            }
        };
        tls.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", server.port)).await?;
        tcp.set_nodelay(true)?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
            .connect(ServerName::try_from("localhost")?, tcp)
            .await?;
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await?;
        tokio::spawn(conn);
        Ok(Client {
            sender: Arc::new(Mutex::new(sender)),
            token,
        })
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> Result<(u16, String)> {
        let resp = self.send(method, path, body).await?;
        let code = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((code, String::from_utf8_lossy(&body).into_owned()))
    }

    /// A GET whose body is read as it arrives (a watch).
    pub async fn stream(&self, path: &str) -> Result<Incoming> {
        let resp = self.send("GET", path, None).await?;
        if resp.status() != 200 {
            bail!("GET {path}: {}", resp.status());
        }
        Ok(resp.into_body())
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> Result<http::Response<Incoming>> {
        let mut req = http::Request::builder();
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req
            .method(method)
            .uri(format!("https://localhost{path}"))
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        let mut sender = self.sender.lock().await.clone();
        Ok(sender.send_request(req).await?)
    }
}
