//! The schema half of a CRD's validation: whether `openAPIV3Schema` is structural
//! (`ValidateStructural`), and the per-node checks of `ValidateCustomResourceDefinitionOpenAPISchema`
//! (types, vendor extensions, list-type map keys, x-kubernetes-validations), on the raw JSON so
//! that the field paths and messages are upstream's.

use serde_json::{Map, Value};

use super::rules;
use super::schema::Schema;
use crate::validation::{Errors, FieldError};

#[derive(Clone, Copy, PartialEq)]
enum Level {
    Root,
    Item,
    Field,
}

fn obj(v: &Value) -> &Map<String, Value> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    v.as_object().unwrap_or_else(|| EMPTY.get_or_init(Map::new))
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_default()
}

fn flag(v: &Value, k: &str) -> bool {
    v[k].as_bool().unwrap_or(false)
}

fn q(v: &str) -> String {
    format!("{v:?}")
}

/// Structural-schema errors, sorted by their text as upstream sorts them.
pub fn structural(schema: &Value, path: &str) -> Vec<FieldError> {
    let mut e = Errors::default();
    invariants(schema, Level::Root, path, &mut e);
    completeness(schema, schema, path, path, &mut e);
    let mut list = e.0;
    list.sort_by_key(|x| format!("{}: {}", x.field, x.message));
    list
}

fn is_int_or_string_any_of(any_of: &Value) -> bool {
    any_of.as_array().is_some_and(|l| {
        l.len() == 2
            && l[0] == serde_json::json!({"type": "integer"})
            && l[1] == serde_json::json!({"type": "string"})
    })
}

fn invariants(v: &Value, lvl: Level, path: &str, e: &mut Errors) {
    let typ = s(v, "type");
    if typ == "array" && v.get("items").is_none() {
        e.required(&format!("{path}.items"), "must be specified");
    }
    if let Some(items) = v.get("items").filter(|i| i.is_object()) {
        invariants(items, Level::Item, &format!("{path}.items"), e);
    }
    for (k, p) in obj(&v["properties"]) {
        invariants(p, Level::Field, &format!("{path}.properties[{k}]"), e);
    }
    if let Some(ap) = v.get("additionalProperties") {
        if lvl == Level::Root {
            e.forbidden(
                &format!("{path}.additionalProperties"),
                "must not be used at the root",
            );
        }
        if ap.is_object() {
            invariants(ap, Level::Field, &format!("{path}.additionalProperties"), e);
        }
    }
    let ios = flag(v, "x-kubernetes-int-or-string");
    let preserve = flag(v, "x-kubernetes-preserve-unknown-fields");
    let embedded = flag(v, "x-kubernetes-embedded-resource");
    if ios && preserve {
        e.invalid(
            &format!("{path}.x-kubernetes-preserve-unknown-fields"),
            &Value::Bool(true),
            "must be false if x-kubernetes-int-or-string is true",
        );
    }
    if ios && embedded {
        e.invalid(
            &format!("{path}.x-kubernetes-embedded-resource"),
            &Value::Bool(true),
            "must be false if x-kubernetes-int-or-string is true",
        );
    }
    let skip_any_of = is_int_or_string_any_of(&v["anyOf"]);
    let skip_first_all_of = is_int_or_string_any_of(&v["allOf"][0]["anyOf"]);
    value_validation(v, skip_any_of, skip_first_all_of, path, e);

    let check_meta = lvl == Level::Root || embedded;
    if embedded && typ != "object" {
        let detail = "must be object if x-kubernetes-embedded-resource is true";
        if typ.is_empty() {
            e.required(&format!("{path}.type"), detail);
        } else {
            e.invalid(&format!("{path}.type"), &v["type"], detail);
        }
    } else if typ.is_empty() && !ios && !preserve {
        let detail = match lvl {
            Level::Root => "must not be empty at the root",
            Level::Item => "must not be empty for specified array items",
            Level::Field => "must not be empty for specified object fields",
        };
        e.required(&format!("{path}.type"), detail);
    }
    if embedded && v.get("additionalProperties").is_some() {
        e.forbidden(
            &format!("{path}.additionalProperties"),
            "must not be used if x-kubernetes-embedded-resource is set",
        );
    }
    if lvl == Level::Root && !typ.is_empty() && typ != "object" {
        e.invalid(
            &format!("{path}.type"),
            &v["type"],
            "must be object at the root",
        );
    }
    let props = obj(&v["properties"]);
    for meta in ["kind", "apiVersion"] {
        if let Some(p) = props.get(meta).filter(|_| check_meta) {
            if s(p, "type") != "string" {
                e.invalid(
                    &format!("{path}.properties[{meta}].type"),
                    &Value::String(s(p, "type").into()),
                    "must be string",
                );
            }
        }
    }
    if let Some(m) = props.get("metadata") {
        let mpath = format!("{path}.properties[metadata]");
        if check_meta && s(m, "type") != "object" {
            e.invalid(
                &format!("{mpath}.type"),
                &Value::String(s(m, "type").into()),
                "must be object",
            );
        }
        if lvl == Level::Root {
            let allowed = ["type", "properties"];
            let names_only = obj(&m["properties"])
                .keys()
                .all(|k| k == "name" || k == "generateName");
            let other = obj(m).keys().any(|k| !allowed.contains(&k.as_str()));
            if other || !names_only {
                e.forbidden(
                    &mpath,
                    "must not specify anything other than name and generateName, but metadata is implicitly specified",
                );
            }
        }
    }
    if embedded && !preserve && props.is_empty() {
        e.required(
            &format!("{path}.properties"),
            "must not be empty if x-kubernetes-embedded-resource is true without x-kubernetes-preserve-unknown-fields",
        );
    }
}

