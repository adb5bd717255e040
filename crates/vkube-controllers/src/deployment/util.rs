//! upstream's pkg/controller/deployment/util: the pod-template-hash, the annotations a
//! Deployment writes on its ReplicaSets, maxSurge/maxUnavailable, conditions and the orders
//! ReplicaSets are scaled in.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

pub(crate) const HASH_LABEL: &str = "pod-template-hash";
pub(crate) const REVISION: &str = "deployment.kubernetes.io/revision";
pub(crate) const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub(crate) const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub(crate) const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
const MAX_REVISION_HISTORY_CHARS: usize = 2000;

/// Annotations of a Deployment never copied to its ReplicaSets (and kept on rollback).
const SKIPPED_ANNOTATIONS: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

// Condition reasons.
pub(crate) const RS_UPDATED: &str = "ReplicaSetUpdated";
pub(crate) const FAILED_RS_CREATE: &str = "ReplicaSetCreateError";
pub(crate) const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
pub(crate) const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
pub(crate) const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
pub(crate) const TIMED_OUT: &str = "ProgressDeadlineExceeded";
pub(crate) const PAUSED: &str = "DeploymentPaused";
pub(crate) const RESUMED: &str = "DeploymentResumed";
pub(crate) const MIN_AVAILABLE: &str = "MinimumReplicasAvailable";
pub(crate) const MIN_UNAVAILABLE: &str = "MinimumReplicasUnavailable";

/// upstream's `rand.SafeEncodeString` alphabet: no vowels, no 0/1/3 (no bad words).
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The pod-template-hash: FNV-32a of the template (upstream hashes Go's printing of the struct,
/// which a Rust program cannot reproduce; this hashes its JSON) and the collision count as
/// upstream adds it, printed in decimal and encoded with upstream's `SafeEncodeString`.
pub(crate) fn template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u32::from(*b);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    };
    feed(&serde_json::to_vec(template).unwrap_or_default());
    if let Some(c) = collision_count {
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&(c as u32).to_le_bytes());
        feed(&bytes);
    }
    hash.to_string()
        .bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

/// JSON without nulls, empty objects and empty lists: `None` and `Some(empty)` compare equal,
/// as upstream's semantic equality of the templates does.
fn normalized(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (k, normalized(v)))
                .filter(|(_, v)| match v {
                    Value::Null => false,
                    Value::Object(m) => !m.is_empty(),
                    Value::Array(a) => !a.is_empty(),
                    _ => true,
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(normalized).collect()),
        v => v,
    }
}

/// Whether two templates are equal but for the pod-template-hash label (upstream's
/// `EqualIgnoreHash`).
pub(crate) fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    let strip = |t: &PodTemplateSpec| {
        let mut t = t.clone();
        if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            labels.remove(HASH_LABEL);
        }
        normalized(serde_json::to_value(t).unwrap_or_default())
    };
    strip(a) == strip(b)
}

pub(crate) fn spec_replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

pub(crate) fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

pub(crate) fn set_rs_replicas(rs: &mut ReplicaSet, n: i32) {
    rs.spec.get_or_insert_default().replicas = Some(n);
}

pub(crate) fn rs_status_replicas(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map_or(0, |s| s.replicas)
}

pub(crate) fn rs_ready(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
}

pub(crate) fn rs_available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

/// Available replicas of `rs` that a rolling update may count on: its status, but never more
/// than it is scaled to (a status written before a scale-down still counts the pods it removes).
pub(crate) fn rs_countable_available(rs: &ReplicaSet) -> i32 {
    rs_available(rs).min(rs_replicas(rs))
}

pub(crate) fn is_rolling(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        .is_none_or(|t| t == "RollingUpdate")
}

pub(crate) fn paused(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false)
}

pub(crate) fn min_ready_seconds(d: &Deployment) -> i32 {
    d.spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0)
}

/// `progressDeadlineSeconds`, unless unset or "never" (MaxInt32).
pub(crate) fn progress_deadline(d: &Deployment) -> Option<i32> {
    d.spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .filter(|s| *s != i32::MAX)
}

/// upstream's `GetScaledValueFromIntOrPercent`.
pub(crate) fn scaled(
    value: Option<&IntOrString>,
    default: &str,
    total: i32,
    round_up: bool,
) -> i32 {
    match value {
        Some(IntOrString::Int(i)) => *i,
        other => {
            let s = match other {
                Some(IntOrString::String(s)) => s.as_str(),
                _ => default,
            };
            match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
                Some(p) => {
                    let n = p * i64::from(total);
                    let v = if round_up {
                        (n + 99).div_euclid(100)
                    } else {
                        n.div_euclid(100)
                    };
                    v as i32
                }
                None => s.parse().unwrap_or(0),
            }
        }
    }
}

