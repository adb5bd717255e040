//! ResourceQuota arithmetic, as kube-apiserver's quota admission and kube-controller-manager's
//! resourcequota controller compute it (`k8s.io/apiserver/pkg/quota/v1` and upstream's core
//! evaluators): which quota names an object's resource is measured under, what one object
//! costs, whether it falls in a quota's scopes, the status a quota should report given the
//! objects of its namespace ([`status`]), and whether a create or update fits ([`check`]).
//! No I/O: the server lists the objects and writes the quotas.

mod pods;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::quantity::Quantity;

/// Quota resource name → quantity, sorted as upstream prints them.
pub type ResourceList = BTreeMap<String, Quantity>;

/// A `ResourceList` object; entries that are not quantities are left out.
pub fn parse_list(v: &Value) -> ResourceList {
    v.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), Quantity::parse(v.as_str()?).ok()?)))
        .collect()
}

/// The JSON of a `ResourceList`, in canonical quantity form.
pub fn to_json(list: &ResourceList) -> Value {
    Value::Object(
        list.iter()
            .map(|(k, q)| (k.clone(), json!(q.to_string())))
            .collect::<Map<String, Value>>(),
    )
}

fn add_into(into: &mut ResourceList, from: &ResourceList) {
    for (name, q) in from {
        let sum = into.get(name).copied().unwrap_or_default() + *q;
        into.insert(name.clone(), sum);
    }
}

fn add(a: &ResourceList, b: &ResourceList) -> ResourceList {
    let mut out = a.clone();
    add_into(&mut out, b);
    out
}

fn mask(list: &ResourceList, names: &[String]) -> ResourceList {
    list.iter()
        .filter(|(k, _)| names.contains(k))
        .map(|(k, q)| (k.clone(), *q))
        .collect()
}

/// `a - b` per name, never below zero (names only in `b` become zero).
fn subtract_non_negative(a: &ResourceList, b: &ResourceList) -> ResourceList {
    let mut out: ResourceList = a
        .iter()
        .map(|(k, q)| {
            let left = b.get(k).map_or(*q, |other| *q - *other);
            let left = if left > Quantity::zero() {
                left
            } else {
                Quantity::zero()
            };
            (k.clone(), left)
        })
        .collect();
    for k in b.keys() {
        out.entry(k.clone()).or_default();
    }
    out
}

/// `k=v,k=v`, sorted by name (upstream's prettyPrint).
fn pretty(list: &ResourceList) -> String {
    let parts: Vec<String> = list.iter().map(|(k, q)| format!("{k}={q}")).collect();
    parts.join(",")
}

/// `kubectl get quota`'s Request (or, with `limits`, Limit) column: `name: used/hard, …` for
/// each hard resource, those named `limits.…` in the Limit column.
pub fn printed(quota: &Value, limits: bool) -> String {
    let used = parse_list(&quota["status"]["used"]);
    let parts: Vec<String> = parse_list(&quota["spec"]["hard"])
        .iter()
        .filter(|(name, _)| name.starts_with("limits.") == limits)
        .map(|(name, hard)| {
            let used = used.get(name).copied().unwrap_or_default();
            format!("{name}: {used}/{hard}")
        })
        .collect();
    parts.join(", ")
}

/// What measures the use of one resource, as upstream's evaluators.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Evaluator {
    Pods,
    Services,
    PersistentVolumeClaims,
    /// Any other resource: its objects are counted (`count/<plural>[.<group>]`, and for four
    /// core resources also their bare plural).
    Count {
        group: String,
        plural: String,
    },
}

const SERVICE_RESOURCES: &[&str] = &[
    "count/services",
    "services",
    "services.loadbalancers",
    "services.nodeports",
];
const CLAIM_RESOURCES: &[&str] = &["persistentvolumeclaims", "requests.storage"];
const STORAGE_CLASS_SUFFIX: &str = ".storageclass.storage.k8s.io/";
/// Core resources whose object count also goes by their bare plural.
const LEGACY_COUNTS: &[&str] = &[
    "configmaps",
    "secrets",
    "replicationcontrollers",
    "resourcequotas",
];

