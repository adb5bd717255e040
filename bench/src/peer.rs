//! Side by side (issue 7): vkube on SQLite, vkube on etcd, and upstream kube-apiserver 1.33 on
//! etcd, driven by the same load generator and client from one process on one machine. Measures
//! start → /readyz, idle RSS, RSS under load, closed-loop create/get/list/update/watch throughput
//! with p50/p99 at 1, 16 and 64 clients, and vcluster's profile; prints a Markdown table with the
//! ratios vkube/upstream and whether the project's targets are met, and writes it to `--out`.
//! Run it through `bench/peer`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;

mod apiserver;
mod common;
mod load;
use apiserver::{Etcd, Latencies, RssPeak, Target};
use common::{Client, rss_mib};
use load::{Cell, Fixture, Op, WatchCell};

/// A later flag wins over an earlier one, so `bench/peer … --out FILE` overrides the script's.
#[derive(Parser)]
#[command(args_override_self = true)]
struct Args {
    /// The vkube binary (release build).
    #[arg(long)]
    vkube: PathBuf,
    /// `scripts/upstream-apiserver`.
    #[arg(long)]
    upstream: PathBuf,
    /// Scales vcluster's profile (1 = 300 + 5000 secrets) and the default cell duration.
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Seconds per throughput cell (default: 5 × scale, at least 1).
    #[arg(long)]
    duration: Option<f64>,
    /// Concurrent clients per cell.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    clients: Vec<usize>,
    /// HTTP/2 connections the clients share (a cell with N clients uses min(N, this)).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// ConfigMaps in the namespace that gets and lists read (and in the one updates write).
    #[arg(long, default_value_t = 100)]
    objects: usize,
    /// Fresh starts timed for start → /readyz (the median is shown).
    #[arg(long, default_value_t = 5)]
    starts: usize,
    /// Also write the report here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The command line to record in the report.
    #[arg(long, default_value = "peer-bench")]
    command: String,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Sqlite,
    VkubeEtcd,
    Upstream,
}

#[derive(Clone, Copy, Default)]
struct Rss {
    total: f64,
    server: f64,
    etcd: Option<f64>,
}

impl Rss {
    fn of(each: &[f64]) -> Rss {
        Rss {
            total: each.iter().sum(),
            server: each[0],
            etcd: each.get(1).copied(),
        }
    }
    fn peak((total, each): (f64, Vec<f64>)) -> Rss {
        Rss {
            total,
            ..Rss::of(&each)
        }
    }
}

struct Measured {
    startup_ms: f64,
    idle: Rss,
    profile_peak: Rss,
    load_peak: Rss,
    profile: (Latencies, Latencies),
    cells: BTreeMap<(usize, Op), Cell>,
    watches: BTreeMap<usize, WatchCell>,
}

fn target(args: &Args, kind: Kind, etcd: Option<&Etcd>) -> Target {
    match kind {
        Kind::Sqlite => Target::Vkube {
            bin: args.vkube.clone(),
            store: None,
        },
        Kind::VkubeEtcd => Target::Vkube {
            bin: args.vkube.clone(),
            store: etcd.map(Etcd::vkube_store),
        },
        Kind::Upstream => Target::Upstream {
            script: args.upstream.clone(),
            etcd: etcd.map(|e| e.url.clone()).unwrap_or_default(),
        },
    }
}

async fn measure(args: &Args, kind: Kind, duration: Duration) -> Result<Measured> {
    let fresh_etcd = || (kind != Kind::Sqlite).then(Etcd::start).transpose();
    // Starts are timed on one etcd (a fresh key prefix each); the measured instance gets a fresh
    // etcd, so etcd's memory is this instance's data alone.
    let startup = {
        let etcd = fresh_etcd()?;
        apiserver::startup_median(&target(args, kind, etcd.as_ref()), args.starts).await?
    };
    let etcd = fresh_etcd()?;
    let (server, _) = apiserver::start(&target(args, kind, etcd.as_ref())).await?;
    let pids: Vec<u32> = std::iter::once(server.child.id())
        .chain(etcd.as_ref().map(|e| e.child.id()))
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = Rss::of(&pids.iter().map(|p| rss_mib(*p)).collect::<Vec<_>>());
    let client = Client::connect(&server).await?;
    eprintln!("  vcluster profile");
    let sampler = RssPeak::start(pids.clone());
    let profile = apiserver::vcluster_profile(&client, args.scale).await;
    let profile_peak = Rss::peak(sampler.finish());
    let mut clients = Vec::new();
    for _ in 0..args.connections.max(1) {
        clients.push(Client::connect(&server).await?);
    }
    let fixture = Fixture::make(&client, args.objects).await?;
    let sampler = RssPeak::start(pids);
    let (mut cells, mut watches) = (BTreeMap::new(), BTreeMap::new());
    for &n in &args.clients {
        let shared = &clients[..n.min(clients.len()).max(1)];
        for op in Op::ALL {
            eprintln!("  {} × {n}", op.name());
            cells.insert((n, op), load::run(op, shared, n, duration, &fixture).await?);
        }
        eprintln!("  watch × {n}");
        watches.insert(n, load::watch(shared, n, duration).await?);
    }
    let load_peak = Rss::peak(sampler.finish());
    Ok(Measured {
        startup_ms: startup.as_secs_f64() * 1e3,
        idle,
        profile_peak,
        load_peak,
        profile,
        cells,
        watches,
    })
}

