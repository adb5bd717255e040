//! `vkube`: a virtual Kubernetes control plane in one binary.
//!
//! `vkube serve` runs the API server on a store (embedded SQLite by default); `vkube store status`
//! inspects the store.
#![forbid(unsafe_code)]

mod audit_flags;
mod check;
mod cli;
mod config;
mod controllers;
mod embedded_etcd;
mod encryption;
mod host;
mod host_front;
mod host_kubeconfig;
mod host_proxy;
mod store_tools;
mod sync_config;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use vkube_store::{ListOptions, StoreUrl};

#[derive(Parser)]
#[command(
    name = "vkube",
    version,
    about = "A virtual Kubernetes control plane in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a virtual cluster's API server.
    Serve(Box<ServeArgs>),
    /// Ask every replica directly and compare their answers (exits 1 on any disagreement).
    Check(check::CheckArgs),
    #[command(flatten)]
    Cluster(cli::Command),
    /// The port forward that `vkube connect` runs in the background.
    #[command(hide = true)]
    PortForwardDaemon(cli::connect::PortForwardArgs),
    /// Inspect the store, or move a virtual cluster to another one.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Save a store's keyspace (or a virtual cluster on the host) to a file, or restore it.
    Snapshot {
        #[command(subcommand)]
        command: store_tools::SnapshotCommand,
    },
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Open the store (creating an embedded SQLite database if needed) and print its state.
    Status(StoreArgs),
    /// Copy every key of an offline store into an empty one, then verify the copy.
    Migrate(store_tools::MigrateArgs),
}

#[derive(clap::Args)]
struct StoreArgs {
    /// Directory for vkube's state; the embedded SQLite database lives here.
    #[arg(long, env = "VKUBE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The store: sqlite://PATH, postgres://…, etcd://host:port[,host:port][?prefix=…&ca=…&cert=…&key=…].
    /// Default: SQLite in the data dir.
    #[arg(long, env = "VKUBE_STORE")]
    store: Option<String>,
}

