//! ValidatingAdmissionPolicy and ValidatingAdmissionPolicyBinding (v1): upstream's defaults
//! (`SetDefaults_ValidatingAdmissionPolicySpec`, `SetDefaults_MatchResources`) and the checks of
//! `ValidateValidatingAdmissionPolicy` / `ValidateValidatingAdmissionPolicyBinding`, with their
//! field paths and wording. CEL expressions are compiled (the cel crate's parser, so a syntax
//! error's text is not cel-go's); they are not type-checked against the matched kinds.

use std::collections::HashSet;

use serde_json::{Value, json};

use super::Errors;
use crate::object::{NameRule, invalid_name};

/// Upstream's defaults: failurePolicy Fail, and for every MatchResources matchPolicy
/// Equivalent, empty selectors and rules of scope `*`.
pub fn defaults(obj: &mut Value, policy: bool) {
    let spec = &mut obj["spec"];
    if !spec.is_object() {
        return;
    }
    if policy {
        set(spec, "failurePolicy", json!("Fail"));
    }
    let key = if policy {
        "matchConstraints"
    } else {
        "matchResources"
    };
    let Some(m) = spec.get_mut(key).filter(|m| m.is_object()) else {
        return;
    };
    set(m, "matchPolicy", json!("Equivalent"));
    set(m, "namespaceSelector", json!({}));
    set(m, "objectSelector", json!({}));
    for rules in ["resourceRules", "excludeResourceRules"] {
        for rule in m[rules].as_array_mut().into_iter().flatten() {
            set(rule, "scope", json!("*"));
        }
    }
}

fn set(obj: &mut Value, key: &str, value: Value) {
    if let Some(map) = obj.as_object_mut() {
        let slot = map.entry(key).or_insert(Value::Null);
        if slot.is_null() {
            *slot = value;
        }
    }
}

/// `ValidateValidatingAdmissionPolicy`'s spec checks, in upstream's order.
pub fn policy(obj: &Value, errs: &mut Errors) {
    let spec = &obj["spec"];
    match spec["failurePolicy"].as_str() {
        None => errs.required("spec.failurePolicy", ""),
        Some("Fail" | "Ignore") => {}
        Some(_) => errs.not_supported(
            "spec.failurePolicy",
            &spec["failurePolicy"],
            &["Fail", "Ignore"],
        ),
    }
    let has_params = spec["paramKind"].is_object();
    if has_params {
        param_kind(&spec["paramKind"], errs);
    }
    let m = &spec["matchConstraints"];
    if m.is_object() {
        match_resources(m, "spec.matchConstraints", errs);
        if m["resourceRules"].as_array().is_none_or(Vec::is_empty) {
            errs.required("spec.matchConstraints.resourceRules", "");
        }
    } else {
        errs.required("spec.matchConstraints", "");
    }
    super::webhooks::match_conditions(&spec["matchConditions"], "spec.matchConditions", errs);
    for (i, v) in items(&spec["variables"]).enumerate() {
        let path = format!("spec.variables[{i}]");
        let name = v["name"].as_str().unwrap_or_default();
        if name.trim().is_empty() {
            errs.required(&format!("{path}.name"), "name is not specified");
        } else if !cel_identifier(name) {
            errs.invalid(
                &format!("{path}.name"),
                &v["name"],
                "name is not a valid CEL identifier",
            );
        }
        expression(v, "expression", &path, errs);
    }
    let validations: Vec<&Value> = items(&spec["validations"]).collect();
    let annotations: Vec<&Value> = items(&spec["auditAnnotations"]).collect();
    if validations.is_empty() && annotations.is_empty() {
        let why = "validations or auditAnnotations must contain at least one item";
        errs.required("spec.validations", why);
        errs.required("spec.auditAnnotations", why);
        return;
    }
    for (i, v) in validations.iter().enumerate() {
        validation(v, &format!("spec.validations[{i}]"), errs);
    }
    if annotations.len() > 20 {
        errs.push_raw_invalid(
            "spec.auditAnnotations",
            "[]admissionregistration.AuditAnnotation{...}",
            "must not have more than 20 auditAnnotations",
        );
    }
    let policy_name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let mut keys = HashSet::new();
    for (i, a) in annotations.iter().enumerate() {
        let path = format!("spec.auditAnnotations[{i}]");
        let key = a["key"].as_str().unwrap_or_default();
        audit_annotation(a, policy_name, &path, errs);
        if !keys.insert(key) {
            errs.duplicate(&format!("{path}.key"), &a["key"]);
        }
    }
}

