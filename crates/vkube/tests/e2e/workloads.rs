//! Deployments, ReplicaSets and ReplicationControllers through kubectl: a Deployment creates its
//! ReplicaSet and pods (Pending: there is no kubelet), `kubectl scale` changes the pod count,
//! and deleting in the background, orphaning or in the foreground does what kubectl promises.
//! The test plays kubelet (it marks pods Ready through their status) to roll Deployments out:
//! a rolling update watched pod by pod stays within maxSurge and maxUnavailable, and `kubectl
//! rollout status|history|undo|pause|resume|restart` do what they say.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::gc::{eventually, exists};
use crate::harness::*;

fn count(server: &Server, ns: &str, what: &str) -> usize {
    let out = run(server, "kubectl", &["get", what, "-n", ns, "-o", "name"]);
    out.lines().filter(|l| !l.is_empty()).count()
}

fn field(server: &Server, ns: &str, what: &str, path: &str) -> String {
    let path = format!("jsonpath={path}");
    run(server, "kubectl", &["get", what, "-n", ns, "-o", &path])
}

#[test]
fn deployments_scale_and_cascade() {
    let server = Server::start();
    let k = "kubectl";
    let ns = "workloads";
    run(&server, k, &["create", "namespace", ns]);
    run(
        &server,
        k,
        &[
            "create",
            "deployment",
            "web",
            "--image=nginx",
            "--replicas=2",
            "-n",
            ns,
        ],
    );
    eventually("the Deployment has its ReplicaSet and 2 pods", || {
        count(&server, ns, "replicasets") == 1 && count(&server, ns, "pods") == 2
    });
    let rs = field(&server, ns, "replicasets", "{.items[0].metadata.name}");
    let hash = field(
        &server,
        ns,
        "replicasets",
        "{.items[0].metadata.labels.pod-template-hash}",
    );
    assert_eq!(rs, format!("web-{hash}"));
    let pod = field(&server, ns, "pods", "{.items[0].metadata.name}");
    assert!(pod.starts_with(&format!("{rs}-")), "{pod}");
    eventually("the Deployment reports its replicas", || {
        field(
            &server,
            ns,
            "deployment/web",
            "{.status.replicas}/{.status.updatedReplicas}",
        ) == "2/2"
    });

    run(
        &server,
        k,
        &["scale", "deployment", "web", "--replicas=3", "-n", ns],
    );
    eventually("3 pods", || count(&server, ns, "pods") == 3);
    run(
        &server,
        k,
        &["scale", "deployment", "web", "--replicas=1", "-n", ns],
    );
    eventually("1 pod", || count(&server, ns, "pods") == 1);

    // Background (the default): the ReplicaSet and its pods follow the Deployment.
    run(&server, k, &["delete", "deployment", "web", "-n", ns]);
    eventually("ReplicaSet and pods are deleted", || {
        count(&server, ns, "replicasets") == 0 && count(&server, ns, "pods") == 0
    });
}

#[test]
fn orphaned_and_foreground_deletion() {
    let server = Server::start();
    let k = "kubectl";
    let ns = "workloads-cascade";
    run(&server, k, &["create", "namespace", ns]);
    let rs = format!(
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {{name: keep, namespace: {ns}}}\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: keep}}}}\n  template:\n    metadata: {{labels: {{app: keep}}}}\n    spec: {{containers: [{{name: c, image: nginx}}]}}\n"
    );
    apply_file(&server, k, &rs, "create");
    eventually("2 pods", || count(&server, ns, "pods") == 2);
    run(
        &server,
        k,
        &["delete", "rs", "keep", "-n", ns, "--cascade=orphan"],
    );
    assert!(!exists(&server, ns, "rs/keep"));
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(count(&server, ns, "pods"), 2, "orphans stay");
    let refs = field(&server, ns, "pods", "{.items[*].metadata.ownerReferences}");
    assert_eq!(refs, "", "orphans keep no reference");
    run(&server, k, &["delete", "pods", "--all", "-n", ns]);

    let rc = format!(
        "apiVersion: v1\nkind: ReplicationController\nmetadata: {{name: fg, namespace: {ns}}}\nspec:\n  replicas: 3\n  selector: {{app: fg}}\n  template:\n    metadata: {{labels: {{app: fg}}}}\n    spec: {{containers: [{{name: c, image: nginx}}]}}\n"
    );
    apply_file(&server, k, &rc, "create");
    eventually("3 pods", || count(&server, ns, "pods") == 3);
    // kubectl waits for the owner, which goes only after its pods.
    run(
        &server,
        k,
        &["delete", "rc", "fg", "-n", ns, "--cascade=foreground"],
    );
    assert!(!exists(&server, ns, "rc/fg"));
    assert_eq!(count(&server, ns, "pods"), 0);
}

