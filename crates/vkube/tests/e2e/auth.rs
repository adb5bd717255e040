//! Authentication through kubectl: bad tokens, anonymous requests, service-account tokens from
//! TokenRequest, and OIDC users of an issuer configured with kube-apiserver's flags.

use crate::harness::*;

/// A kubeconfig with the cluster's CA and a bearer token — no client certificate.
pub(crate) fn token_kubeconfig(server: &Server, name: &str, token: &str) -> std::path::PathBuf {
    let path = server.dir.path().join(format!("{name}.kubeconfig"));
    let ca = server.dir.path().join("ca.crt").display().to_string();
    let config = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{}\n    certificate-authority: {ca}\n\
         users:\n- name: u\n  user: {{token: {token}}}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\n",
        server.port
    );
    std::fs::write(&path, config).unwrap();
    path
}

#[test]
fn bad_tokens_are_unauthorized_and_anonymous_requests_forbidden() {
    let server = Server::start();
    let bad = token_kubeconfig(&server, "bad", "not-a-valid-token");
    for &k in KUBECTLS {
        let out = kubectl_with(k, &bad, &["get", "--raw", "/api/v1/namespaces"]);
        assert!(
            !out.ok && out.stderr.contains("Unauthorized"),
            "{k}: {}",
            out.stderr
        );
        // A token that fails is 401 even for health, as upstream.
        assert!(
            !kubectl_with(k, &bad, &["get", "--raw", "/readyz"]).ok,
            "{k}"
        );
        // system:anonymous (here by impersonation) may read health, nothing else.
        let health = run(
            &server,
            k,
            &["get", "--raw", "/readyz?verbose", "--as=system:anonymous"],
        );
        assert!(health.ends_with("readyz check passed"), "{k}: {health}");
        let out = server.kubectl(
            k,
            &[
                "get",
                "--raw",
                "/api/v1/namespaces",
                "--as=system:anonymous",
            ],
        );
        let want = r#"namespaces is forbidden: User "system:anonymous" cannot list resource "namespaces" in API group "" at the cluster scope"#;
        assert!(out.stderr.contains(want), "{k}: {}", out.stderr);
    }
}

#[test]
fn service_account_tokens_from_token_request() {
    let server = Server::start();
    for &k in KUBECTLS {
        let ns = ns_name(k, "sa");
        run(&server, k, &["create", "namespace", &ns]);
        run(&server, k, &["create", "serviceaccount", "bot", "-n", &ns]);
        let token = run(
            &server,
            k,
            &["create", "token", "bot", "-n", &ns, "--duration=20m"],
        );
        let config = token_kubeconfig(&server, &ns, &token);
        let jsonpath = "jsonpath={.status.userInfo.username} {.status.userInfo.groups}";
        let who = kubectl_with(k, &config, &["auth", "whoami", "-o", jsonpath]);
        if k == "kubectl.1.27" {
            // 1.27 knows only the beta SelfSubjectReview, which 1.33 no longer serves.
            let want = "the selfsubjectreviews API is not enabled in the cluster";
            assert!(who.stderr.contains(want), "{k}: {}", who.stderr);
        } else {
            let want = format!(
                r#"system:serviceaccount:{ns}:bot ["system:serviceaccounts","system:serviceaccounts:{ns}","system:authenticated"]"#
            );
            assert_eq!(who.stdout, want, "{k}: {}", who.stderr);
        }
        let out = kubectl_with(k, &config, &["get", "pods", "-n", &ns]);
        let want = format!(
            r#"pods is forbidden: User "system:serviceaccount:{ns}:bot" cannot list resource "pods" in API group "" in the namespace "{ns}""#
        );
        assert!(out.stderr.contains(&want), "{k}: {}", out.stderr);
        let short = server.kubectl(k, &["create", "token", "bot", "-n", &ns, "--duration=5m"]);
        let want = "spec.expirationSeconds: Invalid value: 300: may not specify a duration less than 10 minutes";
        assert!(short.stderr.contains(want), "{k}: {}", short.stderr);
        // Recreating the ServiceAccount (a new uid) ends its old tokens, after the 10 s cache.
        run(&server, k, &["delete", "serviceaccount", "bot", "-n", &ns]);
        run(&server, k, &["create", "serviceaccount", "bot", "-n", &ns]);
        std::thread::sleep(std::time::Duration::from_secs(11));
        let out = kubectl_with(k, &config, &["get", "--raw", "/version"]);
        assert!(
            !out.ok && out.stderr.contains("Unauthorized"),
            "{k}: {}",
            out.stderr
        );
    }
}

