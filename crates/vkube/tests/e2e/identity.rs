//! The cluster identity sealed in the store (issue 17, defect 1): the CA key and the
//! service-account signing key are never in the store in plain text, a replica without the
//! cluster secret refuses to start, and one given the secret serves with the same identity, so
//! old kubeconfigs and service-account tokens keep working.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::harness::*;

/// Runs `vkube serve` with `flags` and a fresh data dir, expecting it to refuse: its stderr.
fn refused(flags: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_vkube"))
        .args([
            "serve",
            "--data-dir",
            &dir.path().display().to_string(),
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .args(flags)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    expect_refused(child, 20)
}

/// The raw values of the identity records in the SQLite database at `db`.
fn raw_identity(db: &Path) -> Vec<Vec<u8>> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = vkube_store::open(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        let mut values = Vec::new();
        for key in [
            vkube_server::identity::CA_KEY,
            vkube_server::identity::SA_KEY,
        ] {
            values.push(store.get(key, None).await.unwrap().unwrap().value);
        }
        values
    })
}

/// The CA record keeps its certificate plain and its key sealed; the service-account key's
/// record is sealed whole. No private key shows.
fn assert_sealed(records: &[Vec<u8>]) {
    let ca = String::from_utf8_lossy(&records[0]);
    assert!(
        ca.contains("\"key_sealed\"") && ca.contains("BEGIN CERTIFICATE"),
        "{ca}"
    );
    let sa = String::from_utf8_lossy(&records[1]);
    assert!(sa.starts_with("vkube:enc:aesgcm:v1:"), "{sa}");
    for text in [ca, sa] {
        assert!(!text.contains("PRIVATE KEY"), "{text}");
    }
}

#[test]
fn the_identity_is_sealed_and_a_replica_without_the_secret_is_refused() {
    let shared = tempfile::tempdir().unwrap();
    let db = shared.path().join("state.db");
    let store = format!("sqlite://{}", db.display());
    let first = Server::start_with(&["--store", &store]);
    let ns = ns_name("kubectl", "identity");
    run(&first, "kubectl", &["create", "namespace", &ns]);
    run(
        &first,
        "kubectl",
        &["create", "serviceaccount", "robot", "-n", &ns],
    );
    let token = run(
        &first,
        "kubectl",
        &["create", "token", "robot", "-n", &ns, "--duration=1h"],
    );
    let old_kubeconfig = shared.path().join("old.kubeconfig");
    let old = std::fs::read_to_string(first.kubeconfig()).unwrap();
    let first_port = first.port;
    let secret_file = first
        .dir
        .path()
        .join(vkube_server::cluster_secret::DATA_DIR_FILE);
    let secret = std::fs::read(&secret_file).unwrap();
    assert!(secret.len() >= 32, "a short secret: {} bytes", secret.len());
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&secret_file).unwrap().permissions(),
    );
    assert_eq!(
        mode & 0o077,
        0,
        "the secret is readable by others: {mode:o}"
    );
    drop(first);

    // Nothing in the store reads as a key.
    assert_sealed(&raw_identity(&db));

    // Another replica without the secret: refused, naming the fix; the store is unchanged.
    let before = raw_identity(&db);
    let stderr = refused(&["--store", &store]);
    assert!(
        stderr.contains("sealed with a cluster secret")
            && stderr.contains("--identity-secret-file"),
        "{stderr}"
    );
    // With the wrong secret: refused, saying so.
    let wrong = shared.path().join("wrong");
    std::fs::write(&wrong, "some other secret that is long enough to use\n").unwrap();
    let stderr = refused(&[
        "--store",
        &store,
        "--identity-secret-file",
        &wrong.display().to_string(),
    ]);
    assert!(
        stderr.contains("does not open this cluster's identity"),
        "{stderr}"
    );
    // Too short a secret: refused, with the command that makes a good one.
    std::fs::write(&wrong, "short").unwrap();
    let stderr = refused(&["--identity-secret-file", &wrong.display().to_string()]);
    assert!(stderr.contains("at least 32 bytes"), "{stderr}");
    assert_eq!(
        raw_identity(&db),
        before,
        "a refused replica changed the identity"
    );

    // With the secret, a replica in another data dir serves the same identity: the old admin
    // kubeconfig and the old token work.
    let given = shared.path().join("secret");
    std::fs::write(&given, &secret).unwrap();
    let second = Server::start_with(&[
        "--store",
        &store,
        "--identity-secret-file",
        &given.display().to_string(),
    ]);
    // The first replica's admin kubeconfig (its client certificate), aimed at the second.
    std::fs::write(
        &old_kubeconfig,
        old.replace(
            &format!("127.0.0.1:{first_port}"),
            &format!("127.0.0.1:{}", second.port),
        ),
    )
    .unwrap();
    let out = kubectl_with("kubectl", &old_kubeconfig, &["get", "namespace", &ns]);
    assert!(out.ok, "the old kubeconfig: {}", out.stderr);
    let robot = crate::auth::token_kubeconfig(&second, "robot", token.trim());
    let out = kubectl_with(
        "kubectl",
        &robot,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
    );
    assert_eq!(
        out.stdout,
        format!("system:serviceaccount:{ns}:robot"),
        "the old token: {}",
        out.stderr
    );
}

/// A store written before the sealing holds the identity in plain text: the next start reads
/// it, seals it in place and serves with the same CA.
#[test]
fn a_plain_identity_from_an_older_vkube_is_sealed_in_place() {
    let shared = tempfile::tempdir().unwrap();
    let db = shared.path().join("state.db");
    let store = format!("sqlite://{}", db.display());
    let ca = vkube_server::identity::Ca::generate().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let s = vkube_store::open(&store).await.unwrap();
        s.create(
            vkube_server::identity::CA_KEY,
            serde_json::to_vec(&ca).unwrap(),
            None,
        )
        .await
        .unwrap();
    });
    drop(rt);
    let server = Server::start_with(&["--store", &store]);
    let served = std::fs::read_to_string(server.dir.path().join("ca.crt")).unwrap();
    assert_eq!(served, ca.cert_pem, "the old CA is still the cluster's");
    drop(server);
    assert_sealed(&raw_identity(&db));
}
