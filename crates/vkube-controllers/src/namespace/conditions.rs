//! The five conditions a terminating namespace carries (upstream's status_condition_utils.go):
//! each is `True` with the failure's reason and message, or `False` with its "ok" wording, and
//! its `lastTransitionTime` moves only when its status does.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NamespaceCondition, NamespaceStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

pub(super) const DISCOVERY_FAILURE: &str = "NamespaceDeletionDiscoveryFailure";
pub(super) const PARSING_FAILURE: &str = "NamespaceDeletionGroupVersionParsingFailure";
pub(super) const CONTENT_FAILURE: &str = "NamespaceDeletionContentFailure";
pub(super) const CONTENT_REMAINING: &str = "NamespaceContentRemaining";
pub(super) const FINALIZERS_REMAINING: &str = "NamespaceFinalizersRemaining";

/// The types, in upstream's order, with the reason and message of their `False` form.
const OK: [(&str, &str, &str); 5] = [
    (
        DISCOVERY_FAILURE,
        "ResourcesDiscovered",
        "All resources successfully discovered",
    ),
    (
        PARSING_FAILURE,
        "ParsedGroupVersions",
        "All legacy kube types successfully parsed",
    ),
    (
        CONTENT_FAILURE,
        "ContentDeleted",
        "All content successfully deleted, may be waiting on finalization",
    ),
    (
        CONTENT_REMAINING,
        "ContentRemoved",
        "All content successfully removed",
    ),
    (
        FINALIZERS_REMAINING,
        "ContentHasNoFinalizers",
        "All content-preserving finalizers finished",
    ),
];

/// The failures one pass over a namespace's content found.
#[derive(Debug, Default)]
pub(super) struct Findings {
    /// `True` conditions by type: (reason, message).
    failing: BTreeMap<&'static str, (&'static str, String)>,
    content_errors: Vec<String>,
}

impl Findings {
    pub fn discovery_failed(&mut self, message: String) {
        self.failing
            .insert(DISCOVERY_FAILURE, ("DiscoveryFailed", message));
    }

    pub fn parsing_failed(&mut self, message: String) {
        self.failing
            .insert(PARSING_FAILURE, ("GroupVersionParsingFailed", message));
    }

    pub fn content_failed(&mut self, message: String) {
        self.content_errors.push(message);
    }