/// A test OpenID provider on loopback, configured through vcluster.yaml's apiServer extraArgs
/// (the flags) — and its key rotation seen without a restart.
#[test]
fn oidc_users_from_the_flags_in_vcluster_yaml() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let idp = rt.block_on(vkube_auth::testing::TestIdp::start("/tenant/v2.0"));
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("idp-ca.pem");
    std::fs::write(&ca, &idp.ca_pem).unwrap();
    let config = dir.path().join("vcluster.yaml");
    std::fs::write(
        &config,
        format!(
            "controlPlane:\n  distro:\n    k8s:\n      apiServer:\n        extraArgs:\n\
             - --oidc-issuer-url={}\n        - --oidc-client-id=vkube\n        - --oidc-username-claim=email\n\
             - --oidc-groups-claim=groups\n        - \"--oidc-groups-prefix=oidc:\"\n        - --oidc-ca-file={}\n",
            idp.issuer,
            ca.display()
        )
        .replace("\n- --", "\n        - --"),
    )
    .unwrap();
    let server = Server::start_with(&["--config", &config.display().to_string()]);
    let claims = |email: &str| {
        let mut c = idp.claims("vkube");
        c["email"] = email.into();
        c["email_verified"] = true.into();
        c["groups"] = serde_json::json!(["dev", "ops"]);
        c["jti"] = "t-1".into();
        c
    };
    for &k in &["kubectl", "kubectl.1.33"] {
        let token = idp.mint("RS256", &claims("jane@example.com"));
        let config = crate::auth::token_kubeconfig(&server, "jane", &token);
        let who = kubectl_with(k, &config, &["auth", "whoami"]);
        assert_eq!(
            lines(&who.stdout),
            lines(
                "ATTRIBUTE VALUE\nUsername jane@example.com\nGroups [oidc:dev oidc:ops system:authenticated]\n\
                 Extra: authentication.kubernetes.io/credential-id [JTI=t-1]"
            ),
            "{k}: {}",
            who.stderr
        );
        // A wrong audience is 401.
        let mut other = claims("jane@example.com");
        other["aud"] = "someone-else".into();
        let config = crate::auth::token_kubeconfig(&server, "other", &idp.mint("RS256", &other));
        let out = kubectl_with(k, &config, &["auth", "whoami"]);
        assert!(
            !out.ok && out.stderr.contains("Unauthorized"),
            "{k}: {}",
            out.stderr
        );
    }
    // The provider rotates its key: the next token is accepted without a restart.
    idp.rotate("RS256");
    let token = idp.mint("RS256", &claims("rotated@example.com"));
    let config = crate::auth::token_kubeconfig(&server, "rotated", &token);
    let who = kubectl_with(
        "kubectl",
        &config,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
    );
    assert_eq!(who.stdout, "rotated@example.com", "{}", who.stderr);
}

