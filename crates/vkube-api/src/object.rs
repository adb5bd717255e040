//! Object metadata rules on write: names per type, generateName, uid, creationTimestamp,
//! resourceVersion and generation, as kube-apiserver's generic registry applies them.

use serde_json::{Value, json};

use crate::registry::Resource;
use crate::selector::is_dns_label;
use crate::status::{Cause, Status};

/// How a resource's names are validated upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    /// RFC 1123 subdomain: most resources.
    Subdomain,
    /// RFC 1123 label: namespaces.
    Label,
    /// RFC 1035 label: services (names become DNS names that must start with a letter).
    Dns1035,
    /// Any path segment: RBAC objects (`system:…` names).
    PathSegment,
}

pub fn name_rule(resource: &Resource) -> NameRule {
    match (resource.group, resource.plural) {
        ("", "namespaces") => NameRule::Label,
        ("", "services") => NameRule::Dns1035,
        ("rbac.authorization.k8s.io", _) => NameRule::PathSegment,
        // `v1.` (the core group's APIService) is no subdomain: upstream checks a path segment,
        // then `version.group` (validation/apiservice.rs).
        ("apiregistration.k8s.io", "apiservices") => NameRule::PathSegment,
        _ => NameRule::Subdomain,
    }
}

const SUBDOMAIN_ERR: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_ERR: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1035_ERR: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

/// One dot-separated part of an RFC 1123 subdomain: a DNS label without the 63-character limit,
/// which upstream's subdomain regex does not impose on the parts (only 253 for the whole).
fn is_subdomain_part(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    b.first().is_some_and(alnum)
        && b.last().is_some_and(alnum)
        && b.iter().all(|c| alnum(c) || *c == b'-')
}

/// The reason `name` is not a valid name under `rule`, in upstream's words.
pub fn invalid_name(rule: NameRule, name: &str) -> Option<String> {
    match rule {
        NameRule::Subdomain => {
            if name.len() > 253 {
                Some("must be no more than 253 characters".into())
            } else if !name.split('.').all(is_subdomain_part) {
                Some(SUBDOMAIN_ERR.into())
            } else {
                None
            }
        }
        NameRule::Label | NameRule::Dns1035 => {
            if name.len() > 63 {
                Some("must be no more than 63 characters".into())
            } else if !is_dns_label(name) {
                Some(
                    if rule == NameRule::Label {
                        LABEL_ERR
                    } else {
                        DNS1035_ERR
                    }
                    .into(),
                )
            } else if rule == NameRule::Dns1035 && !name.as_bytes()[0].is_ascii_lowercase() {
                Some(DNS1035_ERR.into())
            } else {
                None
            }
        }
        NameRule::PathSegment => {
            if name == "." || name == ".." {
                Some(format!("may not be '{name}'"))
            } else {
                ['/', '%']
                    .into_iter()
                    .find(|c| name.contains(*c))
                    .map(|c| format!("may not contain '{c}'"))
            }
        }
    }
}

/// One cause of a 422: its reason, field path and message.
pub fn cause(reason: &str, field: &str, message: String) -> Cause {
    Cause {
        reason: reason.into(),
        message,
        field: field.into(),
    }
}

/// RFC 3339 in UTC with seconds, as Kubernetes writes timestamps.
pub fn now() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.format(&time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
    ))
    .unwrap_or_default()
}

/// The five random characters upstream appends to `generateName` (no vowels, no look-alikes).
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .take(5)
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// Checks `apiVersion`/`kind` of a body against the path it was sent to, filling them if absent.
pub fn check_type(resource: &Resource, obj: &mut Value) -> Result<(), Status> {
    let Some(map) = obj.as_object_mut() else {
        return Err(Status::bad_request(
            "the object provided is not a JSON object",
        ));
    };
    let api_version = resource.api_version();
    match map.get("kind").and_then(Value::as_str) {
        None | Some("") => drop(map.insert("kind".into(), json!(resource.kind))),
        Some(k) if k == resource.kind => {}
        Some(k) => {
            return Err(Status::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                resource.kind
            )));
        }
    }
    match map.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => drop(map.insert("apiVersion".into(), json!(api_version))),
        Some(v) if v == api_version => {}
        Some(v) => {
            return Err(Status::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )));
        }
    }
    if !map.get("metadata").is_some_and(Value::is_object) {
        map.insert("metadata".into(), json!({}));
    }
    Ok(())
}

