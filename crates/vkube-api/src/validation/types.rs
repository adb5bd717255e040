//! The per-kind rules: workloads, Services, ConfigMaps and Secrets, RBAC, Jobs and CronJobs.

use std::collections::HashSet;

use serde_json::{Value, json};

use super::pods::{self, one_of};
use super::{Errors, config_key, metadata};
use crate::Resource;
use crate::object::{NameRule, invalid_name};

pub fn validate(resource: &Resource, obj: &Value, old: Option<&Value>, errs: &mut Errors) {
    let spec = &obj["spec"];
    match (resource.group, resource.kind) {
        ("", "Pod") => pods::spec(spec, "spec", errs),
        ("", "PodTemplate") => template(&obj["template"], "template", None, errs),
        ("", "ReplicationController") => {
            errs.non_negative("spec.replicas", &spec["replicas"]);
            let selector = spec["selector"]
                .as_object()
                .map(|m| json!({"matchLabels": m}));
            template(&spec["template"], "spec.template", selector.as_ref(), errs);
            restart_always(&spec["template"], errs);
        }
        ("", "Service") => service(spec, errs),
        ("", "ConfigMap") => data(obj, false, old, errs),
        ("", "Secret") => {
            data(obj, true, old, errs);
            secret_type(obj, old, errs);
        }
        ("apps", kind @ ("Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet")) => {
            workload(kind, spec, old.map(|o| &o["spec"]), errs);
        }
        ("batch", "Job") => job(spec, "spec", errs),
        ("batch", "CronJob") => {
            cron_schedule(spec, old, errs);
            for field in [
                "startingDeadlineSeconds",
                "successfulJobsHistoryLimit",
                "failedJobsHistoryLimit",
            ] {
                errs.non_negative(&format!("spec.{field}"), &spec[field]);
            }
            one_of(
                &spec["concurrencyPolicy"],
                "spec.concurrencyPolicy",
                &["Allow", "Forbid", "Replace"],
                errs,
            );
            job(&spec["jobTemplate"]["spec"], "spec.jobTemplate.spec", errs);
        }
        ("rbac.authorization.k8s.io", "Role" | "ClusterRole") => rules(&obj["rules"], errs),
        ("rbac.authorization.k8s.io", kind @ ("RoleBinding" | "ClusterRoleBinding")) => {
            binding(obj, kind == "RoleBinding", old, errs)
        }
        _ => {}
    }
}

/// A pod template: its labels, whether the selector matches them, and its pod spec.
fn template(t: &Value, path: &str, selector: Option<&Value>, errs: &mut Errors) {
    if t.is_null() {
        errs.required(path, "");
        return;
    }
    template_metadata(t, path, selector, errs);
    pods::spec(&t["spec"], &format!("{path}.spec"), errs);
}

/// A pod template's metadata, and that the selector matches its labels.
fn template_metadata(t: &Value, path: &str, selector: Option<&Value>, errs: &mut Errors) {
    metadata(&t["metadata"], &format!("{path}.metadata"), errs);
    if let Some(selector) = selector {
        let labels = t["metadata"]["labels"].clone();
        let empty = json!({});
        let label_map = if labels.is_object() { &labels } else { &empty };
        if !crate::selector::label_selector_matches(selector, label_map) {
            errs.invalid(
                &format!("{path}.metadata.labels"),
                label_map,
                "`selector` does not match template `labels`",
            );
        }
    }
}

fn restart_always(t: &Value, errs: &mut Errors) {
    let policy = &t["spec"]["restartPolicy"];
    if policy.as_str().is_some_and(|p| p != "Always") {
        errs.not_supported("spec.template.spec.restartPolicy", policy, &["Always"]);
    }
}

