//! `/openapi/v2`, which kubectl up to 1.27 fetches (as protobuf only, gnostic's `openapi.v2`
//! messages) for `explain` and before it validates `-f` input. It carries every served kind's
//! definitions (converted from the v3 schemas) and the PATCH operations: every PATCH takes
//! `fieldValidation`, so kubectl validates server-side.

use prost::Message;
use serde_json::Value;

use crate::registry;

#[derive(Clone, PartialEq, Message)]
struct Document {
    #[prost(string, tag = "1")]
    swagger: String,
    #[prost(message, optional, tag = "2")]
    info: Option<Info>,
    #[prost(message, optional, tag = "8")]
    paths: Option<Paths>,
    #[prost(message, optional, tag = "9")]
    definitions: Option<NamedSchemas>,
}

/// gnostic's `Definitions` and `Properties`: a list of named schemas.
#[derive(Clone, PartialEq, Message)]
struct NamedSchemas {
    #[prost(message, repeated, tag = "1")]
    additional_properties: Vec<NamedSchema>,
}

#[derive(Clone, PartialEq, Message)]
struct NamedSchema {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    value: Option<Schema>,
}

#[derive(Clone, PartialEq, Message)]
struct Schema {
    #[prost(string, tag = "1")]
    r#ref: String,
    #[prost(string, tag = "2")]
    format: String,
    #[prost(string, tag = "4")]
    description: String,
    #[prost(string, repeated, tag = "19")]
    required: Vec<String>,
    #[prost(message, repeated, tag = "20")]
    r#enum: Vec<Any>,
    #[prost(message, optional, boxed, tag = "21")]
    additional_properties: Option<Box<AdditionalProperties>>,
    #[prost(message, optional, tag = "22")]
    r#type: Option<TypeItem>,
    #[prost(message, optional, tag = "23")]
    items: Option<ItemsItem>,
    #[prost(message, optional, tag = "25")]
    properties: Option<NamedSchemas>,
    #[prost(message, repeated, tag = "31")]
    vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, Message)]
struct AdditionalProperties {
    #[prost(message, optional, tag = "1")]
    schema: Option<Schema>,
}

#[derive(Clone, PartialEq, Message)]
struct TypeItem {
    #[prost(string, repeated, tag = "1")]
    value: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
struct ItemsItem {
    #[prost(message, repeated, tag = "1")]
    schema: Vec<Schema>,
}

/// A v3 JSON schema as a v2 gnostic schema: refs point at `#/definitions/`, and a lone `allOf`
/// (how a described ref is written in v3) becomes the ref itself.
fn to_v2(v: &Value) -> Schema {
    let mut schema = Schema::default();
    let Some(map) = v.as_object() else {
        return schema;
    };
    if let Some(inner) = map
        .get("allOf")
        .and_then(Value::as_array)
        .filter(|a| a.len() == 1)
    {
        schema = to_v2(&inner[0]);
    }
    let text = |k: &str| {
        map.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    if let Some(r) = map.get("$ref").and_then(Value::as_str) {
        schema.r#ref = r.replace("#/components/schemas/", "#/definitions/");
    }
    schema.format = text("format");
    schema.description = text("description");
    if let Some(t) = map.get("type").and_then(Value::as_str) {
        schema.r#type = Some(TypeItem {
            value: vec![t.to_string()],
        });
    }
    schema.required = map
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_str().map(str::to_string))
        .collect();
    schema.r#enum = map
        .get("enum")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| Any {
            yaml: e.to_string(),
        })
        .collect();
    if let Some(items) = map.get("items") {
        schema.items = Some(ItemsItem {
            schema: vec![to_v2(items)],
        });
    }
    if let Some(props) = map.get("properties").and_then(Value::as_object) {
        schema.properties = Some(NamedSchemas {
            additional_properties: props
                .iter()
                .map(|(name, p)| NamedSchema {
                    name: name.clone(),
                    value: Some(to_v2(p)),
                })
                .collect(),
        });
    }
    if let Some(extra) = map.get("additionalProperties").filter(|a| a.is_object()) {
        schema.additional_properties = Some(Box::new(AdditionalProperties {
            schema: Some(to_v2(extra)),
        }));
    }
    for (name, value) in map.iter().filter(|(k, _)| k.starts_with("x-kubernetes-")) {
        // JSON is YAML: gnostic reads extension values as YAML text.
        schema.vendor_extension.push(NamedAny {
            name: name.clone(),
            value: Some(Any {
                yaml: value.to_string(),
            }),
        });
    }
    schema
}