fn items(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

/// A CEL expression field: required, and compiling. `compilation failed: …` is cel-go's prefix.
fn expression(v: &Value, key: &str, path: &str, errs: &mut Errors) {
    let text = v[key].as_str().unwrap_or_default();
    let field = format!("{path}.{key}");
    if text.trim().is_empty() {
        errs.required(&field, &format!("{key} is not specified"));
    } else if let Err(why) = crate::crd::compile::program(text) {
        errs.invalid(&field, &v[key], &format!("compilation failed: {why}"));
    }
}

fn validation(v: &Value, path: &str, errs: &mut Errors) {
    expression(v, "expression", path, errs);
    if let Some(text) = v["messageExpression"].as_str() {
        let field = format!("{path}.messageExpression");
        if text.trim().is_empty() {
            if !text.is_empty() {
                errs.invalid(
                    &field,
                    &v["messageExpression"],
                    "must be non-empty if specified",
                );
            }
        } else if let Err(why) = crate::crd::compile::program(text) {
            errs.invalid(
                &field,
                &v["messageExpression"],
                &format!("compilation failed: {why}"),
            );
        }
    }
    let message = v["message"].as_str().unwrap_or_default();
    if !message.is_empty() && message.trim().is_empty() {
        errs.invalid(
            &format!("{path}.message"),
            &v["message"],
            "message must be non-empty if specified",
        );
    } else if message.trim().contains(['\n', '\r']) {
        errs.invalid(
            &format!("{path}.message"),
            &v["message"],
            "message must not contain line breaks",
        );
    }
    const REASONS: [&str; 4] = [
        "Forbidden",
        "Invalid",
        "RequestEntityTooLarge",
        "Unauthorized",
    ];
    if v["reason"].as_str().is_some_and(|r| !REASONS.contains(&r)) {
        errs.not_supported(&format!("{path}.reason"), &v["reason"], &REASONS);
    }
}

fn audit_annotation(a: &Value, policy_name: &str, path: &str, errs: &mut Errors) {
    let key = a["key"].as_str().unwrap_or_default();
    if policy_name.is_empty() {
        errs.invalid(
            &format!("{path}.key"),
            &a["key"],
            "requires metadata.name be non-empty",
        );
    } else {
        let qualified = format!("{policy_name}/{key}");
        for why in super::qualified_name(&qualified) {
            errs.invalid(
                &format!("{path}.key"),
                &Value::from(qualified.as_str()),
                &why,
            );
        }
    }
    let text = a["valueExpression"].as_str().unwrap_or_default().trim();
    let field = format!("{path}.valueExpression");
    if text.is_empty() {
        errs.required(&field, "valueExpression is not specified");
    } else if text.len() > 5 * 1024 {
        errs.required(&field, "must not exceed 5120 bytes in length");
    } else if let Err(why) = crate::crd::compile::program(text) {
        errs.invalid(
            &field,
            &a["valueExpression"],
            &format!("compilation failed: {why}"),
        );
    }
}

/// cel-go's IDENT, less the reserved words.
fn cel_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
        && !crate::crd::rules::RESERVED.contains(&name)
}

fn dns1035(value: &str) -> Option<String> {
    invalid_name(NameRule::Dns1035, value)
}

fn param_kind(p: &Value, errs: &mut Errors) {
    let api_version = p["apiVersion"].as_str().unwrap_or_default();
    if api_version.is_empty() {
        errs.required("spec.paramKind.apiVersion", "");
    } else if api_version.matches('/').count() > 1 {
        errs.invalid(
            "spec.paramKind.apiVersion",
            &p["apiVersion"],
            &format!("unexpected GroupVersion string: {api_version}"),
        );
    } else if api_version != "/" {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        if !group.is_empty()
            && let Some(why) = invalid_name(NameRule::Subdomain, group)
        {
            errs.invalid("spec.paramKind.apiVersion", &Value::from(group), &why);
        }
        if version.is_empty() {
            errs.invalid(
                "spec.paramKind.apiVersion",
                &p["apiVersion"],
                "version must be specified",
            );
        } else if let Some(why) = dns1035(version) {
            errs.invalid("spec.paramKind.apiVersion", &Value::from(version), &why);
        }
    }
    let kind = p["kind"].as_str().unwrap_or_default();
    if kind.is_empty() {
        errs.required("spec.paramKind.kind", "");
    } else if let Some(why) = dns1035(&kind.to_lowercase()) {
        errs.invalid(
            "spec.paramKind.kind",
            &p["kind"],
            &format!("may have mixed case, but should otherwise match: {why}"),
        );
    }
}

