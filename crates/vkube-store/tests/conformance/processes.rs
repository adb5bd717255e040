//! Several processes on one store, and a writer killed with `kill -9`.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use vkube_store::EventKind;

use crate::common::{Backend, Fixture, events_until, worker};

const TASKS: usize = 8;
const INCREMENTS: usize = 25;

/// Two worker processes with 8 tasks each add 1 to one counter by compare-and-swap; every
/// increment must land. (Memory has no second process: it runs the two groups of tasks here.)
pub async fn cas_counters_from_2_processes_and_8_tasks(f: Fixture) {
    let key = "/cas/counter";
    f.store.create(key, b"0".to_vec(), None).await.unwrap();
    match &f.url {
        Some(url) => {
            let children: Vec<_> = (0..2)
                .map(|_| {
                    worker()
                        .args(["cas", url, key, &TASKS.to_string(), &INCREMENTS.to_string()])
                        .stdout(Stdio::piped())
                        .stderr(Stdio::piped())
                        .spawn()
                        .expect("start vkube-store-worker")
                })
                .collect();
            let mut retries = 0;
            for child in children {
                let out = tokio::task::spawn_blocking(move || child.wait_with_output())
                    .await
                    .unwrap()
                    .unwrap();
                let stdout = String::from_utf8_lossy(&out.stdout);
                assert!(
                    out.status.success(),
                    "worker failed: {stdout}{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                retries += stdout
                    .trim()
                    .strip_prefix("done retries=")
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap();
            }
            eprintln!("{:?}: {retries} conflicts retried", f.backend);
        }
        None => {
            let mut tasks = Vec::new();
            for _ in 0..2 * TASKS {
                let s = f.store.clone();
                tasks.push(tokio::spawn(async move {
                    for _ in 0..INCREMENTS {
                        vkube_store::guaranteed_update(s.as_ref(), key, |kv| {
                            let n: usize = String::from_utf8_lossy(&kv.value).parse().unwrap();
                            (n + 1).to_string().into_bytes()
                        })
                        .await
                        .unwrap();
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        }
    }
    let total = 2 * TASKS * INCREMENTS;
    let kv = f.store.get(key, None).await.unwrap().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&kv.value),
        total.to_string(),
        "lost updates"
    );
    assert_eq!(kv.version, total as i64 + 1);
}

/// A writer process is killed with SIGKILL mid-stream. Every write it printed as acknowledged is
/// in the store after reopening, and a watcher in this process saw each of them, in order.
pub async fn kill_9_of_a_writer_loses_no_acknowledged_write(f: Fixture) {
    let url = f.url.clone().expect("a durable backend");
    let base = f.store.current_revision().await.unwrap();
    let mut watch = f.store.watch("/k9/", base).await.unwrap();
    let mut child = worker()
        .args(["acks", &url, "/k9/"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start vkube-store-worker");
    let stdout = child.stdout.take().unwrap();
    let acks = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let mut acks = Vec::new();
        while acks.len() < 300 {
            match lines.next() {
                Some(Ok(line)) => acks.push(line),
                _ => break,
            }
        }
        child.kill().expect("kill -9");
        child.wait().unwrap();
        // Lines printed before the kill were acknowledged too.
        acks.extend(lines.map_while(Result::ok));
        acks
    })
    .await
    .unwrap();
    let acks: Vec<(String, i64)> = acks
        .iter()
        .map(|l| {
            let mut parts = l.split(' ').skip(1);
            (
                parts.next().unwrap().to_string(),
                parts.next().unwrap().parse().unwrap(),
            )
        })
        .collect();
    assert!(
        acks.len() >= 300,
        "the worker died early after {} writes",
        acks.len()
    );

    let reopened = f.reopen().await;
    for (key, revision) in &acks {
        let kv = reopened.get(key, None).await.unwrap();
        assert_eq!(
            kv.map(|kv| kv.mod_revision),
            Some(*revision),
            "acknowledged {key} is missing"
        );
    }
    let last = acks.last().unwrap().1;
    let events = events_until(&mut watch, last).await;
    let seen: Vec<_> = events.iter().map(|e| (e.key.clone(), e.revision)).collect();
    assert_eq!(seen, acks);
    assert!(events.iter().all(|e| e.kind == EventKind::Create));
}

/// A slow transaction holds revision N; a writer that starts later must not commit N+1 before it,
/// and a rolled-back transaction must not leave a gap.
pub async fn postgres_commits_revisions_in_order(f: Fixture) {
    assert_eq!(f.backend, Backend::Postgres);
    let url = f.url.clone().unwrap();
    let (mut raw, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let base = f.store.current_revision().await.unwrap();
    let mut watch = f.store.watch("/ooo/", base).await.unwrap();

    // A slow writer takes revision base+1, then a fast one starts.
    let tx = raw.transaction().await.unwrap();
    let held: i64 = tx
        .query_one(
            "UPDATE vkube_meta SET value = value + 1 WHERE name = 'revision' RETURNING value",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(held, base + 1);
    let fast = {
        let s = f.store.clone();
        tokio::spawn(async move { s.create("/ooo/fast", b"f".to_vec(), None).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !fast.is_finished(),
        "the later writer committed while an earlier revision was open"
    );
    tx.execute(
        "INSERT INTO vkube_log (revision, key, deleted, create_revision, prev_revision, version, value) \
         VALUES ($1, '/ooo/slow', 0, $1, 0, 1, 'x')",
        &[&held],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let fast = fast.await.unwrap().unwrap();
    assert_eq!(fast.mod_revision, held + 1);
    let events = events_until(&mut watch, fast.mod_revision).await;
    let seen: Vec<_> = events
        .iter()
        .map(|e| (e.key.as_str(), e.revision))
        .collect();
    assert_eq!(seen, [("/ooo/slow", held), ("/ooo/fast", held + 1)]);

    // A writer that rolls back gives its revision back: the next write takes it, no gap.
    let tx = raw.transaction().await.unwrap();
    let abandoned: i64 = tx
        .query_one(
            "UPDATE vkube_meta SET value = value + 1 WHERE name = 'revision' RETURNING value",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let next = {
        let s = f.store.clone();
        tokio::spawn(async move { s.create("/ooo/next", b"n".to_vec(), None).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    tx.rollback().await.unwrap();
    let next = next.await.unwrap().unwrap();
    assert_eq!(
        next.mod_revision, abandoned,
        "the rolled-back revision was reused"
    );
    let event = events_until(&mut watch, next.mod_revision).await;
    assert_eq!(event.len(), 1);
}
