//! The audit log: `vkube serve --audit-policy-file P --audit-log-path F` driven by kubectl, the
//! log read back and each event checked against the shape kube-apiserver writes: field names,
//! the stages of one request, `responseStatus`, `objectRef`, the objects recorded only at the
//! levels that record them, and the authorization annotations of a 403.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Server, expect_refused, kubectl_with, run};

const POLICY: &str = r#"apiVersion: audit.k8s.io/v1
kind: Policy
rules:
# The controllers' informers watch everything; their watches would fill the log.
- level: None
  users: ["system:kube-controller-manager"]
  verbs: ["watch"]
- level: None
  nonResourceURLs: ["/readyz*", "/healthz*", "/livez*"]
- level: RequestResponse
  resources:
  - group: ""
    resources: ["configmaps"]
- level: Metadata
"#;

/// Every field an `audit.k8s.io/v1` Event may have, in upstream's order.
const FIELDS: &[&str] = &[
    "kind",
    "apiVersion",
    "level",
    "auditID",
    "stage",
    "requestURI",
    "verb",
    "user",
    "impersonatedUser",
    "sourceIPs",
    "userAgent",
    "objectRef",
    "responseStatus",
    "requestObject",
    "responseObject",
    "requestReceivedTimestamp",
    "stageTimestamp",
    "annotations",
];

/// The log's events, grouped by audit ID in the order they were written, once `done` holds.
fn read_log(path: &Path, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let events: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        if done(&events) {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "the log never had the events:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn by_id(events: &[Value]) -> BTreeMap<String, Vec<Value>> {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for e in events {
        out.entry(e["auditID"].as_str().unwrap().to_string())
            .or_default()
            .push(e.clone());
    }
    out
}

fn stages(request: &[Value]) -> Vec<&str> {
    request
        .iter()
        .map(|e| e["stage"].as_str().unwrap())
        .collect()
}

/// The one request whose final event satisfies `pick`.
fn request<'a>(
    all: &'a BTreeMap<String, Vec<Value>>,
    what: &str,
    pick: impl Fn(&Value) -> bool,
) -> &'a Vec<Value> {
    let found: Vec<&Vec<Value>> = all
        .values()
        .filter(|evs| evs.last().is_some_and(&pick))
        .collect();
    assert_eq!(found.len(), 1, "{what}: {found:#?}");
    found[0]
}

fn is_micro_time(v: &Value) -> bool {
    let s = v.as_str().unwrap_or_default();
    let b = s.as_bytes();
    s.len() == 27
        && b[4] == b'-'
        && b[10] == b'T'
        && b[19] == b'.'
        && b[26] == b'Z'
        && b[20..26].iter().all(u8::is_ascii_digit)
}

