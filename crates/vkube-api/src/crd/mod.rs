//! CustomResourceDefinition support that needs no server: the structural schema of a version
//! (parse, prune, default, validate, as apiextensions-apiserver does), its `x-kubernetes-validations`
//! CEL rules, the JSONPath subset of printer columns, and the validation of a CRD object itself.
//! The server crate wires these into the custom resource handlers.

pub mod compile;
pub mod definition;
mod definition_schema;
pub mod jsonpath;
pub mod rules;
pub mod schema;

mod gofmt;
