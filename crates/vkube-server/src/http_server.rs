//! The listener: TLS handshakes, HTTP/1.1 and HTTP/2 on one port, the cluster identity and the
//! admin kubeconfig on disk, and a graceful shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use vkube_store::Store;

use crate::identity::{Ca, CertKey, IdentityError, read_pair, write_pair, write_private};
use crate::router::Api;
use crate::tls;

#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    /// Extra names for the serving certificate (`--tls-san`).
    pub tls_sans: Vec<String>,
    pub data_dir: PathBuf,
    pub auth: AuthOptions,
    /// This replica's identity in leader election (`vkube-N`).
    pub replica: String,
    pub leader: crate::leader::Timing,
    /// `--etcd-compaction-interval` (kube-apiserver's, default 5 m); `None`: never compact.
    pub compaction_interval: Option<std::time::Duration>,
    /// The leader's controllers not to run (`--controllers=*,-NAME`, as
    /// kube-controller-manager's flag): names from [`CONTROLLERS`].
    pub disabled_controllers: Vec<String>,
    /// Leader-only work the binary adds (the syncer): each call starts it and returns the handle
    /// that stops it when this replica stops leading. The server knows nothing of what it is,
    /// so the syncer's crate and the server's never depend on each other.
    pub leader_tasks: Vec<LeaderTask>,
    /// Where pods' `log`, `exec`, `attach` and `portforward` go (the host cluster); `None`:
    /// they answer 503, as there is no kubelet.
    pub host_proxy: Option<crate::host_proxy::HostProxyHandle>,
}

/// See [`Config::leader_tasks`].
#[derive(Clone)]
pub struct LeaderTask(pub std::sync::Arc<dyn Fn() -> tokio::task::AbortHandle + Send + Sync>);

impl LeaderTask {
    fn start(&self) -> tokio::task::AbortHandle {
        (self.0)()
    }
}

impl std::fmt::Debug for LeaderTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LeaderTask")
    }
}

/// The leader's controllers, by the names `--controllers` takes.
pub const CONTROLLERS: &[&str] = &[
    "namespace",
    "customresourcedefinition",
    "resourcequota",
    "garbagecollector",
    "workloads",
];

/// How requests authenticate besides client certificates.
#[derive(Clone, Debug)]
pub struct AuthOptions {
    /// `--service-account-issuer`.
    pub service_account_issuer: String,
    /// `--api-audiences`; empty means the issuer.
    pub api_audiences: Vec<String>,
    /// The OIDC issuer of the `--oidc-*` flags.
    pub oidc: Option<vkube_auth::oidc::JwtConfig>,
    /// `--anonymous-auth` (default true, as upstream); a configuration file's `anonymous`
    /// section replaces it.
    pub anonymous: bool,
    /// `--authentication-config`: an AuthenticationConfiguration file, watched for changes.
    pub authentication_config: Option<PathBuf>,
}

