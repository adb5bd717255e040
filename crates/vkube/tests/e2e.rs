//! End to end: a real `vkube serve` process driven by real kubectl — the default binary and the
//! pinned `kubectl.1.27` and `kubectl.1.33` beside it — checking what kubectl prints.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running `vkube serve`, stopped (SIGKILL) when dropped.
struct Server {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    fn start() -> Server {
        Server::start_with(&[])
    }

    fn start_with(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_vkube"))
            .args([
                "serve",
                "--data-dir",
                &dir.path().display().to_string(),
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start vkube serve");
        let mut server = Server { child, port, dir };
        let stdout = server.child.stdout.take().unwrap();
        let line = BufReader::new(stdout)
            .lines()
            .next()
            .expect("vkube serve printed nothing")
            .unwrap();
        assert!(
            line.contains("admin.kubeconfig"),
            "unexpected first line: {line}"
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = server.kubectl("kubectl", &["get", "--raw", "/readyz"]);
            if out.ok && out.stdout == "ok" {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "not ready after 30 s: {}",
                out.stderr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("admin.kubeconfig")
    }

    fn kubectl(&self, binary: &str, args: &[&str]) -> Output {
        kubectl_with(binary, &self.kubeconfig(), args)
    }
}

struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn kubectl_path(binary: &str) -> PathBuf {
    if binary == "kubectl" {
        return PathBuf::from("kubectl");
    }
    let real = Command::new("sh")
        .args(["-c", "readlink -f \"$(command -v kubectl)\""])
        .output()
        .expect("sh");
    let real = PathBuf::from(String::from_utf8_lossy(&real.stdout).trim());
    let path = real.parent().unwrap_or(Path::new("/")).join(binary);
    assert!(
        path.exists(),
        "{binary} is not beside the kubectl on PATH ({}): install it there",
        real.display()
    );
    path
}

fn kubectl_with(binary: &str, kubeconfig: &Path, args: &[&str]) -> Output {
    let out = Command::new(kubectl_path(binary))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap_or_else(|e| panic!("running {binary}: {e}; is kubectl on PATH?"));
    Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).trim_end().to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim_end().to_string(),
    }
}

const KUBECTLS: &[&str] = &["kubectl", "kubectl.1.27", "kubectl.1.33"];

/// Runs kubectl and returns stdout, failing the test with stderr when it fails.
fn run(server: &Server, binary: &str, args: &[&str]) -> String {
    let out = server.kubectl(binary, args);
    assert!(out.ok, "{binary} {}: {}", args.join(" "), out.stderr);
    out.stdout
}

fn apply_file(server: &Server, binary: &str, yaml: &str, verb: &str) -> String {
    let file = server
        .dir
        .path()
        .join(format!("input-{}.yaml", rand_suffix()));
    std::fs::write(&file, yaml).unwrap();
    let file = file.display().to_string();
    let args: Vec<&str> = [verb, "-f", file.as_str()].into_iter().collect();
    run(server, binary, &args)
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn ns_name(binary: &str, what: &str) -> String {
    format!(
        "{what}-{}",
        binary.replace('.', "-").replace("kubectl", "k")
    )
}

/// cluster-info colours its output.
fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn lines(s: &str) -> Vec<Vec<String>> {
    s.lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[test]
fn version_cluster_info_and_discovery() {
    let server = Server::start();
    for &k in KUBECTLS {
        let version: serde_json::Value =
            serde_json::from_str(&run(&server, k, &["version", "-o", "json"])).unwrap();
        assert_eq!(version["serverVersion"]["major"], "1", "{k}");
        assert!(
            version["serverVersion"]["gitVersion"]
                .as_str()
                .unwrap()
                .starts_with("v1.33.0"),
            "{k}"
        );
        let info = strip_ansi(&run(&server, k, &["cluster-info"]));
        assert!(
            info.contains(&format!("is running at https://127.0.0.1:{}", server.port)),
            "{k}: {info}"
        );
        let resources = run(&server, k, &["api-resources"]);
        let deploy = lines(&resources)
            .into_iter()
            .find(|l| l.first().is_some_and(|n| n == "deployments"))
            .unwrap();
        assert_eq!(
            deploy,
            ["deployments", "deploy", "apps/v1", "true", "Deployment"],
            "{k}"
        );
        let pods = lines(&resources)
            .into_iter()
            .find(|l| l.first().is_some_and(|n| n == "pods"))
            .unwrap();
        assert_eq!(pods, ["pods", "po", "v1", "true", "Pod"], "{k}");
        let namespaced = run(
            &server,
            k,
            &["api-resources", "--namespaced=false", "-o", "name"],
        );
        assert!(
            namespaced.lines().any(|l| l == "namespaces")
                && !namespaced.lines().any(|l| l == "pods"),
            "{k}"
        );
        let versions = run(&server, k, &["api-versions"]);
        for gv in [
            "v1",
            "apps/v1",
            "autoscaling/v2",
            "autoscaling/v1",
            "rbac.authorization.k8s.io/v1",
            "admissionregistration.k8s.io/v1",
        ] {
            assert!(
                versions.lines().any(|l| l == gv),
                "{k}: {gv} missing from {versions}"
            );
        }
    }
}

const MANIFEST: &str = "apiVersion: v1
kind: Namespace
metadata:
  name: NS
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: app-config
  namespace: NS
  labels: {app: web, tier: front}
data:
  a: \"1\"
  b: \"2\"
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: other
  namespace: NS
  labels: {app: db}
data:
  a: \"x\"
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: NS
  labels: {app: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: nginx}]
";

#[test]
fn create_from_multi_document_yaml_and_read_in_every_format() {
    let server = Server::start();
    for &k in KUBECTLS {
        let ns = ns_name(k, "formats");
        let created = apply_file(&server, k, &MANIFEST.replace("NS", &ns), "create");
        assert_eq!(
            created.lines().collect::<Vec<_>>(),
            [
                format!("namespace/{ns} created"),
                "configmap/app-config created".into(),
                "configmap/other created".into(),
                "deployment.apps/web created".into()
            ],
            "{k}"
        );
        let table = lines(&run(&server, k, &["get", "configmaps", "-n", &ns]));
        assert_eq!(table[0], ["NAME", "DATA", "AGE"], "{k}");
        let rows: Vec<_> = table[1..]
            .iter()
            .map(|r| (r[0].clone(), r[1].clone()))
            .collect();
        assert_eq!(
            rows,
            [
                ("app-config".into(), "2".into()),
                ("kube-root-ca.crt".into(), "1".into()),
                ("other".into(), "1".into())
            ],
            "{k}"
        );
        assert_eq!(
            run(
                &server,
                k,
                &["get", "cm", "-n", &ns, "-l", "app=web", "-o", "name"]
            ),
            "configmap/app-config",
            "{k}"
        );
        assert_eq!(
            run(
                &server,
                k,
                &[
                    "get",
                    "cm",
                    "-n",
                    &ns,
                    "-l",
                    "app in (web,db),tier!=front",
                    "-o",
                    "name"
                ]
            ),
            "configmap/other",
            "{k}"
        );
        assert_eq!(
            run(
                &server,
                k,
                &[
                    "get",
                    "cm",
                    "-n",
                    &ns,
                    "--field-selector",
                    "metadata.name=other",
                    "-o",
                    "name"
                ]
            ),
            "configmap/other"
        );
        let json: serde_json::Value = serde_json::from_str(&run(
            &server,
            k,
            &["get", "cm", "app-config", "-n", &ns, "-o", "json"],
        ))
        .unwrap();
        assert_eq!(
            (json["kind"].as_str(), json["data"]["b"].as_str()),
            (Some("ConfigMap"), Some("2")),
            "{k}"
        );
        assert_eq!(
            json["metadata"]["uid"].as_str().map(str::len),
            Some(36),
            "{k}"
        );
        let yaml = run(
            &server,
            k,
            &["get", "cm", "app-config", "-n", &ns, "-o", "yaml"],
        );
        assert!(
            yaml.contains("kind: ConfigMap") && yaml.contains(&format!("namespace: {ns}")),
            "{k}: {yaml}"
        );
        assert_eq!(
            run(
                &server,
                k,
                &[
                    "get",
                    "cm",
                    "app-config",
                    "-n",
                    &ns,
                    "-o",
                    "jsonpath={.data.a}"
                ]
            ),
            "1",
            "{k}"
        );
        let custom = lines(&run(
            &server,
            k,
            &[
                "get",
                "cm",
                "-n",
                &ns,
                "-l",
                "app",
                "-o",
                "custom-columns=NAME:.metadata.name,A:.data.a",
            ],
        ));
        assert_eq!(
            custom,
            [
                vec!["NAME", "A"],
                vec!["app-config", "1"],
                vec!["other", "x"]
            ],
            "{k}"
        );
        let wide = lines(&run(&server, k, &["get", "ns", &ns, "-o", "wide"]));
        assert_eq!(
            (wide[0][..2].to_vec(), wide[1][..2].to_vec()),
            (
                vec!["NAME".to_string(), "STATUS".into()],
                vec![ns.clone(), "Active".into()]
            ),
            "{k}"
        );
        assert_eq!(
            run(
                &server,
                k,
                &["scale", "deployment", "web", "-n", &ns, "--replicas=3"]
            ),
            "deployment.apps/web scaled",
            "{k}"
        );
        assert_eq!(
            run(
                &server,
                k,
                &[
                    "get",
                    "deploy",
                    "web",
                    "-n",
                    &ns,
                    "-o",
                    "jsonpath={.spec.replicas}"
                ]
            ),
            "3",
            "{k}"
        );
        let all = run(&server, k, &["get", "all", "-n", &ns]);
        assert!(all.contains("deployment.apps/web"), "{k}: {all}");
        let sa = run(
            &server,
            k,
            &["get", "serviceaccounts", "-n", &ns, "-o", "name"],
        );
        assert_eq!(sa, "serviceaccount/default", "{k}");
        let missing = server.kubectl(k, &["get", "cm", "nope", "-n", &ns]);
        assert!(
            !missing.ok
                && missing
                    .stderr
                    .contains("Error from server (NotFound): configmaps \"nope\" not found"),
            "{k}: {}",
            missing.stderr
        );
        let dup = apply_file_result(&server, k, &MANIFEST.replace("NS", &ns));
        assert!(
            dup.contains("Error from server (AlreadyExists): error when creating")
                && dup.contains("configmaps \"app-config\" already exists"),
            "{k}: {dup}"
        );

        // Deletes: by name, by label, with -f, and --all.
        assert_eq!(
            run(&server, k, &["delete", "cm", "other", "-n", &ns]),
            "configmap \"other\" deleted",
            "{k}"
        );
        assert_eq!(
            run(&server, k, &["delete", "cm", "-n", &ns, "-l", "app=web"]),
            "configmap \"app-config\" deleted",
            "{k}"
        );
        let file = server.dir.path().join(format!("{ns}.yaml"));
        std::fs::write(
            &file,
            MANIFEST.replace("NS", &ns).split("---").last().unwrap(),
        )
        .unwrap();
        let file = file.display().to_string();
        assert_eq!(
            run(&server, k, &["delete", "-f", file.as_str()]),
            "deployment.apps \"web\" deleted",
            "{k}"
        );
        let all = run(&server, k, &["delete", "cm", "--all", "-n", &ns]);
        assert_eq!(all, "configmap \"kube-root-ca.crt\" deleted", "{k}");
    }
}

fn apply_file_result(server: &Server, binary: &str, yaml: &str) -> String {
    let file = server
        .dir
        .path()
        .join(format!("again-{}.yaml", rand_suffix()));
    std::fs::write(&file, yaml).unwrap();
    let file = file.display().to_string();
    let args: Vec<&str> = ["create", "-f", file.as_str()].into_iter().collect();
    let out = server.kubectl(binary, &args);
    assert!(!out.ok, "creating existing objects must fail");
    out.stderr
}

#[test]
fn label_and_annotate_with_overwrite_and_removal() {
    let server = Server::start();
    for &k in KUBECTLS {
        let ns = ns_name(k, "labels");
        apply_file(&server, k, &MANIFEST.replace("NS", &ns), "create");
        // `kubectl VERB cm app-config -n NS EXTRA…`
        let cmd = |verb: &str, extra: &[&str]| -> Vec<String> {
            [verb, "cm", "app-config", "-n", ns.as_str()]
                .iter()
                .chain(extra)
                .map(|s| s.to_string())
                .collect()
        };
        let go = |args: Vec<String>| {
            server.kubectl(k, &args.iter().map(String::as_str).collect::<Vec<_>>())
        };
        let ok = |args: Vec<String>| {
            let out = go(args);
            assert!(out.ok, "{k}: {}", out.stderr);
            out.stdout
        };
        assert_eq!(
            ok(cmd("label", &["env=prod"])),
            "configmap/app-config labeled",
            "{k}"
        );
        let clash = go(cmd("label", &["env=dev"]));
        assert!(
            !clash.ok
                && clash
                    .stderr
                    .contains("'env' already has a value (prod), and --overwrite is false"),
            "{k}: {}",
            clash.stderr
        );
        ok(cmd("label", &["env=dev", "--overwrite"]));
        assert_eq!(
            ok(cmd("get", &["-o", "jsonpath={.metadata.labels.env}"])),
            "dev",
            "{k}"
        );
        assert_eq!(
            ok(cmd("label", &["env-"])),
            "configmap/app-config unlabeled",
            "{k}"
        );
        let labels = ok(cmd("get", &["-o", "jsonpath={.metadata.labels}"]));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&labels).unwrap(),
            serde_json::json!({"app": "web", "tier": "front"}),
            "{k}"
        );
        // kubectl 1.27 prints "annotate", later ones "annotated".
        let annotated = ok(cmd("annotate", &["note=hello"]));
        assert!(
            annotated.starts_with("configmap/app-config annotate"),
            "{k}: {annotated}"
        );
        ok(cmd("annotate", &["note=bye", "--overwrite"]));
        assert_eq!(
            ok(cmd("get", &["-o", "jsonpath={.metadata.annotations.note}"])),
            "bye",
            "{k}"
        );
        ok(cmd("annotate", &["note-"]));
        assert_eq!(
            ok(cmd("get", &["-o", "jsonpath={.metadata.annotations.note}"])),
            "",
            "{k}"
        );
    }
}

#[test]
fn deleting_a_namespace_removes_its_contents_and_wait_sees_it() {
    let server = Server::start();
    for &k in KUBECTLS {
        let ns = ns_name(k, "doomed");
        apply_file(&server, k, &MANIFEST.replace("NS", &ns), "create");
        assert_eq!(
            run(&server, k, &["delete", "ns", &ns, "--wait=false"]),
            format!("namespace \"{ns}\" deleted")
        );
        run(
            &server,
            k,
            &[
                "wait",
                "--for=delete",
                &format!("namespace/{ns}"),
                "--timeout=30s",
            ],
        );
        let gone = server.kubectl(k, &["get", "ns", &ns]);
        assert!(
            gone.stderr
                .contains(&format!("namespaces \"{ns}\" not found")),
            "{k}: {}",
            gone.stderr
        );
        // Recreating the namespace shows none of the old contents.
        apply_file(
            &server,
            k,
            MANIFEST.replace("NS", &ns).split("---").next().unwrap(),
            "create",
        );
        assert_eq!(
            run(&server, k, &["get", "cm,deploy", "-n", &ns, "-o", "name"]),
            "configmap/kube-root-ca.crt",
            "{k}"
        );
        let refused = server.kubectl(k, &["get", "cm", "-n", "no-such-namespace", "x"]);
        assert!(refused.stderr.contains("NotFound"), "{k}");
    }
}

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

#[test]
fn a_stale_update_gets_upstreams_conflict() {
    let server = Server::start();
    for &k in KUBECTLS {
        let ns = ns_name(k, "conflict");
        apply_file(&server, k, &MANIFEST.replace("NS", &ns), "create");
        let stale = run(
            &server,
            k,
            &["get", "cm", "app-config", "-n", &ns, "-o", "json"],
        );
        run(
            &server,
            k,
            &[
                "patch",
                "cm",
                "app-config",
                "-n",
                &ns,
                "--type=merge",
                "-p",
                r#"{"data":{"a":"changed"}}"#,
            ],
        );
        let file = server.dir.path().join(format!("stale-{ns}.json"));
        std::fs::write(&file, stale.replace("\"b\": \"2\"", "\"b\": \"3\"")).unwrap();
        let file = file.display().to_string();
        let args: Vec<&str> = ["replace", "-f", file.as_str()].into_iter().collect();
        let out = server.kubectl(k, &args);
        assert!(!out.ok, "{k}: a stale replace succeeded");
        assert!(
            out.stderr.contains("Error from server (Conflict): error when replacing")
                && out.stderr.contains("Operation cannot be fulfilled on configmaps \"app-config\": the object has been modified; please apply your changes to the latest version and try again"),
            "{k}: {}",
            out.stderr
        );
    }
}

#[test]
fn requests_without_the_admin_certificate_are_unauthorized() {
    let server = Server::start();
    let anonymous = server.dir.path().join("anonymous.kubeconfig");
    let ca = server.dir.path().join("ca.crt").display().to_string();
    let config = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{}\n    certificate-authority: {ca}\n\
         users:\n- name: nobody\n  user: {{token: not-a-valid-token}}\ncontexts:\n- name: c\n  context: {{cluster: c, user: nobody}}\ncurrent-context: c\n",
        server.port
    );
    std::fs::write(&anonymous, config).unwrap();
    for &k in KUBECTLS {
        let out = kubectl_with(k, &anonymous, &["get", "ns"]);
        assert!(
            !out.ok
                && out
                    .stderr
                    .contains("error: You must be logged in to the server"),
            "{k}: {}",
            out.stderr
        );
        // Health stays public, as upstream's system:public-info-viewer allows.
        let health = kubectl_with(k, &anonymous, &["get", "--raw", "/readyz?verbose"]);
        assert!(
            health.stdout.contains("[+]etcd ok") && health.stdout.ends_with("readyz check passed"),
            "{k}: {}{}",
            health.stdout,
            health.stderr
        );
    }
}

