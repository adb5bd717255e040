//! OpenAPI schemas of the built-in kinds, from k8s-openapi's schemars definitions (named as
//! upstream names them, `io.k8s.api.core.v1.Pod`). They feed `/openapi/v3` (so `kubectl explain`
//! works) and field validation: `fieldValidation=Strict` rejects unknown fields, `Warn` reports
//! them, and both `Warn` and `Ignore` drop them, as decoding into upstream's Go types does.

use std::collections::HashMap;
use std::sync::OnceLock;

use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use crate::registry::RESOURCES;

type Definitions = Map<String, Value>;

/// Every served kind's definitions, one generator run for all (shared definitions once).
struct Schemas {
    definitions: Definitions,
    /// (group, version, kind) → definition name.
    kinds: HashMap<(&'static str, &'static str, &'static str), String>,
}

macro_rules! kinds {
    ($gen:ident, $kinds:ident; $( $group:literal $version:literal $kind:literal => $ty:ty ),* $(,)?) => {
        $(
            $gen.subschema_for::<$ty>();
            $kinds.insert(($group, $version, $kind), <$ty as schemars::JsonSchema>::schema_name().into_owned());
        )*
    };
}

fn build() -> Schemas {
    use k8s_openapi::api::*;
    let mut generator = SchemaSettings::openapi3().into_generator();
    let mut kinds = HashMap::new();
    kinds!(generator, kinds;
        "" "v1" "Binding" => core::v1::Binding,
        "" "v1" "ComponentStatus" => core::v1::ComponentStatus,
        "" "v1" "ConfigMap" => core::v1::ConfigMap,
        "" "v1" "Endpoints" => core::v1::Endpoints,
        "" "v1" "Event" => core::v1::Event,
        "" "v1" "LimitRange" => core::v1::LimitRange,
        "" "v1" "Namespace" => core::v1::Namespace,
        "" "v1" "Node" => core::v1::Node,
        "" "v1" "PersistentVolumeClaim" => core::v1::PersistentVolumeClaim,
        "" "v1" "PersistentVolume" => core::v1::PersistentVolume,
        "" "v1" "Pod" => core::v1::Pod,
        "" "v1" "PodTemplate" => core::v1::PodTemplate,
        "" "v1" "ReplicationController" => core::v1::ReplicationController,
        "" "v1" "ResourceQuota" => core::v1::ResourceQuota,
        "" "v1" "Secret" => core::v1::Secret,
        "" "v1" "ServiceAccount" => core::v1::ServiceAccount,
        "" "v1" "Service" => core::v1::Service,
        "admissionregistration.k8s.io" "v1" "MutatingWebhookConfiguration" => admissionregistration::v1::MutatingWebhookConfiguration,
        "admissionregistration.k8s.io" "v1" "ValidatingAdmissionPolicy" => admissionregistration::v1::ValidatingAdmissionPolicy,
        "admissionregistration.k8s.io" "v1" "ValidatingAdmissionPolicyBinding" => admissionregistration::v1::ValidatingAdmissionPolicyBinding,
        "admissionregistration.k8s.io" "v1" "ValidatingWebhookConfiguration" => admissionregistration::v1::ValidatingWebhookConfiguration,
        "apiregistration.k8s.io" "v1" "APIService" => k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService,
        "apiextensions.k8s.io" "v1" "CustomResourceDefinition" => k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
        "apps" "v1" "ControllerRevision" => apps::v1::ControllerRevision,
        "apps" "v1" "DaemonSet" => apps::v1::DaemonSet,
        "apps" "v1" "Deployment" => apps::v1::Deployment,
        "apps" "v1" "ReplicaSet" => apps::v1::ReplicaSet,
        "apps" "v1" "StatefulSet" => apps::v1::StatefulSet,
        "authentication.k8s.io" "v1" "SelfSubjectReview" => authentication::v1::SelfSubjectReview,
        "authentication.k8s.io" "v1" "TokenReview" => authentication::v1::TokenReview,
        "authentication.k8s.io" "v1" "TokenRequest" => authentication::v1::TokenRequest,
        "authorization.k8s.io" "v1" "LocalSubjectAccessReview" => authorization::v1::LocalSubjectAccessReview,
        "authorization.k8s.io" "v1" "SelfSubjectAccessReview" => authorization::v1::SelfSubjectAccessReview,
        "authorization.k8s.io" "v1" "SelfSubjectRulesReview" => authorization::v1::SelfSubjectRulesReview,
        "authorization.k8s.io" "v1" "SubjectAccessReview" => authorization::v1::SubjectAccessReview,
        "autoscaling" "v2" "HorizontalPodAutoscaler" => autoscaling::v2::HorizontalPodAutoscaler,
        "autoscaling" "v1" "HorizontalPodAutoscaler" => autoscaling::v1::HorizontalPodAutoscaler,
        "batch" "v1" "CronJob" => batch::v1::CronJob,
        "batch" "v1" "Job" => batch::v1::Job,
        "certificates.k8s.io" "v1" "CertificateSigningRequest" => certificates::v1::CertificateSigningRequest,
        "coordination.k8s.io" "v1" "Lease" => coordination::v1::Lease,
        "discovery.k8s.io" "v1" "EndpointSlice" => discovery::v1::EndpointSlice,
        "events.k8s.io" "v1" "Event" => events::v1::Event,
        "flowcontrol.apiserver.k8s.io" "v1" "FlowSchema" => flowcontrol::v1::FlowSchema,
        "flowcontrol.apiserver.k8s.io" "v1" "PriorityLevelConfiguration" => flowcontrol::v1::PriorityLevelConfiguration,
        "networking.k8s.io" "v1" "IngressClass" => networking::v1::IngressClass,
        "networking.k8s.io" "v1" "Ingress" => networking::v1::Ingress,
        "networking.k8s.io" "v1" "IPAddress" => networking::v1::IPAddress,
        "networking.k8s.io" "v1" "NetworkPolicy" => networking::v1::NetworkPolicy,
        "networking.k8s.io" "v1" "ServiceCIDR" => networking::v1::ServiceCIDR,
        "node.k8s.io" "v1" "RuntimeClass" => node::v1::RuntimeClass,
        "policy" "v1" "PodDisruptionBudget" => policy::v1::PodDisruptionBudget,
        "rbac.authorization.k8s.io" "v1" "ClusterRoleBinding" => rbac::v1::ClusterRoleBinding,
        "rbac.authorization.k8s.io" "v1" "ClusterRole" => rbac::v1::ClusterRole,
        "rbac.authorization.k8s.io" "v1" "RoleBinding" => rbac::v1::RoleBinding,
        "rbac.authorization.k8s.io" "v1" "Role" => rbac::v1::Role,
        "scheduling.k8s.io" "v1" "PriorityClass" => scheduling::v1::PriorityClass,
        "storage.k8s.io" "v1" "CSIDriver" => storage::v1::CSIDriver,
        "storage.k8s.io" "v1" "CSINode" => storage::v1::CSINode,
        "storage.k8s.io" "v1" "CSIStorageCapacity" => storage::v1::CSIStorageCapacity,
        "storage.k8s.io" "v1" "StorageClass" => storage::v1::StorageClass,
        "storage.k8s.io" "v1" "VolumeAttachment" => storage::v1::VolumeAttachment,
    );
    // The custom kinds' lists reference ListMeta, which no built-in kind's schema does.
    generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta>();
    let mut definitions: Definitions = generator.take_definitions(true).into_iter().collect();
    // kubectl finds a kind's schema by this extension.
    for ((group, version, kind), name) in &kinds {
        if let Some(def) = definitions.get_mut(name).and_then(Value::as_object_mut) {
            def.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{"group": group, "version": version, "kind": kind}]),
            );
        }
    }
    // apiextensions' `JSON` (a CRD schema's `default`, `example`, `enum` values) is any JSON
    // value; schemars calls it an object.
    if let Some(json) = definitions
        .get_mut("io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSON")
        .and_then(Value::as_object_mut)
    {
        json.remove("type");
    }
    Schemas { definitions, kinds }
}

