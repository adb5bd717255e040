//! What a pod costs a quota, as upstream's pod evaluator measures it: its requests and limits
//! summed over containers (an init container's only when it exceeds them, sidecars added), plus
//! its overhead; which scopes it falls in; and the old rule that quotas on cpu or memory make every
//! container state them.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use time::OffsetDateTime;

use super::{ResourceList, add_into, parse_list};
use crate::quantity::Quantity;

/// The names the pod evaluator tracks (besides the hugepages and extended-resource families).
pub(super) const POD_RESOURCES: &[&str] = &[
    "count/pods",
    "cpu",
    "memory",
    "ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "pods",
];

/// Quotas on these make every container state them (upstream keeps this for compatibility).
const MUST_SPECIFY: &[&str] = &[
    "cpu",
    "memory",
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
];

/// `cpu`, `pods`, `example.com` without a slash, or anything in `kubernetes.io/`.
fn is_native(name: &str) -> bool {
    !name.contains('/') || name.contains("kubernetes.io/")
}

/// An extended resource a container may request (`example.com/dongle`).
fn is_extended(name: &str) -> bool {
    !is_native(name) && !name.starts_with("requests.")
}

/// Whether a quota's resource name belongs to pods.
pub(super) fn tracks(name: &str) -> bool {
    POD_RESOURCES.contains(&name)
        || name.starts_with("hugepages-")
        || name.starts_with("requests.hugepages-")
        || (!is_native(name) && name.starts_with("requests."))
}

/// Upstream's podComputeUsageHelper: the quota names one set of requests and limits charges.
fn compute_usage(requests: &ResourceList, limits: &ResourceList) -> ResourceList {
    let mut out = ResourceList::new();
    out.insert("pods".into(), Quantity::from_units(1));
    for r in ["cpu", "memory", "ephemeral-storage"] {
        if let Some(q) = requests.get(r) {
            out.insert(r.into(), *q);
            out.insert(format!("requests.{r}"), *q);
        }
        if let Some(q) = limits.get(r) {
            out.insert(format!("limits.{r}"), *q);
        }
    }
    for (name, q) in requests {
        if name.starts_with("hugepages-") {
            out.insert(name.clone(), *q);
            out.insert(format!("requests.{name}"), *q);
        }
        if is_extended(name) {
            out.insert(format!("requests.{name}"), *q);
        }
    }
    out
}

fn max_into(into: &mut ResourceList, from: &ResourceList) {
    for (name, q) in from {
        match into.get(name) {
            Some(have) if have >= q => {}
            _ => drop(into.insert(name.clone(), *q)),
        }
    }
}

/// The pod's effective requests or limits (`what`): containers summed, restartable init
/// containers (sidecars) added, and each other init container counted only where it needs more.
fn aggregate(spec: &Value, what: &str) -> ResourceList {
    let list = |c: &Value| parse_list(&c["resources"][what]);
    let mut total = ResourceList::new();
    for c in spec["containers"].as_array().into_iter().flatten() {
        add_into(&mut total, &list(c));
    }
    let (mut sidecars, mut init_max) = (ResourceList::new(), ResourceList::new());
    for c in spec["initContainers"].as_array().into_iter().flatten() {
        let own = list(c);
        let need = if c["restartPolicy"] == "Always" {
            add_into(&mut total, &own);
            add_into(&mut sidecars, &own);
            sidecars.clone()
        } else {
            let mut need = own;
            add_into(&mut need, &sidecars);
            need
        };
        max_into(&mut init_max, &need);
    }
    max_into(&mut total, &init_max);
    total
}

fn requests(spec: &Value) -> ResourceList {
    let mut out = aggregate(spec, "requests");
    add_into(&mut out, &parse_list(&spec["overhead"]));
    out
}

fn limits(spec: &Value) -> ResourceList {
    let mut out = aggregate(spec, "limits");
    // Overhead raises only the limits that are set.
    for (name, q) in parse_list(&spec["overhead"]) {
        if let Some(have) = out.get_mut(&name) {
            *have = *have + q;
        }
    }
    out
}

/// Terminal pods, and pods whose deletion grace period has passed, no longer hold compute quota.
fn charged(pod: &Value, now: OffsetDateTime) -> bool {
    let phase = pod["status"]["phase"].as_str().unwrap_or_default();
    if phase == "Succeeded" || phase == "Failed" {
        return false;
    }
    let meta = &pod["metadata"];
    let (Some(at), Some(grace)) = (
        meta["deletionTimestamp"].as_str(),
        meta["deletionGracePeriodSeconds"].as_i64(),
    ) else {
        return true;
    };
    match OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339) {
        Ok(at) => now <= at + time::Duration::seconds(grace),
        Err(_) => true,
    }
}

