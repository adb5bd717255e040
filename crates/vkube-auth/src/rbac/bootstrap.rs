//! Upstream's bootstrap RBAC policy (the part a tenant cluster needs), reconciled at start:
//! cluster-admin, the aggregated admin/edit/view roles and what they aggregate, discovery,
//! basic-user, public-info-viewer, monitoring and the service-account issuer documents, with
//! their ClusterRoleBindings, and kube-controller-manager's `system:controller:*` roles bound to
//! its controllers' service accounts ([`super::controller_roles`]). Objects carry
//! `rbac.authorization.kubernetes.io/autoupdate: "true"`; one a user set to "false" is left alone.

use serde_json::{Value, json};

pub const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";

const RW: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
const READ: &[&str] = &["get", "list", "watch"];

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

fn urls(paths: &[&str], verbs: &[&str]) -> Value {
    json!({"nonResourceURLs": paths, "verbs": verbs})
}

fn meta(name: &str, labels: Value) -> Value {
    let mut labels = labels;
    labels["kubernetes.io/bootstrapping"] = json!("rbac-defaults");
    json!({"name": name, "labels": labels, "annotations": {AUTOUPDATE: "true"}})
}

fn cluster_role(name: &str, labels: Value, rules: Vec<Value>) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": meta(name, labels), "rules": rules})
}

fn aggregated(name: &str, labels: Value, selector: &str) -> Value {
    let mut role = cluster_role(name, labels, vec![]);
    role["aggregationRule"] =
        json!({"clusterRoleSelectors": [{"matchLabels": {selector: "true"}}]});
    role
}

fn binding(name: &str, role: &str, groups: &[&str]) -> Value {
    let subjects: Vec<Value> = groups
        .iter()
        .map(|g| json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": g}))
        .collect();
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": meta(name, json!({})),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": subjects,
    })
}

const AGG: &str = "rbac.authorization.k8s.io/aggregate-to-";

/// The bootstrap ClusterRoles.
pub fn cluster_roles() -> Vec<Value> {
    let mut roles = basic_cluster_roles();
    roles.extend(super::controller_roles::cluster_roles());
    roles
}

