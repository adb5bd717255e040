//! `bench/sync`: how fast the syncer carries pods between vkube and the host, at 1000 pods on the
//! host's kwok nodes, and, in the same run, how fast the host's own kube-controller-manager turns
//! a ReplicaSet into pods, for scale.
//!
//! Every figure is a difference of two moments this process observed through watches (one of
//! the virtual cluster's pods, one of the host's), so both sides are timed by one clock:
//! - create: virtual pod seen → its host copy seen;
//! - Running: host copy seen Running → virtual pod seen Running;
//! - delete down: virtual pod seen deleting → host copy seen deleting (or gone);
//! - delete up: host copy seen deleting (out of band) → virtual pod seen deleting (or gone).
//!
//! vkube's CPU seconds and peak RSS come from /proc for the PID given.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use futures_util::{StreamExt, stream};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::watcher;

#[derive(Parser)]
struct Args {
    /// The virtual cluster (vkube's admin kubeconfig).
    #[arg(long)]
    vkube_kubeconfig: String,
    /// The host cluster (admin).
    #[arg(long)]
    host_kubeconfig: String,
    /// The host namespace of the virtual cluster's pods.
    #[arg(long)]
    host_namespace: String,
    /// vkube's PID (CPU seconds, peak RSS).
    #[arg(long)]
    vkube_pid: u32,
    /// kube-controller-manager's PID on the host (its CPU seconds during its phase).
    #[arg(long)]
    kcm_pid: Option<u32>,
    #[arg(long, default_value_t = 1000)]
    pods: usize,
    /// Concurrent creates and deletes.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

/// What the watches saw of one pod, by the virtual pod's uid.
#[derive(Default, Clone, Debug)]
struct Seen {
    virtual_added: Option<Instant>,
    host_added: Option<Instant>,
    host_running: Option<Instant>,
    virtual_running: Option<Instant>,
    virtual_deleting: Option<Instant>,
    host_deleting: Option<Instant>,
}

type Log = Arc<Mutex<HashMap<String, Seen>>>;

async fn client(path: &str) -> Result<kube::Client> {
    let kc =
        kube::config::Kubeconfig::read_from(path).with_context(|| format!("reading {path}"))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

fn running(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

/// Follows one cluster's pods, recording first sightings under the virtual uid.
async fn follow(api: Api<Pod>, log: Log, host: bool, label: String) {
    let config = watcher::Config::default().labels(&label);
    let mut events = std::pin::pin!(watcher(api, config));
    while let Some(event) = events.next().await {
        let now = Instant::now();
        let (pod, deleted) = match event {
            Ok(watcher::Event::Apply(p)) | Ok(watcher::Event::InitApply(p)) => (p, false),
            Ok(watcher::Event::Delete(p)) => (p, true),
            _ => continue,
        };
        let uid = if host {
            pod.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("vkube.dev/uid").cloned())
        } else {
            pod.metadata.uid.clone()
        };
        let Some(uid) = uid else { continue };
        let mut log = log.lock().unwrap();
        let seen = log.entry(uid).or_default();
        let deleting = deleted || pod.metadata.deletion_timestamp.is_some();
        if host {
            seen.host_added.get_or_insert(now);
            if running(&pod) {
                seen.host_running.get_or_insert(now);
            }
            if deleting {
                seen.host_deleting.get_or_insert(now);
            }
        } else {
            seen.virtual_added.get_or_insert(now);
            if running(&pod) {
                seen.virtual_running.get_or_insert(now);
            }
            if deleting {
                seen.virtual_deleting.get_or_insert(now);
            }
        }
    }
}

/// p50 and p99 (nearest rank) in milliseconds, and the count.
fn percentiles(mut ms: Vec<f64>) -> (f64, f64, usize) {
    if ms.is_empty() {
        return (f64::NAN, f64::NAN, 0);
    }
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
    (at(0.5), at(0.99), ms.len())
}

fn gaps(
    log: &Log,
    uids: &[String],
    from: fn(&Seen) -> Option<Instant>,
    to: fn(&Seen) -> Option<Instant>,
) -> Vec<f64> {
    let log = log.lock().unwrap();
    uids.iter()
        .filter_map(|u| log.get(u))
        .filter_map(|s| Some(to(s)?.saturating_duration_since(from(s)?).as_secs_f64() * 1000.0))
        .collect()
}

/// (CPU seconds, current RSS KiB, peak RSS KiB) of a process.
fn proc_usage(pid: u32) -> Result<(f64, u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("stat")?
        .1
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of stat (1-based), 12 and 13 after the comm.
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok((ticks / 100.0, kib("VmRSS:"), kib("VmHWM:")))
}

fn kwok_pod(name: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"app": "sync-bench"}},
        "spec": {
            "nodeSelector": {"type": "kwok"},
            "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": "vkube.local/busybox:1", "imagePullPolicy": "Never"}]
        }
    }))
    .expect("a valid pod")
}