/// Plays kubelet for one pod: it runs and is Ready. False when every pod already is.
fn kubelet_one(server: &Server, ns: &str) -> bool {
    let out = run(
        server,
        "kubectl",
        &[
            "get",
            "pods",
            "-n",
            ns,
            "-o",
            r#"jsonpath={range .items[*]}{.metadata.name} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}"#,
        ],
    );
    let Some(pod) = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() == 1)
        .map(|f| f[0].to_string())
    else {
        return false;
    };
    let ready = r#"{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}}"#;
    // The pod may be gone meanwhile (scaled down): the next call finds another.
    let _ = server.kubectl(
        "kubectl",
        &[
            "patch",
            "pod",
            &pod,
            "-n",
            ns,
            "--subresource=status",
            "--type=merge",
            "-p",
            ready,
        ],
    );
    true
}

/// Plays kubelet, one pod at a time, until the Deployment is rolled out.
fn roll_out(server: &Server, ns: &str, deployment: &str) {
    let what = format!("deployment/{deployment}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = field(
            server,
            ns,
            &what,
            "{.spec.replicas}/{.status.replicas}/{.status.updatedReplicas}/{.status.availableReplicas}/{.metadata.generation}/{.status.observedGeneration}",
        );
        let f: Vec<&str> = status.split('/').collect();
        if f[0] == f[1] && f[0] == f[2] && f[0] == f[3] && f[4] == f[5] {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never rolled out: {status}"
        );
        if !kubelet_one(server, ns) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Pods as a watch reports them: name → ready; with the fewest ready and the most pods seen
/// since `armed` (the watch's first events add the pods one by one).
#[derive(Default)]
struct Seen {
    armed: bool,
    /// name → (pod-template-hash, ready).
    pods: BTreeMap<String, (String, bool)>,
    min_ready: Option<usize>,
    max_pods: usize,
    /// The most templates (ReplicaSets) with pods at once.
    max_templates: usize,
}

/// Watches the pods of `ns` with kubectl, recording the extremes, until the returned child is
/// killed.
fn watch_pods(server: &Server, ns: &str) -> (std::process::Child, Arc<Mutex<Seen>>) {
    let mut child = Command::new(kubectl_path("kubectl"))
        .args([
            "get",
            "pods",
            "-n",
            ns,
            "-w",
            "--output-watch-events",
            "-o",
            r#"jsonpath={.type} {.object.metadata.name} {.object.metadata.labels.pod-template-hash} {.object.status.conditions[?(@.type=="Ready")].status}{.object.metadata.deletionTimestamp}{"\n"}"#,
        ])
        .env("KUBECONFIG", server.kubeconfig())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl get -w");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stdout = child.stdout.take().unwrap();
    let record = seen.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 3 {
                continue;
            }
            let mut s = record.lock().unwrap();
            if f[0] == "DELETED" {
                s.pods.remove(f[1]);
            } else {
                // "True" alone: ready; with a deletion timestamp after it, terminating.
                let ready = f.get(3) == Some(&"True");
                s.pods.insert(f[1].to_string(), (f[2].to_string(), ready));
            }
            if !s.armed {
                continue;
            }
            let ready = s.pods.values().filter(|(_, r)| *r).count();
            let count = s.pods.len();
            let templates: std::collections::BTreeSet<&String> =
                s.pods.values().map(|(h, _)| h).collect();
            let templates = templates.len();
            s.max_templates = s.max_templates.max(templates);
            s.min_ready = Some(s.min_ready.map_or(ready, |m| m.min(ready)));
            s.max_pods = s.max_pods.max(count);
        }
    });
    (child, seen)
}

fn rs_of_revision(server: &Server, ns: &str, revision: &str) -> String {
    let out = run(
        server,
        "kubectl",
        &[
            "get",
            "rs",
            "-n",
            ns,
            "-o",
            r#"jsonpath={range .items[*]}{.metadata.name} {.metadata.annotations.deployment\.kubernetes\.io/revision}{"\n"}{end}"#,
        ],
    );
    out.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(1) == Some(&revision))
        .map(|f| f[0].to_string())
        .unwrap_or_default()
}