#[test]
fn versions_that_share_storage_are_converted() {
    let server = Server::start();
    for &k in KUBECTLS {
        let ns = ns_name(k, "versions");
        let objects = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n---\n\
             apiVersion: v1\nkind: Event\nmetadata:\n  name: started\n  namespace: {ns}\n\
             involvedObject: {{kind: Pod, name: web-1, namespace: {ns}}}\nreason: Started\nmessage: container started\ntype: Normal\n---\n\
             apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata:\n  name: web\n  namespace: {ns}\n\
             spec:\n  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: web}}\n  minReplicas: 1\n  maxReplicas: 4\n  metrics:\n  - type: Resource\n    resource: {{name: cpu, target: {{type: Utilization, averageUtilization: 60}}}}\n"
        );
        apply_file(&server, k, &objects, "create");
        let note = run(
            &server,
            k,
            &[
                "get",
                "events.v1.events.k8s.io",
                "started",
                "-n",
                &ns,
                "-o",
                "jsonpath={.note}/{.regarding.name}",
            ],
        );
        assert_eq!(note, "container started/web-1", "{k}");
        let v1 = run(
            &server,
            k,
            &[
                "get",
                "horizontalpodautoscalers.v1.autoscaling",
                "web",
                "-n",
                &ns,
                "-o",
                "jsonpath={.apiVersion}/{.spec.targetCPUUtilizationPercentage}",
            ],
        );
        assert_eq!(v1, "autoscaling/v1/60", "{k}");
        let v2 = run(
            &server,
            k,
            &[
                "get",
                "hpa",
                "web",
                "-n",
                &ns,
                "-o",
                "jsonpath={.apiVersion}/{.spec.metrics[0].resource.target.averageUtilization}",
            ],
        );
        assert_eq!(v2, "autoscaling/v2/60", "{k}");
    }
}