#[derive(clap::Args)]
struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Address to serve HTTPS on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: std::net::SocketAddr,
    /// Extra DNS name or IP address for the serving certificate (repeatable).
    #[arg(long = "tls-san")]
    tls_sans: Vec<String>,
    /// A vcluster.yaml; vkube reads controlPlane.backingStore and the authentication flags in
    /// controlPlane.distro.k8s.apiServer.extraArgs.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The cluster CA's certificate (PEM), given instead of created: in a StatefulSet, one Secret
    /// mounted in every replica. The first replica stores it; a replica given another CA than
    /// the store holds refuses to start. With it, embedded etcd runs with TLS.
    #[arg(long, env = "VKUBE_CA_CERT_FILE", requires = "ca_key_file")]
    ca_cert_file: Option<PathBuf>,
    /// The cluster CA's private key (PEM: PKCS#8, SEC1 or PKCS#1), beside --ca-cert-file.
    #[arg(long, env = "VKUBE_CA_KEY_FILE", requires = "ca_cert_file")]
    ca_key_file: Option<PathBuf>,
    /// The cluster secret (a file of at least 32 bytes) that seals the CA key and the
    /// service-account signing key in the store; every replica needs the same one. Default: the
    /// CA key of --ca-key-file, else DATA-DIR/identity-secret, created on a new cluster's first
    /// start. A replica without the secret of a sealed store refuses to start.
    #[arg(long, env = "VKUBE_IDENTITY_SECRET_FILE")]
    identity_secret_file: Option<PathBuf>,
    #[command(flatten)]
    auth: AuthArgs,
    #[command(flatten)]
    ha: HaArgs,
    #[command(flatten)]
    etcd: embedded_etcd::EmbeddedEtcdArgs,
    /// How often the leader compacts the store's history, as kube-apiserver's flag: `5m`,
    /// `30s`, `1h`; `0` never compacts. List continuations and watches older than one interval
    /// get 410 Gone.
    #[arg(long, default_value = "5m", value_parser = parse_interval)]
    etcd_compaction_interval: std::time::Duration,
    /// The leader's controllers, as kube-controller-manager's flag: `*` for all, `-NAME` to
    /// leave one out (namespace, customresourcedefinition, resourcequota, garbagecollector,
    /// deployment, replicaset, replicationcontroller, statefulset, daemonset, job, cronjob,
    /// ttl-after-finished, disruption, csrsigning, endpoint, endpointslice,
    /// endpointslicemirroring; upstream's `NAME-controller` spellings too).
    #[arg(long, value_delimiter = ',', default_value = "*")]
    controllers: Vec<String>,
    /// Endpoints per EndpointSlice at most, as kube-controller-manager's flag (1 to 1000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=1000))]
    max_endpoints_per_slice: u16,
    /// Requests served at once that change nothing, as kube-apiserver's flag; beyond it, 429
    /// with Retry-After. Watches and exec/attach/log/port-forward are not counted. 0: no limit.
    #[arg(long, default_value_t = 400)]
    max_requests_inflight: usize,
    /// Requests served at once that change something (create, update, patch, delete), as
    /// kube-apiserver's flag; beyond it, 429 with Retry-After. 0: no limit.
    #[arg(long, default_value_t = 200)]
    max_mutating_requests_inflight: usize,
    /// API Priority and Fairness, as kube-apiserver's flag: requests classified by the
    /// FlowSchemas into priority levels that share the sum of the two limits above, with fair
    /// queuing; false: the two in-flight pools instead.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    enable_priority_and_fairness: bool,
    /// An EncryptionConfiguration file (apiserver.config.k8s.io/v1), as kube-apiserver's flag:
    /// the resources it names are encrypted at rest (aescbc, aesgcm, secretbox; identity to
    /// read plain values). Read once at start; there is no automatic reload.
    #[arg(long)]
    encryption_provider_config: Option<PathBuf>,
    /// The longest a request is served before it gets 504 (a Go duration, as kube-apiserver's
    /// flag: `1m0s`, `30s`); a request's `?timeout=` can ask for less. Watches, exec, attach,
    /// logs, port-forward and proxy are not cut.
    #[arg(long, default_value = "1m0s", value_parser = parse_request_timeout)]
    request_timeout: std::time::Duration,
    /// Seconds a watch lasts at least when it names no `timeoutSeconds`: each lasts a random
    /// time between this and twice this (kube-apiserver's flag); 0: until the client leaves.
    #[arg(long, default_value_t = 1800)]
    min_request_timeout: u64,
    #[command(flatten)]
    audit: audit_flags::AuditArgs,
    #[command(flatten)]
    host: host::HostArgs,
}

/// The controllers `--controllers` leaves out; an unknown name is an error that lists them.
fn disabled_controllers(list: &[String]) -> anyhow::Result<Vec<String>> {
    let mut disabled = Vec::new();
    for item in list.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let given = item.strip_prefix('-').unwrap_or(item);
        let name = controllers::canonical(given);
        if name != "*" && !controllers::known().contains(&name) {
            anyhow::bail!(
                "--controllers: unknown controller {given:?}; known: {}",
                controllers::known().join(", ")
            );
        }
        if item.starts_with('-') {
            disabled.push(name.to_string());
        }
    }
    Ok(disabled)
}

/// A Go-style duration of one unit (`300ms`, `30s`, `5m`, `1h`) or plain seconds.
/// `--request-timeout`: a Go duration, not negative.
fn parse_request_timeout(s: &str) -> Result<std::time::Duration, String> {
    match vkube_server::filters::timeout::parse_go_duration(s)? {
        n if n < 0 => Err("--request-timeout can not be negative value".into()),
        n => Ok(std::time::Duration::from_nanos(n as u64)),
    }
}

