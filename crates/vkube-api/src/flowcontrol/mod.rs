//! flowcontrol.apiserver.k8s.io/v1: FlowSchema and PriorityLevelConfiguration. Upstream's
//! defaults (`pkg/apis/flowcontrol/v1/defaults.go`) and checks
//! (`pkg/apis/flowcontrol/validation`), with their field paths and wording; and the bootstrap
//! objects ([`bootstrap`]) that kube-apiserver keeps.
//!
//! Go prints a struct it refuses with `%#v`; where that struct holds pointers (a whole spec)
//! the text carries addresses no one can reproduce, so such values are shown as JSON.

pub mod bootstrap;

use serde_json::{Value, json};

use crate::object::{NameRule, invalid_name};
use crate::validation::Errors;

const MAX_MATCHING_PRECEDENCE: i64 = 10000;
const MAX_QUEUES: i64 = 10_000_000;
/// `shufflesharding.MaxHashBits`.
const MAX_HASH_BITS: f64 = 60.0;
const SUPPORTED_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "proxy",
    "update",
    "watch",
];
const NS_ERR_INTRO: &str = "each member of this list must be '*' or a DNS-1123 label; ";

/// Sets `obj[key]` when absent (or, with `zero`, when 0 too: Go's non-pointer ints).
fn set(obj: &mut Value, key: &str, value: Value, zero: bool) {
    if let Some(map) = obj.as_object_mut() {
        let slot = map.entry(key).or_insert(Value::Null);
        if slot.is_null() || zero && slot.as_i64() == Some(0) {
            *slot = value;
        }
    }
}

/// `SetObjectDefaults_FlowSchema` / `SetObjectDefaults_PriorityLevelConfiguration`: matching
/// precedence 1000; exempt shares and lendable 0; limited shares 30 (when absent: an explicit 0
/// stays, as v1's) and lendable 0; queuing 64 queues, hand 8, length 50 (when 0).
pub fn defaults(kind: &str, obj: &mut Value) {
    let spec = &mut obj["spec"];
    if !spec.is_object() {
        return;
    }
    if kind == "FlowSchema" {
        set(spec, "matchingPrecedence", json!(1000), true);
        return;
    }
    if let Some(exempt) = spec.get_mut("exempt").filter(|e| e.is_object()) {
        set(exempt, "nominalConcurrencyShares", json!(0), false);
        set(exempt, "lendablePercent", json!(0), false);
    }
    if let Some(limited) = spec.get_mut("limited").filter(|l| l.is_object()) {
        set(limited, "nominalConcurrencyShares", json!(30), false);
        set(limited, "lendablePercent", json!(0), false);
        if let Some(q) = limited
            .pointer_mut("/limitResponse/queuing")
            .filter(|q| q.is_object())
        {
            set(q, "handSize", json!(8), true);
            set(q, "queues", json!(64), true);
            set(q, "queueLengthLimit", json!(50), true);
        }
    }
}

/// Drops what Go's semantic equality does not see: nulls, empty lists and strings, false.
fn normalized(v: &Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !empty(v))
                .map(|(k, v)| (k.clone(), normalized(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(normalized).collect()),
        other => other.clone(),
    }
}

fn empty(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Number(n) => n.as_i64() == Some(0),
        _ => false,
    }
}

/// Whether two specs are equal once defaulted, as the config producer compares them.
pub fn spec_equal(kind: &str, expected: &Value, actual: &Value) -> bool {
    let mut want = expected.clone();
    defaults(kind, &mut want);
    normalized(&want["spec"]) == normalized(&actual["spec"])
}

