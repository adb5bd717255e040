//! `vkube serve`'s host cluster: where the syncer runs the virtual cluster's pods.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

/// The service-account files a pod of the host mounts; their presence means "in a pod".
const IN_CLUSTER_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

#[derive(clap::Args)]
pub struct HostArgs {
    /// The host cluster's kubeconfig: the syncer runs this virtual cluster's pods there. Inside a
    /// pod of the host, the pod's own service account is used when this is not given.
    #[arg(long, env = "VKUBE_HOST_KUBECONFIG")]
    host_kubeconfig: Option<PathBuf>,
    /// The host namespace for the virtual cluster's pods (default: the kubeconfig context's
    /// namespace, or the pod's own namespace).
    #[arg(long, env = "VKUBE_HOST_NAMESPACE")]
    host_namespace: Option<String>,
    /// The virtual cluster's name, in the ownership labels of every host object it makes.
    #[arg(long = "name", env = "VKUBE_NAME", default_value = "vkube")]
    name: String,
    /// The address at which pods on the host reach this replica (kube-apiserver's flag): the
    /// endpoint of the host Service through which they reach vkube's API and DNS. Default: the
    /// listen address, if it is a specific one.
    #[arg(long, env = "VKUBE_ADVERTISE_ADDRESS")]
    advertise_address: Option<std::net::IpAddr>,
    /// Where the virtual cluster's DNS server listens (UDP and TCP). Default: port 1053 of the
    /// advertise address (of every address inside a pod of the host).
    #[arg(long, env = "VKUBE_DNS_LISTEN")]
    dns_listen: Option<std::net::SocketAddr>,
    /// Where the virtual cluster's DNS forwards names outside the cluster domain (the host's
    /// DNS). Default: the first nameserver of /etc/resolv.conf.
    #[arg(long, env = "VKUBE_DNS_UPSTREAM")]
    dns_upstream: Option<std::net::SocketAddr>,
}

impl HostArgs {
    /// `--advertise-address` (VKUBE_ADVERTISE_ADDRESS): in a pod, the pod's address.
    pub fn advertise_address(&self) -> Option<IpAddr> {
        self.advertise_address
    }
}

/// Where the host is, if there is one: (client config, namespace).
async fn host_config(args: &HostArgs) -> Result<Option<(kube::Config, String)>> {
    let (config, namespace) = match &args.host_kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading --host-kubeconfig {}", path.display()))?;
            let config = kube::Config::from_custom_kubeconfig(
                kubeconfig,
                &kube::config::KubeConfigOptions::default(),
            )
            .await
            .with_context(|| format!("--host-kubeconfig {}", path.display()))?;
            let ns = config.default_namespace.clone();
            (config, ns)
        }
        None if Path::new(IN_CLUSTER_NAMESPACE).exists()
            && std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() =>
        {
            let config = kube::Config::incluster()
                .context("reading this pod's service account for the host cluster")?;
            let ns = std::fs::read_to_string(IN_CLUSTER_NAMESPACE)?
                .trim()
                .to_string();
            (config, ns)
        }
        None => return Ok(None),
    };
    Ok(Some((
        config,
        args.host_namespace.clone().unwrap_or(namespace),
    )))
}

/// What the server gets from a host: the syncer (leader-only work) and the way to the host's
/// kubelets for pods' logs, exec, attach and port-forward.
#[derive(Default)]
pub struct Host {
    pub syncer: Option<vkube_server::LeaderTask>,
    pub proxy: Option<vkube_server::host_proxy::HostProxyHandle>,
    pub services: Option<vkube_server::host_services::HostServicesHandle>,
    pub kubernetes_service: Option<vkube_server::host_services::KubernetesService>,
    /// Names the serving certificate needs so pods verify it: the host Service's address and
    /// the `kubernetes.default.svc` names.
    pub tls_sans: Vec<String>,
    /// The virtual cluster's DNS server, to run on every replica.
    pub dns: Option<Dns>,
    /// Inside a pod of the host: publishes the admin kubeconfig for `vkube connect`.
    pub kubeconfig_publisher: Option<crate::host_kubeconfig::Publisher>,
}

/// The virtual cluster's DNS server: bound at setup, serving once the API answers.
pub struct Dns {
    sockets: vkube_syncer::dns::Sockets,
    upstream: Option<SocketAddr>,
    kubeconfig: PathBuf,
}

