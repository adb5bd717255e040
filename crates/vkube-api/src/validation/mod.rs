//! Per-type validation, run after defaulting on every create and update, with upstream's field
//! paths and wording so a refused object reads exactly as kube-apiserver would refuse it (422,
//! `Invalid`, one cause per problem). It covers what users hit in practice: metadata labels and
//! annotations, pod specs (in Pods and every template), workloads, Services, ConfigMaps and
//! Secrets, RBAC and Jobs. Types not listed here get the metadata checks only.

pub mod admission_policy;
mod apiservice;
mod pod_update;
mod pods;
mod types;
mod webhooks;

/// A CRD conversion webhook's clientConfig is checked as an admission webhook's.
pub(crate) use webhooks::client_config as webhook_client_config;

use serde_json::Value;

use crate::Resource;
use crate::status::{Cause, Status};

/// One field error, as upstream's `field.Error`.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub reason: &'static str,
    pub field: String,
    pub message: String,
}

/// The errors found so far, in the order upstream reports them.
#[derive(Default)]
pub struct Errors(pub Vec<FieldError>);

impl Errors {
    /// An error whose message the caller has already worded (deduplicated like the others).
    pub fn push(&mut self, reason: &'static str, field: &str, message: String) {
        let e = FieldError {
            reason,
            field: field.to_string(),
            message,
        };
        if !self.0.contains(&e) {
            self.0.push(e);
        }
    }

    pub fn required(&mut self, field: &str, detail: &str) {
        self.push(
            "FieldValueRequired",
            field,
            with_detail("Required value", detail),
        );
    }

    pub fn invalid(&mut self, field: &str, value: &Value, detail: &str) {
        let body = format!("Invalid value: {}", go_value(value));
        self.push("FieldValueInvalid", field, with_detail(&body, detail));
    }

    pub fn not_supported(&mut self, field: &str, value: &Value, supported: &[&str]) {
        let listed: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        let detail = format!("supported values: {}", listed.join(", "));
        let body = format!("Unsupported value: {}", go_value(value));
        self.push("FieldValueNotSupported", field, with_detail(&body, &detail));
    }

    pub fn duplicate(&mut self, field: &str, value: &Value) {
        self.push(
            "FieldValueDuplicate",
            field,
            format!("Duplicate value: {}", go_value(value)),
        );
    }

    pub fn not_found(&mut self, field: &str, value: &Value) {
        self.push(
            "FieldValueNotFound",
            field,
            format!("Not found: {}", go_value(value)),
        );
    }

    /// An invalid value whose Go rendering (a struct, say) the caller formats.
    pub fn push_raw_invalid(&mut self, field: &str, value: &str, detail: &str) {
        let body = format!("Invalid value: {value}");
        self.push("FieldValueInvalid", field, with_detail(&body, detail));
    }

    pub fn forbidden(&mut self, field: &str, detail: &str) {
        self.push(
            "FieldValueForbidden",
            field,
            with_detail("Forbidden", detail),
        );
    }

    pub fn too_long(&mut self, field: &str, max: usize) {
        let detail = format!("may not be more than {max} bytes");
        self.push("FieldValueTooLong", field, with_detail("Too long", &detail));
    }

    /// A non-negative integer field, when set.
    pub fn non_negative(&mut self, field: &str, value: &Value) {
        if value.as_i64().is_some_and(|n| n < 0) {
            self.invalid(field, value, "must be greater than or equal to 0");
        }
    }
}

fn with_detail(body: &str, detail: &str) -> String {
    if detail.is_empty() {
        body.to_string()
    } else {
        format!("{body}: {detail}")
    }
}

/// A bad value as Go's `field.Error` prints it: strings quoted, numbers and booleans bare.
pub fn go_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "null".into(),
        Value::Object(map) if map.values().all(Value::is_string) => {
            // map[string]string, as %#v prints it (Go sorts map keys).
            let mut pairs: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{k:?}:{:?}", v.as_str().unwrap_or_default()))
                .collect();
            pairs.sort();
            format!("map[string]string{{{}}}", pairs.join(", "))
        }
        other => other.to_string(),
    }
}

