//! Several clusters on one etcd (issue 17, defect 6): another cluster's writes raise the etcd
//! revision every read of "the current revision" returns, but send this cluster's watch nothing.
//! Readiness and a deny's wait for the RBAC view must reach that revision through the watch's
//! progress reports instead of waiting for a write of their own at it: with the other cluster
//! busy, /readyz stays ok and a deny is as quick as ever. (They used to wait for this cluster's
//! next write: its replica heartbeat, within a second, or the full 2 s bound without one.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::harness::*;

/// The median of `samples`.
fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[test]
fn another_clusters_writes_neither_delay_denies_nor_unready_this_one() {
    let endpoints = crate::servers::etcd_endpoints();
    let mine = format!("etcd://{endpoints}?prefix=/shared-a-{}", rand_suffix());
    // vcluster's lease timings, so the leader's lease renewals come 15 s apart: this cluster's
    // only steady writes are its replica heartbeats, one a second.
    let server = Server::start_with(&[
        "--store",
        &mine,
        "--lease-duration",
        "60",
        "--renew-deadline",
        "40",
        "--retry-period",
        "15",
    ]);

    // The other cluster: a writer under its own prefix, about 50 writes a second.
    let theirs = format!("etcd://{endpoints}?prefix=/shared-b-{}", rand_suffix());
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let store = vkube_store::open(&theirs).await.expect("the other cluster");
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("/registry/configmaps/default/c{i}");
                    store.create(&key, b"{}".to_vec(), None).await.unwrap();
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                i
            })
        })
    };
    std::thread::sleep(Duration::from_millis(500));

    let (mut baselines, mut denies, mut readies) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..15 {
        // kubectl's own time, with a request that waits for nothing.
        let started = Instant::now();
        let out = server.kubectl("kubectl", &["get", "--raw", "/livez"]);
        baselines.push(started.elapsed());
        assert!(out.ok, "{}", out.stderr);

        let started = Instant::now();
        let out = server.kubectl("kubectl", &["get", "pods", "--as=nobody"]);
        denies.push(started.elapsed());
        assert!(out.stderr.contains("forbidden"), "{}", out.stderr);

        let started = Instant::now();
        let out = server.kubectl("kubectl", &["get", "--raw", "/readyz?verbose"]);
        readies.push(started.elapsed());
        assert!(out.ok, "readyz failed: {}{}", out.stdout, out.stderr);
    }
    // Nor do they count as the RBAC view's lag behind the store.
    let lags: Vec<i64> = (0..5)
        .map(|_| {
            let metrics = run(&server, "kubectl", &["get", "--raw", "/metrics"]);
            metrics
                .lines()
                .find_map(|l| l.strip_prefix("vkube_cache_revision_lag "))
                .and_then(|v| v.trim().parse().ok())
                .expect("vkube_cache_revision_lag")
        })
        .collect();
    let mut sorted = lags.clone();
    sorted.sort();
    assert!(sorted[2] <= 2, "lag in revisions: {lags:?}");
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert!(written > 20, "the other cluster wrote only {written} keys");
    // Waiting for this cluster's next heartbeat added half a second on average; now a deny and
    // readyz cost what any request costs, give or take one etcd round trip.
    let baseline = median(baselines);
    let (deny, ready) = (median(denies.clone()), median(readies.clone()));
    let slack = Duration::from_millis(250);
    assert!(
        deny < baseline + slack,
        "a deny took {deny:?}, a request {baseline:?} (all: {denies:?})"
    );
    assert!(
        ready < baseline + slack,
        "readyz took {ready:?}, a request {baseline:?} (all: {readies:?})"
    );
}