fn value_validation(
    v: &Value,
    skip_any_of: bool,
    skip_first_all_of: bool,
    path: &str,
    e: &mut Errors,
) {
    if !skip_any_of {
        for (i, x) in v["anyOf"].as_array().into_iter().flatten().enumerate() {
            nested(x, false, &format!("{path}.anyOf[{i}]"), e);
        }
    }
    for (i, x) in v["allOf"].as_array().into_iter().flatten().enumerate() {
        nested(
            x,
            skip_first_all_of && i == 0,
            &format!("{path}.allOf[{i}]"),
            e,
        );
    }
    for (i, x) in v["oneOf"].as_array().into_iter().flatten().enumerate() {
        nested(x, false, &format!("{path}.oneOf[{i}]"), e);
    }
    if let Some(not) = v.get("not") {
        nested(not, false, &format!("{path}.not"), e);
    }
    if let Some(p) = v["pattern"].as_str() {
        if let Err(err) = regex::Regex::new(p) {
            e.invalid(
                &format!("{path}.pattern"),
                &v["pattern"],
                &format!("must be a valid regular expression, but isn't: {err}"),
            );
        }
    }
}

fn nested(v: &Value, skip_any_of: bool, path: &str, e: &mut Errors) {
    value_validation(v, skip_any_of, false, path, e);
    if let Some(items) = v.get("items").filter(|i| i.is_object()) {
        nested(items, false, &format!("{path}.items"), e);
    }
    for (k, p) in obj(&v["properties"]) {
        nested(p, false, &format!("{path}.properties[{k}]"), e);
    }
    let forbid = |e: &mut Errors, key: &str, detail: &str| {
        e.forbidden(&format!("{path}.{key}"), detail);
    };
    if !s(v, "type").is_empty() {
        forbid(e, "type", "must be empty to be structural");
    }
    if v.get("additionalProperties").is_some() {
        forbid(
            e,
            "additionalProperties",
            "must be undefined to be structural",
        );
    }
    if v.get("default").is_some() {
        forbid(e, "default", "must be undefined to be structural");
    }
    if !s(v, "title").is_empty() {
        forbid(e, "title", "must be empty to be structural");
    }
    if !s(v, "description").is_empty() {
        forbid(e, "description", "must be empty to be structural");
    }
    if flag(v, "nullable") {
        forbid(e, "nullable", "must be false to be structural");
    }
    if v.get("externalDocs").is_some() {
        forbid(e, "externalDocs", "must be undefined to be structural");
    }
    for ext in [
        "x-kubernetes-preserve-unknown-fields",
        "x-kubernetes-embedded-resource",
        "x-kubernetes-int-or-string",
    ] {
        if flag(v, ext) {
            forbid(e, ext, "must be false to be structural");
        }
    }
    if v["x-kubernetes-list-map-keys"]
        .as_array()
        .is_some_and(|l| !l.is_empty())
    {
        forbid(
            e,
            "x-kubernetes-list-map-keys",
            "must be empty to be structural",
        );
    }
    for ext in ["x-kubernetes-list-type", "x-kubernetes-map-type"] {
        if v.get(ext).is_some() {
            forbid(e, ext, "must be undefined to be structural");
        }
    }
    if v["x-kubernetes-validations"]
        .as_array()
        .is_some_and(|l| !l.is_empty())
    {
        forbid(
            e,
            "x-kubernetes-validations",
            "must be empty to be structural",
        );
    }
    if obj(&v["properties"]).contains_key("metadata") {
        e.forbidden(
            &format!("{path}.properties[metadata]"),
            "must not be specified in a nested context",
        );
    }
}

