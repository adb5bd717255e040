//! Encryption at rest (issue 17): `--encryption-provider-config`, driven as an operator drives
//! kube-apiserver's. A Secret written with the config lies in the SQLite database as
//! `k8s:enc:aescbc:v1:key1:…` with no trace of its value; kubectl reads it back; a ConfigMap the
//! config does not name stays plain; a Secret from before the config still reads and is
//! encrypted by upstream's rotation step (`kubectl get -o json | kubectl replace -f -`); a
//! restart without its key answers upstream's 500 and loses nothing; a bad file refuses the
//! start, naming itself.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;

use crate::harness::*;

const KEY1: &str = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";
const KEY2: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

/// A config for secrets: aescbc with `keys` (the first encrypts), then identity.
fn config(dir: &Path, name: &str, keys: &[(&str, &str)]) -> PathBuf {
    let keys: Vec<String> = keys
        .iter()
        .map(|(n, s)| format!("            - name: {n}\n              secret: {s}\n"))
        .collect();
    let text = format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources:\n      - secrets\n    providers:\n      - aescbc:\n          keys:\n{}      - identity: {{}}\n",
        keys.concat()
    );
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The bytes the database holds for `key` (read with the server stopped).
fn raw(store: &str, key: &str) -> Vec<u8> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = vkube_store::open(store).await.expect("open the database");
        store
            .get(key, None)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{key} is not in the store"))
            .value
    })
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// `kubectl create WHAT --from-literal=KEY=VALUE`.
fn create(server: &Server, what: &str, key: &str, value: &str) {
    let literal = format!("--from-literal={key}={value}");
    let mut args: Vec<&str> = vec!["create"];
    args.extend(what.split(' '));
    args.push(&literal);
    run(server, "kubectl", &args);
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn secrets_are_encrypted_at_rest_rotate_and_fail_as_upstream_without_their_key() {
    let state = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", state.path().join("state.db").display());
    // Each start has a fresh data dir; the store's sealed identity needs the same secret.
    let secret = state.path().join("identity-secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef").unwrap();
    let secret = secret.display().to_string();
    let start = |extra: &[&str]| {
        let mut flags = vec![
            "--store",
            store.as_str(),
            "--identity-secret-file",
            secret.as_str(),
        ];
        flags.extend_from_slice(extra);
        Server::start_with(&flags)
    };
    let (before, value, visible) = (
        "plain-before-Zq81",
        "sup3r-s3cret-Vx72",
        "visible-config-Kp55",
    );

    // No config yet: a Secret stored as it is.
    let server = start(&[]);
    create(&server, "secret generic before", "password", before);
    drop(server);
    assert!(contains(
        &raw(&store, "/registry/secrets/default/before"),
        &b64(before)
    ));

    // aescbc key1 first, identity second.
    let with_key1 = config(state.path(), "key1.yaml", &[("key1", KEY1)]);
    let enc = with_key1.display().to_string();
    let server = start(&["--encryption-provider-config", &enc]);
    create(&server, "secret generic s1", "password", value);
    create(&server, "configmap c1", "k", visible);
    let read = run(
        &server,
        "kubectl",
        &["get", "secret", "s1", "-o", "jsonpath={.data.password}"],
    );
    assert_eq!(read, b64(value));
    // The Secret from before reads (identity), then upstream's rotation step rewrites it.
    let old = run(
        &server,
        "kubectl",
        &["get", "secret", "before", "-o", "json"],
    );
    assert!(old.contains(&b64(before)));
    let file = state.path().join("before.json");
    std::fs::write(&file, &old).unwrap();
    run(
        &server,
        "kubectl",
        &["replace", "-f", &file.display().to_string()],
    );
    drop(server);

    let s1 = raw(&store, "/registry/secrets/default/s1");
    assert!(
        s1.starts_with(b"k8s:enc:aescbc:v1:key1:"),
        "{:?}",
        String::from_utf8_lossy(&s1[..40.min(s1.len())])
    );
    assert!(!contains(&s1, value) && !contains(&s1, &b64(value)));
    let c1 = raw(&store, "/registry/configmaps/default/c1");
    assert!(
        contains(&c1, visible),
        "the ConfigMap is not configured: plain"
    );
    let rotated = raw(&store, "/registry/secrets/default/before");
    assert!(rotated.starts_with(b"k8s:enc:aescbc:v1:key1:"));
    assert!(!contains(&rotated, &b64(before)));

    // key1 gone from the config: upstream's 500, the server up, the rest readable.
    let only_key2 = config(state.path(), "key2.yaml", &[("key2", KEY2)]);
    let enc = only_key2.display().to_string();
    let server = start(&["--encryption-provider-config", &enc]);
    let out = server.kubectl("kubectl", &["get", "secret", "s1", "-o", "name"]);
    assert!(!out.ok);
    assert!(
        out.stderr.contains("Error from server (InternalError): Internal error occurred: no matching key was found for the provided AES transformer"),
        "{}",
        out.stderr
    );
    let listed = server.kubectl("kubectl", &["get", "secrets"]);
    assert!(
        !listed.ok
            && listed.stderr.contains(
                "Internal error occurred: unable to transform key \"/registry/secrets/default/before\": no matching key was found for the provided AES transformer"
            ),
        "{}",
        listed.stderr
    );
    assert_eq!(
        run(
            &server,
            "kubectl",
            &["get", "configmap", "c1", "-o", "jsonpath={.data.k}"]
        ),
        visible
    );
    assert_eq!(run(&server, "kubectl", &["get", "--raw", "/readyz"]), "ok");
    drop(server);

    // key1 back, after key2 (a rotation in progress): nothing was lost.
    let both = config(state.path(), "both.yaml", &[("key2", KEY2), ("key1", KEY1)]);
    let enc = both.display().to_string();
    let server = start(&["--encryption-provider-config", &enc]);
    let read = run(
        &server,
        "kubectl",
        &["get", "secret", "s1", "-o", "jsonpath={.data.password}"],
    );
    assert_eq!(read, b64(value));
}

#[test]
fn a_bad_config_refuses_the_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("short-key.yaml");
    std::fs::write(
        &bad,
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aescbc:\n      keys: [{name: key1, secret: c2hvcnQ=}]\n  - kms: {apiVersion: v2, name: k, endpoint: unix:///kms.sock}\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vkube"))
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--encryption-provider-config")
        .arg(&bad)
        .output()
        .expect("run vkube serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("short-key.yaml")
            && stderr.contains("resources[0].providers[0].aescbc.keys[0].secret: Invalid value: \"REDACTED\": secret is not of the expected length, got 5, expected one of [16 24 32]")
            && stderr.contains("vkube does not support KMS providers"),
        "{stderr}"
    );
}
