//! MutatingWebhookConfiguration and ValidatingWebhookConfiguration (v1), as upstream's
//! `ValidateMutatingWebhookConfiguration` / `ValidateValidatingWebhookConfiguration` check them
//! on create and update: fully qualified and unique webhook names, rules, the policies' enums,
//! sideEffects and admissionReviewVersions required, exactly one of url or service, an https URL
//! without query, fragment or user, matchConditions named and parsed. Not checked: the
//! selectors' syntax, and the conditions' types (cel-go's type check).

use std::collections::HashSet;

use serde_json::Value;

use super::Errors;
use crate::object::{NameRule, invalid_name};

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// A list as Go's `%#v` prints it in a field error: `[]string{"a", "b"}`.
pub(super) fn go_list(go_type: &str, items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[]{go_type}{{{}}}", quoted.join(", "))
}

/// Every webhook of a configuration.
pub fn configuration(obj: &Value, mutating: bool, errs: &mut Errors) {
    let mut names = HashSet::new();
    for (i, hook) in obj["webhooks"].as_array().into_iter().flatten().enumerate() {
        let path = format!("webhooks[{i}]");
        let name = hook["name"].as_str().unwrap_or_default();
        webhook(hook, &path, mutating, errs);
        if !name.is_empty() && !names.insert(name) {
            errs.duplicate(&format!("{path}.name"), &hook["name"]);
        }
    }
}

/// Upstream's `IsFullyQualifiedName`.
fn fully_qualified(field: &str, name: &str, errs: &mut Errors) {
    if name.is_empty() {
        errs.required(field, "");
    } else if let Some(why) = invalid_name(NameRule::Subdomain, name) {
        errs.invalid(field, &Value::from(name), &why);
    } else if name.split('.').count() < 3 {
        errs.invalid(
            field,
            &Value::from(name),
            "should be a domain with at least three segments separated by dots",
        );
    }
}

/// In upstream's order: name, rules, the policies, timeout, client config, review versions.
fn webhook(hook: &Value, path: &str, mutating: bool, errs: &mut Errors) {
    let name = hook["name"].as_str().unwrap_or_default();
    fully_qualified(&format!("{path}.name"), name, errs);
    for (j, rule) in hook["rules"].as_array().into_iter().flatten().enumerate() {
        rule_with_operations(rule, &format!("{path}.rules[{j}]"), errs);
    }
    let one_of = |field: &str, supported: &[&str], errs: &mut Errors| {
        let v = &hook[field];
        if v.as_str().is_some_and(|s| !supported.contains(&s)) {
            errs.not_supported(&format!("{path}.{field}"), v, supported);
        }
    };
    one_of("failurePolicy", &["Fail", "Ignore"], errs);
    one_of("matchPolicy", &["Equivalent", "Exact"], errs);
    match hook["sideEffects"].as_str() {
        None => errs.required(
            &format!("{path}.sideEffects"),
            "must specify one of None, NoneOnDryRun",
        ),
        Some("None" | "NoneOnDryRun") => {}
        Some(_) => errs.not_supported(
            &format!("{path}.sideEffects"),
            &hook["sideEffects"],
            &["None", "NoneOnDryRun"],
        ),
    }
    if let Some(t) = hook["timeoutSeconds"].as_i64() {
        if !(1..=30).contains(&t) {
            errs.invalid(
                &format!("{path}.timeoutSeconds"),
                &hook["timeoutSeconds"],
                "the timeout value must be between 1 and 30 seconds",
            );
        }
    }
    if mutating {
        one_of("reinvocationPolicy", &["IfNeeded", "Never"], errs);
    }
    client_config(&hook["clientConfig"], &format!("{path}.clientConfig"), errs);
    match_conditions(
        &hook["matchConditions"],
        &format!("{path}.matchConditions"),
        errs,
    );
    review_versions(
        &hook["admissionReviewVersions"],
        &format!("{path}.admissionReviewVersions"),
        errs,
    );
}

