//! Admission webhooks end to end: a webhook server in this test process (HTTPS on 127.0.0.1, its
//! CA in `caBundle`, a `url` clientConfig) that refuses ConfigMaps labelled `deny=yes` and labels
//! what it is shown. kubectl prints the denial, the webhook's warning and the call failure as it
//! does against kube-apiserver; the mutation is stored; a namespaceSelector skips a namespace;
//! failurePolicy Ignore and Fail with the server down; and a webhook registered through one
//! `vkube serve` applies at once through another on the same store.

use base64::Engine as _;
use serde_json::{Value, json};

use crate::harness::*;
use crate::rbac::Api;

/// The webhook server (https_server.rs): runs until dropped.
type WebhookServer = crate::https_server::HttpsServer;

/// What the webhook answers: `/validate` refuses `deny=yes` (and warns otherwise), `/mutate`
/// adds `mutated=true`.
fn answer(path: &str, request: &Value) -> Value {
    let labels = &request["object"]["metadata"]["labels"];
    match path {
        "/validate" if labels["deny"] == "yes" => json!({"allowed": false,
            "status": {"code": 403, "message": "configmaps labelled deny=yes are refused"}}),
        "/validate" => {
            json!({"allowed": true, "warnings": ["seen by validate.webhooks.example.com"]})
        }
        "/mutate" => {
            let patch = if labels.is_object() {
                json!([{"op": "add", "path": "/metadata/labels/mutated", "value": "true"}])
            } else {
                json!([{"op": "add", "path": "/metadata/labels", "value": {"mutated": "true"}}])
            };
            json!({"allowed": true, "patchType": "JSONPatch",
                "patch": base64::engine::general_purpose::STANDARD.encode(patch.to_string())})
        }
        // Reinvocation: `a` copies `b`, which a later webhook sets.
        "/reinvoke-a" | "/late-b" => {
            let (label, value) = match path {
                "/late-b" => ("b", "set"),
                _ => ("a", labels["b"].as_str().unwrap_or("none")),
            };
            let patch =
                json!([{"op": "add", "path": format!("/metadata/labels/{label}"), "value": value}]);
            json!({"allowed": true, "patchType": "JSONPatch",
                "patch": base64::engine::general_purpose::STANDARD.encode(patch.to_string())})
        }
        // CONNECT: `exec`/`attach` of the pod named `guarded` refused, naming what was seen.
        "/connect" if request["name"] == "guarded" => json!({"allowed": false,
            "status": {"code": 403, "message": format!(
                "{} to pod 'guarded' is not allowed ({} {}, container {})",
                request["subResource"].as_str().unwrap_or_default(),
                request["operation"].as_str().unwrap_or_default(),
                request["object"]["kind"].as_str().unwrap_or_default(),
                request["object"]["container"].as_str().unwrap_or_default())}}),
        _ => json!({"allowed": true}),
    }
}

/// The admission webhook server: `answer` in AdmissionReviews; `/slow` answers after 3 s.
fn start_webhooks() -> WebhookServer {
    WebhookServer::start(|path, review| {
        Box::pin(async move {
            if path == "/slow" {
                tokio::time::sleep(std::time::Duration::from_secs(3)).await;
            }
            let mut response = answer(&path, &review["request"]);
            response["uid"] = review["request"]["uid"].clone();
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
        })
    })
}

/// A ValidatingWebhookConfiguration named `name` holding `webhooks` (YAML list entries).
fn validating_config(name: &str, webhooks: String) -> String {
    format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata:\n  name: {name}\nwebhooks:\n{webhooks}"
    )
}