/// Properties and items named in value validations must exist in the structural part.
fn completeness(s_node: &Value, v: &Value, s_path: &str, v_path: &str, e: &mut Errors) {
    for junctor in ["allOf", "anyOf", "oneOf"] {
        for (i, x) in v[junctor].as_array().into_iter().flatten().enumerate() {
            nested_complete(x, s_node, s_path, &format!("{v_path}.{junctor}[{i}]"), e);
        }
    }
    if let Some(not) = v.get("not") {
        nested_complete(not, s_node, s_path, &format!("{v_path}.not"), e);
    }
    if std::ptr::eq(s_node, v) {
        if let Some(items) = v.get("items").filter(|i| i.is_object()) {
            let p = format!("{s_path}.items");
            completeness(items, items, &p, &p, e);
        }
        for (k, p) in obj(&v["properties"]) {
            let path = format!("{s_path}.properties[{k}]");
            completeness(p, p, &path, &path, e);
        }
        if let Some(ap) = v.get("additionalProperties").filter(|a| a.is_object()) {
            let p = format!("{s_path}.additionalProperties");
            completeness(ap, ap, &p, &p, e);
        }
    }
}

fn nested_complete(v: &Value, s_node: &Value, s_path: &str, v_path: &str, e: &mut Errors) {
    if let Some(items) = v.get("items") {
        match s_node.get("items") {
            None => e.required(
                &format!("{s_path}.items"),
                &format!("because it is defined in {v_path}.items"),
            ),
            Some(si) => nested_complete(
                items,
                si,
                &format!("{s_path}.items"),
                &format!("{v_path}.items"),
                e,
            ),
        }
    }
    for (k, p) in obj(&v["properties"]) {
        match s_node["properties"].get(k) {
            None => e.required(
                &format!("{s_path}.properties[{k}]"),
                &format!("because it is defined in {v_path}.properties[{k}]"),
            ),
            Some(sp) => nested_complete(
                p,
                sp,
                &format!("{s_path}.properties[{k}]"),
                &format!("{v_path}.properties[{k}]"),
                e,
            ),
        }
    }
    for junctor in ["allOf", "anyOf", "oneOf"] {
        for (i, x) in v[junctor].as_array().into_iter().flatten().enumerate() {
            nested_complete(x, s_node, s_path, &format!("{v_path}.{junctor}[{i}]"), e);
        }
    }
    if let Some(not) = v.get("not") {
        nested_complete(not, s_node, s_path, &format!("{v_path}.not"), e);
    }
}

const TYPES: [&str; 6] = ["array", "boolean", "integer", "number", "object", "string"];

/// Where a node sits: inside the apiVersion/kind/metadata of a resource, and why defaults are
/// forbidden there.
#[derive(Clone, Default)]
pub struct Ctx {
    pub inside_meta: bool,
    pub no_defaults: Option<String>,
}

