//! Moving a virtual cluster between stores (issue 21): `vkube store migrate` from SQLite to etcd
//! and to PostgreSQL, `vkube snapshot create|restore`. After the move every object is the same
//! apart from its resourceVersion, and the old admin kubeconfig and an old service-account
//! token still work, because the identity travels sealed and the cluster secret opens it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

pub(crate) const NS: &str = "moving";

/// Objects of every kind the move must keep, each labelled `e2e=migrate`, and `extra`
/// ConfigMaps more to make the copy long.
fn objects(extra: usize) -> String {
    let mut yaml = format!(
        "apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: widgets.example.com, labels: {{e2e: migrate}}}}
spec:
  group: example.com
  scope: Namespaced
  names: {{plural: widgets, singular: widget, kind: Widget}}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {{type: object, x-kubernetes-preserve-unknown-fields: true}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: settings, namespace: {NS}, labels: {{e2e: migrate}}}}
data: {{mode: fast, greeting: 'naïve ☃'}}
---
apiVersion: v1
kind: Secret
metadata: {{name: password, namespace: {NS}, labels: {{e2e: migrate}}}}
stringData: {{password: hunter2}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: robot, namespace: {NS}, labels: {{e2e: migrate}}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: read-configmaps, namespace: {NS}, labels: {{e2e: migrate}}}}
rules: [{{apiGroups: [''], resources: [configmaps], verbs: [get, list]}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: robot-reads, namespace: {NS}, labels: {{e2e: migrate}}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: read-configmaps}}
subjects: [{{kind: ServiceAccount, name: robot, namespace: {NS}}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: migrate-watcher, labels: {{e2e: migrate}}}}
rules: [{{apiGroups: [''], resources: [pods], verbs: [watch]}}]
"
    );
    for i in 0..extra {
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: bulk-{i}, namespace: {NS}, labels: {{e2e: migrate}}}}\ndata: {{n: '{i}'}}\n"
        ));
    }
    yaml
}

/// A cluster on SQLite (served with `flags`) holding [`objects`], two Widgets and a token of
/// `robot`.
pub(crate) fn populated(extra: usize, flags: &[&str]) -> (Server, String) {
    let server = Server::start_with(flags);
    apply_file(&server, "kubectl", &objects(extra), "apply");
    let deadline = Instant::now() + Duration::from_secs(20);
    let widgets = format!(
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {{name: w1, namespace: {NS}, labels: {{e2e: migrate}}}}\nspec: {{size: 3}}\n---\napiVersion: example.com/v1\nkind: Widget\nmetadata: {{name: w2, namespace: {NS}, labels: {{e2e: migrate}}}}\nspec: {{size: 5}}\n"
    );
    while !server.kubectl("kubectl", &["get", "widgets", "-n", NS]).ok {
        assert!(Instant::now() < deadline, "the CRD is not served");
        std::thread::sleep(Duration::from_millis(100));
    }
    apply_file(&server, "kubectl", &widgets, "apply");
    let token = run(
        &server,
        "kubectl",
        &["create", "token", "robot", "-n", NS, "--duration=1h"],
    );
    (server, token)
}

