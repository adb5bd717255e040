//! Strategic merge patch (`application/strategic-merge-patch+json`), what `kubectl apply`, `edit`,
//! `set` and `patch` send by default. Like a merge patch, except that lists follow each field's
//! strategy from upstream's Go types (`patchStrategy`/`patchMergeKey`, carried in the generated
//! wire table): lists of objects with a merge key are merged item by item, `merge` lists of
//! scalars are unions, other lists are replaced; and the directives `$patch`
//! (replace/delete/merge), `$retainKeys`, `$deleteFromPrimitiveList/<field>` and
//! `$setElementOrder/<field>` are honoured.

use serde_json::{Map, Value};

use crate::protobuf::{PatchField, kind_message, patch_field};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PatchError {
    /// Not a built-in kind: upstream refuses strategic merge patches for custom resources.
    #[error("strategic merge patch is not supported for {0}")]
    UnknownKind(String),
    #[error("{0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> PatchError {
    PatchError::Invalid(msg.into())
}

/// Applies `patch` to `original`, an object of `api_version`/`kind`.
pub fn apply(
    original: &Value,
    patch: &Value,
    api_version: &str,
    kind: &str,
) -> Result<Value, PatchError> {
    let message = kind_message(api_version, kind)
        .ok_or_else(|| PatchError::UnknownKind(format!("{api_version}, Kind={kind}")))?;
    let (Some(orig), Some(p)) = (original.as_object(), patch.as_object()) else {
        return Err(invalid("a strategic merge patch must be a JSON object"));
    };
    Ok(merge_map(orig, p, Some(message))?
        .map(Value::Object)
        .unwrap_or(Value::Object(Map::new())))
}

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_FROM: &str = "$deleteFromPrimitiveList/";
const ORDER: &str = "$setElementOrder/";

fn is_directive(key: &str) -> bool {
    key == PATCH || key == RETAIN_KEYS || key.starts_with(DELETE_FROM) || key.starts_with(ORDER)
}

/// A patch value with its directives removed, for where there is nothing to merge it into.
fn strip(v: &Value) -> Option<Value> {
    match v {
        Value::Object(m) => {
            if m.get(PATCH).and_then(Value::as_str) == Some("delete") {
                return None;
            }
            Some(Value::Object(
                m.iter()
                    .filter(|(k, _)| !is_directive(k))
                    .filter_map(|(k, v)| {
                        if v.is_null() {
                            None
                        } else {
                            strip(v).map(|v| (k.clone(), v))
                        }
                    })
                    .collect(),
            ))
        }
        Value::Array(items) => Some(Value::Array(
            items
                .iter()
                .filter(|i| i.get(PATCH).is_none())
                .filter_map(strip)
                .collect(),
        )),
        other => Some(other.clone()),
    }
}