/// What a row's target asks, and of which ratio (or, for `SqliteMs`, of the SQLite figure).
#[derive(Clone, Copy)]
enum Goal {
    /// vkube SQLite / upstream ≤ this.
    SqliteAtMost(f64, &'static str),
    /// vkube etcd / upstream ≥ this.
    EtcdAtLeast(f64, &'static str),
    /// The SQLite figure itself ≤ this many ms.
    SqliteMs(f64),
}

struct Row {
    label: String,
    cells: [String; 3],
    /// The figure the ratios divide (the first in each cell).
    values: [Option<f64>; 3],
    goal: Option<Goal>,
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn verdict(row: &Row) -> String {
    let met = |ok: bool| if ok { "met" } else { "**missed**" };
    match row.goal {
        None => String::new(),
        Some(Goal::SqliteAtMost(limit, shown)) => match ratio(row.values[0], row.values[2]) {
            Some(r) => format!("≤ {shown} (SQLite): {}", met(r <= limit)),
            None => "no figure".into(),
        },
        Some(Goal::EtcdAtLeast(limit, shown)) => match ratio(row.values[1], row.values[2]) {
            Some(r) => format!("≥ {shown} (vkube etcd): {}", met(r >= limit)),
            None => "no figure".into(),
        },
        Some(Goal::SqliteMs(ms)) => match row.values[0] {
            Some(v) => format!("≤ {ms} ms (SQLite): {}", met(v <= ms)),
            None => "no figure".into(),
        },
    }
}

fn rows(args: &Args, m: &[Measured; 3]) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut add = |label: String, f: &dyn Fn(&Measured) -> (String, Option<f64>), goal| {
        let each = [f(&m[0]), f(&m[1]), f(&m[2])];
        rows.push(Row {
            label,
            cells: each.clone().map(|e| e.0),
            values: each.map(|e| e.1),
            goal,
        });
    };
    let mib = |v: f64| (format!("{v:.1}"), Some(v));
    add(
        format!("start → /readyz (ms, median of {})", args.starts),
        &|r| (format!("{:.0}", r.startup_ms), Some(r.startup_ms)),
        Some(Goal::SqliteAtMost(1.0 / 20.0, "1/20")),
    );
    add(
        "idle RSS, cluster: server + its etcd (MiB)".into(),
        &|r| mib(r.idle.total),
        Some(Goal::SqliteAtMost(1.0 / 15.0, "1/15")),
    );
    add(
        "idle RSS, API server alone / etcd alone (MiB)".into(),
        &|r| both(r.idle),
        None,
    );
    add(
        "peak RSS, vcluster profile, cluster (MiB)".into(),
        &|r| mib(r.profile_peak.total),
        None,
    );
    add(
        "peak RSS, throughput cells, cluster (MiB)".into(),
        &|r| mib(r.load_peak.total),
        None,
    );
    add(
        "peak RSS, throughput cells, API server alone / etcd alone (MiB)".into(),
        &|r| both(r.load_peak),
        None,
    );
    let (small, large) = (
        (300.0 * args.scale) as usize,
        (5000.0 * args.scale) as usize,
    );
    for (phase, label, goal) in [
        (
            0,
            format!("vcluster profile, {small} secrets at 30 qps"),
            None,
        ),
        (
            1,
            format!("vcluster profile, {large} secrets at 200 qps"),
            Some(Goal::SqliteMs(5.0)),
        ),
    ] {
        add(
            format!("{label}: p99 / p50 (ms)"),
            &|r| {
                let l = if phase == 0 {
                    &r.profile.0
                } else {
                    &r.profile.1
                };
                let (p50, p99) = (l.p(0.5), l.p(0.99));
                (format!("{p99:.2} / {p50:.2}"), Some(p99))
            },
            goal,
        );
    }
    add(
        "vcluster profile: requests / non-2xx".into(),
        &|r| {
            let n = r.profile.0.all.len() + r.profile.1.all.len();
            let e = r.profile.0.errors + r.profile.1.errors;
            (format!("{n} / {e}"), None)
        },
        None,
    );
    for &n in &args.clients {
        for op in Op::ALL {
            let goal = (op != Op::Update).then_some(Goal::EtcdAtLeast(3.0, "3×"));
            add(
                format!(
                    "{}, {n} client{}: ops/s · p50 / p99 (ms)",
                    op.name(),
                    plural(n)
                ),
                &|r| {
                    let c = &r.cells[&(n, op)];
                    let mut s = format!("{:.0} · {:.2} / {:.2}", c.rate(), c.p(0.5), c.p(0.99));
                    if op == Op::Update {
                        let _ = write!(s, " · {} conflicts", c.conflicts);
                    }
                    (s, Some(c.rate()))
                },
                goal,
            );
        }
        add(
            format!(
                "watch, {n} watcher{} + 1 writer: events/s · delivery p50 / p99 (ms)",
                plural(n)
            ),
            &|r| {
                let w = &r.watches[&n];
                let lost = w.created * n as u64 - w.delivered.min(w.created * n as u64);
                let mut s = format!(
                    "{:.0} · {:.2} / {:.2}",
                    w.events_per_sec,
                    common::pct(&w.lat, 0.5),
                    common::pct(&w.lat, 0.99)
                );
                if lost > 0 {
                    let _ = write!(s, " · {lost} not delivered");
                }
                (s, Some(w.events_per_sec))
            },
            None,
        );
    }
    add(
        "throughput cells: failed requests".into(),
        &|r| {
            let e: u64 = r.cells.values().map(|c| c.errors).sum();
            (e.to_string(), None)
        },
        None,
    );
    rows
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn both(r: Rss) -> (String, Option<f64>) {
    let etcd = r.etcd.map_or("—".into(), |e| format!("{e:.1}"));
    (format!("{:.1} / {etcd}", r.server), Some(r.server))
}

fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| measure | vkube SQLite | vkube etcd | kube-apiserver + etcd | vkube SQLite / upstream | vkube etcd / upstream | target met? |\n|---|---:|---:|---:|---:|---:|---|\n",
    );
    let shown = |r: Option<f64>| r.map_or(String::new(), |r| format!("{r:.3}"));
    for row in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            row.label,
            row.cells[0],
            row.cells[1],
            row.cells[2],
            shown(ratio(row.values[0], row.values[2])),
            shown(ratio(row.values[1], row.values[2])),
            verdict(row)
        );
    }
    out
}

