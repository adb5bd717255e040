//! Conversion between the versions that share one storage key: core `v1` and `events.k8s.io/v1`
//! Events (stored as core v1, as upstream does), and `autoscaling/v2` and `autoscaling/v1`
//! HorizontalPodAutoscalers (stored as v2). What v1 cannot express is kept in upstream's
//! `autoscaling.alpha.kubernetes.io/*` annotations, so a v1 round trip loses nothing.

use serde_json::{Map, Value, json};

use crate::Status;
use crate::registry::{RESOURCES, Resource};

/// The apiVersion the objects of `resource`'s storage are kept in: its first registry row's.
pub fn storage_version(resource: &Resource) -> String {
    if let Some(d) = crate::registry::custom::definition(resource) {
        return d.storage_version.clone();
    }
    RESOURCES
        .iter()
        .find(|r| r.storage == resource.storage)
        .unwrap_or(resource)
        .api_version()
}

/// Converts an object of a kind with several served versions to apiVersion `to`.
pub fn convert(obj: Value, to: &str) -> Result<Value, Status> {
    let from = obj["apiVersion"].as_str().unwrap_or_default().to_string();
    if from == to || from.is_empty() {
        return Ok(obj);
    }
    let kind = obj["kind"].as_str().unwrap_or_default().to_string();
    match (kind.as_str(), from.as_str(), to) {
        ("Event", "v1", "events.k8s.io/v1") => Ok(rename(obj, to, EVENT_FIELDS, false)),
        ("Event", "events.k8s.io/v1", "v1") => Ok(rename(obj, to, EVENT_FIELDS, true)),
        ("HorizontalPodAutoscaler", "autoscaling/v2", "autoscaling/v1") => Ok(hpa_to_v1(obj)),
        ("HorizontalPodAutoscaler", "autoscaling/v1", "autoscaling/v2") => Ok(hpa_to_v2(obj)),
        // A CRD with the `Webhook` strategy converts through its webhook, which the server
        // calls (asynchronously); reaching here would serve an unconverted object.
        _ if crate::registry::custom::converts_by_webhook(group_of(&from), &kind) => {
            Err(Status::internal(format!(
                "conversion of {kind} from {from} to {to} needs its conversion webhook"
            )))
        }
        // A CRD's versions convert with the `None` strategy: only apiVersion changes.
        _ if crate::registry::custom::has_kind(group_of(&from), &kind)
            && group_of(&from) == group_of(to) =>
        {
            let mut obj = obj;
            obj["apiVersion"] = json!(to);
            Ok(obj)
        }
        _ => Err(Status::internal(format!(
            "no conversion of {kind} from {from} to {to}"
        ))),
    }
}

fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

