//! `vkube serve` benchmark: start → /readyz, idle RSS, and vcluster's published load profile
//! (300 secrets at 30 qps, then 5000 secrets at 200 qps, as a create/get/list/update/delete mix)
//! with p50/p99 latency and RSS under load, on SQLite and on etcd. Requests go over one HTTP/2
//! connection with the admin client certificate, as client-go sends them.
//!
//! The peer is upstream kube-apiserver 1.33 (built by `scripts/build-upstream`, started by
//! `scripts/upstream-apiserver`) on an etcd of its own, measured the same way in the same run; its
//! RSS column adds etcd's, as a cluster needs both. Run it through `bench/serve`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;

mod apiserver;
mod common;
use apiserver::{Etcd, Latencies, RssPeak, Target};
use common::Client;

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
    let startup = apiserver::startup_median(target, 5).await?;
    let (server, _) = apiserver::start(target).await?;
    // The peer's RSS includes its etcd's: a cluster needs both.
    let pids: Vec<u32> = std::iter::once(server.child.id())
        .chain(extra_pid)
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = pids.iter().map(|p| common::rss_mib(*p)).sum();
    let client = Client::connect(&server).await?;
    let sampler = RssPeak::start(pids);
    let (first, second) = apiserver::vcluster_profile(&client, args.scale).await;
    let (load_rss, _) = sampler.finish();
    let mut l = Latencies::default();
    l.merge(first);
    l.merge(second);
    l.sort();
    let ops = l
        .by_op
        .keys()
        .map(|op| (*op, (l.op(op, 0.5), l.op(op, 0.99))))
        .collect();
    Ok(Run {
        startup_ms: startup.as_secs_f64() * 1e3,
        idle_rss,
        load_rss,
        p50: l.p(0.5),
        p99: l.p(0.99),
        ops,
        requests: l.all.len(),
        errors: l.errors,
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let vkube = |store| Target::Vkube {
        bin: args.vkube.clone(),
        store,
    };
    let etcd = format!("etcd://{}", args.etcd.trim_start_matches("http://"));
    eprintln!("measuring vkube serve on sqlite");
    let sqlite = run(&args, &vkube(None), None).await?;
    eprintln!("measuring vkube serve on etcd");
    let on_etcd = run(&args, &vkube(Some(etcd)), None).await?;
    let mut runs = vec![("vkube, SQLite", sqlite), ("vkube, etcd", on_etcd)];
    if let Some(script) = &args.upstream {
        eprintln!("measuring kube-apiserver on its own etcd");
        let etcd = Etcd::start()?;
        let target = Target::Upstream {
            script: script.clone(),
            etcd: etcd.url.clone(),
        };
        let pid = etcd.child.id();
        runs.push((
            "kube-apiserver + etcd",
            run(&args, &target, Some(pid)).await?,
        ));
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