#[derive(Clone, PartialEq, Message)]
struct Info {
    #[prost(string, tag = "1")]
    title: String,
    #[prost(string, tag = "2")]
    version: String,
}

#[derive(Clone, PartialEq, Message)]
struct Paths {
    #[prost(message, repeated, tag = "2")]
    path: Vec<NamedPathItem>,
}

#[derive(Clone, PartialEq, Message)]
struct NamedPathItem {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    value: Option<PathItem>,
}

#[derive(Clone, PartialEq, Message)]
struct PathItem {
    #[prost(message, optional, tag = "8")]
    patch: Option<Operation>,
}

#[derive(Clone, PartialEq, Message)]
struct Operation {
    #[prost(string, tag = "5")]
    operation_id: String,
    #[prost(message, repeated, tag = "8")]
    parameters: Vec<ParametersItem>,
    #[prost(message, repeated, tag = "13")]
    vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, Message)]
struct ParametersItem {
    #[prost(message, optional, tag = "1")]
    parameter: Option<Parameter>,
}

#[derive(Clone, PartialEq, Message)]
struct Parameter {
    #[prost(message, optional, tag = "2")]
    non_body_parameter: Option<NonBodyParameter>,
}

#[derive(Clone, PartialEq, Message)]
struct NonBodyParameter {
    #[prost(message, optional, tag = "3")]
    query_parameter_sub_schema: Option<QueryParameterSubSchema>,
}

#[derive(Clone, PartialEq, Message)]
struct QueryParameterSubSchema {
    #[prost(string, tag = "2")]
    r#in: String,
    #[prost(string, tag = "4")]
    name: String,
    #[prost(string, tag = "6")]
    r#type: String,
}

#[derive(Clone, PartialEq, Message)]
struct NamedAny {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    value: Option<Any>,
}

#[derive(Clone, PartialEq, Message)]
struct Any {
    #[prost(string, tag = "2")]
    yaml: String,
}

fn query_param(name: &str) -> ParametersItem {
    ParametersItem {
        parameter: Some(Parameter {
            non_body_parameter: Some(NonBodyParameter {
                query_parameter_sub_schema: Some(QueryParameterSubSchema {
                    r#in: "query".into(),
                    name: name.into(),
                    r#type: "string".into(),
                }),
            }),
        }),
    }
}

/// Every served kind's definition (built-in and custom), as v3 JSON schemas.
fn definitions() -> serde_json::Map<String, Value> {
    let mut definitions = crate::schema::all_definitions();
    for (group, versions) in registry::groups() {
        for version in versions {
            definitions.extend(crate::openapi::custom_definitions(group, version));
        }
    }
    // The custom kinds' lists reference ListMeta, which no built-in kind does.
    for (name, def) in crate::schema::definitions_for(&[crate::openapi::LIST_META]) {
        definitions.entry(name).or_insert(def);
    }
    definitions
}

/// v3 → v2 JSON: refs point at `#/definitions/`, and a lone `allOf` around a ref (how v3
/// writes a described ref) becomes the ref itself.
fn v2_refs(v: &mut Value) {
    match v {
        Value::Object(m) => {
            let lone_ref = m
                .get("allOf")
                .and_then(Value::as_array)
                .filter(|a| a.len() == 1)
                .and_then(|a| a[0].get("$ref").cloned());
            if let Some(r) = lone_ref {
                m.remove("allOf");
                m.insert("$ref".into(), r);
            }
            if let Some(Value::String(r)) = m.get_mut("$ref") {
                if let Some(name) = r.strip_prefix("#/components/schemas/") {
                    *r = format!("#/definitions/{name}");
                }
            }
            m.values_mut().for_each(v2_refs);
        }
        Value::Array(a) => a.iter_mut().for_each(v2_refs),
        _ => {}
    }
}

/// The path of one object of a resource, as the documents name it.
fn item_path(r: &crate::Resource) -> String {
    let base = if r.group.is_empty() {
        format!("/api/{}", r.version)
    } else {
        format!("/apis/{}/{}", r.group, r.version)
    };
    if r.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
    } else {
        format!("{base}/{}/{{name}}", r.plural)
    }
}

