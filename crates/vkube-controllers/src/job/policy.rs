//! What a finished pod means for its Job: upstream's pod failure policy, success policy, a pod's
//! finish time and the exponential delay before failed pods are replaced.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::{PodFailurePolicy, SuccessPolicy};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

use super::indexes::Intervals;

/// Upstream's `DefaultJobPodFailureBackOff` and `MaxJobPodFailureBackOff`.
pub(crate) const POD_BACKOFF: Duration = Duration::from_secs(10);
pub(crate) const POD_BACKOFF_MAX: Duration = Duration::from_secs(600);

/// A pod failure policy's verdict on a failed pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// Set when a `FailJob` rule matched: the Job's failure message.
    pub fail_job: Option<String>,
    /// Counted towards `backoffLimit` (false when an `Ignore` rule matched).
    pub count: bool,
    /// The matched rule's action.
    pub action: Option<String>,
}

/// Upstream's `matchPodFailurePolicy`: the first rule that matches decides.
pub(crate) fn match_policy(policy: Option<&PodFailurePolicy>, pod: &Pod) -> Verdict {
    let none = Verdict {
        fail_job: None,
        count: true,
        action: None,
    };
    let Some(policy) = policy else {
        return none;
    };
    let status = pod.status.clone().unwrap_or_default();
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    for (index, rule) in policy.rules.iter().enumerate() {
        let matched = if let Some(req) = &rule.on_exit_codes {
            let find = |list: &Option<Vec<ContainerStatus>>| {
                list.iter().flatten().find_map(|c| {
                    let code = c.state.as_ref()?.terminated.as_ref()?.exit_code;
                    let name_ok = req.container_name.as_ref().is_none_or(|n| *n == c.name);
                    let op_ok = match req.operator.as_str() {
                        "In" => req.values.contains(&code),
                        "NotIn" => !req.values.contains(&code),
                        _ => false,
                    };
                    (name_ok && code != 0 && op_ok).then(|| (c.name.clone(), code))
                })
            };
            find(&status.container_statuses)
                .or_else(|| find(&status.init_container_statuses))
                .map(|(container, code)| {
                    format!(
                        "Container {container} for pod {ns}/{name} failed with exit code {code} matching {} rule at index {index}",
                        rule.action
                    )
                })
        } else if let Some(patterns) = &rule.on_pod_conditions {
            status.conditions.iter().flatten().find_map(|c| {
                patterns
                    .iter()
                    .any(|p| p.type_ == c.type_ && p.status == c.status)
                    .then(|| {
                        format!(
                            "Pod {ns}/{name} has condition {} matching {} rule at index {index}",
                            c.type_, rule.action
                        )
                    })
            })
        } else {
            None
        };
        let Some(message) = matched else { continue };
        let action = Some(rule.action.clone());
        match rule.action.as_str() {
            "Ignore" => {
                return Verdict {
                    fail_job: None,
                    count: false,
                    action,
                };
            }
            "Count" | "FailIndex" => {
                return Verdict {
                    fail_job: None,
                    count: true,
                    action,
                };
            }
            "FailJob" => {
                return Verdict {
                    fail_job: Some(message),
                    count: true,
                    action,
                };
            }
            _ => {}
        }
    }
    none
}

/// Upstream's `matchSuccessPolicy`: the message of the first rule the succeeded indexes meet.
pub(crate) fn match_success_policy(
    policy: Option<&SuccessPolicy>,
    completions: i32,
    succeeded: &Intervals,
) -> Option<String> {
    let policy = policy?;
    for (index, rule) in policy.rules.iter().enumerate() {
        let met = match (&rule.succeeded_indexes, rule.succeeded_count) {
            (Some(indexes), count) => {
                let wanted = Intervals::parse(indexes, completions);
                let have: i32 = wanted
                    .iter()
                    .flat_map(|(a, b)| a..=b)
                    .filter(|ix| succeeded.has(*ix))
                    .count() as i32;
                match count {
                    Some(c) => have >= c,
                    None => have == wanted.total(),
                }
            }
            (None, Some(count)) => succeeded.total() >= count,
            (None, None) => false,
        };
        if met {
            return Some(format!("Matched rules at index {index}"));
        }
    }
    None
}

