//! `vkube serve` benchmark: start → /readyz, idle RSS, and vcluster's published load profile
//! (300 secrets at 30 qps, then 5000 secrets at 200 qps, as a create/get/list/update/delete mix)
//! with p50/p99 latency and RSS under load, on SQLite and on etcd. Requests go over one HTTP/2
//! connection with the admin client certificate, as client-go sends them.
//!
//! The peer is upstream kube-apiserver 1.33 (built by `scripts/build-upstream`, started by
//! `scripts/upstream-apiserver`) on an etcd of its own, measured the same way in the same run; its
//! RSS column adds etcd's, as a cluster needs both. Run it through `bench/serve`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine;
use clap::Parser;
use tokio::sync::Mutex;

mod common;
use common::{Client, Server, free_port, rss_mib};

#[derive(Parser)]
struct Args {
    /// The vkube binary (release build).
    #[arg(long)]
    vkube: PathBuf,
    /// etcd endpoint for the etcd run (host:port).
    #[arg(long, env = "VKUBE_TEST_ETCD_ENDPOINTS")]
    etcd: String,
    /// Scale the load profile's counts down (1 = vcluster's profile).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// `scripts/upstream-apiserver`, to measure kube-apiserver; omitted: no peer column.
    #[arg(long)]
    upstream: Option<PathBuf>,
}

/// What a run measures.
#[derive(Clone)]
enum Target {
    /// vkube serve on this store (`None`: embedded SQLite).
    Vkube(Option<String>),
    /// kube-apiserver on this etcd (`http://…`), under a fresh key prefix each start.
    Upstream { script: PathBuf, etcd: String },
}

