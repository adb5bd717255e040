//! Upstream's `trackJobStatusAndRemoveFinalizers`: finished pods go into
//! `status.uncountedTerminatedPods` (written first), then lose their tracking finalizer, then
//! move to the counters; the interim `FailureTarget`/`SuccessCriteriaMet` conditions are
//! written before the finalizers go, and `Failed`/`Complete` once no pod is left uncounted or
//! terminating.

use std::collections::HashSet;

use k8s_openapi::api::batch::v1::{Job, JobStatus};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};

use super::indexes::Intervals;
use super::{
    Sync, completion_index, condition, ensure_condition, has_finalizer, new_condition, phase,
    remove_finalizer, uid,
};
use crate::Result;

/// Upstream's `MaxUncountedPods`: the uncounted lists stay below ~20 KB.
const MAX_UNCOUNTED: usize = 500;

/// The succeeded and failed indexes of an Indexed Job, its failed-index conditions, and the
/// failed pods whose deletion waits for their replacement (`backoffLimitPerIndex`).
pub(super) fn index_sets(s: &mut Sync<'_>) {
    let completions = s.completions();
    let status = s.job.status.clone().unwrap_or_default();
    s.prev_succeeded_indexes = Intervals::parse(
        status.completed_indexes.as_deref().unwrap_or_default(),
        completions,
    );
    let new = s
        .pods
        .iter()
        .filter(|p| phase(p) == "Succeeded" && has_finalizer(p))
        .filter_map(|p| s.valid_index(p));
    s.succeeded_indexes = s.prev_succeeded_indexes.with(new.collect::<Vec<_>>());
    s.succeeded = s.succeeded_indexes.total();
    if !s.per_index() {
        return;
    }
    let prev = Intervals::parse(
        status.failed_indexes.as_deref().unwrap_or_default(),
        completions,
    );
    let new: Vec<i32> = s
        .pods
        .iter()
        .filter(|p| has_finalizer(p) && s.index_failed(p))
        .filter_map(|p| s.valid_index(p))
        .collect();
    let failed = prev.with(new);
    if s.finished.is_none() {
        if s.spec
            .max_failed_indexes
            .is_some_and(|m| failed.total() > m)
        {
            s.finished = Some(super::failure(
                "MaxFailedIndexesExceeded",
                "Job has exceeded the specified maximal number of failed indexes",
                s.now,
            ));
        } else if failed.total() > 0 && failed.total() + s.succeeded_indexes.total() >= completions
        {
            s.finished = Some(super::failure(
                "FailedIndexes",
                "Job has failed indexes",
                s.now,
            ));
        }
    }
    let active: HashSet<i32> = s
        .pods
        .iter()
        .filter(|p| crate::pods::is_active(p))
        .filter_map(completion_index)
        .collect();
    let mut delayed = std::collections::BTreeMap::<i32, Pod>::new();
    for p in s.pods.iter().filter(|p| has_finalizer(p) && s.is_failed(p)) {
        let Some(ix) = s.valid_index(p) else { continue };
        if s.succeeded_indexes.has(ix) || failed.has(ix) || active.contains(&ix) {
            continue;
        }
        let absolute = |p: &Pod| {
            super::annotation_count(p, super::FAILURE_COUNT)
                + super::annotation_count(p, super::IGNORED_FAILURE_COUNT)
        };
        let replace = delayed.get(&ix).is_none_or(|last| {
            absolute(last) <= absolute(p)
                && super::policy::finished_time(p) >= super::policy::finished_time(last)
        });
        if replace {
            delayed.insert(ix, p.clone());
        }
    }
    s.failed_indexes = Some(failed);
    s.delayed_per_index = delayed;
}