    /// What remains: instances by `resource.group`, and instances by finalizer.
    pub fn remaining(
        &mut self,
        by_resource: &[(String, usize)],
        by_finalizer: &BTreeMap<String, usize>,
    ) {
        let mut resources: Vec<String> = by_resource
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| format!("{r} has {n} resource instances"))
            .collect();
        if !by_resource.is_empty() {
            resources.sort();
            self.failing.insert(
                CONTENT_REMAINING,
                (
                    "SomeResourcesRemain",
                    format!("Some resources are remaining: {}", resources.join(", ")),
                ),
            );
        }
        let mut finalizers: Vec<String> = by_finalizer
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(f, n)| format!("{f} in {n} resource instances"))
            .collect();
        if !by_finalizer.is_empty() {
            finalizers.sort();
            self.failing.insert(
                FINALIZERS_REMAINING,
                (
                    "SomeFinalizersRemain",
                    format!(
                        "Some content in the namespace has finalizers remaining: {}",
                        finalizers.join(", ")
                    ),
                ),
            );
        }
    }

    /// Writes the conditions into `status`; whether anything changed.
    pub fn apply(mut self, status: &mut NamespaceStatus, now: &Time) -> bool {
        if !self.content_errors.is_empty() && !self.failing.contains_key(CONTENT_FAILURE) {
            self.content_errors.sort();
            let message = format!(
                "Failed to delete all resource types, {} remaining: {}",
                self.content_errors.len(),
                self.content_errors.join(", ")
            );
            self.failing
                .insert(CONTENT_FAILURE, ("ContentDeletionFailed", message));
        }
        let conditions = status.conditions.get_or_insert_with(Vec::new);
        let mut changed = false;
        for (kind, ok_reason, ok_message) in OK {
            let (status, reason, message) = match self.failing.remove(kind) {
                Some((reason, message)) => ("True", reason, message),
                None => ("False", ok_reason, ok_message.to_string()),
            };
            match conditions.iter_mut().find(|c| c.type_ == kind) {
                None => {
                    conditions.push(NamespaceCondition {
                        type_: kind.into(),
                        status: status.into(),
                        reason: Some(reason.into()),
                        message: Some(message),
                        last_transition_time: Some(now.clone()),
                    });
                    changed = true;
                }
                Some(old) => {
                    let same = old.status == status
                        && old.reason.as_deref() == Some(reason)
                        && old.message.as_deref() == Some(message.as_str());
                    if same {
                        continue;
                    }
                    if old.status != status {
                        old.last_transition_time = Some(now.clone());
                    }
                    old.status = status.into();
                    old.reason = Some(reason.into());
                    old.message = Some(message);
                    changed = true;
                }
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    #[test]
    fn failures_are_true_and_the_rest_false_and_transitions_keep_their_time() {
        let mut status = NamespaceStatus::default();
        let mut found = Findings::default();
        found.remaining(
            &[("pods.".into(), 1), ("widgets.example.com".into(), 2)],
            &BTreeMap::from([("example.com/x".into(), 2)]),
        );
        found.content_failed("b failed".into());
        found.content_failed("a failed".into());
        assert!(found.apply(&mut status, &time("2026-01-01T00:00:00Z")));
        let conditions = status.conditions.clone().unwrap();
        let types: Vec<&str> = conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(
            types,
            [
                DISCOVERY_FAILURE,
                PARSING_FAILURE,
                CONTENT_FAILURE,
                CONTENT_REMAINING,
                FINALIZERS_REMAINING
            ]
        );
        let find = |t: &str| {
            let c = status
                .conditions
                .as_ref()
                .unwrap()
                .iter()
                .find(|c| c.type_ == t)
                .unwrap();
            (
                c.status.clone(),
                c.reason.clone().unwrap(),
                c.message.clone().unwrap(),
            )
        };
        assert_eq!(
            find(CONTENT_REMAINING),
            (
                "True".into(),
                "SomeResourcesRemain".into(),
                "Some resources are remaining: pods. has 1 resource instances, widgets.example.com has 2 resource instances".into()
            )
        );
        assert_eq!(
            find(FINALIZERS_REMAINING).2,
            "Some content in the namespace has finalizers remaining: example.com/x in 2 resource instances"
        );
        assert_eq!(
            find(CONTENT_FAILURE).2,
            "Failed to delete all resource types, 2 remaining: a failed, b failed"
        );
        assert_eq!(
            find(DISCOVERY_FAILURE),
            (
                "False".into(),
                "ResourcesDiscovered".into(),
                "All resources successfully discovered".into()
            )
        );

        // The same findings again: nothing to write.
        let mut same = Findings::default();
        same.remaining(
            &[("pods.".into(), 1), ("widgets.example.com".into(), 2)],
            &BTreeMap::from([("example.com/x".into(), 2)]),
        );
        same.content_failed("a failed".into());
        same.content_failed("b failed".into());
        assert!(!same.apply(&mut status, &time("2026-01-01T00:01:00Z")));

        // Content gone: every condition False; only the ones that flipped get a new time.
        let mut gone = Findings::default();
        gone.remaining(&[], &BTreeMap::new());
        assert!(gone.apply(&mut status, &time("2026-01-01T00:02:00Z")));
        let c = status.conditions.as_ref().unwrap();
        assert!(c.iter().all(|c| c.status == "False"));
        let at = |t: &str| {
            c.iter()
                .find(|c| c.type_ == t)
                .unwrap()
                .last_transition_time
                .clone()
                .unwrap()
        };
        assert_eq!(at(CONTENT_REMAINING), time("2026-01-01T00:02:00Z"));
        assert_eq!(at(DISCOVERY_FAILURE), time("2026-01-01T00:00:00Z"));
    }
}
