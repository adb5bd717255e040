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

/// Whether the client accepts nothing but a Table: resources without a table conversion (the
/// reviews) answer such a request 406, as upstream does.
pub fn only(accept: &str) -> bool {
    wanted(accept)
        && accept
            .split(',')
            .all(|part| part.contains("as=Table") || part.trim().is_empty())
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

/// One column: name, priority (1 shows with `-o wide` only), format, and how to fill it.
struct Col(&'static str, u8, &'static str, Cell);

fn str_or(v: &Value, default: &str) -> Value {
    json!(v.as_str().filter(|s| !s.is_empty()).unwrap_or(default))
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn ports(o: &Value) -> Value {
    let ports: Vec<String> = o["spec"]["ports"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    let proto = p["protocol"].as_str().unwrap_or("TCP");
                    match p["nodePort"].as_i64() {
                        Some(n) => format!("{}:{n}/{proto}", int(&p["port"])),
                        None => format!("{}/{proto}", int(&p["port"])),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    json!(if ports.is_empty() {
        "<none>".to_string()
    } else {
        ports.join(",")
    })
}

/// Access modes as kubectl abbreviates them.
fn access_modes(modes: &Value) -> Value {
    let short: Vec<&str> = modes
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            Some(match m.as_str()? {
                "ReadWriteOnce" => "RWO",
                "ReadOnlyMany" => "ROX",
                "ReadWriteMany" => "RWX",
                "ReadWriteOncePod" => "RWOP",
                other => other,
            })
        })
        .collect();
    json!(short.join(","))
}

fn images(o: &Value, field: &str) -> Value {
    let names: Vec<&str> = o["spec"]["template"]["spec"]["containers"]
        .as_array()
        .map(|c| c.iter().filter_map(|c| c[field].as_str()).collect())
        .unwrap_or_default();
    json!(names.join(","))
}

fn match_labels(o: &Value) -> Value {
    let terms = crate::selector::spec_selector_string(o);
    json!(if terms.is_empty() {
        "<none>".to_string()
    } else {
        terms
    })
}

/// An IntOrString as kubectl prints it; `N/A` when unset.
fn int_or_percent(v: &Value) -> Value {
    match v {
        Value::Null => json!("N/A"),
        Value::String(s) => json!(s),
        other => json!(other.to_string()),
    }
}

fn columns(kind: &str) -> Vec<Col> {
    let name = Col("Name", 0, "name", |o, _| o["metadata"]["name"].clone());
    let age = Col("Age", 0, "", |o, now| json!(age(o, now)));
    let created = Col("Created At", 0, "date", |o, _| {
        o["metadata"]["creationTimestamp"].clone()
    });
    let mut cols = vec![name];
    match kind {
        "ConfigMap" => cols.push(Col("Data", 0, "", |o, _| {
            json!(count(&o["data"]) + count(&o["binaryData"]))
        })),
        "Secret" => {
            cols.push(Col("Type", 0, "", |o, _| o["type"].clone()));
            cols.push(Col("Data", 0, "", |o, _| json!(count(&o["data"]))));
        }
        "Namespace" => cols.push(Col("Status", 0, "", |o, _| {
            str_or(&o["status"]["phase"], "Active")
        })),
        "ServiceAccount" => cols.push(Col("Secrets", 0, "", |o, _| json!(count(&o["secrets"])))),
        "Pod" => {
            cols.push(Col("Ready", 0, "", |o, _| {
                let ready = o["status"]["containerStatuses"]
                    .as_array()
                    .map_or(0, |c| c.iter().filter(|s| s["ready"] == true).count());
                json!(format!("{ready}/{}", count(&o["spec"]["containers"])))
            }));
            cols.push(Col("Status", 0, "", |o, _| {
                str_or(
                    if o["metadata"]["deletionTimestamp"].is_string() {
                        &Value::Null
                    } else {
                        &o["status"]["reason"]
                    },
                    "",
                )
                .as_str()
                .filter(|s| !s.is_empty())
                .map(|s| json!(s))
                .unwrap_or_else(|| {
                    if o["metadata"]["deletionTimestamp"].is_string() {
                        json!("Terminating")
                    } else {
                        str_or(&o["status"]["phase"], "Pending")
                    }
                })
            }));
            cols.push(Col("Restarts", 0, "", |o, _| {
                json!(o["status"]["containerStatuses"].as_array().map_or(0, |c| {
                    c.iter().map(|s| int(&s["restartCount"])).sum::<i64>()
                }))
            }));
            cols.push(age);
            cols.push(Col("IP", 1, "", |o, _| {
                str_or(&o["status"]["podIP"], "<none>")
            }));
            cols.push(Col("Node", 1, "", |o, _| {
                str_or(&o["spec"]["nodeName"], "<none>")
            }));
            cols.push(Col("Nominated Node", 1, "", |o, _| {
                str_or(&o["status"]["nominatedNodeName"], "<none>")
            }));
            cols.push(Col("Readiness Gates", 1, "", |o, _| {
                json!(if count(&o["spec"]["readinessGates"]) == 0 {
                    "<none>".to_string()
                } else {
                    count(&o["spec"]["readinessGates"]).to_string()
                })
            }));
            return cols;
        }
        "Deployment" => {
            cols.push(Col("Ready", 0, "", |o, _| {
                json!(format!(
                    "{}/{}",
                    int(&o["status"]["readyReplicas"]),
                    o["spec"]["replicas"].as_i64().unwrap_or(1)
                ))
            }));
            cols.push(Col("Up-to-date", 0, "", |o, _| {
                json!(int(&o["status"]["updatedReplicas"]))
            }));
            cols.push(Col("Available", 0, "", |o, _| {
                json!(int(&o["status"]["availableReplicas"]))
            }));
            cols.push(age);
            cols.push(Col("Containers", 1, "", |o, _| images(o, "name")));
            cols.push(Col("Images", 1, "", |o, _| images(o, "image")));
            cols.push(Col("Selector", 1, "", |o, _| match_labels(o)));
            return cols;
        }
        "ReplicaSet" | "ReplicationController" => {
            cols.push(Col("Desired", 0, "", |o, _| {
                json!(o["spec"]["replicas"].as_i64().unwrap_or(1))
            }));
            cols.push(Col("Current", 0, "", |o, _| {
                json!(int(&o["status"]["replicas"]))
            }));
            cols.push(Col("Ready", 0, "", |o, _| {
                json!(int(&o["status"]["readyReplicas"]))
            }));
        }
        "PodDisruptionBudget" => {
            cols.push(Col("Min Available", 0, "", |o, _| {
                int_or_percent(&o["spec"]["minAvailable"])
            }));
            cols.push(Col("Max Unavailable", 0, "", |o, _| {
                int_or_percent(&o["spec"]["maxUnavailable"])
            }));
            cols.push(Col("Allowed Disruptions", 0, "", |o, _| {
                json!(int(&o["status"]["disruptionsAllowed"]))
            }));
        }
        "StatefulSet" => cols.push(Col("Ready", 0, "", |o, _| {
            json!(format!(
                "{}/{}",
                int(&o["status"]["readyReplicas"]),
                o["spec"]["replicas"].as_i64().unwrap_or(1)
            ))
        })),
        "DaemonSet" => {
            cols.push(Col("Desired", 0, "", |o, _| {
                json!(int(&o["status"]["desiredNumberScheduled"]))
            }));
            cols.push(Col("Current", 0, "", |o, _| {
                json!(int(&o["status"]["currentNumberScheduled"]))
            }));
            cols.push(Col("Ready", 0, "", |o, _| {
                json!(int(&o["status"]["numberReady"]))
            }));
            cols.push(Col("Up-to-date", 0, "", |o, _| {
                json!(int(&o["status"]["updatedNumberScheduled"]))
            }));
            cols.push(Col("Available", 0, "", |o, _| {
                json!(int(&o["status"]["numberAvailable"]))
            }));
            cols.push(Col("Node Selector", 0, "", |o, _| {
                let sel = &o["spec"]["template"]["spec"]["nodeSelector"];
                let terms: Vec<String> = sel
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .filter_map(|(k, v)| Some(format!("{k}={}", v.as_str()?)))
                            .collect()
                    })
                    .unwrap_or_default();
                json!(if terms.is_empty() {
                    "<none>".to_string()
                } else {
                    terms.join(",")
                })
            }));
        }
        "Service" => {
            cols.push(Col("Type", 0, "", |o, _| {
                str_or(&o["spec"]["type"], "ClusterIP")
            }));
            cols.push(Col("Cluster-IP", 0, "", |o, _| {
                str_or(&o["spec"]["clusterIP"], "<none>")
            }));
            cols.push(Col("External-IP", 0, "", |o, _| {
                let ips: Vec<&str> = o["spec"]["externalIPs"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                json!(if ips.is_empty() {
                    "<none>".to_string()
                } else {
                    ips.join(",")
                })
            }));
            cols.push(Col("Port(s)", 0, "", |o, _| ports(o)));
            cols.push(age);
            cols.push(Col("Selector", 1, "", |o, _| match_labels(o)));
            return cols;
        }
        "PersistentVolumeClaim" => {
            cols.push(Col("Status", 0, "", |o, _| {
                if o["metadata"]["deletionTimestamp"].is_string() {
                    json!("Terminating")
                } else {
                    str_or(&o["status"]["phase"], "")
                }
            }));
            cols.push(Col("Volume", 0, "", |o, _| {
                str_or(&o["spec"]["volumeName"], "")
            }));
            cols.push(Col("Capacity", 0, "", |o, _| {
                str_or(&o["status"]["capacity"]["storage"], "")
            }));
            cols.push(Col("Access Modes", 0, "", |o, _| {
                access_modes(&o["status"]["accessModes"])
            }));
            cols.push(Col("StorageClass", 0, "", |o, _| {
                str_or(&o["spec"]["storageClassName"], "")
            }));
            cols.push(Col("VolumeAttributesClass", 0, "", |o, _| {
                str_or(&o["spec"]["volumeAttributesClassName"], "<unset>")
            }));
            cols.push(age);
            cols.push(Col("VolumeMode", 1, "", |o, _| {
                str_or(&o["spec"]["volumeMode"], "")
            }));
            return cols;
        }
        "PersistentVolume" => {
            cols.push(Col("Capacity", 0, "", |o, _| {
                str_or(&o["spec"]["capacity"]["storage"], "")
            }));
            cols.push(Col("Access Modes", 0, "", |o, _| {
                access_modes(&o["spec"]["accessModes"])
            }));
            cols.push(Col("Reclaim Policy", 0, "", |o, _| {
                str_or(&o["spec"]["persistentVolumeReclaimPolicy"], "")
            }));
            cols.push(Col("Status", 0, "", |o, _| {
                if o["metadata"]["deletionTimestamp"].is_string() {
                    json!("Terminating")
                } else {
                    str_or(&o["status"]["phase"], "")
                }
            }));
            cols.push(Col("Claim", 0, "", |o, _| {
                let c = &o["spec"]["claimRef"];
                json!(match (c["namespace"].as_str(), c["name"].as_str()) {
                    (Some(ns), Some(n)) => format!("{ns}/{n}"),
                    _ => String::new(),
                })
            }));
            cols.push(Col("StorageClass", 0, "", |o, _| {
                str_or(&o["spec"]["storageClassName"], "")
            }));
            cols.push(Col("VolumeAttributesClass", 0, "", |o, _| {
                str_or(&o["spec"]["volumeAttributesClassName"], "<unset>")
            }));
            cols.push(Col("Reason", 0, "", |o, _| {
                str_or(&o["status"]["reason"], "")
            }));
            cols.push(age);
            cols.push(Col("VolumeMode", 1, "", |o, _| {
                str_or(&o["spec"]["volumeMode"], "")
            }));
            return cols;
        }
        "Endpoints" => {
            cols.push(Col("Endpoints", 0, "", |o, _| {
                let mut all = Vec::new();
                for subset in o["subsets"].as_array().into_iter().flatten() {
                    let ports: Vec<i64> = subset["ports"]
                        .as_array()
                        .map(|p| p.iter().map(|p| int(&p["port"])).collect())
                        .unwrap_or_default();
                    for a in subset["addresses"].as_array().into_iter().flatten() {
                        let ip = a["ip"].as_str().unwrap_or_default();
                        if ports.is_empty() {
                            all.push(ip.to_string());
                        }
                        all.extend(ports.iter().map(|p| format!("{ip}:{p}")));
                    }
                }
                json!(match all.len() {
                    0 => "<none>".to_string(),
                    n if n > 3 => format!("{} + {} more...", all[..3].join(","), n - 3),
                    _ => all.join(","),
                })
            }));
            cols.push(age);
            return cols;
        }
        "Node" => {
            cols.push(Col("Status", 0, "", |o, _| {
                let ready = o["status"]["conditions"]
                    .as_array()
                    .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
                    .map(|c| c["status"] == "True");
                let mut status = match ready {
                    Some(true) => "Ready",
                    Some(false) => "NotReady",
                    None => "Unknown",
                }
                .to_string();
                if o["spec"]["unschedulable"] == true {
                    status.push_str(",SchedulingDisabled");
                }
                json!(status)
            }));
            cols.push(Col("Roles", 0, "", |o, _| {
                let roles: Vec<&str> = o["metadata"]["labels"]
                    .as_object()
                    .map(|m| {
                        m.keys()
                            .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                            .collect()
                    })
                    .unwrap_or_default();
                json!(if roles.is_empty() {
                    "<none>".to_string()
                } else {
                    roles.join(",")
                })
            }));
            cols.push(age);
            cols.push(Col("Version", 0, "", |o, _| {
                str_or(&o["status"]["nodeInfo"]["kubeletVersion"], "")
            }));
            return cols;
        }
        "Event" => {
            return vec![
                Col("Last Seen", 0, "", |o, now| {
                    let t = o["lastTimestamp"]
                        .as_str()
                        .or(o["eventTime"].as_str())
                        .or(o["metadata"]["creationTimestamp"].as_str())
                        .unwrap_or_default();
                    json!(since(t, now))
                }),
                Col("Type", 0, "", |o, _| o["type"].clone()),
                Col("Reason", 0, "", |o, _| o["reason"].clone()),
                Col("Object", 0, "", |o, _| {
                    let io = &o["involvedObject"];
                    json!(format!(
                        "{}/{}",
                        io["kind"].as_str().unwrap_or("").to_ascii_lowercase(),
                        io["name"].as_str().unwrap_or("")
                    ))
                }),
                Col("Message", 0, "", |o, _| o["message"].clone()),
            ];
        }
        "Job" => {
            cols.push(Col("Status", 0, "", |o, _| {
                let conds = o["status"]["conditions"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let has = |t: &str| {
                    conds
                        .iter()
                        .any(|c| c["type"] == t && c["status"] == "True")
                };
                json!(if has("Complete") {
                    "Complete"
                } else if has("Failed") {
                    "Failed"
                } else if o["spec"]["suspend"] == true {
                    "Suspended"
                } else {
                    "Running"
                })
            }));
            cols.push(Col("Completions", 0, "", |o, _| {
                json!(format!(
                    "{}/{}",
                    int(&o["status"]["succeeded"]),
                    o["spec"]["completions"].as_i64().unwrap_or(1)
                ))
            }));
            cols.push(Col("Duration", 0, "", |o, now| {
                let start = o["status"]["startTime"].as_str().unwrap_or_default();
                if start.is_empty() {
                    return json!("");
                }
                let end = o["status"]["completionTime"]
                    .as_str()
                    .and_then(parse_time)
                    .unwrap_or(now);
                json!(parse_time(start).map_or(String::new(), |s| human_duration(end - s)))
            }));
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            cols.push(Col("Role", 0, "", |o, _| {
                json!(format!(
                    "{}/{}",
                    o["roleRef"]["kind"].as_str().unwrap_or(""),
                    o["roleRef"]["name"].as_str().unwrap_or("")
                ))
            }));
        }
        "ResourceQuota" => {
            cols.push(age);
            cols.push(Col("Request", 0, "", |o, _| {
                json!(crate::quota::printed(o, false))
            }));
            cols.push(Col("Limit", 0, "", |o, _| {
                json!(crate::quota::printed(o, true))
            }));
            return cols;
        }
        "Role" | "ClusterRole" => {
            cols.push(created);
            return cols;
        }
        // kube-aggregator's printer: `ns/name` or `Local`, and `False (Reason)`.
        "APIService" => {
            cols.push(Col("Service", 0, "", |o, _| {
                let svc = &o["spec"]["service"];
                if svc.is_object() {
                    json!(format!(
                        "{}/{}",
                        svc["namespace"].as_str().unwrap_or_default(),
                        svc["name"].as_str().unwrap_or_default()
                    ))
                } else {
                    json!("Local")
                }
            }));
            cols.push(Col("Available", 0, "", |o, _| {
                let available = o["status"]["conditions"]
                    .as_array()
                    .and_then(|c| c.iter().find(|c| c["type"] == "Available"));
                match available {
                    Some(c) if c["status"] == "True" => json!("True"),
                    Some(c) => json!(format!(
                        "{} ({})",
                        c["status"].as_str().unwrap_or_default(),
                        c["reason"].as_str().unwrap_or_default()
                    )),
                    None => json!("Unknown"),
                }
            }));
        }
        "FlowSchema" => {
            cols.push(Col("PriorityLevel", 0, "", |o, _| {
                o["spec"]["priorityLevelConfiguration"]["name"].clone()
            }));
            cols.push(Col("MatchingPrecedence", 0, "", |o, _| {
                o["spec"]["matchingPrecedence"].clone()
            }));
            cols.push(Col("DistinguisherMethod", 0, "", |o, _| {
                str_or(&o["spec"]["distinguisherMethod"]["type"], "<none>")
            }));
            cols.push(age);
            cols.push(Col("MissingPL", 0, "", |o, _| {
                let dangling = o["status"]["conditions"]
                    .as_array()
                    .and_then(|c| c.iter().find(|c| c["type"] == "Dangling"));
                dangling.map_or(json!("?"), |c| c["status"].clone())
            }));
            return cols;
        }
        "PriorityLevelConfiguration" => {
            cols.push(Col("Type", 0, "", |o, _| o["spec"]["type"].clone()));
            cols.push(Col("NominalConcurrencyShares", 0, "", |o, _| {
                let limited = &o["spec"]["limited"];
                if limited.is_object() {
                    limited["nominalConcurrencyShares"].clone()
                } else {
                    json!("<none>")
                }
            }));
            for (name, field) in [
                ("Queues", (|o, _| queuing(o, "queues")) as Cell),
                ("HandSize", |o, _| queuing(o, "handSize")),
                ("QueueLengthLimit", |o, _| queuing(o, "queueLengthLimit")),
            ] {
                cols.push(Col(name, 0, "", field));
            }
        }
        _ => {
            cols.push(created);
            return cols;
        }
    }
    cols.push(age);
    cols
}

/// A PriorityLevelConfiguration's queuing field, `<none>` without queuing.
fn queuing(o: &Value, field: &str) -> Value {
    let q = &o["spec"]["limited"]["limitResponse"]["queuing"];
    if q.is_object() {
        q[field].clone()
    } else {
        json!("<none>")
    }
}

fn parse_time(t: &str) -> Option<i64> {
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

fn since(t: &str, now: i64) -> String {
    parse_time(t).map_or_else(|| "<unknown>".into(), |t| human_duration(now - t))
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
    if let Some(d) = crate::registry::custom::definition(resource).filter(|d| !d.columns.is_empty())
    {
        return custom_table(&d.columns, objects, list_metadata, include, now);
    }
    let cols = columns(resource.kind);
    let definitions: Vec<Value> = cols
        .iter()
        .map(|Col(name, priority, format, _)| {
            let kind = if *format == "date" { "date" } else { "string" };
            json!({"name": name, "type": kind, "format": format, "description": "", "priority": priority})
        })
        .collect();
    let mut order: Vec<&Value> = objects.iter().collect();
    if resource.kind == "FlowSchema" {
        // Upstream prints FlowSchemas in matching order: precedence, then name.
        order.sort_by_key(|o| {
            let precedence = o["spec"]["matchingPrecedence"].as_i64().unwrap_or(0);
            (
                precedence,
                o["metadata"]["name"].as_str().unwrap_or("").to_string(),
            )
        });
    }
    let rows: Vec<Value> = order
        .into_iter()
        .map(|o| {
            let cells: Vec<Value> = cols.iter().map(|Col(_, _, _, cell)| cell(o, now)).collect();
            row(o, cells, include)
        })
        .collect();
    document(list_metadata, definitions, rows)
}

/// A `meta.k8s.io/v1` Table.
fn document(list_metadata: Value, definitions: Vec<Value>, rows: Vec<Value>) -> Value {
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_metadata,
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

fn row(o: &Value, cells: Vec<Value>, include: Include) -> Value {
    let mut row = json!({ "cells": cells });
    match include {
        Include::None => {}
        Include::Metadata => {
            row["object"] = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]})
        }
        Include::Object => row["object"] = o.clone(),
    }
    row
}

const NAME_DOC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";

/// A custom resource's table: Name, then its CRD's `additionalPrinterColumns`, each cell the
/// first value its JSONPath finds, typed as upstream's CRD table convertor types it (a `date`
/// shows as an age).
fn custom_table(
    columns: &[Value],
    objects: &[Value],
    list_metadata: Value,
    include: Include,
    now: i64,
) -> Value {
    let mut definitions = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": NAME_DOC, "priority": 0}),
    ];
    for c in columns {
        definitions.push(json!({
            "name": c["name"], "type": c["type"], "format": c["format"].as_str().unwrap_or_default(),
            "description": c["description"].as_str().unwrap_or_default(),
            "priority": c["priority"].as_i64().unwrap_or(0),
        }));
    }
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut cells = vec![o["metadata"]["name"].clone()];
            for c in columns {
                let path = c["jsonPath"].as_str().unwrap_or_default();
                let found = crate::crd::jsonpath::eval(path, o).unwrap_or_default();
                cells.push(match found.first() {
                    None => Value::Null,
                    Some(v) => typed_cell(c["type"].as_str().unwrap_or("string"), v, now),
                });
            }
            row(o, cells, include)
        })
        .collect();
    document(list_metadata, definitions, rows)
}

fn typed_cell(kind: &str, v: &Value, now: i64) -> Value {
    match kind {
        "integer" => v.as_i64().map_or(Value::Null, |n| json!(n)),
        "number" => v.as_f64().map_or(Value::Null, |n| json!(n)),
        "boolean" => v.as_bool().map_or(Value::Null, |b| json!(b)),
        "date" => match v
            .as_str()
            .map(|t| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339))
        {
            Some(Ok(t)) => json!(human_duration(now - t.unix_timestamp())),
            _ => Value::Null,
        },
        _ => match v {
            Value::String(s) => json!(s),
            Value::Null => Value::Null,
            other => json!(crate::validation::go_value(other)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_table_is_a_table_without_fallback() {
        let table = "application/json;as=Table;v=v1;g=meta.k8s.io";
        assert!(only(table));
        assert!(!only(&format!("{table},application/json")));
        assert!(!only("application/json"));
    }

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