pub(crate) fn parse_interval(s: &str) -> Result<std::time::Duration, String> {
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &s[digits.len()..];
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 5m, 30s or 0"))?;
    let ms = match unit {
        "ms" => n,
        "" | "s" => n * 1000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m or h)")),
    };
    Ok(std::time::Duration::from_millis(ms))
}

/// Replicas and leader election (vcluster's controlPlane.statefulSet.highAvailability).
#[derive(clap::Args)]
struct HaArgs {
    /// How many replicas serve this virtual cluster (each one a `vkube serve`).
    #[arg(long)]
    replicas: Option<u32>,
    /// This replica's index (default: N of a StatefulSet pod name NAME-N in POD_NAME or HOSTNAME, else 0).
    #[arg(long)]
    replica_id: Option<u32>,
    /// Seconds a leader's lease is valid (default 3; with --config, vcluster's 60).
    #[arg(long)]
    lease_duration: Option<u64>,
    /// Seconds a leader keeps trying to renew before it steps down (default 2; with --config, vcluster's 40).
    #[arg(long)]
    renew_deadline: Option<u64>,
    /// Seconds between election rounds (default 1; with --config, vcluster's 15).
    #[arg(long)]
    retry_period: Option<u64>,
}

/// N of a StatefulSet pod name `NAME-N`.
fn ordinal_of(name: &str) -> Option<u32> {
    name.rsplit_once('-').and_then(|(_, n)| n.parse().ok())
}

/// kube-apiserver's authentication flags, with its defaults.
#[derive(clap::Args)]
struct AuthArgs {
    /// The `iss` of service-account tokens.
    #[arg(long, default_value = vkube_auth::service_account::DEFAULT_ISSUER)]
    service_account_issuer: String,
    /// Audiences the API accepts in service-account tokens (comma-separated; default the issuer).
    #[arg(long, value_delimiter = ',')]
    api_audiences: Vec<String>,
    /// Whether requests without credentials are served as system:anonymous (default true).
    #[arg(long, action = clap::ArgAction::Set)]
    anonymous_auth: Option<bool>,
    /// An AuthenticationConfiguration file (apiserver.config.k8s.io/v1): JWT issuers with claim
    /// mappings and CEL rules. Reloaded when it changes. Exclusive with the --oidc-* flags.
    #[arg(long)]
    authentication_config: Option<PathBuf>,
    /// OIDC issuer (https) whose ID tokens authenticate users.
    #[arg(long)]
    oidc_issuer_url: Option<String>,
    /// The client id every token's `aud` must hold.
    #[arg(long)]
    oidc_client_id: Option<String>,
    /// The claim that names the user (default `sub`).
    #[arg(long)]
    oidc_username_claim: Option<String>,
    /// Prefix for usernames; default `ISSUER#` unless the claim is `email`; `-` for none.
    #[arg(long)]
    oidc_username_prefix: Option<String>,
    /// The claim that lists the user's groups.
    #[arg(long)]
    oidc_groups_claim: Option<String>,
    /// Prefix for group names.
    #[arg(long)]
    oidc_groups_prefix: Option<String>,
    /// key=value a token's claims must hold (repeatable).
    #[arg(long)]
    oidc_required_claim: Vec<String>,
    /// CA bundle for the issuer (default: the system's roots).
    #[arg(long)]
    oidc_ca_file: Option<PathBuf>,
    /// Allowed signing algorithms (default RS256).
    #[arg(long, value_delimiter = ',')]
    oidc_signing_algs: Vec<String>,
}

