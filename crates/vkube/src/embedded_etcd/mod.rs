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

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use etcd_client::{Client, ConnectOptions, GetOptions};
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// How long replica 0, its data dir empty, looks for running members before it founds a new
/// cluster: after a full restart the others may still be starting, and founding a second cluster
/// beside them would split the state.
const FOUNDING_GRACE: Duration = Duration::from_secs(2);
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

/// The cluster this replica's member belonged to, as recorded; `None` when nothing is.
fn recorded_cluster(options: &Options) -> Result<Option<u64>> {
    let file = options.cluster_file();
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    let id = u64::from_str_radix(text.trim(), 16).with_context(|| {
        format!(
            "{} holds {:?}, not an etcd cluster ID (hex); delete it only to found a new cluster",
            file.display(),
            text.trim()
        )
    })?;
    Ok(Some(id))
}

/// Records `cluster` as this member's (written whole, then renamed, so a crash leaves the old
/// record or the new one).
fn record_cluster(options: &Options, cluster: u64) -> Result<()> {
    let file = options.cluster_file();
    let tmp = options.dir.join("cluster-id.tmp");
    std::fs::write(&tmp, format!("{cluster:x}\n"))
        .and_then(|()| std::fs::rename(&tmp, &file))
        .with_context(|| format!("writing {}", file.display()))
}

/// The cluster ID the member at `client` reports (its own status: no quorum needed).
async fn cluster_of(client: &str) -> Option<u64> {
    let ask = async {
        let mut client = connect(client, false).await.ok()?;
        let status = client.status().await.ok()?;
        status.header().map(|h| h.cluster_id())
    };
    tokio::time::timeout(REQUEST_TIMEOUT, ask)
        .await
        .ok()
        .flatten()
}