/// What must survive: the labelled objects, without resourceVersions.
pub(crate) fn snapshot_of(kubeconfig: &Path) -> serde_json::Value {
    let get = |args: &[&str]| -> serde_json::Value {
        let out = kubectl_with("kubectl", kubeconfig, args);
        assert!(out.ok, "kubectl {}: {}", args.join(" "), out.stderr);
        let mut list: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        let items = list["items"].as_array_mut().unwrap();
        for item in items.iter_mut() {
            item["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("resourceVersion");
        }
        list["items"].take()
    };
    serde_json::json!({
        "namespaced": get(&[
            "get",
            "configmaps,secrets,serviceaccounts,roles,rolebindings,widgets",
            "-n", NS, "-l", "e2e=migrate", "-o", "json",
        ]),
        "cluster": get(&["get", "crd,clusterroles", "-l", "e2e=migrate", "-o", "json"]),
    })
}

/// Stops `server` as an operator would (SIGTERM), keeping its data dir.
pub(crate) fn stop(server: &mut Server) {
    let _ = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "vkube serve did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn vkube(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_vkube"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

/// `vkube store migrate --from FROM --to TO [--force]`.
pub(crate) fn migrate(from: &str, to: &str, force: bool) -> Output {
    let mut args = vec!["store", "migrate", "--from", from, "--to", to];
    args.extend(force.then_some("--force"));
    vkube(&args)
}

/// A finished migration's output.
pub(crate) fn assert_migrated(out: &Output, what: &str) {
    assert!(out.ok, "{what}: {}", out.stderr);
    assert!(
        out.stdout.contains("migrated and verified"),
        "{what}: {}",
        out.stdout
    );
}

pub(crate) fn sqlite_of(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("state.db").display())
}

/// Serves `store` with the old cluster's secret and checks that it is the same cluster: the
/// same objects, the old admin kubeconfig, the old token.
fn serves_the_same_cluster(
    store: &str,
    old_dir: &Path,
    old_port: u16,
    before: &serde_json::Value,
    token: &str,
) -> Server {
    let secret = old_dir.join("identity-secret").display().to_string();
    let server = Server::start_with(&["--store", store, "--identity-secret-file", &secret]);
    is_the_same_cluster(&server, store, old_dir, old_port, before, token);
    server
}

/// `server` serves the cluster that was at `old_dir` and `old_port`: the same objects, and the
/// old admin kubeconfig and `token` work.
pub(crate) fn is_the_same_cluster(
    server: &Server,
    store: &str,
    old_dir: &Path,
    old_port: u16,
    before: &serde_json::Value,
    token: &str,
) {
    assert_eq!(
        &snapshot_of(&server.kubeconfig()),
        before,
        "objects after the move to {store}"
    );
    // The old admin kubeconfig, pointed at the new address.
    let old = std::fs::read_to_string(old_dir.join("admin.kubeconfig")).unwrap();
    let moved = old.replace(
        &format!("127.0.0.1:{old_port}"),
        &format!("127.0.0.1:{}", server.port),
    );
    assert_ne!(old, moved, "the kubeconfig names 127.0.0.1:{old_port}");
    let path = server.dir.path().join("old-admin.kubeconfig");
    std::fs::write(&path, moved).unwrap();
    let out = kubectl_with(
        "kubectl",
        &path,
        &["get", "configmap", "settings", "-n", NS, "-o", "name"],
    );
    assert!(
        out.ok && out.stdout == "configmap/settings",
        "old kubeconfig: {}",
        out.stderr
    );
    // The token issued before the move, with the new server's CA from the same identity.
    let out = as_token(
        server,
        token,
        &[
            "get",
            "configmaps",
            "-n",
            NS,
            "-l",
            "e2e=migrate",
            "-o",
            "name",
        ],
    );
    assert!(
        out.ok && out.stdout.contains("configmap/settings"),
        "old token: {}",
        out.stderr
    );
}

/// kubectl on `server` with nothing but `token`.
fn as_token(server: &Server, token: &str, args: &[&str]) -> Output {
    let url = format!("https://127.0.0.1:{}", server.port);
    let ca = server.dir.path().join("ca.crt").display().to_string();
    let mut all = vec![
        "--server",
        &url,
        "--certificate-authority",
        &ca,
        "--token",
        token,
    ];
    all.extend(args);
    kubectl_with("kubectl", Path::new("/dev/null"), &all)
}

/// A Role and RoleBinding that let `robot` read Secrets.
const GRANT: &str = "apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: read-secrets, namespace: moving}
rules: [{apiGroups: [''], resources: [secrets], verbs: [list]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: robot-reads-secrets, namespace: moving}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: read-secrets}
subjects: [{kind: ServiceAccount, name: robot, namespace: moving}]
";

#[test]
fn a_cluster_on_sqlite_moves_to_etcd_and_to_postgres_with_its_identity() {
    let (mut server, token) = populated(20, &[]);
    let before = snapshot_of(&server.kubeconfig());
    let (old_dir, old_port) = (server.dir.path().to_path_buf(), server.port);
    let etcd = format!(
        "etcd://{}?prefix=/migrate-{}",
        crate::servers::etcd_endpoints(),
        std::process::id()
    );
    let out = migrate(&sqlite_of(&old_dir), &etcd, false);
    assert!(
        !out.ok
            && out.stderr.contains("a vkube serve is serving")
            && out.stderr.contains("stop it first"),
        "a migration of a served store: {}",
        out.stderr
    );
    stop(&mut server);
    assert_migrated(&migrate(&sqlite_of(&old_dir), &etcd, false), "to etcd");
    // Three replicas on the result, each the same cluster.
    let secret = old_dir.join("identity-secret").display().to_string();
    let replicas: Vec<Server> = (0..3)
        .map(|i| {
            let id = i.to_string();
            Server::start_with(&[
                "--store",
                &etcd,
                "--replicas",
                "3",
                "--replica-id",
                &id,
                "--identity-secret-file",
                &secret,
            ])
        })
        .collect();
    for replica in &replicas {
        is_the_same_cluster(replica, &etcd, &old_dir, old_port, &before, &token);
    }
    // The seed scenario on the moved cluster: a grant made through one replica is honoured by
    // every replica at once, for a token issued before the move.
    apply_file(&replicas[0], "kubectl", GRANT, "apply");
    for (i, replica) in replicas.iter().enumerate() {
        let out = as_token(replica, &token, &["get", "secrets", "-n", NS, "-o", "name"]);
        assert!(
            out.ok && out.stdout.contains("secret/password"),
            "replica {i}: {}",
            out.stderr
        );
    }
    // Served now: a migration out of it names a replica.
    let elsewhere = format!(
        "sqlite://{}",
        replicas[0].dir.path().join("elsewhere.db").display()
    );
    let out = migrate(&etcd, &elsewhere, false);
    assert!(
        !out.ok && out.stderr.contains("is being served by replica vkube-"),
        "{}",
        out.stderr
    );
    // Nor is it written over while served.
    let out = migrate(&sqlite_of(&old_dir), &etcd, false);
    assert!(
        !out.ok && out.stderr.contains("is being served"),
        "{}",
        out.stderr
    );
    drop(replicas);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let postgres = rt.block_on(crate::servers::postgres_database(&format!(
        "migrate{}",
        std::process::id()
    )));
    assert_migrated(
        &migrate(&sqlite_of(&old_dir), &postgres, false),
        "to PostgreSQL",
    );
    let out = migrate(&sqlite_of(&old_dir), &postgres, false);
    assert!(
        !out.ok && out.stderr.contains("not empty") && out.stderr.contains("--force"),
        "{}",
        out.stderr
    );
    assert_migrated(&migrate(&sqlite_of(&old_dir), &postgres, true), "--force");
    drop(serves_the_same_cluster(
        &postgres, &old_dir, old_port, &before, &token,
    ));
    drop(server);
}

/// The number of keys in `store`, as `vkube store status` counts them.
fn keys_in(store: &str) -> usize {
    let out = vkube(&["store", "status", "--store", store]);
    assert!(out.ok, "{}", out.stderr);
    let line = out.stdout.lines().find(|l| l.starts_with("keys:")).unwrap();
    line["keys:".len()..].trim().parse().unwrap()
}

#[test]
fn a_migration_killed_halfway_completes_when_run_again() {
    let (mut server, token) = populated(300, &[]);
    let before = snapshot_of(&server.kubeconfig());
    let (old_dir, old_port) = (server.dir.path().to_path_buf(), server.port);
    stop(&mut server);
    let dest_dir = tempfile::tempdir().unwrap();
    let dest = sqlite_of(dest_dir.path());
    let mut copy = Command::new(env!("CARGO_BIN_EXE_vkube"))
        .args([
            "store",
            "migrate",
            "--from",
            &sqlite_of(&old_dir),
            "--to",
            &dest,
        ])
        .env("VKUBE_COPY_PAUSE_MS", "10")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    watch_parent(copy.id());
    // Killed once a hundred keys are there.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !dest_dir.path().join("state.db").exists() || keys_in(&dest) < 100 {
        assert!(Instant::now() < deadline, "the copy did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    copy.kill().unwrap();
    copy.wait().unwrap();
    let halfway = keys_in(&dest);
    let total = keys_in(&sqlite_of(&old_dir));
    assert!(
        halfway < total,
        "the copy finished before the kill ({halfway} of {total})"
    );
    // A half-written store is not served.
    let child = Command::new(env!("CARGO_BIN_EXE_vkube"))
        .args([
            "serve",
            "--store",
            &dest,
            "--data-dir",
            &dest_dir.path().display().to_string(),
        ])
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let refused = expect_refused(child, 20);
    assert!(refused.contains("unfinished copy"), "{refused}");
    let out = migrate(&sqlite_of(&old_dir), &dest, false);
    assert_migrated(&out, "the rerun");
    assert!(
        out.stderr.contains("resuming an interrupted copy"),
        "{}",
        out.stderr
    );
    drop(serves_the_same_cluster(
        &dest, &old_dir, old_port, &before, &token,
    ));
}

#[test]
fn a_snapshot_restores_the_cluster_and_a_damaged_one_writes_nothing() {
    let (mut server, token) = populated(20, &[]);
    let before = snapshot_of(&server.kubeconfig());
    let (old_dir, old_port) = (server.dir.path().to_path_buf(), server.port);
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("cluster.snap");
    let config = work.path().join("vcluster.yaml");
    std::fs::write(
        &config,
        "controlPlane:\n  backingStore:\n    database:\n      embedded:\n        enabled: true\n",
    )
    .unwrap();
    // Taken while the cluster serves.
    let out = vkube(&[
        "snapshot",
        "create",
        &file.display().to_string(),
        "--store",
        &sqlite_of(&old_dir),
        "--config",
        &config.display().to_string(),
    ]);
    assert!(
        out.ok && out.stdout.contains("keys at revision"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    stop(&mut server);

    let restored = work.path().join("restored");
    let config_out = work.path().join("restored-vcluster.yaml");
    let store = sqlite_of(&restored);
    let out = vkube(&[
        "snapshot",
        "restore",
        &file.display().to_string(),
        "--store",
        &store,
        "--config-out",
        &config_out.display().to_string(),
    ]);
    assert!(
        out.ok && out.stdout.contains("restored and verified"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    assert_eq!(
        std::fs::read(&config_out).unwrap(),
        std::fs::read(&config).unwrap()
    );
    let out = vkube(&[
        "snapshot",
        "restore",
        &file.display().to_string(),
        "--store",
        &store,
    ]);
    assert!(
        !out.ok && out.stderr.contains("not empty"),
        "{}",
        out.stderr
    );
    drop(serves_the_same_cluster(
        &store, &old_dir, old_port, &before, &token,
    ));

    // One byte changed in the middle, or the file cut short: refused, nothing written.
    let good = std::fs::read(&file).unwrap();
    let mut bad = good.clone();
    bad[good.len() / 2] ^= 0x01;
    for (name, bytes) in [
        ("flipped", bad),
        ("truncated", good[..good.len() - 100].to_vec()),
    ] {
        let damaged: PathBuf = work.path().join(format!("{name}.snap"));
        std::fs::write(&damaged, bytes).unwrap();
        let target = work.path().join(format!("{name}-target"));
        let out = vkube(&[
            "snapshot",
            "restore",
            &damaged.display().to_string(),
            "--store",
            &sqlite_of(&target),
        ]);
        assert!(
            !out.ok
                && out.stderr.contains("is not a whole vkube snapshot")
                && out.stderr.contains("nothing was written"),
            "{name}: {}",
            out.stderr
        );
        assert!(
            !target.exists(),
            "{name}: the restore created {}",
            target.display()
        );
    }
    drop(server);
}

/// `vkube serve --etcd-embedded` on `dir`, with its member at `peer` and `client`, once ready.
fn serve_embedded(dir: tempfile::TempDir, peer: &str, client: &str, secret: &Path) -> Server {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_vkube"))
        .args(["serve", "--etcd-embedded", "--data-dir"])
        .arg(dir.path())
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--etcd-peers", peer, "--etcd-clients", client])
        .arg("--identity-secret-file")
        .arg(secret)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    watch_parent(child.id());
    let server = Server { child, port, dir };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !server.dir.path().join("admin.kubeconfig").exists()
        || server
            .kubectl("kubectl", &["get", "--raw", "/readyz"])
            .stdout
            != "ok"
    {
        assert!(
            Instant::now() < deadline,
            "vkube serve --etcd-embedded is not ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}

/// The #1910 way out: a single replica on SQLite moves to embedded etcd in its own data dir,
/// serves there, and moves out of it again.
#[test]
fn a_cluster_on_sqlite_moves_to_embedded_etcd_and_back() {
    let (mut server, token) = populated(20, &[]);
    let before = snapshot_of(&server.kubeconfig());
    let (old_dir, old_port) = (server.dir.path().to_path_buf(), server.port);
    stop(&mut server);
    let new_dir = tempfile::tempdir().unwrap();
    let (peer, client) = (
        format!("http://127.0.0.1:{}", free_port()),
        format!("http://127.0.0.1:{}", free_port()),
    );
    let embedded = format!(
        "etcd-dir://{}?peer={peer}&client={client}",
        new_dir.path().display()
    );
    assert_migrated(
        &migrate(&sqlite_of(&old_dir), &embedded, false),
        "to embedded etcd",
    );
    let secret = old_dir.join("identity-secret");
    let mut on_etcd = serve_embedded(new_dir, &peer, &client, &secret);
    is_the_same_cluster(&on_etcd, &embedded, &old_dir, old_port, &before, &token);
    let out = migrate(&embedded, &sqlite_of(&old_dir.join("back")), false);
    assert!(
        !out.ok && out.stderr.contains("already listens"),
        "a served embedded etcd: {}",
        out.stderr
    );
    stop(&mut on_etcd);
    let back = old_dir.join("back");
    assert_migrated(
        &migrate(&embedded, &sqlite_of(&back), false),
        "out of embedded etcd",
    );
    drop(serves_the_same_cluster(
        &sqlite_of(&back),
        &old_dir,
        old_port,
        &before,
        &token,
    ));
    drop((on_etcd, server));
}