/// When a pod finished (upstream's `getFinishedTime`): its containers' last finish, else when
/// it stopped being ready, else its deletion less the grace period, else its creation.
pub(crate) fn finished_time(pod: &Pod) -> Timestamp {
    let status = pod.status.clone().unwrap_or_default();
    let containers = status.container_statuses.clone().unwrap_or_default();
    if !containers.is_empty() {
        let times: Option<Vec<Timestamp>> = containers
            .iter()
            .map(|c| {
                c.state
                    .as_ref()?
                    .terminated
                    .as_ref()?
                    .finished_at
                    .as_ref()
                    .map(|t| t.0)
            })
            .collect();
        if let Some(latest) = times.and_then(|t| t.into_iter().max()) {
            return latest;
        }
    }
    let not_ready = status.conditions.iter().flatten().find_map(|c| {
        (c.type_ == "Ready" && c.status == "False")
            .then(|| c.last_transition_time.as_ref().map(|t| t.0))
            .flatten()
    });
    if let Some(t) = not_ready {
        return t;
    }
    if let Some(deleted) = &pod.metadata.deletion_timestamp {
        let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(0);
        return deleted
            .0
            .checked_sub(SignedDuration::from_secs(grace))
            .unwrap_or(deleted.0);
    }
    pod.metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Failures since the last success, per Job (upstream keeps it in memory too).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Record {
    pub failures: u32,
    pub last_failure: Option<Timestamp>,
}

#[derive(Debug, Default)]
pub(crate) struct Backoffs(Mutex<HashMap<String, Record>>);

impl Backoffs {
    pub(crate) fn remove(&self, key: &str) {
        self.0.lock().expect("backoff lock").remove(key);
    }

    pub(crate) fn store(&self, key: &str, record: Record) {
        self.0
            .lock()
            .expect("backoff lock")
            .insert(key.to_string(), record);
    }

    /// The record once the newly finished pods are seen (upstream's `newBackoffRecord`).
    pub(crate) fn next(&self, key: &str, succeeded: &[&Pod], failed: &[&Pod]) -> Record {
        let mut record = self
            .0
            .lock()
            .expect("backoff lock")
            .get(key)
            .cloned()
            .unwrap_or_default();
        let mut failed_at: Vec<Timestamp> = failed.iter().map(|p| finished_time(p)).collect();
        failed_at.sort();
        let last_success = succeeded.iter().map(|p| finished_time(p)).max();
        match last_success {
            None if failed_at.is_empty() => {}
            None => {
                record.failures += failed_at.len() as u32;
                record.last_failure = failed_at.last().copied();
            }
            Some(success) => {
                record.failures = 0;
                record.last_failure = None;
                for t in failed_at.iter().rev().take_while(|t| **t > success) {
                    record.last_failure.get_or_insert(*t);
                    record.failures += 1;
                }
            }
        }
        record
    }
}

/// How long after `last_failure` a replacement may be created: 10 s doubling per failure,
/// capped (upstream's `getRemainingTimeForFailuresCount`).
pub(crate) fn remaining(
    failures: u32,
    last_failure: Option<Timestamp>,
    now: Timestamp,
) -> Duration {
    let Some(last) = last_failure.filter(|_| failures > 0) else {
        return Duration::ZERO;
    };
    let mut delay = POD_BACKOFF;
    for _ in 1..failures {
        delay *= 2;
        if delay >= POD_BACKOFF_MAX {
            delay = POD_BACKOFF_MAX;
            break;
        }
    }
    let elapsed = now.duration_since(last);
    let elapsed = Duration::try_from(elapsed).unwrap_or(Duration::ZERO);
    delay.saturating_sub(elapsed)
}
