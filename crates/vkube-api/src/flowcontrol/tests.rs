use serde_json::{Value, json};

use super::*;

fn messages(kind: &str, mut obj: Value) -> Vec<String> {
    defaults(kind, &mut obj);
    let mut errs = Errors::default();
    if kind == "FlowSchema" {
        validate_flow_schema(&obj, &mut errs);
    } else {
        validate_priority_level(&obj, &mut errs);
    }
    errs.0
        .into_iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect()
}

#[test]
fn bootstrap_objects_are_valid_and_unchanged_by_defaults() {
    for o in bootstrap::mandatory_levels()
        .into_iter()
        .chain(bootstrap::suggested_levels())
    {
        let mut d = o.clone();
        defaults("PriorityLevelConfiguration", &mut d);
        assert_eq!(d, o);
        assert_eq!(
            messages("PriorityLevelConfiguration", o),
            Vec::<String>::new()
        );
    }
    for o in bootstrap::mandatory_schemas()
        .into_iter()
        .chain(bootstrap::suggested_schemas())
    {
        let mut d = o.clone();
        defaults("FlowSchema", &mut d);
        assert_eq!(d, o);
        assert_eq!(messages("FlowSchema", o), Vec::<String>::new());
    }
}

#[test]
fn priority_level_defaults() {
    let mut pl = json!({"spec": {"type": "Limited", "limited": {"limitResponse": {"type": "Queue", "queuing": {}}}}});
    defaults("PriorityLevelConfiguration", &mut pl);
    assert_eq!(
        pl["spec"]["limited"],
        json!({"nominalConcurrencyShares": 30, "lendablePercent": 0, "limitResponse": {"type": "Queue", "queuing": {"handSize": 8, "queues": 64, "queueLengthLimit": 50}}})
    );
    // v1 keeps an explicit 0.
    let mut pl = json!({"spec": {"type": "Limited", "limited": {"nominalConcurrencyShares": 0, "limitResponse": {"type": "Reject"}}}});
    defaults("PriorityLevelConfiguration", &mut pl);
    assert_eq!(pl["spec"]["limited"]["nominalConcurrencyShares"], 0);
    let mut fs = json!({"spec": {}});
    defaults("FlowSchema", &mut fs);
    assert_eq!(fs["spec"]["matchingPrecedence"], 1000);
}

#[test]
fn flow_schema_errors_read_as_upstreams() {
    let fs = json!({
        "metadata": {"name": "mine"},
        "spec": {
            "matchingPrecedence": 1,
            "distinguisherMethod": {"type": "ByFoo"},
            "priorityLevelConfiguration": {"name": ""},
            "rules": [{
                "subjects": [{"kind": "User", "user": {"name": "a"}, "group": {"name": "g"}}],
                "resourceRules": [{"verbs": ["get", "*"], "apiGroups": [], "resources": ["pods"], "namespaces": ["Bad"]}],
                "nonResourceRules": [{"verbs": ["fly"], "nonResourceURLs": ["/a/*/b"]}],
            }, {"subjects": []}],
        },
    });
    assert_eq!(
        messages("FlowSchema", fs),
        [
            "spec.matchingPrecedence: Invalid value: 1: only the schema named 'exempt' may have matchingPrecedence 1",
            "spec.distinguisherMethod.type: Unsupported value: flowcontrol.FlowDistinguisherMethod{Type:\"ByFoo\"}: supported values: \"ByNamespace\", \"ByUser\"",
            "spec.priorityLevelConfiguration.name: Required value: must reference a priority level",
            "spec.rules[0].subjects[0].group: Forbidden: group is forbidden when subject kind is not 'Group'",
            "spec.rules[0].resourceRules[0].verbs: Invalid value: []string{\"get\", \"*\"}: if '*' is present, must not specify other verbs",
            "spec.rules[0].resourceRules[0].apiGroups: Required value: resource rules must supply at least one api group",
            "spec.rules[0].resourceRules[0].namespaces[0]: Invalid value: \"Bad\": each member of this list must be '*' or a DNS-1123 label; a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
            "spec.rules[0].nonResourceRules[0].verbs: Unsupported value: []string{\"fly\"}: supported values: \"create\", \"delete\", \"deletecollection\", \"get\", \"list\", \"patch\", \"proxy\", \"update\", \"watch\"",
            "spec.rules[0].nonResourceRules[0].nonResourceURLs[0]: Invalid value: \"/a/*/b\": wildcard can only do suffix matching",
            "spec.rules[1].subjects: Required value: subjects must contain at least one value",
            "spec.rules[1]: Required value: at least one of resourceRules and nonResourceRules has to be non-empty",
        ]
    );
}

#[test]
fn mandatory_specs_are_fixed_but_exempt_shares_are_free() {
    let mut fs = bootstrap::mandatory("FlowSchema", "catch-all").unwrap();
    fs["spec"]["matchingPrecedence"] = json!(9000);
    let errs = messages("FlowSchema", fs);
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].ends_with("spec of 'catch-all' must equal the fixed value"),
        "{errs:?}"
    );
    let mut pl = bootstrap::mandatory("PriorityLevelConfiguration", "exempt").unwrap();
    pl["spec"]["exempt"]["nominalConcurrencyShares"] = json!(7);
    assert_eq!(
        messages("PriorityLevelConfiguration", pl),
        Vec::<String>::new()
    );
    let mut pl = bootstrap::mandatory("PriorityLevelConfiguration", "catch-all").unwrap();
    pl["spec"]["limited"]["nominalConcurrencyShares"] = json!(7);
    assert_eq!(messages("PriorityLevelConfiguration", pl).len(), 1);
}

#[test]
fn priority_level_errors_read_as_upstreams() {
    let pl = json!({
        "metadata": {"name": "mine"},
        "spec": {"type": "Limited", "limited": {
            "nominalConcurrencyShares": -1,
            "lendablePercent": 101,
            "limitResponse": {"type": "Queue", "queuing": {"queues": 4, "handSize": 5, "queueLengthLimit": -2}},
        }},
    });
    assert_eq!(
        messages("PriorityLevelConfiguration", pl),
        [
            "spec.limited.nominalConcurrencyShares: Invalid value: -1: must be a non-negative integer",
            "spec.limited.limitResponse.queuing.queueLengthLimit: Invalid value: -2: must be positive",
            "spec.limited.limitResponse.queuing.handSize: Invalid value: 5: should not be greater than queues (4)",
            "spec.limited.lendablePercent: Invalid value: 101: must be between 0 and 100, inclusive",
        ]
    );
    let pl = json!({"metadata": {"name": "exempt"}, "spec": {"type": "Limited", "limited": {"limitResponse": {"type": "Reject"}}}});
    assert!(messages("PriorityLevelConfiguration", pl)[0].starts_with(
        "spec.type: Invalid value: \"Limited\": type must be 'Exempt' if and only if name is 'exempt'"
    ));
    let pl = json!({"metadata": {"name": "x"}, "spec": {"type": "Limited", "limited": {"limitResponse": {"type": "Queue", "queuing": {"queues": 1000000, "handSize": 10}}}}});
    assert_eq!(
        messages("PriorityLevelConfiguration", pl),
        [
            "spec.limited.limitResponse.queuing.handSize: Invalid value: 10: required entropy bits of deckSize 1000000 and handSize 10 should not be greater than 60"
        ]
    );
}