impl AuthArgs {
    /// The authentication options from these flags and a vcluster.yaml's apiServer extraArgs
    /// (`--name=value` each; flags given on the command line win).
    fn options(&self, extra_args: &[String]) -> Result<vkube_server::AuthOptions> {
        let mut flags = vkube_auth::oidc::Flags::default();
        let mut options = vkube_server::AuthOptions {
            service_account_issuer: self.service_account_issuer.clone(),
            api_audiences: self.api_audiences.clone(),
            oidc: None,
            anonymous: self.anonymous_auth.unwrap_or(true),
            authentication_config: self.authentication_config.clone(),
        };
        let mut anonymous_set = self.anonymous_auth.is_some();
        let mut ignored = Vec::new();
        for arg in extra_args {
            if flags
                .set(arg)
                .map_err(|e| anyhow::anyhow!("extraArgs: {e}"))?
            {
                continue;
            }
            match arg.split_once('=') {
                Some(("--service-account-issuer", v)) => {
                    options.service_account_issuer = v.to_string()
                }
                Some(("--api-audiences", v)) => {
                    options.api_audiences = v.split(',').map(str::to_string).collect()
                }
                Some(("--anonymous-auth", v)) => {
                    anonymous_set = true;
                    options.anonymous = v.parse().map_err(|_| {
                        anyhow::anyhow!("extraArgs: --anonymous-auth={v}: expected true or false")
                    })?
                }
                Some(("--authentication-config", v)) if options.authentication_config.is_none() => {
                    options.authentication_config = Some(PathBuf::from(v))
                }
                // Read by serve(), with the store.
                Some(("--encryption-provider-config", _)) => {}
                _ => ignored.push(arg.clone()),
            }
        }
        if !ignored.is_empty() {
            eprintln!(
                "vkube: warning: controlPlane.distro.k8s.apiServer.extraArgs has flags vkube does not support yet, which it ignores: {}",
                ignored.join(", ")
            );
        }
        let given = [
            ("issuer-url", &self.oidc_issuer_url),
            ("client-id", &self.oidc_client_id),
            ("username-claim", &self.oidc_username_claim),
            ("username-prefix", &self.oidc_username_prefix),
            ("groups-claim", &self.oidc_groups_claim),
            ("groups-prefix", &self.oidc_groups_prefix),
        ];
        for (name, value) in given {
            if let Some(v) = value {
                flags.set(&format!("--oidc-{name}={v}"))?;
            }
        }
        for claim in &self.oidc_required_claim {
            flags.set(&format!("--oidc-required-claim={claim}"))?;
        }
        if let Some(ca) = &self.oidc_ca_file {
            flags.set(&format!("--oidc-ca-file={}", ca.display()))?;
        }
        if !self.oidc_signing_algs.is_empty() {
            flags.signing_algs = self.oidc_signing_algs.clone();
        }
        if let Some(path) = &options.authentication_config {
            if !flags.is_empty() {
                anyhow::bail!(
                    "authentication-config file and oidc-* flags are mutually exclusive: configure the issuer in {} or with the flags, not both",
                    path.display()
                );
            }
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading --authentication-config {}", path.display()))?;
            let file = vkube_auth::oidc::file::parse(&text)
                .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.0))?;
            if file.anonymous.is_some() && anonymous_set {
                anyhow::bail!(
                    "--anonymous-auth flag cannot be set when anonymous field is configured in authentication configuration file {}",
                    path.display()
                );
            }
        }
        options.oidc = flags.to_config()?;
        Ok(options)
    }
}

impl StoreArgs {
    fn data_dir(&self) -> Result<PathBuf> {
        match &self.data_dir {
            Some(dir) => Ok(dir.clone()),
            None => default_data_dir(),
        }
    }