impl Dns {
    /// Serves until the task is aborted; its records come from this replica's own API.
    pub async fn serve(self) {
        // The API this replica is about to serve: watched once it answers.
        let client = loop {
            if let Ok(client) = virtual_client(&self.kubeconfig).await
                && client.apiserver_version().await.is_ok()
            {
                break client;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let records = vkube_syncer::dns::Records::watch(client);
        records.ready().await;
        let server = vkube_syncer::dns::Server {
            upstream: self.upstream,
            records,
        };
        server.run(self.sockets).await;
    }
}

/// The host's parts, if a host is configured. Bad flags fail here, before serving.
pub async fn setup(
    args: &HostArgs,
    data_dir: &Path,
    listen: SocketAddr,
    settings: vkube_syncer::Settings,
    replica: u32,
) -> Result<Host> {
    let Some((host, host_namespace)) = host_config(args).await? else {
        return Ok(Host::default());
    };
    if args.name.is_empty()
        || args.name.len() > 63
        || !args
            .name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        anyhow::bail!(
            "--name {:?}: a virtual cluster's name is 1 to 63 lowercase letters, digits and '-' (it is a label value on the host)",
            args.name
        );
    }
    let host_client = kube::Client::try_from(host).context("the host cluster's client")?;
    let proxy =
        vkube_server::host_proxy::HostProxyHandle(Arc::new(crate::host_proxy::KubeHostProxy {
            client: host_client.clone(),
            namespace: host_namespace.clone(),
            cluster: args.name.clone(),
        }));
    let in_pod = args.host_kubeconfig.is_none();
    let advertise = args
        .advertise_address
        .or_else(|| Some(listen.ip()).filter(|ip| !ip.is_unspecified() && !ip.is_loopback()));
    let dns_listen = args
        .dns_listen
        .unwrap_or_else(|| match (in_pod, advertise) {
            (false, Some(ip)) => SocketAddr::new(ip, 1053),
            _ => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 1053),
        });
    let front = crate::host_front::ensure(
        &host_client,
        &host_namespace,
        &args.name,
        advertise.map(|ip| (ip, listen.port(), dns_listen.port())),
        replica,
    )
    .await?;
    let vkube_ip = front.as_ref().map(|f| f.cluster_ip.clone());
    let mut tls_sans = vec![
        "kubernetes".to_string(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        format!(
            "kubernetes.default.svc.{}",
            vkube_syncer::translate::CLUSTER_DOMAIN
        ),
    ];
    tls_sans.extend(vkube_ip.clone());
    let kubernetes_service = front.map(|f| vkube_server::host_services::KubernetesService {
        cluster_ip: f.cluster_ip,
        endpoint: SocketAddr::new(advertise.unwrap_or(listen.ip()), listen.port()),
    });
    let env = vkube_syncer::translate::Environment {
        cluster: args.name.clone(),
        host_namespace: host_namespace.clone(),
        vkube_ip: vkube_ip.clone(),
    };
    let services = vkube_server::host_services::HostServicesHandle(Arc::new(
        crate::host_front::SyncedServices {
            client: host_client.clone(),
            env,
        },
    ));
    let dns = Dns {
        sockets: vkube_syncer::dns::Sockets::bind(dns_listen)
            .await
            .with_context(|| format!("the virtual cluster's DNS on {dns_listen} (--dns-listen)"))?,
        upstream: args
            .dns_upstream
            .or_else(vkube_syncer::dns::system_upstream),
        kubeconfig: data_dir.join("admin.kubeconfig"),
    };
    let kubeconfig = data_dir.join("admin.kubeconfig");
    let kubeconfig_publisher = in_pod.then(|| crate::host_kubeconfig::Publisher {
        client: host_client.clone(),
        namespace: host_namespace.clone(),
        name: args.name.clone(),
        kubeconfig: kubeconfig.clone(),
        port: listen.port(),
    });
    let (cluster, namespace) = (args.name.clone(), host_namespace);
    eprintln!(
        "vkube: syncing pods to host namespace {namespace} as virtual cluster {cluster}; pods reach vkube at {}",
        vkube_ip
            .as_deref()
            .unwrap_or("(nowhere: give --advertise-address)")
    );
    let sync_services = settings.services;
    let syncer = vkube_server::LeaderTask(Arc::new(move |_: &vkube_server::InProcess| {
        let (host_client, kubeconfig) = (host_client.clone(), kubeconfig.clone());
        let (cluster, namespace) = (cluster.clone(), namespace.clone());
        let (vkube_ip, settings) = (vkube_ip.clone(), settings.clone());
        tokio::spawn(async move {
            loop {
                match virtual_client(&kubeconfig).await {
                    Ok(virtual_client) => {
                        let config = vkube_syncer::Config {
                            virtual_client,
                            host_client: host_client.clone(),
                            host_namespace: namespace.clone(),
                            cluster: cluster.clone(),
                            resync: Duration::from_secs(60),
                            vkube_ip: vkube_ip.clone(),
                            settings: settings.clone(),
                        };
                        if let Err(err) = vkube_syncer::run(config).await {
                            tracing::error!(%err, "syncer stopped; restarting");
                        }
                    }
                    Err(err) => {
                        tracing::error!(%err, "the syncer's client of this virtual cluster")
                    }
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        })
        .abort_handle()
    }));
    Ok(Host {
        syncer: Some(syncer),
        proxy: Some(proxy),
        // Without `sync.toHost.services`, Services keep vkube's own (unroutable) addresses.
        services: sync_services.then_some(services),
        kubernetes_service,
        tls_sans,
        dns: Some(dns),
        kubeconfig_publisher,
    })
}

/// The syncer reaches the virtual cluster through this replica's own API, as the admin.
pub async fn virtual_client(kubeconfig: &Path) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await?;
    Ok(kube::Client::try_from(config)?)
}