/// The per-node checks of ValidateCustomResourceDefinitionOpenAPISchema.
pub fn openapi(v: &Value, path: &str, root: bool, ctx: &Ctx, e: &mut Errors) {
    let typ = s(v, "type");
    if !typ.is_empty() && !TYPES.contains(&typ) {
        if typ == "null" {
            e.forbidden(
                &format!("{path}.type"),
                "type cannot be set to null, use nullable as an alternative",
            );
        } else {
            e.not_supported(&format!("{path}.type"), &v["type"], &TYPES);
        }
    }
    if let (Some(_), Some(why)) = (v.get("default"), &ctx.no_defaults) {
        e.forbidden(
            &format!("{path}.default"),
            &format!("must not be set {why}"),
        );
    }
    for (key, what) in [
        ("id", "id is not supported"),
        ("additionalItems", "additionalItems is not supported"),
        ("patternProperties", "patternProperties is not supported"),
        ("definitions", "definitions is not supported"),
        ("dependencies", "dependencies is not supported"),
        ("$ref", "$ref is not supported"),
    ] {
        if v.get(key).is_some() {
            e.forbidden(&format!("{path}.{key}"), what);
        }
    }
    if v["items"].is_array() {
        e.forbidden(
            &format!("{path}.items"),
            "items must be a schema object and not an array",
        );
    }
    if ctx.inside_meta && flag(v, "x-kubernetes-embedded-resource") {
        e.forbidden(
            &format!("{path}.x-kubernetes-embedded-resource"),
            "must not be used inside of resource meta",
        );
    }
    if flag(v, "uniqueItems") {
        e.forbidden(
            &format!("{path}.uniqueItems"),
            "uniqueItems cannot be set to true since the runtime complexity becomes quadratic",
        );
    }
    let props = obj(&v["properties"]);
    if let Some(ap) = v.get("additionalProperties") {
        if !props.is_empty() && (ap == &Value::Bool(false) || ap.is_object()) {
            e.forbidden(
                &format!("{path}.additionalProperties"),
                "additionalProperties and properties are mutual exclusive",
            );
        }
        if ap.is_object() {
            let mut sub = ctx.clone();
            if ctx.inside_meta {
                sub.no_defaults =
                    Some("inside additionalProperties applying to object metadata".into());
            }
            openapi(ap, &format!("{path}.additionalProperties"), false, &sub, e);
        }
    }
    for (k, p) in props {
        let mut sub = ctx.clone();
        if (root || flag(v, "x-kubernetes-embedded-resource"))
            && ["metadata", "kind", "apiVersion"].contains(&k.as_str())
        {
            sub.inside_meta = true;
            if root {
                sub.no_defaults = Some(format!("in top-level {k}"));
            }
        }
        openapi(p, &format!("{path}.properties[{k}]"), false, &sub, e);
    }
    if let Some(not) = v.get("not") {
        openapi(not, &format!("{path}.not"), false, ctx, e);
    }
    for junctor in ["allOf", "oneOf", "anyOf"] {
        for (i, x) in v[junctor].as_array().into_iter().flatten().enumerate() {
            openapi(x, &format!("{path}.{junctor}[{i}]"), false, ctx, e);
        }
    }
    if let Some(items) = v.get("items").filter(|i| i.is_object()) {
        openapi(items, &format!("{path}.items"), false, ctx, e);
    }
    if v["x-kubernetes-preserve-unknown-fields"] == Value::Bool(false) {
        e.invalid(
            &format!("{path}.x-kubernetes-preserve-unknown-fields"),
            &Value::Bool(false),
            "must be true or undefined",
        );
    }
    extensions(v, path, e);
}