/// A rolling update of 4 replicas with maxSurge 1 and maxUnavailable 1, the kubelet readying one
/// pod at a time: a pod watch never sees more than 5 pods nor fewer than 3 ready, and `kubectl
/// rollout status` waits for the end and succeeds. Then `rollout history`, `undo` (the first
/// ReplicaSet is scaled up again as revision 3), `pause` (no rollout, scaling still works),
/// `resume` and `restart`.
#[test]
fn rolling_updates_and_kubectl_rollout() {
    let server = Server::start();
    let k = "kubectl";
    let ns = "rollouts";
    run(&server, k, &["create", "namespace", ns]);
    let manifest = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: {ns}}}\nspec:\n  replicas: 4\n  selector: {{matchLabels: {{app: web}}}}\n  strategy: {{type: RollingUpdate, rollingUpdate: {{maxSurge: 1, maxUnavailable: 1}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec: {{containers: [{{name: c, image: 'nginx:1'}}]}}\n"
    );
    apply_file(&server, k, &manifest, "create");
    eventually("4 pods", || count(&server, ns, "pods") == 4);
    roll_out(&server, ns, "web");
    let first = rs_of_revision(&server, ns, "1");
    assert!(first.starts_with("web-"), "{first}");
    let out = run(
        &server,
        k,
        &["rollout", "status", "deployment/web", "-n", ns],
    );
    assert!(out.contains("successfully rolled out"), "{out}");

    // A rolling update, watched.
    let (mut watch, seen) = watch_pods(&server, ns);
    eventually("the watch sees the 4 ready pods", || {
        let mut s = seen.lock().unwrap();
        s.armed = s.pods.len() == 4 && s.pods.values().all(|(_, r)| *r);
        s.armed
    });
    run(
        &server,
        k,
        &[
            "annotate",
            "deployment/web",
            "-n",
            ns,
            "kubernetes.io/change-cause=image nginx:2",
        ],
    );
    run(
        &server,
        k,
        &["set", "image", "deployment/web", "c=nginx:2", "-n", ns],
    );
    let kubeconfig = server.kubeconfig();
    let status = std::thread::spawn(move || {
        kubectl_with(
            "kubectl",
            &kubeconfig,
            &[
                "rollout",
                "status",
                "deployment/web",
                "-n",
                ns,
                "--timeout=90s",
            ],
        )
    });
    roll_out(&server, ns, "web");
    let status = status.join().unwrap();
    assert!(status.ok, "rollout status: {}", status.stderr);
    assert!(
        status
            .stdout
            .contains("deployment \"web\" successfully rolled out"),
        "{}",
        status.stdout
    );
    std::thread::sleep(Duration::from_millis(500));
    let _ = watch.kill();
    let _ = watch.wait();
    {
        let s = seen.lock().unwrap();
        assert!(
            s.max_pods <= 5,
            "{} pods at once: more than replicas + maxSurge",
            s.max_pods
        );
        let min = s.min_ready.unwrap();
        assert!(
            min >= 3,
            "{min} ready: fewer than replicas - maxUnavailable"
        );
        assert_eq!(
            s.max_templates, 2,
            "the watch saw old and new pods together"
        );
    }
    assert_eq!(count(&server, ns, "pods"), 4);
    assert_eq!(
        field(&server, ns, &format!("rs/{first}"), "{.spec.replicas}"),
        "0"
    );
    let second = rs_of_revision(&server, ns, "2");
    assert_ne!(second, "");
    for kubectl in KUBECTLS {
        let history = run(
            &server,
            kubectl,
            &["rollout", "history", "deployment/web", "-n", ns],
        );
        let rows = lines(&history);
        assert!(
            rows.iter()
                .any(|r| r.first().map(String::as_str) == Some("1")),
            "{kubectl}: {history}"
        );
        assert!(
            rows.iter()
                .any(|r| r.first().map(String::as_str) == Some("2")
                    && r.join(" ").contains("image nginx:2")),
            "{kubectl}: {history}"
        );
        let revision2 = run(
            &server,
            kubectl,
            &[
                "rollout",
                "history",
                "deployment/web",
                "-n",
                ns,
                "--revision=2",
            ],
        );
        assert!(revision2.contains("nginx:2"), "{kubectl}: {revision2}");
    }

    // Undo (kubectl 1.33 finds the ReplicaSet of the previous revision and puts its template
    // back): back to nginx:1, the first ReplicaSet scaled up again as revision 3.
    let out = run(
        &server,
        "kubectl.1.33",
        &["rollout", "undo", "deployment/web", "-n", ns],
    );
    assert!(out.contains("rolled back"), "{out}");
    assert_eq!(
        field(
            &server,
            ns,
            "deployment/web",
            "{.spec.template.spec.containers[0].image}"
        ),
        "nginx:1"
    );
    roll_out(&server, ns, "web");
    assert_eq!(rs_of_revision(&server, ns, "3"), first);
    assert_eq!(
        field(&server, ns, &format!("rs/{first}"), "{.spec.replicas}"),
        "4"
    );
    assert_eq!(
        field(&server, ns, &format!("rs/{second}"), "{.spec.replicas}"),
        "0"
    );
    assert_eq!(
        field(
            &server,
            ns,
            "deployment/web",
            r#"{.metadata.annotations.deployment\.kubernetes\.io/revision}"#
        ),
        "3"
    );
    let out = run(
        &server,
        k,
        &["rollout", "status", "deployment/web", "-n", ns],
    );
    assert!(out.contains("successfully rolled out"), "{out}");

    // Paused: a new template is not rolled out, scaling still is.
    run(
        &server,
        k,
        &["rollout", "pause", "deployment/web", "-n", ns],
    );
    run(
        &server,
        k,
        &["set", "image", "deployment/web", "c=nginx:3", "-n", ns],
    );
    eventually("the Deployment reports it is paused", || {
        field(
            &server,
            ns,
            "deployment/web",
            r#"{.status.conditions[?(@.type=="Progressing")].reason}"#,
        ) == "DeploymentPaused"
    });
    run(
        &server,
        k,
        &["scale", "deployment/web", "--replicas=5", "-n", ns],
    );
    eventually("5 pods of the first ReplicaSet", || {
        field(&server, ns, &format!("rs/{first}"), "{.spec.replicas}") == "5"
            && count(&server, ns, "pods") == 5
    });
    assert_eq!(
        count(&server, ns, "replicasets"),
        2,
        "no rollout while paused"
    );
    run(
        &server,
        k,
        &["rollout", "resume", "deployment/web", "-n", ns],
    );
    eventually("a third ReplicaSet", || {
        count(&server, ns, "replicasets") == 3
    });
    roll_out(&server, ns, "web");
    let third = rs_of_revision(&server, ns, "4");
    assert_eq!(
        field(
            &server,
            ns,
            &format!("rs/{third}"),
            "{.spec.template.spec.containers[0].image}"
        ),
        "nginx:3"
    );

    // Restart (kubectl 1.27 here): a new ReplicaSet with the same image.
    run(
        &server,
        "kubectl.1.27",
        &["rollout", "restart", "deployment/web", "-n", ns],
    );
    eventually("a fourth ReplicaSet", || {
        count(&server, ns, "replicasets") == 4
    });
    roll_out(&server, ns, "web");
    let out = run(
        &server,
        k,
        &["rollout", "status", "deployment/web", "-n", ns],
    );
    assert!(out.contains("successfully rolled out"), "{out}");
    let fourth = rs_of_revision(&server, ns, "5");
    assert_eq!(
        field(&server, ns, &format!("rs/{fourth}"), "{.spec.replicas}"),
        "5"
    );
    assert_eq!(
        field(&server, ns, &format!("rs/{third}"), "{.spec.replicas}"),
        "0"
    );
    let available = field(
        &server,
        ns,
        "deployment/web",
        r#"{.status.conditions[?(@.type=="Available")].reason}"#,
    );
    assert_eq!(available, "MinimumReplicasAvailable");
    // The controllers' events, as kubectl describe lists them.
    let described = run(&server, k, &["describe", "deployment/web", "-n", ns]);
    assert!(
        described.contains(&format!("Scaled up replica set {fourth} from 0 to")),
        "{described}"
    );
    let described = run(&server, k, &["describe", &format!("rs/{fourth}"), "-n", ns]);
    assert!(described.contains("SuccessfulCreate"), "{described}");
}

/// Recreate: the old pods are all gone before the first new one is made.
#[test]
fn recreate_never_runs_two_templates_at_once() {
    let server = Server::start();
    let k = "kubectl";
    let ns = "recreate";
    run(&server, k, &["create", "namespace", ns]);
    let manifest = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: db, namespace: {ns}}}\nspec:\n  replicas: 3\n  selector: {{matchLabels: {{app: db}}}}\n  strategy: {{type: Recreate}}\n  template:\n    metadata: {{labels: {{app: db}}}}\n    spec: {{containers: [{{name: c, image: 'postgres:16'}}]}}\n"
    );
    apply_file(&server, k, &manifest, "create");
    eventually("3 pods", || count(&server, ns, "pods") == 3);
    roll_out(&server, ns, "db");
    let (mut watch, seen) = watch_pods(&server, ns);
    eventually("the watch sees the 3 ready pods", || {
        let mut s = seen.lock().unwrap();
        s.armed = s.pods.len() == 3 && s.pods.values().all(|(_, r)| *r);
        s.armed
    });
    run(
        &server,
        k,
        &["set", "image", "deployment/db", "c=postgres:17", "-n", ns],
    );
    roll_out(&server, ns, "db");
    let out = run(
        &server,
        k,
        &["rollout", "status", "deployment/db", "-n", ns],
    );
    assert!(out.contains("successfully rolled out"), "{out}");
    std::thread::sleep(Duration::from_millis(500));
    let _ = watch.kill();
    let _ = watch.wait();
    let s = seen.lock().unwrap();
    assert_eq!(s.max_templates, 1, "old and new pods at once");
    assert_eq!(s.min_ready, Some(0));
    assert_eq!(s.max_pods, 3);
    assert_eq!(count(&server, ns, "replicasets"), 2);
}

