//! ResourceQuota through kubectl: the controller fills in usage, admission charges creates and
//! refuses the one past the limit with upstream's 403 wording, concurrent creates cannot both
//! take the last unit, and deleting an object gives its share back.

use std::time::{Duration, Instant};

use crate::harness::*;

/// Polls `kubectl get quota q` until its Request column equals `want`.
fn wait_for_request_column(server: &Server, k: &str, ns: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = run(server, k, &["get", "quota", "q", "-n", ns, "--no-headers"]);
        let row = lines(&out).into_iter().next().unwrap_or_default().join(" ");
        if row.contains(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{k}: quota never showed {want:?}; last: {out}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn pod(name: &str, cpu: Option<&str>) -> String {
    let resources = cpu.map_or(String::new(), |cpu| {
        format!("\n    resources: {{requests: {{cpu: {cpu}, memory: 252Mi}}}}")
    });
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers:\n  - name: c\n    image: nginx{resources}\n"
    )
}

fn create(server: &Server, k: &str, ns: &str, yaml: &str) -> Output {
    let file = server
        .dir
        .path()
        .join(format!("quota-{}.yaml", rand_suffix()));
    std::fs::write(&file, yaml).unwrap();
    server.kubectl(k, &["create", "-n", ns, "-f", &file.display().to_string()])
}

#[test]
fn quota_counts_charges_refuses_and_releases() {
    let server = Server::start();
    for &k in KUBECTLS {
        let ns = ns_name(k, "quota");
        run(&server, k, &["create", "namespace", &ns]);
        run(
            &server,
            k,
            &[
                "create",
                "quota",
                "q",
                "-n",
                &ns,
                "--hard=pods=1,configmaps=3,requests.cpu=1,requests.memory=1Gi",
            ],
        );
        // The namespace's kube-root-ca.crt is counted, with the quota itself.
        wait_for_request_column(
            &server,
            k,
            &ns,
            "configmaps: 1/3, pods: 0/1, requests.cpu: 0/1, requests.memory: 0/1Gi",
        );

        let out = create(&server, k, &ns, &pod("p1", Some("500m")));
        assert!(out.ok, "{k}: {}", out.stderr);
        wait_for_request_column(
            &server,
            k,
            &ns,
            "configmaps: 1/3, pods: 1/1, requests.cpu: 500m/1, requests.memory: 252Mi/1Gi",
        );
        let over = create(&server, k, &ns, &pod("p2", Some("600m")));
        assert!(
            over.stderr.contains(r#"pods "p2" is forbidden: exceeded quota: q, requested: pods=1,requests.cpu=600m, used: pods=1,requests.cpu=500m, limited: pods=1,requests.cpu=1"#),
            "{k}: {}",
            over.stderr
        );
        let bare = create(&server, k, &ns, &pod("p3", None));
        assert!(
            bare.stderr.contains(r#"pods "p3" is forbidden: failed quota: q: must specify requests.cpu for: c; requests.memory for: c"#),
            "{k}: {}",
            bare.stderr
        );
        // A dry run is measured too, and charges nothing.
        let dry = server.kubectl(
            k,
            &["create", "configmap", "dry", "-n", &ns, "--dry-run=server"],
        );
        assert!(dry.ok, "{k}: {}", dry.stderr);

        // Four creates race for the two configmaps left: exactly two win.
        let outcomes: Vec<Output> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|i| {
                    let (server, ns) = (&server, &ns);
                    s.spawn(move || {
                        server.kubectl(k, &["create", "configmap", &format!("c{i}"), "-n", ns])
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let won = outcomes.iter().filter(|o| o.ok).count();
        assert_eq!(
            won,
            2,
            "{k}: {:?}",
            outcomes.iter().map(|o| &o.stderr).collect::<Vec<_>>()
        );
        for lost in outcomes.iter().filter(|o| !o.ok) {
            assert!(
                lost.stderr.contains("is forbidden: exceeded quota: q, requested: configmaps=1, used: configmaps=3, limited: configmaps=3"),
                "{k}: {}",
                lost.stderr
            );
        }
        let dry_over = server.kubectl(
            k,
            &["create", "configmap", "dry", "-n", &ns, "--dry-run=server"],
        );
        assert!(
            dry_over.stderr.contains("exceeded quota: q"),
            "{k}: {}",
            dry_over.stderr
        );

        // Deleting gives the usage back, and the next pod fits.
        run(&server, k, &["delete", "pod", "p1", "-n", &ns]);
        wait_for_request_column(
            &server,
            k,
            &ns,
            "configmaps: 3/3, pods: 0/1, requests.cpu: 0/1, requests.memory: 0/1Gi",
        );
        let out = create(&server, k, &ns, &pod("p2", Some("600m")));
        assert!(out.ok, "{k}: {}", out.stderr);
        let used = run(
            &server,
            k,
            &[
                "get",
                "quota",
                "q",
                "-n",
                &ns,
                "-o",
                "jsonpath={.status.used}",
            ],
        );
        assert!(
            used.contains(r#""requests.cpu":"600m""#) && used.contains(r#""pods":"1""#),
            "{k}: {used}"
        );
        // What a pod was charged cannot change: its resources are immutable.
        let patch =
            r#"{"spec":{"containers":[{"name":"c","resources":{"requests":{"cpu":"100m"}}}]}}"#;
        let out = server.kubectl(k, &["patch", "pod", "p2", "-n", &ns, "-p", patch]);
        assert!(
            out.stderr.contains(r#"The Pod "p2" is invalid: spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`"#),
            "{k}: {}",
            out.stderr
        );
    }
}

/// The controllers are clients of the API: the pods a ReplicaSet makes pass quota admission
/// like any client's, so the quota stops the third, and the ReplicaSet says why, as upstream's
/// `ReplicaFailure` condition does. Their writes are recorded under `kube-controller-manager`.
#[test]
fn pods_a_replicaset_creates_are_charged_to_the_quota() {
    let server = Server::start();
    let k = "kubectl";
    let ns = "quota-controllers";
    run(&server, k, &["create", "namespace", ns]);
    run(
        &server,
        k,
        &["create", "quota", "q", "-n", ns, "--hard=pods=2"],
    );
    wait_for_request_column(&server, k, ns, "pods: 0/2");
    let rs = "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: web}\nspec:\n  replicas: 3\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: c, image: nginx}]}\n";
    let out = create(&server, k, ns, rs);
    assert!(out.ok, "{}", out.stderr);
    crate::gc::eventually("the ReplicaSet reports the quota's refusal", || {
        let got = run(
            &server,
            k,
            &[
                "get",
                "rs",
                "web",
                "-n",
                ns,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"ReplicaFailure\")].message}",
            ],
        );
        got.contains("exceeded quota: q")
    });
    let pods = run(&server, k, &["get", "pods", "-n", ns, "-o", "name"]);
    assert_eq!(pods.lines().count(), 2, "the quota allows two pods: {pods}");
    wait_for_request_column(&server, k, ns, "pods: 2/2");
    let managers = run(
        &server,
        k,
        &[
            "get",
            "pods",
            "-n",
            ns,
            "-o",
            "jsonpath={.items[*].metadata.managedFields[*].manager}",
        ],
    );
    assert!(
        managers
            .split_whitespace()
            .all(|m| m == "kube-controller-manager"),
        "pods written by the controller: {managers}"
    );
    // As upstream, each controller's service account exists in kube-system.
    let accounts = run(
        &server,
        k,
        &["get", "sa", "-n", "kube-system", "-o", "name"],
    );
    for sa in [
        "replicaset-controller",
        "deployment-controller",
        "job-controller",
    ] {
        assert!(
            accounts.contains(&format!("serviceaccount/{sa}")),
            "{sa}: {accounts}"
        );
    }
}
