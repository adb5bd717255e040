//! kube-apiserver 1.33's API Priority and Fairness configuration objects
//! (`k8s.io/apiserver/pkg/apis/flowcontrol/bootstrap`): the mandatory ones (`exempt` and
//! `catch-all`, both kinds) and the suggested ones, each with the
//! `apf.kubernetes.io/autoupdate-spec: "true"` annotation, as flowcontrol/v1 JSON.

use serde_json::{Value, json};

/// The annotation that says whether the config producer keeps an object's spec.
pub const AUTO_UPDATE: &str = "apf.kubernetes.io/autoupdate-spec";

pub const EXEMPT: &str = "exempt";
pub const CATCH_ALL: &str = "catch-all";

fn meta(kind: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": name, "annotations": {AUTO_UPDATE: "true"}},
        "spec": spec,
    })
}

fn queued(shares: i64, lendable: i64, queues: i64, hand: i64, limit: i64) -> Value {
    json!({
        "type": "Limited",
        "limited": {
            "nominalConcurrencyShares": shares,
            "lendablePercent": lendable,
            "limitResponse": {
                "type": "Queue",
                "queuing": {"queues": queues, "handSize": hand, "queueLengthLimit": limit},
            },
        },
    })
}

fn level(name: &str, spec: Value) -> Value {
    meta("PriorityLevelConfiguration", name, spec)
}

fn groups(names: &[&str]) -> Vec<Value> {
    names
        .iter()
        .map(|n| json!({"kind": "Group", "group": {"name": n}}))
        .collect()
}

fn users(names: &[&str]) -> Vec<Value> {
    names
        .iter()
        .map(|n| json!({"kind": "User", "user": {"name": n}}))
        .collect()
}

fn kube_system_sas(names: &[&str]) -> Vec<Value> {
    names
        .iter()
        .map(|n| json!({"kind": "ServiceAccount", "serviceAccount": {"name": n, "namespace": "kube-system"}}))
        .collect()
}

fn resource_rule(verbs: &[&str], groups: &[&str], resources: &[&str], cluster: bool) -> Value {
    let mut rule = json!({
        "verbs": verbs,
        "apiGroups": groups,
        "resources": resources,
        "namespaces": ["*"],
    });
    // omitempty upstream: false is not written.
    if cluster {
        rule["clusterScope"] = json!(true);
    }
    rule
}

/// Everything: every verb on every resource anywhere, and every non-resource URL.
fn all(subjects: Vec<Value>) -> Value {
    json!({
        "subjects": subjects,
        "resourceRules": [resource_rule(&["*"], &["*"], &["*"], true)],
        "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
    })
}

fn schema(name: &str, level: &str, precedence: i64, by: Option<&str>, rule: Value) -> Value {
    let mut spec = json!({
        "priorityLevelConfiguration": {"name": level},
        "matchingPrecedence": precedence,
        "rules": [rule],
    });
    if let Some(by) = by {
        spec["distinguisherMethod"] = json!({"type": by});
    }
    meta("FlowSchema", name, spec)
}

/// The mandatory PriorityLevelConfigurations, in upstream's order.
pub fn mandatory_levels() -> Vec<Value> {
    vec![
        level(
            CATCH_ALL,
            json!({
                "type": "Limited",
                "limited": {
                    "nominalConcurrencyShares": 5,
                    "lendablePercent": 0,
                    "limitResponse": {"type": "Reject"},
                },
            }),
        ),
        level(
            EXEMPT,
            json!({
                "type": "Exempt",
                "exempt": {"nominalConcurrencyShares": 0, "lendablePercent": 0},
            }),
        ),
    ]
}

/// The mandatory FlowSchemas.
pub fn mandatory_schemas() -> Vec<Value> {
    vec![
        schema(EXEMPT, EXEMPT, 1, None, all(groups(&["system:masters"]))),
        schema(
            CATCH_ALL,
            CATCH_ALL,
            10000,
            Some("ByUser"),
            all(groups(&["system:unauthenticated", "system:authenticated"])),
        ),
    ]
}

/// The suggested PriorityLevelConfigurations.
pub fn suggested_levels() -> Vec<Value> {
    vec![
        level("system", queued(30, 33, 64, 6, 50)),
        level("node-high", queued(40, 25, 64, 6, 50)),
        level("leader-election", queued(10, 0, 16, 4, 50)),
        level("workload-high", queued(40, 50, 128, 6, 50)),
        level("workload-low", queued(100, 90, 128, 6, 50)),
        level("global-default", queued(20, 50, 128, 6, 50)),
    ]
}