fn extensions(v: &Value, path: &str, e: &mut Errors) {
    let typ = s(v, "type");
    let type_path = format!("{path}.type");
    let must_be = |e: &mut Errors, want: &str, ext: &str| {
        let detail = format!("must be {want} if {ext} is specified");
        if typ.is_empty() {
            e.required(&type_path, &detail);
        } else {
            e.invalid(&type_path, &v["type"], &detail);
        }
    };
    if let Some(mt) = v.get("x-kubernetes-map-type") {
        if typ != "object" {
            must_be(e, "object", "x-kubernetes-map-type");
        }
        if mt != "atomic" && mt != "granular" {
            e.not_supported(
                &format!("{path}.x-kubernetes-map-type"),
                mt,
                &["atomic", "granular"],
            );
        }
    }
    let list_type = v.get("x-kubernetes-list-type");
    if list_type.is_some() && typ != "array" {
        must_be(e, "array", "x-kubernetes-list-type");
    } else if list_type.is_some_and(|l| l == "set") {
        let is = &v["items"];
        let atomic_items = match s(is, "type") {
            "array" => is
                .get("x-kubernetes-list-type")
                .is_none_or(|l| l == "atomic"),
            "object" => is["x-kubernetes-map-type"] == "atomic",
            _ => true,
        };
        if !atomic_items {
            let key = if s(is, "type") == "array" {
                "x-kubernetes-list-type"
            } else {
                "x-kubernetes-map-type"
            };
            e.push_raw_invalid(
                &format!("{path}.items.{key}"),
                &list_type_ptr(is),
                "must be atomic as item of a list with x-kubernetes-list-type=set",
            );
        }
    }
    if let Some(lt) = list_type.filter(|l| *l != "atomic" && *l != "set" && *l != "map") {
        e.not_supported(
            &format!("{path}.x-kubernetes-list-type"),
            lt,
            &["atomic", "set", "map"],
        );
    }
    let keys: Vec<&str> = v["x-kubernetes-list-map-keys"]
        .as_array()
        .map(|l| l.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let lt_path = format!("{path}.x-kubernetes-list-type");
    if !keys.is_empty() {
        match list_type {
            None => e.required(
                &lt_path,
                "must be map if x-kubernetes-list-map-keys is non-empty",
            ),
            Some(l) if l != "map" => e.invalid(
                &lt_path,
                l,
                "must be map if x-kubernetes-list-map-keys is non-empty",
            ),
            _ => {}
        }
    }
    let keys_path = format!("{path}.x-kubernetes-list-map-keys");
    if list_type.is_some_and(|l| l == "map") {
        if keys.is_empty() {
            e.required(
                &keys_path,
                "must not be empty if x-kubernetes-list-type is map",
            );
        }
        let items = &v["items"];
        if items.is_null() {
            e.required(
                &format!("{path}.items"),
                "must have a schema if x-kubernetes-list-type is map",
            );
        } else if s(items, "type") != "object" {
            e.invalid(
                &format!("{path}.items.type"),
                &items["type"],
                "must be object if parent array's x-kubernetes-list-type is map",
            );
        } else {
            let keys_value = &v["x-kubernetes-list-map-keys"];
            let raw_keys = format!(
                "[]string{{{}}}",
                keys.iter().map(|k| q(k)).collect::<Vec<_>>().join(", ")
            );
            let mut seen = Vec::new();
            for k in &keys {
                match items["properties"].get(*k) {
                    Some(p) => {
                        if ["array", "object"].contains(&s(p, "type")) {
                            e.invalid(
                                &format!("{path}.items.properties[{k}].type"),
                                &items["type"],
                                "must be a scalar type if parent array's x-kubernetes-list-type is map",
                            );
                        }
                    }
                    None => e.push_raw_invalid(
                        &keys_path,
                        &raw_keys,
                        "entries must all be names of item properties",
                    ),
                }
                if seen.contains(k) {
                    e.push_raw_invalid(&keys_path, &raw_keys, "must not contain duplicate entries");
                }
                seen.push(k);
            }
            let _ = keys_value;
            let required: Vec<&str> = items["required"]
                .as_array()
                .map(|l| l.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            for k in &keys {
                let Some(p) = items["properties"].get(*k) else {
                    continue;
                };
                if !required.contains(k) && p.get("default").is_none() {
                    e.required(
                        &format!("{path}.items.properties[{k}].default"),
                        "this property is in x-kubernetes-list-map-keys, so it must have a default or be a required property",
                    );
                }
                if flag(p, "nullable") {
                    e.forbidden(
                        &format!("{path}.items.properties[{k}].nullable"),
                        "this property is in x-kubernetes-list-map-keys, so it cannot be nullable",
                    );
                }
            }
        }
    }
    if let Some(l @ ("set" | "map")) = list_type.and_then(Value::as_str) {
        if flag(&v["items"], "nullable") {
            e.forbidden(
                &format!("{path}.items.nullable"),
                &format!("cannot be nullable when x-kubernetes-list-type is {l}"),
            );
        }
    }
    rule_fields(v, path, e);
}

fn list_type_ptr(items: &Value) -> String {
    match items["x-kubernetes-list-type"].as_str() {
        Some(l) => format!("(*string)({l:?})"),
        None => "(*string)(nil)".into(),
    }
}

const REASONS: [&str; 4] = [
    "FieldValueDuplicate",
    "FieldValueForbidden",
    "FieldValueInvalid",
    "FieldValueRequired",
];

/// The static checks of each x-kubernetes-validations entry (the CEL compilation is separate).
fn rule_fields(v: &Value, path: &str, e: &mut Errors) {
    for (i, r) in v["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let at = format!("{path}.x-kubernetes-validations[{i}]");
        let rule = s(r, "rule").trim();
        let message = s(r, "message");
        let newline = |t: &str| t.contains(['\n', '\r']);
        if rule.is_empty() {
            e.required(&format!("{at}.rule"), "rule is not specified");
        } else if !message.is_empty() && message.trim().is_empty() {
            e.invalid(
                &format!("{at}.message"),
                &r["message"],
                "message must be non-empty if specified",
            );
        } else if newline(message.trim()) {
            e.invalid(
                &format!("{at}.message"),
                &r["message"],
                "message must not contain line breaks",
            );
        } else if newline(rule) && message.trim().is_empty() {
            e.required(
                &format!("{at}.message"),
                "message must be specified if rule contains line breaks",
            );
        }
        let me = s(r, "messageExpression");
        if !me.is_empty() && me.trim().is_empty() {
            e.required(
                &format!("{at}.messageExpression"),
                "messageExpression must be non-empty if specified",
            );
        }
        if let Some(reason) = r["reason"].as_str().filter(|x| !REASONS.contains(x)) {
            e.not_supported(
                &format!("{at}.reason"),
                &Value::String(reason.into()),
                &REASONS,
            );
        }
        let fp = s(r, "fieldPath");
        if !fp.is_empty() && fp.trim().is_empty() {
            e.invalid(
                &format!("{at}.fieldPath"),
                &r["fieldPath"],
                "fieldPath must be non-empty if specified",
            );
        }
        if newline(fp) {
            e.invalid(
                &format!("{at}.fieldPath"),
                &r["fieldPath"],
                "fieldPath must not contain line breaks",
            );
        }
    }
}

/// CEL compile errors of a (structural) schema, as CRD validation reports them.
pub fn cel_errors(schema: &Schema, path: &str, e: &mut Errors) {
    for err in rules::compile_errors(schema, path) {
        if err.path.ends_with(".fieldPath") {
            e.invalid(
                &err.path,
                &Value::String(err.rule.field_path.clone()),
                &err.detail,
            );
            continue;
        }
        let raw = if err.detail.starts_with("oldSelf cannot be used") {
            q(&err.rule.rule)
        } else {
            go_rule(&err.rule)
        };
        e.push_raw_invalid(&err.path, &raw, &err.detail);
    }
}

/// `%#v` of an apiextensions.ValidationRule.
fn go_rule(r: &super::schema::Rule) -> String {
    let reason = match &r.reason {
        Some(x) => format!("(*apiextensions.FieldValueErrorReason)({x:?})"),
        None => "(*apiextensions.FieldValueErrorReason)(nil)".into(),
    };
    let old = match r.optional_old_self {
        Some(b) => format!("(*bool)({b})"),
        None => "(*bool)(nil)".into(),
    };
    format!(
        "apiextensions.ValidationRule{{Rule:{}, Message:{}, MessageExpression:{}, Reason:{reason}, FieldPath:{}, OptionalOldSelf:{old}}}",
        q(&r.rule),
        q(&r.message),
        q(&r.message_expression),
        q(&r.field_path)
    )
}