/// Moves the uids whose pods no longer carry the finalizer from the uncounted lists to the
/// counters; says whether anything moved.
fn clean_uncounted(status: &mut JobStatus, with_finalizer: &HashSet<String>) -> bool {
    let uncounted = status
        .uncounted_terminated_pods
        .get_or_insert_with(Default::default);
    let mut changed = false;
    for (list, counter) in [
        (&mut uncounted.succeeded, &mut status.succeeded),
        (&mut uncounted.failed, &mut status.failed),
    ] {
        let all = list.take().unwrap_or_default();
        let (keep, gone): (Vec<String>, Vec<String>) =
            all.into_iter().partition(|u| with_finalizer.contains(u));
        if !gone.is_empty() {
            changed = true;
            *counter = Some(counter.unwrap_or(0) + gone.len() as i32);
        }
        *list = Some(keep).filter(|k| !k.is_empty());
    }
    changed
}

/// Whether the pod's finalizer may go (upstream's `canRemoveFinalizer`).
fn can_remove(s: &Sync, pod: &Pod, failed: bool) -> bool {
    if s.job.metadata.deletion_timestamp.is_some()
        || s.finished.is_some()
        || phase(pod) == "Succeeded"
    {
        return true;
    }
    if !failed {
        return false;
    }
    if s.per_index()
        && let Some(ix) = completion_index(pod)
        && s.delayed_per_index
            .get(&ix)
            .is_some_and(|p| uid(p) == uid(pod))
    {
        return false;
    }
    true
}

async fn write(s: &mut Sync<'_>) -> Result<()> {
    let ns = s.job.metadata.namespace.clone().unwrap_or_default();
    let name = s.job.metadata.name.clone().unwrap_or_default();
    let api: Api<Job> = Api::namespaced(s.ctx.client.clone(), &ns);
    s.job = api
        .replace_status(&name, &PostParams::default(), &s.job)
        .await?;
    Ok(())
}

