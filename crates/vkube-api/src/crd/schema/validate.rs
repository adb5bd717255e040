//! Validation of a custom resource against its schema, as the custom resource strategy does
//! upstream: object name rules, kube-openapi's schema validator (with the messages and field paths
//! `kubeOpenAPIResultToFieldErrors` produces), embedded resources' TypeMeta/ObjectMeta, and the
//! uniqueness of `x-kubernetes-list-type` set and map lists.

use serde_json::Value;

use super::{Additional, Schema, formats, join};
use crate::crd::gofmt;
use crate::object::{NameRule, invalid_name};
use crate::validation::{Errors, FieldError};

/// Validates `obj` (pruned and defaulted) against `schema`, adding upstream's field errors to
/// `errs`: metadata.name/generateName as DNS subdomains; type (integer vs number, int-or-string,
/// nullable), enum, required, pattern, formats, bounds, lengths, item and property counts,
/// allOf/anyOf/oneOf/not; apiVersion/kind/metadata of x-kubernetes-embedded-resource values; and
/// duplicates in x-kubernetes-list-type set/map lists.
pub fn validate(schema: &Schema, obj: &Value, errs: &mut Errors) {
    root_metadata(&obj["metadata"], errs);
    let mut out = Vec::new();
    check(schema, "", obj, &mut out);
    for e in out {
        errs.push(e.reason, &e.field, e.message);
    }
    embedded(schema, obj, "", errs);
    list_types(schema, obj, "", errs);
}

const INVALID: &str = "FieldValueInvalid";
const TYPE_INVALID: &str = "FieldValueTypeInvalid";

/// The field path kube-openapi's error name maps to (`<nil>` for the root).
fn field_of(name: &str) -> String {
    let trimmed = name.strip_prefix('.').unwrap_or(name);
    if trimmed.is_empty() {
        "<nil>".into()
    } else {
        trimmed.to_string()
    }
}

fn err(reason: &'static str, name: &str, message: String) -> FieldError {
    FieldError {
        reason,
        field: field_of(name),
        message,
    }
}

fn invalid(name: &str, value: &str, detail: String) -> FieldError {
    err(INVALID, name, format!("Invalid value: {value}: {detail}"))
}

/// kube-openapi's composite errors (anyOf, oneOf, allOf, not) are not field errors: upstream
/// reports them on a nil path with an empty value.
fn composite(detail: String) -> FieldError {
    FieldError {
        reason: INVALID,
        field: "<nil>".into(),
        message: format!("Invalid value: \"\": {detail}"),
    }
}

/// JSON type and Go format of a decoded value, as kube-openapi infers them.
fn info(v: &Value) -> (&'static str, &'static str) {
    match v {
        Value::Bool(_) => ("boolean", ""),
        Value::String(_) => ("string", ""),
        Value::Number(n) if n.is_i64() || n.is_u64() => ("integer", "int64"),
        Value::Number(_) => ("number", "float64"),
        Value::Array(_) => ("array", ""),
        Value::Object(_) => ("object", ""),
        Value::Null => ("null", ""),
    }
}

/// The format kube-openapi sees after upstream strips the ones CRDs don't support.
fn effective_format(s: &Schema) -> &str {
    let f = s.format.as_str();
    if f.is_empty() {
        return f;
    }
    let keep = match s.type_.as_str() {
        "" | "string" => formats::check(f, "").is_some(),
        "integer" => f == "int32" || f == "int64",
        "number" => f == "float" || f == "double",
        _ => false,
    };
    if keep { f } else { "" }
}

fn check(s: &Schema, path: &str, v: &Value, out: &mut Vec<FieldError>) {
    type_check(s, path, v, out);
    if v.is_null() {
        enum_check(s, path, v, out);
        return;
    }
    junctors(s, path, v, out);
    match v {
        Value::String(text) => {
            string_checks(s, path, v, text, out);
            let format = effective_format(s);
            if !format.is_empty() && formats::check(format, text) == Some(false) {
                out.push(err(
                    TYPE_INVALID,
                    path,
                    format!(
                        "Invalid value: {q}: {path} in body must be of type {format}: {q}",
                        q = gofmt::quote(text)
                    ),
                ));
            }
        }
        Value::Number(n) => number_checks(s, path, v, n, out),
        Value::Array(items) => array_checks(s, path, v, items, out),
        _ => {}
    }
    enum_check(s, path, v, out);
    if let Value::Object(map) = v {
        object_checks(s, path, map, out);
    }
}