fn match_resources(m: &Value, path: &str, errs: &mut Errors) {
    match m["matchPolicy"].as_str() {
        None => errs.required(&format!("{path}.matchPolicy"), ""),
        Some("Equivalent" | "Exact") => {}
        Some(_) => errs.not_supported(
            &format!("{path}.matchPolicy"),
            &m["matchPolicy"],
            &["Equivalent", "Exact"],
        ),
    }
    for selector in ["namespaceSelector", "objectSelector"] {
        if !m[selector].is_object() {
            errs.required(&format!("{path}.{selector}"), "");
        }
    }
    for rules in ["resourceRules", "excludeResourceRules"] {
        for (i, rule) in items(&m[rules]).enumerate() {
            let at = format!("{path}.{rules}[{i}]");
            let mut seen = HashSet::new();
            for (k, name) in items(&rule["resourceNames"]).enumerate() {
                let field = format!("{at}.resourceNames[{k}]");
                let text = name.as_str().unwrap_or_default();
                if let Some(why) = invalid_name(NameRule::PathSegment, text) {
                    errs.invalid(&field, name, &why);
                }
                if !seen.insert(text) {
                    errs.duplicate(&field, name);
                }
            }
            super::webhooks::rule_with_operations(rule, &at, errs);
        }
    }
}

/// `ValidateValidatingAdmissionPolicyBinding`'s spec checks (upstream's path for matchResources
/// is spelled `spec.matchResouces`).
pub fn binding(obj: &Value, errs: &mut Errors) {
    let spec = &obj["spec"];
    match spec["policyName"].as_str().filter(|n| !n.is_empty()) {
        None => errs.required("spec.policyName", ""),
        Some(name) => {
            if let Some(why) = invalid_name(NameRule::Subdomain, name) {
                errs.invalid("spec.policyName", &spec["policyName"], &why);
            }
        }
    }
    if spec["paramRef"].is_object() {
        param_ref(&spec["paramRef"], errs);
    }
    if spec["matchResources"].is_object() {
        match_resources(&spec["matchResources"], "spec.matchResouces", errs);
    }
    validation_actions(&spec["validationActions"], errs);
}

fn param_ref(p: &Value, errs: &mut Errors) {
    let name = p["name"].as_str().unwrap_or_default();
    let selector = p["selector"].is_object();
    if !name.is_empty() {
        if let Some(why) = invalid_name(NameRule::PathSegment, name) {
            errs.invalid("spec.paramRef.name", &p["name"], &why);
        }
        if selector {
            errs.forbidden(
                "spec.paramRef.name",
                "name and selector are mutually exclusive",
            );
        }
    }
    if selector && !name.is_empty() {
        errs.forbidden(
            "spec.paramRef.selector",
            "name and selector are mutually exclusive",
        );
    }
    if name.is_empty() && !selector {
        errs.required("spec.paramRef", "one of name or selector must be specified");
    }
    match p["parameterNotFoundAction"]
        .as_str()
        .filter(|a| !a.is_empty())
    {
        None => errs.required("spec.paramRef.parameterNotFoundAction", ""),
        Some("Deny" | "Allow") => {}
        Some(_) => errs.not_supported(
            "spec.paramRef.parameterNotFoundAction",
            &p["parameterNotFoundAction"],
            &["Deny", "Allow"],
        ),
    }
}