/// A webhook entry of a configuration, as YAML.
fn webhook_yaml(name: &str, url: &str, ca_bundle: &str, resources: &str, extra: &str) -> String {
    format!(
        "- name: {name}
  clientConfig:
    url: {url}
    caBundle: {ca_bundle}
  rules:
  - operations: [CREATE, UPDATE]
    apiGroups: [\"\"]
    apiVersions: [v1]
    resources: [{resources}]
  sideEffects: None
  admissionReviewVersions: [v1]
  timeoutSeconds: 5
{extra}"
    )
}

const SKIP_QUIET: &str = "  namespaceSelector:
    matchExpressions:
    - {key: webhooks, operator: NotIn, values: [\"off\"]}
";

fn write(server: &Server, name: &str, yaml: &str) -> String {
    let path = server.dir.path().join(name);
    std::fs::write(&path, yaml).unwrap();
    path.display().to_string()
}

fn configmap(name: &str, ns: &str, labels: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {{{labels}}}\ndata: {{a: b}}\n"
    )
}

#[test]
fn webhooks_deny_mutate_warn_and_fail_as_kube_apiserver() {
    let hooks = start_webhooks();
    let server = Server::start();
    let url = |path: &str| format!("https://127.0.0.1:{}{path}", hooks.port);
    let bundle = hooks.ca_bundle();
    let configs = format!(
        "apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: validate
webhooks:
{}---
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: mutate
webhooks:
{}---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: on-delete
webhooks:
{}",
        webhook_yaml(
            "validate.webhooks.example.com",
            &url("/validate"),
            &bundle,
            "configmaps",
            SKIP_QUIET
        ),
        webhook_yaml(
            "mutate.webhooks.example.com",
            &url("/mutate"),
            &bundle,
            "configmaps, pods",
            SKIP_QUIET
        ),
        // DELETE: warns (its object is null; the old object is the one deleted).
        webhook_yaml(
            "on-delete.webhooks.example.com",
            &url("/validate"),
            &bundle,
            "configmaps",
            SKIP_QUIET
        )
        .replace("[CREATE, UPDATE]", "[DELETE]"),
    );
    run(
        &server,
        "kubectl",
        &["apply", "-f", &write(&server, "configs.yaml", &configs)],
    );
    run(&server, "kubectl", &["create", "namespace", "quiet"]);
    run(
        &server,
        "kubectl",
        &["label", "namespace", "quiet", "webhooks=off"],
    );

    for &k in KUBECTLS {
        let ns = ns_name(k, "hooks");
        run(&server, k, &["create", "namespace", &ns]);
        // A denial, worded as kube-apiserver words it.
        let file = write(
            &server,
            &format!("deny-{ns}.yaml"),
            &configmap("denied", &ns, "deny: \"yes\""),
        );
        let out = server.kubectl(k, &["create", "-f", &file]);
        assert!(!out.ok, "{k}: the webhook's refusal was ignored");
        assert_eq!(
            out.stderr,
            format!(
                "Error from server: error when creating \"{file}\": admission webhook \"validate.webhooks.example.com\" denied the request: configmaps labelled deny=yes are refused"
            ),
            "{k}"
        );
        // Allowed: the mutation is stored and the validating webhook's warning is printed.
        let file = write(
            &server,
            &format!("ok-{ns}.yaml"),
            &configmap("allowed", &ns, "app: web"),
        );
        let out = server.kubectl(k, &["create", "-f", &file]);
        assert!(out.ok, "{k}: {}", out.stderr);
        assert_eq!(
            out.stderr, "Warning: seen by validate.webhooks.example.com",
            "{k}"
        );
        let labels = run(
            &server,
            k,
            &[
                "get",
                "configmap",
                "allowed",
                "-n",
                &ns,
                "-o",
                "jsonpath={.metadata.labels}",
            ],
        );
        assert_eq!(labels, r#"{"app":"web","mutated":"true"}"#, "{k}");
        // A server dry run is admitted as a write (the webhooks have sideEffects None).
        let file = write(
            &server,
            &format!("dry-{ns}.yaml"),
            &configmap("dry", &ns, "app: web"),
        );
        let out = server.kubectl(
            k,
            &[
                "create",
                "-f",
                &file,
                "--dry-run=server",
                "-o",
                "jsonpath={.metadata.labels}",
            ],
        );
        assert!(out.ok, "{k}: {}", out.stderr);
        assert_eq!(out.stdout, r#"{"app":"web","mutated":"true"}"#, "{k}");
        let out = server.kubectl(k, &["get", "configmap", "dry", "-n", &ns]);
        assert!(!out.ok, "{k}: a dry run stored the object");
        // An update is admitted too: a configmap relabelled deny=yes is refused.
        let out = server.kubectl(k, &["label", "configmap", "allowed", "-n", &ns, "deny=yes"]);
        assert!(!out.ok, "{k}");
        assert!(
            out.stderr.ends_with("admission webhook \"validate.webhooks.example.com\" denied the request: configmaps labelled deny=yes are refused"),
            "{k}: {}",
            out.stderr
        );
        // A DELETE is admitted too, and kubectl prints the webhook's warning.
        let out = server.kubectl(k, &["delete", "configmap", "allowed", "-n", &ns]);
        assert!(out.ok, "{k}: {}", out.stderr);
        assert_eq!(
            out.stderr, "Warning: seen by validate.webhooks.example.com",
            "{k}"
        );
    }

    // A pod is mutated too (a labelless object gets the whole labels map).
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: default\nspec:\n  containers:\n  - {name: c, image: busybox}\n";
    let file = write(&server, "pod.yaml", pod);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        // The default ServiceAccount comes from a controller just after start.
        let out = server.kubectl("kubectl", &["create", "-f", &file]);
        if out.ok {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", out.stderr);
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let labels = run(
        &server,
        "kubectl",
        &["get", "pod", "p", "-o", "jsonpath={.metadata.labels}"],
    );
    assert_eq!(labels, r#"{"mutated":"true"}"#);

    // namespaceSelector: the namespace labelled webhooks=off sees neither webhook.
    let file = write(
        &server,
        "quiet.yaml",
        &configmap("denied", "quiet", "deny: \"yes\""),
    );
    run(&server, "kubectl", &["create", "-f", &file]);
    let labels = run(
        &server,
        "kubectl",
        &[
            "get",
            "configmap",
            "denied",
            "-n",
            "quiet",
            "-o",
            "jsonpath={.metadata.labels}",
        ],
    );
    assert_eq!(labels, r#"{"deny":"yes"}"#);

    // reinvocationPolicy IfNeeded: the first webhook is called again after a later one changed
    // the object, and sees the change.
    let reinvoke = format!(
        "apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: a-reinvoke
webhooks:
{}---
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: z-late
webhooks:
{}",
        webhook_yaml(
            "a.webhooks.example.com",
            &url("/reinvoke-a"),
            &bundle,
            "services",
            "  reinvocationPolicy: IfNeeded\n"
        ),
        webhook_yaml(
            "b.webhooks.example.com",
            &url("/late-b"),
            &bundle,
            "services",
            ""
        ),
    );
    run(
        &server,
        "kubectl",
        &["apply", "-f", &write(&server, "reinvoke.yaml", &reinvoke)],
    );
    let svc = "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\n  namespace: default\n  labels: {x: z}\nspec:\n  ports:\n  - {port: 80}\n";
    run(
        &server,
        "kubectl",
        &["create", "-f", &write(&server, "svc.yaml", svc)],
    );
    let labels = run(
        &server,
        "kubectl",
        &["get", "service", "s", "-o", "jsonpath={.metadata.labels}"],
    );
    assert_eq!(labels, r#"{"a":"set","b":"set","x":"z"}"#);

    // timeoutSeconds: a webhook slower than its timeout is a failed call (Fail refuses the write
    // with upstream's "context deadline exceeded"; Ignore lets it through).
    let slow = |policy: &str| {
        validating_config(
            "slow",
            webhook_yaml(
                "slow.webhooks.example.com",
                &url("/slow"),
                &bundle,
                "secrets",
                &format!("  failurePolicy: {policy}\n"),
            )
            .replace("timeoutSeconds: 5", "timeoutSeconds: 1"),
        )
    };
    let secret_yaml = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: default\nstringData: {{a: b}}\n"
        )
    };
    run(
        &server,
        "kubectl",
        &["apply", "-f", &write(&server, "slow.yaml", &slow("Fail"))],
    );
    let file = write(&server, "slow-secret.yaml", &secret_yaml("slow"));
    let started = std::time::Instant::now();
    let out = server.kubectl("kubectl", &["create", "-f", &file]);
    assert!(!out.ok);
    assert_eq!(
        out.stderr,
        format!(
            "Error from server (InternalError): error when creating \"{file}\": Internal error occurred: failed calling webhook \"slow.webhooks.example.com\": failed to call webhook: Post \"https://127.0.0.1:{}/slow?timeout=1s\": context deadline exceeded",
            hooks.port
        )
    );
    assert!(
        started.elapsed() < std::time::Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    run(
        &server,
        "kubectl",
        &["apply", "-f", &write(&server, "slow.yaml", &slow("Ignore"))],
    );
    run(&server, "kubectl", &["create", "-f", &file]);
    run(
        &server,
        "kubectl",
        &["delete", "validatingwebhookconfiguration", "slow"],
    );

    // A webhook whose server is down: Ignore lets the write through, Fail refuses it.
    let dead = free_port();
    let down = |policy: &str| {
        validating_config(
            "down",
            webhook_yaml(
                "down.webhooks.example.com",
                &format!("https://127.0.0.1:{dead}/down"),
                &bundle,
                "secrets",
                &format!("  failurePolicy: {policy}\n"),
            ),
        )
    };
    run(
        &server,
        "kubectl",
        &["apply", "-f", &write(&server, "down.yaml", &down("Ignore"))],
    );
    let secret = |name: &str| write(&server, &format!("{name}.yaml"), &secret_yaml(name));
    run(&server, "kubectl", &["create", "-f", &secret("ignored")]);
    run(
        &server,
        "kubectl",
        &["apply", "-f", &write(&server, "down.yaml", &down("Fail"))],
    );
    let file = secret("refused");
    let out = server.kubectl("kubectl", &["create", "-f", &file]);
    assert!(!out.ok);
    assert_eq!(
        out.stderr,
        format!(
            "Error from server (InternalError): error when creating \"{file}\": Internal error occurred: failed calling webhook \"down.webhooks.example.com\": failed to call webhook: Post \"https://127.0.0.1:{dead}/down?timeout=5s\": dial tcp 127.0.0.1:{dead}: connect: connection refused"
        )
    );
    // The configurations themselves are exempt: the broken one can always be removed.
    run(
        &server,
        "kubectl",
        &["delete", "validatingwebhookconfiguration", "down"],
    );
    run(&server, "kubectl", &["create", "-f", &file]);

    // Upstream's admission webhook metrics.
    let metrics = run(&server, "kubectl", &["get", "--raw", "/metrics"]);
    let value = |prefix: &str| -> f64 {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in /metrics"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    // One refused create per kubectl (the relabel is an UPDATE).
    assert_eq!(
        value(
            r#"apiserver_admission_webhook_rejection_count{name="validate.webhooks.example.com",operation="CREATE",type="validating",error_type="no_error",rejection_code="403"}"#
        ),
        KUBECTLS.len() as f64
    );
    assert_eq!(
        value(
            r#"apiserver_admission_webhook_fail_open_count{name="down.webhooks.example.com",type="validating"}"#
        ),
        1.0
    );
    assert!(
        value(
            r#"apiserver_admission_webhook_request_total{name="mutate.webhooks.example.com",operation="CREATE",rejected="false",type="admit",code="200"}"#
        ) >= 4.0
    );
    assert!(metrics.contains("apiserver_admission_webhook_admission_duration_seconds_bucket{"));
}

/// DESIGN rule 2: the webhook set is a watch-fed view with its revision, and a write waits for
/// it to reach the store's revision; so a webhook registered through replica A refuses the very
/// next write through replica B, every time.
fn registered_through_one_replica_applies_through_another(store: &str, rounds: usize) {
    let hooks = start_webhooks();
    let a = Server::start_with(&["--store", store, "--identity-secret-file", &shared_secret()]);
    let b = Server::start_with(&["--store", store, "--identity-secret-file", &shared_secret()]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut via_a = Api::connect(&a.kubeconfig(), a.port).await;
        let mut via_b = Api::connect(&a.kubeconfig(), b.port).await;
        let mut refused = 0;
        for i in 0..rounds {
            let config = json!({"apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingWebhookConfiguration", "metadata": {"name": format!("round-{i}")},
                "webhooks": [{"name": format!("round-{i}.webhooks.example.com"),
                    "clientConfig": {"url": format!("https://127.0.0.1:{}/validate", hooks.port),
                        "caBundle": hooks.ca_bundle()},
                    "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                        "resources": ["configmaps"]}],
                    "objectSelector": {"matchLabels": {"round": i.to_string()}},
                    "sideEffects": "None", "admissionReviewVersions": ["v1"]}]});
            let (code, body) = via_a
                .send("POST", "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations", Some(config.to_string()), None)
                .await;
            assert_eq!(code, 201, "{body}");
            let cm = json!({"metadata": {"name": format!("cm-{i}"), "labels": {"round": i.to_string(), "deny": "yes"}}});
            let (code, body) = via_b
                .send("POST", "/api/v1/namespaces/default/configmaps", Some(cm.to_string()), None)
                .await;
            if code == 403 && body.contains(&format!("admission webhook \\\"round-{i}.webhooks.example.com\\\" denied the request")) {
                refused += 1;
            } else {
                eprintln!("round {i}: {code} {body}");
            }
        }
        // What the wait for the view costs a write no webhook refuses: plain creates through B.
        let mut took = Vec::new();
        for i in 0..200 {
            let cm = json!({"metadata": {"name": format!("plain-{i}")}});
            let started = std::time::Instant::now();
            let (code, body) = via_b
                .send("POST", "/api/v1/namespaces/default/configmaps", Some(cm.to_string()), None)
                .await;
            took.push(started.elapsed());
            assert_eq!(code, 201, "{body}");
        }
        took.sort();
        let ms = |p: f64| took[((took.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3;
        eprintln!(
            "{store}: {refused}/{rounds} refused through the other replica; a create no webhook matches ({rounds} configurations): p50 {:.2} ms p99 {:.2} ms",
            ms(0.5),
            ms(0.99)
        );
        assert_eq!(refused, rounds, "writes through B that missed a webhook just registered through A");
    });
}

#[test]
fn a_webhook_registered_through_one_replica_applies_through_another_on_etcd() {
    let store = format!(
        "etcd://{}?prefix=/webhooks-{}",
        crate::servers::etcd_endpoints(),
        std::process::id()
    );
    registered_through_one_replica_applies_through_another(&store, 50);
}

#[test]
fn a_webhook_registered_through_one_replica_applies_through_another_on_postgres() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = rt.block_on(crate::servers::postgres_database(&format!(
        "webhooks{}",
        std::process::id()
    )));
    registered_through_one_replica_applies_through_another(&url, 50);
}

/// `exec` and `attach` pass admission as a CONNECT, with the connect options as the object, as
/// upstream's connect handler sends them: a webhook refuses them for one pod; for another, the
/// request goes on (to the missing kubelet, here).
#[test]
fn a_webhook_refuses_exec_and_attach_as_a_connect() {
    let hooks = start_webhooks();
    let server = Server::start();
    let ns = ns_name("kubectl", "connect");
    run(&server, "kubectl", &["create", "namespace", &ns]);
    for pod in ["guarded", "open"] {
        run(
            &server,
            "kubectl",
            &[
                "run",
                pod,
                "-n",
                &ns,
                "--image=busybox",
                "--",
                "sleep",
                "3600",
            ],
        );
    }
    let hook = webhook_yaml(
        "connect.webhooks.example.com",
        &format!("https://127.0.0.1:{}/connect", hooks.port),
        &hooks.ca_bundle(),
        "pods/exec, pods/attach",
        "",
    )
    .replace("operations: [CREATE, UPDATE]", "operations: [CONNECT]");
    let file = write(&server, "connect.yaml", &validating_config("connect", hook));
    run(&server, "kubectl", &["apply", "-f", &file]);
    for &k in &["kubectl", "kubectl.1.27"] {
        let out = server.kubectl(k, &["exec", "guarded", "-n", &ns, "--", "true"]);
        assert!(
            !out.ok
                && out.stderr.contains(
                    "admission webhook \"connect.webhooks.example.com\" denied the request: exec to pod 'guarded' is not allowed (CONNECT PodExecOptions, container guarded)"
                ),
            "{k} exec: {}",
            out.stderr
        );
        let out = server.kubectl(k, &["attach", "guarded", "-n", &ns]);
        assert!(
            !out.ok
                && out
                    .stderr
                    .contains("attach to pod 'guarded' is not allowed (CONNECT PodAttachOptions"),
            "{k} attach: {}",
            out.stderr
        );
        // Allowed: on to the kubelet, which a vkube without a host cluster does not have.
        let out = server.kubectl(k, &["exec", "open", "-n", &ns, "--", "true"]);
        assert!(
            !out.ok
                && out.stderr.contains("needs a kubelet")
                && !out.stderr.contains("admission webhook"),
            "{k} exec open: {}",
            out.stderr
        );
    }
}