/// The type validator (validation goes on after a type error, as upstream's does).
fn type_check(s: &Schema, path: &str, v: &Value, out: &mut Vec<FieldError>) {
    let types: Vec<&str> = if s.int_or_string {
        vec!["integer", "string"]
    } else if s.type_.is_empty() {
        vec![]
    } else {
        vec![s.type_.as_str()]
    };
    let format = effective_format(s);
    if types.is_empty() && format.is_empty() {
        return;
    }
    let type_error = |expected: &str, got: &str| {
        err(
            TYPE_INVALID,
            path,
            format!("Invalid value: {got:?}: {path} in body must be of type {expected}: {got:?}"),
        )
    };
    if v.is_null() {
        if !types.is_empty() && !s.nullable {
            out.push(type_error(&types.join(","), "null"));
        }
        return;
    }
    let (sch_type, data_format) = info(v);
    let contains = |t: &str| types.contains(&t);
    let is_float_int =
        sch_type == "number" && v.as_f64().is_some_and(|f| f.fract() == 0.0) && contains("integer");
    let is_int_float = sch_type == "integer" && contains("number");
    let stringish = v.is_string() || v.is_array();
    let type_ok = contains(sch_type) || is_float_int || is_int_float;
    if !(stringish || format.is_empty() || type_ok || data_format == format) {
        out.push(type_error(format, data_format));
        return;
    }
    let numeric = contains("number") || contains("integer");
    if stringish && !numeric && !format.is_empty() {
        return;
    }
    if !type_ok {
        out.push(type_error(&types.join(","), sch_type));
    }
}

fn junctors(s: &Schema, path: &str, v: &Value, out: &mut Vec<FieldError>) {
    let run = |alt: &Schema| {
        let mut r = Vec::new();
        check(alt, path, v, &mut r);
        r
    };
    if !s.any_of.is_empty() {
        let results: Vec<Vec<FieldError>> = s.any_of.iter().map(run).collect();
        if !results.iter().any(Vec::is_empty) {
            out.push(composite(format!(
                "{path:?} must validate at least one schema (anyOf)"
            )));
            // Upstream keeps the errors of the alternative that matched best.
            if let Some(best) = results.into_iter().min_by_key(Vec::len) {
                out.extend(best);
            }
        }
    }
    if !s.one_of.is_empty() {
        let results: Vec<Vec<FieldError>> = s.one_of.iter().map(run).collect();
        let valid = results.iter().filter(|r| r.is_empty()).count();
        if valid != 1 {
            let more = if valid == 0 {
                "Found none valid".to_string()
            } else {
                format!("Found {valid} valid alternatives")
            };
            out.push(composite(format!(
                "{path:?} must validate one and only one schema (oneOf). {more}"
            )));
            if valid == 0 {
                if let Some(best) = results.into_iter().min_by_key(Vec::len) {
                    out.extend(best);
                }
            }
        }
    }
    if !s.all_of.is_empty() {
        let mut valid = 0;
        for alt in &s.all_of {
            let r = run(alt);
            if r.is_empty() {
                valid += 1;
            }
            out.extend(r);
        }
        if valid != s.all_of.len() {
            let more = if valid == 0 { ". None validated" } else { "" };
            out.push(composite(format!(
                "{path:?} must validate all the schemas (allOf){more}"
            )));
        }
    }
    if let Some(not) = &s.not {
        if run(not).is_empty() {
            out.push(composite(format!(
                "{path:?} must not validate the schema (not)"
            )));
        }
    }
}

/// maxLength, minLength and pattern; the first failure only, as kube-openapi stops there.
fn string_checks(s: &Schema, path: &str, v: &Value, text: &str, out: &mut Vec<FieldError>) {
    let len = text.chars().count() as i64;
    let value = gofmt::bad_value(v);
    if let Some(max) = s.max_length.filter(|m| len > *m) {
        let unit = if max == 1 { "byte" } else { "bytes" };
        out.push(err(
            "FieldValueTooLong",
            path,
            format!("Too long: may not be more than {max} {unit}"),
        ));
    } else if let Some(min) = s.min_length.filter(|m| len < *m) {
        out.push(invalid(
            path,
            &value,
            format!("{path} in body should be at least {min} chars long"),
        ));
    } else if let Some(p) = s.pattern.as_ref().filter(|p| !p.regex.is_match(text)) {
        out.push(invalid(
            path,
            &value,
            format!("{path} in body should match '{}'", p.source),
        ));
    }
}