#[test]
fn explain_and_field_validation() {
    let server = Server::start();
    for &k in KUBECTLS {
        // kubectl 1.27 explains from /openapi/v2 definitions, which vkube does not serve yet.
        if k != "kubectl.1.27" {
            let explained = run(&server, k, &["explain", "deployment.spec.replicas"]);
            assert!(
                explained.contains("FIELD: replicas <integer>")
                    && explained.contains("Number of desired pods"),
                "{k}: {explained}"
            );
        }
        let ns = ns_name(k, "validation");
        apply_file(
            &server,
            k,
            &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"),
            "create",
        );
        let bad = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: typo\n  namespace: {ns}\ndata: {{a: b}}\ndatta: {{c: d}}\n"
        );
        let file = server.dir.path().join(format!("{ns}-bad.yaml"));
        std::fs::write(&file, bad).unwrap();
        let file = file.display().to_string();
        let strict = server.kubectl(k, &["create", "-f", &file]);
        assert!(
            !strict.ok && strict.stderr.contains("ConfigMap in version \"v1\" cannot be handled as a ConfigMap: strict decoding error: unknown field \"datta\""),
            "{k}: {}",
            strict.stderr
        );
        let warned = server.kubectl(k, &["create", "-f", &file, "--validate=warn"]);
        assert!(
            warned.ok && warned.stderr.contains("Warning: unknown field \"datta\""),
            "{k}: {}",
            warned.stderr
        );
        // A value of the wrong type is a decoding error, in every validation mode.
        let typo = format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: t\n  namespace: {ns}\nspec:\n  replicas: three\n  selector: {{matchLabels: {{a: b}}}}\n  template:\n    metadata: {{labels: {{a: b}}}}\n    spec:\n      containers: [{{name: c, image: nginx}}]\n"
        );
        let typo_file = server.dir.path().join(format!("{ns}-type.yaml"));
        std::fs::write(&typo_file, typo).unwrap();
        let wrong = server.kubectl(
            k,
            &[
                "create",
                "-f",
                &typo_file.display().to_string(),
                "--validate=false",
            ],
        );
        assert!(
            !wrong.ok && wrong.stderr.contains("json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32"),
            "{k}: {}",
            wrong.stderr
        );
        let dup = server.dir.path().join(format!("{ns}-dup.json"));
        std::fs::write(&dup, r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"dup"},"data":{"a":"1","a":"2"}}"#).unwrap();
        let dup = dup.display().to_string();
        let strict_dup = server.kubectl(
            k,
            &[
                "create",
                "--raw",
                &format!("/api/v1/namespaces/{ns}/configmaps?fieldValidation=Strict"),
                "-f",
                &dup,
            ],
        );
        assert!(
            !strict_dup.ok
                && strict_dup
                    .stderr
                    .contains("strict decoding error: duplicate field \"data.a\""),
            "{k}: {}",
            strict_dup.stderr
        );
        assert_eq!(
            run(
                &server,
                k,
                &[
                    "get",
                    "cm",
                    "typo",
                    "-n",
                    &ns,
                    "-o",
                    "jsonpath={.datta}{.data.a}"
                ]
            ),
            "b",
            "{k}: unknown fields are dropped"
        );
    }
}