impl Evaluator {
    /// The evaluator for writes of a resource; `None` for those quota ignores (events).
    pub fn for_resource(group: &str, plural: &str) -> Option<Evaluator> {
        Some(match (group, plural) {
            ("", "pods") => Evaluator::Pods,
            ("", "services") => Evaluator::Services,
            ("", "persistentvolumeclaims") => Evaluator::PersistentVolumeClaims,
            ("" | "events.k8s.io", "events") => return None,
            _ => Evaluator::Count {
                group: group.into(),
                plural: plural.into(),
            },
        })
    }

    /// The evaluator that measures a quota resource name, if any does.
    pub fn for_quota_name(name: &str) -> Option<Evaluator> {
        if let Some(counted) = name.strip_prefix("count/") {
            let (plural, group) = counted.split_once('.').unwrap_or((counted, ""));
            return Evaluator::for_resource(group, plural);
        }
        if pods::tracks(name) {
            Some(Evaluator::Pods)
        } else if SERVICE_RESOURCES.contains(&name) {
            Some(Evaluator::Services)
        } else if CLAIM_RESOURCES.contains(&name)
            || CLAIM_RESOURCES
                .iter()
                .any(|r| name.ends_with(&format!("{STORAGE_CLASS_SUFFIX}{r}")))
        {
            Some(Evaluator::PersistentVolumeClaims)
        } else if LEGACY_COUNTS.contains(&name) {
            Evaluator::for_resource("", name)
        } else {
            None
        }
    }

    /// The (group, plural) whose objects it measures.
    pub fn resource(&self) -> (&str, &str) {
        match self {
            Evaluator::Pods => ("", "pods"),
            Evaluator::Services => ("", "services"),
            Evaluator::PersistentVolumeClaims => ("", "persistentvolumeclaims"),
            Evaluator::Count { group, plural } => (group, plural),
        }
    }

    /// Whether admission measures a create (`old` is `None`) or an update: plain counts on
    /// create only; a Service's type and a claim's size can change on update, and a pod's
    /// Terminating scope (when `activeDeadlineSeconds` comes or goes).
    pub fn handles(&self, obj: &Value, old: Option<&Value>) -> bool {
        let Some(old) = old else { return true };
        match self {
            Evaluator::Pods => pods::terminating(obj) != pods::terminating(old),
            Evaluator::Services | Evaluator::PersistentVolumeClaims => true,
            Evaluator::Count { .. } => false,
        }
    }

    /// The names among `names` this evaluator measures.
    pub fn matching(&self, names: &[String]) -> Vec<String> {
        names
            .iter()
            .filter(|n| Evaluator::for_quota_name(n).as_ref() == Some(self))
            .cloned()
            .collect()
    }

