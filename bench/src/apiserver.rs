//! Starting and measuring an API server the same way whichever it is: `vkube serve` (SQLite or
//! etcd) or upstream kube-apiserver (through `scripts/upstream-apiserver`) on an etcd started
//! here, start → /readyz, RSS sampling, and vcluster's published load profile. Shared by
//! `serve-bench` and `peer-bench`, so their figures come from one code path.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine;
use tokio::sync::Mutex;

use crate::common::{Client, Server, free_port, pct, rss_mib};

/// What a run measures. Every start is a fresh cluster: a new data dir, or a new etcd key prefix.
#[derive(Clone)]
pub enum Target {
    /// vkube serve; `store`: `None` for embedded SQLite, else an `etcd://host:port` URL (a
    /// per-start `?prefix=` is added).
    Vkube { bin: PathBuf, store: Option<String> },
    /// kube-apiserver on this etcd (`http://…`).
    Upstream { script: PathBuf, etcd: String },
}

static STARTS: AtomicUsize = AtomicUsize::new(0);

/// The files `scripts/upstream-apiserver` makes once with openssl (keys, CA, serving cert,
/// token): made before timing and copied into each start's dir, so kube-apiserver's start is
/// not charged for the harness's key generation (vkube's start does include making its CA).
static UPSTREAM_STATE: &[&str] = &[
    "sa.key",
    "sa.pub",
    "ca.key",
    "ca.crt",
    "serving.key",
    "serving.crt",
    "tokens.csv",
];

fn command(target: &Target, dir: &Path, port: u16) -> Result<Command> {
    let n = STARTS.fetch_add(1, Ordering::Relaxed);
    let prefix = format!("/bench-{}-{n}", std::process::id());
    Ok(match target {
        Target::Vkube { bin, store } => {
            let mut cmd = Command::new(bin);
            cmd.args(["serve", "--data-dir", &dir.display().to_string()]);
            cmd.args(["--listen", &format!("127.0.0.1:{port}")]);
            if let Some(store) = store {
                cmd.args(["--store", &format!("{store}?prefix={prefix}")]);
            }
            cmd
        }
        Target::Upstream { script, etcd } => {
            let template = upstream_state(script)?;
            for f in UPSTREAM_STATE {
                std::fs::copy(template.join(f), dir.join(f))?;
            }
            let mut cmd = Command::new(script);
            cmd.args([&dir.display().to_string(), &port.to_string(), etcd]);
            cmd.env(
                "VKUBE_UPSTREAM_APISERVER_FLAGS",
                format!("--etcd-prefix={prefix}"),
            );
            cmd
        }
    })
}