/// A bound as kube-openapi prints it: `%d` when compared with an integer, `%v` otherwise.
fn bound(b: f64, int_data: bool) -> String {
    if int_data && b.fract() == 0.0 && b.abs() < 9.2e18 {
        (b as i64).to_string()
    } else {
        gofmt::float(b)
    }
}

fn number_checks(
    s: &Schema,
    path: &str,
    v: &Value,
    n: &serde_json::Number,
    out: &mut Vec<FieldError>,
) {
    let value = gofmt::bad_value(v);
    let int_data = n.is_i64() || n.is_u64();
    let x = n.as_f64().unwrap_or_default();
    if let Some(factor) = s.multiple_of {
        let ok = if int_data && factor.fract() == 0.0 && factor != 0.0 {
            n.as_i64().is_none_or(|i| i % (factor as i64) == 0)
        } else {
            let m = x / factor;
            m.is_finite() && m.fract() == 0.0
        };
        if !ok {
            out.push(invalid(
                path,
                &value,
                format!(
                    "{path} in body should be a multiple of {}",
                    bound(factor, int_data)
                ),
            ));
        }
    }
    if let Some(max) = s.maximum {
        if x > max || (s.exclusive_maximum && x == max) {
            let rel = if s.exclusive_maximum {
                "less than"
            } else {
                "less than or equal to"
            };
            out.push(invalid(
                path,
                &value,
                format!("{path} in body should be {rel} {}", bound(max, int_data)),
            ));
        }
    }
    if let Some(min) = s.minimum {
        if x < min || (s.exclusive_minimum && x == min) {
            let rel = if s.exclusive_minimum {
                "greater than"
            } else {
                "greater than or equal to"
            };
            out.push(invalid(
                path,
                &value,
                format!("{path} in body should be {rel} {}", bound(min, int_data)),
            ));
        }
    }
}

fn array_checks(s: &Schema, path: &str, _v: &Value, items: &[Value], out: &mut Vec<FieldError>) {
    if let Some(item_schema) = &s.items {
        for (i, item) in items.iter().enumerate() {
            check(item_schema, &format!("{path}[{i}]"), item, out);
        }
    }
    let size = items.len() as i64;
    if let Some(min) = s.min_items.filter(|m| size < *m) {
        out.push(invalid(
            path,
            &size.to_string(),
            format!("{path} in body should have at least {min} items"),
        ));
    }
    if let Some(max) = s.max_items.filter(|m| size > *m) {
        out.push(too_many(path, size, max));
    }
    if s.unique_items
        && items
            .iter()
            .enumerate()
            .any(|(i, a)| items[..i].contains(a))
    {
        out.push(invalid(
            path,
            "\"\"",
            format!("{path} in body shouldn't contain duplicates"),
        ));
    }
}

fn too_many(path: &str, actual: i64, max: i64) -> FieldError {
    let unit = if max == 1 { "item" } else { "items" };
    err(
        "FieldValueTooMany",
        path,
        format!("Too many: {actual}: must have at most {max} {unit}"),
    )
}

/// JSON equality with numbers compared by value (an enum of 1 accepts 1.0, as Go's conversion does).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, a)| y.get(k).is_some_and(|b| same(a, b)))
        }
        _ => a == b,
    }
}

fn enum_check(s: &Schema, path: &str, v: &Value, out: &mut Vec<FieldError>) {
    let Some(values) = &s.enum_values else { return };
    if values.is_empty() || values.iter().any(|e| same(e, v)) {
        return;
    }
    let supported: Vec<String> = values
        .iter()
        .map(|e| match e {
            Value::String(s) => gofmt::quote(s),
            other => gofmt::quote(&other.to_string()),
        })
        .collect();
    out.push(err(
        "FieldValueNotSupported",
        path,
        format!(
            "Unsupported value: {}: supported values: {}",
            gofmt::bad_value(v),
            supported.join(", ")
        ),
    ));
}

