//! Issue 21's proof at scale: a cluster on SQLite with 10,000 objects (CRDs and custom objects,
//! RBAC, Secrets, ServiceAccounts, a token issued before the move, OIDC users bound by
//! RoleBindings) moves to etcd and to PostgreSQL, and three replicas serve each result. Every
//! object is equal apart from its resourceVersion, and the seed scenario of vcluster #1910 (one
//! replica denying an OIDC user the others allow) gives no denial. Also: a snapshot taken under a
//! write load restores to exactly the objects of its revision.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::*;
use crate::migrate::{
    NS, assert_migrated, migrate, populated, snapshot_of, sqlite_of, stop, vkube,
};

/// Objects beyond [`populated`]'s, each labelled `e2e=migrate`: 10,000 in all.
const ROLES: usize = 1000;
const BINDINGS: usize = 1000;
const ACCOUNTS: usize = 1000;
const SECRETS: usize = 2000;
const WIDGETS: usize = 1000;
const CONFIGMAPS: usize = 4000;

/// The OIDC flags every server of this file runs with.
fn oidc_flags(idp: &vkube_auth::testing::TestIdp, dir: &Path) -> Vec<String> {
    let ca = dir.join("idp-ca.pem");
    std::fs::write(&ca, &idp.ca_pem).unwrap();
    vec![
        format!("--oidc-issuer-url={}", idp.issuer),
        "--oidc-client-id=vkube".into(),
        "--oidc-username-claim=email".into(),
        "--oidc-groups-claim=groups".into(),
        "--oidc-groups-prefix=oidc:".into(),
        format!("--oidc-ca-file={}", ca.display()),
    ]
}

fn oidc_token(idp: &vkube_auth::testing::TestIdp, email: &str) -> String {
    let mut claims = idp.claims("vkube");
    claims["email"] = email.into();
    claims["email_verified"] = true.into();
    claims["groups"] = json!(["tenants"]);
    idp.mint("RS256", &claims)
}

/// The bulk objects, as four YAML streams that four kubectl processes create side by side.
fn bulk() -> Vec<String> {
    let label = "labels: {e2e: migrate}";
    let mut docs = Vec::new();
    for i in 0..ROLES {
        docs.push(format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: role-{i}, namespace: {NS}, {label}}}\nrules: [{{apiGroups: [''], resources: [configmaps], resourceNames: [cm-{i}], verbs: [get]}}]\n"
        ));
    }
    // user-I may list ConfigMaps: the check of the seed scenario.
    for i in 0..BINDINGS {
        docs.push(format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: user-{i}, namespace: {NS}, {label}}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: read-configmaps}}\nsubjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: user-{i}@example.com}}]\n"
        ));
    }
    for i in 0..ACCOUNTS {
        docs.push(format!(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: sa-{i}, namespace: {NS}, {label}}}\n"
        ));
    }
    for i in 0..SECRETS {
        docs.push(format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: secret-{i}, namespace: {NS}, {label}}}\nstringData: {{value: 'secret number {i}'}}\n"
        ));
    }
    for i in 0..WIDGETS {
        docs.push(format!(
            "apiVersion: example.com/v1\nkind: Widget\nmetadata: {{name: widget-{i}, namespace: {NS}, {label}}}\nspec: {{size: {i}}}\n"
        ));
    }
    for i in 0..CONFIGMAPS {
        docs.push(format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm-{i}, namespace: {NS}, {label}}}\ndata: {{n: '{i}'}}\n"
        ));
    }
    let mut streams = vec![String::new(); 4];
    for (i, doc) in docs.into_iter().enumerate() {
        let stream = &mut streams[i % 4];
        stream.push_str("---\n");
        stream.push_str(&doc);
    }
    streams
}

/// Creates the bulk objects with four kubectl processes at once.
fn create_bulk(server: &Server) {
    let started = Instant::now();
    thread::scope(|s| {
        for (i, yaml) in bulk().into_iter().enumerate() {
            let file = server.dir.path().join(format!("bulk-{i}.yaml"));
            std::fs::write(&file, yaml).unwrap();
            s.spawn(move || {
                let out = server.kubectl("kubectl", &["create", "-f", &file.display().to_string()]);
                assert!(out.ok, "bulk {i}: {}", out.stderr);
            });
        }
    });
    eprintln!("10,000 objects created in {:?}", started.elapsed());
}

fn count(snapshot: &Value) -> usize {
    snapshot["namespaced"].as_array().unwrap().len() + snapshot["cluster"].as_array().unwrap().len()
}

