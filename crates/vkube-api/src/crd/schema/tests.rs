//! Validation of custom resources against their schemas: exact reasons, fields and messages, as
//! kube-apiserver reports them (the messages of apiextensions' validation tests and of kubectl
//! against a real cluster).

use serde_json::{Value, json};

use super::{Schema, validate};
use crate::validation::Errors;

fn errors(schema: Value, obj: Value) -> Vec<(String, String, String)> {
    let s = Schema::parse(&schema).unwrap();
    let mut obj = obj;
    if obj["metadata"].is_null() {
        obj["metadata"] = json!({"name": "x"});
    }
    let mut errs = Errors::default();
    validate(&s, &obj, &mut errs);
    errs.0
        .into_iter()
        .map(|e| (e.reason.to_string(), e.field, e.message))
        .collect()
}

fn one(schema: Value, obj: Value) -> (String, String, String) {
    let mut e = errors(schema, obj);
    assert_eq!(e.len(), 1, "{e:?}");
    e.remove(0)
}

fn spec(props: Value) -> Value {
    json!({"type": "object", "properties": {"spec": {"type": "object", "properties": props}}})
}

fn t(r: &str, f: &str, m: &str) -> (String, String, String) {
    (r.into(), f.into(), m.into())
}

#[test]
fn type_errors_name_the_expected_and_found_types() {
    let s = spec(json!({"replicas": {"type": "integer"}}));
    assert_eq!(
        one(s.clone(), json!({"spec": {"replicas": "string"}})),
        t(
            "FieldValueTypeInvalid",
            "spec.replicas",
            "Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\""
        )
    );
    // A whole float counts as an integer; a fraction does not.
    assert!(errors(s.clone(), json!({"spec": {"replicas": 3.0}})).is_empty());
    assert_eq!(
        one(s.clone(), json!({"spec": {"replicas": 1.5}})).2,
        "Invalid value: \"number\": spec.replicas in body must be of type integer: \"number\""
    );
    assert_eq!(
        one(s, json!({"spec": {"replicas": null}})).2,
        "Invalid value: \"null\": spec.replicas in body must be of type integer: \"null\""
    );
    let n = spec(
        json!({"ratio": {"type": "number"}, "on": {"type": "boolean"},
        "list": {"type": "array", "items": {"type": "string"}}}),
    );
    assert!(
        errors(
            n.clone(),
            json!({"spec": {"ratio": 2, "on": true, "list": []}})
        )
        .is_empty()
    );
    assert_eq!(
        errors(n, json!({"spec": {"on": "yes", "list": ["a", 1]}})),
        [
            t(
                "FieldValueTypeInvalid",
                "spec.list[1]",
                "Invalid value: \"integer\": spec.list[1] in body must be of type string: \"integer\""
            ),
            t(
                "FieldValueTypeInvalid",
                "spec.on",
                "Invalid value: \"string\": spec.on in body must be of type boolean: \"string\""
            ),
        ]
    );
}

#[test]
fn nullable_and_int_or_string() {
    let s = spec(json!({
        "opt": {"type": "string", "nullable": true},
        "port": {"x-kubernetes-int-or-string": true}
    }));
    assert!(errors(s.clone(), json!({"spec": {"opt": null, "port": 80}})).is_empty());
    assert!(errors(s.clone(), json!({"spec": {"port": "http"}})).is_empty());
    assert_eq!(
        one(s, json!({"spec": {"port": 1.5}})).2,
        "Invalid value: \"number\": spec.port in body must be of type integer,string: \"number\""
    );
}

#[test]
fn enum_required_and_patterns() {
    let s = json!({"type": "object", "required": ["spec"], "properties": {"spec": {
    "type": "object", "required": ["mode"], "properties": {
        "mode": {"type": "string", "enum": ["Fast", "Slow"]},
        "level": {"type": "integer", "enum": [1, 2]},
        "name": {"type": "string", "pattern": "^[a-z]+$", "minLength": 2, "maxLength": 5}
    }}}});
    assert_eq!(
        one(s.clone(), json!({})),
        t("FieldValueRequired", "spec", "Required value")
    );
    assert_eq!(
        errors(s.clone(), json!({"spec": {"level": 3}})),
        [
            t(
                "FieldValueNotSupported",
                "spec.level",
                "Unsupported value: 3: supported values: \"1\", \"2\""
            ),
            t("FieldValueRequired", "spec.mode", "Required value"),
        ]
    );
    assert_eq!(
        one(s.clone(), json!({"spec": {"mode": "Medium"}})),
        t(
            "FieldValueNotSupported",
            "spec.mode",
            "Unsupported value: \"Medium\": supported values: \"Fast\", \"Slow\""
        )
    );
    let base = json!({"mode": "Fast"});
    let with = |name: &str| {
        let mut spec = base.clone();
        spec["name"] = json!(name);
        json!({ "spec": spec })
    };
    assert_eq!(
        one(s.clone(), with("ABC")).2,
        "Invalid value: \"ABC\": spec.name in body should match '^[a-z]+$'"
    );
    assert_eq!(
        one(s.clone(), with("a")).2,
        "Invalid value: \"a\": spec.name in body should be at least 2 chars long"
    );
    assert_eq!(
        one(s, with("abcdefg")),
        t(
            "FieldValueTooLong",
            "spec.name",
            "Too long: may not be more than 5 bytes"
        )
    );
}

