//! Embedded etcd (`--etcd-embedded`, vcluster's `controlPlane.backingStore.etcd.embedded`): each
//! replica runs one member of a real etcd cluster as a child process and supervises it, so N
//! replicas share one linearizable store without an etcd to run beside them.
//!
//! Membership follows etcd's runbook. Replica 0 founds the cluster when no other member answers;
//! every other replica, and replica 0 when the cluster already exists elsewhere, asks a running
//! member to add it (`member add`) and starts with `--initial-cluster-state existing`. A replica
//! whose data dir is empty but whose member is still listed removes that member first, because
//! the cluster would otherwise wait for a log the new process does not have. A member that exits
//! is started again, with backoff; if it was removed from the cluster meanwhile, its old data is
//! moved aside and it joins anew.
//!
//! A replica never founds a second cluster once one exists. Each member, once up, records the
//! ID of its cluster in `<data-dir>/etcd/cluster-id`. A replica whose etcd data is gone but whose
//! record is there was a member of that cluster: it only ever joins it again, and waits (saying
//! so) while no member of it answers, instead of founding a new one after the grace period. It
//! joins only a member that answers for the recorded cluster, never another one at the same
//! address. Founding anew is an explicit act, for a cluster that is really lost: delete
//! `<data-dir>/etcd/cluster-id` on that replica (the message that says it waits names the file).
//! That record and the joining are in [`founding`].
//!
//! In a StatefulSet pod the members are the StatefulSet's pods, at their stable names
//! ([`args::StatefulSetPod`]); elsewhere `--etcd-peers` lists them. With the cluster CA in files,
//! peers and clients speak TLS and must present a certificate of that CA ([`tls`]). A member
//! listens on the addresses its URLs name; for a URL that names a host (a pod's FQDN), on the
//! pod's address, and for clients on 127.0.0.1 too: never on every address.

mod args;
mod founding;
#[cfg(test)]
mod tests;
mod tls;

pub use args::{EmbeddedEtcdArgs, Place};

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use etcd_client::{Client, ConnectOptions, GetOptions};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use founding::{Bootstrap, bootstrap, founding_token, record_when_up, removed};

/// Restart delays of a member that exits: from the first to the largest.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(5));
/// A member that ran this long before exiting is restarted after the first delay again.
const STABLE: Duration = Duration::from_secs(30);
/// How long one request to a member may take during membership changes and health checks.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// One replica's member: its place in the replica list and the URLs of every member.
#[derive(Clone, Debug)]
pub struct Options {
    pub binary: PathBuf,
    /// `<data-dir>/etcd`: the member's data (`data/`), log (`etcd.log`) and pid (`etcd.pid`).
    pub dir: PathBuf,
    pub replica: usize,
    /// The peer URL of each replica's member, by replica index.
    pub peers: Vec<String>,
    /// The client URL of each replica's member, by replica index.
    pub clients: Vec<String>,
    /// More flags for etcd (vcluster's `embedded.extraArgs`); they come last, so they win.
    pub extra_args: Vec<String>,
    /// The pod's address: where the member listens when its URLs name a host.
    pub advertise: Option<IpAddr>,
    /// TLS for clients and peers, with certificates from the cluster CA; `None`: plain HTTP.
    pub tls: Option<tls::Tls>,
}

/// A member's name: the replica's name.
pub fn member_name(replica: usize) -> String {
    format!("vkube-{replica}")
}

/// `--etcd-peers`/`--etcd-clients`: URLs in replica order, or `N=URL` items in any order.
pub fn parse_urls(flag: &str, items: &[String], replicas: usize) -> Result<Vec<String>> {
    let mut urls = vec![None; replicas];
    for (position, item) in items.iter().enumerate() {
        let (index, url) = match item.split_once('=') {
            Some((n, url)) if !n.contains(':') => (
                n.trim().parse::<usize>().with_context(|| {
                    format!("--{flag}: {item:?}: expected N=URL with N a replica index")
                })?,
                url.trim(),
            ),
            _ => (position, item.trim()),
        };
        let parsed = url::Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.port().is_some());
        if parsed.is_none() {
            bail!("--{flag}: {url:?} is not an http://HOST:PORT URL");
        }
        match urls.get_mut(index) {
            Some(slot @ None) => *slot = Some(url.trim_end_matches('/').to_string()),
            Some(Some(_)) => bail!("--{flag}: replica {index} is named twice"),
            None => bail!("--{flag}: replica {index} does not exist with {replicas} replicas"),
        }
    }
    urls.into_iter()
        .enumerate()
        .map(|(i, u)| u.with_context(|| format!("--{flag}: no URL for replica {i} (one URL per replica, e.g. --{flag} http://10.0.0.1:2380,http://10.0.0.2:2380,http://10.0.0.3:2380)")))
        .collect()
}