/// GET as a bearer token on `server`: the HTTP status code.
fn status_as(server: &Server, token: &str, path: &str) -> u16 {
    let config = crate::auth::token_kubeconfig(server, &format!("t{}", rand_suffix()), token);
    let out = kubectl_with("kubectl", &config, &["get", "--raw", path]);
    if out.ok {
        return 200;
    }
    // kubectl names the status: "Error from server (Forbidden)" and so on.
    match () {
        _ if out.stderr.contains("(Forbidden)") => 403,
        _ if out.stderr.contains("Unauthorized") => 401,
        _ => panic!("GET {path}: {}", out.stderr),
    }
}

/// The seed scenario on three replicas: users bound before the move are allowed by every
/// replica; a binding made through one replica is honoured by the others at once; a user with
/// no binding is refused by all. Returns the denials of allowed requests (must be 0).
fn denials(replicas: &[Server], idp: &vkube_auth::testing::TestIdp, round: &str) -> usize {
    let list = format!("/api/v1/namespaces/{NS}/configmaps?limit=1");
    let mut denied = 0;
    let mut checks = 0;
    for i in (0..BINDINGS).step_by(BINDINGS / 10) {
        let token = oidc_token(idp, &format!("user-{i}@example.com"));
        for replica in replicas {
            checks += 1;
            denied += usize::from(status_as(replica, &token, &list) != 200);
        }
    }
    for i in 0..6 {
        let user = format!("fresh-{round}-{i}@example.com");
        let writer = &replicas[i % replicas.len()];
        run(
            writer,
            "kubectl",
            &[
                "create",
                "rolebinding",
                &format!("fresh-{round}-{i}"),
                "-n",
                NS,
                "--role=read-configmaps",
                &format!("--user={user}"),
            ],
        );
        let token = oidc_token(idp, &user);
        for replica in replicas {
            checks += 1;
            denied += usize::from(status_as(replica, &token, &list) != 200);
        }
    }
    let stranger = oidc_token(idp, "stranger@example.com");
    for replica in replicas {
        assert_eq!(
            status_as(replica, &stranger, &list),
            403,
            "a user with no binding is refused"
        );
    }
    eprintln!("{round}: {checks} allowed requests checked, {denied} denied");
    denied
}

fn three_replicas(store: &str, secret: &str, oidc: &[String]) -> Vec<Server> {
    (0..3)
        .map(|i| {
            let id = i.to_string();
            let mut flags = vec![
                "--store",
                store,
                "--replicas",
                "3",
                "--replica-id",
                &id,
                "--identity-secret-file",
                secret,
            ];
            flags.extend(oidc.iter().map(String::as_str));
            Server::start_with(&flags)
        })
        .collect()
}

#[test]
fn ten_thousand_objects_move_to_etcd_and_postgres_and_oidc_users_are_never_denied() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let idp = rt.block_on(vkube_auth::testing::TestIdp::start(""));
    let work = tempfile::tempdir().unwrap();
    let oidc = oidc_flags(&idp, work.path());
    let (mut server, token) = populated(0, &strs(&oidc));
    create_bulk(&server);
    let before = snapshot_of(&server.kubeconfig());
    assert!(count(&before) >= 10_000, "{} objects", count(&before));
    // Allowed before the move, as a control.
    assert_eq!(
        status_as(
            &server,
            &oidc_token(&idp, "user-7@example.com"),
            &format!("/api/v1/namespaces/{NS}/configmaps?limit=1")
        ),
        200
    );
    let (old_dir, old_port) = (server.dir.path().to_path_buf(), server.port);
    stop(&mut server);
    let secret = old_dir.join("identity-secret").display().to_string();

    let etcd = format!(
        "etcd://{}?prefix=/migrate-scale-{}",
        crate::servers::etcd_endpoints(),
        std::process::id()
    );
    let postgres = rt.block_on(crate::servers::postgres_database(&format!(
        "migratescale{}",
        std::process::id()
    )));
    for (name, store) in [("etcd", &etcd), ("postgres", &postgres)] {
        let started = Instant::now();
        assert_migrated(&migrate(&sqlite_of(&old_dir), store, false), name);
        eprintln!("migrated to {name} in {:?}", started.elapsed());
        let replicas = three_replicas(store, &secret, &oidc);
        for replica in &replicas {
            crate::migrate::is_the_same_cluster(
                replica, store, &old_dir, old_port, &before, &token,
            );
        }
        assert_eq!(denials(&replicas, &idp, name), 0, "denials on {name}");
    }
}

