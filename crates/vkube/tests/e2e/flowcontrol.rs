//! API Priority and Fairness end to end with kubectl: kube-apiserver 1.33's FlowSchemas and
//! PriorityLevelConfigurations are there with upstream's columns; answers carry the
//! classification headers; a custom level with little concurrency and `Reject` gives 429 to a
//! parallel burst while `system:masters` is never refused; a mandatory object edited or deleted
//! is restored, a suggested one marked `autoupdate-spec: "false"` keeps the operator's edit;
//! a FlowSchema naming a missing level is `Dangling`.

use std::time::{Duration, Instant};

use crate::harness::*;
use crate::rbac::Api;

fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn get(server: &Server, args: &[&str]) -> String {
    run(server, "kubectl", args)
}

const UPSTREAM_SCHEMAS: &[(&str, &str, &str, &str)] = &[
    ("exempt", "exempt", "1", "<none>"),
    ("probes", "exempt", "2", "<none>"),
    ("system-leader-election", "leader-election", "100", "ByUser"),
    ("endpoint-controller", "workload-high", "150", "ByUser"),
    (
        "workload-leader-election",
        "leader-election",
        "200",
        "ByUser",
    ),
    ("system-node-high", "node-high", "400", "ByUser"),
    ("system-nodes", "system", "500", "ByUser"),
    (
        "kube-controller-manager",
        "workload-high",
        "800",
        "ByNamespace",
    ),
    ("kube-scheduler", "workload-high", "800", "ByNamespace"),
    (
        "kube-system-service-accounts",
        "workload-high",
        "900",
        "ByNamespace",
    ),
    ("service-accounts", "workload-low", "9000", "ByUser"),
    ("global-default", "global-default", "9900", "ByUser"),
    ("catch-all", "catch-all", "10000", "ByUser"),
];

const TINY: &str = "apiVersion: flowcontrol.apiserver.k8s.io/v1
kind: PriorityLevelConfiguration
metadata:
  name: tiny
spec:
  type: Limited
  limited:
    nominalConcurrencyShares: 1
    limitResponse:
      type: Reject
---
apiVersion: flowcontrol.apiserver.k8s.io/v1
kind: FlowSchema
metadata:
  name: alice
spec:
  priorityLevelConfiguration:
    name: tiny
  matchingPrecedence: 500
  distinguisherMethod:
    type: ByUser
  rules:
  - subjects:
    - kind: User
      user:
        name: alice
    resourceRules:
    - verbs: ['*']
      apiGroups: ['*']
      resources: ['*']
      namespaces: ['*']
      clusterScope: true
---
apiVersion: flowcontrol.apiserver.k8s.io/v1
kind: FlowSchema
metadata:
  name: lost
spec:
  priorityLevelConfiguration:
    name: no-such-level
  matchingPrecedence: 600
  rules:
  - subjects:
    - kind: Group
      group:
        name: nobody
    nonResourceRules:
    - verbs: ['*']
      nonResourceURLs: ['*']
";