impl Default for AuthOptions {
    fn default() -> Self {
        AuthOptions {
            service_account_issuer: vkube_auth::service_account::DEFAULT_ISSUER.into(),
            api_audiences: vec![],
            oidc: None,
            anonymous: true,
            authentication_config: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("store: {0}")]
    Store(#[from] vkube_store::StoreError),
    #[error("authentication: {0}")]
    Auth(String),
    #[error("listening on {addr}: {err}")]
    Listen {
        addr: SocketAddr,
        err: std::io::Error,
    },
}

/// The serving certificate's names: localhost, 127.0.0.1, the listen host and each `--tls-san`.
fn serving_names(config: &Config) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let host = config.listen.ip();
    if !host.is_unspecified() {
        names.push(host.to_string());
    }
    names.extend(config.tls_sans.iter().cloned());
    names.dedup();
    names
}

/// This process's serving certificate: the one on disk if the CA and names are unchanged.
fn serving_cert(ca: &Ca, config: &Config) -> Result<CertKey, IdentityError> {
    let dir = &config.data_dir;
    let names = serving_names(config).join(",");
    let same_ca = std::fs::read_to_string(dir.join("ca.crt")).is_ok_and(|pem| pem == ca.cert_pem);
    let same_names = std::fs::read_to_string(dir.join("serving.sans")).is_ok_and(|n| n == names);
    if let Some(pair) = read_pair(dir, "serving").filter(|_| same_ca && same_names) {
        return Ok(pair);
    }
    let pair = ca.serving_cert(&serving_names(config))?;
    write_pair(dir, "serving", &pair)?;
    write_private(&dir.join("serving.sans"), &names)?;
    Ok(pair)
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// `DIR/admin.kubeconfig`, for user `kubernetes-admin` in group `system:masters`; kept across
/// restarts while the CA and server address are unchanged.
fn admin_kubeconfig(ca: &Ca, config: &Config) -> Result<PathBuf, IdentityError> {
    let path = config.data_dir.join("admin.kubeconfig");
    let host = match config.listen.ip() {
        ip if ip.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    let server = format!("https://{host}:{}", config.listen.port());
    let ca_data = b64(&ca.cert_pem);
    if let Ok(existing) = std::fs::read_to_string(&path) {
        if existing.contains(&ca_data) && existing.contains(&format!("server: {server}\n")) {
            return Ok(path);
        }
    }
    let admin = ca.client_cert("kubernetes-admin", &["system:masters"])?;
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: vkube\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca_data}\n\
         users:\n- name: vkube-admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n\
         contexts:\n- name: vkube\n  context:\n    cluster: vkube\n    user: vkube-admin\ncurrent-context: vkube\n",
        b64(&admin.cert_pem),
        b64(&admin.key_pem),
    );
    write_private(&path, &kubeconfig)?;
    Ok(path)
}

/// The address other replicas and `vkube check` reach this one at.
fn advertised(config: &Config) -> std::net::SocketAddr {
    let mut addr = config.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    addr
}

/// The authenticator chain: the `--oidc-*` issuer, or the issuers of the configuration file
/// (then watched for changes).
fn authentication(
    config: &Config,
    issuer: vkube_auth::service_account::Issuer,
) -> Result<
    (
        Arc<vkube_auth::chain::Chain>,
        Option<tokio::task::JoinHandle<()>>,
    ),
    ServeError,
> {
    use vkube_auth::oidc::file::Anonymous;
    let flag_anonymous = if config.auth.anonymous {
        Anonymous::Enabled
    } else {
        Anonymous::Disabled
    };
    let metrics = vkube_auth::metrics::AuthMetrics::new(&config.listen.to_string());
    let auth_err = |e: vkube_auth::oidc::ConfigError| ServeError::Auth(e.0);
    let Some(path) = &config.auth.authentication_config else {
        let chain = Arc::new(vkube_auth::chain::Chain::new(
            Arc::new(issuer),
            flag_anonymous,
            metrics,
        ));
        if let Some(oidc) = &config.auth.oidc {
            let authenticator =
                vkube_auth::oidc::JwtAuthenticator::new(oidc.clone()).map_err(auth_err)?;
            authenticator.start();
            chain.set_jwt(vec![authenticator]);
        }
        return Ok((chain, None));
    };
    let (file, issuers) = vkube_auth::reload::load(path).map_err(auth_err)?;
    let anonymous = file.anonymous.unwrap_or(flag_anonymous);
    let chain = Arc::new(vkube_auth::chain::Chain::new(
        Arc::new(issuer),
        anonymous,
        metrics,
    ));
    issuers.iter().for_each(|i| i.start());
    chain.set_jwt(issuers);
    let watcher = vkube_auth::reload::watch(chain.clone(), path.clone(), Duration::from_secs(1));
    Ok((chain, Some(watcher)))
}

/// Serves until `shutdown` resolves. `on_listening` gets the admin kubeconfig's path once the
/// port is bound.
pub async fn serve(
    store: Arc<dyn Store>,
    config: Config,
    on_listening: impl FnOnce(&Path),
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|err| IdentityError::Io {
        path: config.data_dir.display().to_string(),
        err,
    })?;
    let ca = Ca::load_or_create(store.as_ref()).await?;
    let serving = serving_cert(&ca, &config)?;
    std::fs::write(config.data_dir.join("ca.crt"), &ca.cert_pem).map_err(|err| {
        IdentityError::Io {
            path: "ca.crt".into(),
            err,
        }
    })?;
    let kubeconfig = admin_kubeconfig(&ca, &config)?;
    let tls = tokio_rustls::TlsAcceptor::from(tls::server_config(&ca.cert_pem, &serving)?);