/// A snapshot taken while a writer keeps changing ConfigMaps holds exactly the objects of the
/// revision it names: the restored cluster lists what the source listed at that revision.
#[test]
fn a_snapshot_under_write_load_restores_exactly_its_revision() {
    let (mut server, _token) = populated(200, &[]);
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("busy.snap");
    let stop_writing = std::sync::atomic::AtomicBool::new(false);
    let snapshot_out = thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut writes = 0;
            while !stop_writing.load(std::sync::atomic::Ordering::Relaxed) {
                let i = writes % 200;
                let out = server.kubectl(
                    "kubectl",
                    &[
                        "patch",
                        "configmap",
                        &format!("bulk-{i}"),
                        "-n",
                        NS,
                        "--type=merge",
                        "-p",
                        &format!("{{\"data\":{{\"w\":\"{writes}\"}}}}"),
                    ],
                );
                assert!(out.ok, "{}", out.stderr);
                writes += 1;
            }
            writes
        });
        // Let the load start, then snapshot in the middle of it.
        thread::sleep(Duration::from_millis(1500));
        let out = vkube(&[
            "snapshot",
            "create",
            &file.display().to_string(),
            "--store",
            &sqlite_of(server.dir.path()),
        ]);
        thread::sleep(Duration::from_millis(1500));
        stop_writing.store(true, std::sync::atomic::Ordering::Relaxed);
        let writes = writer.join().unwrap();
        assert!(writes >= 4, "the writer made {writes} writes");
        out
    });
    assert!(snapshot_out.ok, "{}", snapshot_out.stderr);
    // "N keys at revision R": the revision the snapshot names.
    let revision: String = snapshot_out
        .stdout
        .split("at revision ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .unwrap_or_else(|| panic!("no revision in {}", snapshot_out.stdout))
        .to_string();
    // What the source served at that revision (an Exact list, from its history).
    let data_at = |server: &Server, rv: Option<&str>| -> Vec<(String, Value)> {
        let mut path = format!("/api/v1/namespaces/{NS}/configmaps?labelSelector=e2e%3Dmigrate");
        if let Some(rv) = rv {
            path.push_str(&format!("&resourceVersion={rv}&resourceVersionMatch=Exact"));
        }
        let list: Value =
            serde_json::from_str(&run(server, "kubectl", &["get", "--raw", &path])).unwrap();
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|cm| {
                (
                    cm["metadata"]["name"].as_str().unwrap().to_string(),
                    cm["data"].clone(),
                )
            })
            .collect()
    };
    let at_revision = data_at(&server, Some(&revision));
    let now = data_at(&server, None);
    assert_ne!(at_revision, now, "the load went on after the snapshot");
    let secret = server
        .dir
        .path()
        .join("identity-secret")
        .display()
        .to_string();
    stop(&mut server);

    let restored_dir = work.path().join("restored");
    let out = vkube(&[
        "snapshot",
        "restore",
        &file.display().to_string(),
        "--store",
        &sqlite_of(&restored_dir),
    ]);
    assert!(out.ok, "{}{}", out.stdout, out.stderr);
    let restored = Server::start_with(&[
        "--store",
        &sqlite_of(&restored_dir),
        "--identity-secret-file",
        &secret,
    ]);
    assert_eq!(
        data_at(&restored, None),
        at_revision,
        "the restored ConfigMaps"
    );
    drop(server);
}

/// The commands the host CLI runs in a virtual cluster's pods: `vkube snapshot create -` to
/// standard output from the store `vkube serve --data-dir` serves, and `vkube snapshot restore -`
/// from standard input into a data dir's store.
#[test]
fn a_snapshot_streams_through_stdout_and_stdin_by_data_dir() {
    let (mut server, token) = populated(20, &[]);
    let before = snapshot_of(&server.kubeconfig());
    let (old_dir, old_port) = (server.dir.path().to_path_buf(), server.port);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vkube"))
        .args(["snapshot", "create", "-", "--data-dir"])
        .arg(&old_dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.contains("to standard output"),
        "{stderr}"
    );
    assert!(out.stdout.starts_with(b"VKUBE-SNAPSHOT\n"));
    stop(&mut server);

    let work = tempfile::tempdir().unwrap();
    let restored = work.path().join("restored");
    std::fs::create_dir_all(&restored).unwrap();
    std::fs::copy(
        old_dir.join("identity-secret"),
        restored.join("identity-secret"),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vkube"))
        .args(["snapshot", "restore", "-", "--data-dir"])
        .arg(&restored)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &out.stdout).unwrap();
    let done = child.wait_with_output().unwrap();
    assert!(
        done.status.success()
            && String::from_utf8_lossy(&done.stdout).contains("restored and verified"),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let secret = restored.join("identity-secret").display().to_string();
    let server = Server::start_with(&[
        "--store",
        &sqlite_of(&restored),
        "--identity-secret-file",
        &secret,
    ]);
    crate::migrate::is_the_same_cluster(
        &server,
        "the restored data dir",
        &old_dir,
        old_port,
        &before,
        &token,
    );
}