/// At most 64 conditions, each named (a qualified name, unique) with an expression that parses.
/// The parse errors are the cel crate's, not cel-go's, and the expressions are not type-checked.
pub(super) fn match_conditions(conditions: &Value, path: &str, errs: &mut Errors) {
    let list = conditions.as_array().map(Vec::as_slice).unwrap_or_default();
    if list.len() > 64 {
        errs.push(
            "FieldValueTooMany",
            path,
            format!("Too many: {}: must have at most 64 items", list.len()),
        );
    }
    let mut names = HashSet::new();
    for (i, c) in list.iter().enumerate() {
        let at = format!("{path}[{i}]");
        match c["name"].as_str().filter(|n| !n.is_empty()) {
            None => errs.required(&format!("{at}.name"), ""),
            Some(name) if !names.insert(name) => errs.duplicate(&format!("{at}.name"), &c["name"]),
            Some(name) => {
                if let Some(why) = super::qualified_name(name).first() {
                    errs.invalid(&format!("{at}.name"), &c["name"], why);
                }
            }
        }
        match c["expression"].as_str().filter(|e| !e.is_empty()) {
            None => errs.required(&format!("{at}.expression"), ""),
            Some(expr) => {
                if let Err(e) = cel::Program::compile(expr) {
                    errs.invalid(
                        &format!("{at}.expression"),
                        &c["expression"],
                        &format!("compilation failed: {e}"),
                    );
                }
            }
        }
    }
}

pub(super) fn rule_with_operations(rule: &Value, path: &str, errs: &mut Errors) {
    let ops = strings(&rule["operations"]);
    let field = format!("{path}.operations");
    if ops.is_empty() {
        errs.required(&field, "");
    } else if ops.len() > 1 && ops.contains(&"*") {
        errs.push_raw_invalid(
            &field,
            &go_list("v1.OperationType", &ops),
            "if '*' is present, must not specify other operations",
        );
    }
    for (k, op) in ops.iter().enumerate() {
        let supported = ["*", "CONNECT", "CREATE", "DELETE", "UPDATE"];
        if !supported.contains(op) {
            errs.not_supported(&format!("{field}[{k}]"), &Value::from(*op), &supported);
        }
    }
    let list = |key: &str, what: &str, errs: &mut Errors| {
        let items = strings(&rule[key]);
        let field = format!("{path}.{key}");
        if items.is_empty() {
            errs.required(&field, "");
        } else if items.len() > 1 && items.contains(&"*") {
            errs.push_raw_invalid(
                &field,
                &go_list("string", &items),
                &format!("if '*' is present, must not specify other {what}"),
            );
        }
        items
    };
    list("apiGroups", "API groups", errs);
    for (k, v) in list("apiVersions", "API versions", errs).iter().enumerate() {
        if v.is_empty() {
            errs.required(&format!("{path}.apiVersions[{k}]"), "");
        }
    }
    let resources = strings(&rule["resources"]);
    if resources.is_empty() {
        errs.required(&format!("{path}.resources"), "");
    }
    for (k, r) in resources.iter().enumerate() {
        if r.is_empty() {
            errs.required(&format!("{path}.resources[{k}]"), "");
        }
    }
    if resources.contains(&"*/*") && resources.len() > 1 {
        errs.push_raw_invalid(
            &format!("{path}.resources"),
            &go_list("string", &resources),
            "if '*/*' is present, must not specify other resources",
        );
    }
    if rule["scope"]
        .as_str()
        .is_some_and(|s| !["*", "Cluster", "Namespaced"].contains(&s))
    {
        errs.not_supported(
            &format!("{path}.scope"),
            &rule["scope"],
            &["*", "Cluster", "Namespaced"],
        );
    }
}

fn review_versions(versions: &Value, field: &str, errs: &mut Errors) {
    let list = strings(versions);
    if list.is_empty() {
        errs.required(field, "must specify one of v1, v1beta1");
        return;
    }
    let mut seen = HashSet::new();
    for (k, v) in list.iter().enumerate() {
        if !seen.insert(*v) {
            errs.duplicate(&format!("{field}[{k}]"), &Value::from(*v));
        }
    }
    if !list.iter().any(|v| matches!(*v, "v1" | "v1beta1")) {
        errs.push_raw_invalid(
            field,
            &go_list("string", &list),
            "must include at least one of v1, v1beta1",
        );
    }
}

const URL_FORM: &str = "; desired format: https://host[/path]";