fn validation_actions(actions: &Value, errs: &mut Errors) {
    const SUPPORTED: [&str; 3] = ["Audit", "Deny", "Warn"];
    let mut seen = HashSet::new();
    for (i, a) in items(actions).enumerate() {
        let field = format!("spec.validationActions[{i}]");
        let text = a.as_str().unwrap_or_default();
        if !SUPPORTED.contains(&text) {
            errs.not_supported(&field, a, &SUPPORTED);
        }
        if !seen.insert(text) {
            errs.duplicate(&field, a);
        }
    }
    if seen.contains("Deny") && seen.contains("Warn") {
        let listed: Vec<&str> = items(actions).filter_map(Value::as_str).collect();
        errs.push_raw_invalid(
            "spec.validationActions",
            &super::webhooks::go_list("admissionregistration.ValidationAction", &listed),
            "must not contain both Deny and Warn (repeating the same validation failure information in the API response and headers serves no purpose)",
        );
    }
    if seen.is_empty() {
        errs.required(
            "spec.validationActions",
            "at least one validation action is required",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy_errors(spec: Value) -> Vec<(String, String)> {
        let mut obj = json!({"metadata": {"name": "p.example.com"}, "spec": spec});
        defaults(&mut obj, true);
        let mut errs = Errors::default();
        policy(&obj, &mut errs);
        errs.0.into_iter().map(|e| (e.field, e.message)).collect()
    }

    fn rules() -> Value {
        json!({"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
            "operations": ["CREATE"], "resources": ["configmaps"]}]})
    }

    #[test]
    fn a_valid_policy_is_defaulted_and_accepted() {
        let mut obj = json!({"metadata": {"name": "p"}, "spec": {
            "matchConstraints": rules(),
            "validations": [{"expression": "object.metadata.name != 'x'"}]}});
        defaults(&mut obj, true);
        assert_eq!(obj["spec"]["failurePolicy"], "Fail");
        assert_eq!(obj["spec"]["matchConstraints"]["matchPolicy"], "Equivalent");
        assert_eq!(
            obj["spec"]["matchConstraints"]["namespaceSelector"],
            json!({})
        );
        assert_eq!(
            obj["spec"]["matchConstraints"]["resourceRules"][0]["scope"],
            "*"
        );
        let mut errs = Errors::default();
        policy(&obj, &mut errs);
        assert!(errs.0.is_empty(), "{:?}", errs.0);
    }

    #[test]
    fn policy_errors_have_upstreams_paths_and_words() {
        let errs = policy_errors(json!({
            "matchConstraints": rules(),
            "variables": [{"name": "1x", "expression": "1"}],
            "validations": [{"expression": "object.(", "reason": "Teapot", "message": "a\nb"}],
        }));
        let fields: Vec<&str> = errs.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.variables[0].name",
                "spec.validations[0].expression",
                "spec.validations[0].message",
                "spec.validations[0].reason",
            ]
        );
        assert_eq!(
            errs[0].1,
            "Invalid value: \"1x\": name is not a valid CEL identifier"
        );
        assert!(
            errs[1]
                .1
                .starts_with("Invalid value: \"object.(\": compilation failed: "),
            "{}",
            errs[1].1
        );
        assert_eq!(
            errs[3].1,
            "Unsupported value: \"Teapot\": supported values: \"Forbidden\", \"Invalid\", \"RequestEntityTooLarge\", \"Unauthorized\""
        );
        let none = policy_errors(json!({"matchConstraints": {"resourceRules": []}}));
        assert_eq!(
            none,
            [
                (
                    "spec.matchConstraints.resourceRules".to_string(),
                    "Required value".to_string()
                ),
                (
                    "spec.validations".to_string(),
                    "Required value: validations or auditAnnotations must contain at least one item"
                        .to_string()
                ),
                (
                    "spec.auditAnnotations".to_string(),
                    "Required value: validations or auditAnnotations must contain at least one item"
                        .to_string()
                ),
            ]
        );
    }

    #[test]
    fn binding_errors() {
        let mut errs = Errors::default();
        binding(
            &json!({"spec": {"policyName": "p", "validationActions": ["Deny", "Warn", "Deny"],
                "paramRef": {"name": "a", "selector": {}}}}),
            &mut errs,
        );
        let got: Vec<(&str, &str)> = errs
            .0
            .iter()
            .map(|e| (e.field.as_str(), e.message.as_str()))
            .collect();
        assert_eq!(
            got[0],
            (
                "spec.paramRef.name",
                "Forbidden: name and selector are mutually exclusive"
            )
        );
        assert_eq!(got[1].0, "spec.paramRef.selector");
        assert_eq!(
            got[2],
            ("spec.paramRef.parameterNotFoundAction", "Required value")
        );
        assert_eq!(
            got[3],
            ("spec.validationActions[2]", "Duplicate value: \"Deny\"")
        );
        assert_eq!(got[4].0, "spec.validationActions");
        assert!(got[4].1.ends_with("must not contain both Deny and Warn (repeating the same validation failure information in the API response and headers serves no purpose)"));
        let mut errs = Errors::default();
        binding(&json!({"spec": {}}), &mut errs);
        let got: Vec<&str> = errs.0.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(
            got,
            [
                "Required value",
                "Required value: at least one validation action is required"
            ]
        );
    }
}