/// The namespace a request writes into must be the object's.
pub fn check_namespace(
    resource: &Resource,
    obj: &mut Value,
    namespace: &str,
) -> Result<(), Status> {
    let meta = &mut obj["metadata"];
    if !resource.namespaced {
        if let Some(map) = meta.as_object_mut() {
            map.remove("namespace");
        }
        return Ok(());
    }
    match meta["namespace"].as_str() {
        None | Some("") => meta["namespace"] = json!(namespace),
        Some(ns) if ns == namespace => {}
        Some(_) => {
            return Err(Status::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
    }
    Ok(())
}

/// Fills and validates the metadata of an object about to be created.
pub fn prepare_create(resource: &Resource, obj: &mut Value) -> Result<String, Status> {
    let meta = &mut obj["metadata"];
    let mut name = meta["name"].as_str().unwrap_or_default().to_string();
    if name.is_empty() {
        if let Some(prefix) = meta["generateName"].as_str().filter(|p| !p.is_empty()) {
            name = format!("{prefix}{}", random_suffix());
        }
    }
    let invalid = |causes| Status::invalid(resource.kind, resource.group, &name, causes);
    if name.is_empty() {
        return Err(invalid(vec![cause(
            "FieldValueRequired",
            "metadata.name",
            "Required value: name or generateName is required".into(),
        )]));
    }
    if let Some(why) = invalid_name(name_rule(resource), &name) {
        return Err(invalid(vec![cause(
            "FieldValueInvalid",
            "metadata.name",
            format!("Invalid value: {name:?}: {why}"),
        )]));
    }
    if meta["resourceVersion"]
        .as_str()
        .is_some_and(|v| !v.is_empty())
    {
        return Err(Status::bad_request(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    let Some(map) = meta.as_object_mut() else {
        return Err(Status::bad_request("metadata must be an object"));
    };
    map.insert("name".into(), json!(name));
    map.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    map.insert("creationTimestamp".into(), json!(now()));
    map.remove("deletionTimestamp");
    map.remove("deletionGracePeriodSeconds");
    map.remove("selfLink");
    if tracks_generation(resource) {
        obj["metadata"]["generation"] = json!(1);
    }
    Ok(name)
}

/// Whether upstream's strategy for a resource keeps `metadata.generation` (workloads and the other
/// types whose controllers report an observedGeneration); ConfigMaps, Secrets, Namespaces and
/// the like have none.
pub fn tracks_generation(resource: &Resource) -> bool {
    resource.custom
        || matches!(
            (resource.group, resource.plural),
            ("apps", _)
                | ("batch", _)
                | ("autoscaling", _)
                | ("policy", "poddisruptionbudgets")
                | ("networking.k8s.io", "ingresses" | "networkpolicies")
                | ("", "replicationcontrollers")
                | ("admissionregistration.k8s.io", _)
                | ("apiextensions.k8s.io", _)
        )
}

/// Carries over what an update may not change, and raises `generation` when the spec changed.
pub fn prepare_update(old: &Value, obj: &mut Value) -> Result<(), Status> {
    let name = old["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let new_name = obj["metadata"]["name"].as_str().unwrap_or_default();
    if !new_name.is_empty() && new_name != name {
        return Err(Status::bad_request(format!(
            "the name of the object ({new_name}) does not match the name on the URL ({name})"
        )));
    }
    let new_meta = &mut obj["metadata"];
    for field in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match old["metadata"].get(field) {
            Some(v) => new_meta[field] = v.clone(),
            None => drop(new_meta.as_object_mut().and_then(|m| m.remove(field))),
        }
    }
    let spec_changed = old.get("spec") != obj.get("spec");
    if spec_changed && old["metadata"].get("generation").is_some() {
        let generation = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
        obj["metadata"]["generation"] = json!(generation);
    }
    // Only DaemonSets carry it: their template generation rises with each template change.
    let key = crate::strategy::TEMPLATE_GENERATION;
    if let Some(was) = old["metadata"]["annotations"][key].as_str() {
        let was = was.parse::<i64>().unwrap_or(1);
        let now = if old["spec"]["template"] != obj["spec"]["template"] {
            was + 1
        } else {
            was
        };
        obj["metadata"]["annotations"][key] = json!(now.to_string());
    }
    Ok(())
}

/// Sets `metadata.resourceVersion` to the store revision the object was written at.
pub fn set_resource_version(obj: &mut Value, revision: i64) {
    obj["metadata"]["resourceVersion"] = json!(revision.to_string());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::find;

    #[test]
    fn names_follow_each_types_rule() {
        assert_eq!(invalid_name(NameRule::Subdomain, "a.b-c"), None);
        // Only the whole name has a limit (253), not its parts (as upstream's regex).
        assert_eq!(invalid_name(NameRule::Subdomain, &"a".repeat(253)), None);
        assert!(invalid_name(NameRule::Subdomain, &"a".repeat(254)).is_some());
        assert!(invalid_name(NameRule::Subdomain, "a..b").is_some());
        assert!(
            invalid_name(NameRule::Subdomain, "Bad_")
                .unwrap()
                .starts_with("a lowercase RFC 1123 subdomain")
        );
        assert!(invalid_name(NameRule::Label, "a.b").is_some());
        assert!(
            invalid_name(NameRule::Dns1035, "1abc")
                .unwrap()
                .starts_with("a DNS-1035 label")
        );
        assert_eq!(invalid_name(NameRule::PathSegment, "system:admin"), None);
        assert!(invalid_name(NameRule::PathSegment, "a/b").is_some());
    }

    #[test]
    fn create_fills_metadata() {
        let cm = find("", "v1", "configmaps").unwrap();
        let mut obj = json!({"metadata": {"generateName": "web-"}});
        check_type(cm, &mut obj).unwrap();
        check_namespace(cm, &mut obj, "default").unwrap();
        let name = prepare_create(cm, &mut obj).unwrap();
        assert!(name.starts_with("web-") && name.len() == 9);
        assert_eq!(obj["kind"], "ConfigMap");
        assert_eq!(obj["apiVersion"], "v1");
        assert_eq!(obj["metadata"]["namespace"], "default");
        assert_eq!(obj["metadata"]["uid"].as_str().unwrap().len(), 36);
        let err = prepare_create(cm, &mut json!({"metadata": {"name": "Bad_"}})).unwrap_err();
        assert_eq!(err.code, 422);
        assert!(
            err.message.starts_with(
                "ConfigMap \"Bad_\" is invalid: metadata.name: Invalid value: \"Bad_\""
            )
        );
    }

    #[test]
    fn update_raises_generation_on_spec_change_only() {
        let old = json!({"metadata": {"name": "d", "uid": "u", "generation": 3}, "spec": {"replicas": 1}});
        let mut same =
            json!({"metadata": {"name": "d", "labels": {"a": "b"}}, "spec": {"replicas": 1}});
        prepare_update(&old, &mut same).unwrap();
        assert_eq!(same["metadata"]["generation"], 3);
        assert_eq!(same["metadata"]["uid"], "u");
        let mut changed = json!({"metadata": {"name": "d"}, "spec": {"replicas": 2}});
        prepare_update(&old, &mut changed).unwrap();
        assert_eq!(changed["metadata"]["generation"], 4);
    }
}
