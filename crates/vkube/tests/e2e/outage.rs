//! Fault: PostgreSQL stopped for 5 s under a write load through 3 replicas, then started again.
//! The replicas must serve again without a restart, no acknowledged write may be missing, and
//! every replica must list the same objects. The test runs its own PostgreSQL (stopping the one
//! the other tests share would fail them).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::ha::WriteLoad;
use crate::harness::*;

/// A PostgreSQL of this test's own, driven by pg_ctl (as the `postgres` user when root).
struct Postgres {
    dir: PathBuf,
    port: u16,
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn sh(script: &str) -> bool {
    let as_user = if is_root() {
        "runuser -u postgres -- "
    } else {
        ""
    };
    Command::new("sh")
        .args(["-c", &format!("{as_user}{script}")])
        .status()
        .is_ok_and(|s| s.success())
}

impl Postgres {
    fn start() -> Postgres {
        let dir = tempfile::Builder::new()
            .prefix("vkube-outage-pg")
            .tempdir()
            .unwrap()
            .keep();
        if is_root() {
            Command::new("chown")
                .args(["-R", "postgres", &dir.display().to_string()])
                .status()
                .unwrap();
        }
        let pg = Postgres {
            port: free_port(),
            dir,
        };
        let data = pg.data();
        assert!(
            sh(&format!(
                "initdb -D '{}' -U postgres --auth=trust >/dev/null 2>&1",
                data.display()
            )),
            "initdb failed: is PostgreSQL installed?"
        );
        assert!(pg.ctl("start"), "pg_ctl start failed: {}", pg.log());
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }

    fn ctl(&self, what: &str) -> bool {
        let opts = format!("-h 127.0.0.1 -p {} -k {}", self.port, self.dir.display());
        let log = self.dir.join("postgres.log");
        match what {
            "start" => sh(&format!(
                "pg_ctl -D '{}' -o '{opts}' -l '{}' -w start >/dev/null",
                self.data().display(),
                log.display()
            )),
            _ => sh(&format!(
                "pg_ctl -D '{}' -m fast -w stop >/dev/null",
                self.data().display()
            )),
        }
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.ctl("stop");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ready(server: &Server) -> bool {
    server
        .kubectl("kubectl", &["get", "--raw", "/readyz"])
        .stdout
        .trim()
        == "ok"
}

#[test]
fn fault_postgres_stopped_for_5_seconds_under_writes() {
    let pg = Postgres::start();
    let store = pg.url();
    let replicas: Vec<Server> = (0..3)
        .map(|i| Server::start_with(&strs(&replica_flags(&store, i))))
        .collect();
    let kubeconfig = replicas[0].kubeconfig();
    let ports: Vec<u16> = replicas.iter().map(|r| r.port).collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut load = WriteLoad::connect(&kubeconfig, &ports).await;
        for i in 0..200 {
            load.write(i).await;
        }
        assert!(pg.ctl("stop"), "pg_ctl stop failed");
        let stopped_at = Instant::now();
        let mut n = 200;
        // Writes go on (and fail) while PostgreSQL is down.
        while stopped_at.elapsed() < Duration::from_secs(5) {
            load.write(n).await;
            n += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let during = load.acknowledged.len();
        assert!(pg.ctl("start"), "pg_ctl start failed: {}", pg.log());
        let restarted_at = Instant::now();
        let mut first_after = None;
        let mut after = 0;
        while after < 200 {
            assert!(
                restarted_at.elapsed() < Duration::from_secs(60),
                "the replicas do not write again a minute after PostgreSQL is back ({after} writes acknowledged)"
            );
            if load.write(n).await.is_some() {
                first_after.get_or_insert(restarted_at.elapsed());
                after += 1;
            } else {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            n += 1;
        }
        load.verify(&[0, 1, 2]).await;
        eprintln!(
            "postgres stopped 5 s after 200 writes: {} of {n} acknowledged ({} during the outage), none missing; first write acknowledged {:?} after the restart",
            load.acknowledged.len(),
            during.saturating_sub(200),
            first_after
        );
    });
    // Every replica is ready again, without a restart.
    for (i, r) in replicas.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ready(r) {
            assert!(Instant::now() < deadline, "replica {i} is not ready again");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