/// The JSON document, for clients that ask for `application/json` (client-go's
/// `OpenAPISchema` reads protobuf; scripts and the e2e suite read this).
pub fn document_json() -> Value {
    let mut definitions = definitions();
    definitions.values_mut().for_each(v2_refs);
    let mut paths = serde_json::Map::new();
    for r in registry::all() {
        let name = item_path(r);
        let params: Vec<Value> = ["dryRun", "fieldManager", "fieldValidation", "force"]
            .iter()
            .map(|n| serde_json::json!({"name": n, "in": "query", "type": "string", "uniqueItems": true}))
            .collect();
        paths.insert(
            name,
            serde_json::json!({"patch": {
                "operationId": format!("patch{}", r.kind),
                "parameters": params,
                "responses": {"200": {"description": "OK"}},
                "x-kubernetes-group-version-kind": {"group": r.group, "kind": r.kind, "version": r.version},
            }}),
        );
    }
    serde_json::json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "definitions": definitions,
    })
}

/// The protobuf document.
pub fn document() -> Vec<u8> {
    let mut paths = Vec::new();
    let definitions = definitions();
    for r in registry::all() {
        let name = item_path(r);
        let gvk = format!(
            "group: \"{}\"\nkind: {}\nversion: {}\n",
            r.group, r.kind, r.version
        );
        paths.push(NamedPathItem {
            name,
            value: Some(PathItem {
                patch: Some(Operation {
                    operation_id: format!("patch{}", r.kind),
                    parameters: ["dryRun", "fieldManager", "fieldValidation", "force"]
                        .map(query_param)
                        .to_vec(),
                    vendor_extension: vec![NamedAny {
                        name: "x-kubernetes-group-version-kind".into(),
                        value: Some(Any { yaml: gvk }),
                    }],
                }),
            }),
        });
    }
    Document {
        swagger: "2.0".into(),
        info: Some(Info {
            title: "Kubernetes".into(),
            version: "v1.33.0".into(),
        }),
        paths: Some(Paths { path: paths }),
        definitions: Some(NamedSchemas {
            additional_properties: definitions
                .iter()
                .map(|(name, def)| NamedSchema {
                    name: name.clone(),
                    value: Some(to_v2(def)),
                })
                .collect(),
        }),
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_document_points_refs_at_definitions() {
        let doc = document_json();
        assert_eq!(doc["swagger"], "2.0");
        let spec = &doc["definitions"]["io.k8s.api.apps.v1.Deployment"]["properties"]["spec"];
        assert_eq!(
            spec["$ref"], "#/definitions/io.k8s.api.apps.v1.DeploymentSpec",
            "{spec}"
        );
    }

    #[test]
    fn the_document_decodes_with_every_patch_operation() {
        let doc = Document::decode(document().as_slice()).unwrap();
        assert_eq!(doc.swagger, "2.0");
        let paths = doc.paths.unwrap().path;
        let deploy = paths
            .iter()
            .find(|p| p.name == "/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
            .unwrap();
        let op = deploy.value.as_ref().unwrap().patch.as_ref().unwrap();
        assert!(
            op.vendor_extension[0]
                .value
                .as_ref()
                .unwrap()
                .yaml
                .contains("kind: Deployment")
        );
        let names: Vec<_> = op
            .parameters
            .iter()
            .filter_map(|p| {
                Some(
                    p.parameter
                        .as_ref()?
                        .non_body_parameter
                        .as_ref()?
                        .query_parameter_sub_schema
                        .as_ref()?
                        .name
                        .clone(),
                )
            })
            .collect();
        assert!(names.contains(&"fieldValidation".to_string()));
        let defs = doc.definitions.unwrap().additional_properties;
        let deployment = defs
            .iter()
            .find(|d| d.name == "io.k8s.api.apps.v1.Deployment")
            .and_then(|d| d.value.as_ref())
            .unwrap();
        assert!(
            deployment
                .vendor_extension
                .iter()
                .any(|e| e.name == "x-kubernetes-group-version-kind")
        );
        let spec = deployment
            .properties
            .as_ref()
            .unwrap()
            .additional_properties
            .iter()
            .find(|p| p.name == "spec")
            .unwrap();
        assert_eq!(
            spec.value.as_ref().unwrap().r#ref,
            "#/definitions/io.k8s.api.apps.v1.DeploymentSpec"
        );
    }
}