fn go_strings(list: &[&str]) -> String {
    let quoted: Vec<String> = list.iter().map(|s| format!("{s:?}")).collect();
    format!("[]string{{{}}}", quoted.join(", "))
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn supported(values: &[&str]) -> String {
    let listed: Vec<String> = values.iter().map(|s| format!("{s:?}")).collect();
    format!("supported values: {}", listed.join(", "))
}

fn unsupported(errs: &mut Errors, field: &str, value: String, values: &[&str]) {
    errs.push(
        "FieldValueNotSupported",
        field,
        format!("Unsupported value: {value}: {}", supported(values)),
    );
}

fn int_invalid(errs: &mut Errors, field: &str, value: i64, detail: &str) {
    errs.invalid(field, &json!(value), detail);
}

/// `ValidateFlowSchema` (create and update alike).
pub fn validate_flow_schema(obj: &Value, errs: &mut Errors) {
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let spec = &obj["spec"];
    let precedence = int(&spec["matchingPrecedence"]);
    let field = "spec.matchingPrecedence";
    if precedence <= 0 {
        int_invalid(errs, field, precedence, "must be a positive value");
    }
    if precedence > MAX_MATCHING_PRECEDENCE {
        let detail = format!("must not be greater than {MAX_MATCHING_PRECEDENCE}");
        int_invalid(errs, field, precedence, &detail);
    }
    if precedence == 1 && name != bootstrap::EXEMPT {
        let detail = "only the schema named 'exempt' may have matchingPrecedence 1";
        int_invalid(errs, field, precedence, detail);
    }
    if let Some(method) = spec["distinguisherMethod"].as_object() {
        let kind = method.get("type").and_then(Value::as_str).unwrap_or("");
        if !matches!(kind, "ByNamespace" | "ByUser") {
            let value = format!("flowcontrol.FlowDistinguisherMethod{{Type:{kind:?}}}");
            let field = "spec.distinguisherMethod.type";
            unsupported(errs, field, value, &["ByNamespace", "ByUser"]);
        }
    }
    let level = spec["priorityLevelConfiguration"]["name"]
        .as_str()
        .unwrap_or("");
    let field = "spec.priorityLevelConfiguration.name";
    if level.is_empty() {
        errs.required(field, "must reference a priority level");
    } else if let Some(why) = invalid_name(NameRule::Subdomain, level) {
        errs.invalid(field, &json!(level), &why);
    }
    for (i, rule) in spec["rules"].as_array().into_iter().flatten().enumerate() {
        policy_rule(rule, &format!("spec.rules[{i}]"), errs);
    }
    if let Some(mandatory) = bootstrap::mandatory("FlowSchema", name)
        && !spec_equal("FlowSchema", &mandatory, obj)
    {
        let detail = format!("spec of '{name}' must equal the fixed value");
        errs.push_raw_invalid("spec", &spec.to_string(), &detail);
    }
    conditions(&obj["status"], errs);
}

fn policy_rule(rule: &Value, path: &str, errs: &mut Errors) {
    let subjects = rule["subjects"].as_array().filter(|s| !s.is_empty());
    match subjects {
        Some(subjects) => {
            for (i, s) in subjects.iter().enumerate() {
                subject(s, &format!("{path}.subjects[{i}]"), errs);
            }
        }
        None => errs.required(
            &format!("{path}.subjects"),
            "subjects must contain at least one value",
        ),
    }
    let resource_rules = rule["resourceRules"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let non_resource_rules = rule["nonResourceRules"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if resource_rules.is_empty() && non_resource_rules.is_empty() {
        errs.required(
            path,
            "at least one of resourceRules and nonResourceRules has to be non-empty",
        );
    }
    for (i, r) in resource_rules.iter().enumerate() {
        resource_rule(r, &format!("{path}.resourceRules[{i}]"), errs);
    }
    for (i, r) in non_resource_rules.iter().enumerate() {
        non_resource_rule(r, &format!("{path}.nonResourceRules[{i}]"), errs);
    }
}

const FORBIDDEN: [(&str, &str); 3] = [
    ("serviceAccount", "ServiceAccount"),
    ("user", "User"),
    ("group", "Group"),
];

fn subject(s: &Value, path: &str, errs: &mut Errors) {
    let kind = s["kind"].as_str().unwrap_or("");
    let Some((own, _)) = FORBIDDEN.iter().find(|(_, k)| *k == kind) else {
        let value = format!("{kind:?}");
        unsupported(
            errs,
            &format!("{path}.kind"),
            value,
            &["Group", "ServiceAccount", "User"],
        );
        return;
    };
    let inner = &s[*own];
    let field = format!("{path}.{own}");
    if !inner.is_object() {
        errs.required(
            &field,
            &format!("{own} is required when subject kind is '{kind}'"),
        );
    } else {
        let name = inner["name"].as_str().unwrap_or("");
        if name.is_empty() {
            errs.required(&format!("{field}.name"), "");
        } else if kind == "ServiceAccount"
            && name != "*"
            && let Some(why) = invalid_name(NameRule::Subdomain, name)
        {
            errs.invalid(&format!("{field}.name"), &json!(name), &why);
        }
        if kind == "ServiceAccount" {
            let ns = inner["namespace"].as_str().unwrap_or("");
            if ns.is_empty() {
                errs.required(
                    &format!("{field}.namespace"),
                    "must specify namespace for service account",
                );
            } else if let Some(why) = invalid_name(NameRule::Label, ns) {
                errs.invalid(&format!("{field}.namespace"), &json!(ns), &why);
            }
        }
    }
    // Upstream names the others in this order for each kind.
    let others: Vec<&(&str, &str)> = match kind {
        "ServiceAccount" => vec![&FORBIDDEN[1], &FORBIDDEN[2]],
        "User" => vec![&FORBIDDEN[0], &FORBIDDEN[2]],
        _ => vec![&FORBIDDEN[0], &FORBIDDEN[1]],
    };
    for (field, k) in others {
        if !s[*field].is_null() {
            errs.forbidden(
                &format!("{path}.{field}"),
                &format!("{field} is forbidden when subject kind is not '{k}'"),
            );
        }
    }
}

/// A list that must not be empty and may hold `*` only alone: the items to check further, or
/// `None` once it is reported (or is the lone wildcard).
fn listed<'a>(
    rule: &'a Value,
    key: &str,
    path: &str,
    errs: &mut Errors,
    required: &str,
    what: &str,
) -> Option<(String, Vec<&'a str>)> {
    let list = strings(&rule[key]);
    let field = format!("{path}.{key}");
    if list.is_empty() {
        errs.required(&field, required);
    } else if list.contains(&"*") {
        if list.len() > 1 {
            let detail = format!("if '*' is present, must not specify other {what}");
            errs.push_raw_invalid(&field, &go_strings(&list), &detail);
        }
    } else {
        return Some((field, list));
    }
    None
}

fn verbs(rule: &Value, path: &str, errs: &mut Errors) {
    let required = "verbs must contain at least one value";
    if let Some((field, verbs)) = listed(rule, "verbs", path, errs, required, "verbs")
        && verbs.iter().any(|v| !SUPPORTED_VERBS.contains(v))
    {
        unsupported(errs, &field, go_strings(&verbs), SUPPORTED_VERBS);
    }
}

fn non_resource_rule(rule: &Value, path: &str, errs: &mut Errors) {
    verbs(rule, path, errs);
    let required = "nonResourceURLs must contain at least one value";
    let what = "non-resource URLs";
    if let Some((field, urls)) = listed(rule, "nonResourceURLs", path, errs, required, what) {
        for (i, url) in urls.iter().enumerate() {
            if let Some(why) = non_resource_url(url) {
                errs.invalid(&format!("{field}[{i}]"), &json!(url), why);
            }
        }
    }
}

/// `ValidateNonResourceURLPath`.
fn non_resource_url(path: &str) -> Option<&'static str> {
    if path.is_empty() {
        return Some("must not be empty");
    }
    if path == "/" {
        return None;
    }
    if !path.starts_with('/') {
        return Some("must start with slash");
    }
    if path.contains(' ') {
        return Some("must not contain white-space");
    }
    if path.contains("//") {
        return Some("must not contain double slash");
    }
    let stars = path.matches('*').count();
    if stars > 1 || (stars == 1 && !path.ends_with("/*")) {
        return Some("wildcard can only do suffix matching");
    }
    None
}

fn resource_rule(rule: &Value, path: &str, errs: &mut Errors) {
    verbs(rule, path, errs);
    for (key, what, detail) in [
        (
            "apiGroups",
            "api groups",
            "resource rules must supply at least one api group",
        ),
        (
            "resources",
            "resources",
            "resource rules must supply at least one resource",
        ),
    ] {
        let list = strings(&rule[key]);
        let field = format!("{path}.{key}");
        if list.is_empty() {
            errs.required(&field, detail);
        } else if list.len() > 1 && list.contains(&"*") {
            let detail = format!("if '*' is present, must not specify other {what}");
            errs.push_raw_invalid(&field, &go_strings(&list), &detail);
        }
    }
    let namespaces = strings(&rule["namespaces"]);
    let field = format!("{path}.namespaces");
    if namespaces.is_empty() && rule["clusterScope"] != true {
        errs.required(
            &field,
            "resource rules that are not cluster scoped must supply at least one namespace",
        );
    } else if namespaces.contains(&"*") {
        if namespaces.len() > 1 {
            let detail = "if '*' is present, must not specify other namespaces";
            errs.push_raw_invalid(&field, &go_strings(&namespaces), detail);
        }
    } else {
        for (i, ns) in namespaces.iter().enumerate() {
            if let Some(why) = invalid_name(NameRule::Label, ns) {
                let detail = format!("{NS_ERR_INTRO}{why}");
                errs.invalid(&format!("{field}[{i}]"), &json!(ns), &detail);
            }
        }
    }
}

/// Conditions: each with a type, no type twice.
fn conditions(status: &Value, errs: &mut Errors) {
    let mut seen = Vec::new();
    for (i, c) in status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let kind = c["type"].as_str().unwrap_or("");
        if seen.contains(&kind) {
            errs.duplicate(&format!("status.conditions[{i}].type"), &json!(kind));
        }
        seen.push(kind);
        if kind.is_empty() {
            errs.required(&format!("status.conditions[{i}].type"), "must not be empty");
        }
    }
}