#[test]
fn numeric_bounds_print_as_go() {
    let s = spec(json!({
        "replicas": {"type": "integer", "minimum": 1, "maximum": 10},
        "exclusive": {"type": "integer", "maximum": 10, "exclusiveMaximum": true},
        "ratio": {"type": "number", "minimum": 0.5, "multipleOf": 0.5},
        "step": {"type": "integer", "multipleOf": 3}
    }));
    assert_eq!(
        one(s.clone(), json!({"spec": {"replicas": 11}})),
        t(
            "FieldValueInvalid",
            "spec.replicas",
            "Invalid value: 11: spec.replicas in body should be less than or equal to 10"
        )
    );
    assert_eq!(
        one(s.clone(), json!({"spec": {"replicas": 0}})).2,
        "Invalid value: 0: spec.replicas in body should be greater than or equal to 1"
    );
    assert_eq!(
        one(s.clone(), json!({"spec": {"exclusive": 10}})).2,
        "Invalid value: 10: spec.exclusive in body should be less than 10"
    );
    assert_eq!(
        errors(s.clone(), json!({"spec": {"ratio": 0.25}})),
        [
            t(
                "FieldValueInvalid",
                "spec.ratio",
                "Invalid value: 0.25: spec.ratio in body should be a multiple of 0.5"
            ),
            t(
                "FieldValueInvalid",
                "spec.ratio",
                "Invalid value: 0.25: spec.ratio in body should be greater than or equal to 0.5"
            ),
        ]
    );
    assert_eq!(
        one(s.clone(), json!({"spec": {"step": 4}})).2,
        "Invalid value: 4: spec.step in body should be a multiple of 3"
    );
    assert!(
        errors(
            s,
            json!({"spec": {"step": 9, "ratio": 1.5, "replicas": 10}})
        )
        .is_empty()
    );
}

#[test]
fn item_and_property_counts() {
    let s = spec(json!({
        "list": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 2},
        "map": {"type": "object", "additionalProperties": {"type": "string"},
            "minProperties": 1, "maxProperties": 2}
    }));
    assert_eq!(
        one(s.clone(), json!({"spec": {"list": ["a", "b", "c"]}})),
        t(
            "FieldValueTooMany",
            "spec.list",
            "Too many: 3: must have at most 2 items"
        )
    );
    assert_eq!(
        one(s.clone(), json!({"spec": {"list": []}})).2,
        "Invalid value: 0: spec.list in body should have at least 1 items"
    );
    assert_eq!(
        one(s.clone(), json!({"spec": {"map": {}}})).2,
        "Invalid value: 0: spec.map in body should have at least 1 properties"
    );
    assert_eq!(
        one(
            s.clone(),
            json!({"spec": {"map": {"a": "1", "b": "2", "c": "3"}}})
        ),
        t(
            "FieldValueTooMany",
            "spec.map",
            "Too many: 3: must have at most 2 items"
        )
    );
    assert_eq!(
        one(s, json!({"spec": {"map": {"a": 1}}})).2,
        "Invalid value: \"integer\": spec.map.a in body must be of type string: \"integer\""
    );
}

#[test]
fn formats_are_checked_for_strings() {
    let s = spec(json!({
        "at": {"type": "string", "format": "date-time"},
        "data": {"type": "string", "format": "byte"},
        "free": {"type": "string", "format": "made-up"}
    }));
    assert_eq!(
        one(s.clone(), json!({"spec": {"at": "yesterday"}})),
        t(
            "FieldValueTypeInvalid",
            "spec.at",
            "Invalid value: \"yesterday\": spec.at in body must be of type date-time: \"yesterday\""
        )
    );
    assert_eq!(
        one(s.clone(), json!({"spec": {"data": "!!"}})).2,
        "Invalid value: \"!!\": spec.data in body must be of type byte: \"!!\""
    );
    assert!(
        errors(
            s,
            json!({"spec": {"at": "2024-01-02T03:04:05Z", "data": "aGk=", "free": "anything"}})
        )
        .is_empty()
    );
}