/// Core v1 Event field → events.k8s.io/v1 field.
const EVENT_FIELDS: &[(&str, &str)] = &[
    ("metadata", "metadata"),
    ("eventTime", "eventTime"),
    ("series", "series"),
    ("reportingComponent", "reportingController"),
    ("reportingInstance", "reportingInstance"),
    ("action", "action"),
    ("reason", "reason"),
    ("involvedObject", "regarding"),
    ("related", "related"),
    ("message", "note"),
    ("type", "type"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

fn rename(obj: Value, to: &str, fields: &[(&str, &str)], reverse: bool) -> Value {
    let mut out = Map::new();
    out.insert("apiVersion".into(), json!(to));
    out.insert("kind".into(), obj["kind"].clone());
    for (a, b) in fields {
        let (from, into) = if reverse { (b, a) } else { (a, b) };
        if let Some(v) = obj.get(*from).filter(|v| !v.is_null()) {
            out.insert((*into).into(), v.clone());
        }
    }
    Value::Object(out)
}

const METRICS: &str = "autoscaling.alpha.kubernetes.io/metrics";
const CURRENT_METRICS: &str = "autoscaling.alpha.kubernetes.io/current-metrics";
const CONDITIONS: &str = "autoscaling.alpha.kubernetes.io/conditions";
const BEHAVIOR: &str = "autoscaling.alpha.kubernetes.io/behavior";

fn is_cpu_utilization(m: &Value, target: &str) -> bool {
    m["type"] == "Resource"
        && m["resource"]["name"] == "cpu"
        && m["resource"][target]["averageUtilization"].is_number()
}

fn annotate(obj: &mut Value, key: &str, value: &Value) {
    let keep = match value {
        Value::Array(a) => !a.is_empty(),
        Value::Null => false,
        _ => true,
    };
    if keep {
        obj["metadata"]["annotations"][key] = json!(value.to_string());
    }
}

fn take_annotation(obj: &mut Value, key: &str) -> Option<Value> {
    // `get_mut`, not indexing: indexing a missing key would insert a null.
    let meta = obj.get_mut("metadata")?.as_object_mut()?;
    let annotations = meta.get_mut("annotations")?.as_object_mut()?;
    let raw = annotations.remove(key)?;
    if annotations.is_empty() {
        meta.remove("annotations");
    }
    serde_json::from_str(raw.as_str()?).ok()
}

fn hpa_to_v1(v2: Value) -> Value {
    let spec = &v2["spec"];
    let metrics = spec["metrics"].as_array().cloned().unwrap_or_default();
    let (cpu, other): (Vec<_>, Vec<_>) = metrics
        .into_iter()
        .partition(|m| is_cpu_utilization(m, "target"));
    let mut out = json!({
        "apiVersion": "autoscaling/v1",
        "kind": "HorizontalPodAutoscaler",
        "metadata": v2["metadata"],
        "spec": {"scaleTargetRef": spec["scaleTargetRef"], "maxReplicas": spec["maxReplicas"]},
    });
    if !spec["minReplicas"].is_null() {
        out["spec"]["minReplicas"] = spec["minReplicas"].clone();
    }
    if let Some(c) = cpu.first() {
        out["spec"]["targetCPUUtilizationPercentage"] =
            c["resource"]["target"]["averageUtilization"].clone();
    }
    annotate(&mut out, METRICS, &json!(other));
    annotate(&mut out, BEHAVIOR, &spec["behavior"]);
    if let Some(status) = v2.get("status").filter(|s| s.is_object()) {
        let current = status["currentMetrics"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let (cpu, other): (Vec<_>, Vec<_>) = current
            .into_iter()
            .partition(|m| is_cpu_utilization(m, "current"));
        let mut s = json!({"currentReplicas": status["currentReplicas"], "desiredReplicas": status["desiredReplicas"]});
        for field in ["observedGeneration", "lastScaleTime"] {
            if !status[field].is_null() {
                s[field] = status[field].clone();
            }
        }
        if let Some(c) = cpu.first() {
            s["currentCPUUtilizationPercentage"] =
                c["resource"]["current"]["averageUtilization"].clone();
        }
        out["status"] = s;
        annotate(&mut out, CURRENT_METRICS, &json!(other));
        annotate(&mut out, CONDITIONS, &status["conditions"]);
    }
    out
}

fn hpa_to_v2(v1: Value) -> Value {
    let mut v1 = v1;
    let extra_metrics = take_annotation(&mut v1, METRICS);
    let behavior = take_annotation(&mut v1, BEHAVIOR);
    let current_extra = take_annotation(&mut v1, CURRENT_METRICS);
    let conditions = take_annotation(&mut v1, CONDITIONS);
    let spec = &v1["spec"];
    let mut metrics = Vec::new();
    if let Some(pct) = spec["targetCPUUtilizationPercentage"].as_i64() {
        metrics.push(json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": pct}}}));
    }
    metrics.extend(
        extra_metrics
            .and_then(|m| m.as_array().cloned())
            .unwrap_or_default(),
    );
    let mut out = json!({
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": v1["metadata"],
        "spec": {"scaleTargetRef": spec["scaleTargetRef"], "maxReplicas": spec["maxReplicas"]},
    });
    if !spec["minReplicas"].is_null() {
        out["spec"]["minReplicas"] = spec["minReplicas"].clone();
    }
    if !metrics.is_empty() {
        out["spec"]["metrics"] = json!(metrics);
    }
    if let Some(b) = behavior {
        out["spec"]["behavior"] = b;
    }
    if let Some(status) = v1.get("status").filter(|s| s.is_object()) {
        let mut s = json!({"currentReplicas": status["currentReplicas"], "desiredReplicas": status["desiredReplicas"]});
        for field in ["observedGeneration", "lastScaleTime"] {
            if !status[field].is_null() {
                s[field] = status[field].clone();
            }
        }
        let mut current = Vec::new();
        if let Some(pct) = status["currentCPUUtilizationPercentage"].as_i64() {
            current.push(json!({"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": pct}}}));
        }
        current.extend(
            current_extra
                .and_then(|m| m.as_array().cloned())
                .unwrap_or_default(),
        );
        if !current.is_empty() {
            s["currentMetrics"] = json!(current);
        }
        if let Some(c) = conditions {
            s["conditions"] = c;
        }
        out["status"] = s;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::find;

    #[test]
    fn storage_versions_follow_upstream() {
        assert_eq!(
            storage_version(find("events.k8s.io", "v1", "events").unwrap()),
            "v1"
        );
        assert_eq!(
            storage_version(find("autoscaling", "v1", "horizontalpodautoscalers").unwrap()),
            "autoscaling/v2"
        );
        assert_eq!(
            storage_version(find("apps", "v1", "deployments").unwrap()),
            "apps/v1"
        );
    }

    #[test]
    fn events_round_trip() {
        let core = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e"}, "involvedObject": {"kind": "Pod", "name": "p"},
            "reason": "Started", "message": "hi", "source": {"component": "kubelet"}, "count": 2, "type": "Normal"});
        let ev = convert(core.clone(), "events.k8s.io/v1").unwrap();
        assert_eq!(
            (
                ev["regarding"]["name"].as_str(),
                ev["note"].as_str(),
                ev["deprecatedCount"].as_i64()
            ),
            (Some("p"), Some("hi"), Some(2))
        );
        assert_eq!(convert(ev, "v1").unwrap(), core);
    }

    #[test]
    fn hpa_round_trips_through_v1_without_loss() {
        let v2 = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "h"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"}, "minReplicas": 1, "maxReplicas": 5,
                "metrics": [
                    {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}},
                    {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "1Gi"}}}]}});
        let v1 = convert(v2.clone(), "autoscaling/v1").unwrap();
        assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 70);
        assert!(
            v1["metadata"]["annotations"][METRICS]
                .as_str()
                .unwrap()
                .contains("memory")
        );
        assert_eq!(convert(v1, "autoscaling/v2").unwrap(), v2);
    }
}
