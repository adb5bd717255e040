//! RBAC decision latency: p50/p99 of one decision with 10, 1 000 and 10 000 RoleBindings across
//! 100 namespaces, for an allowed and a denied request, on vkube's authorizer (in process, the
//! view the server keeps). Target: p99 ≤ 10 µs with 10k bindings. Then, with `--vkube PATH`,
//! requests/s end to end through `vkube serve` for an OIDC user allowed through a group binding,
//! next to the admin certificate (which skips RBAC) on the same server.

mod common;

use std::time::Instant;

use serde_json::json;
use vkube_auth::UserInfo;
use vkube_auth::rbac::{Attributes, Decision, Rbac, bootstrap};

fn policy(bindings: usize) -> Rbac {
    let rbac = Rbac::new();
    for role in bootstrap::cluster_roles() {
        let name = role["metadata"]["name"].as_str().unwrap().to_string();
        rbac.apply(&format!("/registry/clusterroles/{name}"), Some(&role));
    }
    for b in bootstrap::cluster_role_bindings() {
        let name = b["metadata"]["name"].as_str().unwrap().to_string();
        rbac.apply(&format!("/registry/clusterrolebindings/{name}"), Some(&b));
    }
    rbac.apply(
        "/registry/clusterroles/reader",
        Some(&json!({"rules": [{"apiGroups": [""], "resources": ["pods", "configmaps"], "verbs": ["get", "list", "watch"]}]})),
    );
    for i in 0..bindings {
        let ns = format!("ns-{}", i % 100);
        let binding = json!({
            "roleRef": {"kind": "ClusterRole", "name": "reader"},
            "subjects": [{"kind": "User", "name": format!("user-{i}")}, {"kind": "Group", "name": format!("team-{}", i % 50)}],
        });
        rbac.apply(
            &format!("/registry/rolebindings/{ns}/rb-{i}"),
            Some(&binding),
        );
    }
    rbac
}

fn measure(rbac: &Rbac, user: &UserInfo, a: &Attributes, want_allow: bool) -> (f64, f64) {
    let mut samples = Vec::with_capacity(20_000);
    for _ in 0..20_000 {
        let t = Instant::now();
        let d = rbac.authorize(user, a);
        samples.push(t.elapsed());
        assert_eq!(matches!(d, Decision::Allow(_)), want_allow);
    }
    samples.sort();
    let p = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    (p(0.5), p(0.99))
}

/// Requests/s and p50/p99 of `requests` GETs, `concurrency` at a time, on one HTTP/2 connection.
async fn load(client: &common::Client, requests: usize, concurrency: usize) -> (f64, f64, f64) {
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(requests);
    let mut tasks = tokio::task::JoinSet::new();
    let mut sent = 0;
    while sent < requests || !tasks.is_empty() {
        while sent < requests && tasks.len() < concurrency {
            let c = client.clone();
            tasks.spawn(async move {
                let t = Instant::now();
                let r = c
                    .request("GET", "/api/v1/namespaces/default/configmaps", None)
                    .await;
                assert!(matches!(r, Ok((200, _))), "{r:?}");
                t.elapsed()
            });
            sent += 1;
        }
        if let Some(Ok(d)) = tasks.join_next().await {
            latencies.push(d);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    (requests as f64 / secs, p(0.5), p(0.99))
}

async fn end_to_end(vkube: &str) -> anyhow::Result<()> {
    let idp = vkube_auth::testing::TestIdp::start("").await;
    let idp_dir = tempfile::tempdir()?;
    let ca = idp_dir.path().join("idp.pem");
    std::fs::write(&ca, &idp.ca_pem)?;
    let dir = tempfile::tempdir()?;
    let port = common::free_port();
    let child = std::process::Command::new(vkube)
        .args(["serve", "--data-dir", &dir.path().display().to_string()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args([
            &format!("--oidc-issuer-url={}", idp.issuer),
            "--oidc-client-id=vkube",
            "--oidc-groups-claim=groups",
        ])
        .arg(format!("--oidc-ca-file={}", ca.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let server = common::Server { child, port, dir };
    let admin = server
        .wait_ready(std::time::Duration::from_secs(30))
        .await?;
    let binding = r#"{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRoleBinding","metadata":{"name":"devs-view"},"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"view"},"subjects":[{"apiGroup":"rbac.authorization.k8s.io","kind":"Group","name":"dev"}]}"#;
    let (code, body) = admin
        .request(
            "POST",
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            Some(binding.into()),
        )
        .await?;
    anyhow::ensure!(code == 201, "{code} {body}");
    let mut claims = idp.claims("vkube");
    claims["groups"] = json!(["dev"]);
    claims["exp"] = json!(vkube_auth::unix_now() + 3600);
    let user = common::Client::connect_as(&server, Some(idp.mint("RS256", &claims))).await?;
    let _ = load(&user, 500, 16).await; // warm up: JWKS fetched, caches filled
    let as_user = load(&user, 5000, 16).await;
    let as_admin = load(&admin, 5000, 16).await;
    println!();
    println!(
        "| GET configmaps, 16 in flight, one HTTP/2 connection | requests/s | p50 (ms) | p99 (ms) |"
    );
    println!("|---|---:|---:|---:|");
    println!(
        "| OIDC user, allowed through a group's ClusterRoleBinding | {:.0} | {:.2} | {:.2} |",
        as_user.0, as_user.1, as_user.2
    );
    println!(
        "| admin client certificate (system:masters, no RBAC lookup) | {:.0} | {:.2} | {:.2} |",
        as_admin.0, as_admin.1, as_admin.2
    );
    println!();
    println!(
        "vkube RSS after the load: {:.1} MiB",
        common::rss_mib(server.child.id())
    );
    Ok(())
}

fn main() {
    println!("| RoleBindings | allow p50 (µs) | allow p99 (µs) | deny p50 (µs) | deny p99 (µs) |");
    println!("|---:|---:|---:|---:|---:|");
    for n in [10, 1_000, 10_000] {
        let rbac = policy(n);
        let i = n / 2;
        // A user in a group that is bound in many namespaces, asking in the one it is bound in.
        let user = UserInfo {
            username: format!("user-{i}"),
            groups: vec![format!("team-{}", i % 50), "system:authenticated".into()],
            ..UserInfo::default()
        };
        let ask = |ns: &str| Attributes {
            verb: "list".into(),
            resource_request: true,
            resource: "pods".into(),
            namespace: ns.into(),
            ..Attributes::default()
        };
        let allow = measure(&rbac, &user, &ask(&format!("ns-{}", i % 100)), true);
        let mut outsider = user.clone();
        outsider.username = "nobody".into();
        outsider.groups = vec!["system:authenticated".into()];
        let deny = measure(&rbac, &outsider, &ask("ns-0"), false);
        println!(
            "| {n} | {:.2} | {:.2} | {:.2} | {:.2} |",
            allow.0, allow.1, deny.0, deny.1
        );
    }
    println!();
    println!(
        "One decision of the in-process authorizer (bindings indexed by subject); the server adds the no-stale-deny check on denies (one store revision read, plus a wait only when its view is behind)."
    );
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--vkube") {
        let vkube = args.get(i + 1).expect("--vkube PATH").clone();
        let rt = tokio::runtime::Runtime::new().expect("a runtime");
        if let Err(e) = rt.block_on(end_to_end(&vkube)) {
            eprintln!("end to end: {e:#}");
            std::process::exit(1);
        }
    }
}