fn workload(kind: &str, spec: &Value, old: Option<&Value>, errs: &mut Errors) {
    if kind != "DaemonSet" {
        errs.non_negative("spec.replicas", &spec["replicas"]);
    }
    for field in [
        "minReadySeconds",
        "revisionHistoryLimit",
        "progressDeadlineSeconds",
    ] {
        errs.non_negative(&format!("spec.{field}"), &spec[field]);
    }
    let selector = &spec["selector"];
    let selector_ok = if selector.is_null() {
        errs.required("spec.selector", "");
        false
    } else if is_empty_selector(selector) {
        let what = kind.to_lowercase();
        errs.push_raw_invalid(
            "spec.selector",
            &selector_repr(selector),
            &format!("empty selector is invalid for {what}"),
        );
        false
    } else {
        true
    };
    if kind == "StatefulSet" {
        // Upstream leaves a StatefulSet's pod spec unvalidated (ValidatePodTemplateSpecForStatefulSet:
        // its volume mounts may name volumeClaimTemplates, which are no pod volumes), and checks
        // only the template's metadata and selector match.
        let mut metadata_only = spec["template"].clone();
        if let Some(t) = metadata_only.as_object_mut() {
            t.remove("spec");
        }
        if spec["template"].is_null() {
            errs.required("spec.template", "");
        } else {
            template_metadata(
                &metadata_only,
                "spec.template",
                selector_ok.then_some(selector),
                errs,
            );
        }
        if !spec["template"]["spec"]["activeDeadlineSeconds"].is_null() {
            errs.forbidden(
                "spec.template.spec.activeDeadlineSeconds",
                "activeDeadlineSeconds in StatefulSet is not Supported",
            );
        }
    } else {
        template(
            &spec["template"],
            "spec.template",
            selector_ok.then_some(selector),
            errs,
        );
    }
    restart_always(&spec["template"], errs);
    if let Some(old) = old {
        if !old["selector"].is_null() && old["selector"] != *selector {
            errs.push_raw_invalid(
                "spec.selector",
                &selector_repr(selector),
                "field is immutable",
            );
        }
    }
    if kind == "Deployment" {
        let strategy = &spec["strategy"];
        one_of(
            &strategy["type"],
            "spec.strategy.type",
            &["Recreate", "RollingUpdate"],
            errs,
        );
        if strategy["type"] == "Recreate" && !strategy["rollingUpdate"].is_null() {
            errs.forbidden(
                "spec.strategy.rollingUpdate",
                "may not be specified when strategy `type` is 'Recreate'",
            );
        }
        let rolling = &strategy["rollingUpdate"];
        let zero = |v: &Value| v == &json!(0) || v == &json!("0%");
        if zero(&rolling["maxUnavailable"]) && zero(&rolling["maxSurge"]) {
            errs.invalid(
                "spec.strategy.rollingUpdate.maxUnavailable",
                &rolling["maxUnavailable"],
                "may not be 0 when `maxSurge` is 0",
            );
        }
        if let (Some(deadline), Some(min_ready)) = (
            spec["progressDeadlineSeconds"].as_i64(),
            spec["minReadySeconds"].as_i64(),
        ) {
            if deadline <= min_ready {
                errs.invalid(
                    "spec.progressDeadlineSeconds",
                    &spec["progressDeadlineSeconds"],
                    "must be greater than minReadySeconds",
                );
            }
        }
    }
    if kind == "StatefulSet" {
        one_of(
            &spec["podManagementPolicy"],
            "spec.podManagementPolicy",
            &["OrderedReady", "Parallel"],
            errs,
        );
    }
}

fn is_empty_selector(s: &Value) -> bool {
    s["matchLabels"].as_object().is_none_or(|m| m.is_empty())
        && s["matchExpressions"]
            .as_array()
            .is_none_or(|e| e.is_empty())
}

