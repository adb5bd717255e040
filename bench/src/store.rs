//! Store benchmark: the same operations against each vkube-store backend and, in the same run,
//! straight against etcd with the etcd client (the peer). Prints a table with vkube/etcd ratios.
//! Run it through `bench/store`, which builds in release mode and starts etcd and PostgreSQL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp, WatchOptions};
use tokio::sync::mpsc;
use vkube_store::{ListOptions, Store};

#[derive(Parser)]
struct Args {
    /// etcd endpoint (host:port or http://host:port), for the etcd backend and the raw peer.
    #[arg(long, env = "VKUBE_TEST_ETCD_ENDPOINTS")]
    etcd: String,
    /// PostgreSQL server URL; the benchmark creates its own database there.
    #[arg(long, env = "VKUBE_TEST_POSTGRES_URL")]
    postgres: String,
    /// Sequential creates for the latency figures.
    #[arg(long, default_value_t = 2000)]
    creates: usize,
    /// Keys for the list figure.
    #[arg(long, default_value_t = 10_000)]
    list_keys: usize,
}

/// What is measured: a vkube store, or etcd through its own client.
#[derive(Clone)]
enum Target {
    Vkube(Arc<dyn Store>),
    Etcd(Box<etcd_client::Client>),
}

impl Target {
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<()> {
        match self {
            Target::Vkube(s) => drop(s.create(key, value, None).await?),
            Target::Etcd(c) => {
                // What kube-apiserver sends for a create.
                let txn = Txn::new()
                    .when([Compare::mod_revision(key, CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(key, value, None)]);
                if !c.kv_client().txn(txn).await?.succeeded() {
                    bail!("{key} exists");
                }
            }
        }
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<()> {
        let found = match self {
            Target::Vkube(s) => s.get(key, None).await?.is_some(),
            Target::Etcd(c) => !c.kv_client().get(key, None).await?.kvs().is_empty(),
        };
        if !found {
            bail!("{key} not found");
        }
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<usize> {
        Ok(match self {
            Target::Vkube(s) => s.list(prefix, ListOptions::default()).await?.items.len(),
            Target::Etcd(c) => {
                // kube-apiserver lifts the gRPC response limit the same way.
                let mut kv = c.kv_client().max_decoding_message_size(i32::MAX as usize);
                kv.get(prefix, Some(GetOptions::new().with_prefix()))
                    .await?
                    .kvs()
                    .len()
            }
        })
    }

    /// Keys of the events under `prefix` from now on.
    async fn watch(&self, prefix: &str) -> Result<mpsc::UnboundedReceiver<String>> {
        let (tx, rx) = mpsc::unbounded_channel();
        match self {
            Target::Vkube(s) => {
                let mut watch = s.watch(prefix, s.current_revision().await?).await?;
                tokio::spawn(async move {
                    while let Some(Ok(event)) = watch.next().await {
                        if tx.send(event.key).is_err() {
                            return;
                        }
                    }
                });
            }
            Target::Etcd(c) => {
                let mut stream = c
                    .watch_client()
                    .watch(prefix, Some(WatchOptions::new().with_prefix()))
                    .await?;
                tokio::spawn(async move {
                    while let Ok(Some(resp)) = stream.message().await {
                        for e in resp.events() {
                            let key = e
                                .kv()
                                .map(|kv| String::from_utf8_lossy(kv.key()).into_owned());
                            if tx.send(key.unwrap_or_default()).is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        }
        Ok(rx)
    }
}

#[derive(Default, Clone)]
struct Figures {
    create_p50: f64,
    create_p99: f64,
    creates_per_s_16: f64,
    gets_per_s_16: f64,
    list_ms: f64,
    watch_p50: f64,
    watch_p99: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

/// Runs `op` `n` times over `workers` tasks; returns operations per second.
async fn parallel<F, Fut>(n: usize, workers: usize, target: &Target, op: F) -> Result<f64>
where
    F: Fn(Target, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let started = Instant::now();
    let per = n / workers;
    let mut handles = Vec::new();
    for w in 0..workers {
        let (target, op) = (target.clone(), op.clone());
        handles.push(tokio::spawn(async move {
            for i in 0..per {
                op(target.clone(), w * per + i).await?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for h in handles {
        h.await??;
    }
    Ok((per * workers) as f64 / started.elapsed().as_secs_f64())
}

async fn measure(name: &str, target: &Target, prefix: &str, args: &Args) -> Result<Figures> {
    eprintln!("measuring {name}");
    let mut f = Figures::default();
    let value = vec![b'x'; 512];

    // Single-writer create latency.
    let mut lat = Vec::with_capacity(args.creates);
    for i in 0..args.creates {
        let t = Instant::now();
        target
            .create(&format!("{prefix}seq/{i:08}"), value.clone())
            .await?;
        lat.push(t.elapsed());
    }
    lat.sort();
    (f.create_p50, f.create_p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));

    // Creates/s with 16 writers: these keys are also the list and get sets.
    let list_prefix = format!("{prefix}list/");
    let p = list_prefix.clone();
    let create = move |t: Target, i: usize| {
        let key = format!("{p}{i:08}");
        async move { t.create(&key, vec![b'x'; 512]).await }
    };
    f.creates_per_s_16 = parallel(args.list_keys, 16, target, create).await?;
    let (n, p) = (args.list_keys, list_prefix.clone());
    let get = move |t: Target, i: usize| {
        let key = format!("{p}{:08}", (i * 7919) % n);
        async move { t.get(&key).await }
    };
    f.gets_per_s_16 = parallel(args.list_keys * 2, 16, target, get).await?;

    let mut lists = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let count = target.list(&list_prefix).await?;
        lists.push(t.elapsed());
        if count != args.list_keys {
            bail!("{name}: listed {count} keys, expected {}", args.list_keys);
        }
    }
    lists.sort();
    f.list_ms = percentile(&lists, 0.5);

    // Watch delivery: from the start of a create to the event's arrival at a watcher.
    let mut events = target.watch(&format!("{prefix}w/")).await?;
    let started: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let n = 1000;
    let receiver = {
        let started = started.clone();
        tokio::spawn(async move {
            let mut lat = Vec::with_capacity(n);
            while lat.len() < n {
                let key = tokio::time::timeout(Duration::from_secs(30), events.recv())
                    .await
                    .context("no watch event in 30 s")?
                    .context("watch ended")?;
                let t = started
                    .lock()
                    .unwrap()
                    .remove(&key)
                    .context("unexpected event")?;
                lat.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(lat)
        })
    };
    for i in 0..n {
        let key = format!("{prefix}w/{i:08}");
        started.lock().unwrap().insert(key.clone(), Instant::now());
        target.create(&key, value.clone()).await?;
    }
    let mut lat = receiver.await??;
    lat.sort();
    (f.watch_p50, f.watch_p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
    Ok(f)
}

async fn postgres_database(server: &str) -> Result<String> {
    let (client, conn) = tokio_postgres::connect(server, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let name = format!("vkube_bench_{}", std::process::id());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await?;
    let mut url = url::Url::parse(server)?;
    url.set_path(&format!("/{name}"));
    Ok(url.to_string())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let etcd_host = args.etcd.trim_start_matches("http://").to_string();
    let dir = tempfile::tempdir()?;
    let run = std::process::id();
    let sqlite = vkube_store::open(&format!(
        "sqlite://{}",
        dir.path().join("bench.db").display()
    ))
    .await?;
    let postgres = vkube_store::open(&postgres_database(&args.postgres).await?).await?;
    let etcd = vkube_store::open(&format!("etcd://{etcd_host}?prefix=/bench-{run}-vkube")).await?;
    let raw = etcd_client::Client::connect([format!("http://{etcd_host}")], None).await?;

    let columns = [
        (
            "sqlite",
            measure("vkube-store sqlite", &Target::Vkube(sqlite), "/b/", &args).await?,
        ),
        (
            "postgres",
            measure(
                "vkube-store postgres",
                &Target::Vkube(postgres),
                "/b/",
                &args,
            )
            .await?,
        ),
        (
            "etcd",
            measure("vkube-store etcd", &Target::Vkube(etcd), "/b/", &args).await?,
        ),
        (
            "raw etcd",
            measure(
                "etcd client",
                &Target::Etcd(Box::new(raw)),
                &format!("/bench-{run}-raw/"),
                &args,
            )
            .await?,
        ),
    ];
    let peer = columns[3].1.clone();
    type Row = (&'static str, fn(&Figures) -> f64);
    let rows: [Row; 7] = [
        ("create latency p50 (ms)", |f| f.create_p50),
        ("create latency p99 (ms)", |f| f.create_p99),
        ("creates/s, 16 writers", |f| f.creates_per_s_16),
        ("gets/s, 16 readers", |f| f.gets_per_s_16),
        ("list 10k keys (ms)", |f| f.list_ms),
        ("watch delivery p50 (ms)", |f| f.watch_p50),
        ("watch delivery p99 (ms)", |f| f.watch_p99),
    ];
    println!(
        "| operation | sqlite | postgres | etcd (vkube-store) | etcd (raw client) | sqlite/raw | postgres/raw | vkube-etcd/raw |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (label, get) in rows {
        let cells: Vec<String> = columns
            .iter()
            .map(|(_, f)| format!("{:.2}", get(f)))
            .collect();
        let ratios: Vec<String> = columns[..3]
            .iter()
            .map(|(_, f)| format!("{:.2}", get(f) / get(&peer)))
            .collect();
        println!(
            "| {label} | {} | {} |",
            cells.join(" | "),
            ratios.join(" | ")
        );
    }
    println!();
    println!(
        "Ratios are vkube-store/etcd: below 1 is better for latencies and times, above 1 for rates."
    );
    println!(
        "{} sequential creates of 512-byte values; {} keys for creates/s, gets/s and the list; 1000 watched creates.",
        args.creates, args.list_keys
    );
    Ok(())
}
