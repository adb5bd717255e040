//! Read throughput of one or more vkube builds on embedded SQLite (issue 18, the watch cache):
//! closed-loop gets and lists of `--objects` ConfigMaps at each `--clients` count, with the same
//! load generator as `bench/peer`. Several `--vkube` binaries are measured in turn, round after
//! round, so a before/after pair shares the machine's noise. Prints a Markdown table.
//!
//! `cargo run --release -p vkube-bench --bin reads-bench -- --vkube OLD --vkube NEW`

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;

mod apiserver;
mod common;
mod load;
use apiserver::Target;
use common::Client;
use load::{Fixture, Op};

#[derive(Parser)]
struct Args {
    /// vkube binaries to compare (release builds), measured in this order each round.
    #[arg(long, required = true)]
    vkube: Vec<PathBuf>,
    /// Concurrent clients per cell.
    #[arg(long, value_delimiter = ',', default_value = "16,64")]
    clients: Vec<usize>,
    /// Seconds per cell.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// ConfigMaps in the namespace that gets and lists read.
    #[arg(long, default_value_t = 100)]
    objects: usize,
    /// HTTP/2 connections the clients share.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Rounds over all binaries; each cell reports the best round's rate.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
}

/// (requests/s, p50 ms, p99 ms) of one cell.
type Figures = (f64, f64, f64);

async fn measure(args: &Args, bin: &std::path::Path) -> Result<Vec<((Op, usize), Figures)>> {
    let target = Target::Vkube {
        bin: bin.to_path_buf(),
        store: None,
    };
    let (server, _) = apiserver::start(&target).await?;
    let client = Client::connect(&server).await?;
    let mut clients = Vec::new();
    for _ in 0..args.connections.max(1) {
        clients.push(Client::connect(&server).await?);
    }
    let fixture = Fixture::make(&client, args.objects).await?;
    let duration = Duration::from_secs_f64(args.duration);
    let mut out = Vec::new();
    for op in [Op::Get, Op::List] {
        for &n in &args.clients {
            let shared = &clients[..n.min(clients.len()).max(1)];
            let cell = load::run(op, shared, n, duration, &fixture).await?;
            if cell.errors > 0 {
                eprintln!("  {} × {n}: {} errors", op.name(), cell.errors);
            }
            out.push(((op, n), (cell.rate(), cell.p(0.5), cell.p(0.99))));
        }
    }
    Ok(out)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let mut best: Vec<std::collections::BTreeMap<(Op, usize), Figures>> =
        vec![Default::default(); args.vkube.len()];
    for round in 0..args.rounds.max(1) {
        for (i, bin) in args.vkube.iter().enumerate() {
            eprintln!("round {round}: {}", bin.display());
            for (cell, figures) in measure(&args, bin).await? {
                let kept = best[i].entry(cell).or_insert(figures);
                if figures.0 > kept.0 {
                    *kept = figures;
                }
            }
        }
    }
    let mut header = "| cell |".to_string();
    let mut rule = "|---|".to_string();
    for bin in &args.vkube {
        header.push_str(&format!(" {} req/s (p50 / p99 ms) |", bin.display()));
        rule.push_str("---:|");
    }
    println!("{header}\n{rule}");
    for cell in best[0].keys() {
        let mut line = format!("| {} × {} clients |", cell.0.name(), cell.1);
        for figures in &best {
            let (rate, p50, p99) = figures.get(cell).copied().unwrap_or_default();
            line.push_str(&format!(" {rate:.0} ({p50:.2} / {p99:.2}) |"));
        }
        println!("{line}");
    }
    Ok(())
}