fn basic_cluster_roles() -> Vec<Value> {
    let health = ["/healthz", "/livez", "/readyz", "/version", "/version/"];
    vec![
        cluster_role(
            "cluster-admin",
            json!({}),
            vec![rule(&["*"], &["*"], &["*"]), urls(&["*"], &["*"])],
        ),
        aggregated("admin", json!({}), &format!("{AGG}admin")),
        aggregated(
            "edit",
            json!({format!("{AGG}admin"): "true"}),
            &format!("{AGG}edit"),
        ),
        aggregated(
            "view",
            json!({format!("{AGG}edit"): "true"}),
            &format!("{AGG}view"),
        ),
        cluster_role(
            "system:aggregate-to-admin",
            json!({format!("{AGG}admin"): "true"}),
            vec![
                rule(
                    &["authorization.k8s.io"],
                    &["localsubjectaccessreviews"],
                    &["create"],
                ),
                rule(
                    &["rbac.authorization.k8s.io"],
                    &["rolebindings", "roles"],
                    &[RW, READ].concat(),
                ),
            ],
        ),
        cluster_role(
            "system:aggregate-to-edit",
            json!({format!("{AGG}edit"): "true"}),
            vec![
                rule(
                    &[""],
                    &[
                        "pods/attach",
                        "pods/exec",
                        "pods/portforward",
                        "pods/proxy",
                        "secrets",
                        "services/proxy",
                    ],
                    READ,
                ),
                rule(&[""], &["serviceaccounts"], &["impersonate"]),
                rule(
                    &[""],
                    &[
                        "pods",
                        "pods/attach",
                        "pods/exec",
                        "pods/portforward",
                        "pods/proxy",
                    ],
                    RW,
                ),
                rule(&[""], &["pods/eviction"], &["create"]),
                rule(
                    &[""],
                    &[
                        "configmaps",
                        "events",
                        "persistentvolumeclaims",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "secrets",
                        "serviceaccounts",
                        "services",
                        "services/proxy",
                    ],
                    RW,
                ),
                rule(&[""], &["serviceaccounts/token"], &["create"]),
                rule(
                    &["apps"],
                    &[
                        "daemonsets",
                        "deployments",
                        "deployments/rollback",
                        "deployments/scale",
                        "replicasets",
                        "replicasets/scale",
                        "statefulsets",
                        "statefulsets/scale",
                    ],
                    RW,
                ),
                rule(&["autoscaling"], &["horizontalpodautoscalers"], RW),
                rule(&["batch"], &["cronjobs", "jobs"], RW),
                rule(&["policy"], &["poddisruptionbudgets"], RW),
                rule(
                    &["networking.k8s.io"],
                    &["ingresses", "networkpolicies"],
                    RW,
                ),
                rule(&["coordination.k8s.io"], &["leases"], &[RW, READ].concat()),
            ],
        ),
        cluster_role(
            "system:aggregate-to-view",
            json!({format!("{AGG}view"): "true"}),
            vec![
                rule(
                    &[""],
                    &[
                        "configmaps",
                        "endpoints",
                        "persistentvolumeclaims",
                        "persistentvolumeclaims/status",
                        "pods",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "serviceaccounts",
                        "services",
                        "services/status",
                    ],
                    READ,
                ),
                rule(
                    &[""],
                    &[
                        "bindings",
                        "events",
                        "limitranges",
                        "namespaces/status",
                        "pods/log",
                        "pods/status",
                        "replicationcontrollers/status",
                        "resourcequotas",
                        "resourcequotas/status",
                    ],
                    READ,
                ),
                rule(&[""], &["namespaces"], READ),
                rule(&["discovery.k8s.io"], &["endpointslices"], READ),
                rule(
                    &["apps"],
                    &[
                        "controllerrevisions",
                        "daemonsets",
                        "daemonsets/status",
                        "deployments",
                        "deployments/scale",
                        "deployments/status",
                        "replicasets",
                        "replicasets/scale",
                        "replicasets/status",
                        "statefulsets",
                        "statefulsets/scale",
                        "statefulsets/status",
                    ],
                    READ,
                ),
                rule(
                    &["autoscaling"],
                    &[
                        "horizontalpodautoscalers",
                        "horizontalpodautoscalers/status",
                    ],
                    READ,
                ),
                rule(
                    &["batch"],
                    &["cronjobs", "cronjobs/status", "jobs", "jobs/status"],
                    READ,
                ),
                rule(
                    &["policy"],
                    &["poddisruptionbudgets", "poddisruptionbudgets/status"],
                    READ,
                ),
                rule(
                    &["networking.k8s.io"],
                    &["ingresses", "ingresses/status", "networkpolicies"],
                    READ,
                ),
            ],
        ),
        cluster_role(
            "system:discovery",
            json!({}),
            vec![urls(
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
                &["get"],
            )],
        ),
        cluster_role(
            "system:basic-user",
            json!({}),
            vec![
                rule(
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                    &["create"],
                ),
                rule(
                    &["authentication.k8s.io"],
                    &["selfsubjectreviews"],
                    &["create"],
                ),
            ],
        ),
        // Delegated authentication and authorization, for aggregated API servers.
        cluster_role(
            "system:auth-delegator",
            json!({}),
            vec![
                rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
                rule(
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                    &["create"],
                ),
            ],
        ),
        cluster_role(
            "system:public-info-viewer",
            json!({}),
            vec![urls(&health, &["get"])],
        ),
        cluster_role(
            "system:monitoring",
            json!({}),
            vec![urls(
                &[
                    "/healthz",
                    "/healthz/*",
                    "/livez",
                    "/livez/*",
                    "/metrics",
                    "/metrics/slis",
                    "/readyz",
                    "/readyz/*",
                ],
                &["get"],
            )],
        ),
        // kube-controller-manager's own identity: vkube's controllers make their service
        // accounts with it, as upstream's client builder does before each controller starts.
        cluster_role(
            "system:kube-controller-manager",
            json!({}),
            vec![
                super::controller_roles::events_rule(),
                rule(&["coordination.k8s.io"], &["leases"], &["create"]),
                json!({"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                       "resourceNames": ["kube-controller-manager"], "verbs": ["get", "update"]}),
                rule(&[""], &["secrets", "serviceaccounts"], &["create"]),
                rule(&[""], &["secrets"], &["delete"]),
                rule(
                    &[""],
                    &["namespaces", "secrets", "serviceaccounts"],
                    &["get"],
                ),
                rule(&[""], &["secrets", "serviceaccounts"], &["update"]),
                rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
                rule(
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                    &["create"],
                ),
                rule(&["*"], &["*"], &["list", "watch"]),
                rule(&[""], &["serviceaccounts/token"], &["create"]),
            ],
        ),
        cluster_role(
            "system:service-account-issuer-discovery",
            json!({}),
            vec![urls(
                &[
                    "/.well-known/openid-configuration",
                    "/.well-known/openid-configuration/",
                    "/openid/v1/jwks",
                    "/openid/v1/jwks/",
                ],
                &["get"],
            )],
        ),
    ]
}

/// The bootstrap ClusterRoleBindings.
pub fn cluster_role_bindings() -> Vec<Value> {
    let mut bindings = basic_cluster_role_bindings();
    bindings.extend(super::controller_roles::cluster_role_bindings());
    bindings
}

fn basic_cluster_role_bindings() -> Vec<Value> {
    vec![
        binding("cluster-admin", "cluster-admin", &["system:masters"]),
        binding(
            "system:discovery",
            "system:discovery",
            &["system:authenticated"],
        ),
        binding(
            "system:basic-user",
            "system:basic-user",
            &["system:authenticated"],
        ),
        binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            &["system:authenticated", "system:unauthenticated"],
        ),
        binding(
            "system:monitoring",
            "system:monitoring",
            &["system:monitoring"],
        ),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": meta("system:kube-controller-manager", json!({})),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:kube-controller-manager"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:kube-controller-manager"}],
        }),
        binding(
            "system:service-account-issuer-discovery",
            "system:service-account-issuer-discovery",
            &["system:serviceaccounts"],
        ),
    ]
}

/// What reconciling `want` into the stored `have` gives (upstream's policy reconciliation adds
/// missing rules and subjects, never removes): `None` when nothing changes or the object opted
/// out with `autoupdate: "false"`.
pub fn reconcile(have: &Value, want: &Value) -> Option<Value> {
    if have["metadata"]["annotations"][AUTOUPDATE] == "false" {
        return None;
    }
    let mut out = have.clone();
    let mut changed = false;
    for field in ["rules", "subjects"] {
        let Some(wanted) = want[field].as_array() else {
            continue;
        };
        let mut list = have[field].as_array().cloned().unwrap_or_default();
        for item in wanted {
            if !list.contains(item) {
                list.push(item.clone());
                changed = true;
            }
        }
        out[field] = Value::Array(list);
    }
    if want.get("aggregationRule").is_some()
        && have.get("aggregationRule") != want.get("aggregationRule")
    {
        out["aggregationRule"] = want["aggregationRule"].clone();
        changed = true;
    }
    changed.then_some(out)
}