/// A state dir the upstream script has filled once (kube-apiserver, which it then execs, finds
/// no etcd at the URL given and is killed as soon as the files are there).
fn upstream_state(script: &Path) -> Result<PathBuf> {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    if let Some(d) = DIR.get() {
        return Ok(d.path().to_path_buf());
    }
    let dir = tempfile::tempdir()?;
    let mut child = Command::new(script)
        .arg(dir.path())
        .args([
            free_port().to_string(),
            format!("http://127.0.0.1:{}", free_port()),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !dir.path().join("admin.kubeconfig").exists() {
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("scripts/upstream-apiserver made no state in 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok(DIR.get_or_init(|| dir).path().to_path_buf())
}

/// Starts the target and returns it with the time until /readyz answered ok.
pub async fn start(target: &Target) -> Result<(Server, Duration)> {
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let mut cmd = command(target, dir.path(), port)?;
    let started = Instant::now();
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start the server")?;
    let server = Server { child, port, dir };
    server.wait_ready(Duration::from_secs(60)).await?;
    Ok((server, started.elapsed()))
}

/// The median start → /readyz of `n` fresh starts, each stopped before the next.
pub async fn startup_median(target: &Target, n: usize) -> Result<Duration> {
    let mut times = Vec::new();
    for _ in 0..n.max(1) {
        let (server, t) = start(target).await?;
        times.push(t);
        drop(server);
    }
    times.sort();
    Ok(times[times.len() / 2])
}

/// An etcd on loopback in a temp dir, stopped when dropped: each etcd-backed target gets its own,
/// so its memory is that target's alone.
pub struct Etcd {
    pub child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    pub fn start() -> Result<Etcd> {
        let dir = tempfile::tempdir()?;
        let (client, peer) = (free_port(), free_port());
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .args(["--name", "bench"])
            .args(["--data-dir", &dir.path().join("data").display().to_string()])
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("bench={peer_url}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start etcd (is etcd on PATH?)")?;
        let etcd = Etcd {
            child,
            url,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", client)).is_err() {
            if Instant::now() > deadline {
                bail!("etcd did not start");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(etcd)
    }

    /// The endpoint as vkube's `--store` takes it.
    pub fn vkube_store(&self) -> String {
        format!("etcd://{}", self.url.trim_start_matches("http://"))
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Peak RSS of a set of processes, sampled every 200 ms while it lives: of their sum (a cluster
/// needs them all) and of each.
pub struct RssPeak {
    peaks: Arc<std::sync::Mutex<(f64, Vec<f64>)>>,
    task: tokio::task::JoinHandle<()>,
}

impl RssPeak {
    pub fn start(pids: Vec<u32>) -> RssPeak {
        let peaks = Arc::new(std::sync::Mutex::new((0.0f64, vec![0.0f64; pids.len()])));
        let shared = peaks.clone();
        let task = tokio::spawn(async move {
            loop {
                let each: Vec<f64> = pids.iter().map(|p| rss_mib(*p)).collect();
                {
                    let mut p = shared.lock().unwrap();
                    p.0 = p.0.max(each.iter().sum());
                    for (peak, now) in p.1.iter_mut().zip(each) {
                        *peak = peak.max(now);
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        RssPeak { peaks, task }
    }

    /// (peak of the sum, peak of each process) in MiB.
    pub fn finish(self) -> (f64, Vec<f64>) {
        self.task.abort();
        self.peaks.lock().unwrap().clone()
    }
}

#[derive(Default)]
pub struct Latencies {
    pub all: Vec<Duration>,
    pub by_op: BTreeMap<&'static str, Vec<Duration>>,
    pub errors: usize,
}

impl Latencies {
    pub fn merge(&mut self, other: Latencies) {
        self.all.extend(other.all);
        for (op, v) in other.by_op {
            self.by_op.entry(op).or_default().extend(v);
        }
        self.errors += other.errors;
    }

    pub fn sort(&mut self) {
        self.all.sort();
        self.by_op.values_mut().for_each(|v| v.sort());
    }

    pub fn p(&self, q: f64) -> f64 {
        pct(&self.all, q)
    }

    pub fn op(&self, op: &str, q: f64) -> f64 {
        self.by_op.get(op).map_or(0.0, |v| pct(v, q))
    }
}

/// vcluster's profile: `300 × scale` secrets at 30 requests/s, then `5000 × scale` at 200/s.
/// Returns each phase's latencies, sorted.
pub async fn vcluster_profile(client: &Client, scale: f64) -> (Latencies, Latencies) {
    let small = (300.0 * scale) as usize;
    let large = (5000.0 * scale) as usize;
    let mut first = phase(client, 0, small, 30.0).await;
    let mut second = phase(client, small, large, 200.0).await;
    first.sort();
    second.sort();
    (first, second)
}

/// Runs `creates` secret creates at `qps` total operations per second, with gets, lists,
/// updates and deletes between them (one create in two operations), open loop: each request
/// is sent on schedule whether or not earlier ones have answered.
async fn phase(client: &Client, first: usize, creates: usize, qps: f64) -> Latencies {
    let lat = Arc::new(Mutex::new(Latencies::default()));
    let period = Duration::from_secs_f64(1.0 / qps);
    let start = Instant::now();
    let mut handles = Vec::new();
    let list = || "/api/v1/namespaces/default/secrets?limit=500".to_string();
    for i in 0..creates * 2 {
        let due = start + period * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let n = first + i / 2;
        // Reads and updates aim 10 creates back, deletes 20 back (indexes ≡ 9 mod 10, which no
        // read or update aims at): a non-2xx is the server's error, not the schedule's.
        let secret_path = |m: usize| format!("/api/v1/namespaces/default/secrets/s-{m:07}");
        let (recent, old) = (n.checked_sub(10), n.checked_sub(20));
        let (op, method, path, body): (&'static str, &str, String, Option<String>) =
            match (i % 2, i % 20, recent, old) {
                (0, ..) => (
                    "create",
                    "POST",
                    "/api/v1/namespaces/default/secrets".into(),
                    Some(secret(n, "v1")),
                ),
                (_, _, None, _) => ("list", "GET", list(), None),
                (_, 1 | 3 | 5 | 7, Some(m), _) => ("get", "GET", secret_path(m), None),
                (_, 9 | 11, ..) => ("list", "GET", list(), None),
                (_, 13 | 15 | 17, Some(m), _) => {
                    ("update", "PUT", secret_path(m), Some(secret(m, "v2")))
                }
                (_, _, Some(_), None) => ("list", "GET", list(), None),
                (_, _, _, Some(m)) => ("delete", "DELETE", secret_path(m), None),
            };
        let (client, lat) = (client.clone(), lat.clone());
        let method = method.to_string();
        handles.push(tokio::spawn(async move {
            let t = Instant::now();
            let result = client.request(&method, &path, body).await;
            let d = t.elapsed();
            let ok = matches!(result, Ok((200..=299, _)));
            if !ok {
                let shown = match &result {
                    Ok((code, body)) => {
                        format!("{code} {}", body.chars().take(200).collect::<String>())
                    }
                    Err(e) => e.to_string(),
                };
                eprintln!("non-2xx: {method} {path}: {shown}");
            }
            let mut l = lat.lock().await;
            l.all.push(d);
            l.by_op.entry(op).or_default().push(d);
            l.errors += usize::from(!ok);
        }));
    }
    for h in handles {
        let _ = h.await;
    }
    Arc::try_unwrap(lat).map_or_else(|_| Latencies::default(), Mutex::into_inner)
}

fn secret(n: usize, v: &str) -> String {
    let data =
        base64::engine::general_purpose::STANDARD.encode(format!("value-{v}-{}", "x".repeat(200)));
    format!(
        r#"{{"apiVersion":"v1","kind":"Secret","metadata":{{"name":"s-{n:07}","labels":{{"bench":"yes"}}}},"type":"Opaque","data":{{"payload":"{data}"}}}}"#
    )
}
