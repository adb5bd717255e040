//! Replicas: SQLite refuses more than one, and leader election hands the controllers over when
//! the leader is killed, while every replica keeps serving.

use std::time::{Duration, Instant};

use crate::harness::*;

#[test]
fn sqlite_with_several_replicas_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vcluster.yaml");
    std::fs::write(
        &config,
        "controlPlane:\n  statefulSet:\n    highAvailability: {replicas: 3}\n  backingStore:\n    database:\n      embedded: {enabled: true}\n",
    )
    .unwrap();
    for args in [
        vec!["--replicas", "3"],
        vec!["--config", config.to_str().unwrap()],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vkube"))
            .args([
                "serve",
                "--data-dir",
                &dir.path().display().to_string(),
                "--listen",
                &format!("127.0.0.1:{}", free_port()),
            ])
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started");
        assert!(
            stderr.contains("embedded SQLite keeps one database per replica, so replicas would disagree (for example on RBAC); use controlPlane.backingStore.etcd.embedded or an external etcd/PostgreSQL"),
            "{args:?}: {stderr}"
        );
    }
}

fn holder(server: &Server) -> String {
    let out = server.kubectl(
        "kubectl",
        &[
            "get",
            "lease",
            "vkube-controllers",
            "-n",
            "kube-system",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
    );
    out.stdout
}

fn leads(server: &Server) -> bool {
    let metrics = run(server, "kubectl", &["get", "--raw", "/metrics"]);
    metrics.lines().any(|l| l == "vkube_leader 1")
}

#[test]
fn the_leader_killed_another_takes_over() {
    let store = format!(
        "etcd://{}?prefix=/ha-{}",
        crate::servers::etcd_endpoints(),
        std::process::id()
    );
    let mut replicas: Vec<Option<Server>> = (0..3)
        .map(|i| {
            Some(Server::start_with(&[
                "--store",
                &store,
                "--replicas",
                "3",
                "--replica-id",
                &i.to_string(),
            ]))
        })
        .collect();
    let any = |r: &Vec<Option<Server>>| r.iter().flatten().next().map(holder).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(10);
    while any(&replicas).is_empty() {
        assert!(Instant::now() < deadline, "no leader elected");
        std::thread::sleep(Duration::from_millis(100));
    }
    let first = any(&replicas);
    let index: usize = first.trim_start_matches("vkube-").parse().unwrap();
    let leading: Vec<bool> = replicas.iter().flatten().map(leads).collect();
    assert_eq!(
        leading.iter().filter(|l| **l).count(),
        1,
        "exactly one leader: {leading:?}"
    );
    // kill -9 the leader.
    let killed_at = Instant::now();
    drop(replicas[index].take());
    let survivor = replicas.iter().flatten().next().unwrap();
    let mut next = String::new();
    while Instant::now() < killed_at + Duration::from_secs(15) {
        next = holder(survivor);
        if !next.is_empty() && next != first {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = killed_at.elapsed();
    assert!(
        !next.is_empty() && next != first,
        "no takeover after {took:?}"
    );
    eprintln!("failover: {first} killed, {next} leads after {took:?}");
    // The new leader runs the controllers: a new namespace gets its default ServiceAccount.
    run(
        survivor,
        "kubectl",
        &["create", "namespace", "after-failover"],
    );
    let mut seen = false;
    for _ in 0..50 {
        if survivor
            .kubectl("kubectl", &["get", "sa", "default", "-n", "after-failover"])
            .ok
        {
            seen = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(seen, "the namespace controller runs on the new leader");
}