pub(super) async fn status_and_finalizers(s: &mut Sync<'_>, mut flush: bool) -> Result<()> {
    let indexed = s.indexed();
    if indexed {
        s.pods.sort_by_key(completion_index);
    }
    let mut with_finalizer: HashSet<String> = s
        .pods
        .iter()
        .filter(|p| has_finalizer(p))
        .map(uid)
        .collect();
    let (mut release, mut add_succeeded, mut add_failed, mut new_indexes) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let uncounted = s
        .job
        .status
        .as_ref()
        .and_then(|st| st.uncounted_terminated_pods.clone())
        .unwrap_or_default();
    let already =
        uncounted.succeeded.iter().flatten().count() + uncounted.failed.iter().flatten().count();
    let ending = s
        .finished
        .as_ref()
        .is_some_and(|c| c.type_ != "SuccessCriteriaMet");
    let mut reached_max = false;
    for pod in s.pods.iter().filter(|p| has_finalizer(p)) {
        let failed = s.is_failed(pod);
        if !can_remove(s, pod, failed) {
            continue;
        }
        release.push(pod.clone());
        let id = uid(pod);
        if phase(pod) == "Succeeded" && !s.uncounted_failed.contains(&id) {
            if indexed {
                if let Some(ix) = s.valid_index(pod)
                    && !s.prev_succeeded_indexes.has(ix)
                {
                    new_indexes.push(ix);
                }
            } else if !s.uncounted_succeeded.contains(&id) {
                add_succeeded.push(id);
            }
        } else if (failed || ending)
            && !s.uncounted_failed.contains(&id)
            && (!indexed || s.valid_index(pod).is_some())
            && s.counts(pod)
        {
            add_failed.push(id);
        }
        if already + new_indexes.len() + add_succeeded.len() + add_failed.len() >= MAX_UNCOUNTED {
            reached_max = true;
            break;
        }
    }
    flush |= !new_indexes.is_empty() || !add_succeeded.is_empty() || !add_failed.is_empty();
    let succeeded_indexes = s.succeeded_indexes.with(new_indexes);
    let failed_indexes = s.failed_indexes.as_ref().map(ToString::to_string);
    let status = s.job.status.get_or_insert_with(Default::default);
    flush |= clean_uncounted(status, &with_finalizer);
    let lists = status
        .uncounted_terminated_pods
        .get_or_insert_with(Default::default);
    for (list, add) in [
        (&mut lists.succeeded, add_succeeded),
        (&mut lists.failed, add_failed),
    ] {
        if !add.is_empty() {
            list.get_or_insert_with(Vec::new).extend(add);
        }
    }
    if indexed {
        let text = succeeded_indexes.to_string();
        flush |= status.completed_indexes.as_deref().unwrap_or_default() != text;
        status.succeeded = Some(succeeded_indexes.total());
        status.completed_indexes = Some(text).filter(|t| !t.is_empty());
        if status.failed_indexes != failed_indexes {
            status.failed_indexes = failed_indexes;
            flush = true;
        }
    }
    s.succeeded_indexes = succeeded_indexes;
    if let Some(target) = s.finished.clone().filter(|c| c.type_ == "FailureTarget") {
        status
            .conditions
            .get_or_insert_with(Vec::new)
            .push(target.clone());
        flush = true;
        s.finished = Some(again(&target, "Failed", s.now));
    }
    if let Some(met) = s
        .finished
        .clone()
        .filter(|c| c.type_ == "SuccessCriteriaMet")
    {
        if condition(&s.job, "SuccessCriteriaMet").is_none() {
            let status = s.job.status.get_or_insert_with(Default::default);
            status
                .conditions
                .get_or_insert_with(Vec::new)
                .push(met.clone());
            flush = true;
        }
        s.finished = Some(again(&met, "Complete", s.now));
    }
    if flush {
        write(s).await?;
        flush = false;
    }
    let ns = s.job.metadata.namespace.clone().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(s.ctx.client.clone(), &ns);
    let mut error = None;
    for pod in &release {
        match remove_finalizer(&pods, pod).await {
            Ok(()) => {
                with_finalizer.remove(&uid(pod));
            }
            Err(err) => error = Some(err),
        }
    }
    let status = s.job.status.get_or_insert_with(Default::default);
    flush |= clean_uncounted(status, &with_finalizer);
    if let Some(err) = error {
        if flush {
            write(s).await?;
        }
        return Err(err.into());
    }
    let finished = !reached_max && enact_finished(s);
    if finished || flush {
        write(s).await?;
    }
    if finished && let Some(done) = s.finished.clone() {
        if done.type_ == "Complete" {
            super::event(s, "Normal", "Completed", "Job completed").await;
        } else {
            let reason = done.reason.clone().unwrap_or_default();
            let message = done.message.clone().unwrap_or_default();
            super::event(s, "Warning", &reason, &message).await;
        }
    }
    Ok(())
}

fn again(
    c: &k8s_openapi::api::batch::v1::JobCondition,
    type_: &str,
    now: jiff::Timestamp,
) -> k8s_openapi::api::batch::v1::JobCondition {
    let reason = c.reason.clone().unwrap_or_default();
    let message = c.message.clone().unwrap_or_default();
    new_condition(type_, "True", &reason, &message, now)
}

/// Adds `Complete` or `Failed` once no pod is uncounted or terminating.
fn enact_finished(s: &mut Sync<'_>) -> bool {
    let Some(done) = s.finished.clone() else {
        return false;
    };
    let status = s.job.status.get_or_insert_with(Default::default);
    let uncounted = status.uncounted_terminated_pods.clone().unwrap_or_default();
    if uncounted.succeeded.iter().flatten().count() + uncounted.failed.iter().flatten().count() > 0
    {
        return false;
    }
    if s.terminating > 0 {
        return false;
    }
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    ensure_condition(
        conditions,
        &done.type_,
        &done.status,
        done.reason.as_deref().unwrap_or_default(),
        done.message.as_deref().unwrap_or_default(),
        s.now,
    );
    if done.type_ == "Complete" {
        status.completion_time = done.last_transition_time.clone();
    }
    true
}