/// Merges patch map `p` into `orig`; `None` when the patch deletes the map (`$patch: delete`).
fn merge_map(
    orig: &Map<String, Value>,
    p: &Map<String, Value>,
    message: Option<&str>,
) -> Result<Option<Map<String, Value>>, PatchError> {
    match p.get(PATCH).map(|v| v.as_str()) {
        None | Some(Some("merge")) => {}
        Some(Some("replace")) => {
            return match strip(&Value::Object(p.clone())) {
                Some(Value::Object(m)) => Ok(Some(m)),
                _ => Ok(Some(Map::new())),
            };
        }
        Some(Some("delete")) => return Ok(None),
        Some(other) => {
            return Err(invalid(format!(
                "Unknown patch type: {}",
                other.unwrap_or("(not a string)")
            )));
        }
    }
    let mut result = orig.clone();
    if let Some(keep) = p.get(RETAIN_KEYS) {
        let keep: Vec<&str> = keep
            .as_array()
            .ok_or_else(|| invalid("$retainKeys must be a list of field names"))?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        result.retain(|k, _| keep.contains(&k.as_str()));
    }
    let field_of = |k: &str| message.and_then(|m| patch_field(m, k));
    for (k, pv) in p {
        if is_directive(k) {
            continue;
        }
        if pv.is_null() {
            result.remove(k);
            continue;
        }
        let field = field_of(k);
        let sub = field.filter(|f| !f.map).and_then(|f| f.message);
        let merged = match (result.get(k), pv) {
            (Some(Value::Object(o)), Value::Object(pm)) => {
                let values = field.filter(|f| f.map).and_then(|f| f.message);
                if field.is_some_and(|f| f.map) {
                    merge_value_map(o, pm, values)?
                } else {
                    merge_map(o, pm, sub)?.map(Value::Object)
                }
            }
            (Some(Value::Array(o)), Value::Array(pl)) => {
                Some(Value::Array(merge_list(o, pl, field, k)?))
            }
            (None, Value::Object(pm)) => {
                if field.is_some_and(|f| f.map) {
                    merge_value_map(&Map::new(), pm, field.and_then(|f| f.message))?
                } else {
                    merge_map(&Map::new(), pm, sub)?.map(Value::Object)
                }
            }
            (None, Value::Array(pl)) => Some(Value::Array(merge_list(&[], pl, field, k)?)),
            _ => strip(pv),
        };
        match merged {
            Some(v) => drop(result.insert(k.clone(), v)),
            None => drop(result.remove(k)),
        }
    }
    for (k, pv) in p {
        if let Some(field) = k.strip_prefix(DELETE_FROM) {
            let gone = pv
                .as_array()
                .ok_or_else(|| invalid(format!("{k} must be a list")))?;
            if let Some(Value::Array(list)) = result.get_mut(field) {
                list.retain(|v| !gone.contains(v));
            }
        }
    }
    for (k, pv) in p {
        if let Some(field) = k.strip_prefix(ORDER) {
            let order = pv
                .as_array()
                .ok_or_else(|| invalid(format!("{k} must be a list")))?;
            let key = field_of(field).map(|f| f.merge_key).unwrap_or("");
            if let Some(Value::Array(list)) = result.get_mut(field) {
                reorder(list, order, key);
            }
        }
    }
    Ok(Some(result))
}

/// A Go map field (labels, resources.limits): keys merged, values replaced (or merged as objects
/// when the values are structs).
fn merge_value_map(
    orig: &Map<String, Value>,
    p: &Map<String, Value>,
    values: Option<&str>,
) -> Result<Option<Value>, PatchError> {
    if p.get(PATCH).and_then(Value::as_str) == Some("replace")
        || p.get(PATCH).and_then(Value::as_str) == Some("delete")
    {
        return Ok(merge_map(orig, p, None)?.map(Value::Object));
    }
    let mut result = orig.clone();
    for (k, pv) in p.iter().filter(|(k, _)| !is_directive(k)) {
        match (result.get(k), pv) {
            (_, Value::Null) => drop(result.remove(k)),
            (Some(Value::Object(o)), Value::Object(pm)) if values.is_some() => {
                match merge_map(o, pm, values)? {
                    Some(m) => drop(result.insert(k.clone(), Value::Object(m))),
                    None => drop(result.remove(k)),
                }
            }
            _ => {
                if let Some(v) = strip(pv) {
                    result.insert(k.clone(), v);
                }
            }
        }
    }
    Ok(Some(Value::Object(result)))
}