async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > limit {
            bail!("{what}: not done after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn row(what: &str, (p50, p99, n): (f64, f64, usize)) {
    println!("| {what} | {n} | {p50:.0} | {p99:.0} |");
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let vclient = client(&args.vkube_kubeconfig).await?;
    let hclient = client(&args.host_kubeconfig).await?;
    let ns = "sync-bench";
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(vclient.clone());
    let _ = namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": ns}}))?,
        )
        .await;
    // The namespace's default ServiceAccount (the pods' token) is made by the namespace controller.
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(vclient.clone(), ns);
    for _ in 0..100 {
        if accounts.get_opt("default").await?.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let log: Log = Arc::default();
    let vpods: Api<Pod> = Api::namespaced(vclient.clone(), ns);
    let hpods: Api<Pod> = Api::namespaced(hclient.clone(), &args.host_namespace);
    tokio::spawn(follow(
        vpods.clone(),
        log.clone(),
        false,
        "app=sync-bench".into(),
    ));
    tokio::spawn(follow(
        hpods.clone(),
        log.clone(),
        true,
        "app=sync-bench".into(),
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;

    let (cpu0, _, _) = proc_usage(args.vkube_pid)?;
    let peak = Arc::new(Mutex::new(0u64));
    let sampler = {
        let (peak, pid) = (peak.clone(), args.vkube_pid);
        tokio::spawn(async move {
            loop {
                if let Ok((_, rss, _)) = proc_usage(pid) {
                    let mut p = peak.lock().unwrap();
                    *p = (*p).max(rss);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let t0 = Instant::now();
    let names: Vec<String> = (0..args.pods).map(|i| format!("p{i:04}")).collect();
    let created: Vec<(String, Result<Pod, kube::Error>)> = stream::iter(names.clone())
        .map(|n| {
            let api = vpods.clone();
            async move {
                let r = api.create(&PostParams::default(), &kwok_pod(&n)).await;
                (n, r)
            }
        })
        .buffer_unordered(args.concurrency)
        .collect()
        .await;
    // In the order of `names`, whatever order the creates finished in.
    let mut uid_of = HashMap::new();
    for (n, c) in created {
        uid_of.insert(n, c?.metadata.uid.context("a created pod without uid")?);
    }
    let uids: Vec<String> = names.iter().map(|n| uid_of[n].clone()).collect();
    let created_in = t0.elapsed();
    let all = |f: fn(&Seen) -> Option<Instant>| {
        let (log, uids) = (log.clone(), uids.clone());
        move || {
            let log = log.lock().unwrap();
            uids.iter().all(|u| log.get(u).and_then(f).is_some())
        }
    };
    wait_until(
        "every virtual pod Running",
        Duration::from_secs(600),
        all(|s| s.virtual_running),
    )
    .await?;
    let running_in = t0.elapsed();

    // Deletes: the first half in vkube, the second half on the host (out of band).
    let (down, up) = uids.split_at(uids.len() / 2);
    let down_names = &names[..names.len() / 2];
    let zero = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    let host_names: HashMap<String, String> = hpods
        .list(&kube::api::ListParams::default().labels("app=sync-bench"))
        .await?
        .items
        .into_iter()
        .filter_map(|p| {
            let uid = p
                .metadata
                .annotations
                .as_ref()?
                .get("vkube.dev/uid")?
                .clone();
            Some((uid, p.metadata.name?))
        })
        .collect();
    let vdel = stream::iter(down_names.to_vec())
        .map(|n| {
            let (api, dp) = (vpods.clone(), zero.clone());
            async move { gone_is_fine(api.delete(&n, &dp).await.map(|_| ())) }
        })
        .buffer_unordered(args.concurrency)
        .collect::<Vec<_>>();
    let hdel = stream::iter(
        up.iter()
            .filter_map(|u| host_names.get(u).cloned())
            .collect::<Vec<_>>(),
    )
    .map(|n| {
        let (api, dp) = (hpods.clone(), zero.clone());
        async move { gone_is_fine(api.delete(&n, &dp).await.map(|_| ())) }
    })
    .buffer_unordered(args.concurrency)
    .collect::<Vec<_>>();
    let (vd, hd) = tokio::join!(vdel, hdel);
    vd.into_iter().chain(hd).collect::<Result<Vec<_>, _>>()?;
    let down_v: Vec<String> = down.to_vec();
    let up_v: Vec<String> = up.to_vec();
    {
        let log = log.clone();
        wait_until(
            "every delete carried over",
            Duration::from_secs(300),
            move || {
                let log = log.lock().unwrap();
                down_v
                    .iter()
                    .all(|u| log.get(u).and_then(|s| s.host_deleting).is_some())
                    && up_v
                        .iter()
                        .all(|u| log.get(u).and_then(|s| s.virtual_deleting).is_some())
            },
        )
        .await?;
    }
    let (cpu1, _, _) = proc_usage(args.vkube_pid)?;
    sampler.abort();
    let peak_rss = *peak.lock().unwrap();
    let total = t0.elapsed();

    println!(
        "## vkube syncer: {} pods on the host's kwok nodes\n",
        args.pods
    );
    println!("| step | pods | p50 ms | p99 ms |");
    println!("|---|---|---|---|");
    row(
        "virtual create → host pod",
        percentiles(gaps(&log, &uids, |s| s.virtual_added, |s| s.host_added)),
    );
    row(
        "host Running → virtual Running",
        percentiles(gaps(&log, &uids, |s| s.host_running, |s| s.virtual_running)),
    );
    row(
        "virtual delete → host pod deleting",
        percentiles(gaps(
            &log,
            down,
            |s| s.virtual_deleting,
            |s| s.host_deleting,
        )),
    );
    row(
        "host delete (out of band) → virtual pod deleting",
        percentiles(gaps(&log, up, |s| s.host_deleting, |s| s.virtual_deleting)),
    );
    println!(
        "\n{} creates sent in {:.1} s; all Running in vkube after {:.1} s; run total {:.1} s. vkube: {:.1} CPU s, peak RSS {:.1} MiB.",
        args.pods,
        created_in.as_secs_f64(),
        running_in.as_secs_f64(),
        total.as_secs_f64(),
        cpu1 - cpu0,
        peak_rss as f64 / 1024.0
    );

    // For scale: the host's kube-controller-manager, ReplicaSet → pods, on the same kwok nodes.
    let rs_ns = "sync-bench-kcm";
    let hns: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(hclient.clone());
    let _ = hns
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": rs_ns}}))?,
        )
        .await;
    for _ in 0..100 {
        let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(hclient.clone(), rs_ns);
        if sa.get_opt("default").await?.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rs_log: Log = Arc::default();
    let rs_pods: Api<Pod> = Api::namespaced(hclient.clone(), rs_ns);
    tokio::spawn(follow_rs(rs_pods.clone(), rs_log.clone()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kcm0 = args.kcm_pid.and_then(|p| proc_usage(p).ok()).map(|u| u.0);
    let template = kwok_pod("x");
    let rs: ReplicaSet = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "kcm-bench"},
        "spec": {"replicas": args.pods, "selector": {"matchLabels": {"app": "sync-bench"}},
                 "template": {"metadata": {"labels": {"app": "sync-bench"}}, "spec": template.spec}}
    }))?;
    let rs_api: Api<ReplicaSet> = Api::namespaced(hclient.clone(), rs_ns);
    let r0 = Instant::now();
    rs_api.create(&PostParams::default(), &rs).await?;
    let want = args.pods;
    {
        let rs_log = rs_log.clone();
        wait_until(
            "every ReplicaSet pod Running",
            Duration::from_secs(600),
            move || {
                let log = rs_log.lock().unwrap();
                log.values().filter(|s| s.host_running.is_some()).count() >= want
            },
        )
        .await?;
    }
    let kcm_cpu = args
        .kcm_pid
        .and_then(|p| proc_usage(p).ok())
        .zip(kcm0)
        .map(|(u, c0)| u.0 - c0);
    let (to_pod, to_running): (Vec<f64>, Vec<f64>) = rs_log
        .lock()
        .unwrap()
        .values()
        .filter_map(|s| {
            let added = s.host_added?.saturating_duration_since(r0).as_secs_f64() * 1000.0;
            let run = s.host_running?.saturating_duration_since(r0).as_secs_f64() * 1000.0;
            Some((added, run))
        })
        .unzip();
    println!(
        "\n## For scale: kube-controller-manager 1.33 on the host, one ReplicaSet of {} pods\n",
        args.pods
    );
    println!("| step | pods | p50 ms | p99 ms |");
    println!("|---|---|---|---|");
    row("ReplicaSet created → pod seen", percentiles(to_pod));
    row(
        "ReplicaSet created → pod seen Running (kwok)",
        percentiles(to_running),
    );
    if let Some(c) = kcm_cpu {
        println!("\nkube-controller-manager: {c:.1} CPU s during its phase.");
    }
    let _ = rs_api.delete("kcm-bench", &DeleteParams::default()).await;
    let _ = hns.delete(rs_ns, &DeleteParams::default()).await;
    let _ = namespaces.delete(ns, &DeleteParams::default()).await;
    Ok(())
}

fn gone_is_fine(r: Result<(), kube::Error>) -> Result<(), kube::Error> {
    match r {
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        other => other,
    }
}

/// The ReplicaSet phase's pods, by their own uid.
async fn follow_rs(api: Api<Pod>, log: Log) {
    let mut events = std::pin::pin!(watcher(api, watcher::Config::default()));
    while let Some(event) = events.next().await {
        let now = Instant::now();
        let (Ok(watcher::Event::Apply(p)) | Ok(watcher::Event::InitApply(p))) = event else {
            continue;
        };
        let Some(uid) = p.metadata.uid.clone() else {
            continue;
        };
        let mut log = log.lock().unwrap();
        let seen = log.entry(uid).or_default();
        seen.host_added.get_or_insert(now);
        if running(&p) {
            seen.host_running.get_or_insert(now);
        }
    }
}