/// The client URL beside a peer URL: its host with etcd's client port, 2379.
pub fn client_url_of(peer: &str) -> Result<String> {
    let mut url = url::Url::parse(peer).with_context(|| format!("peer URL {peer:?}"))?;
    url.set_port(Some(2379))
        .map_err(|()| anyhow::anyhow!("peer URL {peer:?} has no host"))?;
    Ok(url.as_str().trim_end_matches('/').to_string())
}

impl Options {
    fn name(&self) -> String {
        member_name(self.replica)
    }

    fn peer(&self) -> &str {
        &self.peers[self.replica]
    }

    fn client(&self) -> &str {
        &self.clients[self.replica]
    }

    /// The store's endpoints: this replica's member first, then the others.
    pub fn endpoints(&self) -> Vec<String> {
        let n = self.clients.len();
        (0..n)
            .map(|i| self.clients[(self.replica + i) % n].clone())
            .collect()
    }

    /// The store on these members: this replica's first, with vkube's client certificate.
    pub fn store_url(&self) -> vkube_store::StoreUrl {
        vkube_store::StoreUrl::Etcd {
            endpoints: self.endpoints(),
            prefix: String::new(),
            tls: self.tls.as_ref().map(tls::Tls::store),
        }
    }

    /// A client of the member at `endpoint`, with TLS when the members use it.
    async fn connect(
        &self,
        endpoint: &str,
        require_leader: bool,
    ) -> Result<Client, etcd_client::Error> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(REQUEST_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_require_leader(require_leader);
        if let Some(tls) = &self.tls {
            options = options.with_tls(tls.client.clone());
        }
        Client::connect([endpoint], Some(options)).await
    }

    /// The other members' client URLs, which answer membership questions.
    fn others(&self) -> impl Iterator<Item = &String> {
        self.clients
            .iter()
            .enumerate()
            .filter(move |(i, _)| *i != self.replica)
            .map(|(_, c)| c)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Where the ID of this member's cluster is recorded.
    fn cluster_file(&self) -> PathBuf {
        self.dir.join("cluster-id")
    }
}

/// The running member and its supervisor.
pub struct Member {
    options: Arc<Options>,
    stop: watch::Sender<bool>,
    running: watch::Receiver<Option<Running>>,
    supervisor: tokio::task::JoinHandle<()>,
}

/// The etcd process the supervisor runs now.
#[derive(Clone, Copy, Debug)]
struct Running {
    pid: u32,
    /// Its member ID, when it joined by `member add` (which returned it).
    id: Option<u64>,
}

/// Checks the binary, then starts the member under a supervisor.
pub async fn start(options: Options) -> Result<Member> {
    let version = std::process::Command::new(&options.binary)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success());
    let Some(version) = version else {
        bail!(
            "embedded etcd needs the etcd binary, and {:?} did not run: install etcd (apt-get install etcd-server) or name it with --etcd-binary PATH",
            options.binary
        );
    };
    let version = String::from_utf8_lossy(&version.stdout);
    eprintln!(
        "vkube: embedded etcd member {} ({}) at {}, peers {}",
        options.name(),
        version.lines().next().unwrap_or("etcd").trim(),
        options.client(),
        options.peers.join(",")
    );
    std::fs::create_dir_all(&options.dir)
        .with_context(|| format!("creating {}", options.dir.display()))?;
    let options = Arc::new(options);
    let (stop, stopped) = watch::channel(false);
    let (running_tx, running) = watch::channel(None);
    let supervisor = tokio::spawn(supervise(options.clone(), stopped, running_tx));
    Ok(Member {
        options,
        stop,
        running,
        supervisor,
    })
}

