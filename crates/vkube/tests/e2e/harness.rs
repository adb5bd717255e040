//! Starting `vkube serve` and running kubectl against it.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `vkube serve`, stopped (SIGKILL) when dropped.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) port: u16,
    pub(crate) dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills `child` once this test process is gone: a test process killed mid-run (or the harness
/// exiting without running destructors) must not leave servers behind.
pub(crate) fn watch_parent(child: u32) {
    let script = format!(
        "while kill -0 {parent} 2>/dev/null && kill -0 {child} 2>/dev/null; do sleep 1; done; kill {child} 2>/dev/null",
        parent = std::process::id()
    );
    let _ = Command::new("sh")
        .args(["-c", &format!("({script}) &")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A cluster secret file (`--identity-secret-file`) for every test in this process that runs
/// several `vkube serve` on one store: replicas must share it, as a StatefulSet's Secret.
pub(crate) fn shared_secret() -> String {
    static FILE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("vkube-e2e-secret-{}", std::process::id()));
        std::fs::write(
            &path,
            format!("e2e cluster secret {:032x}\n", rand_suffix()),
        )
        .unwrap();
        path
    })
    .display()
    .to_string()
}

/// Waits for a `vkube serve` expected to refuse to start (its stderr piped) and returns its
/// stderr; one still running after `secs` is serving, which fails the test.
pub(crate) fn expect_refused(mut child: std::process::Child, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let refused = child.try_wait().unwrap().is_some_and(|s| !s.success());
    if !refused {
        child.kill().ok();
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(refused, "it started: {stderr}");
    stderr
}

/// Replica `i` of three on `store`.
pub(crate) fn replica_flags(store: &str, i: usize) -> Vec<String> {
    [
        "--store",
        store,
        "--replicas",
        "3",
        "--replica-id",
        &i.to_string(),
        "--identity-secret-file",
        &shared_secret(),
    ]
    .map(str::to_string)
    .to_vec()
}

/// `flags` as `Server::start_with` takes them.
pub(crate) fn strs(flags: &[String]) -> Vec<&str> {
    flags.iter().map(String::as_str).collect()
}

impl Server {
    pub(crate) fn start() -> Server {
        Server::start_with(&[])
    }

    pub(crate) fn start_with(extra: &[&str]) -> Server {
        Server::start_until(extra, "/readyz")
    }

    /// Starts a server and waits until `check` (`/readyz`, or `/livez` for one expected to be
    /// unready) answers ok.
    pub(crate) fn start_until(extra: &[&str], check: &str) -> Server {
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
        watch_parent(child.id());
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
            let out = server.kubectl("kubectl", &["get", "--raw", check]);
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

    pub(crate) fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("admin.kubeconfig")
    }

    pub(crate) fn kubectl(&self, binary: &str, args: &[&str]) -> Output {
        kubectl_with(binary, &self.kubeconfig(), args)
    }
}

pub(crate) struct Output {
    pub(crate) ok: bool,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

pub(crate) fn kubectl_path(binary: &str) -> PathBuf {
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

pub(crate) fn kubectl_with(binary: &str, kubeconfig: &Path, args: &[&str]) -> Output {
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

pub(crate) const KUBECTLS: &[&str] = &["kubectl", "kubectl.1.27", "kubectl.1.33"];

/// Runs kubectl and returns stdout, failing the test with stderr when it fails.
pub(crate) fn run(server: &Server, binary: &str, args: &[&str]) -> String {
    let out = server.kubectl(binary, args);
    assert!(out.ok, "{binary} {}: {}", args.join(" "), out.stderr);
    out.stdout
}

pub(crate) fn apply_file(server: &Server, binary: &str, yaml: &str, verb: &str) -> String {
    let file = server
        .dir
        .path()
        .join(format!("input-{}.yaml", rand_suffix()));
    std::fs::write(&file, yaml).unwrap();
    let file = file.display().to_string();
    let args: Vec<&str> = [verb, "-f", file.as_str()].into_iter().collect();
    run(server, binary, &args)
}

pub(crate) fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

pub(crate) fn ns_name(binary: &str, what: &str) -> String {
    format!(
        "{what}-{}",
        binary.replace('.', "-").replace("kubectl", "k")
    )
}

/// cluster-info colours its output.
pub(crate) fn strip_ansi(s: &str) -> String {
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

pub(crate) fn lines(s: &str) -> Vec<Vec<String>> {
    s.lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

pub(crate) const MANIFEST: &str = "apiVersion: v1
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

pub(crate) fn apply_file_result(server: &Server, binary: &str, yaml: &str) -> String {
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

/// What a kubelet writes for a started pod: Running and Ready (the controllers' tests play it).
pub(crate) const POD_READY: &str =
    r#"{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}}"#;

/// Writes `patch` (a merge patch) to `pod`'s status as a kubelet would; `pod` is a name or
/// `pod/NAME`.
pub(crate) fn patch_pod_status(server: &Server, ns: &str, pod: &str, patch: &str) -> String {
    let pod = pod.strip_prefix("pod/").unwrap_or(pod);
    run(
        server,
        "kubectl",
        &[
            "patch",
            "pod",
            pod,
            "-n",
            ns,
            "--subresource=status",
            "--type=merge",
            "-p",
            patch,
        ],
    )
}

/// Seconds since the epoch as RFC 3339 in UTC, as the API writes times.
pub(crate) fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .expect("a time in range")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("RFC 3339")
}
