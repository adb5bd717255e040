//! The columns `kubectl get` prints for each built-in kind, as upstream's table convertors
//! (pkg/printers/internalversion) define them: name, priority (1: only with `-o wide`), format,
//! and how each cell is read from the object.

use serde_json::{Value, json};

use super::{human_duration, parse_time, since};

fn age(obj: &Value, now: i64) -> String {
    since(
        obj["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap_or_default(),
        now,
    )
}

fn count(v: &Value) -> usize {
    v.as_object().map_or(0, |m| m.len()) + v.as_array().map_or(0, Vec::len)
}

pub(super) type Cell = fn(&Value, i64) -> Value;

/// One column: name, priority (1 shows with `-o wide` only), format, and how to fill it.
pub(super) struct Col(
    pub(super) &'static str,
    pub(super) u8,
    pub(super) &'static str,
    pub(super) Cell,
);

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

pub(super) fn columns(kind: &str) -> Vec<Col> {
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