/// (maxSurge, maxUnavailable) of a rolling Deployment: surge rounds up, unavailable down, and
/// when both are 0 unavailable is 1 (upstream's `ResolveFenceposts`). Defaults 25%.
pub(crate) fn fenceposts(d: &Deployment) -> (i32, i32) {
    if !is_rolling(d) {
        return (0, 0);
    }
    let replicas = spec_replicas(d);
    let rolling = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let surge = scaled(
        rolling.and_then(|r| r.max_surge.as_ref()),
        "25%",
        replicas,
        true,
    );
    let mut unavailable = scaled(
        rolling.and_then(|r| r.max_unavailable.as_ref()),
        "25%",
        replicas,
        false,
    );
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable.min(replicas))
}

pub(crate) fn max_surge(d: &Deployment) -> i32 {
    fenceposts(d).0
}

pub(crate) fn max_unavailable(d: &Deployment) -> i32 {
    fenceposts(d).1
}

fn annotation<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// The revision annotation of `rs` (0 when missing or unreadable).
pub(crate) fn revision(rs: &ReplicaSet) -> i64 {
    annotation(&rs.metadata, REVISION)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub(crate) fn int_annotation(rs: &ReplicaSet, key: &str) -> Option<i32> {
    annotation(&rs.metadata, key)?.parse().ok()
}

/// Sets the desired and max replicas annotations; whether they changed.
pub(crate) fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let annotations = rs.metadata.annotations.get_or_insert_default();
    let mut changed = false;
    for (k, v) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        if annotations.get(k).map(String::as_str) != Some(v.to_string().as_str()) {
            annotations.insert(k.to_string(), v.to_string());
            changed = true;
        }
    }
    changed
}

/// upstream's `SetNewReplicaSetAnnotations`: the Deployment's annotations but the skipped
/// ones, the revision raised to `new_revision` (the old one kept in the revision history), and
/// for a ReplicaSet about to be created, the replicas annotations.
pub(crate) fn set_new_rs_annotations(
    d: &Deployment,
    rs: &mut ReplicaSet,
    new_revision: i64,
    exists: bool,
) -> bool {
    let mut changed = false;
    let annotations = rs.metadata.annotations.get_or_insert_default();
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if SKIPPED_ANNOTATIONS.contains(&k.as_str()) || annotations.get(k) == Some(v) {
            continue;
        }
        annotations.insert(k.clone(), v.clone());
        changed = true;
    }
    let old = annotations.get(REVISION).cloned();
    let old_revision = match old.as_deref().map(str::parse::<i64>) {
        None => 0,
        Some(Ok(r)) => r,
        Some(Err(_)) => return false,
    };
    if old_revision < new_revision {
        annotations.insert(REVISION.into(), new_revision.to_string());
        changed = true;
        if let Some(old) = old {
            let history = annotations
                .get(REVISION_HISTORY)
                .cloned()
                .unwrap_or_default();
            if history.is_empty() {
                annotations.insert(REVISION_HISTORY.into(), old);
            } else {
                let mut revisions: Vec<&str> = history.split(',').collect();
                let mut total = history.len() + old.len() + 1;
                let mut start = 0;
                while total > MAX_REVISION_HISTORY_CHARS && start < revisions.len() {
                    total -= revisions[start].len() + 1;
                    start += 1;
                }
                if total <= MAX_REVISION_HISTORY_CHARS {
                    revisions.drain(..start);
                    revisions.push(&old);
                    annotations.insert(REVISION_HISTORY.into(), revisions.join(","));
                }
            }
        }
    }
    if !exists {
        let replicas = spec_replicas(d);
        if set_replicas_annotations(rs, replicas, replicas + max_surge(d)) {
            changed = true;
        }
    }
    changed
}

/// A Deployment's annotations with its revision set; `None` when it already is.
pub(crate) fn with_revision(d: &Deployment, revision: &str) -> Option<BTreeMap<String, String>> {
    let mut annotations = d.metadata.annotations.clone().unwrap_or_default();
    if annotations.get(REVISION).map(String::as_str) == Some(revision) {
        return None;
    }
    annotations.insert(REVISION.into(), revision.into());
    Some(annotations)
}