fn object_checks(
    s: &Schema,
    path: &str,
    map: &serde_json::Map<String, Value>,
    out: &mut Vec<FieldError>,
) {
    let keys = map.len() as i64;
    if let Some(min) = s.min_properties.filter(|m| keys < *m) {
        out.push(invalid(
            path,
            &keys.to_string(),
            format!("{path} in body should have at least {min} properties"),
        ));
        return;
    }
    if let Some(max) = s.max_properties.filter(|m| keys > *m) {
        out.push(too_many(path, keys, max));
        return;
    }
    match &s.additional_properties {
        Some(Additional::Bool(false)) => {
            for k in map.keys().filter(|k| !s.properties.contains_key(*k)) {
                out.push(invalid(
                    path,
                    &gofmt::quote(k),
                    format!("{path}.{k} in body is a forbidden property"),
                ));
            }
        }
        Some(Additional::Schema(a)) => {
            for (k, v) in map.iter().filter(|(k, _)| !s.properties.contains_key(*k)) {
                check(a, &format!("{path}.{k}"), v, out);
            }
        }
        _ => {}
    }
    for (k, p) in &s.properties {
        if let Some(v) = map.get(k) {
            check(p, &join(path, k), v, out);
        }
    }
    for k in s.required.iter().filter(|k| !map.contains_key(*k)) {
        out.push(err(
            "FieldValueRequired",
            &format!("{path}.{k}"),
            "Required value".into(),
        ));
    }
}

/// metadata.name and metadata.generateName of the object itself, as DNS subdomains.
fn root_metadata(meta: &Value, errs: &mut Errors) {
    let name = meta["name"].as_str().unwrap_or_default();
    let generate = meta["generateName"].as_str().unwrap_or_default();
    if !generate.is_empty() {
        let mut masked = generate.to_string();
        if masked.len() > 1 && masked.ends_with('-') {
            masked.pop();
            masked.push('a');
        }
        if let Some(why) = invalid_name(NameRule::Subdomain, &masked) {
            errs.invalid("metadata.generateName", &meta["generateName"], &why);
        }
    }
    if name.is_empty() {
        if generate.is_empty() {
            errs.required("metadata.name", "name or generateName is required");
        }
    } else if let Some(why) = invalid_name(NameRule::Subdomain, name) {
        errs.invalid("metadata.name", &meta["name"], &why);
    }
}

/// Field paths as `field.Path` prints them.
fn child(path: &str, key: &str) -> String {
    join(path, key)
}

fn key(path: &str, k: &str) -> String {
    format!("{path}[{k}]")
}