/// Upstream's PodUsageFunc: `count/pods` always, the compute resources while the pod lives.
pub(super) fn usage(pod: &Value, now: OffsetDateTime) -> ResourceList {
    let mut out = ResourceList::new();
    out.insert("count/pods".into(), Quantity::from_units(1));
    if charged(pod, now) {
        let spec = &pod["spec"];
        add_into(&mut out, &compute_usage(&requests(spec), &limits(spec)));
    }
    out
}

/// The QoS class: the one the server recorded, else BestEffort when no container asks for cpu
/// or memory.
fn best_effort(pod: &Value) -> bool {
    if let Some(class) = pod["status"]["qosClass"].as_str().filter(|c| !c.is_empty()) {
        return class == "BestEffort";
    }
    let spec = &pod["spec"];
    !["containers", "initContainers"].iter().any(|list| {
        spec[*list].as_array().into_iter().flatten().any(|c| {
            ["requests", "limits"].iter().any(|what| {
                let l = parse_list(&c["resources"][*what]);
                ["cpu", "memory"]
                    .iter()
                    .any(|r| l.get(*r).is_some_and(|q| q > &Quantity::zero()))
            })
        })
    })
}

fn cross_namespace_affinity(spec: &Value) -> bool {
    let cross = |t: &Value| {
        t["namespaces"].as_array().is_some_and(|n| !n.is_empty())
            || t["namespaceSelector"].is_object()
    };
    ["podAffinity", "podAntiAffinity"].iter().any(|kind| {
        let a = &spec["affinity"][*kind];
        let required = a["requiredDuringSchedulingIgnoredDuringExecution"].as_array();
        let preferred = a["preferredDuringSchedulingIgnoredDuringExecution"].as_array();
        required.into_iter().flatten().any(cross)
            || preferred
                .into_iter()
                .flatten()
                .any(|w| cross(&w["podAffinityTerm"]))
    })
}

/// A pod with a deadline (the Terminating scope).
pub(super) fn terminating(pod: &Value) -> bool {
    pod["spec"]["activeDeadlineSeconds"]
        .as_i64()
        .is_some_and(|s| s >= 0)
}

/// Whether a pod falls in one scope requirement (`{scopeName, operator, values}`).
pub(super) fn in_scope(req: &Value, pod: &Value) -> bool {
    let spec = &pod["spec"];
    let terminating = terminating(pod);
    match req["scopeName"].as_str().unwrap_or_default() {
        "Terminating" => terminating,
        "NotTerminating" => !terminating,
        "BestEffort" => best_effort(pod),
        "NotBestEffort" => !best_effort(pod),
        "CrossNamespacePodAffinity" => cross_namespace_affinity(spec),
        "PriorityClass" => {
            let class = spec["priorityClassName"].as_str().filter(|c| !c.is_empty());
            let listed = || {
                req["values"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|v| Some(v.as_str().unwrap_or_default()) == class)
            };
            match req["operator"].as_str().unwrap_or_default() {
                "Exists" => class.is_some(),
                "DoesNotExist" => class.is_none(),
                "In" => class.is_some() && listed(),
                "NotIn" => class.is_none() || !listed(),
                _ => false,
            }
        }
        _ => false,
    }
}

/// Quotas on cpu or memory need every container to state them: `must specify limits.cpu for:
/// a,b; requests.memory for: a` otherwise.
pub(super) fn constraints(required: &[String], pod: &Value) -> Result<(), String> {
    let required: BTreeSet<&str> = required
        .iter()
        .map(String::as_str)
        .filter(|r| MUST_SPECIFY.contains(r))
        .collect();
    let mut missing: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let spec = &pod["spec"];
    for c in ["containers", "initContainers"]
        .iter()
        .flat_map(|l| spec[*l].as_array().into_iter().flatten())
    {
        let usage = compute_usage(
            &parse_list(&c["resources"]["requests"]),
            &parse_list(&c["resources"]["limits"]),
        );
        for r in &required {
            if !usage.contains_key(*r) {
                let name = c["name"].as_str().unwrap_or_default().to_string();
                missing.entry(r).or_default().insert(name);
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let parts: Vec<String> = missing
        .iter()
        .map(|(r, names)| {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            format!("{r} for: {}", names.join(","))
        })
        .collect();
    Err(format!("must specify {}", parts.join("; ")))
}