/// A webhook clientConfig (admission webhooks, and CRD conversion webhooks).
pub(crate) fn client_config(cc: &Value, path: &str, errs: &mut Errors) {
    match (cc["url"].as_str(), cc["service"].is_object()) {
        (None, false) | (Some(_), true) => {
            errs.required(path, "exactly one of url or service is required");
        }
        (Some(url), false) => webhook_url(url, &format!("{path}.url"), errs),
        (None, true) => service(&cc["service"], &format!("{path}.service"), errs),
    }
}

/// Upstream's `ValidateWebhookURL` with https forced (Go's url.Parse, reduced to what a
/// webhook URL has: scheme, user, host, path, query, fragment).
fn webhook_url(url: &str, field: &str, errs: &mut Errors) {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (rest, fragment) = rest.split_once('#').unwrap_or((rest, ""));
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = if url.contains("://") {
        rest.split('/').next().unwrap_or_default()
    } else {
        ""
    };
    let (user, host) = match authority.rsplit_once('@') {
        Some((user, host)) => (Some(user), host),
        None => (None, authority),
    };
    if scheme != "https" {
        let why = format!("'https' is the only allowed URL scheme{URL_FORM}");
        errs.invalid(field, &Value::from(scheme), &why);
    }
    if host.is_empty() {
        errs.invalid(
            field,
            &Value::from(""),
            &format!("host must be specified{URL_FORM}"),
        );
    }
    if let Some(user) = user {
        errs.invalid(
            field,
            &Value::from(user),
            "user information is not permitted in the URL",
        );
    }
    if !fragment.is_empty() {
        errs.invalid(
            field,
            &Value::from(fragment),
            "fragments are not permitted in the URL",
        );
    }
    if !query.is_empty() {
        errs.invalid(
            field,
            &Value::from(query),
            "query parameters are not permitted in the URL",
        );
    }
}

