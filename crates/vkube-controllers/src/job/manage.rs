//! Upstream's `manageJob`: the pods a Job should have, created from its template (with the
//! completion index for Indexed Jobs) or deleted when there are too many or it is suspended.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use kube::api::{Api, PostParams};

use super::{
    FAILURE_COUNT, IGNORED_FAILURE_COUNT, INDEX_ANNOTATION, INDEX_LABEL, Sync, TRACKING_FINALIZER,
    annotation_count, completion_index, delete_active, indexes, phase, policy, suspended,
};
use crate::Error;
use crate::pods::{controller_ref, from_template, is_ready};

/// Upstream's `manageJob`: deletes surplus pods or creates missing ones, after the failure
/// backoff. Returns the active count, when to sync again, and the first error.
pub(super) async fn manage(
    s: &mut Sync<'_>,
    active_pods: &[Pod],
) -> (i32, Option<Duration>, Option<Error>) {
    let mut active = active_pods.len() as i32;
    if suspended(&s.spec) {
        let (ready, removed, err) = delete_active(s, active_pods, true).await;
        s.terminating += removed;
        s.ready -= ready;
        return (active - removed, None, err);
    }
    let parallelism = s.spec.parallelism.unwrap_or(1);
    let want = match s.spec.completions {
        None if s.succeeded > 0 => active,
        None => parallelism,
        Some(c) => (c - s.succeeded).min(parallelism).max(0),
    };
    let surplus = (active - want).max(0) as usize;
    let victims = pods_for_removal(s, active_pods, surplus);
    if !victims.is_empty() {
        let (ready, removed, err) = delete_active(s, &victims, true).await;
        s.terminating += removed;
        s.ready -= ready;
        return (active - removed, None, err);
    }
    let terminating = if s.only_replace_failed() {
        s.terminating
    } else {
        0
    };
    let diff = want - terminating - active;
    if diff <= 0 {
        return (active, None, None);
    }
    if !s.per_index() {
        let wait = policy::remaining(s.record.failures, s.record.last_failure, s.now);
        if !wait.is_zero() {
            return (active, Some(wait), None);
        }
    }
    let mut indexes: Vec<Option<i32>> = vec![None; diff as usize];
    if s.indexed() {
        let mut taken = s
            .succeeded_indexes
            .with(active_pods.iter().filter_map(completion_index));
        if s.only_replace_failed() {
            let terminating = s.pods.iter().filter(|p| {
                p.metadata.deletion_timestamp.is_some()
                    && !matches!(phase(p), "Succeeded" | "Failed")
            });
            taken = taken.with(terminating.filter_map(completion_index));
        }
        if let Some(failed) = &s.failed_indexes {
            taken = taken.merge(failed);
        }
        let mut pending = indexes::first_pending(&taken, diff as usize, s.completions());
        if s.per_index() {
            let wait_of = |ix: &i32| {
                s.delayed_per_index.get(ix).map_or(Duration::ZERO, |p| {
                    let failures = (annotation_count(p, FAILURE_COUNT)
                        + annotation_count(p, IGNORED_FAILURE_COUNT)
                        + 1) as u32;
                    policy::remaining(failures, Some(policy::finished_time(p)), s.now)
                })
            };
            let (now, later): (Vec<i32>, Vec<i32>) =
                pending.iter().partition(|ix| wait_of(ix).is_zero());
            if now.is_empty() && !later.is_empty() {
                return (active, later.iter().map(wait_of).min(), None);
            }
            pending = now;
        }
        indexes = pending.into_iter().map(Some).collect();
    }
    let ns = s.job.metadata.namespace.clone().unwrap_or_default();
    let job_name = s.job.metadata.name.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(s.ctx.client.clone(), &ns);
    let mut template = s.spec.template.clone();
    let meta = template.metadata.get_or_insert_with(Default::default);
    let finalizers = meta.finalizers.get_or_insert_with(Vec::new);
    if !finalizers.iter().any(|f| f == TRACKING_FINALIZER) {
        finalizers.push(TRACKING_FINALIZER.into());
    }
    if s.indexed()
        && let Some(pod_spec) = template.spec.as_mut()
    {
        for c in pod_spec
            .init_containers
            .iter_mut()
            .flatten()
            .chain(pod_spec.containers.iter_mut())
        {
            let env = c.env.get_or_insert_with(Vec::new);
            if !env.iter().any(|e| e.name == "JOB_COMPLETION_INDEX") {
                env.push(EnvVar {
                    name: "JOB_COMPLETION_INDEX".into(),
                    value: None,
                    value_from: Some(EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            api_version: None,
                            field_path: format!("metadata.labels['{INDEX_LABEL}']"),
                        }),
                        ..EnvVarSource::default()
                    }),
                });
            }
        }
    }
    let mut error = None;
    for ix in indexes {
        let mut template = template.clone();
        let mut generate_name = format!("{job_name}-");
        if let Some(ix) = ix {
            let meta = template.metadata.get_or_insert_with(Default::default);
            let annotations = meta.annotations.get_or_insert_with(BTreeMap::new);
            annotations.insert(INDEX_ANNOTATION.into(), ix.to_string());
            if s.per_index() {
                let (count, ignored) = match s.delayed_per_index.get(&ix) {
                    None => (0, 0),
                    Some(prev) => {
                        let (c, i) = (
                            annotation_count(prev, FAILURE_COUNT),
                            annotation_count(prev, IGNORED_FAILURE_COUNT),
                        );
                        if s.counts(prev) {
                            (c + 1, i)
                        } else {
                            (c, i + 1)
                        }
                    }
                };
                annotations.insert(FAILURE_COUNT.into(), count.to_string());
                if ignored > 0 {
                    annotations.insert(IGNORED_FAILURE_COUNT.into(), ignored.to_string());
                }
            }
            meta.labels
                .get_or_insert_with(BTreeMap::new)
                .insert(INDEX_LABEL.into(), ix.to_string());
            if let Some(pod_spec) = template.spec.as_mut() {
                pod_spec.hostname = Some(format!("{job_name}-{ix}"));
            }
            let suffix = format!("-{ix}-");
            let base: String = job_name
                .chars()
                .take(58usize.saturating_sub(suffix.len()))
                .collect();
            generate_name = format!("{base}{suffix}");
        }
        let pod = from_template(&template, controller_ref(&s.job), &generate_name);
        match api.create(&PostParams::default(), &pod).await {
            Ok(made) => {
                let name = made.metadata.name.unwrap_or_default();
                super::event(
                    s,
                    "Normal",
                    "SuccessfulCreate",
                    &format!("Created pod: {name}"),
                )
                .await;
                active += 1;
            }
            Err(err) => {
                // Upstream's slow start: stop at the first failure, the next sync retries.
                let why = match &err {
                    kube::Error::Api(status) => status.message.clone(),
                    other => other.to_string(),
                };
                let message = format!("Error creating: {why}");
                super::event(s, "Warning", "FailedCreate", &message).await;
                error = Some(err.into());
                break;
            }
        }
    }
    (active, None, error)
}