#[test]
fn pages_and_body_limits() {
    let server = Server::start();
    for &k in KUBECTLS {
        let ns = ns_name(k, "pages");
        let mut yaml = format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n");
        for i in 0..5 {
            yaml.push_str(&format!("---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: s{i}\n  namespace: {ns}\nstringData: {{k: v}}\n"));
        }
        apply_file(&server, k, &yaml, "create");
        // kubectl pages with limit/continue; a small chunk size makes it follow the token.
        let names = run(
            &server,
            k,
            &["get", "secrets", "-n", &ns, "--chunk-size=2", "-o", "name"],
        );
        assert_eq!(names.lines().count(), 5, "{k}: {names}");
        let page: serde_json::Value = serde_json::from_str(&run(
            &server,
            k,
            &[
                "get",
                "--raw",
                &format!("/api/v1/namespaces/{ns}/secrets?limit=2"),
            ],
        ))
        .unwrap();
        let token = page["metadata"]["continue"]
            .as_str()
            .expect("a continue token")
            .to_string();
        assert_eq!(page["items"].as_array().unwrap().len(), 2, "{k}");
        let rest: serde_json::Value = serde_json::from_str(&run(
            &server,
            k,
            &[
                "get",
                "--raw",
                &format!("/api/v1/namespaces/{ns}/secrets?limit=10&continue={token}"),
            ],
        ))
        .unwrap();
        let rest_names: Vec<_> = rest["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(rest_names, ["s2", "s3", "s4"], "{k}");
        assert!(rest["metadata"].get("continue").is_none(), "{k}");
        // Bodies over 3 MiB get 413.
        let big = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big\n  namespace: {ns}\ndata:\n  blob: {}\n",
            "x".repeat(3 * 1024 * 1024 + 10)
        );
        let file = server.dir.path().join(format!("{ns}-big.yaml"));
        std::fs::write(&file, big).unwrap();
        let out = server.kubectl(k, &["create", "-f", &file.display().to_string()]);
        assert!(
            !out.ok
                && out
                    .stderr
                    .contains("Request entity too large: limit is 3145728"),
            "{k}: {}",
            out.stderr
        );
    }
}

/// Two processes on one store share one cluster identity (DESIGN.md rule 5): each one's admin
/// kubeconfig works against the other, and each sees what the other wrote. (SQLite serves several
/// processes on one file; production HA will require etcd or PostgreSQL.)
#[test]
fn processes_on_one_store_share_the_cluster_identity() {
    let shared = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", shared.path().join("state.db").display());
    let a = Server::start_with(&["--store", &store]);
    let b = Server::start_with(&["--store", &store]);
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
