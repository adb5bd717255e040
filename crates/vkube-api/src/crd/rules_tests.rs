//! CEL rules: upstream's messages, paths, reasons, transition rules and escaping.

use serde_json::{Value, json};

use super::{Rules, compile_errors, escape, field_path};
use crate::crd::schema::Schema;
use crate::validation::Errors;

fn rules(schema: Value) -> (Schema, Rules) {
    let s = Schema::parse(&schema).unwrap();
    let r = Rules::compile(&s).unwrap();
    (s, r)
}

fn run(schema: Value, obj: Value, old: Option<Value>) -> Vec<(String, String, String)> {
    let (_, r) = rules(schema);
    let mut errs = Errors::default();
    r.validate(&obj, old.as_ref(), &mut errs);
    errs.0
        .into_iter()
        .map(|e| (e.reason.to_string(), e.field, e.message))
        .collect()
}

fn t(r: &str, f: &str, m: &str) -> (String, String, String) {
    (r.into(), f.into(), m.into())
}

fn spec_with(rules: Value, props: Value) -> Value {
    json!({"type": "object", "properties": {"spec": {
        "type": "object", "x-kubernetes-validations": rules, "properties": props}}})
}

#[test]
fn failing_rules_report_their_message_at_their_node() {
    let s = spec_with(
        json!([
            {"rule": "self.replicas <= self.max", "message": "replicas must not exceed max"},
            {"rule": "self.replicas >= 0"}
        ]),
        json!({"replicas": {"type": "integer"}, "max": {"type": "integer"}}),
    );
    assert!(run(s.clone(), json!({"spec": {"replicas": 1, "max": 2}}), None).is_empty());
    assert_eq!(
        run(s, json!({"spec": {"replicas": -3, "max": -5}}), None),
        [
            t(
                "FieldValueInvalid",
                "spec",
                "Invalid value: replicas must not exceed max"
            ),
            t(
                "FieldValueInvalid",
                "spec",
                "Invalid value: failed rule: self.replicas >= 0"
            ),
        ]
    );
}

#[test]
fn scalar_nodes_show_their_value_and_root_rules_have_a_nil_path() {
    let s = json!({"type": "object",
    "x-kubernetes-validations": [{"rule": "has(self.spec)", "message": "spec is required"}],
    "properties": {"spec": {"type": "object", "properties": {
        "name": {"type": "string", "x-kubernetes-validations": [{"rule": "self.startsWith('a')"}]},
        "n": {"type": "integer", "x-kubernetes-validations": [{"rule": "self % 2 == 0", "message": "must be even"}]}
    }}}});
    assert_eq!(
        run(s.clone(), json!({"metadata": {"name": "x"}}), None),
        [t(
            "FieldValueInvalid",
            "<nil>",
            "Invalid value: spec is required"
        )]
    );
    assert_eq!(
        run(s, json!({"spec": {"name": "bob", "n": 3}}), None),
        [
            t(
                "FieldValueInvalid",
                "spec.n",
                "Invalid value: 3: must be even"
            ),
            t(
                "FieldValueInvalid",
                "spec.name",
                "Invalid value: \"bob\": failed rule: self.startsWith('a')"
            ),
        ]
    );
}

#[test]
fn message_expression_field_path_and_reason() {
    let s = spec_with(
        json!([
            {"rule": "self.min <= self.max", "messageExpression": "'min ' + string(self.min) + ' exceeds max'",
             "fieldPath": ".min", "reason": "FieldValueForbidden"},
            {"rule": "self.max < 100", "message": "too big", "reason": "FieldValueRequired"},
            {"rule": "self.max != 50", "messageExpression": "''", "message": "fallback"}
        ]),
        json!({"min": {"type": "integer"}, "max": {"type": "integer"}}),
    );
    assert_eq!(
        run(s.clone(), json!({"spec": {"min": 7, "max": 5}}), None),
        [t(
            "FieldValueForbidden",
            "spec.min",
            "Forbidden: min 7 exceeds max"
        )]
    );
    assert_eq!(
        run(s.clone(), json!({"spec": {"min": 1, "max": 200}}), None),
        [t("FieldValueRequired", "spec", "Required value: too big")]
    );
    // An empty messageExpression result falls back to the message.
    assert_eq!(
        run(s, json!({"spec": {"min": 1, "max": 50}}), None),
        [t("FieldValueInvalid", "spec", "Invalid value: fallback")]
    );
}

