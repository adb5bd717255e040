//! RBAC end to end: `kubectl auth can-i` for an OIDC user bound through a group, escalation
//! refusals as kubectl prints them, and the seed's bug class — a RoleBinding written through one
//! replica honoured at once by another on the same store (no stale deny), 1000 times out of 1000,
//! on etcd and on PostgreSQL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::harness::*;

#[test]
fn can_i_for_an_oidc_group_and_escalation_refusals() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let idp = rt.block_on(vkube_auth::testing::TestIdp::start(""));
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("idp.pem");
    std::fs::write(&ca, &idp.ca_pem).unwrap();
    let server = Server::start_with(&[
        &format!("--oidc-issuer-url={}", idp.issuer),
        "--oidc-client-id=vkube",
        "--oidc-groups-claim=groups",
        "--oidc-username-prefix=oidc:",
        "--oidc-groups-prefix=oidc:",
        &format!("--oidc-ca-file={}", ca.display()),
    ]);
    run(&server, "kubectl", &["create", "namespace", "team"]);
    run(
        &server,
        "kubectl",
        &[
            "create",
            "rolebinding",
            "devs-edit",
            "-n",
            "team",
            "--clusterrole=edit",
            "--group=oidc:dev",
        ],
    );
    let mut claims = idp.claims("vkube");
    claims["groups"] = serde_json::json!(["dev"]);
    let config = crate::auth::token_kubeconfig(&server, "alice", &idp.mint("RS256", &claims));
    for &k in KUBECTLS {
        let can = |args: &[&str]| {
            kubectl_with(k, &config, &[&["auth", "can-i"][..], args].concat()).stdout
        };
        assert_eq!(can(&["create", "deployments", "-n", "team"]), "yes", "{k}");
        assert_eq!(
            can(&["create", "deployments", "-n", "default"]),
            "no",
            "{k}"
        );
        assert_eq!(
            can(&["create", "roles", "-n", "team"]),
            "no",
            "{k}: edit holds no RBAC writes"
        );
        assert_eq!(can(&["get", "nodes"]), "no", "{k}");
        let list = kubectl_with(k, &config, &["auth", "can-i", "--list", "-n", "team"]).stdout;
        assert!(
            list.lines().any(|l| l.starts_with("deployments.apps ")
                && l.contains("[create delete deletecollection patch update")),
            "{k}: {list}"
        );
        // The admin asks on alice's behalf.
        let as_alice = run(
            &server,
            k,
            &[
                "auth",
                "can-i",
                "delete",
                "pods",
                "-n",
                "team",
                "--as=oidc:alice",
                "--as-group=oidc:dev",
            ],
        );
        assert_eq!(as_alice, "yes", "{k}");
        let as_other = server.kubectl(
            k,
            &[
                "auth",
                "can-i",
                "delete",
                "pods",
                "-n",
                "team",
                "--as=oidc:bob",
            ],
        );
        assert_eq!(as_other.stdout, "no", "{k}");
    }
    // An admin of a namespace may grant what it holds there, and nothing more.
    run(
        &server,
        "kubectl",
        &[
            "create",
            "rolebinding",
            "devs-admin",
            "-n",
            "team",
            "--clusterrole=admin",
            "--group=oidc:dev",
        ],
    );
    let ok = kubectl_with(
        "kubectl",
        &config,
        &[
            "create",
            "rolebinding",
            "viewers",
            "-n",
            "team",
            "--clusterrole=view",
            "--user=carol",
        ],
    );
    assert!(ok.ok, "{}", ok.stderr);
    let escalate = kubectl_with(
        "kubectl",
        &config,
        &[
            "create",
            "rolebinding",
            "root",
            "-n",
            "team",
            "--clusterrole=cluster-admin",
            "--user=carol",
        ],
    );
    assert!(
        escalate.stderr.contains(r#"rolebindings.rbac.authorization.k8s.io "root" is forbidden: user "oidc:alice" (groups=["oidc:dev" "system:authenticated"]) is attempting to grant RBAC permissions not currently held:"#),
        "{}",
        escalate.stderr
    );
}

/// A minimal HTTPS client holding the admin certificate of a kubeconfig, for thousands of requests
/// where spawning kubectl would take minutes.
pub(crate) struct Api {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    token: Option<String>,
}

