//! OpenAPI v3 documents: per group-version, the operations (every PATCH takes `fieldValidation`,
//! so kubectl validates server-side) and the kinds' schemas (so `kubectl explain` works), for the
//! built-in kinds and the established CRDs' kinds alike.

use serde_json::{Value, json};

use crate::registry::{self, Resource, custom};

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
pub(crate) const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";

/// The path of a group-version in the index: `api/v1` or `apis/G/V`.
fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: one entry per served group-version.
pub fn v3_index() -> Value {
    let mut paths = serde_json::Map::new();
    for (group, versions) in registry::groups() {
        for version in versions {
            let path = gv_path(group, version);
            // A custom group-version's document changes with its CRDs: its hash says so.
            let key = format!("{path}{}", custom::fingerprint(group, version));
            let url = format!("/openapi/v3/{path}?hash={}", crate::discovery::hash(&key));
            paths.insert(path, json!({"serverRelativeURL": url}));
        }
    }
    json!({"paths": paths})
}

fn query_param(name: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}})
}

fn operation(r: &Resource, action: &str, write: bool) -> Value {
    let mut params = vec![query_param("pretty")];
    if write {
        params.extend(["dryRun", "fieldManager", "fieldValidation"].map(query_param));
    }
    json!({
        "operationId": format!("{action}{}", r.kind),
        "parameters": params,
        "responses": {"200": {"description": "OK"}, "401": {"description": "Unauthorized"}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
    })
}

/// `/openapi/v3/api/v1` or `/openapi/v3/apis/G/V`, if served.
pub fn v3_group_version(path: &str) -> Option<Value> {
    let (group, version) = match path.split('/').collect::<Vec<_>>().as_slice() {
        ["api", v] => ("", *v),
        ["apis", g, v] => (*g, *v),
        _ => return None,
    };
    let mut paths = serde_json::Map::new();
    for r in registry::in_group_version(group, version) {
        let base = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        let collection = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("{base}/{}", r.plural)
        };
        paths.insert(
            collection.clone(),
            json!({"get": operation(r, "list", false), "post": operation(r, "post", true)}),
        );
        paths.insert(
            format!("{collection}/{{name}}"),
            json!({
                "get": operation(r, "get", false),
                "put": operation(r, "put", true),
                "patch": operation(r, "patch", true),
                "delete": operation(r, "delete", false),
            }),
        );
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": schemas(group, version)},
    }))
}

fn schemas(group: &str, version: &str) -> serde_json::Map<String, Value> {
    let mut schemas = crate::schema::group_version(group, version);
    let custom = custom_definitions(group, version);
    if !custom.is_empty() {
        schemas.extend(crate::schema::definitions_for(&[OBJECT_META, LIST_META]));
        schemas.extend(custom);
    }
    schemas
}

/// The definition name of a custom kind, as upstream names it: the group reversed, then the
/// version and the kind (`com.example.stable.v1.CronTab`).
pub fn custom_name(group: &str, version: &str, kind: &str) -> String {
    let reversed: Vec<&str> = group.split('.').rev().collect();
    format!("{}.{version}.{kind}", reversed.join("."))
}

/// The schemas of the custom kinds (and their lists) served in a group-version: each version's
/// `openAPIV3Schema` (or an object that keeps every field, when it has none) with `apiVersion`,
/// `kind` and `metadata` filled in as upstream publishes them.
pub fn custom_definitions(group: &str, version: &str) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    let meta_ref = |name: &str| json!({"$ref": format!("#/components/schemas/{name}")});
    for r in registry::in_group_version(group, version) {
        let Some(d) = custom::definition(r) else {
            continue;
        };
        let mut schema = d.schema().cloned().unwrap_or_else(
            || json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
        );
        let props = &mut schema["properties"];
        props["apiVersion"] = json!({"type": "string", "description": API_VERSION_DOC});
        props["kind"] = json!({"type": "string", "description": KIND_DOC});
        props["metadata"] = meta_ref(OBJECT_META);
        schema["type"] = json!("object");
        schema["x-kubernetes-group-version-kind"] =
            json!([{"group": group, "kind": r.kind, "version": version}]);
        let name = custom_name(group, version, r.kind);
        let list = json!({
            "type": "object",
            "required": ["items"],
            "description": format!("{} is a list of {}", d.list_kind, r.kind),
            "properties": {
                "apiVersion": {"type": "string", "description": API_VERSION_DOC},
                "items": {"type": "array", "items": meta_ref(&name), "description": format!("List of {}. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md", r.plural)},
                "kind": {"type": "string", "description": KIND_DOC},
                "metadata": meta_ref(LIST_META),
            },
            "x-kubernetes-group-version-kind": [{"group": group, "kind": d.list_kind, "version": version}],
        });
        out.insert(custom_name(group, version, &d.list_kind), list);
        out.insert(name, schema);
    }
    out
}

const API_VERSION_DOC: &str = "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources";
const KIND_DOC: &str = "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_operations_advertise_field_validation() {
        let doc = v3_group_version("apis/apps/v1").unwrap();
        let patch =
            &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"],
            "Deployment"
        );
        assert!(
            patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation")
        );
        assert!(
            v3_index()["paths"]["api/v1"]["serverRelativeURL"]
                .as_str()
                .unwrap()
                .starts_with("/openapi/v3/api/v1?hash=")
        );
        assert!(v3_group_version("apis/nope/v1").is_none());
    }
}
