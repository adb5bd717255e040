//! Table output (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`), which `kubectl get`
//! prints. Common kinds get upstream's columns; every other kind gets Name and Created At, as
//! upstream's default table convertor gives.

use serde_json::{Value, json};

use crate::registry::Resource;

mod columns;

use columns::{Col, columns};

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

fn parse_time(t: &str) -> Option<i64> {
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// How long ago RFC 3339 time `t` was, as kubectl prints ages.
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
        "date" => match v.as_str().and_then(parse_time) {
            Some(t) => json!(human_duration(now - t)),
            None => Value::Null,
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