    let sa_key = crate::identity::service_account_key(store.as_ref()).await?;
    let issuer = vkube_auth::service_account::Issuer::new(
        config.auth.service_account_issuer.clone(),
        config.auth.api_audiences.clone(),
        sa_key,
        store.clone(),
    );
    let (auth, reloader) = authentication(&config, issuer)?;
    tokio::task::spawn_blocking(vkube_api::schema::warm);
    let hub = crate::hub::Hub::start(store.clone()).await?;
    let authorizer = crate::authz::Authorizer::start(store.clone(), hub.clone()).await?;
    let crds = crate::crds::CrdView::start(store.clone(), hub.clone()).await?;
    let api = Arc::new(Api {
        store: store.clone(),
        hub: hub.clone(),
        crds,
        ca_pem: ca.cert_pem.clone(),
        serving: AtomicBool::new(true),
        listen: config.listen,
        host_proxy: config.host_proxy.clone(),
        authorizer,
        leader: std::sync::OnceLock::new(),
        divergent: Default::default(),
        metrics: {
            let mut registry = prometheus_client::registry::Registry::default();
            auth.metrics.register(&mut registry);
            crate::metrics::Metrics::new(registry)
        },
        auth,
    });
    crate::controllers::bootstrap(&api).await?;
    let elector =
        crate::leader::Elector::new(store.clone(), config.replica.clone(), config.leader.clone());
    let election = elector.start();
    let leader_work = {
        let (api, store) = (api.clone(), store.clone());
        let compaction = config.compaction_interval;
        let disabled = config.disabled_controllers.clone();
        let tasks = config.leader_tasks.clone();
        crate::leader::while_leader(elector.clone(), move || {
            let on = |name: &str| !disabled.iter().any(|d| d == name);
            let mut work = Vec::new();
            if on("namespace") {
                work.push(crate::controllers::start(api.clone()));
            }
            if on("customresourcedefinition") {
                work.push(crate::crds::start(api.clone()));
            }
            if on("resourcequota") {
                work.push(crate::quota::start(api.clone()));
            }
            if on("garbagecollector") {
                work.push(crate::gc::start(api.clone()));
            }
            if on("workloads") {
                work.push(crate::workloads::start(api.clone()));
            }
            if let Some(interval) = compaction {
                work.push(crate::compactor::start(store.clone(), interval));
            }
            work.extend(tasks.iter().map(LeaderTask::start));
            work
        })
    };
    api.leader.set(elector.clone()).ok();
    let heartbeat = crate::replicas::start(
        api.clone(),
        config.replica.clone(),
        format!("https://{}", advertised(&config)),
    );

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|err| ServeError::Listen {
            addr: config.listen,
            err,
        })?;
    on_listening(&kubeconfig);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(err) => {
                    tracing::warn!(%err, "accept failed");
                    continue;
                }
            },
        };
        // Small HTTP/2 frames must not wait for Nagle's algorithm (40 ms with delayed ACKs).
        let _ = tcp.set_nodelay(true);
        let (tls, api) = (tls.clone(), api.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(Duration::from_secs(10), tls.accept(tcp)).await
            {
                Ok(Ok(s)) => s,
                Ok(Err(err)) => return tracing::debug!(%peer, %err, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            let user = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| vkube_auth::x509::user_of(c.as_ref()));
            let service = service_fn(move |req| {
                let (api, user) = (api.clone(), user.clone());
                async move { Ok::<_, std::convert::Infallible>(api.handle(user, req).await) }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(err) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, %err, "connection ended");
            }
        });
    }
    // Drain: report not ready, stop accepting, give open requests a moment to finish.
    api.serving.store(false, Ordering::Relaxed);
    drop(listener);
    leader_work.abort();
    heartbeat.abort();
    election.abort();
    // Hand the lease over now rather than make the next leader wait it out.
    elector.release().await;
    if let Some(r) = reloader {
        r.abort();
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
    Ok(())
}