/// apiVersion, kind and metadata of every x-kubernetes-embedded-resource value (the object's own
/// are the server's business), as upstream's objectmeta.Validate.
fn embedded(s: &Schema, x: &Value, path: &str, errs: &mut Errors) {
    match x {
        Value::Object(map) => {
            if s.embedded_resource {
                embedded_meta(map, path, errs);
            }
            for (k, v) in map {
                if let Some(p) = s.properties.get(k) {
                    embedded(p, v, &child(path, k), errs);
                } else if let Some(a) = s.additional_schema() {
                    embedded(a, v, &key(path, k), errs);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = &s.items {
                for (i, v) in items.iter().enumerate() {
                    embedded(item_schema, v, &format!("{path}[{i}]"), errs);
                }
            }
        }
        _ => {}
    }
}

fn embedded_meta(map: &serde_json::Map<String, Value>, path: &str, errs: &mut Errors) {
    let api_path = child(path, "apiVersion");
    let kind_path = child(path, "kind");
    match map.get("apiVersion") {
        None => errs.required(&api_path, ""),
        Some(Value::String(s)) if s.is_empty() => errs.required(&api_path, ""),
        Some(Value::String(s)) => {
            if s != "/" && s.matches('/').count() > 1 {
                errs.invalid(
                    &api_path,
                    &Value::String(s.clone()),
                    &format!("unexpected GroupVersion string: {s}"),
                );
            }
        }
        Some(other) => errs.invalid(&api_path, other, "must be a string"),
    }
    match map.get("kind") {
        None => errs.required(&kind_path, ""),
        Some(Value::String(s)) if s.is_empty() => errs.required(&kind_path, ""),
        Some(Value::String(s)) => {
            if let Some(why) = invalid_name(NameRule::Dns1035, &s.to_lowercase()) {
                errs.invalid(
                    &kind_path,
                    &Value::String(s.clone()),
                    &format!("may have mixed case, but should otherwise match: {why}"),
                );
            }
        }
        Some(other) => errs.invalid(&kind_path, other, "must be a string"),
    }
    if let Some(meta) = map.get("metadata") {
        let meta_path = child(path, "metadata");
        if !meta.is_object() {
            errs.invalid(&meta_path, meta, "expected an object for metadata");
            return;
        }
        for (field, rule) in [("name", false), ("generateName", true)] {
            let Some(name) = meta[field].as_str().filter(|n| !n.is_empty()) else {
                continue;
            };
            let mut masked = name.to_string();
            if rule && masked.len() > 1 && masked.ends_with('-') {
                masked.pop();
                masked.push('a');
            }
            if let Some(why) = invalid_name(NameRule::PathSegment, &masked) {
                errs.invalid(&child(&meta_path, field), &meta[field], &why);
            }
        }
        if let Some(ns) = meta["namespace"].as_str().filter(|n| !n.is_empty()) {
            if let Some(why) = invalid_name(NameRule::Label, ns) {
                errs.invalid(&child(&meta_path, "namespace"), &meta["namespace"], &why);
            }
        }
        crate::validation::metadata(meta, &meta_path, errs);
    }
}

/// The uniqueness invariants of x-kubernetes-list-type set (whole items) and map (key fields).
fn list_types(s: &Schema, x: &Value, path: &str, errs: &mut Errors) {
    match x {
        Value::Object(map) => {
            for (k, v) in map {
                if let Some(p) = s.properties.get(k) {
                    list_types(p, v, &child(path, k), errs);
                } else if let Some(a) = s.additional_schema() {
                    list_types(a, v, &key(path, k), errs);
                }
            }
        }
        Value::Array(items) => {
            match s.list_type.as_deref() {
                Some("set") => {
                    for i in first_repeats(items) {
                        duplicate(errs, &format!("{path}[{i}]"), &gofmt::bad_value(&items[i]));
                    }
                }
                Some("map") => list_map(s, items, path, errs),
                _ => {}
            }
            if let Some(item_schema) = &s.items {
                for (i, v) in items.iter().enumerate() {
                    list_types(item_schema, v, &format!("{path}[{i}]"), errs);
                }
            }
        }
        _ => {}
    }
}

fn duplicate(errs: &mut Errors, field: &str, value: &str) {
    errs.push(
        "FieldValueDuplicate",
        field,
        format!("Duplicate value: {value}"),
    );
}

/// The index of the second occurrence of every repeated value (later repeats are not reported).
fn first_repeats(items: &[Value]) -> Vec<usize> {
    let mut out = Vec::new();
    for (i, v) in items.iter().enumerate() {
        let earlier = items[..i].iter().filter(|e| *e == v).count();
        if earlier == 1 {
            out.push(i);
        }
    }
    out
}

fn list_map(s: &Schema, items: &[Value], path: &str, errs: &mut Errors) {
    if let Some((i, x)) = items
        .iter()
        .enumerate()
        .find(|(_, x)| !x.is_null() && !x.is_object())
    {
        errs.invalid(
            &format!("{path}[{i}]"),
            x,
            "must be an object for an array of list-type map",
        );
        return;
    }
    let keys: Vec<Value> = items
        .iter()
        .map(|x| {
            let mut key = serde_json::Map::new();
            for k in &s.list_map_keys {
                if let Some(v) = x.get(k) {
                    key.insert(k.clone(), v.clone());
                }
            }
            Value::Object(key)
        })
        .collect();
    for i in first_repeats(&keys) {
        duplicate(errs, &format!("{path}[{i}]"), &gofmt::sharp_v(&keys[i]));
    }
}

#[cfg(test)]
mod unit {
    use super::*;
    use serde_json::json;

    #[test]
    fn field_names_map_as_upstream() {
        assert_eq!(field_of(""), "<nil>");
        assert_eq!(field_of(".spec"), "spec");
        assert_eq!(field_of("spec.a[0]"), "spec.a[0]");
        assert_eq!(
            first_repeats(&[json!(1), json!(2), json!(1), json!(1)]),
            [2]
        );
    }
}
