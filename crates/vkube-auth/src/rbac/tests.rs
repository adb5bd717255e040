//! Decisions over bindings: namespaces, groups, service accounts, first match, reasons, and the
//! bootstrap policy.

use serde_json::json;

use super::*;

fn user(name: &str, groups: &[&str]) -> UserInfo {
    UserInfo {
        username: name.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        ..UserInfo::default()
    }
}

fn req(verb: &str, resource: &str, ns: &str) -> Attributes {
    Attributes {
        verb: verb.into(),
        resource_request: true,
        resource: resource.into(),
        namespace: ns.into(),
        ..Default::default()
    }
}

fn policy() -> Rbac {
    let rbac = Rbac::new();
    rbac.apply("/registry/clusterroles/pod-reader", Some(&json!({"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]})));
    rbac.apply(
        "/registry/clusterroles/node-reader",
        Some(&json!({"rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]}]})),
    );
    rbac.apply(
        "/registry/rolebindings/ns1/readers",
        Some(
            &json!({"roleRef": {"kind": "ClusterRole", "name": "pod-reader"}, "subjects": [
            {"kind": "User", "name": "alice"}, {"kind": "Group", "name": "devs"},
            {"kind": "ServiceAccount", "name": "bot", "namespace": "ns1"}]}),
        ),
    );
    rbac
}

#[test]
fn cluster_role_bound_in_one_namespace() {
    let rbac = policy();
    let alice = user("alice", &[]);
    assert!(matches!(
        rbac.authorize(&alice, &req("list", "pods", "ns1")),
        Decision::Allow(_)
    ));
    assert_eq!(
        rbac.authorize(&alice, &req("list", "pods", "ns2")),
        Decision::Deny
    );
    rbac.apply("/registry/rolebindings/ns1/nodes", Some(&json!({"roleRef": {"kind": "ClusterRole", "name": "node-reader"}, "subjects": [{"kind": "User", "name": "alice"}]})));
    assert_eq!(
        rbac.authorize(&alice, &req("list", "nodes", "")),
        Decision::Deny,
        "cluster-scoped through a RoleBinding"
    );
}

#[test]
fn groups_and_service_accounts() {
    let rbac = policy();
    assert!(matches!(
        rbac.authorize(&user("bob", &["devs"]), &req("get", "pods", "ns1")),
        Decision::Allow(_)
    ));
    let sa = user("system:serviceaccount:ns1:bot", &["system:serviceaccounts"]);
    let Decision::Allow(why) = rbac.authorize(&sa, &req("get", "pods", "ns1")) else {
        panic!()
    };
    assert_eq!(
        why,
        r#"RBAC: allowed by RoleBinding "readers/ns1" of ClusterRole "pod-reader" to ServiceAccount "bot/ns1""#
    );
    assert_eq!(
        rbac.authorize(&user("carol", &[]), &req("get", "pods", "ns1")),
        Decision::Deny
    );
}

#[test]
fn updates_and_deletes_take_effect() {
    let rbac = policy();
    let alice = user("alice", &[]);
    rbac.apply("/registry/rolebindings/ns1/readers", None);
    assert_eq!(
        rbac.authorize(&alice, &req("get", "pods", "ns1")),
        Decision::Deny
    );
    rbac.apply("/registry/clusterrolebindings/all", Some(&json!({"roleRef": {"kind": "ClusterRole", "name": "pod-reader"}, "subjects": [{"kind": "Group", "name": "everyone"}]})));
    let Decision::Allow(why) =
        rbac.authorize(&user("x", &["everyone"]), &req("get", "pods", "ns9"))
    else {
        panic!()
    };
    assert_eq!(
        why,
        r#"RBAC: allowed by ClusterRoleBinding "all" of ClusterRole "pod-reader" to Group "everyone""#
    );
    rbac.apply("/registry/clusterroles/pod-reader", None);
    assert_eq!(
        rbac.authorize(&user("x", &["everyone"]), &req("get", "pods", "ns9")),
        Decision::Deny,
        "a binding to a missing role grants nothing"
    );
}

#[test]
fn the_bootstrap_policy_grants_upstreams_basics() {
    let rbac = Rbac::new();
    for role in bootstrap::cluster_roles() {
        rbac.apply(
            &format!(
                "/registry/clusterroles/{}",
                role["metadata"]["name"].as_str().unwrap()
            ),
            Some(&role),
        );
    }
    for b in bootstrap::cluster_role_bindings() {
        rbac.apply(
            &format!(
                "/registry/clusterrolebindings/{}",
                b["metadata"]["name"].as_str().unwrap()
            ),
            Some(&b),
        );
    }
    let path = |p: &str| Attributes {
        verb: "get".into(),
        path: p.into(),
        ..Default::default()
    };
    let authed = user("u", &["system:authenticated"]);
    let anon = user("system:anonymous", &["system:unauthenticated"]);
    assert!(matches!(
        rbac.authorize(&authed, &path("/apis/apps/v1")),
        Decision::Allow(_)
    ));
    assert_eq!(rbac.authorize(&anon, &path("/api")), Decision::Deny);
    assert!(matches!(
        rbac.authorize(&anon, &path("/readyz")),
        Decision::Allow(_)
    ));
    assert_eq!(rbac.authorize(&authed, &path("/metrics")), Decision::Deny);
    let whoami = Attributes {
        verb: "create".into(),
        resource_request: true,
        group: "authentication.k8s.io".into(),
        resource: "selfsubjectreviews".into(),
        ..Default::default()
    };
    assert!(matches!(
        rbac.authorize(&authed, &whoami),
        Decision::Allow(_)
    ));
    let masters = user("root", &["system:masters"]);
    assert!(matches!(
        rbac.authorize(&masters, &req("delete", "nodes", "")),
        Decision::Allow(_)
    ));
}

#[test]
fn reconciling_adds_and_respects_opt_out() {
    let want = &bootstrap::cluster_roles()[0];
    let mut have = want.clone();
    have["rules"] = json!([]);
    let fixed = bootstrap::reconcile(&have, want).unwrap();
    assert_eq!(fixed["rules"], want["rules"]);
    assert!(bootstrap::reconcile(want, want).is_none());
    have["metadata"]["annotations"][bootstrap::AUTOUPDATE] = json!("false");
    assert!(bootstrap::reconcile(&have, want).is_none());
}
