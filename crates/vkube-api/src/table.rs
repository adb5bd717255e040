//! Table output (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`), which `kubectl get`
//! prints. Common kinds get upstream's columns; every other kind gets Name and Created At, as
//! upstream's default table convertor gives.

use serde_json::{Value, json};

use crate::registry::Resource;

/// Whether an Accept header asks for a Table.
pub fn wanted(accept: &str) -> bool {
    accept
        .split(',')
        .any(|part| part.contains("as=Table") && part.contains("g=meta.k8s.io"))
}

/// k8s.io/apimachinery's `HumanDuration`: "5s", "3m12s", "4h", "2d3h", "1y40d".
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let s = secs.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    let y = d / 365;
    match s {
        _ if s < 120 => format!("{s}s"),
        _ if m < 10 => {
            if s % 60 == 0 {
                format!("{m}m")
            } else {
                format!("{m}m{}s", s % 60)
            }
        }
        _ if h < 3 => format!("{m}m"),
        _ if h < 8 => {
            if m % 60 == 0 {
                format!("{h}h")
            } else {
                format!("{h}h{}m", m % 60)
            }
        }
        _ if h < 48 => format!("{h}h"),
        _ if h < 192 => {
            if h % 24 == 0 {
                format!("{d}d")
            } else {
                format!("{d}d{}h", h % 24)
            }
        }
        _ if y < 2 => format!("{d}d"),
        _ if y < 8 => {
            if d % 365 == 0 {
                format!("{y}y")
            } else {
                format!("{y}y{}d", d % 365)
            }
        }
        _ => format!("{y}y"),
    }
}

fn age(obj: &Value, now: i64) -> String {
    let created = obj["metadata"]["creationTimestamp"]
        .as_str()
        .unwrap_or_default();
    match time::OffsetDateTime::parse(created, &time::format_description::well_known::Rfc3339) {
        Ok(t) => human_duration(now - t.unix_timestamp()),
        Err(_) => "<unknown>".into(),
    }
}

fn count(v: &Value) -> usize {
    v.as_object().map_or(0, |m| m.len()) + v.as_array().map_or(0, Vec::len)
}

type Cell = fn(&Value, i64) -> Value;

fn columns(kind: &str) -> Vec<(&'static str, &'static str, Cell)> {
    let name: (&str, &str, Cell) = ("Name", "name", |o, _| o["metadata"]["name"].clone());
    let age_col: (&str, &str, Cell) = ("Age", "", |o, now| json!(age(o, now)));
    let mut cols = vec![name];
    cols.extend(match kind {
        "ConfigMap" => vec![(
            "Data",
            "",
            (|o: &Value, _| json!(count(&o["data"]) + count(&o["binaryData"]))) as Cell,
        )],
        "Secret" => vec![
            ("Type", "", (|o: &Value, _| o["type"].clone()) as Cell),
            ("Data", "", |o, _| json!(count(&o["data"]))),
        ],
        "Namespace" => vec![(
            "Status",
            "",
            (|o: &Value, _| json!(o["status"]["phase"].as_str().unwrap_or("Active"))) as Cell,
        )],
        "ServiceAccount" => vec![(
            "Secrets",
            "",
            (|o: &Value, _| json!(count(&o["secrets"]))) as Cell,
        )],
        "Pod" => vec![
            (
                "Ready",
                "",
                (|o: &Value, _| {
                    let ready = o["status"]["containerStatuses"]
                        .as_array()
                        .map_or(0, |c| c.iter().filter(|s| s["ready"] == true).count());
                    json!(format!("{ready}/{}", count(&o["spec"]["containers"])))
                }) as Cell,
            ),
            ("Status", "", |o, _| {
                json!(
                    o["status"]["reason"]
                        .as_str()
                        .or(o["status"]["phase"].as_str())
                        .unwrap_or("Pending")
                )
            }),
            ("Restarts", "", |o, _| {
                json!(o["status"]["containerStatuses"].as_array().map_or(0, |c| {
                    c.iter()
                        .filter_map(|s| s["restartCount"].as_i64())
                        .sum::<i64>()
                }))
            }),
        ],
        "Deployment" | "ReplicaSet" | "StatefulSet" => vec![(
            "Ready",
            "",
            (|o: &Value, _| {
                json!(format!(
                    "{}/{}",
                    o["status"]["readyReplicas"].as_i64().unwrap_or(0),
                    o["spec"]["replicas"].as_i64().unwrap_or(1)
                ))
            }) as Cell,
        )],
        "Service" => vec![
            (
                "Type",
                "",
                (|o: &Value, _| json!(o["spec"]["type"].as_str().unwrap_or("ClusterIP"))) as Cell,
            ),
            ("Cluster-IP", "", |o, _| {
                json!(o["spec"]["clusterIP"].as_str().unwrap_or("<none>"))
            }),
        ],
        _ => vec![],
    });
    if matches!(
        kind,
        "ConfigMap"
            | "Secret"
            | "Namespace"
            | "ServiceAccount"
            | "Pod"
            | "Deployment"
            | "ReplicaSet"
            | "StatefulSet"
            | "Service"
    ) {
        cols.push(age_col);
    } else {
        cols.push(("Created At", "date", |o, _| {
            o["metadata"]["creationTimestamp"].clone()
        }));
    }
    cols
}

/// What each row carries (`includeObject`): nothing, the object's metadata (the default), or
/// the whole object (kubectl asks for it to print custom columns).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Include {
    None,
    #[default]
    Metadata,
    Object,
}

impl Include {
    pub fn parse(value: Option<&str>) -> Include {
        match value {
            Some("None") => Include::None,
            Some("Object") => Include::Object,
            _ => Include::Metadata,
        }
    }
}

/// A `meta.k8s.io/v1` Table of `objects`.
pub fn table(
    resource: &Resource,
    objects: &[Value],
    list_metadata: Value,
    include: Include,
) -> Value {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let cols = columns(resource.kind);
    let definitions: Vec<Value> = cols
        .iter()
        .map(|(name, format, _)| {
            let kind = if *format == "date" { "date" } else { "string" };
            json!({"name": name, "type": kind, "format": format, "description": "", "priority": 0})
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut row = json!({"cells": cols.iter().map(|(_, _, cell)| cell(o, now)).collect::<Vec<_>>()});
            match include {
                Include::None => {}
                Include::Metadata => {
                    row["object"] = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]})
                }
                Include::Object => row["object"] = o.clone(),
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_metadata,
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_match_upstream() {
        for (secs, want) in [
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (150, "2m30s"),
            (600, "10m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 60, "3h1m"),
            (9 * 3600, "9h"),
            (50 * 3600, "2d2h"),
            (10 * 86400, "10d"),
            (800 * 86400, "2y70d"),
        ] {
            assert_eq!(human_duration(secs), want, "{secs}");
        }
    }

    #[test]
    fn accept_negotiation() {
        assert!(wanted(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
        ));
        assert!(!wanted("application/json"));
    }
}
