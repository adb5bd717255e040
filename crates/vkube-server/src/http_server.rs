//! The listener: TLS handshakes, HTTP/1.1 and HTTP/2 on one port, the cluster identity and the
//! admin kubeconfig on disk, and a graceful shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use vkube_store::Store;

use crate::identity::{
    self, Ca, CertKey, IdentityError, Validity, read_pair, write_pair, write_private,
};
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
    /// `--max-requests-inflight` and `--max-mutating-requests-inflight`.
    pub limits: crate::filters::Limits,
    /// `--request-timeout` and `--min-request-timeout`.
    pub timeouts: crate::filters::Timeouts,
    /// Leader-only work the binary adds (the controllers, the syncer): each call starts it and
    /// returns the handle that stops it when this replica stops leading. The server knows
    /// nothing of what it is, so the controllers' and syncer's crates and the server's never
    /// depend on each other.
    pub leader_tasks: Vec<LeaderTask>,
    /// Where pods' `log`, `exec`, `attach` and `portforward` go (the host cluster); `None`:
    /// they answer 503, as there is no kubelet.
    pub host_proxy: Option<crate::host_proxy::HostProxyHandle>,
    /// Where Services get their addresses when pods run on a host (the host copies); `None`:
    /// from vkube's own service range.
    pub host_services: Option<crate::host_services::HostServicesHandle>,
    /// `default/kubernetes` as host pods reach it; `None`: the first address of vkube's range
    /// and the listen address.
    pub kubernetes_service: Option<crate::host_services::KubernetesService>,
    /// The address other replicas and `vkube check` reach this one at, when it listens on every
    /// address (kube-apiserver's `--advertise-address`; in a pod, the pod IP): recorded in the
    /// replica membership and named in the serving certificate.
    pub advertise_address: Option<std::net::IpAddr>,
    /// The cluster CA from files (`--ca-cert-file`, `--ca-key-file`); `None`: the first process
    /// creates one in the store.
    pub ca: Option<crate::identity::GivenCa>,
    /// `--identity-secret-file`: the cluster secret that seals the identity in the store
    /// ([`crate::cluster_secret`]); `None`: the CA key of `ca`, else `DATA-DIR/identity-secret`.
    pub identity_secret_file: Option<PathBuf>,
    /// `--audit-policy-file` and `--audit-log-*`; `None`: no audit log.
    pub audit: Option<crate::audit::AuditOptions>,
}

/// See [`Config::leader_tasks`].
#[derive(Clone)]
pub struct LeaderTask(
    pub std::sync::Arc<dyn Fn(&crate::router::InProcess) -> tokio::task::AbortHandle + Send + Sync>,
);

impl LeaderTask {
    fn start(&self, api: &crate::router::InProcess) -> tokio::task::AbortHandle {
        (self.0)(api)
    }
}

impl std::fmt::Debug for LeaderTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LeaderTask")
    }
}

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
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
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
    names.extend(config.advertise_address.map(|ip| ip.to_string()));
    names.extend(config.tls_sans.iter().cloned());
    names.dedup();
    names
}

/// This process's serving certificate: the one on disk if the CA and names are unchanged and it
/// is not due for renewal at `now`; else a new one, written to disk.
fn serving_cert(
    ca: &Ca,
    dir: &Path,
    names: &[String],
    now: SystemTime,
) -> Result<CertKey, IdentityError> {
    let joined = names.join(",");
    let same_ca = std::fs::read_to_string(dir.join("ca.crt")).is_ok_and(|pem| pem == ca.cert_pem);
    let same_names = std::fs::read_to_string(dir.join("serving.sans")).is_ok_and(|n| n == joined);
    if let Some(pair) = read_pair(dir, "serving")
        .filter(|p| same_ca && same_names && identity::fresh(&p.cert_pem, now))
    {
        return Ok(pair);
    }
    let pair = ca.serving_cert(names)?;
    write_pair(dir, "serving", &pair)?;
    write_private(&dir.join("serving.sans"), &joined)?;
    Ok(pair)
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// The client certificate in a kubeconfig vkube wrote.
fn kubeconfig_client_cert(kubeconfig: &str) -> Option<String> {
    use base64::Engine;
    let data = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("client-certificate-data: "))?;
    let der = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .ok()?;
    String::from_utf8(der).ok()
}