fn created(rs: &ReplicaSet) -> Option<Timestamp> {
    rs.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

fn name(rs: &ReplicaSet) -> &str {
    rs.metadata.name.as_deref().unwrap_or_default()
}

/// Oldest first, then by name (upstream's `ReplicaSetsByCreationTimestamp`).
pub(crate) fn by_creation(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    created(a)
        .cmp(&created(b))
        .then_with(|| name(a).cmp(name(b)))
}

/// Larger first, newer first among equals (upstream's `ReplicaSetsBySizeNewer`).
pub(crate) fn by_size_newer(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    rs_replicas(b)
        .cmp(&rs_replicas(a))
        .then_with(|| by_creation(b, a))
}

/// Larger first, older first among equals (upstream's `ReplicaSetsBySizeOlder`).
pub(crate) fn by_size_older(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    rs_replicas(b)
        .cmp(&rs_replicas(a))
        .then_with(|| by_creation(a, b))
}

/// Lowest revision first (upstream's `ReplicaSetsByRevision`).
pub(crate) fn by_revision(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    revision(a)
        .cmp(&revision(b))
        .then_with(|| by_creation(a, b))
}

pub(crate) fn condition<'a>(
    status: &'a DeploymentStatus,
    type_: &str,
) -> Option<&'a DeploymentCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_)
}

pub(crate) fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// upstream's `SetDeploymentCondition`: nothing when status and reason are the same; the
/// transition time kept when only the reason changes.
pub(crate) fn set_condition(status: &mut DeploymentStatus, mut c: DeploymentCondition) {
    if let Some(current) = condition(status, &c.type_) {
        if current.status == c.status && current.reason == c.reason {
            return;
        }
        if current.status == c.status {
            c.last_transition_time = current.last_transition_time.clone();
        }
    }
    remove_condition(status, &c.type_);
    status.conditions.get_or_insert_default().push(c);
}

pub(crate) fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(conditions) = status.conditions.as_mut() {
        conditions.retain(|c| c.type_ != type_);
        if conditions.is_empty() {
            status.conditions = None;
        }
    }
}

/// The change in replicas `rs` gets when the Deployment's total changes by `to_add` of which
/// `added` is done (upstream's `GetProportion`).
pub(crate) fn proportion(rs: &ReplicaSet, d: &Deployment, to_add: i32, added: i32) -> i32 {
    if rs_replicas(rs) == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = fraction(rs, d);
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

fn fraction(rs: &ReplicaSet, d: &Deployment) -> i32 {
    let replicas = spec_replicas(d);
    if replicas == 0 {
        return -rs_replicas(rs);
    }
    let deployment_replicas = replicas + max_surge(d);
    let annotated = int_annotation(rs, MAX_REPLICAS)
        .unwrap_or_else(|| d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0));
    if annotated == 0 {
        return 0;
    }
    let size = f64::from(rs_replicas(rs)) * f64::from(deployment_replicas) / f64::from(annotated);
    size.round() as i32 - rs_replicas(rs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_use_upstreams_alphabet_and_the_collision_count() {
        let t: PodTemplateSpec = serde_json::from_value(serde_json::json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}}))
        .unwrap();
        let h = template_hash(&t, None);
        assert!(h.len() <= 10 && !h.is_empty(), "{h}");
        assert!(h.bytes().all(|b| ALPHANUMS.contains(&b)), "{h}");
        assert_eq!(h, template_hash(&t.clone(), None));
        assert_ne!(h, template_hash(&t, Some(1)));
        // upstream's encoding of the decimal digits.
        let digits: String = "0123456789"
            .bytes()
            .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
            .collect();
        assert_eq!(digits, "456789bcdf");
    }

    #[test]
    fn fenceposts_round_as_upstream() {
        let d = |replicas: i32, surge: &str, unavailable: &str| -> Deployment {
            serde_json::from_value(serde_json::json!({"spec": {"replicas": replicas,
                "selector": {}, "template": {},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {
                    "maxSurge": surge, "maxUnavailable": unavailable}}}}))
            .unwrap()
        };
        assert_eq!(fenceposts(&d(10, "25%", "25%")), (3, 2));
        assert_eq!(fenceposts(&d(3, "0%", "10%")), (0, 1));
        assert_eq!(fenceposts(&d(1, "0", "0")), (0, 1));
        assert_eq!(fenceposts(&d(4, "50%", "0")), (2, 0));
        let recreate: Deployment = serde_json::from_value(serde_json::json!({"spec": {
            "selector": {}, "template": {}, "strategy": {"type": "Recreate"}}}))
        .unwrap();
        assert_eq!(fenceposts(&recreate), (0, 0));
    }
}
