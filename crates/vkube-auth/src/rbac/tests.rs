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

/// The rules of upstream's `testdata/controller-roles.yaml` for the workload controllers.
fn upstream_controller_rules(name: &str) -> serde_json::Value {
    let events = json!({"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch", "update"]});
    let r = |groups: &[&str], resources: &[&str], verbs: &[&str]| json!({"apiGroups": groups, "resources": resources, "verbs": verbs});
    let ae = ["apps", "extensions"];
    json!(match name {
        "deployment-controller" => vec![
            r(&ae, &["deployments"], &["get", "list", "update", "watch"]),
            r(&ae, &["deployments/status"], &["update"]),
            r(&ae, &["deployments/finalizers"], &["update"]),
            r(
                &ae,
                &["replicasets"],
                &[
                    "create", "delete", "get", "list", "patch", "update", "watch"
                ]
            ),
            r(&[""], &["pods"], &["get", "list", "update", "watch"]),
            events,
        ],
        "replicaset-controller" => vec![
            r(&ae, &["replicasets"], &["get", "list", "update", "watch"]),
            r(&ae, &["replicasets/status"], &["update"]),
            r(&ae, &["replicasets/finalizers"], &["update"]),
            r(
                &[""],
                &["pods"],
                &["create", "delete", "list", "patch", "watch"]
            ),
            events,
        ],
        "replication-controller" => vec![
            r(
                &[""],
                &["replicationcontrollers"],
                &["get", "list", "update", "watch"]
            ),
            r(&[""], &["replicationcontrollers/status"], &["update"]),
            r(&[""], &["replicationcontrollers/finalizers"], &["update"]),
            r(
                &[""],
                &["pods"],
                &["create", "delete", "list", "patch", "watch"]
            ),
            events,
        ],
        "statefulset-controller" => vec![
            r(&[""], &["pods"], &["list", "watch"]),
            r(&["apps"], &["statefulsets"], &["get", "list", "watch"]),
            r(&["apps"], &["statefulsets/status"], &["update"]),
            r(&["apps"], &["statefulsets/finalizers"], &["update"]),
            r(
                &[""],
                &["pods"],
                &["create", "delete", "get", "patch", "update"]
            ),
            r(
                &["apps"],
                &["controllerrevisions"],
                &[
                    "create", "delete", "get", "list", "patch", "update", "watch"
                ]
            ),
            r(
                &[""],
                &["persistentvolumeclaims"],
                &["create", "get", "list", "watch"]
            ),
            r(&[""], &["persistentvolumeclaims"], &["delete", "update"]),
            r(&[""], &["pods/finalizers"], &["update"]),
            events,
        ],
        "daemon-set-controller" => vec![
            r(&ae, &["daemonsets"], &["get", "list", "watch"]),
            r(&ae, &["daemonsets/status"], &["update"]),
            r(&ae, &["daemonsets/finalizers"], &["update"]),
            r(&[""], &["nodes"], &["list", "watch"]),
            r(
                &[""],
                &["pods"],
                &["create", "delete", "list", "patch", "watch"]
            ),
            r(&[""], &["pods/binding"], &["create"]),
            r(
                &["apps"],
                &["controllerrevisions"],
                &[
                    "create", "delete", "get", "list", "patch", "update", "watch"
                ]
            ),
            events,
        ],
        "job-controller" => vec![
            r(
                &["batch"],
                &["jobs"],
                &["get", "list", "patch", "update", "watch"]
            ),
            r(&["batch"], &["jobs/status"], &["update"]),
            r(&["batch"], &["jobs/finalizers"], &["update"]),
            r(
                &[""],
                &["pods"],
                &["create", "delete", "list", "patch", "watch"]
            ),
            events,
        ],
        "cronjob-controller" => vec![
            r(
                &["batch"],
                &["cronjobs"],
                &["get", "list", "update", "watch"]
            ),
            r(
                &["batch"],
                &["jobs"],
                &[
                    "create", "delete", "get", "list", "patch", "update", "watch"
                ]
            ),
            r(&["batch"], &["cronjobs/status"], &["update"]),
            r(&["batch"], &["cronjobs/finalizers"], &["update"]),
            r(&[""], &["pods"], &["delete", "list", "watch"]),
            events,
        ],
        "ttl-after-finished-controller" => vec![
            r(&["batch"], &["jobs"], &["delete", "get", "list", "watch"]),
            events,
        ],
        other => panic!("no upstream rules recorded for {other}"),
    })
}