#[test]
fn priority_and_fairness() {
    let server = Server::start();
    // The leader creates upstream's objects and writes their Dangling conditions.
    let mut table = String::new();
    eventually("upstream's FlowSchemas, not dangling", || {
        table = get(&server, &["get", "flowschemas"]);
        table.lines().count() == UPSTREAM_SCHEMAS.len() + 1
            && table.lines().skip(1).all(|l| l.ends_with("False"))
    });
    let rows = lines(&table);
    assert_eq!(
        rows[0],
        [
            "NAME",
            "PRIORITYLEVEL",
            "MATCHINGPRECEDENCE",
            "DISTINGUISHERMETHOD",
            "AGE",
            "MISSINGPL"
        ]
    );
    for (row, (name, level, precedence, method)) in rows[1..].iter().zip(UPSTREAM_SCHEMAS) {
        assert_eq!(
            [&row[0], &row[1], &row[2], &row[3], &row[5]],
            [name, level, precedence, method, "False"],
            "{table}"
        );
    }
    let levels = get(&server, &["get", "prioritylevelconfigurations"]);
    let rows = lines(&levels);
    assert_eq!(
        rows[0],
        [
            "NAME",
            "TYPE",
            "NOMINALCONCURRENCYSHARES",
            "QUEUES",
            "HANDSIZE",
            "QUEUELENGTHLIMIT",
            "AGE"
        ]
    );
    let row = |name: &str| -> Vec<String> {
        let r = rows.iter().find(|r| r[0] == name).expect(name);
        r[..6].to_vec()
    };
    assert_eq!(
        row("exempt"),
        ["exempt", "Exempt", "<none>", "<none>", "<none>", "<none>"]
    );
    assert_eq!(
        row("catch-all"),
        ["catch-all", "Limited", "5", "<none>", "<none>", "<none>"]
    );
    assert_eq!(
        row("workload-low"),
        ["workload-low", "Limited", "100", "128", "6", "50"]
    );
    assert_eq!(rows.len(), 9, "{levels}");

    // The classification headers name the objects' uids (kubectl prints them at -v=8).
    let uid = |kind: &str, name: &str| {
        get(
            &server,
            &["get", kind, name, "-o", "jsonpath={.metadata.uid}"],
        )
    };
    let out = server.kubectl("kubectl", &["get", "--raw", "/api/v1/namespaces", "-v=8"]);
    assert!(out.ok, "{}", out.stderr);
    let headers = out.stderr.to_lowercase();
    assert!(
        headers.contains(&format!(
            "x-kubernetes-pf-flowschema-uid: {}",
            uid("flowschema", "exempt")
        )),
        "{}",
        out.stderr
    );
    assert!(
        headers.contains(&format!(
            "x-kubernetes-pf-prioritylevel-uid: {}",
            uid("prioritylevelconfiguration", "exempt")
        )),
        "{}",
        out.stderr
    );

    // A level of ~3 seats (1 share of 600) that rejects: alice's burst meets 429s, the admin's
    // requests at the same time all pass (the exempt level).
    apply_file(&server, "kubectl", TINY, "create");
    get(
        &server,
        &[
            "create",
            "clusterrolebinding",
            "alice-view",
            "--clusterrole=view",
            "--user=alice",
        ],
    );
    let configmaps: String = (0..100)
        .map(|i| format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i}\n  namespace: default\ndata:\n  k: '{}'\n---\n", "v".repeat(2000)))
        .collect();
    apply_file(&server, "kubectl", &configmaps, "create");
    eventually("lost is dangling", || {
        get(&server, &["get", "flowschema", "lost"]).ends_with("True")
    });
    let (kubeconfig, port) = (server.kubeconfig(), server.port);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let (alice, admin) = rt.block_on(async {
        let burst = |as_user: Option<&'static str>, clients: usize| {
            let kubeconfig = kubeconfig.clone();
            (0..clients)
                .map(move |_| {
                    let kubeconfig = kubeconfig.clone();
                    tokio::spawn(async move {
                        let mut api = Api::connect(&kubeconfig, port).await;
                        let mut codes = Vec::new();
                        for _ in 0..10 {
                            let (code, _) = api
                                .send(
                                    "GET",
                                    "/api/v1/namespaces/default/configmaps",
                                    None,
                                    as_user,
                                )
                                .await;
                            codes.push(code);
                        }
                        codes
                    })
                })
                .collect::<Vec<_>>()
        };
        let alice = burst(Some("alice"), 30);
        let admin = burst(None, 5);
        let mut out = (Vec::new(), Vec::new());
        for h in alice {
            out.0.extend(h.await.unwrap());
        }
        for h in admin {
            out.1.extend(h.await.unwrap());
        }
        out
    });
    let refused = alice.iter().filter(|c| **c == 429).count();
    let served = alice.iter().filter(|c| **c == 200).count();
    eprintln!(
        "alice: {served} served, {refused} refused of {}",
        alice.len()
    );
    assert!(refused > 0, "no 429 in alice's burst: {alice:?}");
    assert_eq!(served + refused, alice.len(), "{alice:?}");
    assert!(
        admin.iter().all(|c| *c == 200),
        "the admin was refused: {admin:?}"
    );
    let metrics = get(&server, &["get", "--raw", "/metrics"]);
    let rejected = metrics
        .lines()
        .find(|l| {
            l.starts_with("apiserver_flowcontrol_rejected_requests_total")
                && l.contains("priority_level=\"tiny\"")
                && l.contains("flow_schema=\"alice\"")
        })
        .unwrap_or_else(|| panic!("no rejected metric:\n{metrics}"));
    assert!(rejected.ends_with(&format!(" {refused}")), "{rejected}");
    assert!(metrics.contains("apiserver_flowcontrol_dispatched_requests_total{priority_level=\"exempt\",flow_schema=\"exempt\"}"));
    assert!(metrics.contains("apiserver_flowcontrol_current_executing_requests{"));

    // Mandatory objects: a spec edit is refused, the annotation is put back, a deletion undone.
    let out = server.kubectl(
        "kubectl",
        &[
            "patch",
            "flowschema",
            "catch-all",
            "--type=merge",
            "-p",
            r#"{"spec":{"matchingPrecedence":9000}}"#,
        ],
    );
    assert!(
        !out.ok
            && out
                .stderr
                .contains("spec of 'catch-all' must equal the fixed value"),
        "{}",
        out.stderr
    );
    get(
        &server,
        &[
            "annotate",
            "flowschema",
            "exempt",
            "apf.kubernetes.io/autoupdate-spec=false",
            "--overwrite",
        ],
    );
    let annotation = "jsonpath={.metadata.annotations.apf\\.kubernetes\\.io/autoupdate-spec}";
    eventually("exempt's annotation back to true", || {
        get(&server, &["get", "flowschema", "exempt", "-o", annotation]) == "true"
    });
    let before = uid("flowschema", "catch-all");
    get(&server, &["delete", "flowschema", "catch-all"]);
    eventually("catch-all recreated", || {
        let out = server.kubectl(
            "kubectl",
            &[
                "get",
                "flowschema",
                "catch-all",
                "-o",
                "jsonpath={.metadata.uid}",
            ],
        );
        out.ok && out.stdout != before
    });

    // Suggested objects: with autoupdate-spec false the edit stays; with true it is undone.
    get(
        &server,
        &[
            "annotate",
            "prioritylevelconfiguration",
            "workload-low",
            "apf.kubernetes.io/autoupdate-spec=false",
            "--overwrite",
        ],
    );
    let shares = "jsonpath={.spec.limited.nominalConcurrencyShares}";
    for name in ["workload-low", "global-default"] {
        get(
            &server,
            &[
                "patch",
                "prioritylevelconfiguration",
                name,
                "--type=merge",
                "-p",
                r#"{"spec":{"limited":{"nominalConcurrencyShares":7}}}"#,
            ],
        );
    }
    eventually("global-default's shares restored", || {
        get(
            &server,
            &[
                "get",
                "prioritylevelconfiguration",
                "global-default",
                "-o",
                shares,
            ],
        ) == "20"
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        get(
            &server,
            &[
                "get",
                "prioritylevelconfiguration",
                "workload-low",
                "-o",
                shares
            ]
        ),
        "7"
    );
    assert_eq!(
        get(
            &server,
            &[
                "get",
                "prioritylevelconfiguration",
                "workload-low",
                "-o",
                annotation
            ]
        ),
        "false"
    );

    // A user's object annotated autoupdate-spec true is the producer's to remove, as upstream.
    get(
        &server,
        &[
            "annotate",
            "flowschema",
            "lost",
            "apf.kubernetes.io/autoupdate-spec=true",
        ],
    );
    eventually("lost removed", || {
        !server.kubectl("kubectl", &["get", "flowschema", "lost"]).ok
    });
}