/// A rollout that makes no progress for progressDeadlineSeconds is reported as failed
/// (`ProgressDeadlineExceeded`), which makes `kubectl rollout status` fail; once its pods are
/// ready it completes.
#[test]
fn a_stuck_rollout_exceeds_its_progress_deadline() {
    let server = Server::start();
    let k = "kubectl";
    let ns = "deadline";
    run(&server, k, &["create", "namespace", ns]);
    let manifest = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: slow, namespace: {ns}}}\nspec:\n  replicas: 2\n  progressDeadlineSeconds: 2\n  selector: {{matchLabels: {{app: slow}}}}\n  template:\n    metadata: {{labels: {{app: slow}}}}\n    spec: {{containers: [{{name: c, image: nginx}}]}}\n"
    );
    apply_file(&server, k, &manifest, "create");
    eventually("the deadline is exceeded", || {
        field(
            &server,
            ns,
            "deployment/slow",
            r#"{.status.conditions[?(@.type=="Progressing")].reason}"#,
        ) == "ProgressDeadlineExceeded"
    });
    let out = server.kubectl(k, &["rollout", "status", "deployment/slow", "-n", ns]);
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("deployment \"slow\" exceeded its progress deadline"),
        "{}",
        out.stderr
    );
    roll_out(&server, ns, "slow");
    eventually("the rollout completes", || {
        field(
            &server,
            ns,
            "deployment/slow",
            r#"{.status.conditions[?(@.type=="Progressing")].reason}"#,
        ) == "NewReplicaSetAvailable"
    });
    let out = run(
        &server,
        k,
        &["rollout", "status", "deployment/slow", "-n", ns],
    );
    assert!(out.contains("successfully rolled out"), "{out}");
}

