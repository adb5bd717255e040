//! APIService (apiregistration.k8s.io/v1) validation, as kube-aggregator's
//! `ValidateAPIService`: the name is `version.group`, only `v1` may have the empty group,
//! priorities in range, and a local APIService (no service) has no TLS settings.

use serde_json::{Value, json};

use super::Errors;
use crate::object::{NameRule, invalid_name};

pub fn validate(obj: &Value, errs: &mut Errors) {
    let spec = &obj["spec"];
    let group = spec["group"].as_str().unwrap_or_default();
    let version = spec["version"].as_str().unwrap_or_default();
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let required = format!("{version}.{group}");
    if !name.is_empty() && name != required {
        errs.invalid(
            "metadata.name",
            &json!(name),
            &format!("must be `spec.version+\".\"+spec.group`: {required:?}"),
        );
    }
    if group.is_empty() && version != "v1" {
        errs.required(
            "spec.group",
            "only v1 may have an empty group and it better be legacy kube",
        );
    }
    if !group.is_empty()
        && let Some(why) = invalid_name(NameRule::Subdomain, group)
    {
        errs.invalid("spec.group", &json!(group), &why);
    }
    if let Some(why) = invalid_name(NameRule::Dns1035, version) {
        errs.invalid("spec.version", &json!(version), &why);
    }
    let group_priority = spec["groupPriorityMinimum"].as_i64().unwrap_or(0);
    if group_priority <= 0 || group_priority > 20000 {
        errs.invalid(
            "spec.groupPriorityMinimum",
            &json!(group_priority),
            "must be positive and less than 20000",
        );
    }
    let version_priority = spec["versionPriority"].as_i64().unwrap_or(0);
    if version_priority <= 0 || version_priority > 1000 {
        errs.invalid(
            "spec.versionPriority",
            &json!(version_priority),
            "must be positive and less than 1000",
        );
    }
    let ca_bundle = spec["caBundle"].as_str().unwrap_or_default();
    let insecure = spec["insecureSkipTLSVerify"].as_bool().unwrap_or(false);
    let service = &spec["service"];
    if !service.is_object() {
        if !ca_bundle.is_empty() {
            // Upstream shows the decoded length.
            use base64::Engine as _;
            let len = base64::engine::general_purpose::STANDARD
                .decode(ca_bundle)
                .map(|b| b.len())
                .unwrap_or(ca_bundle.len());
            errs.invalid(
                "spec.caBundle",
                &json!(format!("{len} bytes")),
                "local APIServices may not have a caBundle",
            );
        }
        if insecure {
            errs.invalid(
                "spec.insecureSkipTLSVerify",
                &json!(true),
                "local APIServices may not have insecureSkipTLSVerify",
            );
        }
        return;
    }
    if service["namespace"].as_str().unwrap_or_default().is_empty() {
        errs.required("spec.service.namespace", "");
    }
    if service["name"].as_str().unwrap_or_default().is_empty() {
        errs.required("spec.service.name", "");
    }
    let port = service["port"].as_i64().unwrap_or(443);
    if !(1..=65535).contains(&port) {
        errs.invalid(
            "spec.service.port",
            &json!(port),
            "port is not valid: must be between 1 and 65535, inclusive",
        );
    }
    if insecure && !ca_bundle.is_empty() {
        errs.invalid(
            "spec.insecureSkipTLSVerify",
            &json!(true),
            "may not be true if caBundle is present",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(obj: Value) -> Vec<(String, String)> {
        let mut errs = Errors::default();
        validate(&obj, &mut errs);
        errs.0.into_iter().map(|e| (e.field, e.message)).collect()
    }

    #[test]
    fn apiservices_are_checked_as_upstream() {
        let ok = json!({"metadata": {"name": "v1alpha1.wardle.example.com"},
            "spec": {"group": "wardle.example.com", "version": "v1alpha1",
                     "service": {"namespace": "ns", "name": "api", "port": 443},
                     "caBundle": "Zm9v", "groupPriorityMinimum": 2000, "versionPriority": 200}});
        assert_eq!(errors(ok), []);
        let core = json!({"metadata": {"name": "v1."},
            "spec": {"group": "", "version": "v1", "groupPriorityMinimum": 18000, "versionPriority": 1}});
        assert_eq!(errors(core), []);
        let bad = json!({"metadata": {"name": "v1.other"},
            "spec": {"group": "", "version": "v2", "service": null, "caBundle": "Zm9v",
                     "insecureSkipTLSVerify": true, "groupPriorityMinimum": 0, "versionPriority": 2000}});
        let got = errors(bad);
        let fields: Vec<&str> = got.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "metadata.name",
                "spec.group",
                "spec.groupPriorityMinimum",
                "spec.versionPriority",
                "spec.caBundle",
                "spec.insecureSkipTLSVerify"
            ]
        );
        assert_eq!(
            got[0].1,
            "Invalid value: \"v1.other\": must be `spec.version+\".\"+spec.group`: \"v2.\""
        );
        assert_eq!(
            got[4].1,
            "Invalid value: \"3 bytes\": local APIServices may not have a caBundle"
        );
        let both = json!({"metadata": {"name": "v1.g"},
            "spec": {"group": "g", "version": "v1", "service": {"namespace": "", "name": "a"},
                     "caBundle": "Zm9v", "insecureSkipTLSVerify": true,
                     "groupPriorityMinimum": 1, "versionPriority": 1}});
        let got = errors(both);
        assert_eq!(got[0].0, "spec.service.namespace");
        assert_eq!(
            got[1].1,
            "Invalid value: true: may not be true if caBundle is present"
        );
    }
}
