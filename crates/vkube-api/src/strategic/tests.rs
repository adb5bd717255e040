//! Cases in the manner of upstream's strategicpatch tests (merge by key, the directives, scalar
//! lists, replace strategies), on real built-in types.

use serde_json::{Value, json};

use super::*;

fn deploy(containers: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "labels": {"a": "1", "b": "2"}, "finalizers": ["x", "y"]},
           "spec": {"template": {"spec": {"containers": containers}}}})
}

fn patched(orig: &Value, patch: Value) -> Value {
    apply(orig, &patch, "apps/v1", "Deployment").unwrap()
}

fn containers(v: &Value) -> &Value {
    &v["spec"]["template"]["spec"]["containers"]
}

#[test]
fn lists_of_objects_merge_by_key() {
    let orig = deploy(
        json!([{"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]}, {"name": "b", "image": "b:1"}]),
    );
    let out = patched(
        &orig,
        json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "a:2", "env": [{"name": "Y", "value": "2"}]}]}}}}),
    );
    assert_eq!(
        containers(&out),
        // An item the patch adds goes before the original items the patch does not name (as
        // kube-apiserver orders it; difftest patch/strategic-env-merge-and-delete).
        &json!([{"name": "a", "image": "a:2", "env": [{"name": "Y", "value": "2"}, {"name": "X", "value": "1"}]}, {"name": "b", "image": "b:1"}])
    );
    let added = patched(
        &orig,
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "c:1"}]}}}}),
    );
    assert_eq!(containers(&added).as_array().unwrap().len(), 3);
    assert_eq!(containers(&added)[0]["name"], "c");
}

#[test]
fn delete_and_replace_directives() {
    let orig = deploy(json!([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]));
    let out = patched(
        &orig,
        json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}}}),
    );
    assert_eq!(containers(&out), &json!([{"name": "b", "image": "b:1"}]));
    let out = patched(
        &orig,
        json!({"spec": {"template": {"spec": {"containers": [{"name": "z", "image": "z:1"}, {"$patch": "replace"}]}}}}),
    );
    assert_eq!(containers(&out), &json!([{"name": "z", "image": "z:1"}]));
    let out = patched(
        &orig,
        json!({"metadata": {"labels": {"c": "3", "$patch": "replace"}}}),
    );
    assert_eq!(out["metadata"]["labels"], json!({"c": "3"}));
    let out = patched(&orig, json!({"spec": {"template": {"$patch": "delete"}}}));
    assert!(out["spec"].get("template").is_none());
    assert!(
        apply(
            &orig,
            &json!({"spec": {"$patch": "bogus"}}),
            "apps/v1",
            "Deployment"
        )
        .is_err()
    );
}

#[test]
fn nulls_scalar_lists_and_replaced_lists() {
    let orig = deploy(json!([{"name": "a", "image": "a:1", "args": ["1", "2"]}]));
    let out = patched(
        &orig,
        json!({"metadata": {"labels": {"a": null}, "finalizers": ["z"]}}),
    );
    assert_eq!(out["metadata"]["labels"], json!({"b": "2"}));
    // finalizers are `patchStrategy:"merge"`: a union, the new value first (as upstream).
    assert_eq!(out["metadata"]["finalizers"], json!(["z", "x", "y"]));
    // args have no strategy: replaced.
    let out = patched(
        &orig,
        json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "args": ["3"]}]}}}}),
    );
    assert_eq!(containers(&out)[0]["args"], json!(["3"]));
    let out = patched(
        &orig,
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["x"]}}),
    );
    assert_eq!(out["metadata"]["finalizers"], json!(["y"]));
}

#[test]
fn merged_lists_keep_upstreams_order() {
    // Named items in the patch's order; an original item before a named one only if it came
    // first in the original.
    let orig = deploy(json!([{"name": "a"}, {"name": "b"}, {"name": "c"}, {"name": "d"}]));
    let out = patched(
        &orig,
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "c:2"}, {"name": "e"}, {"name": "b", "$patch": "delete"}]}}}}),
    );
    let names: Vec<&str> = containers(&out)
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "c", "e", "d"]);
}

#[test]
fn set_element_order() {
    let orig = deploy(json!([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]));
    let out = patched(
        &orig,
        json!({"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}], "containers": [{"name": "a", "image": "a:2"}]}}}}),
    );
    assert_eq!(
        containers(&out),
        &json!([{"name": "b", "image": "b:1"}, {"name": "a", "image": "a:2"}])
    );
}

#[test]
fn retain_keys_replaces_a_volume_source() {
    let orig = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [], "volumes": [{"name": "v", "emptyDir": {}}]}});
    let patch = json!({"spec": {"volumes": [{"name": "v", "hostPath": {"path": "/x"}, "$retainKeys": ["hostPath", "name"]}]}});
    let out = apply(&orig, &patch, "v1", "Pod").unwrap();
    assert_eq!(
        out["spec"]["volumes"],
        json!([{"name": "v", "hostPath": {"path": "/x"}}])
    );
}

#[test]
fn ports_by_container_port_and_map_fields() {
    let orig = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "a", "image": "x", "ports": [{"containerPort": 80, "name": "http"}], "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}});
    let patch = json!({"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 443, "name": "https"}], "resources": {"limits": {"cpu": "2", "memory": null}}}]}});
    let out = apply(&orig, &patch, "v1", "Pod").unwrap();
    let c = &out["spec"]["containers"][0];
    assert_eq!(
        c["ports"],
        json!([{"containerPort": 443, "name": "https"}, {"containerPort": 80, "name": "http"}])
    );
    assert_eq!(c["resources"]["limits"], json!({"cpu": "2"}));
}

#[test]
fn errors() {
    let orig = deploy(json!([{"name": "a"}]));
    let missing_key = json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}});
    let err = apply(&orig, &missing_key, "apps/v1", "Deployment").unwrap_err();
    assert!(
        err.to_string()
            .contains("does not contain declared merge key: name"),
        "{err}"
    );
    assert!(matches!(
        apply(&json!({}), &json!({}), "example.com/v1", "Widget"),
        Err(PatchError::UnknownKind(_))
    ));
}