/// Which active pods go first when there are too many (upstream's `activePodsForRemoval`):
/// for Indexed Jobs, duplicates and pods without a valid index; then the least advanced
/// (unscheduled, pending, not ready, newest).
fn pods_for_removal(s: &Sync, active_pods: &[Pod], at_least: usize) -> Vec<Pod> {
    let mut remove = Vec::new();
    let mut left: Vec<Pod> = Vec::new();
    if s.indexed() {
        let mut by_index: BTreeMap<i32, Vec<Pod>> = BTreeMap::new();
        for p in active_pods {
            match s.valid_index(p) {
                Some(ix) => by_index.entry(ix).or_default().push(p.clone()),
                None => remove.push(p.clone()),
            }
        }
        for (_, mut same) in by_index {
            same.sort_by_key(removal_order);
            let keep = same.pop().expect("a pod per index");
            remove.extend(same);
            left.push(keep);
        }
    } else {
        left = active_pods.to_vec();
    }
    if remove.len() < at_least {
        left.sort_by_key(removal_order);
        let more = at_least - remove.len();
        remove.extend(left.into_iter().take(more));
    }
    remove
}

/// Upstream's `ActivePods` order: earlier in this order is deleted first.
fn removal_order(p: &Pod) -> (bool, u8, bool, std::cmp::Reverse<Option<Timestamp>>) {
    let scheduled = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
    let phase_rank = match phase(p) {
        "Pending" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 3,
    };
    let created = p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    (
        scheduled,
        phase_rank,
        is_ready(p),
        std::cmp::Reverse(created),
    )
}