    /// What one object costs.
    pub fn usage(&self, obj: &Value, now: OffsetDateTime) -> ResourceList {
        let one = Quantity::from_units(1);
        let mut out = ResourceList::new();
        match self {
            Evaluator::Pods => return pods::usage(obj, now),
            Evaluator::Services => {
                let spec = &obj["spec"];
                let ports = spec["ports"].as_array().map_or(0, Vec::len) as i64;
                out.insert("count/services".into(), one);
                out.insert("services".into(), one);
                let (mut node_ports, mut balancers) = (0, 0);
                match spec["type"].as_str().unwrap_or_default() {
                    "NodePort" => node_ports = ports,
                    "LoadBalancer" => {
                        balancers = 1;
                        // Without allocated node ports only explicit ones count.
                        node_ports = if spec["allocateLoadBalancerNodePorts"] == false {
                            spec["ports"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter(|p| p["nodePort"].as_i64().is_some_and(|n| n != 0))
                                .count() as i64
                        } else {
                            ports
                        };
                    }
                    _ => {}
                }
                out.insert(
                    "services.nodeports".into(),
                    Quantity::from_units(node_ports),
                );
                out.insert(
                    "services.loadbalancers".into(),
                    Quantity::from_units(balancers),
                );
            }
            Evaluator::PersistentVolumeClaims => {
                out.insert("count/persistentvolumeclaims".into(), one);
                out.insert("persistentvolumeclaims".into(), one);
                let class = obj["spec"]["storageClassName"]
                    .as_str()
                    .or(
                        obj["metadata"]["annotations"]["volume.beta.kubernetes.io/storage-class"]
                            .as_str(),
                    )
                    .unwrap_or_default();
                if !class.is_empty() {
                    out.insert(
                        format!("{class}{STORAGE_CLASS_SUFFIX}persistentvolumeclaims"),
                        one,
                    );
                }
                let requested = parse_list(&obj["spec"]["resources"]["requests"])
                    .get("storage")
                    .map(|q| q.round_up_units());
                let allocated = parse_list(&obj["status"]["allocatedResources"])
                    .get("storage")
                    .copied();
                let storage = match (requested, allocated) {
                    (Some(r), Some(a)) if a > r => Some(a.round_up_units()),
                    (r, _) => r,
                };
                if let Some(q) = storage {
                    out.insert("requests.storage".into(), q);
                    if !class.is_empty() {
                        out.insert(format!("{class}{STORAGE_CLASS_SUFFIX}requests.storage"), q);
                    }
                }
            }
            Evaluator::Count { group, plural } => {
                let name = if group.is_empty() {
                    format!("count/{plural}")
                } else {
                    format!("count/{plural}.{group}")
                };
                out.insert(name, one);
                if group.is_empty() && LEGACY_COUNTS.contains(&plural.as_str()) {
                    out.insert(plural.clone(), one);
                }
            }
        }
        out
    }

    /// Whether an object falls in one scope requirement; only pods have scopes.
    fn in_scope(&self, req: &Value, obj: &Value) -> bool {
        *self == Evaluator::Pods && pods::in_scope(req, obj)
    }

    /// Requirements a quota over `required` puts on the object itself (pods only).
    fn constraints(&self, required: &[String], obj: &Value) -> Result<(), String> {
        match self {
            Evaluator::Pods => pods::constraints(required, obj),
            _ => Ok(()),
        }
    }
}

/// A quota's scopes as selector requirements: `spec.scopes` (each `Exists`), then
/// `spec.scopeSelector.matchExpressions`.
fn scope_selectors(quota: &Value) -> Vec<Value> {
    let spec = &quota["spec"];
    let scopes = spec["scopes"].as_array().into_iter().flatten();
    scopes
        .map(|s| json!({"scopeName": s, "operator": "Exists"}))
        .chain(
            spec["scopeSelector"]["matchExpressions"]
                .as_array()
                .into_iter()
                .flatten()
                .cloned(),
        )
        .collect()
}

fn in_scopes(ev: &Evaluator, quota: &Value, obj: &Value) -> bool {
    scope_selectors(quota).iter().all(|s| ev.in_scope(s, obj))
}

fn names(list: &ResourceList) -> Vec<String> {
    list.keys().cloned().collect()
}

/// The evaluators a quota's `spec.hard` needs (what the controller must list).
pub fn evaluators(quota: &Value) -> Vec<Evaluator> {
    let mut out: Vec<Evaluator> = parse_list(&quota["spec"]["hard"])
        .keys()
        .filter_map(|n| Evaluator::for_quota_name(n))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The status the controller gives a quota: `hard` is `spec.hard`; `used` sums what the
/// objects of the namespace cost (`objects`, by the evaluator measuring them), for the names
/// `hard` limits. Names no listed evaluator measures keep their previous usage.
pub fn status(
    quota: &Value,
    objects: &BTreeMap<Evaluator, Vec<Value>>,
    now: OffsetDateTime,
) -> Value {
    let hard = parse_list(&quota["spec"]["hard"]);
    let hard_names = names(&hard);
    let mut used = parse_list(&quota["status"]["used"]);
    for ev in evaluators(quota) {
        let measured = ev.matching(&hard_names);
        let Some(items) = objects.get(&ev) else {
            continue;
        };
        let mut total: ResourceList = measured
            .iter()
            .map(|n| (n.clone(), Quantity::zero()))
            .collect();
        for obj in items.iter().filter(|o| in_scopes(&ev, quota, o)) {
            add_into(&mut total, &ev.usage(obj, now));
        }
        used.extend(mask(&total, &measured));
    }
    json!({"hard": to_json(&hard), "used": to_json(&mask(&used, &hard_names))})
}

/// Whether a quota applies to an object: it limits something the evaluator measures, and the
/// object is in every scope (upstream's generic Matches, on `status.hard`).
fn matches(ev: &Evaluator, quota: &Value, obj: &Value) -> bool {
    let hard = names(&parse_list(&quota["status"]["hard"]));
    !ev.matching(&hard).is_empty() && in_scopes(ev, quota, obj)
}

/// Upstream's CheckRequest: whether creating (`old` is `None`) or updating an object fits the
/// namespace's quotas. Returns the new `status.used` of each quota the write charges (by index),
/// or the reason to refuse it (the text after `… is forbidden: `).
pub fn check(
    ev: &Evaluator,
    quotas: &[Value],
    obj: &Value,
    old: Option<&Value>,
    now: OffsetDateTime,
) -> Result<Vec<(usize, ResourceList)>, String> {
    let mut interesting = Vec::new();
    for (i, quota) in quotas.iter().enumerate() {
        if !matches(ev, quota, obj) {
            continue;
        }
        let name = quota["metadata"]["name"].as_str().unwrap_or_default();
        let hard = parse_list(&quota["status"]["hard"]);
        let restricted = ev.matching(&names(&hard));
        ev.constraints(&restricted, obj)
            .map_err(|e| format!("failed quota: {name}: {e}"))?;
        let used = parse_list(&quota["status"]["used"]);
        if restricted.iter().any(|r| !used.contains_key(r)) {
            let mut listed = restricted.clone();
            listed.sort();
            return Err(format!(
                "status unknown for quota: {name}, resources: {}",
                listed.join(",")
            ));
        }
        interesting.push(i);
    }
    let input = ev.usage(obj, now);
    let negative: Vec<&str> = input
        .iter()
        .filter(|(_, q)| q.is_negative())
        .map(|(k, _)| k.as_str())
        .collect();
    if !negative.is_empty() {
        return Err(format!(
            "quota usage is negative for resource(s): {}",
            negative.join(",")
        ));
    }
    let mut out = Vec::new();
    for i in interesting {
        let quota = &quotas[i];
        // An update is charged what it adds, where the quota already covered the old object.
        let delta = match old {
            Some(old) if matches(ev, quota, old) => {
                subtract_non_negative(&input, &ev.usage(old, now))
            }
            _ => input.clone(),
        };
        let delta: ResourceList = delta.into_iter().filter(|(_, q)| !q.is_zero()).collect();
        if delta.is_empty() {
            continue;
        }
        let hard = parse_list(&quota["status"]["hard"]);
        let used = parse_list(&quota["status"]["used"]);
        let requested = mask(&delta, &names(&hard));
        let new_used = add(&used, &requested);
        let exceeded: Vec<String> = mask(&new_used, &names(&requested))
            .iter()
            .filter(|(k, q)| hard.get(*k).is_some_and(|h| *q > h))
            .map(|(k, _)| k.clone())
            .collect();
        if !exceeded.is_empty() {
            let name = quota["metadata"]["name"].as_str().unwrap_or_default();
            return Err(format!(
                "exceeded quota: {name}, requested: {}, used: {}, limited: {}",
                pretty(&mask(&requested, &exceeded)),
                pretty(&mask(&used, &exceeded)),
                pretty(&mask(&hard, &exceeded)),
            ));
        }
        out.push((i, new_used));
    }
    Ok(out)
}
