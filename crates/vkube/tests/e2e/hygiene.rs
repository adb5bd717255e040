//! Token hygiene (issue 17): no bearer token, private key or Secret value ever appears in a log
//! line, at any level. A `vkube serve` at RUST_LOG=trace (every crate, dependencies included) on
//! each store backend issues tokens, refuses bad ones, reviews both, stores, reads, patches and
//! deletes Secrets; then its whole log is searched for every one of them, in the forms a logger
//! could print them: as text, base64 (a Secret's stored form), and as the list of byte values a
//! `Debug` of a byte buffer prints.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;

use vkube_server::cluster_secret::{ClusterSecret, DATA_DIR_FILE, Source};

use crate::auth::token_kubeconfig;
use crate::harness::*;

/// Starts `vkube serve` with `extra` flags at RUST_LOG=trace, its log (stdout and stderr) in
/// `<data dir>/serve.log`.
fn start_tracing(extra: &[&str]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_vkube"))
        .args([
            "serve",
            "--data-dir",
            &dir.path().display().to_string(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args(extra)
        .env("RUST_LOG", "trace")
        .env_remove("RUST_LOG_STYLE")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("start vkube serve");
    watch_parent(child.id());
    let mut server = Server { child, port, dir };
    let stdout = server.child.stdout.take().unwrap();
    // What serve prints on stdout is logged too (its first line names the kubeconfig).
    let copy = server.dir.path().join("serve.stdout");
    std::thread::spawn(move || {
        let mut out = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            out.push_str(&line);
            out.push('\n');
            let _ = std::fs::write(&copy, &out);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = server.kubectl("kubectl", &["get", "--raw", "/readyz"]);
        if out.ok && out.stdout == "ok" {
            return server;
        }
        let exited = server.child.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() > deadline {
            let log =
                std::fs::read_to_string(server.dir.path().join("serve.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            panic!(
                "not ready ({exited:?}): {}\n{}",
                out.stderr,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The forms in which `secret` could show up in a log.
fn forms(secret: &str) -> Vec<String> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
    let b64 = b64.trim_end_matches('=');
    // `[104, 117, …]`, as Debug prints a Vec<u8>; a long enough run of it is the secret.
    let as_bytes = |s: &str| {
        let bytes: Vec<String> = s.bytes().take(24).map(|b| b.to_string()).collect();
        bytes.join(", ")
    };
    vec![
        secret.to_string(),
        b64.to_string(),
        as_bytes(secret),
        as_bytes(b64),
    ]
}

/// The body lines of every PEM private key in `text` (each line is a distinct 64-character
/// chunk of key material).
fn key_lines(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut inside = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with("-----BEGIN") && line.contains("PRIVATE KEY") {
            inside = true;
        } else if line.starts_with("-----END") {
            inside = false;
        } else if inside && line.len() >= 40 {
            lines.push(line.to_string());
        }
    }
    lines
}

/// Every private key under the data dir and in the admin kubeconfig.
fn private_keys(dir: &Path) -> Vec<String> {
    let mut keys = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        for entry in std::fs::read_dir(&at).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(text) = std::fs::read_to_string(&path) {
                keys.extend(key_lines(&text));
                // A kubeconfig carries its key as base64 of the PEM.
                for line in text.lines() {
                    if let Some(data) = line.trim().strip_prefix("client-key-data:") {
                        let pem = base64::engine::general_purpose::STANDARD
                            .decode(data.trim())
                            .unwrap_or_default();
                        keys.extend(key_lines(&String::from_utf8_lossy(&pem)));
                        keys.push(data.trim()[..60].to_string());
                    }
                }
            }
        }
    }
    keys
}

/// The cluster secret a server given none created in its data dir.
fn data_dir_secret(server: &Server) -> ClusterSecret {
    let file = server.dir.path().join(DATA_DIR_FILE);
    ClusterSecret::from_file(&file, Source::DataDir(file.clone()))
        .expect("the server's cluster secret")
}

/// The cluster's own private keys (the CA's, the service-account signing key), opened with the
/// cluster's secret as the server opens them.
fn identity_keys(store: &str, secret: &ClusterSecret) -> Vec<String> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = vkube_store::open(store)
            .await
            .expect("open the server's store");
        // Read as the server reads them, so a missing record fails here, not silently.
        let ca = vkube_server::identity::Ca::load_or_create(store.as_ref(), None, secret)
            .await
            .expect("the CA opens with the server's secret");
        let sa = vkube_server::identity::service_account_key(store.as_ref(), secret)
            .await
            .expect("the service-account key opens with the server's secret");
        let mut keys = key_lines(&ca.key_pem);
        // The service-account key is stored as base64 of its PKCS#8, not PEM.
        keys.push(sa.to_stored());
        assert!(!keys.is_empty(), "no key lines in the identity");
        keys
    })
}

fn tokenreview(server: &Server, token: &str) -> String {
    let yaml = format!(
        "apiVersion: authentication.k8s.io/v1\nkind: TokenReview\nspec:\n  token: {token}\n"
    );
    let file = server
        .dir
        .path()
        .join(format!("review-{}.yaml", rand_suffix()));
    std::fs::write(&file, yaml).unwrap();
    let file = file.display().to_string();
    run(
        server,
        "kubectl",
        &[
            "create",
            "-f",
            &file,
            "-o",
            "jsonpath={.status.authenticated}",
        ],
    )
}

/// Drives one server through token and Secret traffic; returns the secrets it used.
fn exercise(server: &Server) -> Vec<(String, String)> {
    let mut secrets = Vec::new();
    let ns = format!("hygiene-{}", rand_suffix());
    run(server, "kubectl", &["create", "namespace", &ns]);
    run(
        server,
        "kubectl",
        &["create", "serviceaccount", "bot", "-n", &ns],
    );

    // A service-account token, used, reviewed.
    let token = run(
        server,
        "kubectl",
        &["create", "token", "bot", "-n", &ns, "--duration=20m"],
    );
    let config = token_kubeconfig(server, "bot", &token);
    let who = kubectl_with("kubectl", &config, &["auth", "whoami"]);
    assert!(who.ok, "{}", who.stderr);
    // Refused for lack of RBAC: the deny path logs too.
    let denied = kubectl_with("kubectl", &config, &["get", "secrets", "-n", &ns]);
    assert!(denied.stderr.contains("forbidden"), "{}", denied.stderr);
    assert_eq!(tokenreview(server, &token), "true");
    secrets.push(("service-account token".into(), token.clone()));
    // Its signature alone identifies it.
    let signature = token.rsplit('.').next().unwrap().to_string();
    secrets.push(("service-account token signature".into(), signature));

    // Bad tokens: opaque, and JWT-shaped with our issuer's header but a forged signature.
    let opaque = format!("vkube-bad-token-{}", rand_suffix());
    let mut parts = token.split('.');
    let forged = format!(
        "{}.{}.{}",
        parts.next().unwrap(),
        parts.next().unwrap(),
        "Zm9yZ2VkLXNpZ25hdHVyZS1mb3JnZWQtc2lnbmF0dXJlLWZvcmdlZA"
    );
    for bad in [&opaque, &forged] {
        let config = token_kubeconfig(server, "bad", bad);
        let out = kubectl_with("kubectl", &config, &["get", "namespaces"]);
        assert!(out.stderr.contains("Unauthorized"), "{}", out.stderr);
        // `authenticated: false` is omitted, as upstream.
        assert_eq!(tokenreview(server, bad), "");
    }
    secrets.push(("opaque bad token".into(), opaque));
    secrets.push((
        "forged token's signature".into(),
        "Zm9yZ2VkLXNpZ25hdHVyZS1mb3JnZWQtc2lnbmF0dXJl".into(),
    ));

    // A TokenRequest through the API, as the kubelet asks.
    let requested = run(
        server,
        "kubectl",
        &["create", "token", "bot", "-n", &ns, "--audience=hygiene"],
    );
    secrets.push(("requested token".into(), requested));

    // Secrets: created, read, patched, applied, deleted.
    let value = format!("s3cr3t-value-{}", rand_suffix());
    let patched = format!("patched-value-{}", rand_suffix());
    let applied = format!("applied-value-{}", rand_suffix());
    run(
        server,
        "kubectl",
        &[
            "create",
            "secret",
            "generic",
            "db",
            "-n",
            &ns,
            &format!("--from-literal=password={value}"),
        ],
    );
    run(
        server,
        "kubectl",
        &["get", "secret", "db", "-n", &ns, "-o", "yaml"],
    );
    let patch = format!(r#"{{"stringData":{{"password":"{patched}"}}}}"#);
    run(
        server,
        "kubectl",
        &["patch", "secret", "db", "-n", &ns, "-p", &patch],
    );
    let got = run(
        server,
        "kubectl",
        &[
            "get",
            "secret",
            "db",
            "-n",
            &ns,
            "-o",
            "jsonpath={.data.password}",
        ],
    );
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(got)
        .unwrap();
    assert_eq!(String::from_utf8(decoded).unwrap(), patched);
    let manifest = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: applied\n  namespace: {ns}\nstringData:\n  key: {applied}\n"
    );
    apply_file(server, "kubectl", &manifest, "apply");
    let ssa = manifest.replace("name: applied", "name: applied-ssa");
    let file = server.dir.path().join("ssa.yaml");
    std::fs::write(&file, ssa).unwrap();
    run(
        server,
        "kubectl",
        &["apply", "--server-side", "-f", &file.display().to_string()],
    );
    // A watch sees the Secret change go by.
    run(
        server,
        "kubectl",
        &[
            "get",
            "secrets",
            "-n",
            &ns,
            "--watch-only",
            "--request-timeout=1s",
        ],
    );
    // An invalid Secret is refused with its value in the request.
    let invalid = format!(
        r#"{{"apiVersion":"v1","kind":"Secret","metadata":{{"name":"Bad_Name","namespace":"{ns}"}},"stringData":{{"k":"{value}"}}}}"#
    );
    let file = server.dir.path().join("invalid.json");
    std::fs::write(&file, invalid).unwrap();
    let out = server.kubectl("kubectl", &["create", "-f", &file.display().to_string()]);
    assert!(out.stderr.contains("Invalid"), "{}", out.stderr);
    run(server, "kubectl", &["delete", "secret", "db", "-n", &ns]);
    secrets.push(("Secret value".into(), value));
    secrets.push(("patched Secret value".into(), patched));
    secrets.push(("applied Secret value".into(), applied));
    secrets
}

/// `store` is the server's store URL.
fn assert_clean(
    server: &Server,
    mut secrets: Vec<(String, String)>,
    backend: &str,
    store: &str,
    cluster_secret: &ClusterSecret,
) {
    for key in private_keys(server.dir.path()) {
        secrets.push(("private key".into(), key));
    }
    for key in identity_keys(store, cluster_secret) {
        secrets.push(("cluster identity key".into(), key));
    }
    assert!(
        secrets.iter().any(|(what, _)| what == "private key"),
        "no private key found to look for"
    );
    // Give the server a moment to log what the last requests made it log.
    std::thread::sleep(Duration::from_millis(500));
    let mut log = std::fs::read_to_string(server.dir.path().join("serve.log")).unwrap();
    log.push_str(
        &std::fs::read_to_string(server.dir.path().join("serve.stdout")).unwrap_or_default(),
    );
    assert!(
        log.lines().count() > 100,
        "{backend}: the trace log is suspiciously short:\n{log}"
    );
    // What is searched is the log the levels produce: vkube's own lines and trace lines.
    assert!(
        log.contains("admin kubeconfig written") && log.contains("TRACE"),
        "{backend}: not a trace log of vkube serve"
    );
    let mut leaks = Vec::new();
    for (what, secret) in &secrets {
        for form in forms(secret) {
            if let Some(line) = log.lines().find(|l| l.contains(&form)) {
                let line: String = line.chars().take(400).collect();
                leaks.push(format!("{what} ({form:.40}…) in: {line}"));
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "{backend}: {} secrets in a {}-line trace log:\n{}",
        leaks.len(),
        log.lines().count(),
        leaks.join("\n")
    );
}

#[test]
fn no_secret_in_a_trace_log_on_sqlite() {
    let server = start_tracing(&[]);
    let secrets = exercise(&server);
    let store = format!("sqlite://{}", server.dir.path().join("state.db").display());
    assert_clean(
        &server,
        secrets,
        "sqlite",
        &store,
        &data_dir_secret(&server),
    );
}

#[test]
fn no_secret_in_a_trace_log_on_postgres() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = rt.block_on(crate::servers::postgres_database(&format!(
        "hygiene{}",
        std::process::id()
    )));
    let server = start_tracing(&["--store", &url]);
    let secrets = exercise(&server);
    assert_clean(
        &server,
        secrets,
        "postgres",
        &url,
        &data_dir_secret(&server),
    );
}

#[test]
fn no_secret_in_a_trace_log_on_etcd() {
    let store = format!(
        "etcd://{}?prefix=/hygiene-{}",
        crate::servers::etcd_endpoints(),
        rand_suffix()
    );
    let server = start_tracing(&["--store", &store]);
    let secrets = exercise(&server);
    assert_clean(&server, secrets, "etcd", &store, &data_dir_secret(&server));
}

/// Embedded etcd with TLS (the cluster CA from files): the member's and vkube's etcd client keys
/// under `DATA-DIR/etcd/pki` join the keys searched for, and the TLS traffic to etcd is traced.
#[test]
fn no_secret_in_a_trace_log_on_embedded_etcd_with_tls() {
    let secret = tempfile::tempdir().unwrap();
    let (ca_cert, ca_key) = crate::embedded_etcd_tls::ca_files(secret.path(), "hygiene-ca");
    let url = |port: u16| format!("https://127.0.0.1:{port}");
    let (peer, client) = (url(free_port()), url(free_port()));
    let server = start_tracing(&[
        "--etcd-embedded",
        "--etcd-peers",
        &peer,
        "--etcd-clients",
        &client,
        "--ca-cert-file",
        &ca_cert.display().to_string(),
        "--ca-key-file",
        &ca_key.display().to_string(),
    ]);
    let secrets = exercise(&server);
    let pki = server.dir.path().join("etcd/pki");
    let store = format!(
        "etcd://{}?ca={}&cert={}&key={}",
        client.trim_start_matches("https://"),
        pki.join("ca.crt").display(),
        pki.join("client.crt").display(),
        pki.join("client.key").display()
    );
    // The cluster secret is the CA key given in a file.
    let ca_secret = ClusterSecret::derive(&std::fs::read(&ca_key).unwrap(), Source::CaKey);
    assert_clean(
        &server,
        secrets,
        "embedded etcd with TLS",
        &store,
        &ca_secret,
    );
}

/// OIDC tokens: accepted, of another audience, and signed by a key the issuer does not publish
/// (which sends the verifier refetching the JWKS) — none of them in the trace log.
#[test]
fn no_oidc_token_in_a_trace_log() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let idp = rt.block_on(vkube_auth::testing::TestIdp::start(""));
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("idp-ca.pem");
    std::fs::write(&ca, &idp.ca_pem).unwrap();
    let server = start_tracing(&[
        &format!("--oidc-issuer-url={}", idp.issuer),
        "--oidc-client-id=vkube",
        "--oidc-username-claim=email",
        &format!("--oidc-ca-file={}", ca.display()),
    ]);
    let claims = |aud: &str| {
        let mut c = idp.claims(aud);
        c["email"] = "jane@example.com".into();
        c["email_verified"] = true.into();
        c
    };
    let good = idp.mint("RS256", &claims("vkube"));
    let config = token_kubeconfig(&server, "jane", &good);
    let who = kubectl_with("kubectl", &config, &["auth", "whoami"]);
    assert!(who.stdout.contains("jane@example.com"), "{}", who.stderr);
    let mut secrets = vec![("OIDC token".to_string(), good.clone())];
    for (what, token) in [
        (
            "OIDC token of another audience",
            idp.mint("RS256", &claims("other")),
        ),
        (
            "OIDC token of an unpublished key",
            idp.mint_unpublished("RS256", &claims("vkube")),
        ),
    ] {
        let config = token_kubeconfig(&server, "bad", &token);
        let out = kubectl_with("kubectl", &config, &["get", "namespaces"]);
        // Newer kubectl words a 401 on discovery "You must be logged in".
        let refused = out.stderr.contains("Unauthorized") || out.stderr.contains("logged in");
        assert!(refused, "{what}: {}", out.stderr);
        assert_eq!(tokenreview(&server, &token), "", "{what}");
        secrets.push((what.to_string(), token));
    }
    assert_eq!(tokenreview(&server, &good), "true");
    // Each token's signature alone identifies it.
    let signatures: Vec<(String, String)> = secrets
        .iter()
        .map(|(what, t)| {
            (
                format!("{what} (signature)"),
                t.rsplit('.').next().unwrap().to_string(),
            )
        })
        .collect();
    secrets.extend(signatures);
    let store = format!("sqlite://{}", server.dir.path().join("state.db").display());
    assert_clean(
        &server,
        secrets,
        "sqlite with OIDC",
        &store,
        &data_dir_secret(&server),
    );
}
