//! Replicas: leader failover time (kill -9 of the leader → another replica holds the lease), and
//! requests/s with 1 and 3 replicas on each shared backend (GET configmaps, 16 in flight per
//! replica connection, spread over the replicas): external etcd, PostgreSQL, and embedded etcd
//! (each replica runs a member; a killed leader takes its member with it). `bench/ha` starts etcd
//! and PostgreSQL.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::{Client, Server, free_port};

/// Where a set of replicas keeps its state.
#[derive(Clone)]
enum Backend {
    /// `--store URL`.
    Store(String),
    /// `--etcd-embedded`, members on these (peer, client) ports of 127.0.0.1.
    Embedded(Vec<(u16, u16)>),
}

impl Backend {
    fn embedded(n: usize) -> Backend {
        Backend::Embedded((0..n).map(|_| (free_port(), free_port())).collect())
    }

    fn flags(&self) -> Vec<String> {
        match self {
            Backend::Store(url) => vec!["--store".into(), url.clone()],
            Backend::Embedded(ports) => {
                let list = |f: &dyn Fn(&(u16, u16)) -> u16| {
                    ports
                        .iter()
                        .map(|p| format!("http://127.0.0.1:{}", f(p)))
                        .collect::<Vec<_>>()
                        .join(",")
                };
                vec![
                    "--etcd-embedded".into(),
                    "--etcd-peers".into(),
                    list(&|p| p.0),
                    "--etcd-clients".into(),
                    list(&|p| p.1),
                ]
            }
        }
    }
}

/// The cluster secret every replica of a benchmark run shares (`--identity-secret-file`).
fn shared_secret() -> Result<std::path::PathBuf> {
    static FILE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    if let Some(path) = FILE.get() {
        return Ok(path.clone());
    }
    let path = std::env::temp_dir().join(format!("vkube-bench-secret-{}", std::process::id()));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    std::fs::write(&path, format!("bench cluster secret {nanos:040}\n"))?;
    Ok(FILE.get_or_init(|| path).clone())
}

async fn replica(vkube: &str, backend: &Backend, id: usize, n: usize) -> Result<Server> {
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let child = std::process::Command::new(vkube)
        .args([
            "serve",
            "--data-dir",
            &dir.path().display().to_string(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args(backend.flags())
        .args([
            "--replicas",
            &n.to_string(),
            "--replica-id",
            &id.to_string(),
        ])
        .arg("--identity-secret-file")
        .arg(shared_secret()?)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let server = Server { child, port, dir };
    server
        .wait_ready(Duration::from_secs(60))
        .await
        .with_context(|| format!("replica {id}"))?;
    Ok(server)
}

async fn holder(client: &Client) -> String {
    match client
        .request(
            "GET",
            "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/vkube-controllers",
            None,
        )
        .await
    {
        Ok((200, body)) => serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["spec"]["holderIdentity"].as_str().map(str::to_string))
            .unwrap_or_default(),
        _ => String::new(),
    }
}

async fn failover(vkube: &str, backend: &Backend) -> Result<Duration> {
    let mut replicas = Vec::new();
    for id in 0..3 {
        replicas.push(Some(replica(vkube, backend, id, 3).await?));
    }
    let probe = Client::connect(replicas[0].as_ref().unwrap()).await?;
    let mut leader = String::new();
    for _ in 0..200 {
        leader = holder(&probe).await;
        if !leader.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The holder identity is `vkube-N_<hostname>_<uuid>`.
    let index: usize = leader
        .split('_')
        .next()
        .unwrap_or_default()
        .trim_start_matches("vkube-")
        .parse()
        .context("a leader")?;
    let killed = Instant::now();
    drop(replicas[index].take());
    let survivor = replicas.iter().flatten().next().context("a survivor")?;
    let probe = Client::connect(survivor).await?;
    loop {
        let now = holder(&probe).await;
        if !now.is_empty() && now != leader {
            return Ok(killed.elapsed());
        }
        if killed.elapsed() > Duration::from_secs(30) {
            bail!("no failover");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn throughput(vkube: &str, backend: &Backend, n: usize) -> Result<f64> {
    let mut servers = Vec::new();
    for id in 0..n {
        servers.push(replica(vkube, backend, id, n).await?);
    }
    let mut clients = Vec::new();
    for s in &servers {
        clients.push(Client::connect(s).await?);
    }
    let total = 6000;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, c) in clients.iter().enumerate() {
        for _ in 0..16 {
            let c = c.clone();
            let share = total / (16 * n) + usize::from(i == 0);
            tasks.spawn(async move {
                for _ in 0..share {
                    let r = c
                        .request("GET", "/api/v1/namespaces/default/configmaps", None)
                        .await;
                    assert!(matches!(r, Ok((200, _))));
                }
                share
            });
        }
    }
    let mut done = 0;
    while let Some(r) = tasks.join_next().await {
        done += r?;
    }
    Ok(done as f64 / started.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let vkube = arg("--vkube").context("--vkube PATH")?;
    let etcd = arg("--etcd").context("--etcd host:port")?;
    let postgres = arg("--postgres").context("--postgres URL")?;
    let pid = std::process::id();
    let stores = [
        (
            "etcd",
            format!(
                "etcd://{}?prefix=/bench-ha-{pid}",
                etcd.trim_start_matches("http://")
            ),
        ),
        ("PostgreSQL", postgres),
    ];
    println!(
        "| backend | failover (kill -9 leader → new holder), median of 3 | requests/s, 1 replica | requests/s, 3 replicas |"
    );
    println!("|---|---:|---:|---:|");
    for (name, base) in &stores {
        // etcd rounds get a key prefix each; PostgreSQL rounds share one database.
        let store = |suffix: &str| {
            Backend::Store(if name == &"etcd" {
                format!("{base}{suffix}")
            } else {
                base.clone()
            })
        };
        let mut times = Vec::new();
        for round in 0..3 {
            // On PostgreSQL the lease of the last round must expire first.
            if round > 0 && name != &"etcd" {
                tokio::time::sleep(Duration::from_secs(4)).await;
            }
            times.push(failover(&vkube, &store(&format!("-f{round}"))).await?);
        }
        times.sort();
        let one = throughput(&vkube, &store("-t1"), 1).await?;
        tokio::time::sleep(Duration::from_secs(4)).await;
        let three = throughput(&vkube, &store("-t3"), 3).await?;
        println!(
            "| {name} | {:.2} s | {one:.0} | {three:.0} |",
            times[1].as_secs_f64()
        );
    }
    // Embedded etcd: a fresh 3-member cluster for each measurement.
    let mut times = Vec::new();
    for _ in 0..3 {
        times.push(failover(&vkube, &Backend::embedded(3)).await?);
    }
    times.sort();
    let one = throughput(&vkube, &Backend::embedded(1), 1).await?;
    let three = throughput(&vkube, &Backend::embedded(3), 3).await?;
    println!(
        "| embedded etcd | {:.2} s | {one:.0} | {three:.0} |",
        times[1].as_secs_f64()
    );
    println!();
    println!(
        "Defaults: lease 3 s, renew deadline 2 s, retry 1 s. Throughput: GET configmaps with 16 in flight per replica connection, the same total spread over the replicas, on this 2-core machine (the replicas share its cores, so more replicas cannot mean more CPU here)."
    );
    Ok(())
}
