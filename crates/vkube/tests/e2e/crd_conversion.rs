//! CRD conversion webhooks end to end: a conversion webhook in this test process (HTTPS on
//! 127.0.0.1, its CA in `caBundle`, a `url` clientConfig) converting a CRD's v1 `hostPort` to
//! v2's `host` and `port` and back, as upstream's conformance webhook does. Objects written in
//! v1 read in v2, lists in both versions (a non-homogeneous one after the storage version moved
//! to v2, in one ConversionReview), a watch in v2, and upstream's errors for a webhook that
//! answers the wrong apiVersion and for one that is down.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::*;

/// One review the webhook got: its path, desiredAPIVersion and the objects' names.
type Seen = (String, String, Vec<String>);

/// The conversion webhook (https_server.rs) and the reviews it got: runs until dropped.
struct ConversionWebhook {
    server: crate::https_server::HttpsServer,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// v1 `hostPort: "h:p"` ↔ v2 `host: h, port: p`; `/wrong` answers apiVersion `…/v9`.
fn convert(path: &str, request: &Value) -> Value {
    let desired = request["desiredAPIVersion"].as_str().unwrap_or_default();
    let objects: Vec<Value> = request["objects"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| {
            let mut o = o.clone();
            let m = o.as_object_mut().unwrap();
            if desired.ends_with("/v2") {
                if let Some(hp) = m.remove("hostPort") {
                    let (h, p) = hp.as_str().unwrap_or_default().split_once(':').unwrap();
                    m.insert("host".into(), json!(h));
                    m.insert("port".into(), json!(p));
                }
            } else if let (Some(h), Some(p)) = (m.remove("host"), m.remove("port")) {
                let joined = format!("{}:{}", h.as_str().unwrap(), p.as_str().unwrap());
                m.insert("hostPort".into(), json!(joined));
            }
            let version = if path == "/wrong" {
                desired.replace("/v1", "/v9").replace("/v2", "/v9")
            } else {
                desired.to_string()
            };
            m.insert("apiVersion".into(), json!(version));
            o
        })
        .collect();
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview",
        "response": {"uid": request["uid"], "result": {"status": "Success"}, "convertedObjects": objects}})
}