/// Upstream's `x-kubernetes-patch-strategy` / `x-kubernetes-patch-merge-key` on the properties
/// that have them (in the `/openapi` documents only: the validation schemas do not need them),
/// from the same Go struct tags strategic merge patch uses (definitions are named
/// `io.k8s.api.core.v1.PodSpec`, wire messages `k8s.io.api.core.v1.PodSpec`).
fn patch_extensions(definitions: &mut Definitions) {
    for (name, def) in definitions.iter_mut() {
        let Some(rest) = name.strip_prefix("io.k8s.") else {
            continue;
        };
        let message = format!("k8s.io.{rest}");
        let Some(props) = def.get_mut("properties").and_then(Value::as_object_mut) else {
            continue;
        };
        for (prop, schema) in props.iter_mut() {
            let Some(field) = crate::protobuf::patch_field(&message, prop) else {
                continue;
            };
            if field.strategy.is_empty() {
                continue;
            }
            let Some(obj) = schema.as_object_mut() else {
                continue;
            };
            obj.insert("x-kubernetes-patch-strategy".into(), json!(field.strategy));
            if !field.merge_key.is_empty() {
                obj.insert(
                    "x-kubernetes-patch-merge-key".into(),
                    json!(field.merge_key),
                );
            }
        }
    }
}

/// Builds the validation schemas now (milliseconds) instead of on the first write.
pub fn warm() {
    schemas();
}