/// Validates `obj` (already defaulted) as a `resource` to be written; `old` is the stored object
/// on an update. Returns upstream's 422 when anything is wrong.
pub fn validate(resource: &Resource, obj: &Value, old: Option<&Value>) -> Result<(), Status> {
    let mut errs = Errors::default();
    metadata(&obj["metadata"], "metadata", &mut errs);
    types::validate(resource, obj, old, &mut errs);
    if let (
        "admissionregistration.k8s.io",
        kind @ ("MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration"),
    ) = (resource.group, resource.kind)
    {
        webhooks::configuration(obj, kind.starts_with("Mutating"), &mut errs);
    }
    match (resource.group, resource.kind) {
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy") => {
            admission_policy::policy(obj, &mut errs)
        }
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding") => {
            admission_policy::binding(obj, &mut errs)
        }
        ("apiregistration.k8s.io", "APIService") => apiservice::validate(obj, &mut errs),
        ("flowcontrol.apiserver.k8s.io", "FlowSchema") => {
            crate::flowcontrol::validate_flow_schema(obj, &mut errs)
        }
        ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration") => {
            crate::flowcontrol::validate_priority_level(obj, &mut errs)
        }
        _ => {}
    }
    if resource.group == "apiextensions.k8s.io" && resource.kind == "CustomResourceDefinition" {
        errs.0.extend(crate::crd::definition::validate(obj, old).0);
    }
    refuse(resource, obj, errs)
}

/// The rules of an update of the object itself, beyond [`validate`]'s: those a subresource
/// (a pod's `resize` or `ephemeralcontainers`) is exempt from.
pub fn validate_object_update(resource: &Resource, obj: &Value, old: &Value) -> Result<(), Status> {
    let mut errs = Errors::default();
    if (resource.group, resource.kind) == ("", "Pod") {
        pod_update::check(&obj["spec"], &old["spec"], &mut errs);
    }
    refuse(resource, obj, errs)
}

/// Upstream's 422 with one cause per error, or Ok when there is none.
fn refuse(resource: &Resource, obj: &Value, errs: Errors) -> Result<(), Status> {
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    errs.into_result(resource.kind, resource.group, name)
}

impl Errors {
    /// Upstream's 422 `Invalid` naming `kind.group "name"`, one cause per error; Ok when there
    /// is none.
    pub fn into_result(self, kind: &str, group: &str, name: &str) -> Result<(), Status> {
        if self.0.is_empty() {
            return Ok(());
        }
        let causes = self
            .0
            .into_iter()
            .map(|e| Cause {
                reason: e.reason.into(),
                message: e.message,
                field: e.field,
            })
            .collect();
        Err(Status::invalid(kind, group, name, causes))
    }
}

/// Labels and annotations of an object or a template.
pub fn metadata(meta: &Value, path: &str, errs: &mut Errors) {
    if let Some(labels) = meta["labels"].as_object() {
        let field = format!("{path}.labels");
        for (key, value) in labels {
            for msg in qualified_name(key) {
                errs.invalid(&field, &Value::String(key.clone()), &msg);
            }
            for msg in label_value(value.as_str().unwrap_or_default()) {
                errs.invalid(&field, value, &msg);
            }
        }
    }
    if let Some(annotations) = meta["annotations"].as_object() {
        let field = format!("{path}.annotations");
        let mut size = 0;
        for (key, value) in annotations {
            for msg in qualified_name(&key.to_lowercase()) {
                errs.invalid(&field, &Value::String(key.clone()), &msg);
            }
            size += key.len() + value.as_str().map_or(0, str::len);
        }
        if size > 256 * 1024 {
            errs.too_long(&field, 256 * 1024);
        }
    }
}

const QUALIFIED_NAME_ERR: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_ERR: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const CONFIG_KEY_ERR: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`
fn is_qualified_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// IsQualifiedName: an optional DNS subdomain prefix and '/', then a name of at most 63 characters.
pub fn qualified_name(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else if let Some(why) =
                crate::object::invalid_name(crate::object::NameRule::Subdomain, prefix)
            {
                errs.push(format!("prefix part {why}"));
            }
            name
        }
        _ => {
            return vec![format!(
                "a qualified name {QUALIFIED_NAME_ERR} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            )];
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".into());
    } else if name.len() > 63 {
        errs.push("name part must be no more than 63 characters".into());
    }
    if !is_qualified_part(name) {
        errs.push(format!("name part {QUALIFIED_NAME_ERR}"));
    }
    errs
}

pub fn label_value(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push("must be no more than 63 characters".into());
    }
    if !value.is_empty() && !is_qualified_part(value) {
        errs.push(LABEL_VALUE_ERR.into());
    }
    errs
}

/// IsConfigMapKey: the keys of ConfigMap and Secret data.
pub fn config_key(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 253 {
        errs.push("must be no more than 253 characters".into());
    }
    if value.is_empty()
        || !value
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
    {
        errs.push(CONFIG_KEY_ERR.into());
    }
    if value == "." {
        errs.push("must not be '.'".into());
    } else if value == ".." {
        errs.push("must not be '..'".into());
    } else if value.starts_with("..") {
        errs.push("must not start with '..'".into());
    }
    errs
}

#[cfg(test)]
mod tests;