static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Starts the target and returns it with the time until /readyz answered ok.
async fn start(vkube: &Path, target: &Target) -> Result<(Server, Duration)> {
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let mut cmd = match target {
        Target::Vkube(store) => {
            let mut cmd = Command::new(vkube);
            cmd.args(["serve", "--data-dir", &dir.path().display().to_string()]);
            cmd.args(["--listen", &format!("127.0.0.1:{port}")]);
            if let Some(store) = store {
                cmd.args(["--store", store]);
            }
            cmd
        }
        Target::Upstream { script, etcd } => {
            let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut cmd = Command::new(script);
            cmd.args([&dir.path().display().to_string(), &port.to_string(), etcd]);
            cmd.env(
                "VKUBE_UPSTREAM_APISERVER_FLAGS",
                format!("--etcd-prefix=/peer-{}-{n}", std::process::id()),
            );
            cmd
        }
    };
    let started = Instant::now();
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start the server")?;
    let server = Server { child, port, dir };
    loop {
        if started.elapsed() > Duration::from_secs(60) {
            bail!("server not ready after 60 s");
        }
        if server.dir.path().join("admin.kubeconfig").exists() {
            if let Ok(client) = Client::connect(&server).await {
                if let Ok((200, body)) = client.request("GET", "/readyz", None).await {
                    if body == "ok" {
                        return Ok((server, started.elapsed()));
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[derive(Default)]
struct Latencies {
    all: Vec<Duration>,
    by_op: std::collections::BTreeMap<&'static str, Vec<Duration>>,
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3
}

/// Runs `creates` secret creates at `qps` total operations per second, with gets, lists,
/// updates and deletes between them (one create in two operations).
async fn phase(
    client: &Client,
    first: usize,
    creates: usize,
    qps: f64,
    lat: Arc<Mutex<Latencies>>,
    errors: Arc<Mutex<usize>>,
) {
    let period = Duration::from_secs_f64(1.0 / qps);
    let start = Instant::now();
    let mut handles = Vec::new();
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
                (_, _, None, _) => (
                    "list",
                    "GET",
                    "/api/v1/namespaces/default/secrets?limit=500".into(),
                    None,
                ),
                (_, 1 | 3 | 5 | 7, Some(m), _) => ("get", "GET", secret_path(m), None),
                (_, 9 | 11, ..) => (
                    "list",
                    "GET",
                    "/api/v1/namespaces/default/secrets?limit=500".into(),
                    None,
                ),
                (_, 13 | 15 | 17, Some(m), _) => {
                    ("update", "PUT", secret_path(m), Some(secret(m, "v2")))
                }
                (_, _, Some(_), None) => (
                    "list",
                    "GET",
                    "/api/v1/namespaces/default/secrets?limit=500".into(),
                    None,
                ),
                (_, _, _, Some(m)) => ("delete", "DELETE", secret_path(m), None),
            };
        let (client, lat, errors) = (client.clone(), lat.clone(), errors.clone());
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
            if !ok {
                *errors.lock().await += 1;
            }
        }));
    }
    for h in handles {
        let _ = h.await;
    }
}

fn secret(n: usize, v: &str) -> String {
    let data =
        base64::engine::general_purpose::STANDARD.encode(format!("value-{v}-{}", "x".repeat(200)));
    format!(
        r#"{{"apiVersion":"v1","kind":"Secret","metadata":{{"name":"s-{n:07}","labels":{{"bench":"yes"}}}},"type":"Opaque","data":{{"payload":"{data}"}}}}"#
    )
}

struct Run {
    startup_ms: f64,
    idle_rss: f64,
    load_rss: f64,
    p50: f64,
    p99: f64,
    ops: std::collections::BTreeMap<&'static str, (f64, f64)>,
    requests: usize,
    errors: usize,
}

async fn run(args: &Args, target: &Target, extra_pid: Option<u32>) -> Result<Run> {
    let mut startups = Vec::new();
    for _ in 0..5 {
        let (server, t) = start(&args.vkube, target).await?;
        startups.push(t);
        drop(server);
    }
    startups.sort();
    let (server, _) = start(&args.vkube, target).await?;
    let pid = server.child.id();
    // The peer's RSS includes its etcd's: a cluster needs both.
    let rss = move || rss_mib(pid) + extra_pid.map_or(0.0, rss_mib);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = rss();
    let client = Client::connect(&server).await?;
    let lat = Arc::new(Mutex::new(Latencies::default()));
    let errors = Arc::new(Mutex::new(0));
    let peak = Arc::new(Mutex::new(0.0f64));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let r = rss();
                let mut p = peak.lock().await;
                *p = p.max(r);
            }
        })
    };
    let small = (300.0 * args.scale) as usize;
    let large = (5000.0 * args.scale) as usize;
    phase(&client, 0, small, 30.0, lat.clone(), errors.clone()).await;
    phase(&client, small, large, 200.0, lat.clone(), errors.clone()).await;
    sampler.abort();
    let mut l = lat.lock().await;
    l.all.sort();
    let mut ops = std::collections::BTreeMap::new();
    for (op, v) in l.by_op.iter_mut() {
        v.sort();
        ops.insert(*op, (pct(v, 0.5), pct(v, 0.99)));
    }
    let load_rss = *peak.lock().await;
    let errors = *errors.lock().await;
    Ok(Run {
        startup_ms: startups[startups.len() / 2].as_secs_f64() * 1e3,
        idle_rss,
        load_rss,
        p50: pct(&l.all, 0.5),
        p99: pct(&l.all, 0.99),
        ops,
        requests: l.all.len(),
        errors,
    })
}

