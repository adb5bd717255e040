//! RBAC decision latency: p50/p99 of one decision with 10, 1 000 and 10 000 RoleBindings across
//! 100 namespaces, for an allowed and a denied request, on vkube's authorizer (in process, the
//! view the server keeps). Target: p99 ≤ 10 µs with 10k bindings. Upstream's authorizer is not
//! run in process here; its figure would come from the peer benchmark.

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
}