/// Once the member answers, records its cluster (then waits forever: it runs beside the
/// member's process in the supervisor).
async fn record_when_up(options: &Options) {
    loop {
        if let Some(cluster) = cluster_of(options.client()).await {
            match recorded_cluster(options) {
                Ok(Some(recorded)) if recorded == cluster => {}
                Ok(recorded) => {
                    if let Some(recorded) = recorded {
                        eprintln!(
                            "vkube: etcd member {} runs in cluster {cluster:x}, not in the recorded {recorded:x}; recording {cluster:x}",
                            options.name()
                        );
                    }
                    if let Err(err) = record_cluster(options, cluster) {
                        eprintln!("vkube: {err:#}");
                    }
                }
                Err(err) => eprintln!("vkube: {err:#}"),
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    std::future::pending::<()>().await
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
                if healthy(self.options.client(), running.id).await {
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

/// Whether the member at `client` (with member ID `id`, when known) serves a linearizable read
/// within the request timeout.
async fn healthy(client: &str, id: Option<u64>) -> bool {
    let check = async {
        let client = connect(client, true).await.ok()?;
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

async fn connect(endpoint: &str, require_leader: bool) -> Result<Client, etcd_client::Error> {
    let options = ConnectOptions::new()
        .with_connect_timeout(REQUEST_TIMEOUT)
        .with_timeout(REQUEST_TIMEOUT)
        .with_require_leader(require_leader);
    Client::connect([endpoint], Some(options)).await
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

/// etcd's `--initial-cluster-token`, which only a founding member reads: etcd derives the member
/// and cluster IDs from it and the peer URLs, so a token of each founding's own gives each cluster
/// an ID of its own. With one fixed token, replica 0 founding again at the same address would
/// get the very ID of the cluster it split from, and the ID could not tell them apart.
fn founding_token(state: &str) -> String {
    if state != "new" {
        return "vkube".into();
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("vkube-{nanos:x}-{:x}", std::process::id())
}

/// How the member starts: alone, founding the cluster, or joining the existing one.
struct Bootstrap {
    initial_cluster: String,
    state: &'static str,
    /// The member ID `member add` gave it.
    id: Option<u64>,
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
            listen_url(options.client())?
        ))
        .arg(format!("--advertise-client-urls={}", options.client()))
        .arg(format!(
            "--listen-peer-urls={}",
            listen_url(options.peer())?
        ))
        .arg(format!("--initial-advertise-peer-urls={}", options.peer()))
        .arg(format!("--initial-cluster={}", bootstrap.initial_cluster))
        .arg(format!("--initial-cluster-state={}", bootstrap.state))
        .arg(format!(
            "--initial-cluster-token={}",
            founding_token(bootstrap.state)
        ))
        .args(["--logger=zap", "--log-outputs=stderr", "--log-level=warn"])
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

/// What etcd listens on for an advertised URL: its address, or every address for a DNS name
/// (etcd binds IP addresses only).
fn listen_url(advertised: &str) -> Result<String> {
    let url = url::Url::parse(advertised).with_context(|| format!("URL {advertised:?}"))?;
    let port = url.port().context("a URL without a port")?;
    Ok(match url.host() {
        Some(url::Host::Ipv4(ip)) => format!("{}://{ip}:{port}", url.scheme()),
        Some(url::Host::Ipv6(ip)) => format!("{}://[{ip}]:{port}", url.scheme()),
        _ => format!("{}://0.0.0.0:{port}", url.scheme()),
    })
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
fn has_wal(data: &Path) -> bool {
    std::fs::read_dir(data.join("member").join("wal")).is_ok_and(|dir| {
        dir.flatten()
            .any(|e| e.path().extension().is_some_and(|x| x == "wal"))
    })
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Another member that answered: where, its cluster's ID and members, and a client to it.
struct Found {
    endpoint: String,
    cluster: u64,
    members: Vec<etcd_client::Member>,
    client: Client,
}

/// The first other member that answers, with the cluster's members.
async fn find_cluster(options: &Options) -> Option<Found> {
    for endpoint in options.others() {
        let ask = async {
            let mut client = connect(endpoint, false).await.ok()?;
            let list = client.member_list().await.ok()?;
            Some(Found {
                endpoint: endpoint.clone(),
                cluster: list.header()?.cluster_id(),
                members: list.members().to_vec(),
                client,
            })
        };
        if let Ok(Some(found)) = tokio::time::timeout(REQUEST_TIMEOUT, ask).await {
            return Some(found);
        }
    }
    None
}

/// Whether `found` answers for another cluster than the recorded one (then it must not be
/// joined, nor believed about this member's membership).
fn foreign(recorded: Option<u64>, found: &Found) -> bool {
    recorded.is_some_and(|r| r != found.cluster)
}

/// Whether the cluster, asked through another member of it, no longer lists this one.
async fn removed(options: &Options) -> bool {
    let recorded = recorded_cluster(options).ok().flatten();
    match find_cluster(options).await {
        Some(found) if !foreign(recorded, &found) => !found
            .members
            .iter()
            .any(|m| m.peer_urls().iter().any(|u| u == options.peer())),
        _ => false,
    }
}

/// Founds the cluster (replica 0, when no other member answers) or joins it: removes a stale
/// member of this name or peer URL, adds this one, and starts from the membership the add
/// returned. Retries until it succeeds, since a join has to wait for quorum and for etcd's
/// reconfiguration checks (one unstarted member at a time, peers connected for 5 s).
async fn bootstrap(options: &Options) -> Result<Bootstrap> {
    let started = Instant::now();
    // Set once this replica's member has been up: it then never founds a cluster again.
    let recorded = recorded_cluster(options)?;
    let file = options.cluster_file();
    // When it last said why it waits: once at first, then every 5 s.
    let mut said: Option<Instant> = None;
    let mut due = || {
        let due = said.is_none_or(|at| at.elapsed() > Duration::from_secs(5));
        if due {
            said = Some(Instant::now());
        }
        due
    };
    loop {
        // Why it has not started yet, if it should say so.
        let waiting = match find_cluster(options).await {
            Some(found) if foreign(recorded, &found) => Some(format!(
                "vkube: etcd member {} belongs to cluster {:x} (recorded in {}), but the member at {} answers for cluster {:x}; it joins no other cluster and waits for a member of its own",
                options.name(),
                recorded.unwrap_or_default(),
                file.display(),
                found.endpoint,
                found.cluster
            )),
            Some(mut found) => match join(options, &mut found.client, &found.members).await {
                Ok(bootstrap) => return Ok(bootstrap),
                Err(err) => Some(format!(
                    "vkube: etcd member {} cannot join yet: {err:#}; retrying",
                    options.name()
                )),
            },
            None if recorded.is_some() => {
                let others: Vec<String> = options.others().cloned().collect();
                let waits = if others.is_empty() {
                    "it has no other member, and will not found a new cluster by itself".into()
                } else {
                    format!(
                        "it waits for a member of that cluster to answer at {} and will not found a new one",
                        others.join(",")
                    )
                };
                Some(format!(
                    "vkube: etcd member {} has no data but belongs to cluster {:x} (recorded in {}); {waits}. Only if that cluster is lost for good: delete {} to found a new, empty cluster from this replica",
                    options.name(),
                    recorded.unwrap_or_default(),
                    file.display(),
                    file.display()
                ))
            }
            None if options.replica == 0
                && (options.peers.len() == 1 || started.elapsed() >= FOUNDING_GRACE) =>
            {
                eprintln!(
                    "vkube: no other etcd member answers; {} founds the cluster",
                    options.name()
                );
                return Ok(Bootstrap {
                    initial_cluster: format!("{}={}", options.name(), options.peer()),
                    state: "new",
                    id: None,
                });
            }
            None if options.replica != 0 => Some(format!(
                "vkube: etcd member {} waits for a member of the cluster to answer at {}",
                options.name(),
                options.others().cloned().collect::<Vec<_>>().join(",")
            )),
            None => None,
        };
        if let Some(why) = waiting
            && due()
        {
            eprintln!("{why}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn join(
    options: &Options,
    client: &mut Client,
    members: &[etcd_client::Member],
) -> Result<Bootstrap> {
    let timeout = |what: &'static str| move |_| anyhow::anyhow!("{what}: timed out");
    for stale in members
        .iter()
        .filter(|m| m.name() == options.name() || m.peer_urls().iter().any(|u| u == options.peer()))
    {
        eprintln!(
            "vkube: etcd member {} ({:x}) is listed but this replica has no data: removing it to add it anew",
            options.name(),
            stale.id()
        );
        tokio::time::timeout(REQUEST_TIMEOUT, client.member_remove(stale.id()))
            .await
            .map_err(timeout("member remove"))?
            .context("member remove")?;
    }
    let added = tokio::time::timeout(
        REQUEST_TIMEOUT,
        client.member_add([options.peer().to_string()], None),
    )
    .await
    .map_err(timeout("member add"))?
    .context("member add")?;
    let new_id = added.member().map(|m| m.id());
    // Members that have not started yet have no name: theirs comes from the replica list.
    let mut cluster = Vec::new();
    for m in added.member_list() {
        let name = if Some(m.id()) == new_id {
            options.name()
        } else if !m.name().is_empty() {
            m.name().to_string()
        } else if let Some(i) = options.peers.iter().position(|p| m.peer_urls().contains(p)) {
            member_name(i)
        } else {
            continue;
        };
        cluster.extend(m.peer_urls().iter().map(|u| format!("{name}={u}")));
    }
    eprintln!(
        "vkube: etcd member {} added to the cluster ({})",
        options.name(),
        cluster.join(",")
    );
    Ok(Bootstrap {
        initial_cluster: cluster.join(","),
        state: "existing",
        id: new_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_by_position_or_index() {
        let by_position = parse_urls(
            "etcd-peers",
            &[
                "http://10.0.0.1:2380".into(),
                "http://10.0.0.2:2380/".into(),
            ],
            2,
        )
        .unwrap();
        assert_eq!(
            by_position,
            ["http://10.0.0.1:2380", "http://10.0.0.2:2380"]
        );
        let by_index = parse_urls(
            "etcd-peers",
            &["1=http://b:2380".into(), "0=http://a:2380".into()],
            2,
        )
        .unwrap();
        assert_eq!(by_index, ["http://a:2380", "http://b:2380"]);
        let err = |items: &[&str], n| {
            let items: Vec<String> = items.iter().map(|s| s.to_string()).collect();
            parse_urls("etcd-peers", &items, n).unwrap_err().to_string()
        };
        assert!(err(&["http://a:2380"], 2).contains("no URL for replica 1"));
        assert!(err(&["0=http://a:2380", "0=http://b:2380"], 2).contains("named twice"));
        assert!(err(&["a:2380"], 1).contains("not an http://HOST:PORT URL"));
        assert!(err(&["3=http://a:2380"], 3).contains("does not exist"));
    }

    #[test]
    fn client_and_listen_urls() {
        assert_eq!(
            client_url_of("http://vkube-1.vkube-headless:2380").unwrap(),
            "http://vkube-1.vkube-headless:2379"
        );
        assert_eq!(
            listen_url("http://127.0.0.3:4001").unwrap(),
            "http://127.0.0.3:4001"
        );
        assert_eq!(
            listen_url("http://vkube-1.vkube-headless:2380").unwrap(),
            "http://0.0.0.0:2380"
        );
    }

    /// Two replicas' URLs on loopback ports free now.
    fn two_replicas(dir: &Path) -> Options {
        let ports: Vec<std::net::TcpListener> = (0..4)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let url = |i: usize| format!("http://127.0.0.1:{}", ports[i].local_addr().unwrap().port());
        Options {
            binary: "etcd".into(),
            dir: dir.to_path_buf(),
            replica: 0,
            peers: vec![url(0), url(1)],
            clients: vec![url(2), url(3)],
            extra_args: vec![],
        }
    }

    async fn recorded_soon(options: &Options) -> u64 {
        for _ in 0..100 {
            if let Some(id) = recorded_cluster(options).unwrap() {
                return id;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "no cluster ID recorded in {}",
            options.cluster_file().display()
        );
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "vkube-{name}-{}-{}",
            std::process::id(),
            unix_now()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn a_replica_that_lost_its_etcd_data_never_founds_a_second_cluster() {
        let dir = temp_dir("refound");
        let options = two_replicas(&dir);
        // First start: no peer answers, nothing recorded: replica 0 founds the cluster.
        let member = start(options.clone()).await.unwrap();
        tokio::time::timeout(Duration::from_secs(20), member.wait_healthy())
            .await
            .expect("replica 0 founds the cluster");
        let first = recorded_soon(&options).await;
        member.stop().await;

        // Its etcd data is lost; the other replica does not answer (yet). Founding now would
        // split the cluster: it must wait, well past the founding grace.
        std::fs::remove_dir_all(options.data()).unwrap();
        let member = start(options.clone()).await.unwrap();
        assert!(
            tokio::time::timeout(FOUNDING_GRACE * 4, member.wait_healthy())
                .await
                .is_err(),
            "a member of cluster {first:x} founded a new cluster"
        );
        member.stop().await;

        // The explicit, documented act: delete the record. Then it founds a new cluster.
        std::fs::remove_file(options.cluster_file()).unwrap();
        let member = start(options.clone()).await.unwrap();
        tokio::time::timeout(Duration::from_secs(20), member.wait_healthy())
            .await
            .expect("a replica told to found anew does");
        assert_ne!(recorded_soon(&options).await, first);
        member.stop().await;
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_member_of_another_cluster_is_not_joined() {
        let dir = temp_dir("foreign");
        let options = two_replicas(&dir);
        // Replica 1's address is served by a member of an unrelated, single-member cluster.
        let other = dir.join("other");
        let mut foreign = tokio::process::Command::new("etcd")
            .arg("--name=other")
            .arg(format!("--data-dir={}", other.display()))
            .arg(format!("--listen-client-urls={}", options.clients[1]))
            .arg(format!("--advertise-client-urls={}", options.clients[1]))
            .arg(format!("--listen-peer-urls={}", options.peers[1]))
            .arg(format!(
                "--initial-advertise-peer-urls={}",
                options.peers[1]
            ))
            .arg(format!("--initial-cluster=other={}", options.peers[1]))
            .arg("--log-level=error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let foreign_cluster = loop {
            if let Some(id) = cluster_of(&options.clients[1]).await {
                break id;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        // Replica 0 was a member of another cluster, and has lost its data.
        std::fs::create_dir_all(&dir).unwrap();
        record_cluster(&options, foreign_cluster ^ 1).unwrap();
        let member = start(options.clone()).await.unwrap();
        assert!(
            tokio::time::timeout(FOUNDING_GRACE * 3, member.wait_healthy())
                .await
                .is_err()
        );
        member.stop().await;
        let mut client = connect(&options.clients[1], false).await.unwrap();
        let members = client.member_list().await.unwrap().members().len();
        assert_eq!(members, 1, "replica 0 was added to a cluster not its own");
        foreign.kill().await.unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn endpoints_start_with_the_local_member() {
        let options = Options {
            binary: "etcd".into(),
            dir: "/tmp".into(),
            replica: 1,
            peers: vec![],
            clients: vec!["a".into(), "b".into(), "c".into()],
            extra_args: vec![],
        };
        assert_eq!(options.endpoints(), ["b", "c", "a"]);
        assert_eq!(options.others().collect::<Vec<_>>(), ["a", "c"]);
    }
}
