//! Embedded etcd: three replicas, each running and supervising one member of a real etcd cluster
//! on its own loopback address (127.0.0.x). The seed scenario runs on it, and two faults under a
//! write load: kill -9 of one etcd member (its replica restarts it) and a replica restarted with an
//! empty data dir (it rejoins: member remove + add). After each, no acknowledged write is missing,
//! the replicas list the same objects, and the time to recover is printed.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use crate::ha::WriteLoad;
use crate::harness::*;

/// The peer and client URLs of three members, each on its own loopback address.
pub(crate) struct Members {
    peers: Vec<String>,
    clients: Vec<String>,
}

/// Hands out 127.0.0.10 … 127.0.0.249, one address per member of this test process.
static NEXT_HOST: AtomicU8 = AtomicU8::new(0);

impl Members {
    pub(crate) fn new() -> Members {
        let (mut peers, mut clients) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            let host = format!(
                "127.0.0.{}",
                10 + NEXT_HOST.fetch_add(1, Ordering::Relaxed) % 240
            );
            // Both held at once, so they differ.
            let (a, b) = (
                TcpListener::bind((host.as_str(), 0)).unwrap(),
                TcpListener::bind((host.as_str(), 0)).unwrap(),
            );
            peers.push(format!("http://{host}:{}", a.local_addr().unwrap().port()));
            clients.push(format!("http://{host}:{}", b.local_addr().unwrap().port()));
        }
        Members { peers, clients }
    }

    /// Replica `i`'s flags: embedded etcd, the member list in replica order.
    pub(crate) fn flags(&self, i: usize) -> Vec<String> {
        [
            "--etcd-embedded",
            "--replicas",
            "3",
            "--replica-id",
            &i.to_string(),
            "--etcd-peers",
            &self.peers.join(","),
            "--etcd-clients",
            &self.clients.join(","),
            "--identity-secret-file",
            &shared_secret(),
        ]
        .map(str::to_string)
        .to_vec()
    }

    fn start(&self, i: usize) -> Server {
        Server::start_with(&strs(&self.flags(i)))
    }

    async fn client(&self, i: usize) -> etcd_client::Client {
        etcd_client::Client::connect([&self.clients[i]], None)
            .await
            .unwrap()
    }

    /// The replica whose member leads the raft group: the worst one to lose.
    async fn leader(&self) -> usize {
        for i in 0..3 {
            let status = self.client(i).await.status().await.unwrap();
            if status.header().map(|h| h.member_id()) == Some(status.leader()) {
                return i;
            }
        }
        panic!("no etcd member leads");
    }

    /// Whether member `i` serves a linearizable read within a second.
    async fn healthy(&self, i: usize) -> bool {
        let read = async {
            let mut client = etcd_client::Client::connect([&self.clients[i]], None).await?;
            let count = etcd_client::GetOptions::new().with_count_only();
            client.get("health", Some(count)).await
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(1), read).await,
            Ok(Ok(_))
        )
    }

    /// `name → member ID` as member `i` lists them.
    async fn ids(&self, i: usize) -> Vec<(String, u64)> {
        let list = self.client(i).await.member_list().await.unwrap();
        let mut ids: Vec<_> = list
            .members()
            .iter()
            .map(|m| (m.name().to_string(), m.id()))
            .collect();
        ids.sort();
        ids
    }
}