fn field(config: &str, name: &str) -> Vec<u8> {
    use base64::Engine;
    let line = config
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{name}: ")))
        .unwrap();
    base64::engine::general_purpose::STANDARD
        .decode(line.trim())
        .unwrap()
}

impl Api {
    pub(crate) async fn connect(kubeconfig: &std::path::Path, port: u16) -> Api {
        Api::connect_as(kubeconfig, port, None).await
    }

    /// With `token`, the request carries it and no client certificate.
    pub(crate) async fn connect_as(
        kubeconfig: &std::path::Path,
        port: u16,
        token: Option<String>,
    ) -> Api {
        let config = std::fs::read_to_string(kubeconfig).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&field(&config, "certificate-authority-data")) {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let tls = if token.is_some() {
            builder.with_no_client_auth()
        } else {
            let cert = field(&config, "client-certificate-data");
            let key = field(&config, "client-key-data");
            builder
                .with_client_auth_cert(
                    CertificateDer::pem_slice_iter(&cert)
                        .collect::<Result<Vec<_>, _>>()
                        .unwrap(),
                    PrivateKeyDer::from_pem_slice(&key).unwrap(),
                )
                .unwrap()
        };
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        tcp.set_nodelay(true).unwrap();
        let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        Api { sender, token }
    }

    pub(crate) async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Option<String>,
        as_user: Option<&str>,
    ) -> (u16, String) {
        self.try_send(method, path, body, as_user).await.unwrap()
    }

    /// As `send`, but a dead connection is an error, not a panic (fault tests).
    pub(crate) async fn try_send(
        &mut self,
        method: &str,
        path: &str,
        body: Option<String>,
        as_user: Option<&str>,
    ) -> Result<(u16, String), String> {
        let mut req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("content-type", "application/json");
        if let Some(u) = as_user {
            req = req.header("impersonate-user", u);
        }
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .unwrap();
        self.sender.ready().await.map_err(|e| e.to_string())?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| e.to_string())?;
        let code = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((code, String::from_utf8_lossy(&body).into_owned()))
    }
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3
}

/// Two `vkube serve` processes on one store: a RoleBinding created through A, then at once a
/// request through B by the user it binds. B must allow it every time.
fn no_stale_deny_across_two_processes(store: &str, tries: usize) {
    let a = Server::start_with(&["--store", store, "--identity-secret-file", &shared_secret()]);
    let b = Server::start_with(&["--store", store, "--identity-secret-file", &shared_secret()]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // One cluster identity: A's admin kubeconfig works against B.
        let mut via_a = Api::connect(&a.kubeconfig(), a.port).await;
        let mut via_b = Api::connect(&a.kubeconfig(), b.port).await;
        let (code, body) = via_a.send("POST", "/api/v1/namespaces", Some(r#"{"metadata":{"name":"race"}}"#.into()), None).await;
        assert!(code == 201 || code == 409, "{code} {body}");
        let mut allowed = 0;
        let mut latencies = Vec::new();
        for i in 0..tries {
            let user = format!("user-{i}");
            let binding = format!(
                r#"{{"metadata":{{"name":"rb-{i}"}},"roleRef":{{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"view"}},"subjects":[{{"apiGroup":"rbac.authorization.k8s.io","kind":"User","name":"{user}"}}]}}"#
            );
            let (code, body) = via_a.send("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/race/rolebindings", Some(binding), None).await;
            assert_eq!(code, 201, "{body}");
            let started = Instant::now();
            let (code, body) = via_b.send("GET", "/api/v1/namespaces/race/configmaps", None, Some(&user)).await;
            latencies.push(started.elapsed());
            if code == 200 {
                allowed += 1;
            } else {
                eprintln!("try {i}: {code} {body}");
            }
        }
        // The deny path: a user nobody bound, through B (caught up), for its added latency.
        let mut denies = Vec::new();
        for _ in 0..200 {
            let started = Instant::now();
            let (code, _) = via_b.send("GET", "/api/v1/namespaces/race/configmaps", None, Some("nobody")).await;
            denies.push(started.elapsed());
            assert_eq!(code, 403);
        }
        latencies.sort();
        denies.sort();
        eprintln!(
            "{store}: {allowed}/{tries} allowed through the other process; allow p50 {:.2} ms p99 {:.2} ms; deny p50 {:.2} ms p99 {:.2} ms",
            pct(&latencies, 0.5),
            pct(&latencies, 0.99),
            pct(&denies, 0.5),
            pct(&denies, 0.99)
        );
        assert_eq!(allowed, tries, "stale denies on {store}");
    });
}

#[test]
fn no_stale_deny_on_etcd() {
    let endpoints = crate::servers::etcd_endpoints();
    let store = format!(
        "etcd://{endpoints}?prefix=/no-stale-deny-{}",
        std::process::id()
    );
    no_stale_deny_across_two_processes(&store, 1000);
}

#[test]
fn no_stale_deny_on_postgres() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = rt.block_on(crate::servers::postgres_database(&format!(
        "nostale{}",
        std::process::id()
    )));
    no_stale_deny_across_two_processes(&url, 1000);
}