/// `ValidatePriorityLevelConfiguration` (create and update alike).
pub fn validate_priority_level(obj: &Value, errs: &mut Errors) {
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    const ZERO_KEY: &str = "flowcontrol.k8s.io/v1beta3-preserve-zero-concurrency-shares";
    if obj["metadata"]["annotations"].get(ZERO_KEY).is_some() {
        let detail = format!("annotation '{ZERO_KEY}' is forbidden");
        errs.forbidden("metadata.annotations", &detail);
    }
    let spec = &obj["spec"];
    let kind = spec["type"].as_str().unwrap_or("");
    if (name == bootstrap::EXEMPT) != (kind == "Exempt") {
        let detail = "type must be 'Exempt' if and only if name is 'exempt'";
        errs.invalid("spec.type", &json!(kind), detail);
    }
    match kind {
        "Exempt" => {
            if !spec["limited"].is_null() {
                errs.forbidden("spec.limited", "must be nil if the type is not Limited");
            }
            if spec["exempt"].is_object() {
                shares_and_lendable(&spec["exempt"], "spec.exempt", errs);
            }
        }
        "Limited" => {
            if !spec["exempt"].is_null() {
                errs.forbidden("spec.exempt", "must be nil if the type is Limited");
            }
            if spec["limited"].is_object() {
                limited(&spec["limited"], errs);
            } else {
                errs.required("spec.limited", "must not be empty when type is Limited");
            }
        }
        _ => unsupported(
            errs,
            "spec.type",
            format!("{kind:?}"),
            &["Exempt", "Limited"],
        ),
    }
    if let Some(mandatory) = bootstrap::mandatory("PriorityLevelConfiguration", name) {
        let mut have = obj.clone();
        let detail = if name == bootstrap::EXEMPT {
            // The exempt level's shares and lendable percent are the operator's to set.
            have["spec"]["exempt"] = mandatory["spec"]["exempt"].clone();
            format!("spec of '{name}' except the 'spec.exempt' field must equal the fixed value")
        } else {
            format!("spec of '{name}' must equal the fixed value")
        };
        if !spec_equal("PriorityLevelConfiguration", &mandatory, &have) {
            errs.push_raw_invalid("spec", &spec.to_string(), &detail);
        }
    }
    conditions(&obj["status"], errs);
}

