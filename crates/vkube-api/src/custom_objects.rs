//! What a write of a custom resource goes through, in the order of upstream's custom resource
//! handler: unknown fields pruned (and reported as `fieldValidation` asks), defaults applied, then
//! the structural schema and the `x-kubernetes-validations` rules checked. A version's schema and
//! rules are compiled once per definition and shared by every request.

use std::sync::Arc;

use serde_json::Value;

use crate::crd::rules::Rules;
use crate::crd::schema::{self, Schema};
use crate::registry::custom::Definition;
use crate::status::Status;
use crate::validation::Errors;

/// A version's schema and rules, compiled.
pub struct Compiled {
    schema: Option<Schema>,
    rules: Option<Rules>,
    /// Why the schema or a rule did not compile: every write is refused with it.
    broken: Option<String>,
}

/// A definition's compiled schema and rules, made on first use and kept with the definition
/// (a changed CRD is a new definition, so nothing stale is ever found).
fn compiled(d: &Definition) -> &Compiled {
    d.compiled.get_or_init(|| compile(d))
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled")
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

fn compile(d: &Definition) -> Compiled {
    let Some(raw) = d.schema() else {
        return Compiled {
            schema: None,
            rules: None,
            broken: None,
        };
    };
    let schema = match Schema::parse(raw) {
        Ok(s) => s,
        Err(why) => {
            return Compiled {
                schema: None,
                rules: None,
                broken: Some(why),
            };
        }
    };
    let (rules, broken) = match Rules::compile(&schema) {
        Ok(r) => (Some(r), None),
        Err(why) => (None, Some(why.join("; "))),
    };
    Compiled {
        schema: Some(schema),
        rules,
        broken,
    }
}

/// Drops the fields the schema does not declare; returns their paths (`spec.colour`).
pub fn prune(d: &Arc<Definition>, obj: &mut Value) -> Vec<String> {
    let c = compiled(d);
    let mut unknown = Vec::new();
    if let Some(meta) = obj.get_mut("metadata") {
        unknown.extend(crate::schema::prune_metadata(meta, "metadata"));
    }
    if let Some(s) = &c.schema {
        unknown.extend(schema::prune(s, obj));
    }
    unknown
}

/// Applies the schema's defaults.
pub fn default(d: &Arc<Definition>, obj: &mut Value) {
    if let Some(s) = &compiled(d).schema {
        schema::apply_defaults(s, obj);
    }
}

/// A stored object as a request for `resource` reads it: in the addressed version, and for a
/// custom resource with its schema's defaults applied (upstream defaults on read as well as on
/// write, so a default added to a CRD shows on objects stored before it).
pub fn served(resource: &crate::Resource, obj: Value) -> Result<Value, Status> {
    let mut obj = crate::convert::convert(obj, &resource.api_version())?;
    if let Some(d) = crate::registry::custom::definition(resource) {
        default(&d, &mut obj);
    }
    Ok(obj)
}

/// The schema and rule checks: 422 with one cause per problem, as upstream.
pub fn validate(d: &Arc<Definition>, obj: &Value, old: Option<&Value>) -> Result<(), Status> {
    let c = compiled(d);
    let r = d.resource;
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    if let Some(why) = &c.broken {
        return Err(Status::internal(format!(
            "the schema of {}/{} {} does not compile: {why}",
            r.group, r.version, r.kind
        )));
    }
    let mut errs = Errors::default();
    crate::validation::metadata(&obj["metadata"], "metadata", &mut errs);
    if let Some(s) = &c.schema {
        schema::validate(s, obj, &mut errs);
    }
    if let Some(rules) = &c.rules {
        rules.validate(obj, old, &mut errs);
    }
    errs.into_result(r.kind, r.group, name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_apply_on_read_too() {
        crate::registry::custom::install(&json!({
            "metadata": {"name": "knobs.read.example.com"},
            "spec": {"group": "read.example.com", "scope": "Cluster",
                     "names": {"plural": "knobs", "kind": "Knob"},
                     "versions": [{"name": "v1", "served": true, "storage": true,
                        "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                            "spec": {"type": "object", "properties": {"level": {"type": "integer", "default": 5}}}}}}}]},
            "status": {"conditions": [{"type": "Established", "status": "True"}]},
        }));
        let knobs = crate::registry::find("read.example.com", "v1", "knobs").unwrap();
        let stored = json!({"apiVersion": "read.example.com/v1", "kind": "Knob", "metadata": {"name": "k"}, "spec": {}});
        let read = served(knobs, stored).unwrap();
        assert_eq!(read["spec"]["level"], 5);
    }
}