/// The suggested FlowSchemas.
pub fn suggested_schemas() -> Vec<Value> {
    const GET_CREATE_UPDATE: &[&str] = &["get", "create", "update"];
    let everyone = || groups(&["system:unauthenticated", "system:authenticated"]);
    let mut leader_subjects = users(&["system:kube-controller-manager", "system:kube-scheduler"]);
    leader_subjects.extend(kube_system_sas(&["*"]));
    let mut endpoint_subjects = users(&["system:kube-controller-manager"]);
    endpoint_subjects.extend(kube_system_sas(&[
        "endpoint-controller",
        "endpointslicemirroring-controller",
    ]));
    vec![
        schema(
            "system-nodes",
            "system",
            500,
            Some("ByUser"),
            all(groups(&["system:nodes"])),
        ),
        schema(
            "system-node-high",
            "node-high",
            400,
            Some("ByUser"),
            json!({
                "subjects": groups(&["system:nodes"]),
                "resourceRules": [
                    resource_rule(&["*"], &[""], &["nodes", "nodes/status"], true),
                    resource_rule(&["*"], &["coordination.k8s.io"], &["leases"], false),
                ],
            }),
        ),
        schema(
            "probes",
            EXEMPT,
            2,
            None,
            json!({
                "subjects": everyone(),
                "nonResourceRules": [{"verbs": ["get"], "nonResourceURLs": ["/healthz", "/readyz", "/livez"]}],
            }),
        ),
        schema(
            "system-leader-election",
            "leader-election",
            100,
            Some("ByUser"),
            json!({
                "subjects": leader_subjects,
                "resourceRules": [resource_rule(GET_CREATE_UPDATE, &["coordination.k8s.io"], &["leases"], false)],
            }),
        ),
        schema(
            "workload-leader-election",
            "leader-election",
            200,
            Some("ByUser"),
            json!({
                "subjects": kube_system_sas(&["*"]),
                "resourceRules": [
                    resource_rule(GET_CREATE_UPDATE, &[""], &["endpoints", "configmaps"], false),
                    resource_rule(GET_CREATE_UPDATE, &["coordination.k8s.io"], &["leases"], false),
                ],
            }),
        ),
        schema(
            "endpoint-controller",
            "workload-high",
            150,
            Some("ByUser"),
            json!({
                "subjects": endpoint_subjects,
                "resourceRules": [resource_rule(GET_CREATE_UPDATE, &[""], &["endpoints"], false)],
            }),
        ),
        schema(
            "kube-controller-manager",
            "workload-high",
            800,
            Some("ByNamespace"),
            all(users(&["system:kube-controller-manager"])),
        ),
        schema(
            "kube-scheduler",
            "workload-high",
            800,
            Some("ByNamespace"),
            all(users(&["system:kube-scheduler"])),
        ),
        schema(
            "kube-system-service-accounts",
            "workload-high",
            900,
            Some("ByNamespace"),
            all(kube_system_sas(&["*"])),
        ),
        schema(
            "service-accounts",
            "workload-low",
            9000,
            Some("ByUser"),
            all(groups(&["system:serviceaccounts"])),
        ),
        schema(
            "global-default",
            "global-default",
            9900,
            Some("ByUser"),
            all(everyone()),
        ),
    ]
}

/// The mandatory object of `kind` named `name`, if there is one.
pub fn mandatory(kind: &str, name: &str) -> Option<Value> {
    let objects = if kind == "FlowSchema" {
        mandatory_schemas()
    } else {
        mandatory_levels()
    };
    objects.into_iter().find(|o| o["metadata"]["name"] == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_lists() {
        let names = |objs: Vec<Value>| -> Vec<String> {
            objs.iter()
                .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(
            names(suggested_levels()),
            [
                "system",
                "node-high",
                "leader-election",
                "workload-high",
                "workload-low",
                "global-default"
            ]
        );
        assert_eq!(names(suggested_schemas()).len(), 11);
        // Every suggested schema names a level that exists.
        let levels: Vec<String> = names(suggested_levels())
            .into_iter()
            .chain(names(mandatory_levels()))
            .collect();
        for s in suggested_schemas().iter().chain(&mandatory_schemas()) {
            let level = s["spec"]["priorityLevelConfiguration"]["name"]
                .as_str()
                .unwrap();
            assert!(levels.iter().any(|l| l == level), "{level}");
        }
    }
}