    fn url(&self) -> Result<StoreUrl> {
        if let Some(url) = &self.store {
            return Ok(url.parse()?);
        }
        Ok(StoreUrl::Sqlite {
            path: self.data_dir()?.join("state.db"),
            synchronous: Default::default(),
        })
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => drop(s.recv().await),
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

async fn serve(args: ServeArgs) -> Result<()> {
    let mut url = args.store.url()?;
    let mut extra_args = Vec::new();
    let mut ha = config::HighAvailability::default();
    let mut sync = sync_config::SyncSettings::default();
    let mut embedded = args.etcd.etcd_embedded.then(config::EmbeddedEtcd::default);
    if let Some(file) = &args.config {
        let config = config::load(file)?;
        extra_args = config.api_server_args.clone();
        ha = config.high_availability.clone();
        sync = config.sync.clone();
        if !config.unsupported.is_empty() {
            eprintln!(
                "vkube: warning: {} has keys vkube does not support yet, which it ignores: {}",
                file.display(),
                config.unsupported.join(", ")
            );
        }
        let named = config.store.is_some() || config.embedded_etcd.is_some();
        if named && (args.store.store.is_some() || args.etcd.etcd_embedded) {
            anyhow::bail!(
                "both {} and {}'s controlPlane.backingStore name a store; keep one",
                if args.etcd.etcd_embedded {
                    "--etcd-embedded"
                } else {
                    "--store"
                },
                file.display()
            );
        }
        if let Some(store) = config.store {
            url = store;
        }
        embedded = embedded.or(config.embedded_etcd);
    }
    // Checked before anything starts: a bad file refuses the start.
    let encryption =
        encryption::from_args(args.encryption_provider_config.as_deref(), &extra_args)?;
    // The audit policy is loaded now: a bad one refuses the start, naming the file.
    let (audit, extra_args) = args.audit.options(&extra_args)?;
    if embedded.is_none() && !(args.etcd.etcd_peers.is_empty() && args.etcd.etcd_clients.is_empty())
    {
        anyhow::bail!(
            "--etcd-peers and --etcd-clients describe embedded etcd's members; add --etcd-embedded (or controlPlane.backingStore.etcd.embedded.enabled) or drop them"
        );
    }
    let replicas = args.ha.replicas.or(ha.replicas).unwrap_or(1);
    if replicas > 1
        && embedded.is_none()
        && matches!(url, StoreUrl::Sqlite { .. } | StoreUrl::Memory)
    {
        anyhow::bail!(
            "{replicas} replicas on embedded SQLite: embedded SQLite keeps one database per replica, so replicas would disagree (for example on RBAC); use controlPlane.backingStore.etcd.embedded or an external etcd/PostgreSQL"
        );
    }
    let replica_id = args
        .ha
        .replica_id
        .or_else(|| {
            std::env::var("POD_NAME")
                .ok()
                .as_deref()
                .and_then(ordinal_of)
        })
        .or_else(|| {
            std::env::var("HOSTNAME")
                .ok()
                .as_deref()
                .and_then(ordinal_of)
        })
        .unwrap_or(0);
    let leader = vkube_server::leader::Timing::resolve(
        vkube_server::leader::TimingSeconds {
            lease_duration: args.ha.lease_duration,
            renew_deadline: args.ha.renew_deadline,
            retry_period: args.ha.retry_period,
        },
        args.config
            .as_ref()
            .map(|_| vkube_server::leader::TimingSeconds {
                lease_duration: ha.lease_duration,
                renew_deadline: ha.renew_deadline,
                retry_period: ha.retry_period,
            }),
    )?;
    let given_ca = match (&args.ca_cert_file, &args.ca_key_file) {
        (Some(cert), Some(key)) => Some(vkube_server::identity::GivenCa::from_files(cert, key)?),
        _ => None,
    };
    let data_dir = args.store.data_dir()?;
    let mut host = host::setup(&args.host, &data_dir, args.listen, sync, replica_id).await?;
    if let Some(dns) = host.dns.take() {
        tokio::spawn(dns.serve());
    }
    if let Some(publisher) = host.kubeconfig_publisher.take() {
        tokio::spawn(publisher.run());
    }
    let mut tls_sans = args.tls_sans.clone();
    tls_sans.extend(host.tls_sans.iter().cloned());
    let config = vkube_server::Config {
        listen: args.listen,
        tls_sans,
        data_dir: data_dir.clone(),
        auth: args.auth.options(&extra_args)?,
        replica: format!("vkube-{replica_id}"),
        leader,
        compaction_interval: Some(args.etcd_compaction_interval).filter(|d| !d.is_zero()),
        limits: vkube_server::Limits {
            max_requests_inflight: args.max_requests_inflight,
            max_mutating_requests_inflight: args.max_mutating_requests_inflight,
            priority_and_fairness: args.enable_priority_and_fairness,
        },
        timeouts: vkube_server::filters::Timeouts {
            request_timeout: args.request_timeout,
            min_request_timeout: std::time::Duration::from_secs(args.min_request_timeout),
        },
        leader_tasks: host
            .syncer
            .into_iter()
            .chain(controllers::leader_tasks(
                &disabled_controllers(&args.controllers)?,
                args.max_endpoints_per_slice,
            ))
            .collect(),
        host_proxy: host.proxy,
        host_services: host.services,
        kubernetes_service: host.kubernetes_service,
        advertise_address: args.host.advertise_address(),
        ca: given_ca.clone(),
        identity_secret_file: args.identity_secret_file.clone(),
        audit,
    };
    let member = match embedded {
        Some(embedded) => {
            let place = embedded_etcd::Place {
                replicas,
                replica: replica_id,
                data_dir: &data_dir,
                listen: args.listen,
                advertise: args.host.advertise_address(),
                ca: given_ca.as_ref(),
            };
            let options = args.etcd.options(place, embedded.extra_args)?;
            url = options.store_url();
            let member = embedded_etcd::start(options).await?;
            // Serving (and so being ready) waits for the local member.
            tokio::select! {
                _ = member.wait_healthy() => {}
                _ = shutdown_signal() => {
                    member.stop().await;
                    return Ok(());
                }
            }
            Some(member)
        }
        None => None,
    };
    // Held until the process exits; the OS releases it even on kill -9.
    let _sqlite_lock = match &url {
        StoreUrl::Sqlite { path, .. } => Some(lock_sqlite(path)?),
        _ => None,
    };
    let served = serve_on(url, config, encryption.as_ref()).await;
    if let Some(member) = member {
        member.stop().await;
    }
    served?;
    eprintln!("vkube: shut down");
    Ok(())
}

/// Embedded SQLite serves one replica (DESIGN rule 1), and a second `vkube serve` on the same
/// database is a second replica whether or not it was declared as one: the first holds an
/// exclusive lock on `<database>.lock` while it runs, and a second one is refused. Other
/// readers of the file (`vkube store status`) take no lock.
fn lock_sqlite(path: &std::path::Path) -> Result<std::fs::File> {
    match try_lock_sqlite(path)? {
        (Some(file), _) => Ok(file),
        (None, lock) => anyhow::bail!(
            "another vkube serve is already serving the embedded SQLite database {} (it holds {}); embedded SQLite serves one replica only: stop the other process, give this one its own --data-dir, or run several replicas on a shared store (controlPlane.backingStore.etcd.embedded, an external etcd or PostgreSQL)",
            path.display(),
            lock.display()
        ),
    }
}

/// Takes the exclusive lock on `<database>.lock` that a serving vkube holds: the open file
/// holding it, or `None` when another process holds it; and the lock file's path.
pub(crate) fn try_lock_sqlite(path: &std::path::Path) -> Result<(Option<std::fs::File>, PathBuf)> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock = PathBuf::from(name);
    if let Some(dir) = lock.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .with_context(|| format!("opening {}", lock.display()))?;
    // flock, not fcntl: the lock belongs to this open file, so nothing else this process does
    // with the path can drop it.
    use rustix::fs::{FlockOperation, flock};
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok((Some(file), lock)),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok((None, lock)),
        Err(err) => {
            Err(std::io::Error::from(err)).with_context(|| format!("locking {}", lock.display()))
        }
    }
}