/// `DIR/admin.kubeconfig`, for user `kubernetes-admin` in group `system:masters`; kept across
/// restarts while the CA and server address are unchanged and its client certificate is not
/// due for renewal at `now`, else written afresh.
fn admin_kubeconfig(
    ca: &Ca,
    dir: &Path,
    listen: SocketAddr,
    now: SystemTime,
) -> Result<PathBuf, IdentityError> {
    let path = dir.join("admin.kubeconfig");
    let host = match listen.ip() {
        ip if ip.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    let server = format!("https://{host}:{}", listen.port());
    let ca_data = b64(&ca.cert_pem);
    if let Ok(existing) = std::fs::read_to_string(&path) {
        if existing.contains(&ca_data)
            && existing.contains(&format!("server: {server}\n"))
            && kubeconfig_client_cert(&existing).is_some_and(|c| identity::fresh(&c, now))
        {
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
    tracing::info!(path = %path.display(), "admin kubeconfig written");
    Ok(path)
}

/// Renews what is due at `now`: the serving certificate (swapped into `serving`, so new
/// handshakes get it without a restart) and the admin kubeconfig. Returns when the next of them
/// falls due.
fn renew_due(
    ca: &Ca,
    dir: &Path,
    names: &[String],
    listen: SocketAddr,
    serving: &tls::ServingCert,
    now: SystemTime,
) -> Result<SystemTime, ServeError> {
    let pair = serving_cert(ca, dir, names, now)?;
    if pair != serving.get() {
        serving.set(&pair)?;
        let until = Validity::of_pem(&pair.cert_pem).map(|v| identity::rfc3339(v.not_after));
        tracing::info!(?until, "serving certificate renewed");
    }
    let kubeconfig = admin_kubeconfig(ca, dir, listen, now)?;
    let admin = std::fs::read_to_string(&kubeconfig)
        .ok()
        .and_then(|k| kubeconfig_client_cert(&k));
    let next = [Some(pair.cert_pem), admin]
        .into_iter()
        .flatten()
        .filter_map(|pem| Validity::of_pem(&pem))
        .map(|v| v.renew_at())
        .min();
    Ok(next.unwrap_or(now + RENEWAL_CHECK))
}

/// The longest the renewal task sleeps: a clock that jumps (a suspended machine, a corrected
/// clock) is noticed within it.
const RENEWAL_CHECK: Duration = Duration::from_secs(3600);

/// Keeps the serving certificate and the admin kubeconfig fresh while serving.
fn renew_certificates(
    ca: Ca,
    config: &Config,
    serving: Arc<tls::ServingCert>,
) -> tokio::task::JoinHandle<()> {
    let (dir, names, listen) = (
        config.data_dir.clone(),
        serving_names(config),
        config.listen,
    );
    tokio::spawn(async move {
        loop {
            let now = SystemTime::now();
            let wait = match renew_due(&ca, &dir, &names, listen, &serving, now) {
                Ok(next) => next
                    .duration_since(SystemTime::now())
                    .unwrap_or_default()
                    .clamp(Duration::from_secs(1), RENEWAL_CHECK),
                Err(err) => {
                    tracing::warn!(%err, "renewing certificates failed; trying again in a minute");
                    Duration::from_secs(60)
                }
            };
            tokio::time::sleep(wait).await;
        }
    })
}

/// The address other replicas and `vkube check` reach this one at.
fn advertised(config: &Config) -> std::net::SocketAddr {
    let mut addr = config.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(
            config
                .advertise_address
                .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into()),
        );
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
    let secret = crate::cluster_secret::resolve(
        store.as_ref(),
        config.identity_secret_file.as_deref(),
        config.ca.as_ref().map(|given| given.ca.key_pem.as_str()),
        &config.data_dir,
    )
    .await?;
    let ca = Ca::load_or_create(store.as_ref(), config.ca.as_ref(), &secret).await?;
    let serving = serving_cert(
        &ca,
        &config.data_dir,
        &serving_names(&config),
        SystemTime::now(),
    )?;
    std::fs::write(config.data_dir.join("ca.crt"), &ca.cert_pem).map_err(|err| {
        IdentityError::Io {
            path: "ca.crt".into(),
            err,
        }
    })?;
    let kubeconfig = admin_kubeconfig(&ca, &config.data_dir, config.listen, SystemTime::now())?;
    let serving = tls::ServingCert::new(&serving)?;
    let tls = tokio_rustls::TlsAcceptor::from(tls::server_config(&ca.cert_pem, serving.clone())?);
    let renewal = renew_certificates(ca.clone(), &config, serving);

    let sa_key = crate::identity::service_account_key(store.as_ref(), &secret).await?;
    let front_proxy =
        crate::aggregation::FrontProxy::load_or_create(store.as_ref(), &secret).await?;
    drop(secret);
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
    let webhooks = crate::webhooks::WebhookView::start(store.clone(), hub.clone()).await?;
    hub.webhooks.set(webhooks).ok();
    let admission_policies =
        crate::admission_policy::PolicyView::start(store.clone(), hub.clone()).await?;
    hub.admission_policies.set(admission_policies).ok();
    let aggregation = Arc::new(crate::aggregation::Aggregation::new(
        crate::aggregation::ApiServiceView::start(store.clone(), hub.clone()).await?,
        front_proxy,
    ));
    hub.aggregation.set(aggregation.clone()).ok();
    let filters = crate::filters::Filters::new(config.limits, config.timeouts);
    let flowcontrol_view = match &filters.flow_control {
        Some(fc) => Some(
            crate::flowcontrol::view::FlowControlView::start(
                store.clone(),
                hub.clone(),
                fc.clone(),
            )
            .await?,
        ),
        None => None,
    };
    let audit = config.audit.as_ref().map(crate::audit::Auditor::start);
    let api = Arc::new(Api {
        audit: audit.transpose()?.map(Arc::new),
        store: store.clone(),
        hub: hub.clone(),
        crds,
        ca_pem: ca.cert_pem.clone(),
        ca: ca.clone(),
        serving: AtomicBool::new(true),
        listen: config.listen,
        host_proxy: config.host_proxy.clone(),
        host_services: config.host_services.clone(),
        kubernetes_service: config.kubernetes_service.clone(),
        authorizer,
        leader: std::sync::OnceLock::new(),
        divergent: Default::default(),
        metrics: {
            let mut registry = prometheus_client::registry::Registry::default();
            auth.metrics.register(&mut registry);
            filters.register(&mut registry);
            if let Some(webhooks) = hub.webhooks.get() {
                webhooks.register(&mut registry);
            }
            crate::metrics::Metrics::new(registry)
        },
        filters,
        auth,
    });
    crate::controllers::bootstrap(&api).await?;
    let elector =
        crate::leader::Elector::new(store.clone(), config.replica.clone(), config.leader.clone());
    let election = elector.start();
    let leader_work = {
        let (api, store) = (api.clone(), store.clone());
        let compaction = config.compaction_interval;
        let tasks = config.leader_tasks.clone();
        let flowcontrol_view = flowcontrol_view.clone();
        crate::leader::while_leader(elector.clone(), move || {
            // ClusterRole aggregation and Service IP release: the API's own upkeep, always on.
            let mut work = vec![crate::controllers::start(api.clone())];
            // kube-apiserver's flow-control config producer and status writer.
            if let Some(view) = &flowcontrol_view {
                work.push(crate::flowcontrol::ensurer::start(
                    api.clone(),
                    view.clone(),
                ));
            }
            if let Some(interval) = compaction {
                work.push(crate::compactor::start(store.clone(), interval));
            }
            // kube-apiserver's allocation repair loops: not controllers, so always on.
            let host_services = api.host_services.is_some();
            work.push(crate::service_repair::start(store.clone(), host_services));
            // kube-aggregator's autoregistration, availability and requestheader publisher.
            work.push(crate::aggregation::available::start(
                api.clone(),
                aggregation.clone(),
            ));
            let in_process = crate::router::InProcess(api.clone());
            work.extend(tasks.iter().map(|t| t.start(&in_process)));
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
                let mut req = req.map(crate::router::RequestBody::Wire);
                req.extensions_mut().insert(crate::audit::Peer(peer.ip()));
                async move {
                    if crate::filters::limits::head_too_large(&req) {
                        return Ok(crate::filters::limits::head_refused());
                    }
                    // `--request-timeout`, outside the chain as upstream's (in-process calls have
                    // none).
                    let mut q = crate::request::query(req.uri().query());
                    let info =
                        crate::request::RequestInfo::parse(req.method(), req.uri().path(), &q);
                    let timeout = q.remove("timeout");
                    let timeouts = api.filters.timeouts;
                    let head = req.method() == http::Method::HEAD;
                    let served = timeouts.serve(&info, timeout.as_deref(), api.handle(user, req));
                    Ok::<_, std::convert::Infallible>(crate::filters::limits::head(
                        head,
                        served.await,
                    ))
                }
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            crate::filters::limits::configure(&mut builder);
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
    renewal.abort();
    election.abort();
    // Hand the lease over now rather than make the next leader wait it out.
    elector.release().await;
    crate::replicas::leave(&api, &config.replica).await;
    if let Some(r) = reloader {
        r.abort();
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vkube-certs-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn days(n: i64) -> time::Duration {
        time::Duration::days(n)
    }

    fn names() -> Vec<String> {
        vec!["localhost".into(), "127.0.0.1".into()]
    }

    /// A serving pair issued 345 days ago that expires in 20: what a replica started a year ago
    /// has on disk.
    fn old_serving(ca: &Ca) -> CertKey {
        let now = time::OffsetDateTime::now_utc();
        ca.serving_cert_for(&names(), (now - days(345), now + days(20)))
            .unwrap()
    }

    fn year_left(pem: &str) -> bool {
        Validity::of_pem(pem).unwrap().remaining(SystemTime::now())
            > Duration::from_secs(360 * 24 * 3600)
    }

    #[test]
    fn a_serving_certificate_near_expiry_is_reissued() {
        let ca = Ca::generate().unwrap();
        let dir = temp_dir();
        std::fs::write(dir.join("ca.crt"), &ca.cert_pem).unwrap();
        let now = SystemTime::now();
        let first = serving_cert(&ca, &dir, &names(), now).unwrap();
        assert_eq!(
            serving_cert(&ca, &dir, &names(), now).unwrap(),
            first,
            "a fresh certificate is kept across restarts"
        );
        let old = old_serving(&ca);
        write_pair(&dir, "serving", &old).unwrap();
        let renewed = serving_cert(&ca, &dir, &names(), now).unwrap();
        assert_ne!(renewed, old, "20 days left: reissued");
        assert!(year_left(&renewed.cert_pem));
        assert_eq!(read_pair(&dir, "serving").unwrap(), renewed, "and written");
        // A year's certificate is kept until a third of it is left.
        let at = Validity::of_pem(&renewed.cert_pem).unwrap().renew_at();
        assert_eq!(
            serving_cert(&ca, &dir, &names(), at - Duration::from_secs(1)).unwrap(),
            renewed
        );
        assert_ne!(serving_cert(&ca, &dir, &names(), at).unwrap(), renewed);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_admin_kubeconfig_whose_certificate_is_near_expiry_is_rewritten() {
        let ca = Ca::generate().unwrap();
        let dir = temp_dir();
        let listen: SocketAddr = "127.0.0.1:6443".parse().unwrap();
        let now = SystemTime::now();
        let path = admin_kubeconfig(&ca, &dir, listen, now).unwrap();
        let first = std::fs::read_to_string(&path).unwrap();
        admin_kubeconfig(&ca, &dir, listen, now).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            first,
            "a fresh kubeconfig is kept"
        );
        // The same kubeconfig, but with a client certificate that expires in 10 days.
        let wall = time::OffsetDateTime::now_utc();
        let short = ca
            .client_cert_for(
                "kubernetes-admin",
                &["system:masters"],
                (wall - days(355), wall + days(10)),
            )
            .unwrap();
        let cert = kubeconfig_client_cert(&first).unwrap();
        let key_line = first
            .lines()
            .find(|l| l.trim().starts_with("client-key-data: "))
            .unwrap();
        let near = first.replace(&b64(&cert), &b64(&short.cert_pem)).replace(
            key_line,
            &format!("    client-key-data: {}", b64(&short.key_pem)),
        );
        std::fs::write(&path, &near).unwrap();
        admin_kubeconfig(&ca, &dir, listen, now).unwrap();
        let rewritten = std::fs::read_to_string(&path).unwrap();
        assert_ne!(
            rewritten, near,
            "a certificate 10 days from expiry is replaced"
        );
        assert!(year_left(&kubeconfig_client_cert(&rewritten).unwrap()));
        assert!(rewritten.contains("server: https://127.0.0.1:6443\n"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn renewal_swaps_a_due_serving_certificate_in_while_serving() {
        let ca = Ca::generate().unwrap();
        let dir = temp_dir();
        std::fs::write(dir.join("ca.crt"), &ca.cert_pem).unwrap();
        std::fs::write(dir.join("serving.sans"), names().join(",")).unwrap();
        let listen: SocketAddr = "127.0.0.1:6443".parse().unwrap();
        let old = old_serving(&ca);
        write_pair(&dir, "serving", &old).unwrap();
        // The process serves the old pair, as one started before it fell due.
        let serving = tls::ServingCert::new(&old).unwrap();
        let now = SystemTime::now();
        let next = renew_due(&ca, &dir, &names(), listen, &serving, now).unwrap();
        let renewed = serving.get();
        assert_ne!(renewed, old, "the served certificate is the renewed one");
        assert!(year_left(&renewed.cert_pem));
        assert_eq!(read_pair(&dir, "serving").unwrap(), renewed);
        let due = Validity::of_pem(&renewed.cert_pem).unwrap().renew_at();
        assert!(
            next <= due && next > now,
            "looks again when the next is due"
        );
        // Nothing due: nothing changes.
        renew_due(&ca, &dir, &names(), listen, &serving, now).unwrap();
        assert_eq!(serving.get(), renewed);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
