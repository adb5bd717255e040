//! Field ownership (`metadata.managedFields`) and server-side apply, as kube-apiserver's field
//! manager keeps them: every write records which fields its manager set (`Update` entries, one
//! per manager, operation, apiVersion and subresource), an apply (`Apply` entries) merges the
//! applied configuration into the object, refuses to change a field another manager owns unless
//! forced (409 with one cause per field), and removes the fields it applied before and no longer
//! does when nobody else owns them.
//!
//! Lists are merged as upstream's schemas declare them: by key (`containers` by `name`, ports by
//! port and protocol; a CRD's `x-kubernetes-list-type: map`), as sets, or whole (atomic). Built-in
//! kinds take this from the same Go struct tags strategic merge patch uses, custom kinds from
//! their CRD's schema.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::Status;
use crate::status::Cause;

/// A set of fields as a FieldsV1 tree: `f:<field>`, `k:<key fields as JSON>`, `v:<value as
/// JSON>`, `i:<index>`, and `.` for a list item itself. A node without children is a member.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSet(BTreeMap<String, FieldSet>);

type Path = Vec<String>;

impl FieldSet {
    pub fn from_v1(v: &Value) -> FieldSet {
        FieldSet(
            v.as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), FieldSet::from_v1(v)))
                        .collect()
                })
                .unwrap_or_default(),
        )
    }

    pub fn to_v1(&self) -> Value {
        Value::Object(self.0.iter().map(|(k, v)| (k.clone(), v.to_v1())).collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every member path.
    pub fn members(&self) -> Vec<Path> {
        let mut out = Vec::new();
        self.walk(&mut Vec::new(), &mut out);
        out
    }

    fn walk(&self, prefix: &mut Path, out: &mut Vec<Path>) {
        for (k, child) in &self.0 {
            prefix.push(k.clone());
            if child.is_empty() {
                out.push(prefix.clone());
            } else {
                child.walk(prefix, out);
            }
            prefix.pop();
        }
    }

    pub fn contains(&self, path: &[String]) -> bool {
        match path.split_first() {
            None => false,
            Some((first, rest)) => match self.0.get(first) {
                None => false,
                Some(child) if rest.is_empty() => child.is_empty(),
                Some(child) => child.contains(rest),
            },
        }
    }

    pub fn insert(&mut self, path: &[String]) {
        if let Some((first, rest)) = path.split_first() {
            let child = self.0.entry(first.clone()).or_default();
            if !rest.is_empty() {
                child.insert(rest);
            }
        }
    }

    /// Removes a member; parents left without members go too.
    pub fn remove(&mut self, path: &[String]) {
        let Some((first, rest)) = path.split_first() else {
            return;
        };
        if rest.is_empty() {
            if self.0.get(first).is_some_and(FieldSet::is_empty) {
                self.0.remove(first);
            }
            return;
        }
        if let Some(child) = self.0.get_mut(first) {
            child.remove(rest);
            if child.is_empty() {
                self.0.remove(first);
            }
        }
    }
}

/// How a list merges and is owned.
#[derive(Clone, Debug, PartialEq)]
enum ListType {
    Atomic,
    Set,
    Map(Vec<String>),
}

/// What the schema says of a value: a built-in message (by wire name), a CRD schema node, a map
/// whose values have a shape, a scalar, or nothing known (maps granular, lists atomic).
#[derive(Clone, Copy, Debug)]
pub enum Shape<'a> {
    Message(&'static str),
    MapOf(Option<&'static str>),
    Json(&'a Value),
    Scalar,
    Any,
}

const OBJECT_META: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta";

impl<'a> Shape<'a> {
    /// The shape of a kind's objects: its wire message, or its CRD version's schema.
    pub fn root(api_version: &str, kind: &str, custom: Option<&'a Value>) -> Shape<'a> {
        if let Some(schema) = custom {
            return Shape::Json(schema);
        }
        match crate::protobuf::kind_message(api_version, kind) {
            Some(m) => Shape::Message(m),
            None => Shape::Any,
        }
    }

    /// The shape of field `name` of an object of this shape (for a list: of its items), and
    /// the list type when the field is a list.
    fn field(self, name: &str, root: bool) -> (Shape<'a>, Option<ListType>) {
        if root && name == "metadata" {
            return (Shape::Message(OBJECT_META), None);
        }
        match self {
            Shape::Message(m) => match crate::protobuf::patch_field(m, name) {
                None => (Shape::Any, None),
                Some(f) => {
                    let inner = f.message.map_or(Shape::Scalar, Shape::Message);
                    if f.map {
                        (Shape::MapOf(f.message), None)
                    } else if f.list {
                        let merge = f.strategy.split(',').any(|s| s == "merge");
                        let lt = match (merge, f.merge_key) {
                            (true, "") => ListType::Set,
                            // Upstream's list-map keys add the protocol to port numbers.
                            (true, k @ ("containerPort" | "port")) => {
                                ListType::Map(vec![k.to_string(), "protocol".to_string()])
                            }
                            (true, k) => ListType::Map(vec![k.to_string()]),
                            (false, _) => ListType::Atomic,
                        };
                        (inner, Some(lt))
                    } else {
                        (inner, None)
                    }
                }
            },
            Shape::MapOf(m) => (m.map_or(Shape::Scalar, Shape::Message), None),
            Shape::Json(node) => {
                let child = node["properties"]
                    .get(name)
                    .or_else(|| node.get("additionalProperties").filter(|a| a.is_object()));
                let Some(child) = child else {
                    return (Shape::Any, None);
                };
                if child["type"] == "array" {
                    let lt = match child["x-kubernetes-list-type"].as_str() {
                        Some("set") => ListType::Set,
                        Some("map") => ListType::Map(
                            child["x-kubernetes-list-map-keys"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(|k| k.as_str().map(str::to_string))
                                .collect(),
                        ),
                        _ => ListType::Atomic,
                    };
                    (Shape::Json(&child["items"]), Some(lt))
                } else {
                    (Shape::Json(child), None)
                }
            }
            Shape::Scalar | Shape::Any => (Shape::Any, None),
        }
    }

    /// Whether an object of this shape is owned whole.
    fn atomic_map(self) -> bool {
        matches!(self, Shape::Json(n) if n["x-kubernetes-map-type"] == "atomic")
    }
}

fn key_of(item: &Value, keys: &[String]) -> String {
    let mut m = Map::new();
    let mut sorted: Vec<&String> = keys.iter().collect();
    sorted.sort();
    for k in sorted {
        if let Some(v) = item.get(k.as_str()) {
            m.insert(k.clone(), v.clone());
        }
    }
    format!("k:{}", Value::Object(m))
}

fn collect(value: &Value, shape: Shape<'_>, root: bool, prefix: &mut Path, out: &mut FieldSet) {
    let Some(map) = value.as_object() else {
        return;
    };
    for (k, v) in map {
        let (child, list) = shape.field(k, root);
        prefix.push(format!("f:{k}"));
        match (v, list) {
            (Value::Array(items), Some(ListType::Map(keys))) if !items.is_empty() => {
                for item in items {
                    prefix.push(key_of(item, &keys));
                    let mut dot = prefix.clone();
                    dot.push(".".into());
                    out.insert(&dot);
                    collect(item, child, false, prefix, out);
                    prefix.pop();
                }
            }
            (Value::Array(items), Some(ListType::Set)) if !items.is_empty() => {
                for item in items {
                    let mut p = prefix.clone();
                    p.push(format!("v:{item}"));
                    out.insert(&p);
                }
            }
            (Value::Object(m), None) if !m.is_empty() && !child.atomic_map() => {
                collect(v, child, false, prefix, out);
            }
            _ => out.insert(prefix),
        }
        prefix.pop();
    }
}

/// Which part of an object a write owns: the whole, all but the status (a status subresource
/// owns it), or only the status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Whole,
    NoStatus,
    Status,
}

/// The fields of `obj` a manager can own: no identity, bookkeeping or other part's fields.
fn ownable(obj: &Value, part: Part) -> Value {
    let mut obj = obj.clone();
    let Some(map) = obj.as_object_mut() else {
        return Value::Object(Map::new());
    };
    map.remove("apiVersion");
    map.remove("kind");
    if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
        for f in [
            "name",
            "namespace",
            "creationTimestamp",
            "selfLink",
            "uid",
            "generation",
            "managedFields",
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            meta.remove(f);
        }
        if meta.is_empty() {
            map.remove("metadata");
        }
    }
    match part {
        Part::Whole => {}
        Part::NoStatus => drop(map.remove("status")),
        Part::Status => map.retain(|k, _| k == "status"),
    }
    obj
}

/// The fields an object sets.
pub fn fields(obj: &Value, shape: Shape<'_>, part: Part) -> FieldSet {
    let mut out = FieldSet::default();
    collect(&ownable(obj, part), shape, true, &mut Vec::new(), &mut out);
    out
}

fn find_item(items: &[Value], element: &str) -> Option<usize> {
    if let Some(key) = element.strip_prefix("k:") {
        let key: Map<String, Value> = serde_json::from_str(key).ok()?;
        return items
            .iter()
            .position(|i| key.iter().all(|(k, v)| i.get(k) == Some(v)));
    }
    if let Some(v) = element.strip_prefix("v:") {
        let v: Value = serde_json::from_str(v).ok()?;
        return items.iter().position(|i| *i == v);
    }
    element.strip_prefix("i:")?.parse().ok()
}

/// The value at a member path (`None` for an absent one; a `.` ends at the item).
fn value_at<'v>(obj: &'v Value, path: &[String]) -> Option<&'v Value> {
    let mut v = obj;
    for element in path {
        if element == "." {
            break;
        }
        v = match element.strip_prefix("f:") {
            Some(field) => v.get(field)?,
            None => {
                let items = v.as_array()?;
                &items[find_item(items, element)?]
            }
        };
    }
    Some(v)
}

/// Removes the value at a member path.
fn remove_at(obj: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let (last, parents) = if last == "." {
        match parents.split_last() {
            Some((item, parents)) => (item, parents),
            None => return,
        }
    } else {
        (last, parents)
    };
    let mut v = obj;
    for element in parents {
        v = match element.strip_prefix("f:") {
            Some(field) => match v.get_mut(field) {
                Some(next) => next,
                None => return,
            },
            None => {
                let Some(i) = v.as_array().and_then(|items| find_item(items, element)) else {
                    return;
                };
                &mut v[i]
            }
        };
    }
    match last.strip_prefix("f:") {
        Some(field) => drop(v.as_object_mut().and_then(|m| m.remove(field))),
        None => {
            if let Some(i) = v.as_array().and_then(|items| find_item(items, last)) {
                if let Some(items) = v.as_array_mut() {
                    items.remove(i);
                }
            }
        }
    }
}

/// Merges an applied configuration into the live object.
fn merge(live: &Value, applied: &Value, shape: Shape<'_>, root: bool) -> Value {
    match (live, applied) {
        (Value::Object(l), Value::Object(a)) if !shape.atomic_map() => {
            let mut out = l.clone();
            for (k, av) in a {
                let (child, list) = shape.field(k, root);
                let merged = match (l.get(k), list) {
                    (Some(Value::Array(li)), Some(ListType::Map(keys))) => {
                        let mut items = li.clone();
                        for ai in av.as_array().into_iter().flatten() {
                            let key = key_of(ai, &keys);
                            match find_item(&items, &key) {
                                Some(i) => items[i] = merge(&items[i], ai, child, false),
                                None => items.push(ai.clone()),
                            }
                        }
                        Value::Array(items)
                    }
                    (Some(Value::Array(li)), Some(ListType::Set)) => {
                        let mut items = li.clone();
                        for ai in av.as_array().into_iter().flatten() {
                            if !items.contains(ai) {
                                items.push(ai.clone());
                            }
                        }
                        Value::Array(items)
                    }
                    (Some(lv), None) => merge(lv, av, child, false),
                    _ => av.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        _ => applied.clone(),
    }
}

/// Who writes, as a managedFields entry names it.
#[derive(Clone, Debug)]
pub struct Manager {
    pub name: String,
    pub api_version: String,
    /// `""` for the main resource, `"status"`, `"scale"`…
    pub subresource: String,
}

fn entries(obj: &Value) -> Vec<Value> {
    obj["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn is_entry(e: &Value, m: &Manager, operation: &str) -> bool {
    e["manager"] == m.name.as_str()
        && e["operation"] == operation
        && e["subresource"].as_str().unwrap_or_default() == m.subresource
        && (operation == "Apply" || e["apiVersion"] == m.api_version.as_str())
}

fn entry(m: &Manager, operation: &str, set: &FieldSet, now: &str) -> Value {
    let mut e = json!({
        "manager": m.name, "operation": operation, "apiVersion": m.api_version, "time": now,
        "fieldsType": "FieldsV1", "fieldsV1": set.to_v1(),
    });
    if !m.subresource.is_empty() {
        e["subresource"] = json!(m.subresource);
    }
    e
}

fn store_entries(obj: &mut Value, entries: Vec<Value>) {
    let kept: Vec<Value> = entries
        .into_iter()
        .filter(|e| !FieldSet::from_v1(&e["fieldsV1"]).is_empty())
        .collect();
    if let Some(meta) = obj["metadata"].as_object_mut() {
        if kept.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(kept));
        }
    }
}

fn with_set(e: &mut Value, set: &FieldSet) {
    e["fieldsV1"] = set.to_v1();
}

/// Records a write that is not an apply: the fields it changed become its manager's (an
/// `Update` entry) and stop being anyone else's; fields it removed stop being anyone's.
pub fn track_update(
    old: Option<&Value>,
    new: &mut Value,
    shape: Shape<'_>,
    part: Part,
    m: &Manager,
    now: &str,
) {
    // A client that rewrote managedFields (`[]` resets them) is taken at its word.
    let mut list = match (old, new["metadata"].get("managedFields")) {
        (Some(old), Some(sent)) if *sent != old["metadata"]["managedFields"] => {
            sent.as_array().cloned().unwrap_or_default()
        }
        (Some(old), _) => entries(old),
        (None, _) => Vec::new(),
    };
    let before = old.map(|o| fields(o, shape, part)).unwrap_or_default();
    let after = fields(new, shape, part);
    let mut changed = FieldSet::default();
    for p in after.members() {
        let differs = match old {
            None => true,
            Some(o) => !before.contains(&p) || value_at(o, &p) != value_at(new, &p),
        };
        if differs {
            changed.insert(&p);
        }
    }
    let removed: Vec<Path> = before
        .members()
        .into_iter()
        .filter(|p| !after.contains(p))
        .collect();
    let changed_members = changed.members();
    for e in list.iter_mut() {
        let mut set = FieldSet::from_v1(&e["fieldsV1"]);
        let own = is_entry(e, m, "Update");
        for p in &removed {
            set.remove(p);
        }
        if own {
            for p in &changed_members {
                set.insert(p);
            }
            if !changed.is_empty() {
                e["time"] = json!(now);
            }
        } else {
            for p in &changed_members {
                set.remove(p);
            }
        }
        with_set(e, &set);
    }
    if !changed.is_empty() && !list.iter().any(|e| is_entry(e, m, "Update")) {
        list.push(entry(m, "Update", &changed, now));
    }
    store_entries(new, list);
}

/// A field another manager owns, which an apply would change.
#[derive(Clone, Debug, PartialEq)]
pub struct Conflict {
    pub manager: String,
    pub path: String,
}

/// Applies `applied` to `live` (`None`: the object does not exist yet) for manager `m`.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    shape: Shape<'_>,
    part: Part,
    m: &Manager,
    force: bool,
    now: &str,
) -> Result<Value, Vec<Conflict>> {
    let empty = json!({});
    let live_obj = live.unwrap_or(&empty);
    let mut list = live.map(entries).unwrap_or_default();
    let applied_set = fields(applied, shape, part);
    let mut conflicts = Vec::new();
    for p in applied_set.members() {
        let (Some(have), Some(want)) = (value_at(live_obj, &p), value_at(applied, &p)) else {
            continue;
        };
        if have == want || p.last().is_some_and(|l| l == ".") {
            continue;
        }
        for e in list.iter_mut() {
            if is_entry(e, m, "Apply") {
                continue;
            }
            let mut set = FieldSet::from_v1(&e["fieldsV1"]);
            if set.contains(&p) {
                if force {
                    set.remove(&p);
                    with_set(e, &set);
                } else {
                    conflicts.push(Conflict {
                        manager: describe(e),
                        path: render(&p),
                    });
                }
            }
        }
    }
    if !conflicts.is_empty() {
        return Err(conflicts);
    }
    let mut merged = match live {
        Some(l) => merge(l, applied, shape, true),
        None => applied.clone(),
    };
    let previous = list
        .iter()
        .find(|e| is_entry(e, m, "Apply"))
        .map(|e| FieldSet::from_v1(&e["fieldsV1"]))
        .unwrap_or_default();
    for p in previous.members() {
        if applied_set.contains(&p) {
            continue;
        }
        let owned_elsewhere = list
            .iter()
            .filter(|e| !is_entry(e, m, "Apply"))
            .any(|e| FieldSet::from_v1(&e["fieldsV1"]).contains(&p));
        if !owned_elsewhere {
            remove_at(&mut merged, &p);
        }
    }
    // An unchanged apply keeps its entry's time, so re-applying writes nothing.
    let time = list
        .iter()
        .find(|e| is_entry(e, m, "Apply") && FieldSet::from_v1(&e["fieldsV1"]) == applied_set)
        .and_then(|e| e["time"].as_str().map(str::to_string))
        .unwrap_or_else(|| now.to_string());
    list.retain(|e| !is_entry(e, m, "Apply"));
    // Upstream lists the appliers first.
    list.insert(0, entry(m, "Apply", &applied_set, &time));
    store_entries(&mut merged, list);
    Ok(merged)
}

/// How upstream names a manager in a conflict: `"name"`, and for an update `using <apiVersion>`
/// (the manager identifier it prints carries no time).
fn describe(e: &Value) -> String {
    let mut s = format!("{:?}", e["manager"].as_str().unwrap_or_default());
    if let Some(sub) = e["subresource"].as_str().filter(|s| !s.is_empty()) {
        s.push_str(&format!(" with subresource {sub:?}"));
    }
    if e["operation"] == "Update" {
        s.push_str(&format!(
            " using {}",
            e["apiVersion"].as_str().unwrap_or_default()
        ));
    }
    s
}

/// A path as upstream prints it: `.spec.containers[name="web"].image`.
fn render(path: &[String]) -> String {
    let mut out = String::new();
    for element in path {
        if let Some(f) = element.strip_prefix("f:") {
            out.push('.');
            out.push_str(f);
        } else if let Some(k) = element.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let parts: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = element.strip_prefix("v:") {
            out.push_str(&format!("[={v}]"));
        } else if let Some(i) = element.strip_prefix("i:") {
            out.push_str(&format!("[{i}]"));
        }
    }
    out
}

/// The 409 of a refused apply, in upstream's words.
pub fn conflict_status(conflicts: &[Conflict]) -> Status {
    let message = if let [one] = conflicts {
        format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            one.manager, one.path
        )
    } else {
        let mut by: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for c in conflicts {
            by.entry(&c.manager).or_default().push(&c.path);
        }
        let mut lines = Vec::new();
        for (manager, paths) in by {
            lines.push(format!("conflicts with {manager}:"));
            lines.extend(paths.iter().map(|p| format!("- {p}")));
        }
        format!(
            "Apply failed with {} conflicts: {}",
            conflicts.len(),
            lines.join("\n")
        )
    };
    let causes = conflicts
        .iter()
        .map(|c| Cause {
            reason: "FieldManagerConflict".into(),
            message: format!("conflict with {}", c.manager),
            field: c.path.clone(),
        })
        .collect();
    Status::apply_conflict(message, causes)
}

#[cfg(test)]
mod tests;