#[test]
fn transition_rules_need_a_correlated_old_value() {
    let s = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "mode": {"type": "string",
            "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "mode is immutable"}]},
        "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
            "items": {"type": "object", "properties": {
                "name": {"type": "string"},
                "port": {"type": "integer",
                    "x-kubernetes-validations": [{"rule": "self >= oldSelf", "message": "port may only grow"}]}}}}
    }}}});
    let new = json!({"spec": {"mode": "b", "ports": [{"name": "x", "port": 1}, {"name": "y", "port": 5}]}});
    // On create no rule runs.
    assert!(run(s.clone(), new.clone(), None).is_empty());
    let old = json!({"spec": {"mode": "a", "ports": [{"name": "y", "port": 6}]}});
    assert_eq!(
        run(s.clone(), new.clone(), Some(old)),
        [
            t(
                "FieldValueInvalid",
                "spec.mode",
                "Invalid value: \"b\": mode is immutable"
            ),
            t(
                "FieldValueInvalid",
                "spec.ports[1].port",
                "Invalid value: 5: port may only grow"
            ),
        ]
    );
    // A field absent from the old object has no oldSelf.
    assert!(run(s, new, Some(json!({"spec": {}}))).is_empty());
}

#[test]
fn collections_strings_and_escaped_names() {
    let s = spec_with(
        json!([
            {"rule": "self.items.all(i, i.size() <= 3)", "message": "short items"},
            {"rule": "self.items.exists_one(i, i == 'b')", "message": "one b"},
            {"rule": "self.labels.all(k, k.matches('^[a-z]+$'))", "message": "lower keys"},
            {"rule": "self.x__dash__y.lowerAscii() == 'ok'", "message": "escaped"},
            {"rule": "self.?missing.orValue('d') == 'd'", "message": "optional"},
            {"rule": "self.items.map(i, i + '!').join(',') == 'a!,b!'", "message": "join"}
        ]),
        json!({
            "items": {"type": "array", "items": {"type": "string"}},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "x-y": {"type": "string"},
            "missing": {"type": "string"}
        }),
    );
    assert!(
        run(
            s.clone(),
            json!({"spec": {"items": ["a", "b"], "labels": {"ab": "1"}, "x-y": "OK"}}),
            None
        )
        .is_empty()
    );
    let errs = run(
        s,
        json!({"spec": {"items": ["abcd", "b", "b"], "labels": {"A": "1"}, "x-y": "no"}}),
        None,
    );
    let messages: Vec<&str> = errs.iter().map(|e| e.2.as_str()).collect();
    assert_eq!(
        messages,
        [
            "Invalid value: short items",
            "Invalid value: one b",
            "Invalid value: lower keys",
            "Invalid value: escaped",
            "Invalid value: join"
        ]
    );
}

#[test]
fn runtime_errors_name_the_rule() {
    let s = spec_with(
        json!([{"rule": "self.a == 1"}]),
        json!({"a": {"type": "integer"}}),
    );
    assert_eq!(
        run(s, json!({"spec": {}}), None),
        [t(
            "FieldValueInvalid",
            "spec",
            "Invalid value: \"object\": no such key: a evaluating rule: self.a == 1"
        )]
    );
}

#[test]
fn compile_errors_carry_schema_paths() {
    let s = Schema::parse(&json!({"type": "object", "properties": {"spec": {"type": "object",
        "x-kubernetes-validations": [{"rule": "self.a ==", "message": "m"}, {"rule": "true", "fieldPath": ".nope"}],
        "properties": {"list": {"type": "array", "items": {"type": "string",
            "x-kubernetes-validations": [{"rule": "self == oldSelf"}]}}}}}}))
    .unwrap();
    let errs = compile_errors(&s, "openAPIV3Schema");
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule",
            "openAPIV3Schema.properties[spec].x-kubernetes-validations[1].fieldPath",
            "openAPIV3Schema.properties[spec].properties[list].items.x-kubernetes-validations[0].rule",
        ]
    );
    assert!(errs[0].detail.starts_with("compilation failed: "));
    assert_eq!(errs[1].detail, "fieldPath must be a valid path");
    assert_eq!(
        errs[2].detail,
        "oldSelf cannot be used on the uncorrelatable portion of the schema within openAPIV3Schema.properties[spec].properties[list]"
    );
    assert!(Rules::compile(&s).is_err());
}

#[test]
fn escaping_and_field_paths_follow_upstream() {
    assert_eq!(escape("foo-bar").as_deref(), Some("foo__dash__bar"));
    assert_eq!(escape("a.b/c").as_deref(), Some("a__dot__b__slash__c"));
    assert_eq!(escape("a__b").as_deref(), Some("a__underscores__b"));
    assert_eq!(escape("namespace").as_deref(), Some("__namespace__"));
    assert_eq!(escape("1a"), None);
    assert_eq!(escape("a b"), None);
    let s = Schema::parse(&json!({"type": "object", "properties": {
        "m": {"type": "object", "additionalProperties": {"type": "string"}},
        "l": {"type": "array", "items": {"type": "object", "properties": {"x": {"type": "string"}}}}}}))
    .unwrap();
    assert_eq!(field_path(&s, ".m['k.1']").unwrap(), "m[k.1]");
    assert_eq!(field_path(&s, ".l[0].x").unwrap(), "l[0].x");
    assert!(field_path(&s, ".nope").is_err());
}