/// ClusterRole aggregation follows the labelled roles as they come and go, and the review APIs
/// refuse malformed specs as upstream does.
#[test]
fn aggregation_and_review_validation() {
    let server = Server::start();
    let k = "kubectl";
    let role = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: widgets-view\n  labels: {rbac.authorization.k8s.io/aggregate-to-view: \"true\"}\nrules:\n- {apiGroups: [example.com], resources: [widgets], verbs: [get, list]}\n";
    apply_file(&server, k, role, "create");
    let view_has = |resource: &str| {
        let mut seen = false;
        for _ in 0..50 {
            let rules = run(
                &server,
                k,
                &[
                    "get",
                    "clusterrole",
                    "view",
                    "-o",
                    "jsonpath={.rules[*].resources}",
                ],
            );
            seen = rules.contains(resource);
            if seen {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        seen
    };
    assert!(view_has("widgets"), "view aggregates the new role");
    // edit and admin aggregate view, so they follow too.
    let admin = run(
        &server,
        k,
        &[
            "get",
            "clusterrole",
            "admin",
            "-o",
            "jsonpath={.rules[*].resources}",
        ],
    );
    assert!(admin.contains("widgets"), "{admin}");
    run(&server, k, &["delete", "clusterrole", "widgets-view"]);
    let mut gone = false;
    for _ in 0..50 {
        let rules = run(
            &server,
            k,
            &[
                "get",
                "clusterrole",
                "view",
                "-o",
                "jsonpath={.rules[*].resources}",
            ],
        );
        if !rules.contains("widgets") {
            gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(gone, "view drops the deleted role's rules");

    let both = "apiVersion: authorization.k8s.io/v1\nkind: SubjectAccessReview\nspec:\n  user: jane\n  resourceAttributes: {verb: get, resource: pods}\n  nonResourceAttributes: {verb: get, path: /api}\n";
    let file = server.dir.path().join("sar.yaml");
    std::fs::write(&file, both).unwrap();
    let out = server.kubectl(k, &["create", "-f", &file.display().to_string()]);
    assert!(
        out.stderr
            .contains("cannot be specified in combination with nonResourceAttributes"),
        "{}",
        out.stderr
    );
    let nobody = "apiVersion: authorization.k8s.io/v1\nkind: SubjectAccessReview\nspec:\n  resourceAttributes: {verb: get, resource: pods}\n";
    std::fs::write(&file, nobody).unwrap();
    let out = server.kubectl(k, &["create", "-f", &file.display().to_string()]);
    assert!(
        out.stderr
            .contains("at least one of user or group must be specified"),
        "{}",
        out.stderr
    );
    let ok = "apiVersion: authorization.k8s.io/v1\nkind: SubjectAccessReview\nspec:\n  user: jane\n  groups: [system:authenticated]\n  nonResourceAttributes: {verb: get, path: /apis/apps}\n";
    std::fs::write(&file, ok).unwrap();
    let out = run(
        &server,
        k,
        &[
            "create",
            "-f",
            &file.display().to_string(),
            "-o",
            "jsonpath={.status.allowed} {.status.reason}",
        ],
    );
    assert_eq!(
        out,
        r#"true RBAC: allowed by ClusterRoleBinding "system:discovery" of ClusterRole "system:discovery" to Group "system:authenticated""#
    );
}

/// The seed scenario (issue 8): three replicas on one store, an OIDC user whose group is bound by
/// a ClusterRoleBinding, 3000 requests round-robin while RoleBindings come and go: every replica
/// allows every request, and every replica says the same `whoami`. `store_flags(i)` are replica
/// i's flags naming the store (`backend` names it in the output).
pub(crate) fn seed_scenario(backend: &str, store_flags: &dyn Fn(usize) -> Vec<String>) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let idp = rt.block_on(vkube_auth::testing::TestIdp::start("/tenant/v2.0"));
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("idp.pem");
    std::fs::write(&ca, &idp.ca_pem).unwrap();
    let flags = |id: usize| {
        let mut flags = store_flags(id);
        flags.extend([
            format!("--oidc-issuer-url={}", idp.issuer),
            "--oidc-client-id=vkube".into(),
            "--oidc-username-claim=preferred_username".into(),
            "--oidc-groups-claim=groups".into(),
            format!("--oidc-ca-file={}", ca.display()),
        ]);
        flags
    };
    let replicas: Vec<Server> = (0..3)
        .map(|i| {
            let f = flags(i);
            Server::start_with(&strs(&f))
        })
        .collect();
    let group = "0f0c2f0e-aaaa-4bbb-8ccc-000000000001";
    run(
        &replicas[0],
        "kubectl",
        &[
            "create",
            "clusterrolebinding",
            "team-view",
            "--clusterrole=view",
            &format!("--group={group}"),
        ],
    );
    let mut claims = idp.claims("vkube");
    claims["preferred_username"] = "jane@contoso.com".into();
    claims["groups"] = serde_json::json!([group]);
    claims["exp"] = (vkube_auth::unix_now() + 3600).into();
    let token = idp.mint("RS256", &claims);
    rt.block_on(async {
        let mut users = Vec::new();
        for r in &replicas {
            users.push(Api::connect_as(&r.kubeconfig(), r.port, Some(token.clone())).await);
        }
        let mut whoami = Vec::new();
        for u in users.iter_mut() {
            let review = r#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#;
            let (code, body) = u.send("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", Some(review.into()), None).await;
            assert_eq!(code, 201, "{body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            whoami.push(v["status"]["userInfo"].to_string());
        }
        assert!(whoami.iter().all(|w| *w == whoami[0]), "replicas disagree on whoami: {whoami:?}");
        // RoleBindings created and deleted meanwhile, through every replica.
        let kubeconfig = replicas[0].kubeconfig();
        let ports: Vec<u16> = replicas.iter().map(|r| r.port).collect();
        let churn = tokio::spawn(async move {
            let mut admins = Vec::new();
            for p in &ports {
                admins.push(Api::connect(&kubeconfig, *p).await);
            }
            for i in 0..150 {
                let a = &mut admins[i % 3];
                let body = format!(
                    r#"{{"metadata":{{"name":"churn-{i}"}},"roleRef":{{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"edit"}},"subjects":[{{"apiGroup":"rbac.authorization.k8s.io","kind":"User","name":"someone-{i}"}}]}}"#
                );
                let (code, _) = a.send("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings", Some(body), None).await;
                assert_eq!(code, 201);
                if i >= 2 {
                    let path = format!("/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings/churn-{}", i - 2);
                    let (code, _) = a.send("DELETE", &path, None, None).await;
                    assert_eq!(code, 200);
                }
            }
        });
        let mut denied = Vec::new();
        for i in 0..3000 {
            let (code, body) = users[i % 3].send("GET", "/api/v1/namespaces/default/configmaps", None, None).await;
            if code != 200 {
                denied.push(format!("request {i} via replica {}: {code} {body}", i % 3));
            }
        }
        churn.await.unwrap();
        assert!(denied.is_empty(), "{} of 3000 decisions diverged: {:?}", denied.len(), &denied[..denied.len().min(3)]);
        eprintln!("{backend}: 3000/3000 allowed round-robin over 3 replicas during RoleBinding churn; whoami {}", whoami[0]);
    });
}

#[test]
fn seed_scenario_on_etcd() {
    let store = format!(
        "etcd://{}?prefix=/seed-{}",
        crate::servers::etcd_endpoints(),
        std::process::id()
    );
    seed_scenario(&store, &|i| replica_flags(&store, i));
}

#[test]
fn seed_scenario_on_postgres() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = rt.block_on(crate::servers::postgres_database(&format!(
        "seed{}",
        std::process::id()
    )));
    seed_scenario(&url, &|i| replica_flags(&url, i));
}