fn shares_and_lendable(level: &Value, path: &str, errs: &mut Errors) {
    if let Some(n) = level["nominalConcurrencyShares"].as_i64()
        && n < 0
    {
        let field = format!("{path}.nominalConcurrencyShares");
        int_invalid(errs, &field, n, "must be a non-negative integer");
    }
    if let Some(p) = level["lendablePercent"].as_i64()
        && !(0..=100).contains(&p)
    {
        let field = format!("{path}.lendablePercent");
        int_invalid(errs, &field, p, "must be between 0 and 100, inclusive");
    }
}

fn limited(level: &Value, errs: &mut Errors) {
    let path = "spec.limited";
    if let Some(n) = level["nominalConcurrencyShares"].as_i64()
        && n < 0
    {
        let field = format!("{path}.nominalConcurrencyShares");
        int_invalid(errs, &field, n, "must be a non-negative integer");
    }
    let response = &level["limitResponse"];
    let field = format!("{path}.limitResponse");
    match response["type"].as_str().unwrap_or("") {
        "Reject" => {
            if !response["queuing"].is_null() {
                errs.forbidden(
                    &format!("{field}.queuing"),
                    "must be nil if limited.limitResponse.type is not Limited",
                );
            }
        }
        "Queue" => {
            if response["queuing"].is_object() {
                queuing(&response["queuing"], &format!("{field}.queuing"), errs);
            } else {
                errs.required(
                    &format!("{field}.queuing"),
                    "must not be empty if limited.limitResponse.type is Limited",
                );
            }
        }
        other => unsupported(
            errs,
            &format!("{field}.type"),
            format!("{other:?}"),
            &["Queue", "Reject"],
        ),
    }
    if let Some(p) = level["lendablePercent"].as_i64()
        && !(0..=100).contains(&p)
    {
        let field = format!("{path}.lendablePercent");
        int_invalid(errs, &field, p, "must be between 0 and 100, inclusive");
    }
    if let Some(p) = level["borrowingLimitPercent"].as_i64()
        && p < 0
    {
        let field = format!("{path}.borrowingLimitPercent");
        int_invalid(
            errs,
            &field,
            p,
            "if specified, must be a non-negative integer",
        );
    }
}

fn queuing(q: &Value, path: &str, errs: &mut Errors) {
    let (length, queues, hand) = (
        int(&q["queueLengthLimit"]),
        int(&q["queues"]),
        int(&q["handSize"]),
    );
    if length <= 0 {
        int_invalid(
            errs,
            &format!("{path}.queueLengthLimit"),
            length,
            "must be positive",
        );
    }
    let field = format!("{path}.queues");
    if queues <= 0 {
        int_invalid(errs, &field, queues, "must be positive");
    } else if queues > MAX_QUEUES {
        let detail = format!("must not be greater than {MAX_QUEUES}");
        int_invalid(errs, &field, queues, &detail);
    }
    let field = format!("{path}.handSize");
    if hand <= 0 {
        int_invalid(errs, &field, hand, "must be positive");
    } else if hand > queues {
        let detail = format!("should not be greater than queues ({queues})");
        int_invalid(errs, &field, hand, &detail);
    } else if ((queues as f64).log2() * hand as f64).ceil() > MAX_HASH_BITS {
        let detail = format!(
            "required entropy bits of deckSize {queues} and handSize {hand} should not be greater than 60"
        );
        int_invalid(errs, &field, hand, &detail);
    }
}

#[cfg(test)]
mod tests;
