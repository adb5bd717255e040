//! Pod specs, wherever they appear: a Pod's `spec`, and the template of every workload.

use std::collections::HashSet;

use serde_json::Value;

use super::Errors;
use crate::object::{NameRule, invalid_name};

const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
/// In upstream's order, which its message keeps.
const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
const DNS_POLICIES: &[&str] = &["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"];
const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];

/// The volume sources a volume may name (exactly one of them).
const VOLUME_SOURCES: &[&str] = &[
    "hostPath",
    "emptyDir",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "persistentVolumeClaim",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "downwardAPI",
    "fc",
    "azureFile",
    "configMap",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "projected",
    "portworxVolume",
    "scaleIO",
    "storageos",
    "csi",
    "ephemeral",
    "image",
];

/// ValidatePodSpec, at `path` (`spec` or `spec.template.spec`).
pub fn spec(spec: &Value, path: &str, errs: &mut Errors) {
    let volumes = volumes(&spec["volumes"], &format!("{path}.volumes"), errs);
    let mut names = HashSet::new();
    match spec["containers"].as_array() {
        Some(list) if !list.is_empty() => {
            for (i, c) in list.iter().enumerate() {
                container(
                    c,
                    &format!("{path}.containers[{i}]"),
                    &volumes,
                    &mut names,
                    errs,
                );
            }
        }
        _ => errs.required(&format!("{path}.containers"), ""),
    }
    for (i, c) in spec["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        container(
            c,
            &format!("{path}.initContainers[{i}]"),
            &volumes,
            &mut names,
            errs,
        );
    }
    one_of(
        &spec["restartPolicy"],
        &format!("{path}.restartPolicy"),
        RESTART_POLICIES,
        errs,
    );
    one_of(
        &spec["dnsPolicy"],
        &format!("{path}.dnsPolicy"),
        DNS_POLICIES,
        errs,
    );
    for field in ["terminationGracePeriodSeconds", "activeDeadlineSeconds"] {
        errs.non_negative(&format!("{path}.{field}"), &spec[field]);
    }
    if spec["activeDeadlineSeconds"].as_i64() == Some(0) {
        errs.invalid(
            &format!("{path}.activeDeadlineSeconds"),
            &spec["activeDeadlineSeconds"],
            "must be between 1 and 2147483647, inclusive",
        );
    }
}

/// A required value from a fixed set (skipped when unset: defaulting filled what it could).
pub fn one_of(value: &Value, field: &str, allowed: &[&str], errs: &mut Errors) {
    match value.as_str() {
        None => {}
        Some("") => errs.required(field, ""),
        Some(v) if !allowed.contains(&v) => errs.not_supported(field, value, allowed),
        Some(_) => {}
    }
}

/// A required name that is a DNS label and unique among its siblings.
fn unique_label(value: &Value, field: &str, seen: &mut HashSet<String>, errs: &mut Errors) {
    let name = value.as_str().unwrap_or_default();
    if name.is_empty() {
        errs.required(field, "");
    } else if let Some(why) = invalid_name(NameRule::Label, name) {
        errs.invalid(field, value, &why);
    } else if !seen.insert(name.to_string()) {
        errs.duplicate(field, value);
    }
}

fn volumes(list: &Value, path: &str, errs: &mut Errors) -> HashSet<String> {
    let mut names = HashSet::new();
    for (i, v) in list.as_array().into_iter().flatten().enumerate() {
        let at = format!("{path}[{i}]");
        unique_label(&v["name"], &format!("{at}.name"), &mut names, errs);
        let sources: Vec<&str> = VOLUME_SOURCES
            .iter()
            .copied()
            .filter(|s| v.get(*s).is_some_and(|x| !x.is_null()))
            .collect();
        match sources.as_slice() {
            [] => errs.required(&at, "must specify a volume type"),
            [_] => {}
            [_, more @ ..] => {
                for s in more {
                    errs.forbidden(
                        &format!("{at}.{s}"),
                        "may not specify more than 1 volume type",
                    );
                }
            }
        }
    }
    names
}

fn container(
    c: &Value,
    path: &str,
    volumes: &HashSet<String>,
    names: &mut HashSet<String>,
    errs: &mut Errors,
) {
    // Upstream's order: the name, image, ports, env, mounts, pull policy; duplicates last.
    let name = c["name"].as_str().unwrap_or_default();
    if name.is_empty() {
        errs.required(&format!("{path}.name"), "");
    } else if let Some(why) = invalid_name(NameRule::Label, name) {
        errs.invalid(&format!("{path}.name"), &c["name"], &why);
    }
    if c["image"].as_str().is_none_or(|i| i.trim().is_empty()) {
        errs.required(&format!("{path}.image"), "");
    }
    let mut port_names = HashSet::new();
    for (i, p) in c["ports"].as_array().into_iter().flatten().enumerate() {
        let at = format!("{path}.ports[{i}]");
        match p["containerPort"].as_i64() {
            None | Some(0) => errs.required(&format!("{at}.containerPort"), ""),
            Some(n) if !(1..=65535).contains(&n) => errs.invalid(
                &format!("{at}.containerPort"),
                &p["containerPort"],
                "must be between 1 and 65535, inclusive",
            ),
            Some(_) => {}
        }
        if let Some(n) = p["hostPort"]
            .as_i64()
            .filter(|n| *n != 0 && !(1..=65535).contains(n))
        {
            errs.invalid(
                &format!("{at}.hostPort"),
                &Value::from(n),
                "must be between 1 and 65535, inclusive",
            );
        }
        if let Some(port_name) = p["name"].as_str().filter(|n| !n.is_empty()) {
            if !port_names.insert(port_name.to_string()) {
                errs.duplicate(&format!("{at}.name"), &p["name"]);
            }
        }
        match p["protocol"].as_str() {
            None | Some("") => errs.required(&format!("{at}.protocol"), ""),
            Some(proto) if !PROTOCOLS.contains(&proto) => {
                errs.not_supported(&format!("{at}.protocol"), &p["protocol"], PROTOCOLS)
            }
            Some(_) => {}
        }
    }
    for (i, e) in c["env"].as_array().into_iter().flatten().enumerate() {
        if e["name"].as_str().is_none_or(str::is_empty) {
            errs.required(&format!("{path}.env[{i}].name"), "");
        }
    }
    for (i, m) in c["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let at = format!("{path}.volumeMounts[{i}]");
        let name = m["name"].as_str().unwrap_or_default();
        if name.is_empty() {
            errs.required(&format!("{at}.name"), "");
        } else if !volumes.contains(name) {
            errs.not_found(&format!("{at}.name"), &m["name"]);
        }
        if m["mountPath"].as_str().is_none_or(str::is_empty) {
            errs.required(&format!("{at}.mountPath"), "");
        }
    }
    one_of(
        &c["imagePullPolicy"],
        &format!("{path}.imagePullPolicy"),
        PULL_POLICIES,
        errs,
    );
    if !name.is_empty() && !names.insert(name.to_string()) {
        errs.duplicate(&format!("{path}.name"), &c["name"]);
    }
}