/// The schemas field validation walks, kept for the life of the process without their
/// descriptions (most of their size: about 5 MiB of RSS). `/openapi` documents, which need the
/// descriptions and are rarely asked for (kubectl caches them), are built afresh.
fn schemas() -> &'static Schemas {
    static SCHEMAS: OnceLock<Schemas> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        let mut s = build();
        s.definitions.values_mut().for_each(strip_descriptions);
        s
    })
}

fn strip_descriptions(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.remove("description");
            for (key, child) in m.iter_mut() {
                if key == "properties" {
                    // A map of field names: a field may be called `description`.
                    if let Some(fields) = child.as_object_mut() {
                        fields.values_mut().for_each(strip_descriptions);
                    }
                } else {
                    strip_descriptions(child);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(strip_descriptions),
        _ => {}
    }
}

/// Every definition name reachable from `name`, for a per-group-version document.
fn closure(name: &str, defs: &Definitions, into: &mut Definitions) {
    if into.contains_key(name) {
        return;
    }
    let Some(def) = defs.get(name) else { return };
    into.insert(name.to_string(), def.clone());
    let mut refs = Vec::new();
    collect_refs(def, &mut refs);
    for r in refs {
        closure(&r, defs, into);
    }
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                if let Some(name) = r.strip_prefix("#/components/schemas/") {
                    out.push(name.to_string());
                }
            }
            m.values().for_each(|v| collect_refs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// The definitions a group-version's document carries: its kinds and what they reference.
pub fn group_version(group: &str, version: &str) -> Definitions {
    let s = &build();
    let mut out = Map::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        if let Some(name) = s.kinds.get(&(r.group, r.version, r.kind)) {
            closure(name, &s.definitions, &mut out);
        }
    }
    patch_extensions(&mut out);
    out
}

/// The named definitions and what they reference (ObjectMeta for the custom kinds' documents).
pub fn definitions_for(names: &[&str]) -> Definitions {
    let s = &build();
    let mut out = Map::new();
    for name in names {
        closure(name, &s.definitions, &mut out);
    }
    out
}

/// Every definition of every served kind, with descriptions: the `/openapi/v2` document.
pub fn all_definitions() -> Definitions {
    let mut definitions = build().definitions;
    patch_extensions(&mut definitions);
    definitions
}

/// The schema a `$ref` (possibly under `allOf`, as schemars wraps a ref that carries a
/// description) points to, and the Go type name of the definition it came from.
fn resolve<'a>(mut schema: &'a Value, defs: &'a Definitions) -> (&'a Value, Option<&'a str>) {
    let mut name = None;
    for _ in 0..8 {
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            match r
                .strip_prefix("#/components/schemas/")
                .and_then(|n| defs.get_key_value(n))
            {
                Some((n, def)) => {
                    name = n.rsplit('.').next();
                    schema = def;
                }
                None => return (schema, name),
            }
        } else if let Some(first) = schema.get("allOf").and_then(|a| a.get(0)) {
            schema = first;
        } else {
            break;
        }
    }
    (schema, name)
}

/// What upstream's decoder says of a value of the wrong JSON type, e.g.
/// `json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32`.
fn type_error(schema: &Value, value: &Value, owner: &str, path: &str) -> Option<String> {
    let want = schema.get("type").and_then(Value::as_str)?;
    let fits = match (want, value) {
        (_, Value::Null) => true,
        ("string", Value::String(_))
        | ("boolean", Value::Bool(_))
        | ("object", Value::Object(_)) => true,
        ("array", Value::Array(_)) => true,
        ("integer", Value::Number(n)) => n.is_i64() || n.is_u64(),
        ("number", Value::Number(_)) => true,
        _ => false,
    };
    if fits {
        return None;
    }
    let got = match value {
        Value::String(_) => "string".to_string(),
        Value::Bool(_) => "bool".to_string(),
        Value::Number(n) => format!("number {n}"),
        Value::Array(_) => "array".to_string(),
        Value::Object(_) => "object".to_string(),
        Value::Null => "null".to_string(),
    };
    let go_type = match (want, schema.get("format").and_then(Value::as_str)) {
        ("integer", Some(f @ ("int32" | "int64"))) => f,
        ("integer", _) => "int",
        ("number", _) => "float64",
        ("boolean", _) => "bool",
        ("string", _) => "string",
        ("array", _) => "slice",
        _ => "map",
    };
    Some(format!(
        "json: cannot unmarshal {got} into Go struct field {owner}.{path} of type {go_type}"
    ))
}

/// What a body holds that its kind's schema does not allow.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Problems {
    /// Paths of fields the schema does not know (`spec.template.spec.containers[0].foo`); they
    /// have been removed from the object.
    pub unknown: Vec<String>,
    /// Decoder errors for values of the wrong JSON type, in upstream's words.
    pub wrong_types: Vec<String>,
}