/// An etcd of the peer's own, on loopback, so its memory is the peer's alone.
fn start_etcd(dir: &Path) -> Result<(Child, String)> {
    let (client, peer) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{client}");
    let child = Command::new("etcd")
        .args([
            "--name",
            "peer",
            "--data-dir",
            &dir.join("etcd").display().to_string(),
        ])
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args([
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
        ])
        .args([
            "--initial-cluster",
            &format!("peer=http://127.0.0.1:{peer}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start etcd for the peer (is etcd on PATH?)")?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", client)).is_err() {
        if Instant::now() > deadline {
            bail!("the peer's etcd did not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((child, url))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let etcd = format!(
        "etcd://{}?prefix=/bench-serve-{}",
        args.etcd.trim_start_matches("http://"),
        std::process::id()
    );
    eprintln!("measuring vkube serve on sqlite");
    let sqlite = run(&args, &Target::Vkube(None), None).await?;
    eprintln!("measuring vkube serve on etcd");
    let on_etcd = run(&args, &Target::Vkube(Some(etcd)), None).await?;
    let mut runs = vec![("vkube, SQLite", sqlite), ("vkube, etcd", on_etcd)];
    let peer_dir = tempfile::tempdir()?;
    let mut peer_etcd = None;
    if let Some(script) = &args.upstream {
        eprintln!("measuring kube-apiserver on its own etcd");
        let (child, url) = start_etcd(peer_dir.path())?;
        let pid = child.id();
        peer_etcd = Some(child);
        let target = Target::Upstream {
            script: script.clone(),
            etcd: url,
        };
        runs.push((
            "kube-apiserver + etcd",
            run(&args, &target, Some(pid)).await?,
        ));
    }
    if let Some(mut c) = peer_etcd {
        let _ = c.kill();
        let _ = c.wait();
    }
    let header: Vec<&str> = runs.iter().map(|(n, _)| *n).collect();
    let mut header_line = format!("| figure | {} |", header.join(" | "));
    if runs.len() == 3 {
        header_line.push_str(" vkube SQLite / upstream |");
    }
    println!("{header_line}");
    println!(
        "|---|{}",
        "---:|".repeat(header.len() + usize::from(runs.len() == 3))
    );
    let row = |label: &str, f: &dyn Fn(&Run) -> String, ratio: Option<&dyn Fn(&Run) -> f64>| {
        let cells: Vec<String> = runs.iter().map(|(_, r)| f(r)).collect();
        let mut line = format!("| {label} | {} |", cells.join(" | "));
        if runs.len() == 3 {
            let shown = match ratio {
                Some(g) if g(&runs[2].1) > 0.0 => format!("{:.3}", g(&runs[0].1) / g(&runs[2].1)),
                _ => String::new(),
            };
            line.push_str(&format!(" {shown} |"));
        }
        println!("{line}");
    };
    row(
        "start → /readyz (ms, median of 5)",
        &|r| format!("{:.0}", r.startup_ms),
        Some(&|r| r.startup_ms),
    );
    row(
        "idle RSS (MiB)",
        &|r| format!("{:.1}", r.idle_rss),
        Some(&|r| r.idle_rss),
    );
    row(
        "peak RSS under load (MiB)",
        &|r| format!("{:.1}", r.load_rss),
        Some(&|r| r.load_rss),
    );
    row(
        "load p50 (ms)",
        &|r| format!("{:.2}", r.p50),
        Some(&|r| r.p50),
    );
    row(
        "load p99 (ms)",
        &|r| format!("{:.2}", r.p99),
        Some(&|r| r.p99),
    );
    for op in ["create", "get", "list", "update", "delete"] {
        let get = move |r: &Run| r.ops.get(op).copied().unwrap_or_default();
        row(
            &format!("{op} p50 / p99 (ms)"),
            &|r| {
                let (p50, p99) = get(r);
                format!("{p50:.2} / {p99:.2}")
            },
            Some(&|r| get(r).1),
        );
    }
    row(
        "requests / non-2xx",
        &|r| format!("{} / {}", r.requests, r.errors),
        None,
    );
    println!();
    println!(
        "Load: {} then {} secrets (scale {}), at 30 then 200 requests/s; half creates, the rest gets, lists (limit=500), updates and deletes; one HTTP/2 connection. The ratio column is vkube on SQLite over kube-apiserver + etcd (p99 for the per-operation rows).",
        (300.0 * args.scale) as usize,
        (5000.0 * args.scale) as usize,
        args.scale
    );
    Ok(())
}
