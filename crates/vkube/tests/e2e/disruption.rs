//! PodDisruptionBudgets through kubectl: the disruption controller keeps each budget's status
//! (`kubectl get pdb` shows ALLOWED DISRUPTIONS), and the eviction subresource spends from it,
//! refusing with upstream's 429 once the budget is used up.

use crate::harness::*;

fn post_raw(server: &Server, path: &str, body: &str) -> Output {
    let file = server
        .dir
        .path()
        .join(format!("raw-{}.json", rand_suffix()));
    std::fs::write(&file, body).unwrap();
    server.kubectl(
        "kubectl",
        &["create", "--raw", path, "-f", &file.display().to_string()],
    )
}

/// Plays kubelet: every pod of `app=web` that is not Ready becomes Ready.
fn make_ready(server: &Server, ns: &str) {
    let names = run(
        server,
        "kubectl",
        &["get", "pods", "-n", ns, "-l", "app=web", "-o", "name"],
    );
    for pod in names.lines().filter(|l| !l.is_empty()) {
        patch_pod_status(server, ns, pod, POD_READY);
    }
}

#[test]
fn budgets_track_healthy_pods_and_evictions_spend_them() {
    let server = Server::start();
    let k = "kubectl";
    let ns = "budgets";
    run(&server, k, &["create", "namespace", ns]);
    run(
        &server,
        k,
        &[
            "create",
            "deployment",
            "web",
            "--image=nginx",
            "--replicas=3",
            "-n",
            ns,
        ],
    );
    run(
        &server,
        k,
        &[
            "create",
            "pdb",
            "web",
            "-n",
            ns,
            "--selector=app=web",
            "--min-available=2",
        ],
    );
    let status = |path: &str| {
        run(
            &server,
            k,
            &[
                "get",
                "pdb",
                "web",
                "-n",
                ns,
                "-o",
                &format!("jsonpath={path}"),
            ],
        )
    };
    crate::gc::eventually("three pods, none healthy yet", || {
        status("{.status.expectedPods} {.status.currentHealthy} {.status.disruptionsAllowed}")
            == "3 0 0"
    });
    make_ready(&server, ns);
    crate::gc::eventually("one disruption allowed", || {
        status("{.status.currentHealthy} {.status.desiredHealthy} {.status.disruptionsAllowed}")
            == "3 2 1"
    });
    let row = run(&server, k, &["get", "pdb", "web", "-n", ns, "--no-headers"]);
    assert_eq!(
        lines(&row)[0][..4],
        ["web", "2", "N/A", "1"],
        "kubectl get pdb: {row}"
    );

    let pods = run(
        &server,
        k,
        &[
            "get",
            "pods",
            "-n",
            ns,
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ],
    );
    let names: Vec<&str> = pods.split_whitespace().collect();
    let evict = |name: &str| {
        post_raw(
            &server,
            &format!("/api/v1/namespaces/{ns}/pods/{name}/eviction"),
            &format!(
                r#"{{"apiVersion":"policy/v1","kind":"Eviction","metadata":{{"name":"{name}"}}}}"#
            ),
        )
    };
    let first = evict(names[0]);
    assert!(first.ok, "{}", first.stderr);
    // The budget is spent until the replacement is Ready.
    let second = evict(names[1]);
    assert!(!second.ok, "a second eviction went through");
    assert!(
        second.stderr.contains("Too many requests")
            || second.stderr.contains("TooManyRequests")
            || second.stderr.contains("disruption budget"),
        "{}",
        second.stderr
    );
    crate::gc::eventually(
        "the evicted pod is replaced and the budget recomputed",
        || status("{.status.disruptionsAllowed} {.status.currentHealthy}") == "0 2",
    );
    make_ready(&server, ns);
    crate::gc::eventually(
        "the replacement is healthy, one disruption allowed again",
        || status("{.status.disruptionsAllowed} {.status.currentHealthy}") == "1 3",
    );
    assert!(evict(names[1]).ok);
}