#[test]
fn controller_roles_are_upstreams() {
    let roles = bootstrap::cluster_roles();
    let bindings = bootstrap::cluster_role_bindings();
    let workload = [
        "deployment-controller",
        "replicaset-controller",
        "replication-controller",
        "statefulset-controller",
        "daemon-set-controller",
        "job-controller",
        "cronjob-controller",
        "ttl-after-finished-controller",
    ];
    for sa in workload {
        let name = format!("system:controller:{sa}");
        let role = roles
            .iter()
            .find(|r| r["metadata"]["name"] == name.as_str())
            .unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(role["rules"], upstream_controller_rules(sa), "{name}");
        assert_eq!(
            role["metadata"]["annotations"][bootstrap::AUTOUPDATE],
            "true"
        );
        assert_eq!(
            role["metadata"]["labels"]["kubernetes.io/bootstrapping"],
            "rbac-defaults"
        );
        let binding = bindings
            .iter()
            .find(|b| b["metadata"]["name"] == name.as_str())
            .unwrap_or_else(|| panic!("binding {name} missing"));
        assert_eq!(
            binding["roleRef"],
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name})
        );
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": sa, "namespace": "kube-system"}])
        );
    }
    // Upstream's full list with 1.33's default feature gates, each role bound once.
    let names: BTreeSet<&str> = roles
        .iter()
        .filter_map(|r| r["metadata"]["name"].as_str())
        .filter_map(|n| n.strip_prefix("system:controller:"))
        .collect();
    assert_eq!(names.len(), 35);
    for n in [
        "generic-garbage-collector",
        "namespace-controller",
        "service-cidrs-controller",
    ] {
        assert!(names.contains(n), "{n}");
    }
    let bound: BTreeSet<&str> = bindings
        .iter()
        .filter_map(|b| b["metadata"]["name"].as_str())
        .filter_map(|n| n.strip_prefix("system:controller:"))
        .collect();
    assert_eq!(bound, names);
}

#[test]
fn controllers_may_do_their_job_and_no_more() {
    let rbac = Rbac::new();
    for role in bootstrap::cluster_roles() {
        let name = role["metadata"]["name"].as_str().unwrap().to_string();
        rbac.apply(&format!("/registry/clusterroles/{name}"), Some(&role));
    }
    for b in bootstrap::cluster_role_bindings() {
        let name = b["metadata"]["name"].as_str().unwrap().to_string();
        rbac.apply(&format!("/registry/clusterrolebindings/{name}"), Some(&b));
    }
    let ds = user(
        "system:serviceaccount:kube-system:daemon-set-controller",
        &[
            "system:serviceaccounts",
            "system:serviceaccounts:kube-system",
            "system:authenticated",
        ],
    );
    let at = |verb: &str, group: &str, resource: &str, sub: &str| Attributes {
        verb: verb.into(),
        resource_request: true,
        group: group.into(),
        resource: resource.into(),
        subresource: sub.into(),
        namespace: "team-a".into(),
        ..Default::default()
    };
    for (verb, group, resource, sub) in [
        ("create", "", "pods", ""),
        ("delete", "", "pods", ""),
        ("list", "", "nodes", ""),
        ("update", "apps", "daemonsets", "status"),
        ("create", "apps", "controllerrevisions", ""),
        ("create", "events.k8s.io", "events", ""),
    ] {
        assert!(
            matches!(
                rbac.authorize(&ds, &at(verb, group, resource, sub)),
                Decision::Allow(_)
            ),
            "{verb} {group}/{resource}/{sub}"
        );
    }
    for (verb, group, resource, sub) in [
        ("update", "apps", "daemonsets", ""),
        ("delete", "apps", "daemonsets", ""),
        ("get", "", "secrets", ""),
        ("update", "", "pods", "status"),
    ] {
        assert_eq!(
            rbac.authorize(&ds, &at(verb, group, resource, sub)),
            Decision::Deny,
            "{verb} {group}/{resource}/{sub}"
        );
    }
}

#[test]
fn kube_controller_manager_has_its_own_role_and_binding() {
    let roles = super::bootstrap::cluster_roles();
    let role = roles
        .iter()
        .find(|r| r["metadata"]["name"] == "system:kube-controller-manager")
        .expect("the role");
    assert!(role["rules"].as_array().unwrap().len() >= 10);
    let bindings = super::bootstrap::cluster_role_bindings();
    let binding = bindings
        .iter()
        .find(|b| b["metadata"]["name"] == "system:kube-controller-manager")
        .expect("the binding");
    assert_eq!(binding["subjects"][0]["kind"], "User");
}