/// Upstream's `ValidateWebhookService`.
fn service(svc: &Value, path: &str, errs: &mut Errors) {
    if svc["name"].as_str().is_none_or(str::is_empty) {
        errs.required(&format!("{path}.name"), "service name is required");
    }
    if svc["namespace"].as_str().is_none_or(str::is_empty) {
        errs.required(
            &format!("{path}.namespace"),
            "service namespace is required",
        );
    }
    if let Some(port) = svc["port"].as_i64() {
        if !(1..=65535).contains(&port) {
            errs.invalid(
                &format!("{path}.port"),
                &svc["port"],
                "port is not valid: must be between 1 and 65535, inclusive",
            );
        }
    }
    let Some(p) = svc["path"].as_str() else {
        return;
    };
    let field = format!("{path}.path");
    // Upstream's ValidateWebhookService: "/" and "" both mean the root (the AdmissionWebhook
    // conformance specs register `path: ""`).
    if p == "/" || p.is_empty() {
        return;
    }
    if p == "//" {
        errs.invalid(&field, &svc["path"], "segment[0] may not be empty");
        return;
    }
    if !p.starts_with('/') {
        errs.invalid(&field, &svc["path"], "must start with a '/'");
    }
    // As upstream: the first character dropped (whatever it was), then one trailing '/'.
    let rest = &p[p.chars().next().map_or(0, char::len_utf8)..];
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    for (k, step) in rest.split('/').enumerate() {
        if step.is_empty() {
            errs.invalid(
                &field,
                &svc["path"],
                &format!("segment[{k}] may not be empty"),
            );
        } else if let Some(why) =
            crate::object::invalid_name(crate::object::NameRule::Subdomain, step)
        {
            errs.invalid(&field, &svc["path"], &format!("segment[{k}]: {why}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn messages(obj: Value, mutating: bool) -> Vec<String> {
        let mut errs = Errors::default();
        configuration(&obj, mutating, &mut errs);
        errs.0
            .into_iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect()
    }

    #[test]
    fn names_policies_and_client_config_are_checked_as_upstream() {
        let good = json!({"name": "a.example.com", "sideEffects": "None", "admissionReviewVersions": ["v1"],
            "clientConfig": {"url": "https://hooks.example.com/validate"},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}]});
        assert!(messages(json!({"webhooks": [good]}), true).is_empty());
        let conditions = json!({"webhooks": [{"name": "a.b.c", "sideEffects": "None",
            "admissionReviewVersions": ["v1"], "clientConfig": {"url": "https://x"},
            "matchConditions": [{"name": "ok", "expression": "true"}, {"name": "ok", "expression": "object.a =="},
                                {"name": "-bad-", "expression": ""}]}]});
        let got = messages(conditions, false);
        assert_eq!(
            got[0],
            "webhooks[0].matchConditions[1].name: Duplicate value: \"ok\""
        );
        assert!(got[1].starts_with("webhooks[0].matchConditions[1].expression: Invalid value: \"object.a ==\": compilation failed: "), "{got:?}");
        assert!(
            got[2].starts_with("webhooks[0].matchConditions[2].name: Invalid value: \"-bad-\": "),
            "{got:?}"
        );
        assert_eq!(
            got[3],
            "webhooks[0].matchConditions[2].expression: Required value"
        );
        assert_eq!(got.len(), 4);
        let bad = json!({"webhooks": [
            {"name": "short.name", "clientConfig": {"url": "http://h/p?x=1"}, "failurePolicy": "Maybe",
             "timeoutSeconds": 31, "rules": [{"operations": ["*", "CREATE"], "apiGroups": [], "apiVersions": ["v1"], "resources": ["pods"]}]},
            good.clone(), good]});
        assert_eq!(
            messages(bad, true),
            [
                "webhooks[0].name: Invalid value: \"short.name\": should be a domain with at least three segments separated by dots",
                "webhooks[0].rules[0].operations: Invalid value: []v1.OperationType{\"*\", \"CREATE\"}: if '*' is present, must not specify other operations",
                "webhooks[0].rules[0].apiGroups: Required value",
                "webhooks[0].failurePolicy: Unsupported value: \"Maybe\": supported values: \"Fail\", \"Ignore\"",
                "webhooks[0].sideEffects: Required value: must specify one of None, NoneOnDryRun",
                "webhooks[0].timeoutSeconds: Invalid value: 31: the timeout value must be between 1 and 30 seconds",
                "webhooks[0].clientConfig.url: Invalid value: \"http\": 'https' is the only allowed URL scheme; desired format: https://host[/path]",
                "webhooks[0].clientConfig.url: Invalid value: \"x=1\": query parameters are not permitted in the URL",
                "webhooks[0].admissionReviewVersions: Required value: must specify one of v1, v1beta1",
                "webhooks[2].name: Duplicate value: \"a.example.com\"",
            ]
        );
        let both = json!({"webhooks": [{"name": "a.b.c", "sideEffects": "Some", "admissionReviewVersions": ["v2"],
            "clientConfig": {"service": {"name": "s"}, "url": "https://x"}}]});
        assert_eq!(
            messages(both, false),
            [
                "webhooks[0].sideEffects: Unsupported value: \"Some\": supported values: \"None\", \"NoneOnDryRun\"",
                "webhooks[0].clientConfig: Required value: exactly one of url or service is required",
                "webhooks[0].admissionReviewVersions: Invalid value: []string{\"v2\"}: must include at least one of v1, v1beta1",
            ]
        );
    }

    #[test]
    fn service_paths_as_upstreams_validate_webhook_service() {
        let errors = |path: &str| {
            let mut errs = Errors::default();
            service(
                &json!({"namespace": "ns", "name": "svc", "path": path}),
                "s",
                &mut errs,
            );
            errs.0.into_iter().map(|e| e.message).collect::<Vec<_>>()
        };
        for fine in ["", "/", "/validate-pods", "/a/b/", "/v1.x/crd"] {
            assert!(errors(fine).is_empty(), "{fine:?}: {:?}", errors(fine));
        }
        assert_eq!(
            errors("//"),
            ["Invalid value: \"//\": segment[0] may not be empty"]
        );
        // Upstream drops the first character whatever it is: "a/b" leaves an empty segment.
        assert_eq!(
            errors("a/b"),
            [
                "Invalid value: \"a/b\": must start with a '/'",
                "Invalid value: \"a/b\": segment[0] may not be empty"
            ]
        );
        assert_eq!(
            errors("/a//b"),
            ["Invalid value: \"/a//b\": segment[1] may not be empty"]
        );
        assert!(errors("/Upper")[0].contains("segment[0]: a lowercase RFC 1123 subdomain"));
    }
}