#[test]
fn kubectl_actions_produce_upstreams_events() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let log = dir.path().join("logs/audit.log");
    let server = Server::start_with(&[
        "--audit-policy-file",
        &policy.display().to_string(),
        "--audit-log-path",
        &log.display().to_string(),
        "--audit-log-maxbackup",
        "2",
    ]);
    let k = "kubectl";
    run(
        &server,
        k,
        &["create", "configmap", "audited", "--from-literal=a=1"],
    );
    let got = run(&server, k, &["get", "configmap", "audited", "-o", "json"]);
    assert!(got.contains("\"a\": \"1\""), "{got}");
    // kubectl prints the response headers at -v=8 (on stderr): the Audit-Id is there.
    let verbose = server.kubectl(k, &["get", "configmap", "audited", "-v=8"]);
    let header_id = verbose
        .stderr
        .lines()
        .find_map(|l| {
            l.trim()
                .split_once("Audit-Id: ")
                .map(|(_, id)| id.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no Audit-Id header:\n{}", verbose.stderr));
    run(&server, k, &["delete", "configmap", "audited"]);
    let denied = server.kubectl(k, &["get", "secrets", "--as=alice"]);
    assert!(
        !denied.ok && denied.stderr.contains("forbidden"),
        "{}",
        denied.stderr
    );
    // A watch that ends by itself after a second.
    run(
        &server,
        k,
        &[
            "get",
            "--raw",
            "/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=1",
        ],
    );
    let unauthenticated = kubectl_with(
        k,
        Path::new("/dev/null"),
        &[
            &format!("--server=https://127.0.0.1:{}", server.port),
            "--insecure-skip-tls-verify",
            "--token=not-a-token",
            "get",
            "namespaces",
        ],
    );
    assert!(
        unauthenticated.stderr.contains("Unauthorized"),
        "{}",
        unauthenticated.stderr
    );

    let events = read_log(&log, |events| {
        let all = by_id(events);
        let watch_done = all.values().any(|evs| {
            evs[0]["verb"] == "watch" && evs.last().unwrap()["stage"] == "ResponseComplete"
        });
        let has_401 = events.iter().any(|e| e["responseStatus"]["code"] == 401);
        let kcm = events.iter().any(|e| {
            e["user"]["username"] == "system:kube-controller-manager"
                && e["verb"] == "list"
                && e["stage"] == "ResponseComplete"
        });
        watch_done && has_401 && kcm && events.iter().any(|e| e["verb"] == "delete")
    });

    for e in &events {
        let obj = e.as_object().unwrap();
        for key in obj.keys() {
            assert!(FIELDS.contains(&key.as_str()), "unknown field {key}: {e}");
        }
        for key in ["level", "auditID", "stage", "requestURI", "verb", "user"] {
            assert!(obj.contains_key(key), "{key} missing: {e}");
        }
        assert_eq!(e["kind"], "Event");
        assert_eq!(e["apiVersion"], "audit.k8s.io/v1");
        assert!(is_micro_time(&e["requestReceivedTimestamp"]), "{e}");
        assert!(is_micro_time(&e["stageTimestamp"]), "{e}");
        assert_ne!(e["level"], "None");
        let path = e["requestURI"].as_str().unwrap();
        assert!(!path.starts_with("/readyz"), "a None rule logged: {e}");
        if e["level"] == "Metadata" {
            assert!(
                !obj.contains_key("requestObject") && !obj.contains_key("responseObject"),
                "objects at Metadata: {e}"
            );
        }
        if e["stage"] == "RequestReceived" {
            assert_eq!(e["stageTimestamp"], e["requestReceivedTimestamp"]);
            assert!(!obj.contains_key("responseStatus"), "{e}");
        } else {
            assert!(e["responseStatus"]["code"].is_u64(), "{e}");
        }
    }
    let all = by_id(&events);

    // kubectl's requests only: the controllers' own (the root-CA publisher creates ConfigMaps)
    // are audited too.
    let kubectl = |e: &Value| {
        e["userAgent"]
            .as_str()
            .unwrap_or_default()
            .starts_with("kubectl")
    };
    let created = request(&all, "create", |e| {
        kubectl(e) && e["verb"] == "create" && e["objectRef"]["resource"] == "configmaps"
    });
    assert_eq!(stages(created), ["RequestReceived", "ResponseComplete"]);
    let (received, done) = (&created[0], &created[1]);
    assert_eq!(received["level"], "RequestResponse");
    assert_eq!(
        received["objectRef"],
        serde_json::json!({"resource": "configmaps", "namespace": "default", "apiVersion": "v1"}),
        "the name comes from the body, read after RequestReceived"
    );
    assert_eq!(done["objectRef"]["name"], "audited");
    assert_eq!(done["requestObject"]["kind"], "ConfigMap");
    assert_eq!(done["requestObject"]["data"]["a"], "1");
    assert_eq!(done["responseObject"]["metadata"]["name"], "audited");
    assert!(done["responseObject"]["metadata"]["uid"].is_string());
    assert_eq!(
        done["responseStatus"],
        serde_json::json!({"metadata": {}, "code": 201})
    );
    assert_eq!(done["user"]["username"], "kubernetes-admin");
    assert!(
        done["user"]["groups"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("system:masters"))
    );
    assert_eq!(done["sourceIPs"], serde_json::json!(["127.0.0.1"]));
    assert!(done["userAgent"].as_str().unwrap().starts_with("kubectl"));
    assert!(
        done["requestURI"]
            .as_str()
            .unwrap()
            .starts_with("/api/v1/namespaces/default/configmaps?")
    );
    assert_eq!(
        done["annotations"],
        serde_json::json!({"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": ""})
    );

    let header_request = all.get(&header_id).expect("the Audit-Id header's events");
    assert_eq!(
        stages(header_request),
        ["RequestReceived", "ResponseComplete"]
    );
    assert_eq!(header_request[1]["verb"], "get");
    assert_eq!(header_request[1]["objectRef"]["name"], "audited");
    assert_eq!(
        header_request[1]["responseObject"]["kind"], "Table",
        "kubectl get asks for a Table, which is what the response was"
    );

    let deleted = request(&all, "delete", |e| kubectl(e) && e["verb"] == "delete");
    assert_eq!(stages(deleted), ["RequestReceived", "ResponseComplete"]);
    assert_eq!(deleted[1]["objectRef"]["name"], "audited");
    assert_eq!(deleted[1]["responseStatus"]["code"], 200);

    let forbidden = request(&all, "403", |e| {
        kubectl(e) && e["responseStatus"]["code"] == 403
    });
    assert_eq!(stages(forbidden), ["RequestReceived", "ResponseComplete"]);
    let e = &forbidden[1];
    assert_eq!(e["level"], "Metadata");
    assert_eq!(e["verb"], "list");
    assert_eq!(e["user"]["username"], "kubernetes-admin");
    assert_eq!(e["impersonatedUser"]["username"], "alice");
    assert_eq!(
        e["objectRef"],
        serde_json::json!({"resource": "secrets", "namespace": "default", "apiVersion": "v1"})
    );
    assert_eq!(
        e["annotations"],
        serde_json::json!({"authorization.k8s.io/decision": "forbid", "authorization.k8s.io/reason": ""})
    );
    assert_eq!(
        e["responseStatus"],
        serde_json::json!({"metadata": {}, "status": "Failure",
            "message": "secrets is forbidden: User \"alice\" cannot list resource \"secrets\" in API group \"\" in the namespace \"default\"",
            "reason": "Forbidden", "details": {"kind": "secrets"}, "code": 403})
    );

    let watch = request(&all, "watch", |e| {
        e["verb"] == "watch" && e["userAgent"].as_str().unwrap_or("").starts_with("kubectl")
    });
    assert_eq!(
        stages(watch),
        ["RequestReceived", "ResponseStarted", "ResponseComplete"]
    );
    assert_eq!(
        watch[1]["responseStatus"],
        serde_json::json!({"metadata": {}, "code": 200})
    );
    assert!(
        !watch[2].as_object().unwrap().contains_key("responseObject"),
        "a watch's stream is not recorded"
    );

    let failed = request(&all, "401", |e| e["responseStatus"]["code"] == 401);
    assert_eq!(stages(failed), ["ResponseStarted"]);
    assert_eq!(failed[0]["user"], serde_json::json!({}));
    assert_eq!(failed[0]["verb"], "list");
    assert_eq!(
        failed[0]["responseStatus"],
        serde_json::json!({"metadata": {}, "status": "Failure", "message": "Unauthorized", "reason": "Unauthorized", "code": 401})
    );

    // The controllers' requests in this process are audited like any client's.
    let kcm = events
        .iter()
        .find(|e| {
            e["user"]["username"] == "system:kube-controller-manager"
                && e["verb"] == "list"
                && e["stage"] == "ResponseComplete"
        })
        .expect("the informers' lists");
    assert!(
        kcm["userAgent"]
            .as_str()
            .unwrap()
            .starts_with("kube-controller-manager/")
    );
    assert_eq!(kcm["sourceIPs"], serde_json::json!(["127.0.0.1"]));
    assert!(
        kcm["annotations"]["authorization.k8s.io/reason"]
            .as_str()
            .unwrap()
            .starts_with("RBAC: allowed by "),
        "{kcm}"
    );
}

#[test]
fn a_bad_policy_refuses_to_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Everything\n",
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_vkube"))
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--audit-policy-file"])
        .arg(&policy)
        .args(["--audit-log-path", "-"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    crate::harness::watch_parent(child.id());
    let stderr = expect_refused(child, 20);
    assert!(
        stderr.contains(&format!(
            "loading audit policy file: rules[0].level: Unsupported value: \"Everything\": supported values: \"None\", \"Metadata\", \"Request\", \"RequestResponse\": from file {}",
            policy.display()
        )),
        "{stderr}"
    );
}