#[test]
fn junctors_report_composite_errors_on_a_nil_path() {
    let s = spec(json!({"x": {"type": "integer", "anyOf": [{"minimum": 10}, {"maximum": 0}]}}));
    assert_eq!(
        errors(s.clone(), json!({"spec": {"x": 5}})),
        [
            t(
                "FieldValueInvalid",
                "<nil>",
                "Invalid value: \"\": \"spec.x\" must validate at least one schema (anyOf)"
            ),
            t(
                "FieldValueInvalid",
                "spec.x",
                "Invalid value: 5: spec.x in body should be greater than or equal to 10"
            ),
        ]
    );
    assert!(errors(s, json!({"spec": {"x": 11}})).is_empty());

    let s = spec(json!({"x": {"type": "integer", "oneOf": [{"minimum": 0}, {"maximum": 10}]}}));
    assert_eq!(
        errors(s, json!({"spec": {"x": 5}})),
        [t(
            "FieldValueInvalid",
            "<nil>",
            "Invalid value: \"\": \"spec.x\" must validate one and only one schema (oneOf). Found 2 valid alternatives"
        )]
    );
    let s = spec(
        json!({"x": {"type": "string", "allOf": [{"minLength": 2}], "not": {"enum": ["no"]}}}),
    );
    assert_eq!(
        errors(s.clone(), json!({"spec": {"x": "a"}})),
        [
            t(
                "FieldValueInvalid",
                "spec.x",
                "Invalid value: \"a\": spec.x in body should be at least 2 chars long"
            ),
            t(
                "FieldValueInvalid",
                "<nil>",
                "Invalid value: \"\": \"spec.x\" must validate all the schemas (allOf). None validated"
            ),
        ]
    );
    assert_eq!(
        errors(s, json!({"spec": {"x": "no"}})),
        [t(
            "FieldValueInvalid",
            "<nil>",
            "Invalid value: \"\": \"spec.x\" must not validate the schema (not)"
        )]
    );
}

#[test]
fn list_sets_and_maps_refuse_duplicates() {
    let s = spec(json!({
        "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
        "ports": {"type": "array", "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
            "items": {"type": "object", "properties": {"name": {"type": "string"}, "port": {"type": "integer"}}}},
        "pairs": {"type": "array", "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["a", "b"],
            "items": {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}}}
    }));
    assert_eq!(
        errors(
            s.clone(),
            json!({"spec": {"tags": ["a", "b", "a", "a"],
                "ports": [{"name": "http", "port": 80}, {"name": "http", "port": 81}, {"port": 1}],
                "pairs": [{"a": "x", "b": 1}, {"a": "x", "b": 1}, {"a": "x", "b": 2}]}})
        ),
        [
            t(
                "FieldValueDuplicate",
                "spec.pairs[1]",
                "Duplicate value: map[string]interface {}{\"a\":\"x\", \"b\":1}"
            ),
            t(
                "FieldValueDuplicate",
                "spec.ports[1]",
                "Duplicate value: map[string]interface {}{\"name\":\"http\"}"
            ),
            t(
                "FieldValueDuplicate",
                "spec.tags[2]",
                "Duplicate value: \"a\""
            ),
        ]
    );
    // Both the schema's type check and the list-map check speak, as upstream.
    assert_eq!(
        errors(s, json!({"spec": {"ports": ["x"]}})),
        [
            t(
                "FieldValueTypeInvalid",
                "spec.ports[0]",
                "Invalid value: \"string\": spec.ports[0] in body must be of type object: \"string\""
            ),
            t(
                "FieldValueInvalid",
                "spec.ports[0]",
                "Invalid value: \"x\": must be an object for an array of list-type map"
            ),
        ]
    );
}

#[test]
fn embedded_resources_need_type_meta() {
    let s = spec(
        json!({"template": {"type": "object", "x-kubernetes-embedded-resource": true,
        "x-kubernetes-preserve-unknown-fields": true}}),
    );
    assert_eq!(
        errors(
            s.clone(),
            json!({"spec": {"template": {"metadata": {"name": "a/b"}}}})
        ),
        [
            t(
                "FieldValueRequired",
                "spec.template.apiVersion",
                "Required value"
            ),
            t("FieldValueRequired", "spec.template.kind", "Required value"),
            t(
                "FieldValueInvalid",
                "spec.template.metadata.name",
                "Invalid value: \"a/b\": may not contain '/'"
            ),
        ]
    );
    assert_eq!(
        one(
            s.clone(),
            json!({"spec": {"template": {"apiVersion": "a/b/c", "kind": "Pod"}}})
        )
        .2,
        "Invalid value: \"a/b/c\": unexpected GroupVersion string: a/b/c"
    );
    assert!(
        errors(
            s,
            json!({"spec": {"template": {"apiVersion": "v1", "kind": "Pod"}}})
        )
        .is_empty()
    );
}

#[test]
fn object_names_are_dns_subdomains() {
    let s = json!({"type": "object"});
    assert_eq!(
        one(s.clone(), json!({"metadata": {"name": "Bad_Name"}})).1,
        "metadata.name"
    );
    assert_eq!(
        one(s.clone(), json!({"metadata": {"namespace": "a"}})),
        t(
            "FieldValueRequired",
            "metadata.name",
            "Required value: name or generateName is required"
        )
    );
    assert!(errors(s.clone(), json!({"metadata": {"generateName": "ok-"}})).is_empty());
    assert_eq!(
        one(s.clone(), json!({"metadata": {"generateName": "Bad-"}})).1,
        "metadata.generateName"
    );
    assert!(errors(s, json!({"metadata": {"name": "ok.example"}})).is_empty());
}