/// What the figures depend on: the machine, its load, and the versions measured.
fn machine(args: &Args) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let run = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
            .unwrap_or_default()
    };
    let upstream_bin = args.upstream.with_file_name("build-upstream");
    let apiserver = run(&upstream_bin.display().to_string(), &["kube-apiserver"]);
    format!(
        "- machine: {nproc} CPUs ({cpu}), load average at start {}\n- vkube {} (git), kube-apiserver {}, {}\n",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        run("git", &["describe", "--always", "--dirty", "--abbrev=7"]),
        run(&apiserver, &["--version"]),
        run("etcd", &["--version"]),
    )
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let duration = Duration::from_secs_f64(args.duration.unwrap_or((5.0 * args.scale).max(1.0)));
    let facts = machine(&args);
    let mut measured = Vec::new();
    for (kind, name) in [
        (Kind::Sqlite, "vkube on SQLite"),
        (Kind::VkubeEtcd, "vkube on etcd"),
        (Kind::Upstream, "kube-apiserver on etcd"),
    ] {
        eprintln!("measuring {name}");
        measured.push(measure(&args, kind, duration).await?);
    }
    let measured: [Measured; 3] = measured.try_into().ok().expect("three runs");
    let mut report = format!(
        "# peer benchmark (bench/peer)\n\n- command: `{}`\n{facts}\n",
        args.command
    );
    report.push_str(&table(&rows(&args, &measured)));
    let _ = write!(
        report,
        "
Ratios divide the first figure of a cell (vkube / upstream): lower is better for times and RSS,
higher for ops/s and events/s.

- etcd: each etcd-backed column has its own fresh etcd (same binary and flags, data dir in /tmp):
  the timed starts share one, each start under a fresh key prefix; the measured instance gets a
  fresh one, so its RSS is that instance's data alone. \"Cluster\" RSS adds etcd's to the
  server's, as a cluster needs both. kube-apiserver runs alone (no controller-manager).
- start → /readyz: a fresh cluster each time (new data dir or key prefix); vkube's includes
  making its CA and certificates, kube-apiserver's keys are made once before timing.
- client: this one process, on the same {} CPUs as the servers and etcd; HTTP/2 over TLS, a cell
  with N clients shares min(N, {}) connections. vkube authenticates the admin client
  certificate, kube-apiserver a static bearer token (`scripts/upstream-apiserver`).
- throughput: N tasks, each a closed loop for {:.1} s. create: POST a small ConfigMap; get: GET
  one of {objects} ConfigMaps; list: GET all {objects} in their namespace; update: PUT with the
  last resourceVersion seen, on 409 GET and retry (conflicts counted, latency includes retries);
  watch: N watches of one namespace while one writer creates in a closed loop, delivery latency
  from the writer sending the create to the watcher reading the event.
- vcluster profile: {} then {} secrets at 30 then 200 requests/s, open loop, half creates, the
  rest gets, lists (limit=500), updates and deletes, one connection; p99 of all its requests.
",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        args.connections,
        duration.as_secs_f64(),
        (300.0 * args.scale) as usize,
        (5000.0 * args.scale) as usize,
        objects = args.objects,
    );
    println!("{report}");
    if let Some(out) = &args.out {
        std::fs::write(out, &report)?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}
