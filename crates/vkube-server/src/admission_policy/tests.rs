use serde_json::{Value, json};

use super::eval::{self, Annotation, Decision, Inputs};
use super::policy::{Binding, Policy};

fn policy(spec: Value) -> Policy {
    Policy::parse(&json!({"metadata": {"name": "p.example.com"}, "spec": spec}))
}

fn inputs(object: Value, params: Value) -> Inputs {
    Inputs {
        object,
        old_object: Value::Null,
        request: json!({"operation": "CREATE", "userInfo": {"username": "alice"}}),
        params,
        namespace_object: json!({"metadata": {"name": "ns", "labels": {"env": "prod"}}}),
    }
}

fn decisions(p: &Policy, i: &Inputs) -> Vec<Decision> {
    eval::evaluate(p, i, None)
        .decisions
        .expect("conditions matched")
}

#[test]
fn validations_decide_with_upstreams_messages() {
    let p = policy(json!({"validations": [
        {"expression": "object.data.size() < 2"},
        {"expression": "object.data.x == 'y'", "message": "  x must be y  ", "reason": "Forbidden"},
        {"expression": "false", "messageExpression": "'name ' + object.metadata.name"},
        {"expression": "false", "message": "kept", "messageExpression": "1"},
        {"expression": "object.missing.field"},
        {"expression": "object.("},
    ]}));
    let got = decisions(
        &p,
        &inputs(
            json!({"metadata": {"name": "cm"}, "data": {"x": "z", "a": "b"}}),
            Value::Null,
        ),
    );
    let deny = |m: &str, r: &str| Decision::Deny {
        message: m.into(),
        reason: r.into(),
    };
    assert_eq!(
        got[0],
        deny("failed expression: object.data.size() < 2", "Invalid")
    );
    assert_eq!(got[1], deny("x must be y", "Forbidden"));
    assert_eq!(got[2], deny("name cm", "Invalid"));
    // A messageExpression that is not a string falls back to the message.
    assert_eq!(got[3], deny("kept", "Invalid"));
    match &got[4] {
        Decision::Error(why) => assert!(
            why.starts_with("expression 'object.missing.field' resulted in error: "),
            "{why}"
        ),
        other => panic!("{other:?}"),
    }
    match &got[5] {
        Decision::Error(why) => assert!(why.starts_with("compilation error: "), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn params_namespace_object_and_request_are_visible() {
    let p = policy(json!({"validations": [
        {"expression": "object.spec.replicas <= params.data.max"},
        {"expression": "namespaceObject.metadata.labels.env == 'prod'"},
        {"expression": "request.userInfo.username == 'alice'"},
    ]}));
    let i = inputs(
        json!({"spec": {"replicas": 3}}),
        json!({"data": {"max": 5}}),
    );
    assert_eq!(
        decisions(&p, &i),
        [Decision::Admit, Decision::Admit, Decision::Admit]
    );
    let i = inputs(
        json!({"spec": {"replicas": 9}}),
        json!({"data": {"max": 5}}),
    );
    assert!(matches!(decisions(&p, &i)[0], Decision::Deny { .. }));
}

#[test]
fn match_conditions_exclude_or_fail() {
    let p = policy(json!({
        "matchConditions": [{"name": "only-web", "expression": "object.metadata.name.startsWith('web')"}],
        "validations": [{"expression": "false"}]}));
    let r = eval::evaluate(
        &p,
        &inputs(json!({"metadata": {"name": "db"}}), Value::Null),
        None,
    );
    assert!(r.decisions.is_none());
    let r = eval::evaluate(
        &p,
        &inputs(json!({"metadata": {"name": "web"}}), Value::Null),
        None,
    );
    assert_eq!(r.decisions.unwrap().len(), 1);
    // A condition that cannot be evaluated is an error for the failure policy to weigh.
    let r = eval::evaluate(&p, &inputs(json!({"metadata": {}}), Value::Null), None);
    assert!(matches!(r.decisions.unwrap()[0], Decision::Error(_)));
}

#[test]
fn variables_are_lazy_and_composed() {
    let p = policy(json!({
    "variables": [
        {"name": "broken", "expression": "object.nope.nope"},
        {"name": "name", "expression": "object.metadata.name"},
        {"name": "isWeb", "expression": "variables.name.startsWith('web')"},
    ],
    "validations": [
        {"expression": "variables.isWeb"},
        {"expression": "variables.broken == 1"},
    ]}));
    let got = decisions(
        &p,
        &inputs(json!({"metadata": {"name": "web-1"}}), Value::Null),
    );
    // The broken variable only fails the expression that uses it.
    assert_eq!(got[0], Decision::Admit);
    match &got[1] {
        Decision::Error(why) => assert!(
            why.starts_with(
                "expression 'variables.broken == 1' resulted in error: composited variable \"broken\" fails to evaluate: "
            ),
            "{why}"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn audit_annotations_publish_strings_and_refuse_other_types() {
    let p = policy(json!({"auditAnnotations": [
        {"key": "who", "valueExpression": "'by ' + request.userInfo.username"},
        {"key": "none", "valueExpression": "null"},
        {"key": "num", "valueExpression": "1"},
    ]}));
    let r = eval::evaluate(&p, &inputs(json!({}), Value::Null), None);
    assert_eq!(
        r.annotations[0],
        Annotation::Publish("who".into(), "by alice".into())
    );
    assert_eq!(r.annotations[1], Annotation::Exclude);
    assert_eq!(
        r.annotations[2],
        Annotation::Error(
            "valueExpression '1' resulted in unsupported return type: int. Return type must be either string or null."
                .into()
        )
    );
}

#[test]
fn bindings_and_param_kinds_parse() {
    let b = Binding::parse(&json!({"metadata": {"name": "b"}, "spec": {
        "policyName": "p", "validationActions": ["Warn", "Audit"],
        "paramRef": {"selector": {"matchLabels": {"a": "b"}}, "parameterNotFoundAction": "Deny"}}}));
    assert!(b.has("Warn") && b.has("Audit") && !b.has("Deny"));
    let r = b.param_ref.unwrap();
    assert!(r.deny_when_missing && r.selector.is_some() && r.name.is_empty());
    let p = policy(json!({"paramKind": {"apiVersion": "v1", "kind": "ConfigMap"}}));
    let kind = p.param_kind.unwrap();
    assert_eq!(kind.resource().map(|r| r.plural), Some("configmaps"));
    assert_eq!(kind.gvk(), "/v1, Kind=ConfigMap");
}