/// Checks `obj` against its kind's schema, removing unknown fields. `None` when vkube has no
/// schema for the kind.
pub fn check(group: &str, version: &str, kind: &str, obj: &mut Value) -> Option<Problems> {
    let s = schemas();
    let name = s.kinds.get(&(group, version, kind))?;
    let mut found = Findings {
        unknown: Vec::new(),
        wrong_types: Vec::new(),
    };
    prune(
        &s.definitions[name],
        &s.definitions,
        obj,
        "",
        kind,
        &mut found,
    );
    Some(Problems {
        unknown: found.unknown,
        wrong_types: found.wrong_types,
    })
}

/// Drops the fields ObjectMeta does not have from a custom object's `metadata` (at `path`), as
/// upstream's decoding into ObjectMeta does; returns their paths.
pub fn prune_metadata(meta: &mut Value, path: &str) -> Vec<String> {
    let s = schemas();
    let Some(def) = s
        .definitions
        .get("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
    else {
        return Vec::new();
    };
    let mut found = Findings {
        unknown: Vec::new(),
        wrong_types: Vec::new(),
    };
    prune(def, &s.definitions, meta, path, "ObjectMeta", &mut found);
    found.unknown
}

/// Where a walk reports: unknown fields (dropped) and values of the wrong type.
struct Findings {
    unknown: Vec<String>,
    wrong_types: Vec<String>,
}

fn prune(
    schema: &Value,
    defs: &Definitions,
    value: &mut Value,
    path: &str,
    owner: &str,
    found: &mut Findings,
) {
    let (schema, name) = resolve(schema, defs);
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true)) {
        return;
    }
    if let Some(err) = type_error(schema, value, owner, path) {
        found.wrong_types.push(err);
        return;
    }
    // Fields are named after the innermost Go struct that holds them.
    let owner = name.unwrap_or(owner);
    match value {
        Value::Object(map) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                let keys: Vec<String> = map.keys().cloned().collect();
                for key in keys {
                    let child = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    match props.get(&key) {
                        Some(sub) => {
                            if let Some(v) = map.get_mut(&key) {
                                prune(sub, defs, v, &child, owner, found);
                            }
                        }
                        None => {
                            map.remove(&key);
                            found.unknown.push(child);
                        }
                    }
                }
            } else if let Some(sub) = schema.get("additionalProperties").filter(|s| s.is_object()) {
                for (key, v) in map.iter_mut() {
                    prune(sub, defs, v, &format!("{path}.{key}"), owner, found);
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for (i, v) in items.iter_mut().enumerate() {
                    prune(sub, defs, v, &format!("{path}[{i}]"), owner, found);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_of_the_wrong_type_are_decoder_errors() {
        let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"replicas": "three", "paused": "no", "template": {"spec": {"containers": {"name": "c"}}}}});
        let problems = check("apps", "v1", "Deployment", &mut d).unwrap();
        assert_eq!(
            problems.wrong_types,
            [
                "json: cannot unmarshal string into Go struct field DeploymentSpec.spec.paused of type bool",
                "json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32",
                "json: cannot unmarshal object into Go struct field PodSpec.spec.template.spec.containers of type slice",
            ]
        );
        let mut ok = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
            "spec": {"ports": [{"port": 80, "targetPort": "http"}]}});
        assert_eq!(
            check("", "v1", "Service", &mut ok).unwrap(),
            Problems::default()
        );
    }

    #[test]
    fn unknown_fields_are_found_and_dropped() {
        let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "labels": {"a": "b"}, "bogus": 1},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "i", "imagePullPolicy": "Always", "typo": true}]}}, "extra": {}}});
        let unknown = check("apps", "v1", "Deployment", &mut d).unwrap().unknown;
        assert_eq!(
            unknown,
            [
                "metadata.bogus",
                "spec.extra",
                "spec.template.spec.containers[0].typo"
            ]
        );
        assert!(
            d["spec"]["template"]["spec"]["containers"][0]
                .get("typo")
                .is_none()
        );
        assert_eq!(d["metadata"]["labels"]["a"], "b");
    }

    #[test]
    fn documents_carry_kinds_with_their_gvk() {
        let defs = group_version("apps", "v1");
        let deploy = &defs["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            deploy["x-kubernetes-group-version-kind"][0]["kind"],
            "Deployment"
        );
        assert!(defs.contains_key("io.k8s.api.core.v1.PodSpec"));
        assert!(check("example.com", "v1", "Widget", &mut json!({})).is_none());
        let containers = &defs["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        let volumes = &defs["io.k8s.api.core.v1.PodSpec"]["properties"]["volumes"];
        assert_eq!(volumes["x-kubernetes-patch-strategy"], "merge,retainKeys");
    }
}