fn auth_config(idp: &vkube_auth::testing::TestIdp, prefix: &str) -> String {
    let ca: String = idp.ca_pem.lines().map(|l| format!("      {l}\n")).collect();
    format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: AuthenticationConfiguration\njwt:\n- issuer:\n    url: {}\n    audiences: [vkube]\n    certificateAuthority: |\n{ca}\
         \x20 claimMappings:\n    username: {{claim: sub, prefix: \"{prefix}\"}}\n    groups: {{expression: \"claims.roles.map(r, 'role:' + r)\"}}\n\
         \x20 userValidationRules:\n  - expression: \"!user.username.startsWith('system:')\"\n    message: no system users\n",
        idp.issuer
    )
}

fn metric_line(server: &Server, name: &str) -> Vec<String> {
    run(server, "kubectl", &["get", "--raw", "/metrics"])
        .lines()
        .filter(|l| l.starts_with(name))
        .map(str::to_string)
        .collect()
}

/// `--authentication-config`: a structured configuration with CEL, reloaded on change; an
/// invalid new file keeps the old one, and both show in the metrics.
#[test]
fn oidc_users_from_an_authentication_config_reloaded_on_change() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let idp = rt.block_on(vkube_auth::testing::TestIdp::start(""));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("authn.yaml");
    std::fs::write(&file, auth_config(&idp, "oidc:")).unwrap();
    let server = Server::start_with(&["--authentication-config", &file.display().to_string()]);
    let mut claims = idp.claims("vkube");
    claims["roles"] = serde_json::json!(["dev"]);
    let config = crate::auth::token_kubeconfig(&server, "cfg", &idp.mint("ES256", &claims));
    let who = || {
        let out = kubectl_with(
            "kubectl",
            &config,
            &[
                "auth",
                "whoami",
                "-o",
                "jsonpath={.status.userInfo.username} {.status.userInfo.groups}",
            ],
        );
        out.stdout
    };
    assert_eq!(who(), r#"oidc:alice ["role:dev","system:authenticated"]"#);
    let before = metric_line(&server, "vkube_authentication_config_info");
    assert_eq!(before.len(), 1, "{before:?}");
    assert!(before[0].contains("fingerprint=\"sha256:"), "{before:?}");
    // A user validation rule refuses system: users.
    let mut system = claims.clone();
    system["sub"] = "system:admin".into();
    std::fs::write(&file, auth_config(&idp, "")).unwrap();
    let mut reloaded = false;
    for _ in 0..50 {
        if who() == r#"alice ["role:dev","system:authenticated"]"# {
            reloaded = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(reloaded, "the new prefix was picked up: {}", who());
    assert_ne!(
        metric_line(&server, "vkube_authentication_config_info"),
        before,
        "the fingerprint changed"
    );
    let bad = crate::auth::token_kubeconfig(&server, "sys", &idp.mint("ES256", &system));
    assert!(!kubectl_with("kubectl", &bad, &["auth", "whoami"]).ok);
    // An invalid file is refused and counted; the last good configuration stays.
    std::fs::write(&file, "apiVersion: apiserver.config.k8s.io/v1\nkind: AuthenticationConfiguration\njwt:\n- issuer: {url: 'http://x'}\n").unwrap();
    let mut counted = false;
    for _ in 0..50 {
        let failures = metric_line(
            &server,
            "apiserver_authentication_config_controller_automatic_reloads_total",
        );
        if failures.iter().any(|l| l.contains("status=\"failure\"")) {
            counted = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(counted, "the failed reload is counted");
    assert_eq!(who(), r#"alice ["role:dev","system:authenticated"]"#);
    let attempts = metric_line(&server, "authentication_attempts_total");
    assert!(
        attempts.iter().any(|l| l.contains("result=\"success\"")),
        "{attempts:?}"
    );
    assert!(
        attempts.iter().any(|l| l.contains("result=\"failure\"")),
        "{attempts:?}"
    );
}

/// A real third-party OpenID provider (npm `oidc-provider`, tests/idp) over HTTPS on loopback:
/// ID tokens minted through its authorization-code flow, then a key rotation at the provider.
#[test]
fn oidc_provider_tokens_and_key_rotation() {
    let idp_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/idp");
    assert!(
        idp_dir.join("node_modules/oidc-provider").exists(),
        "tests/idp is not installed: run `npm ci --prefix tests/idp` (scripts/test does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
    params.subject_alt_names = vec![rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap())];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (cert_file, key_file) = (dir.path().join("idp.crt"), dir.path().join("idp.key"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let signing = dir.path().join("signing.json");
    let port = free_port();
    let start_provider = || {
        let mut child = std::process::Command::new("node")
            .arg(idp_dir.join("provider.mjs"))
            .args(["--port", &port.to_string()])
            .args([
                "--cert",
                &cert_file.display().to_string(),
                "--key",
                &key_file.display().to_string(),
            ])
            .args(["--signing-key", &signing.display().to_string()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("node is on PATH");
        watch_parent(child.id());
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert!(
            line.starts_with("ready https://127.0.0.1:"),
            "provider said {line:?}"
        );
        KillOnDrop(child)
    };
    let issuer = format!("https://127.0.0.1:{port}");
    let login = |user: &str| {
        let out = std::process::Command::new("node")
            .arg(idp_dir.join("login.mjs"))
            .args([
                "--issuer",
                &issuer,
                "--ca",
                &cert_file.display().to_string(),
                "--user",
                user,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "login: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let provider = start_provider();
    let server = Server::start_with(&[
        &format!("--oidc-issuer-url={issuer}"),
        "--oidc-client-id=vkube",
        "--oidc-username-claim=email",
        "--oidc-groups-claim=groups",
        &format!("--oidc-ca-file={}", cert_file.display()),
    ]);
    let whoami = |token: &str, name: &str| {
        let config = crate::auth::token_kubeconfig(&server, name, token);
        kubectl_with(
            "kubectl",
            &config,
            &[
                "auth",
                "whoami",
                "-o",
                "jsonpath={.status.userInfo.username} {.status.userInfo.groups}",
            ],
        )
    };
    let out = whoami(&login("alice"), "alice");
    assert_eq!(
        out.stdout, r#"alice@example.com ["dev","ops","system:authenticated"]"#,
        "{}",
        out.stderr
    );
    // Rotate: a new signing key, same issuer; vkube refetches the JWKS for the unknown kid.
    drop(provider);
    std::fs::remove_file(&signing).unwrap();
    let _provider = start_provider();
    let out = whoami(&login("bob"), "bob");
    assert_eq!(
        out.stdout, r#"bob@example.com ["dev","ops","system:authenticated"]"#,
        "{}",
        out.stderr
    );
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn whoami_with_the_admin_client_certificate() {
    let server = Server::start();
    for &k in &["kubectl", "kubectl.1.33"] {
        let out = run(&server, k, &["auth", "whoami"]);
        assert_eq!(
            lines(&out),
            lines(
                "ATTRIBUTE VALUE\nUsername kubernetes-admin\nGroups [system:masters system:authenticated]"
            ),
            "{k}"
        );
    }
}