impl Member {
    /// Resolves once this replica's member serves a linearizable read: it runs, has a leader
    /// and has caught up. vkube serves (and so reports ready) only after that. Only the process
    /// the supervisor started counts: a previous one may still answer at the same URL for a
    /// moment after a restart of vkube.
    pub async fn wait_healthy(&self) {
        let started = Instant::now();
        let mut said = Instant::now();
        loop {
            let running = *self.running.borrow();
            if let Some(running) = running {
                if healthy(&self.options, running.id).await {
                    return;
                }
            }
            if said.elapsed() > Duration::from_secs(10) {
                let process =
                    running.map_or("not started yet".into(), |r| format!("pid {}", r.pid));
                eprintln!(
                    "vkube: waiting for etcd member {} ({process}) to be healthy ({:.0?} so far; its log: {})",
                    self.options.name(),
                    started.elapsed(),
                    self.options.dir.join("etcd.log").display()
                );
                said = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops the member (SIGTERM, then SIGKILL after 10 s) and its supervisor.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.supervisor.await;
    }
}

/// Whether this replica's member (with member ID `id`, when known) serves a linearizable read
/// within the request timeout.
async fn healthy(options: &Options, id: Option<u64>) -> bool {
    let check = async {
        let client = options.connect(options.client(), true).await.ok()?;
        if let Some(id) = id {
            let status = client.maintenance_client().status().await.ok()?;
            if status.header().map(|h| h.member_id()) != Some(id) {
                return None;
            }
        }
        let mut kv = client.kv_client();
        kv.get("health", Some(GetOptions::new().with_count_only()))
            .await
            .ok()
    };
    matches!(
        tokio::time::timeout(REQUEST_TIMEOUT, check).await,
        Ok(Some(_))
    )
}

/// Starts the member, waits for it to exit and starts it again, until told to stop.
async fn supervise(
    options: Arc<Options>,
    mut stop: watch::Receiver<bool>,
    running: watch::Sender<Option<Running>>,
) {
    let mut backoff = BACKOFF.0;
    loop {
        let started = Instant::now();
        let launched = tokio::select! {
            launched = launch(&options) => launched,
            _ = stop.changed() => return,
        };
        match launched {
            Ok((mut child, id)) => {
                let pid = child.id().unwrap_or(0);
                let _ = std::fs::write(options.dir.join("etcd.pid"), format!("{pid}\n"));
                running.send_replace(Some(Running { pid, id }));
                let exited = tokio::select! {
                    () = record_when_up(&options) => unreachable!("it waits forever"),
                    status = child.wait() => {
                        eprintln!(
                            "vkube: etcd member {} (pid {pid}) exited ({}); restarting it (its log: {})",
                            options.name(),
                            status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()),
                            options.dir.join("etcd.log").display()
                        );
                        true
                    }
                    _ = stop.changed() => false,
                };
                running.send_replace(None);
                if !exited {
                    terminate(&mut child, pid).await;
                    return;
                }
            }
            Err(err) => eprintln!(
                "vkube: etcd member {} cannot start yet: {err:#}",
                options.name()
            ),
        }
        if started.elapsed() > STABLE {
            backoff = BACKOFF.0;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(BACKOFF.1);
    }
}

/// SIGTERM (etcd then closes its files and leaves its peers cleanly), SIGKILL after 10 s.
async fn terminate(child: &mut Child, pid: u32) {
    let _ = Command::new("kill")
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .status()
        .await;
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

/// Prepares the data dir and membership, then spawns etcd (and says which member ID it has, when
/// known).
async fn launch(options: &Options) -> Result<(Child, Option<u64>)> {
    wait_until_free(options).await;
    let data = options.data();
    let bootstrap = if has_wal(&data) {
        if removed(options).await {
            let aside = options.dir.join(format!("data.removed-{}", unix_now()));
            eprintln!(
                "vkube: etcd member {} was removed from the cluster; moving its data to {} and joining again",
                options.name(),
                aside.display()
            );
            std::fs::rename(&data, &aside)
                .with_context(|| format!("moving {} aside", data.display()))?;
            bootstrap(options).await?
        } else {
            // etcd reads its membership from its own data then; the flags only have to parse.
            Bootstrap {
                initial_cluster: format!("{}={}", options.name(), options.peer()),
                state: "existing",
                id: None,
            }
        }
    } else {
        // A data dir without a WAL is a start that failed before the member existed.
        if data.exists() {
            std::fs::remove_dir_all(&data)
                .with_context(|| format!("clearing {}", data.display()))?;
        }
        bootstrap(options).await?
    };
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(options.dir.join("etcd.log"))
        .context("opening etcd.log")?;
    let mut command = Command::new(&options.binary);
    command
        .arg(format!("--name={}", options.name()))
        .arg(format!("--data-dir={}", data.display()))
        .arg(format!(
            "--listen-client-urls={}",
            listen_urls(options.client(), options.advertise, true)?
        ))
        .arg(format!("--advertise-client-urls={}", options.client()))
        .arg(format!(
            "--listen-peer-urls={}",
            listen_urls(options.peer(), options.advertise, false)?
        ))
        .arg(format!("--initial-advertise-peer-urls={}", options.peer()))
        .arg(format!("--initial-cluster={}", bootstrap.initial_cluster))
        .arg(format!("--initial-cluster-state={}", bootstrap.state))
        .arg(format!(
            "--initial-cluster-token={}",
            founding_token(bootstrap.state)
        ))
        .args(["--logger=zap", "--log-outputs=stderr", "--log-level=warn"])
        .args(options.tls.iter().flat_map(tls::Tls::etcd_args))
        .args(&options.extra_args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: a Ctrl-C in a terminal reaches vkube, which stops etcd last.
        .process_group(0)
        .kill_on_drop(true);
    let child = command
        .spawn()
        .with_context(|| format!("starting {}", options.binary.display()))?;
    if let Some(pid) = child.id() {
        watch_parent(pid);
    }
    Ok((child, bootstrap.id))
}

/// Waits (up to 30 s) until nothing answers at this member's client and peer addresses: after
/// a `kill -9` of vkube its previous etcd stops only when the watchdog notices, and until then it
/// holds the ports and would answer health checks meant for the new one.
async fn wait_until_free(options: &Options) {
    let addresses: Vec<String> = [options.client(), options.peer()]
        .iter()
        .filter_map(|u| url::Url::parse(u).ok())
        .filter_map(|u| Some(format!("{}:{}", u.host_str()?, u.port()?)))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    for address in addresses {
        while Instant::now() < deadline {
            let probe = tokio::net::TcpStream::connect(address.as_str());
            match tokio::time::timeout(Duration::from_millis(500), probe).await {
                Ok(Ok(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
                _ => break,
            }
        }
    }
}

/// What etcd listens on for an advertised URL: its address, when it names one; for a host name
/// (a pod's FQDN), the pod's address (`advertise`, else the name's addresses as the resolver
/// gives them, /etc/hosts first), and for clients (`loopback`) 127.0.0.1 too, so that nothing
/// listens on every address.
fn listen_urls(advertised: &str, advertise: Option<IpAddr>, loopback: bool) -> Result<String> {
    let url = url::Url::parse(advertised).with_context(|| format!("URL {advertised:?}"))?;
    let port = url.port().context("a URL without a port")?;
    let scheme = url.scheme();
    let at = |ip: IpAddr| match ip {
        IpAddr::V4(ip) => format!("{scheme}://{ip}:{port}"),
        IpAddr::V6(ip) => format!("{scheme}://[{ip}]:{port}"),
    };
    let mut ips: Vec<IpAddr> = match url.host() {
        Some(url::Host::Ipv4(ip)) => return Ok(at(ip.into())),
        Some(url::Host::Ipv6(ip)) => return Ok(at(ip.into())),
        Some(url::Host::Domain(name)) => match advertise {
            Some(ip) => vec![ip],
            None => {
                use std::net::ToSocketAddrs;
                let resolved: Vec<IpAddr> = (name, port)
                    .to_socket_addrs()
                    .map(|a| a.map(|a| a.ip()).collect())
                    .unwrap_or_default();
                if resolved.is_empty() {
                    bail!(
                        "embedded etcd's URL {advertised} names {name}, which does not resolve here, and no --advertise-address (VKUBE_ADVERTISE_ADDRESS) says which address to listen on"
                    );
                }
                resolved
            }
        },
        None => bail!("URL {advertised:?} has no host"),
    };
    if loopback {
        ips.push(IpAddr::from([127, 0, 0, 1]));
    }
    ips.dedup();
    if let Some(any) = ips.iter().find(|ip| ip.is_unspecified()) {
        bail!("embedded etcd listens on its pod's address, never on {any}");
    }
    Ok(ips.into_iter().map(at).collect::<Vec<_>>().join(","))
}

/// A `kill -9` of vkube runs no destructor; this watchdog stops etcd once vkube is gone, so no
/// member outlives its replica (and a restarted replica can bind its ports again).
fn watch_parent(child: u32) {
    let script = format!(
        "(while kill -0 {parent} 2>/dev/null; do kill -0 {child} 2>/dev/null || exit 0; sleep 1; done; kill {child} 2>/dev/null) &",
        parent = std::process::id()
    );
    let _ = std::process::Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Whether `data` holds a member: etcd's write-ahead log exists.
pub(crate) fn has_wal(data: &Path) -> bool {
    std::fs::read_dir(data.join("member").join("wal")).is_ok_and(|dir| {
        dir.flatten()
            .any(|e| e.path().extension().is_some_and(|x| x == "wal"))
    })
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
