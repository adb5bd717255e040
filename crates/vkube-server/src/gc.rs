//! Garbage collection's part in the API server, as upstream's registry: a DELETE's
//! `propagationPolicy` (or legacy `orphanDependents`) becomes an `orphan` or
//! `foregroundDeletion` finalizer on the object ([`Policy`], [`deletion_finalizers`]). The
//! collector that acts on them (removes the orphans' references, deletes the dependents, then
//! the finalizer) is kube-controller-manager's `garbagecollector` in vkube-controllers, a
//! client of the API.

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;
use vkube_api::{Status, object};

/// Deletes after the dependents' ownerReferences to the owner are removed.
pub(crate) const ORPHAN: &str = "orphan";
/// Deletes after the dependents that block the owner's deletion are deleted.
pub(crate) const FOREGROUND: &str = "foregroundDeletion";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Propagation {
    Orphan,
    Background,
    Foreground,
}

/// The garbage-collection part of DeleteOptions: `propagationPolicy` and the legacy
/// `orphanDependents`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Policy {
    orphan_dependents: Option<bool>,
    propagation: Option<Propagation>,
}

impl Policy {
    #[cfg(test)]
    pub(crate) fn explicit(p: Propagation) -> Policy {
        Policy {
            orphan_dependents: None,
            propagation: Some(p),
        }
    }

    /// From the DeleteOptions body (or, without one, the query), refused as upstream's
    /// ValidateDeleteOptions refuses them.
    pub(crate) fn parse(opts: &Value, query: &HashMap<String, String>) -> Result<Policy, Status> {
        let field = |name: &str| -> Option<String> {
            match &opts[name] {
                Value::String(s) => Some(s.clone()),
                Value::Bool(b) => Some(b.to_string()),
                _ => query.get(name).cloned(),
            }
        };
        let orphan_dependents = field("orphanDependents").map(|v| v == "true");
        let invalid = |message: String| {
            Status::invalid(
                "DeleteOptions",
                "meta.k8s.io",
                "",
                vec![object::cause(
                    "FieldValueInvalid",
                    "propagationPolicy",
                    message,
                )],
            )
        };
        let propagation = match field("propagationPolicy").as_deref() {
            None => None,
            Some("Orphan") => Some(Propagation::Orphan),
            Some("Background") => Some(Propagation::Background),
            Some("Foreground") => Some(Propagation::Foreground),
            Some(other) => {
                return Err(invalid(format!(
                    "Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
                )));
            }
        };
        if orphan_dependents.is_some() && propagation.is_some() {
            let p = field("propagationPolicy").unwrap_or_default();
            return Err(invalid(format!(
                "Invalid value: \"{p}\": orphanDependents and deletionPropagation cannot be both set"
            )));
        }
        Ok(Policy {
            orphan_dependents,
            propagation,
        })
    }

    /// Upstream's shouldOrphanDependents: the options, then the object's finalizers. (Every
    /// served kind defaults to deleting dependents; the kinds whose default is to orphan are
    /// the legacy extensions/v1beta1 and apps/v1beta1-2 versions, which vkube does not serve.)
    fn orphans(&self, finalizers: &[String]) -> bool {
        if let Some(o) = self.orphan_dependents {
            return o;
        }
        if let Some(p) = self.propagation {
            return p == Propagation::Orphan;
        }
        finalizers
            .iter()
            .find(|f| *f == ORPHAN || *f == FOREGROUND)
            .is_some_and(|f| f == ORPHAN)
    }

    /// Upstream's shouldDeleteDependents.
    fn foreground(&self, finalizers: &[String]) -> bool {
        if self.orphan_dependents.is_some() {
            return false;
        }
        if let Some(p) = self.propagation {
            return p == Propagation::Foreground;
        }
        finalizers
            .iter()
            .find(|f| *f == ORPHAN || *f == FOREGROUND)
            .is_some_and(|f| f == FOREGROUND)
    }
}

fn finalizers_of(obj: &Value) -> Vec<String> {
    obj["metadata"]["finalizers"]
        .as_array()
        .map(|f| {
            f.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The finalizers a delete with `policy` leaves on `obj`, when they differ from its current
/// ones (upstream's deletionFinalizersForGarbageCollection).
pub(crate) fn deletion_finalizers(obj: &Value, policy: &Policy) -> Option<Vec<String>> {
    let current = finalizers_of(obj);
    let mut new: Vec<String> = current
        .iter()
        .filter(|f| *f != ORPHAN && *f != FOREGROUND)
        .cloned()
        .collect();
    if policy.orphans(&current) {
        new.push(ORPHAN.into());
    }
    if policy.foreground(&current) {
        new.push(FOREGROUND.into());
    }
    let set = |v: &[String]| v.iter().cloned().collect::<BTreeSet<_>>();
    (set(&current) != set(&new)).then_some(new)
}

#[cfg(test)]
#[path = "gc_tests.rs"]
mod tests;
