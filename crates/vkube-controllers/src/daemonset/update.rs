//! The RollingUpdate strategy (upstream's `rollingUpdate` in pkg/controller/daemon/update.go).
//! Without surge, old pods are deleted while no more than `maxUnavailable` nodes lack an
//! available daemon pod, and the sync then creates the new pods in their place. With
//! `maxSurge`, a new pod is created beside an old one on up to `maxSurge` nodes at a time, and
//! the old one goes once the new one is available.

use std::collections::{BTreeMap, HashMap};

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::nodes::should_run;
use super::{Pass, is_updated};
use crate::pods::is_available;
use crate::{Error, Result};

/// `value` of `total` (a count or a percentage, rounded up), as upstream's
/// `GetScaledValueFromIntOrPercent(…, roundUp=true)`.
pub fn scaled(value: Option<&IntOrString>, total: i32) -> Result<i32> {
    match value {
        None => Ok(0),
        Some(IntOrString::Int(n)) => Ok(*n),
        Some(IntOrString::String(s)) => {
            let percent: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| Error::Invalid(format!("invalid value for IntOrString: {s:?}")))?;
            Ok(((percent * i64::from(total) + 99) / 100) as i32)
        }
    }
}

fn rolling(ds: &DaemonSet) -> Option<k8s_openapi::api::apps::v1::RollingUpdateDaemonSet> {
    let strategy = ds
        .spec
        .as_ref()?
        .update_strategy
        .clone()
        .unwrap_or_default();
    if strategy.type_.as_deref().unwrap_or("RollingUpdate") != "RollingUpdate" {
        return None;
    }
    // The API's defaults (maxUnavailable 1, maxSurge 0) when it left them out.
    Some(
        strategy
            .rolling_update
            .unwrap_or(k8s_openapi::api::apps::v1::RollingUpdateDaemonSet {
                max_unavailable: Some(IntOrString::Int(1)),
                max_surge: None,
            }),
    )
}

/// Upstream's `util.SurgeCount`.
pub fn surge_count(ds: &DaemonSet, desired: i32) -> Result<i32> {
    match rolling(ds) {
        Some(r) => scaled(r.max_surge.as_ref(), desired),
        None => Ok(0),
    }
}

/// Upstream's `util.UnavailableCount`.
fn unavailable_count(ds: &DaemonSet, desired: i32) -> Result<i32> {
    match rolling(ds) {
        Some(r) => scaled(r.max_unavailable.as_ref(), desired),
        None => Ok(0),
    }
}

/// Upstream's `util.AllowsSurge`.
pub fn allows_surge(ds: &DaemonSet) -> bool {
    surge_count(ds, 1).is_ok_and(|n| n != 0)
}

/// The node's one new and one old pod, not counting pods being deleted; `None` when it has more
/// than one of either (the sync cleans that up first).
fn updated_and_old<'a>(
    ds: &DaemonSet,
    pods: &'a [Pod],
    hash: &str,
) -> Option<(Option<&'a Pod>, Option<&'a Pod>)> {
    let (mut new, mut old) = (None, None);
    for pod in pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        let slot = if is_updated(ds, pod, hash) {
            &mut new
        } else {
            &mut old
        };
        if slot.is_some() {
            return None;
        }
        *slot = Some(pod);
    }
    Some((new, old))
}

/// The pods to delete and the nodes to create new pods on for one step of the update.
pub fn plan(
    pass: &Pass,
    by_node: &BTreeMap<String, Vec<Pod>>,
    now: Timestamp,
) -> Result<(Vec<String>, Vec<String>)> {
    let ds = &pass.ds;
    let hash = pass.hash.as_str();
    let min_ready = ds
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0);
    let available = |p: &Pod| is_available(p, min_ready, now);
    let template = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .unwrap_or_default();
    let nodes: HashMap<&str, &Node> = pass
        .nodes
        .iter()
        .map(|n| (n.metadata.name.as_deref().unwrap_or_default(), n))
        .collect();
    // Upstream's `updatedDesiredNodeCounts`: every node that should run a pod is considered,
    // with or without one.
    let mut considered: BTreeMap<&str, &[Pod]> = by_node
        .iter()
        .map(|(n, pods)| (n.as_str(), pods.as_slice()))
        .collect();
    let mut desired = 0;
    for (name, node) in &nodes {
        if should_run(&template, node).0 {
            desired += 1;
            considered.entry(name).or_insert(&[]);
        }
    }
    let mut max_unavailable = unavailable_count(ds, desired)?;
    let max_surge = surge_count(ds, desired)?;
    if desired > 0 && max_unavailable == 0 && max_surge == 0 {
        max_unavailable = 1;
    }

    if max_surge == 0 {
        let mut unavailable = 0;
        let mut replacements = Vec::new();
        let mut candidates = Vec::new();
        for pods in considered.values() {
            let Some((new, old)) = updated_and_old(ds, pods, hash) else {
                unavailable += 1;
                continue;
            };
            match (new, old) {
                (None, None) | (Some(_), Some(_)) => unavailable += 1,
                (Some(new), None) => {
                    if !available(new) {
                        unavailable += 1;
                    }
                }
                (None, Some(old)) => {
                    if !available(old) {
                        replacements.push(name_of(old));
                        unavailable += 1;
                    } else if unavailable < max_unavailable {
                        candidates.push(name_of(old));
                    }
                }
            }
        }
        let room = (max_unavailable - unavailable).max(0) as usize;
        candidates.truncate(room);
        replacements.extend(candidates);
        return Ok((replacements, Vec::new()));
    }

    let mut delete = Vec::new();
    // Old available pods on nodes that should no longer run one: they go only while as many
    // pods stay available as nodes want one (with surge the owner expects full availability).
    let mut sunset = Vec::new();
    let mut allowed_nodes = Vec::new();
    let mut candidate_nodes = Vec::new();
    let (mut surging, mut num_available) = (0, 0);
    for (node_name, pods) in &considered {
        let Some((new, old)) = updated_and_old(ds, pods, hash) else {
            surging += 1;
            continue;
        };
        if old.or(new).is_some_and(available) {
            num_available += 1;
        }
        let runs_here = || {
            nodes
                .get(node_name)
                .is_some_and(|n| should_run(&template, n).0)
        };
        match (new, old) {
            (_, None) => {}
            (None, Some(old)) if !available(old) => {
                if runs_here() {
                    allowed_nodes.push(node_name.to_string());
                } else {
                    delete.push(name_of(old));
                }
            }
            (None, Some(old)) => {
                if !runs_here() {
                    sunset.push(name_of(old));
                } else if surging < max_surge {
                    candidate_nodes.push(node_name.to_string());
                }
            }
            (Some(new), Some(old)) => {
                if available(new) {
                    delete.push(name_of(old));
                } else {
                    surging += 1;
                }
            }
        }
    }
    let deletable = (num_available - desired).max(0) as usize;
    delete.extend(sunset.into_iter().take(deletable));
    let room = (max_surge - surging).max(0) as usize;
    candidate_nodes.truncate(room);
    allowed_nodes.extend(candidate_nodes);
    Ok((delete, allowed_nodes))
}

fn name_of(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}
