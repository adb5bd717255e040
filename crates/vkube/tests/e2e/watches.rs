//! Watches through kubectl, and several processes on one store.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::harness::*;

#[test]
fn get_watch_shows_added_modified_and_deleted() {
    let server = Server::start();
    for &k in KUBECTLS {
        let ns = ns_name(k, "watch");
        apply_file(
            &server,
            k,
            MANIFEST.replace("NS", &ns).split("---").next().unwrap(),
            "create",
        );
        let mut child = Command::new(kubectl_path(k))
            .args([
                "get",
                "cm",
                "-n",
                &ns,
                "-l",
                "watched=yes",
                "-w",
                "--output-watch-events",
            ])
            .env("KUBECONFIG", server.kubeconfig())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        std::thread::sleep(Duration::from_millis(500));
        let cm = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: w\n  namespace: {ns}\n  labels: {{watched: \"yes\"}}\ndata: {{v: \"1\"}}\n"
        );
        apply_file(&server, k, &cm, "create");
        run(
            &server,
            k,
            &[
                "patch",
                "cm",
                "w",
                "-n",
                &ns,
                "--type=merge",
                "-p",
                r#"{"data":{"x":"2"}}"#,
            ],
        );
        // Leaving the selector reads as DELETED, entering it as ADDED.
        run(
            &server,
            k,
            &["label", "cm", "w", "-n", &ns, "watched=no", "--overwrite"],
        );
        run(
            &server,
            k,
            &["label", "cm", "w", "-n", &ns, "watched=yes", "--overwrite"],
        );
        run(&server, k, &["delete", "cm", "w", "-n", &ns]);
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while seen
            .iter()
            .filter(|l: &&Vec<String>| l[0] == "DELETED")
            .count()
            < 2
            && Instant::now() < deadline
        {
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
                seen.push(line.split_whitespace().map(str::to_string).collect());
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        // EVENT NAME DATA; AGE varies.
        let events: Vec<Vec<&str>> = seen
            .iter()
            .map(|l| l.iter().take(3).map(String::as_str).collect())
            .collect();
        assert_eq!(
            events,
            [
                vec!["EVENT", "NAME", "DATA"],
                vec!["ADDED", "w", "1"],
                vec!["MODIFIED", "w", "2"],
                vec!["DELETED", "w", "2"],
                vec!["ADDED", "w", "2"],
                vec!["DELETED", "w", "2"]
            ],
            "{k}"
        );
    }
}

/// Two processes on one store share one cluster identity (DESIGN.md rule 5): each one's admin
/// kubeconfig works against the other, and each sees what the other wrote. (On etcd: a second
/// process on one SQLite database is refused.)
#[test]
fn processes_on_one_store_share_the_cluster_identity() {
    let store = format!(
        "etcd://{}?prefix=/identity-{}",
        crate::servers::etcd_endpoints(),
        crate::harness::rand_suffix()
    );
    let a = Server::start_with(&[
        "--store",
        &store,
        "--identity-secret-file",
        &shared_secret(),
    ]);
    let b = Server::start_with(&[
        "--store",
        &store,
        "--identity-secret-file",
        &shared_secret(),
    ]);
    // Both are `vkube-0` (no --replica-id), yet only one may lead.
    let leads = |s: &Server| {
        run(s, "kubectl", &["get", "--raw", "/metrics"])
            .lines()
            .any(|l| l == "vkube_leader 1")
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !(leads(&a) || leads(&b)) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(
        [leads(&a), leads(&b)].iter().filter(|l| **l).count(),
        1,
        "exactly one process leads"
    );
    let ca = |s: &Server| std::fs::read_to_string(s.dir.path().join("ca.crt")).unwrap();
    assert_eq!(
        ca(&a),
        ca(&b),
        "both processes serve with the CA kept in the store"
    );
    // b's admin credentials against a's server.
    let b_to_a = std::fs::read_to_string(b.kubeconfig())
        .unwrap()
        .replace(&format!(":{}\n", b.port), &format!(":{}\n", a.port));
    let cross = b.dir.path().join("b-to-a.kubeconfig");
    std::fs::write(&cross, b_to_a).unwrap();
    let out = kubectl_with("kubectl", &cross, &["get", "ns", "default", "-o", "name"]);
    assert!(
        out.ok && out.stdout == "namespace/default",
        "{}",
        out.stderr
    );
    // A write through one process is read through the other.
    apply_file(
        &a,
        "kubectl",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: shared\n  namespace: default\ndata: {k: v}\n",
        "create",
    );
    assert_eq!(
        run(
            &b,
            "kubectl",
            &["get", "cm", "shared", "-o", "jsonpath={.data.k}"]
        ),
        "v"
    );
    // And b's watch (fed by the store, across processes) sees a's next write.
    let out = b.kubectl(
        "kubectl",
        &[
            "get",
            "cm",
            "shared",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ],
    );
    let rv = out.stdout;
    run(&a, "kubectl", &["label", "cm", "shared", "seen=yes"]);
    let watched = run(
        &b,
        "kubectl",
        &[
            "get",
            "--raw",
            &format!(
                "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}&timeoutSeconds=2"
            ),
        ],
    );
    assert!(
        watched.contains("\"type\":\"MODIFIED\"") && watched.contains("\"seen\":\"yes\""),
        "{watched}"
    );
}