/// Every replica classifies by the same objects: a FlowSchema created through one replica
/// classifies the next request on every replica (each follows the store watch), and the
/// leader's bootstrap objects carry one uid everywhere.
#[test]
fn every_replica_classifies_by_the_same_flow_schema() {
    let store = format!(
        "etcd://{}?prefix=/apf-{}",
        crate::servers::etcd_endpoints(),
        std::process::id()
    );
    let replicas: Vec<Server> = (0..3)
        .map(|i| Server::start_with(&strs(&replica_flags(&store, i))))
        .collect();
    let schema_uid = |r: &Server, as_user: &str| -> Option<String> {
        let out = r.kubectl(
            "kubectl",
            &[
                "get",
                "--raw",
                "/api/v1/namespaces",
                "-v=8",
                "--as",
                as_user,
            ],
        );
        out.stderr.lines().find_map(|l| {
            let l = l.trim().to_lowercase();
            l.strip_prefix("x-kubernetes-pf-flowschema-uid: ")
                .map(str::to_string)
        })
    };
    eventually("global-default on every replica", || {
        let uids: Vec<Option<String>> = replicas.iter().map(|r| schema_uid(r, "bob")).collect();
        uids[0].is_some() && uids.iter().all(|u| *u == uids[0])
    });
    let bob = TINY
        .split("---\n")
        .nth(1)
        .unwrap()
        .replace("name: alice", "name: bob")
        .replace("name: tiny", "name: workload-low");
    apply_file(&replicas[0], "kubectl", &bob, "create");
    let created = Instant::now();
    let uid = run(
        &replicas[0],
        "kubectl",
        &["get", "flowschema", "bob", "-o", "jsonpath={.metadata.uid}"],
    );
    for (i, r) in replicas.iter().enumerate() {
        while schema_uid(r, "bob").as_deref() != Some(uid.as_str()) {
            assert!(
                created.elapsed() < Duration::from_secs(2),
                "replica {i} does not classify by the new FlowSchema 2 s after its create"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    eprintln!(
        "all 3 replicas classify by it {:?} after its create",
        created.elapsed()
    );
}