/// An admission webhook registered for v1 only: it sees objects written in v2 converted to v1
/// (matchPolicy Equivalent) and refuses `hostPort: denied:1`.
fn admit(request: &Value) -> Value {
    let object = &request["object"];
    let refused = object["hostPort"] == "denied:1";
    let mut response = json!({"uid": request["uid"], "allowed": !refused});
    if refused {
        let seen = format!(
            "{} hostPort denied:1 is refused",
            object["apiVersion"].as_str().unwrap()
        );
        response["status"] = json!({"code": 403, "message": seen});
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}

impl ConversionWebhook {
    fn start() -> ConversionWebhook {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = seen.clone();
        let server = crate::https_server::HttpsServer::start(move |path, review| {
            let request = &review["request"];
            if path == "/admit" {
                let out = admit(request);
                return Box::pin(async move { out });
            }
            let names = request["objects"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
                .collect();
            let desired = request["desiredAPIVersion"].as_str().unwrap().to_string();
            log.lock().unwrap().push((path.clone(), desired, names));
            let out = convert(&path, request);
            Box::pin(async move { out })
        });
        ConversionWebhook { server, seen }
    }

    fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    /// The reviews got since the last call.
    fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }

    /// Asserts that the only review since the last call converted `name` to `desired`.
    fn converted_one(&self, desired: &str, name: &str) {
        let want = [(
            "/convert".to_string(),
            desired.to_string(),
            vec![name.to_string()],
        )];
        assert_eq!(self.take(), want);
    }
}

fn crd(group: &str, hook: &ConversionWebhook) -> String {
    let bundle = hook.server.ca_bundle();
    format!(
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: backends.{group}
spec:
  group: {group}
  scope: Namespaced
  names: {{plural: backends, singular: backend, kind: Backend, listKind: BackendList}}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          hostPort: {{type: string}}
  - name: v2
    served: true
    storage: false
    schema:
      openAPIV3Schema:
        type: object
        properties:
          host: {{type: string}}
          port: {{type: string}}
  conversion:
    strategy: Webhook
    webhook:
      conversionReviewVersions: [v1, v1beta1]
      clientConfig:
        url: {url}
        caBundle: {bundle}
"#,
        url = hook.url("/convert"),
    )
}

fn get_json(server: &Server, path: &str) -> Value {
    serde_json::from_str(&run(server, "kubectl", &["get", "--raw", path])).unwrap()
}

/// Runs kubectl until it fails with `want` on stderr (the CRD's change reaches the server's view
/// a moment after the write).
fn eventually_fails(server: &Server, args: &[&str], want: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = server.kubectl("kubectl", args);
        if !out.ok && out.stderr.trim() == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "kubectl {}: wanted {want:?}, got ok={} stderr={:?}",
            args.join(" "),
            out.ok,
            out.stderr
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A field of the CRD, by `-o jsonpath=…`.
fn crd_field(server: &Server, name: &str, jsonpath: &str) -> String {
    run(server, "kubectl", &["get", "crd", name, "-o", jsonpath])
}

fn patch_crd(server: &Server, name: &str, patch: &Value) {
    run(
        server,
        "kubectl",
        &[
            "patch",
            "crd",
            name,
            "--type=json",
            "-p",
            &patch.to_string(),
        ],
    );
}

#[test]
fn crd_conversion_webhook_converts_reads_writes_lists_and_watches() {
    let server = Server::start();
    let hook = ConversionWebhook::start();
    let group = "conv.e2e.example.com";
    let name = format!("backends.{group}");
    apply_file(&server, "kubectl", &crd(group, &hook), "apply");
    run(
        &server,
        "kubectl",
        &[
            "wait",
            "--for=condition=Established",
            &format!("crd/{name}"),
            "--timeout=30s",
        ],
    );
    let stored = crd_field(
        &server,
        &name,
        "jsonpath={.spec.conversion.webhook.clientConfig.url}",
    );
    assert_eq!(stored, hook.url("/convert"));
    run(&server, "kubectl", &["create", "namespace", "conv"]);
    let v1 = format!("/apis/{group}/v1/namespaces/conv/backends");
    let v2 = format!("/apis/{group}/v2/namespaces/conv/backends");

    // Created in v1 (the storage version): no conversion; read in v2: one review.
    let w1 = format!(
        "apiVersion: {group}/v1\nkind: Backend\nmetadata: {{name: w1, namespace: conv}}\nhostPort: localhost:8080\n"
    );
    apply_file(&server, "kubectl", &w1, "create");
    hook.take();
    let got = get_json(&server, &format!("{v2}/w1"));
    assert_eq!(got["apiVersion"], format!("{group}/v2"));
    assert_eq!(
        (got["host"].as_str(), got["port"].as_str()),
        (Some("localhost"), Some("8080"))
    );
    assert!(got["hostPort"].is_null());
    hook.converted_one(&format!("{group}/v2"), "w1");
    let listed = get_json(&server, &v2);
    assert_eq!(listed["apiVersion"], format!("{group}/v2"));
    assert_eq!(listed["items"][0]["host"], "localhost");
    let listed = get_json(&server, &v1);
    assert_eq!(listed["items"][0]["hostPort"], "localhost:8080");
    // kubectl's table of the v2 list (through the same conversion).
    let table = run(
        &server,
        "kubectl",
        &["get", &format!("backends.v2.{group}"), "-n", "conv"],
    );
    assert!(table.contains("w1"), "{table}");

    // The storage version moves to v2: storedVersions grows, as upstream's strategy does.
    patch_crd(
        &server,
        &name,
        &json!([{"op": "replace", "path": "/spec/versions/0/storage", "value": false},
                {"op": "replace", "path": "/spec/versions/1/storage", "value": true}]),
    );
    let versions = crd_field(&server, &name, "jsonpath={.status.storedVersions}");
    assert_eq!(versions, r#"["v1","v2"]"#);

    // A v1 object written now is converted to v2 to be stored (and back for the answer).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        hook.take();
        let w2 = format!(
            "apiVersion: {group}/v1\nkind: Backend\nmetadata: {{name: w2, namespace: conv}}\nhostPort: example:9090\n"
        );
        apply_file(&server, "kubectl", &w2, "create");
        let seen = hook.take();
        if seen.iter().any(|s| s.1 == format!("{group}/v2")) {
            assert_eq!(seen.len(), 2, "{seen:?}");
            break;
        }
        // The server's CRD view had not caught up: w2 went in as v1; try again.
        run(
            &server,
            "kubectl",
            &[
                "delete",
                &format!("backends.v1.{group}"),
                "w2",
                "-n",
                "conv",
            ],
        );
        assert!(Instant::now() < deadline, "storage never moved to v2");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The non-homogeneous list: w1 stored in v1, w2 in v2; each list converts in ONE review
    // holding only the object not in the version asked for.
    let listed = get_json(&server, &v2);
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    for (item, host) in items.iter().zip(["localhost", "example"]) {
        assert_eq!(item["apiVersion"], format!("{group}/v2"));
        assert_eq!(item["host"], host);
    }
    hook.converted_one(&format!("{group}/v2"), "w1");
    let listed = get_json(&server, &v1);
    let ports: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["hostPort"].as_str().unwrap())
        .collect();
    assert_eq!(ports, ["localhost:8080", "example:9090"]);
    hook.converted_one(&format!("{group}/v1"), "w2");

    // A watch in v2: the initial objects and a change made through v1, all in v2.
    let watch = std::process::Command::new(kubectl_path("kubectl"))
        .env("KUBECONFIG", server.kubeconfig())
        .args(["get", "--raw", &format!("{v2}?watch=1&timeoutSeconds=4")])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    run(
        &server,
        "kubectl",
        &[
            "patch",
            &format!("backends.v1.{group}"),
            "w1",
            "-n",
            "conv",
            "--type=merge",
            "-p",
            r#"{"hostPort":"changed:7070"}"#,
        ],
    );
    let out = watch.wait_with_output().unwrap();
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary: Vec<(String, String, String)> = events
        .iter()
        .map(|e| {
            let o = &e["object"];
            (
                e["type"].as_str().unwrap().to_string(),
                o["apiVersion"].as_str().unwrap().to_string(),
                o["host"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let v2s = format!("{group}/v2");
    assert_eq!(
        summary,
        [
            ("ADDED".to_string(), v2s.clone(), "localhost".to_string()),
            ("ADDED".to_string(), v2s.clone(), "example".to_string()),
            ("MODIFIED".to_string(), v2s, "changed".to_string()),
        ]
    );

    // An admission webhook for v1 only is called for a v2 write with the object converted to
    // v1 by the conversion webhook (matchPolicy Equivalent).
    let admission = format!(
        "apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {{name: conv-admit}}
webhooks:
- name: admit.conv.example.com
  clientConfig: {{url: {url}, caBundle: {bundle}}}
  rules:
  - {{operations: [CREATE], apiGroups: [{group}], apiVersions: [v1], resources: [backends]}}
  matchPolicy: Equivalent
  sideEffects: None
  admissionReviewVersions: [v1]
",
        url = hook.url("/admit"),
        bundle = hook.server.ca_bundle(),
    );
    apply_file(&server, "kubectl", &admission, "apply");
    let w3 = format!(
        "apiVersion: {group}/v2\nkind: Backend\nmetadata: {{name: w3, namespace: conv}}\nhost: denied\nport: \"1\"\n"
    );
    let file = server.dir.path().join("w3.yaml");
    std::fs::write(&file, w3).unwrap();
    let file = file.display().to_string();
    eventually_fails(
        &server,
        &["create", "-f", &file],
        &format!(
            "Error from server: error when creating \"{file}\": admission webhook \"admit.conv.example.com\" denied the request: {group}/v1 hostPort denied:1 is refused"
        ),
    );
    run(
        &server,
        "kubectl",
        &["delete", "validatingwebhookconfiguration", "conv-admit"],
    );

    // A webhook answering the wrong apiVersion: upstream's message, a 500 without a reason.
    patch_crd(
        &server,
        &name,
        &json!([{"op": "replace", "path": "/spec/conversion/webhook/clientConfig/url", "value": hook.url("/wrong")}]),
    );
    let get_w2_v1 = ["get", &format!("backends.v1.{group}"), "w2", "-n", "conv"];
    let get_w2_v1: Vec<&str> = get_w2_v1.iter().map(|s| s.as_ref()).collect();
    eventually_fails(
        &server,
        &get_w2_v1,
        &format!(
            "Error from server: conversion webhook for {group}/v2, Kind=Backend returned invalid object at index 0: invalid groupVersion (expected {group}/v1, received {group}/v9)"
        ),
    );
    // A webhook that is down: Go's words for the refused connection.
    let dead = free_port();
    patch_crd(
        &server,
        &name,
        &json!([{"op": "replace", "path": "/spec/conversion/webhook/clientConfig/url",
                 "value": format!("https://127.0.0.1:{dead}/convert")}]),
    );
    eventually_fails(
        &server,
        &get_w2_v1,
        &format!(
            "Error from server: conversion webhook for {group}/v2, Kind=Backend failed: Post \"https://127.0.0.1:{dead}/convert?timeout=30s\": dial tcp 127.0.0.1:{dead}: connect: connection refused"
        ),
    );
    // What needs no conversion still reads.
    let w2 = get_json(&server, &format!("{v2}/w2"));
    assert_eq!(w2["host"], "example");
}

#[test]
fn crd_conversion_webhook_config_is_validated_as_upstream() {
    let server = Server::start();
    let hook = ConversionWebhook::start();
    let bad = crd("badconv.e2e.example.com", &hook)
        .replace("[v1, v1beta1]", "[v2]")
        .replace(&hook.url("/convert"), "http://127.0.0.1/convert");
    let file = server.dir.path().join("bad-crd.yaml");
    std::fs::write(&file, bad).unwrap();
    let out = server.kubectl("kubectl", &["create", "-f", &file.display().to_string()]);
    assert!(!out.ok);
    assert_eq!(
        out.stderr.trim(),
        "The CustomResourceDefinition \"backends.badconv.e2e.example.com\" is invalid: \n\
         * spec.conversion.webhookClientConfig.url: Invalid value: \"http\": 'https' is the only allowed URL scheme; desired format: https://host[/path]\n\
         * spec.conversion.conversionReviewVersions: Invalid value: []string{\"v2\"}: must include at least one of v1, v1beta1"
    );
}