/// minReadySeconds: pods Ready for less than it are not available; the ReplicaSet looks again
/// when they have been, without any other event.
#[test]
fn min_ready_seconds_delay_availability() {
    let server = Server::start();
    let k = "kubectl";
    let ns = "min-ready";
    run(&server, k, &["create", "namespace", ns]);
    let manifest = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: {ns}}}\nspec:\n  replicas: 2\n  minReadySeconds: 3\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec: {{containers: [{{name: c, image: nginx}}]}}\n"
    );
    apply_file(&server, k, &manifest, "create");
    eventually("2 pods", || count(&server, ns, "pods") == 2);
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let since = rfc3339(since as i64);
    let ready = format!(
        r#"{{"status":{{"phase":"Running","conditions":[{{"type":"Ready","status":"True","lastTransitionTime":"{since}"}}]}}}}"#
    );
    for pod in run(&server, k, &["get", "pods", "-n", ns, "-o", "name"]).lines() {
        patch_pod_status(&server, ns, pod, &ready);
    }
    let started = Instant::now();
    eventually("2 ready", || {
        field(&server, ns, "rs", "{.items[0].status.readyReplicas}") == "2"
    });
    let available = field(&server, ns, "deployment/web", "{.status.availableReplicas}");
    if started.elapsed() < Duration::from_secs(2) {
        assert_eq!(available, "", "available before minReadySeconds");
    }
    eventually("2 available", || {
        field(&server, ns, "deployment/web", "{.status.availableReplicas}") == "2"
    });
    let out = run(
        &server,
        k,
        &["rollout", "status", "deployment/web", "-n", ns],
    );
    assert!(out.contains("successfully rolled out"), "{out}");
}