/// The pid of replica `server`'s etcd member, checked to be that member's etcd.
fn etcd_pid(server: &Server) -> u32 {
    let dir = server.dir.path().join("etcd");
    let pid: u32 = std::fs::read_to_string(dir.join("etcd.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(
        cmdline.contains(&dir.join("data").display().to_string()),
        "pid {pid} is not this replica's etcd: {cmdline:?}"
    );
    pid
}

#[test]
fn seed_scenario_on_embedded_etcd() {
    let members = Members::new();
    crate::rbac::seed_scenario("embedded etcd", &|i| members.flags(i));
}

/// kill -9 of the etcd member that leads the raft group, after 200 of 600 writes: the replicas go
/// on through the other members, and the replica restarts its member.
#[test]
fn embedded_etcd_member_killed_under_writes() {
    let members = Members::new();
    let replicas: Vec<Server> = (0..3).map(|i| members.start(i)).collect();
    let ports: Vec<u16> = replicas.iter().map(|r| r.port).collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let victim = members.leader().await;
        let pid = etcd_pid(&replicas[victim]);
        let mut load = WriteLoad::connect(&replicas[0].kubeconfig(), &ports).await;
        let (mut killed_at, mut first, mut first_via_victim) = (None, None, None);
        for n in 0..600 {
            if n == 200 {
                let killed = std::process::Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .status()
                    .unwrap();
                assert!(killed.success());
                killed_at = Some(Instant::now());
            }
            let via = load.write(n).await;
            if let (Some(at), Some(via)) = (killed_at, via) {
                first.get_or_insert(at.elapsed());
                if via == victim {
                    first_via_victim.get_or_insert(at.elapsed());
                }
            }
        }
        let killed_at = killed_at.unwrap();
        // The supervisor restarted the member: a new process, healthy again.
        let back = loop {
            let restarted = etcd_pid(&replicas[victim]) != pid;
            if restarted && members.healthy(victim).await {
                break killed_at.elapsed();
            }
            assert!(
                killed_at.elapsed() < Duration::from_secs(30),
                "etcd member vkube-{victim} not back 30 s after kill -9"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let acknowledged = load.acknowledged.len();
        assert!(acknowledged >= 500, "writes went on: {acknowledged} of 600 acknowledged");
        load.verify(&[0, 1, 2]).await;
        eprintln!(
            "embedded etcd: member vkube-{victim} (raft leader, pid {pid}) killed -9 after 200 of 600 writes; {acknowledged} acknowledged, none missing, the 3 replicas agree; first acknowledged write after the kill {first:?}, through vkube-{victim} (its member down) {first_via_victim:?}; member restarted and healthy after {back:?}"
        );
    });
}

/// Replica 0 (which founded the cluster) killed -9 after 200 of 600 writes and started again
/// with an empty data dir: it removes its old member, adds itself anew and serves every
/// acknowledged write.
#[test]
fn embedded_etcd_replica_rejoins_with_an_empty_data_dir() {
    let members = Members::new();
    let mut replicas: Vec<Option<Server>> = (0..3).map(|i| Some(members.start(i))).collect();
    let ports: Vec<u16> = replicas.iter().flatten().map(|r| r.port).collect();
    let kubeconfig = replicas[1].as_ref().unwrap().kubeconfig();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let before = members.ids(1).await;
        let mut load = WriteLoad::connect(&kubeconfig, &ports).await;
        let (mut killed_at, mut first, mut ready, mut first_via_rejoined) =
            (None, None, None, None);
        let mut restart = None;
        let mut n = 0;
        while n < 600 || restart.is_some() || first_via_rejoined.is_none() {
            if n == 200 {
                drop(replicas[0].take()); // SIGKILL; its watchdog stops its etcd member
                killed_at = Some(Instant::now());
                let flags = members.flags(0);
                // Server::start_with gives it a new, empty data dir.
                restart = Some(tokio::task::spawn_blocking(move || {
                    Server::start_with(&strs(&flags))
                }));
            }
            if restart.as_ref().is_some_and(|r| r.is_finished()) {
                let server = restart.take().unwrap().await.unwrap();
                ready = killed_at.map(|at| at.elapsed());
                // Ready means its own, new member serves (not the old process it replaced).
                let now = members.ids(1).await;
                assert!(
                    now.contains(&("vkube-0".into(), now[0].1)) && now[0].1 != before[0].1,
                    "vkube-0 ready before its new member joined: {now:?}"
                );
                assert!(members.healthy(0).await, "vkube-0 ready, its member not");
                load.reconnect(0, server.port).await;
                replicas[0] = Some(server);
            }
            let via = load.write(n).await;
            if let (Some(at), Some(via)) = (killed_at, via) {
                first.get_or_insert(at.elapsed());
                if via == 0 {
                    first_via_rejoined.get_or_insert(at.elapsed());
                }
            }
            n += 1;
            assert!(n < 5000, "replica 0 did not come back");
        }
        let acknowledged = load.acknowledged.len();
        assert!(
            acknowledged >= n * 2 / 3,
            "writes went on: {acknowledged} of {n} acknowledged"
        );
        load.verify(&[0, 1, 2]).await;
        let after = members.ids(1).await;
        let names = |ids: &[(String, u64)]| ids.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        assert_eq!(names(&after), ["vkube-0", "vkube-1", "vkube-2"], "{after:?}");
        assert_ne!(before[0], after[0], "vkube-0 is a new member");
        assert_eq!(before[1..], after[1..]);
        eprintln!(
            "embedded etcd: replica vkube-0 killed -9 after 200 writes and restarted with an empty data dir; member {:x} removed, {:x} added; {acknowledged} of {n} writes acknowledged, none missing, the 3 replicas agree; first acknowledged write after the kill {first:?}; vkube-0 ready again after {ready:?}, first write through it after {first_via_rejoined:?}",
            before[0].1, after[0].1
        );
    });
}