async fn serve_on(
    url: StoreUrl,
    config: vkube_server::Config,
    encryption: Option<&vkube_store::transform::EncryptionConfig>,
) -> Result<()> {
    let shown = redact(&url);
    let store = vkube_store::open_url(&url)
        .await
        .with_context(|| format!("opening {shown}"))?;
    store_tools::refuse_unfinished(store.as_ref(), &shown).await?;
    let store = encryption::wrap(store, encryption);
    let listen = config.listen;
    vkube_server::serve(
        store,
        config,
        |kubeconfig| {
            println!(
                "vkube is serving on https://{listen} ({shown}); use it with: export KUBECONFIG={}",
                kubeconfig.display()
            );
        },
        shutdown_signal(),
    )
    .await?;
    Ok(())
}

fn default_data_dir() -> Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME is not set; pass --data-dir DIR")?;
    Ok(PathBuf::from(home).join(".vkube"))
}

/// A URL fit to print: no password.
fn redact(url: &StoreUrl) -> String {
    match url {
        StoreUrl::Sqlite { path, .. } => format!("sqlite://{}", path.display()),
        StoreUrl::Postgres { url } => match url::Url::parse(url) {
            Ok(mut u) if u.password().is_some() => {
                let _ = u.set_password(Some("***"));
                u.to_string()
            }
            _ => url.clone(),
        },
        StoreUrl::Etcd {
            endpoints, prefix, ..
        } => {
            let hosts: Vec<_> = endpoints
                .iter()
                .map(|e| {
                    e.trim_start_matches("http://")
                        .trim_start_matches("https://")
                })
                .collect();
            format!("etcd://{}?prefix={prefix}", hosts.join(","))
        }
        StoreUrl::Memory => "memory://".into(),
    }
}

