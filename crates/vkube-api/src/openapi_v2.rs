//! `/openapi/v2`, which kubectl up to 1.27 fetches (as protobuf only, gnostic's `openapi.v2`
//! messages) before it validates `-f` input. vkube answers with the operations only: every PATCH
//! carries `fieldValidation`, so kubectl validates server-side against the v3 schemas. There are
//! no v2 definitions yet, so kubectl 1.27's `explain` still fails.

use prost::Message;

use crate::registry;

#[derive(Clone, PartialEq, Message)]
struct Document {
    #[prost(string, tag = "1")]
    swagger: String,
    #[prost(message, optional, tag = "2")]
    info: Option<Info>,
    #[prost(message, optional, tag = "8")]
    paths: Option<Paths>,
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

/// The protobuf document.
pub fn document() -> Vec<u8> {
    let mut paths = Vec::new();
    for r in registry::RESOURCES {
        let base = if r.group.is_empty() {
            format!("/api/{}", r.version)
        } else {
            format!("/apis/{}/{}", r.group, r.version)
        };
        let name = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
        } else {
            format!("{base}/{}/{{name}}", r.plural)
        };
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
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