/// Merges list `p` into `orig` by the field's strategy.
fn merge_list(
    orig: &[Value],
    p: &[Value],
    field: Option<PatchField>,
    name: &str,
) -> Result<Vec<Value>, PatchError> {
    let replace_item = |i: &Value| {
        i.as_object().is_some_and(|m| {
            m.len() == 1 && m.get(PATCH).and_then(Value::as_str) == Some("replace")
        })
    };
    let strategy = field.map(|f| f.strategy).unwrap_or("");
    if !strategy.split(',').any(|s| s == "merge") || p.iter().any(replace_item) {
        return Ok(p
            .iter()
            .filter(|i| !replace_item(i))
            .filter_map(strip)
            .collect());
    }
    let key = field.map(|f| f.merge_key).unwrap_or("");
    let message = field.and_then(|f| f.message);
    let mut result: Vec<Value> = orig.to_vec();
    if key.is_empty() {
        // A merge list of scalars: a union, the patch's new values after the original ones.
        let scalars: Vec<Value> = p.iter().filter(|i| !i.is_object()).cloned().collect();
        for item in &scalars {
            if !result.contains(item) {
                result.push(item.clone());
            }
        }
        return Ok(upstream_order(result, &scalars, orig, key));
    }
    let named: Vec<Value> = p
        .iter()
        .filter(|i| i.get(PATCH).is_none())
        .cloned()
        .collect();
    for item in p {
        let Some(obj) = item.as_object() else {
            return Err(invalid(format!(
                "{name}: expected a list of objects merged by {key:?}"
            )));
        };
        let Some(id) = obj.get(key) else {
            return Err(invalid(format!(
                "map: {item} does not contain declared merge key: {key}"
            )));
        };
        let at = result.iter().position(|r| r.get(key) == Some(id));
        if obj.get(PATCH).and_then(Value::as_str) == Some("delete") {
            result.retain(|r| r.get(key) != Some(id));
            continue;
        }
        let base = at
            .and_then(|i| result[i].as_object().cloned())
            .unwrap_or_default();
        match (merge_map(&base, obj, message)?, at) {
            (Some(m), Some(i)) => result[i] = Value::Object(m),
            (Some(m), None) => result.push(Value::Object(m)),
            (None, Some(i)) => drop(result.remove(i)),
            (None, None) => {}
        }
    }
    Ok(upstream_order(result, &named, orig, key))
}

/// The order upstream's mergeSlice leaves a merged list in (normalizeElementOrder): the items the
/// patch names, in the patch's order, interleaved with the others in the original's order, an
/// original item going first only when the patch item it meets was in the original after it. So
/// an item the patch adds lands before the original items not named in the patch.
fn upstream_order(
    merged: Vec<Value>,
    patch: &[Value],
    original: &[Value],
    key: &str,
) -> Vec<Value> {
    let id = |v: &Value| {
        if key.is_empty() {
            Some(v.clone())
        } else {
            v.get(key).cloned()
        }
    };
    let pos = |list: &[Value], v: &Value| {
        let wanted = id(v);
        list.iter().position(|x| id(x) == wanted)
    };
    let (mut named, mut others): (Vec<Value>, Vec<Value>) =
        merged.into_iter().partition(|v| pos(patch, v).is_some());
    named.sort_by_key(|v| pos(patch, v));
    others.sort_by_key(|v| pos(original, v));
    let mut out = Vec::with_capacity(named.len() + others.len());
    let (mut named, mut others) = (named.into_iter().peekable(), others.into_iter().peekable());
    while let Some(next) = match (others.peek(), named.peek()) {
        (Some(o), Some(n)) => match (pos(original, o), pos(original, n)) {
            (Some(a), Some(b)) if a < b => others.next(),
            _ => named.next(),
        },
        (Some(_), None) => others.next(),
        (None, _) => named.next(),
    } {
        out.push(next);
    }
    out
}

/// `$setElementOrder`: the listed items first, in that order; the others after, as they were.
fn reorder(list: &mut [Value], order: &[Value], key: &str) {
    let rank = |v: &Value| {
        let id = if key.is_empty() { Some(v) } else { v.get(key) };
        id.and_then(|id| {
            order.iter().position(|o| {
                if key.is_empty() {
                    o == id
                } else {
                    o.get(key) == Some(id)
                }
            })
        })
        .unwrap_or(usize::MAX)
    };
    list.sort_by_key(rank);
}

#[cfg(test)]
mod tests;