/// The stack of each runtime thread. A request's body is read by recursive parsers and walked
/// by recursive code (YAML to 64 levels, JSON to 127, objects, patches, schemas): on tokio's
/// default 2 MiB, a 128-level YAML body overflowed a debug build's worker and aborted the
/// process. Go's goroutine stacks grow to 1 GiB; here only the pages touched are backed.
const THREAD_STACK: usize = 16 << 20;

fn main() -> std::process::ExitCode {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(THREAD_STACK)
        .build()
    {
        Ok(runtime) => runtime.block_on(async_main()),
        Err(err) => {
            eprintln!("vkube: starting the runtime: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn async_main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        // No colour codes in a pod's log or a file, only on a terminal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // Warnings by default (a syncer that cannot reach the host says so); RUST_LOG for more.
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("vkube: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(args) => serve(*args).await?,
        Command::Cluster(command) => cli::run(command).await?,
        Command::PortForwardDaemon(args) => cli::connect::port_forward(args).await?,
        Command::Check(args) => {
            if !check::run(args).await? {
                std::process::exit(1);
            }
        }
        Command::Store {
            command: StoreCommand::Status(args),
        } => {
            let url = args.url()?;
            let shown = redact(&url);
            let store = vkube_store::open_url(&url)
                .await
                .with_context(|| format!("opening {shown}"))?;
            let revision = store.current_revision().await?;
            let keys = store.list("/", ListOptions::default()).await?.items.len();
            println!("store:    {shown}");
            println!("backend:  {}", store.backend());
            println!("revision: {revision}");
            println!("keys:     {keys}");
        }
        Command::Store {
            command: StoreCommand::Migrate(args),
        } => store_tools::migrate(args).await?,
        Command::Snapshot { command } => store_tools::snapshot(command).await?,
    }
    Ok(())
}

#[cfg(test)]
mod controller_flag_tests {
    use super::*;

    #[test]
    fn controllers_are_left_out_by_name_and_unknown_names_refused() {
        let list = |s: &str| s.split(',').map(str::to_string).collect::<Vec<_>>();
        assert_eq!(
            disabled_controllers(&list("*,-deployment-controller,-garbagecollector")).unwrap(),
            ["deployment", "garbagecollector"]
        );
        assert!(disabled_controllers(&list("*")).unwrap().is_empty());
        let err = disabled_controllers(&list("*,-nope"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown controller \"nope\"") && err.contains("statefulset"),
            "{err}"
        );
    }
}