/// A metav1.LabelSelector as Go's %#v prints it, the bad value of selector errors.
fn selector_repr(s: &Value) -> String {
    let labels = match s["matchLabels"].as_object() {
        Some(m) if !m.is_empty() => super::go_value(&s["matchLabels"]),
        _ => "map[string]string(nil)".into(),
    };
    let exprs = match s["matchExpressions"].as_array() {
        Some(list) if !list.is_empty() => {
            let items: Vec<String> = list
                .iter()
                .map(|e| {
                    let values = match e["values"].as_array() {
                        Some(v) if !v.is_empty() => format!(
                            "[]string{{{}}}",
                            v.iter()
                                .map(|x| format!("{:?}", x.as_str().unwrap_or_default()))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        _ => "[]string(nil)".into(),
                    };
                    format!(
                        "v1.LabelSelectorRequirement{{Key:{:?}, Operator:{:?}, Values:{values}}}",
                        e["key"].as_str().unwrap_or_default(),
                        e["operator"].as_str().unwrap_or_default()
                    )
                })
                .collect();
            format!("[]v1.LabelSelectorRequirement{{{}}}", items.join(", "))
        }
        _ => "[]v1.LabelSelectorRequirement(nil)".into(),
    };
    format!("v1.LabelSelector{{MatchLabels:{labels}, MatchExpressions:{exprs}}}")
}

fn job(spec: &Value, path: &str, errs: &mut Errors) {
    for field in [
        "parallelism",
        "completions",
        "backoffLimit",
        "activeDeadlineSeconds",
        "ttlSecondsAfterFinished",
    ] {
        errs.non_negative(&format!("{path}.{field}"), &spec[field]);
    }
    let tpath = format!("{path}.template");
    let selector = (!spec["selector"].is_null()).then_some(&spec["selector"]);
    template(&spec["template"], &tpath, selector, errs);
    let policy = &spec["template"]["spec"]["restartPolicy"];
    if !matches!(policy.as_str(), Some("OnFailure" | "Never")) && !spec["template"].is_null() {
        // Upstream says Required whatever the value.
        errs.required(
            &format!("{tpath}.spec.restartPolicy"),
            r#"valid values: "OnFailure", "Never""#,
        );
    }
}

/// Five cron fields, or one of the descriptors robfig/cron accepts.
/// A CronJob's schedule and time zone, as upstream's validation reads them: robfig/cron's
/// parser and its messages, no `TZ=` in a new or changed schedule (the `timeZone` field says
/// it), and a time zone the IANA database knows.
fn cron_schedule(spec: &Value, old: Option<&Value>, errs: &mut Errors) {
    let schedule = &spec["schedule"];
    let text = schedule.as_str().unwrap_or_default();
    if text.is_empty() {
        errs.required("spec.schedule", "");
        return;
    }
    if let Err(why) = crate::cron::parse(text, jiff::tz::TimeZone::UTC) {
        errs.invalid("spec.schedule", schedule, &why);
    }
    // An unchanged schedule may keep its TZ (objects from before the timeZone field).
    let tz_allowed = old.is_some_and(|o| o["spec"]["schedule"] == *schedule);
    if text.contains("TZ") {
        if !tz_allowed {
            errs.invalid(
                "spec.schedule",
                schedule,
                "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
            );
        } else if spec["timeZone"].is_string() {
            errs.invalid(
                "spec.schedule",
                schedule,
                "cannot use both timeZone field and TZ or CRON_TZ in schedule",
            );
        }
    }
    let zone = &spec["timeZone"];
    if let Some(name) = zone.as_str() {
        let why = if name.is_empty() {
            Some("timeZone must be nil or non-empty string".to_string())
        } else if name.eq_ignore_ascii_case("local") {
            Some("timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones".to_string())
        } else if jiff::tz::TimeZone::get(name).is_err() {
            Some(format!("unknown time zone {name}"))
        } else {
            None
        };
        if let Some(why) = why {
            errs.invalid("spec.timeZone", zone, &why);
        }
    }
}

fn service(spec: &Value, errs: &mut Errors) {
    const TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
    one_of(&spec["type"], "spec.type", TYPES, errs);
    let external_name = spec["type"] == "ExternalName";
    let ports = spec["ports"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if ports.is_empty() && !external_name && spec["clusterIP"] != "None" {
        errs.required("spec.ports", "");
    }
    let mut names = HashSet::new();
    let mut seen = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        let name = p["name"].as_str().unwrap_or_default();
        if ports.len() > 1 && name.is_empty() {
            errs.required(&format!("{at}.name"), "");
        } else if !name.is_empty() {
            if let Some(why) = invalid_name(NameRule::Label, name) {
                errs.invalid(&format!("{at}.name"), &p["name"], &why);
            } else if !names.insert(name.to_string()) {
                errs.duplicate(&format!("{at}.name"), &p["name"]);
            }
        }
        match p["port"].as_i64() {
            Some(n) if (1..=65535).contains(&n) => {}
            _ => errs.invalid(
                &format!("{at}.port"),
                &p["port"],
                "must be between 1 and 65535, inclusive",
            ),
        }
        match &p["targetPort"] {
            Value::Number(n) if !(1..=65535).contains(&n.as_i64().unwrap_or(0)) => errs.invalid(
                &format!("{at}.targetPort"),
                &p["targetPort"],
                "must be between 1 and 65535, inclusive",
            ),
            _ => {}
        }
        one_of(
            &p["protocol"],
            &format!("{at}.protocol"),
            &["SCTP", "TCP", "UDP"],
            errs,
        );
        if !seen.insert((p["port"].clone(), p["protocol"].clone())) {
            errs.duplicate(
                &at,
                &json!(format!(
                    "{}/{}",
                    p["port"],
                    p["protocol"].as_str().unwrap_or("TCP")
                )),
            );
        }
    }
    one_of(
        &spec["sessionAffinity"],
        "spec.sessionAffinity",
        &["ClientIP", "None"],
        errs,
    );
}

/// ConfigMap and Secret keys, their size, and `immutable`.
fn data(obj: &Value, secret: bool, old: Option<&Value>, errs: &mut Errors) {
    let mut size = 0usize;
    let binary = if secret { None } else { Some("binaryData") };
    for field in std::iter::once("data")
        .chain(binary)
        .chain(secret.then_some("stringData"))
    {
        for (key, value) in obj[field].as_object().into_iter().flatten() {
            let at = format!("{field}[{key}]");
            for msg in config_key(key) {
                errs.invalid(&at, &json!(key), &msg);
            }
            if field == "data" && !secret && obj["binaryData"].get(key).is_some() {
                errs.invalid(&at, &json!(key), "duplicate of key present in binaryData");
            }
            size += key.len() + value.as_str().map_or(0, str::len);
        }
    }
    if size > 1024 * 1024 {
        errs.too_long("", 1024 * 1024);
    }
    if let Some(old) = old.filter(|o| o["immutable"] == true) {
        for field in ["data", "binaryData"] {
            if old[field] != obj[field] {
                errs.forbidden(field, "field is immutable when `immutable` is set");
            }
        }
        if obj["immutable"] != true {
            errs.forbidden("immutable", "field is immutable when `immutable` is set");
        }
    }
}

fn secret_type(obj: &Value, old: Option<&Value>, errs: &mut Errors) {
    let has = |key: &str| obj["data"].get(key).is_some() || obj["stringData"].get(key).is_some();
    let required: &[&str] = match obj["type"].as_str().unwrap_or_default() {
        "kubernetes.io/tls" => &["tls.crt", "tls.key"],
        "kubernetes.io/dockerconfigjson" => &[".dockerconfigjson"],
        "kubernetes.io/dockercfg" => &[".dockercfg"],
        "kubernetes.io/service-account-token" => {
            let annotation = "kubernetes.io/service-account.name";
            if obj["metadata"]["annotations"][annotation]
                .as_str()
                .is_none_or(str::is_empty)
            {
                errs.required(&format!("metadata.annotations[{annotation}]"), "");
            }
            &[]
        }
        _ => &[],
    };
    for key in required {
        if !has(key) {
            errs.required(&format!("data[{key}]"), "");
        }
    }
    if let Some(old) = old {
        if old["type"] != obj["type"] {
            errs.invalid("type", &obj["type"], "field is immutable");
        }
    }
}

fn rules(rules: &Value, errs: &mut Errors) {
    for (i, r) in rules.as_array().into_iter().flatten().enumerate() {
        let at = format!("rules[{i}]");
        let empty = |f: &str| r[f].as_array().is_none_or(Vec::is_empty);
        if empty("verbs") {
            errs.required(
                &format!("{at}.verbs"),
                "verbs must contain at least one value",
            );
        }
        if !empty("nonResourceURLs") {
            if !empty("resources") || !empty("apiGroups") || !empty("resourceNames") {
                errs.invalid(
                    &format!("{at}.nonResourceURLs"),
                    &r["nonResourceURLs"],
                    "rules cannot apply to both regular resources and non-resource URLs",
                );
            }
            continue;
        }
        if empty("apiGroups") {
            errs.required(
                &format!("{at}.apiGroups"),
                "resource rules must supply at least one api group",
            );
        }
        if empty("resources") {
            errs.required(
                &format!("{at}.resources"),
                "resource rules must supply at least one resource",
            );
        }
    }
}

fn binding(obj: &Value, namespaced: bool, old: Option<&Value>, errs: &mut Errors) {
    let role_ref = &obj["roleRef"];
    if role_ref["apiGroup"] != "rbac.authorization.k8s.io" {
        errs.not_supported(
            "roleRef.apiGroup",
            &role_ref["apiGroup"],
            &["rbac.authorization.k8s.io"],
        );
    }
    let kinds: &[&str] = if namespaced {
        &["Role", "ClusterRole"]
    } else {
        &["ClusterRole"]
    };
    match role_ref["kind"].as_str() {
        Some(k) if kinds.contains(&k) => {}
        _ => errs.not_supported("roleRef.kind", &role_ref["kind"], kinds),
    }
    match role_ref["name"].as_str() {
        None | Some("") => errs.required("roleRef.name", ""),
        Some(name) => {
            if let Some(why) = invalid_name(NameRule::PathSegment, name) {
                errs.invalid("roleRef.name", &role_ref["name"], &why);
            }
        }
    }
    for (i, s) in obj["subjects"].as_array().into_iter().flatten().enumerate() {
        let at = format!("subjects[{i}]");
        if s["name"].as_str().is_none_or(str::is_empty) {
            errs.required(&format!("{at}.name"), "");
        }
        match s["kind"].as_str() {
            Some("ServiceAccount") => {
                if !s["apiGroup"].as_str().is_none_or(str::is_empty) {
                    errs.not_supported(&format!("{at}.apiGroup"), &s["apiGroup"], &[""]);
                }
                if !namespaced && s["namespace"].as_str().is_none_or(str::is_empty) {
                    errs.required(&format!("{at}.namespace"), "");
                }
            }
            Some("User" | "Group") => {
                if s["apiGroup"] != "rbac.authorization.k8s.io" {
                    errs.not_supported(
                        &format!("{at}.apiGroup"),
                        &s["apiGroup"],
                        &["rbac.authorization.k8s.io"],
                    );
                }
            }
            _ => errs.not_supported(
                &format!("{at}.kind"),
                &s["kind"],
                &["ServiceAccount", "User", "Group"],
            ),
        }
    }
    if let Some(old) = old {
        if old["roleRef"] != *role_ref {
            let repr = format!(
                "rbac.RoleRef{{APIGroup:{:?}, Kind:{:?}, Name:{:?}}}",
                role_ref["apiGroup"].as_str().unwrap_or_default(),
                role_ref["kind"].as_str().unwrap_or_default(),
                role_ref["name"].as_str().unwrap_or_default()
            );
            errs.push_raw_invalid("roleRef", &repr, "cannot change roleRef");
        }
    }
}
