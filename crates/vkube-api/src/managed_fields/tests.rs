use super::*;

fn mgr(name: &str) -> Manager {
    Manager {
        name: name.into(),
        api_version: "apps/v1".into(),
        subresource: String::new(),
    }
}

fn shape() -> Shape<'static> {
    Shape::root("apps/v1", "Deployment", None)
}

fn deployment(image: &str, replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}, "finalizers": ["a/b"]},
        "spec": {"replicas": replicas, "template": {"spec": {"containers": [
            {"name": "web", "image": image, "ports": [{"containerPort": 80, "protocol": "TCP"}]}
        ]}}},
        "status": {"replicas": 0},
    })
}

#[test]
fn field_sets_follow_the_list_types_of_the_kind() {
    let set = fields(&deployment("nginx", 2), shape(), Part::NoStatus);
    assert_eq!(
        set.to_v1(),
        json!({
            "f:metadata": {"f:finalizers": {"v:\"a/b\"": {}}, "f:labels": {"f:app": {}}},
            "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {}, "f:ports": {
                    "k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}, "f:protocol": {}}
                }}
            }}}},
        })
    );
    let status = fields(&deployment("nginx", 2), shape(), Part::Status);
    assert_eq!(status.to_v1(), json!({"f:status": {"f:replicas": {}}}));
}

#[test]
fn an_update_takes_what_it_changed_from_the_other_managers() {
    let mut created = deployment("nginx", 2);
    track_update(
        None,
        &mut created,
        shape(),
        Part::NoStatus,
        &mgr("creator"),
        "t1",
    );
    let mut edited = created.clone();
    edited["spec"]["replicas"] = json!(3);
    track_update(
        Some(&created),
        &mut edited,
        shape(),
        Part::NoStatus,
        &mgr("scaler"),
        "t2",
    );
    let entries = edited["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1]["manager"], "scaler");
    assert_eq!(entries[1]["operation"], "Update");
    assert_eq!(
        entries[1]["fieldsV1"],
        json!({"f:spec": {"f:replicas": {}}})
    );
    let creator = FieldSet::from_v1(&entries[0]["fieldsV1"]);
    assert!(!creator.contains(&["f:spec".into(), "f:replicas".into()]));
    assert!(creator.contains(&["f:metadata".into(), "f:labels".into(), "f:app".into()]));
}

#[test]
fn apply_conflicts_with_another_managers_different_value_and_force_takes_it() {
    let mut live = deployment("nginx", 2);
    track_update(
        None,
        &mut live,
        shape(),
        Part::NoStatus,
        &mgr("kubectl-create"),
        "2026-01-01T00:00:00Z",
    );
    // The same value is shared ownership, not a conflict.
    let same = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 2}});
    let shared = apply(
        Some(&live),
        &same,
        shape(),
        Part::NoStatus,
        &mgr("ssa"),
        false,
        "t",
    )
    .unwrap();
    assert_eq!(shared["metadata"]["managedFields"][0]["manager"], "ssa");
    let other = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 5}});
    let conflicts = apply(
        Some(&shared),
        &other,
        shape(),
        Part::NoStatus,
        &mgr("ssa"),
        false,
        "t",
    )
    .unwrap_err();
    assert_eq!(
        conflicts,
        [Conflict {
            manager: "\"kubectl-create\" using apps/v1".into(),
            path: ".spec.replicas".into()
        }]
    );
    let status = conflict_status(&conflicts);
    assert_eq!(status.code, 409);
    assert_eq!(
        status.message,
        "Apply failed with 1 conflict: conflict with \"kubectl-create\" using apps/v1: .spec.replicas"
    );
    let forced = apply(
        Some(&shared),
        &other,
        shape(),
        Part::NoStatus,
        &mgr("ssa"),
        true,
        "t",
    )
    .unwrap();
    assert_eq!(forced["spec"]["replicas"], 5);
    let creator = forced["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == "kubectl-create")
        .unwrap();
    assert!(
        !FieldSet::from_v1(&creator["fieldsV1"]).contains(&["f:spec".into(), "f:replicas".into()])
    );
}

#[test]
fn apply_merges_keyed_lists_and_removes_what_it_stopped_applying() {
    let first = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"a": "1", "b": "2"}},
        "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:1"}, {"name": "side", "image": "busybox"}]}}}});
    let live = apply(
        None,
        &first,
        shape(),
        Part::NoStatus,
        &mgr("ssa"),
        false,
        "t",
    )
    .unwrap();
    let second = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"a": "1"}},
        "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:2"}]}}}});
    let next = apply(
        Some(&live),
        &second,
        shape(),
        Part::NoStatus,
        &mgr("ssa"),
        false,
        "t",
    )
    .unwrap();
    assert_eq!(next["metadata"]["labels"], json!({"a": "1"}));
    assert_eq!(
        next["spec"]["template"]["spec"]["containers"],
        json!([{"name": "web", "image": "nginx:2"}])
    );
    // A field another manager also owns stays.
    let mut shared = live.clone();
    shared["metadata"]["managedFields"]
        .as_array_mut()
        .unwrap()
        .push(json!({"manager": "other", "operation": "Update", "apiVersion": "apps/v1",
                     "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {"f:b": {}}}}}));
    let kept = apply(
        Some(&shared),
        &second,
        shape(),
        Part::NoStatus,
        &mgr("ssa"),
        false,
        "t",
    )
    .unwrap();
    assert_eq!(kept["metadata"]["labels"], json!({"a": "1", "b": "2"}));
}

#[test]
fn custom_kinds_use_their_schema_list_types() {
    let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "hosts": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
        "rules": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["id"],
                  "items": {"type": "object", "properties": {"id": {"type": "integer"}, "to": {"type": "string"}}}},
        "args": {"type": "array", "items": {"type": "string"}},
    }}}});
    let obj = json!({"spec": {"hosts": ["a"], "rules": [{"id": 1, "to": "x"}], "args": ["-v"]}});
    let set = fields(&obj, Shape::Json(&schema), Part::Whole);
    assert_eq!(
        set.to_v1(),
        json!({"f:spec": {"f:args": {}, "f:hosts": {"v:\"a\"": {}},
                          "f:rules": {"k:{\"id\":1}": {".": {}, "f:id": {}, "f:to": {}}}}})
    );
}
