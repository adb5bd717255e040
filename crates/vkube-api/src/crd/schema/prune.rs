//! Pruning of unknown fields and structural defaulting, as upstream's `pruning.Prune` and
//! `defaulting.PruneNonNullableNullsWithoutDefaults` + `defaulting.Default` do on decode.

use serde_json::Value;

use super::Schema;

const META_FIELDS: [&str; 3] = ["apiVersion", "kind", "metadata"];

/// Drops the fields `schema` does not specify, as upstream prunes a custom resource on decode:
/// below `x-kubernetes-preserve-unknown-fields` unknown fields stay (but specified properties and
/// additionalProperties prune again); apiVersion, kind and metadata are never touched at the root
/// nor at `x-kubernetes-embedded-resource` nodes. Returns the sorted paths of what was dropped
/// ("spec.foo", "spec.list[0].bar"), from which the caller words fieldValidation's
/// `unknown field "spec.foo"`.
pub fn prune(schema: &Schema, obj: &mut Value) -> Vec<String> {
    let mut pruned = Vec::new();
    let mut path = String::new();
    walk(obj, Some(schema), true, &mut path, &mut pruned);
    pruned.sort();
    pruned
}

/// `embedded` is x-kubernetes-embedded-resource, forced at the root.
fn walk(
    x: &mut Value,
    s: Option<&Schema>,
    root: bool,
    path: &mut String,
    pruned: &mut Vec<String>,
) {
    if let Some(s) = s {
        if s.preserve_unknown_fields {
            skip(x, s, root, path, pruned);
            return;
        }
    }
    let embedded = root || s.is_some_and(|s| s.embedded_resource);
    match x {
        Value::Object(map) => {
            let Some(s) = s else {
                for k in map.keys() {
                    pruned.push(key_path(path, k));
                }
                map.clear();
                return;
            };
            map.retain(|k, v| {
                if embedded && META_FIELDS.contains(&k.as_str()) {
                    return true;
                }
                let (known, child) = s.child(k);
                if known {
                    let len = path.len();
                    push_key(path, k);
                    walk(v, child, false, path, pruned);
                    path.truncate(len);
                } else {
                    pruned.push(key_path(path, k));
                }
                known
            });
        }
        Value::Array(items) => {
            let item_schema = s.and_then(|s| s.items.as_deref());
            for (i, v) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(v, item_schema, false, path, pruned);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// Below x-kubernetes-preserve-unknown-fields: unknown keys stay, known ones prune as usual.
fn skip(x: &mut Value, s: &Schema, root: bool, path: &mut String, pruned: &mut Vec<String>) {
    let embedded = root || s.embedded_resource;
    match x {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if embedded && META_FIELDS.contains(&k.as_str()) {
                    continue;
                }
                let (known, child) = s.child(k);
                if known {
                    let len = path.len();
                    push_key(path, k);
                    walk(v, child, false, path, pruned);
                    path.truncate(len);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = s.items.as_deref() {
                for (i, v) in items.iter_mut().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    skip(v, item_schema, false, path, pruned);
                    path.truncate(len);
                }
            }
        }
        _ => {}
    }
}

fn push_key(path: &mut String, key: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(key);
}

fn key_path(path: &str, key: &str) -> String {
    let mut p = path.to_string();
    push_key(&mut p, key);
    p
}

/// Applies the schema's `default`s as upstream's structural defaulting does: first a null under a
/// non-nullable schema without a default is dropped, then absent properties with a default get it
/// (as does a null under a non-nullable schema that has one), recursively through properties,
/// additionalProperties and items. Defaults are deep-copied; nothing else changes.
pub fn apply_defaults(schema: &Schema, obj: &mut Value) {
    drop_nulls(obj, Some(schema));
    default(obj, Some(schema));
}

fn non_nullable_null(x: &Value, s: Option<&Schema>) -> bool {
    x.is_null() && s.is_some_and(|s| !s.nullable)
}

fn drop_nulls(x: &mut Value, s: Option<&Schema>) {
    match x {
        Value::Object(map) => {
            map.retain(|k, v| {
                let child = s.and_then(|s| s.child(k).1);
                if non_nullable_null(v, child) && child.is_some_and(|c| c.default.is_none()) {
                    return false;
                }
                drop_nulls(v, child);
                true
            });
        }
        Value::Array(items) => {
            let item_schema = s.and_then(|s| s.items.as_deref());
            for v in items {
                drop_nulls(v, item_schema);
            }
        }
        _ => {}
    }
}

fn default(x: &mut Value, s: Option<&Schema>) {
    let Some(s) = s else { return };
    match x {
        Value::Object(map) => {
            for (k, prop) in &s.properties {
                let Some(d) = &prop.default else { continue };
                match map.get(k) {
                    None => {
                        map.insert(k.clone(), d.clone());
                    }
                    Some(v) if non_nullable_null(v, Some(prop)) => {
                        map.insert(k.clone(), d.clone());
                    }
                    _ => {}
                }
            }
            let additional = s.additional_schema();
            for (k, v) in map.iter_mut() {
                if let Some(prop) = s.properties.get(k) {
                    default(v, Some(prop));
                } else if let Some(a) = additional {
                    if non_nullable_null(v, Some(a)) {
                        *v = a.default.clone().unwrap_or(Value::Null);
                    }
                    default(v, Some(a));
                }
            }
        }
        Value::Array(items) => {
            let Some(item_schema) = s.items.as_deref() else {
                return;
            };
            for v in items {
                if non_nullable_null(v, Some(item_schema)) {
                    *v = item_schema.default.clone().unwrap_or(Value::Null);
                }
                default(v, Some(item_schema));
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(v: Value) -> Schema {
        Schema::parse(&v).unwrap()
    }

    /// Upstream's pruning cases run on a nested (non-root) value: we wrap them under a property
    /// of a root object and strip the prefix from the reported paths.
    fn prune_nested(s: Value, obj: Value) -> (Value, Vec<String>) {
        let root = schema(json!({"type": "object", "properties": {"x": s}}));
        let mut doc = json!({ "x": obj });
        let paths = prune(&root, &mut doc)
            .into_iter()
            .map(|p| {
                p.trim_start_matches('x')
                    .trim_start_matches('.')
                    .to_string()
            })
            .collect();
        (doc["x"].take(), paths)
    }

    #[test]
    fn prunes_object_arrays() {
        let (obj, paths) = prune_nested(
            json!({"type": "array", "items": {"type": "object", "properties": {"a": {}, "c": {}}}}),
            json!([{"a": 1}, {"b": 1}, {"a": 1, "b": 2, "c": 3}]),
        );
        assert_eq!(obj, json!([{"a": 1}, {}, {"a": 1, "c": 3}]));
        assert_eq!(paths, ["[1].b", "[2].b"]);
    }

    #[test]
    fn prunes_nested_objects_and_unspecified_fields() {
        let s = schema(json!({"type": "object", "properties": {
            "array": {"type": "array", "items": {"type": "object", "properties": {"a": {}, "c": {}}}},
            "specified": {"type": "object", "properties": {"a": {}, "c": {}}}
        }}));
        let mut obj = json!({"array": [{"a": 1}, {"b": 1}, {"a": 1, "b": 2, "c": 3}],
            "unspecified": {"a": 1}, "specified": {"a": 1, "b": 2, "c": 3}});
        let paths = prune(&s, &mut obj);
        assert_eq!(
            obj,
            json!({"array": [{"a": 1}, {}, {"a": 1, "c": 3}], "specified": {"a": 1, "c": 3}})
        );
        assert_eq!(
            paths,
            ["array[1].b", "array[2].b", "specified.b", "unspecified"]
        );
    }

    #[test]
    fn preserve_unknown_fields_nests_as_upstream() {
        let s = schema(json!({
            "type": "object", "x-kubernetes-preserve-unknown-fields": true,
            "properties": {
                "alpha": {"type": "string"}, "beta": {"type": "number"},
                "pruning": {"type": "object", "properties": {
                    "preserving": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    "pruning": {"type": "object"}}},
                "preserving": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                    "properties": {
                        "preserving": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "pruning": {"type": "object"}}},
                "notInherited": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                    "additionalProperties": {"type": "object",
                        "properties": {"specified": {"type": "object"}}}}
            }
        }));
        let mut obj = json!({
            "unspecified": "bar", "alpha": "abc", "beta": 42.0,
            "unspecifiedObject": {"unspecified": "bar"},
            "pruning": {"unspecified": "bar", "unspecifiedObject": {"unspecified": "bar"},
                "pruning": {"unspecified": "bar"}, "apiVersion": "unknown",
                "preserving": {"unspecified": "bar"}},
            "preserving": {"unspecified": "bar", "unspecifiedObject": {"unspecified": "bar"},
                "pruning": {"unspecified": "bar"}, "preserving": {"unspecified": "bar"}},
            "notInherited": {"foo": {"specified": {"unspecified": "bar"}, "unspecified": "bar"}}
        });
        let paths = prune(&s, &mut obj);
        assert_eq!(
            obj,
            json!({
                "unspecified": "bar", "alpha": "abc", "beta": 42.0,
                "unspecifiedObject": {"unspecified": "bar"},
                "pruning": {"pruning": {}, "preserving": {"unspecified": "bar"}},
                "preserving": {"unspecified": "bar", "unspecifiedObject": {"unspecified": "bar"},
                    "pruning": {}, "preserving": {"unspecified": "bar"}},
                "notInherited": {"foo": {"specified": {}}}
            })
        );
        assert_eq!(
            paths,
            [
                "notInherited.foo.specified.unspecified",
                "notInherited.foo.unspecified",
                "preserving.pruning.unspecified",
                "pruning.apiVersion",
                "pruning.pruning.unspecified",
                "pruning.unspecified",
                "pruning.unspecifiedObject",
            ]
        );
    }

    #[test]
    fn additional_properties_schema_and_bool() {
        let s = schema(json!({"type": "object", "properties": {
            "a": {}, "c": {"type": "object", "additionalProperties": {"type": "integer"}}}}));
        let mut obj = json!({"a": 1, "b": 1, "c": {"a": 1, "b": 2, "c": {"a": 1}}});
        assert_eq!(prune(&s, &mut obj), ["b", "c.c.a"]);
        assert_eq!(obj, json!({"a": 1, "c": {"a": 1, "b": 2, "c": {}}}));

        let s = schema(json!({"type": "object", "properties": {
            "a": {}, "c": {"type": "object", "additionalProperties": false}}}));
        let mut obj =
            json!({"a": 1, "b": 1, "c": {"a": 1, "b": 2, "c": {"a": 1, "apiVersion": "unknown"}}});
        assert_eq!(prune(&s, &mut obj), ["b", "c.c.a", "c.c.apiVersion"]);
        assert_eq!(obj, json!({"a": 1, "c": {"a": 1, "b": 2, "c": {}}}));
    }

    #[test]
    fn embedded_resources_keep_type_and_object_meta() {
        let embedded_spec = json!({"type": "object", "x-kubernetes-embedded-resource": true,
            "properties": {"spec": {"type": "object"}}});
        let s = schema(json!({"type": "object", "properties": {
            "pruned": embedded_spec,
            "preserving": {"type": "object", "x-kubernetes-embedded-resource": true,
                "x-kubernetes-preserve-unknown-fields": true},
            "nested": {"type": "object", "x-kubernetes-embedded-resource": true, "properties": {
                "spec": {"type": "object", "properties": {"embedded": embedded_spec}}}}
        }}));
        let inner = json!({"apiVersion": "foo/v1", "kind": "Foo", "unspecified": "bar",
            "metadata": {"name": "instance", "unspecified": "bar"},
            "spec": {"unspecified": "bar"}});
        let mut nested = inner.clone();
        nested["spec"]["embedded"] = inner.clone();
        let mut obj = json!({"apiVersion": "foo/v1", "kind": "Foo",
            "metadata": {"name": "instance", "unspecified": "bar"}, "unspecified": "bar",
            "pruned": inner, "preserving": inner, "nested": nested});
        let paths = prune(&s, &mut obj);
        let kept = json!({"apiVersion": "foo/v1", "kind": "Foo",
            "metadata": {"name": "instance", "unspecified": "bar"}, "spec": {}});
        let mut nested_kept = kept.clone();
        nested_kept["spec"] = json!({"embedded": kept});
        assert_eq!(
            obj["metadata"],
            json!({"name": "instance", "unspecified": "bar"})
        );
        assert_eq!(obj["pruned"], kept);
        assert_eq!(obj["preserving"], inner);
        assert_eq!(obj["nested"], nested_kept);
        assert!(obj.get("unspecified").is_none());
        assert_eq!(
            paths,
            [
                "nested.spec.embedded.spec.unspecified",
                "nested.spec.embedded.unspecified",
                "nested.spec.unspecified",
                "nested.unspecified",
                "pruned.spec.unspecified",
                "pruned.unspecified",
                "unspecified",
            ]
        );
    }

    fn defaulted(s: Value, obj: Value) -> Value {
        let mut obj = obj;
        apply_defaults(&schema(s), &mut obj);
        obj
    }

    #[test]
    fn defaults_fill_absent_fields_of_items_objects_and_maps() {
        let d = |v: &str| json!({"default": v});
        let out = defaulted(
            json!({"type": "array", "items": {"properties": {"a": d("A"), "b": d("B"), "c": d("C")}}}),
            json!([{"a": 1}, {"b": 1}, {"c": 1}]),
        );
        assert_eq!(
            out,
            json!([{"a": 1, "b": "B", "c": "C"}, {"a": "A", "b": 1, "c": "C"}, {"a": "A", "b": "B", "c": 1}])
        );

        let out = defaulted(
            json!({"properties": {
                "array": {"items": {"properties": {"a": d("A"), "b": d("B")}}},
                "object": {"properties": {"a": d("N"), "b": d("O")}},
                "additionalProperties": {"additionalProperties": {"properties": {"a": d("alpha"), "b": d("beta")}}},
                "foo": d("bar")
            }}),
            json!({"array": [{"a": 1}, {"b": 2}], "object": {"a": 1},
                "additionalProperties": {"x": {"a": 1}, "y": {"b": 2}}}),
        );
        assert_eq!(
            out,
            json!({"array": [{"a": 1, "b": "B"}, {"a": "A", "b": 2}], "object": {"a": 1, "b": "O"},
                "additionalProperties": {"x": {"a": 1, "b": "beta"}, "y": {"a": "alpha", "b": 2}},
                "foo": "bar"})
        );
    }

    #[test]
    fn defaults_leave_set_values_alone_and_replace_non_nullable_nulls() {
        let out = defaulted(
            json!({"items": {"properties": {"a": {"default": "A"}}}}),
            json!([{}, {"a": 1}, {"a": 0}, {"a": 0.0}, {"a": ""}, {"a": null}, {"a": []}, {"a": {}}]),
        );
        assert_eq!(
            out,
            json!([{"a": "A"}, {"a": 1}, {"a": 0}, {"a": 0.0}, {"a": ""}, {"a": "A"}, {"a": []}, {"a": {}}])
        );
        // Scalars and lists of scalars have nothing to default.
        assert_eq!(defaulted(json!({"default": "foo"}), json!(4)), json!(4));
        assert_eq!(
            defaulted(json!({"items": {"default": "foo"}}), json!([1, 2])),
            json!([1, 2])
        );
    }

    #[test]
    fn nullable_decides_what_a_null_becomes() {
        let item_a = json!({"properties": {"a": {"default": "A"}}});
        assert_eq!(
            defaulted(json!({"nullable": true, "items": item_a}), json!([null])),
            json!([null])
        );
        assert_eq!(
            defaulted(json!({"items": {"default": "A"}}), json!([null])),
            json!(["A"])
        );
        assert_eq!(
            defaulted(
                json!({"properties": {"a": {"nullable": true, "default": "A"}}}),
                json!({"a": null})
            ),
            json!({"a": null})
        );
        assert_eq!(
            defaulted(
                json!({"properties": {"a": {"default": "A"}}}),
                json!({"a": null})
            ),
            json!({"a": "A"})
        );
        assert_eq!(
            defaulted(
                json!({"additionalProperties": {"nullable": true, "default": "A"}}),
                json!({"a": null})
            ),
            json!({"a": null})
        );
        assert_eq!(
            defaulted(
                json!({"additionalProperties": {"default": "A"}}),
                json!({"a": null})
            ),
            json!({"a": "A"})
        );
        assert_eq!(
            defaulted(json!({"additionalProperties": true}), json!({"a": null})),
            json!({"a": null})
        );
    }

    #[test]
    fn non_nullable_nulls_without_defaults_are_dropped() {
        let s = json!({"items": {"properties": {
            "a": {"default": "A"},
            "b": {"nullable": true},
            "c": {"default": "C", "nullable": true},
            "d": {}
        }}});
        let input = json!([{"a": null}, {"b": null}, {"c": null}, {"d": null}, {"e": null}]);
        // Upstream's PruneNonNullableNullsWithoutDefaults alone.
        let mut only_dropped = input.clone();
        drop_nulls(&mut only_dropped, Some(&schema(s.clone())));
        assert_eq!(
            only_dropped,
            json!([{"a": null}, {"b": null}, {"c": null}, {}, {"e": null}])
        );
        // Then the defaulting that follows it.
        assert_eq!(
            defaulted(s, input),
            json!([{"a": "A", "c": "C"}, {"a": "A", "b": null, "c": "C"}, {"a": "A", "c": null}, {"a": "A", "c": "C"}, {"a": "A", "c": "C", "e": null}])
        );
        // Without a schema nothing is dropped.
        let mut obj = json!([1, null]);
        drop_nulls(&mut obj, None);
        assert_eq!(obj, json!([1, null]));
    }
}
