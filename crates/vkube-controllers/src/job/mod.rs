//! The Job controller (upstream's pkg/controller/job): pods from the template up to
//! `parallelism` until `completions` succeed (NonIndexed or Indexed), failed pods replaced after
//! an exponential delay until `backoffLimit` (or `backoffLimitPerIndex`), the pod failure and
//! success policies, `activeDeadlineSeconds`, `suspend`, and the status as 1.33 writes it.
//!
//! Finished pods are counted exactly once, even across restarts, as upstream does: each pod
//! carries the `batch.kubernetes.io/job-tracking` finalizer; a finished pod's uid goes into
//! `status.uncountedTerminatedPods` (written) before its finalizer is removed, and is moved to
//! `succeeded`/`failed` once the finalizer is gone. Every sync reads the Job and its pods from
//! the API, so there are no expectations to keep.

mod indexes;
mod manage;
mod policy;
#[cfg(test)]
mod tests;
mod track;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;

use crate::pods::{self, claim, is_active, is_ready};
use crate::{Context, Error, Result};
use indexes::Intervals;
use policy::{Backoffs, Record, match_policy};

pub(crate) const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
pub(crate) const INDEX_ANNOTATION: &str = "batch.kubernetes.io/job-completion-index";
const INDEX_LABEL: &str = "batch.kubernetes.io/job-completion-index";
const FAILURE_COUNT: &str = "batch.kubernetes.io/job-index-failure-count";
const IGNORED_FAILURE_COUNT: &str = "batch.kubernetes.io/job-index-ignored-failure-count";
const MANAGED_BY: &str = "kubernetes.io/job-controller";

pub(crate) async fn run(ctx: Arc<Context>) {
    let jobs: Api<Job> = Api::all(ctx.client.clone());
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let controller = Controller::new(jobs, watcher::Config::default());
    let store = controller.store();
    // Orphans too: a pod that matches a Job's selector is adopted (upstream's getPodJobs).
    let controller = controller.watches(pods.clone(), watcher::Config::default(), move |pod| {
        pods::concerned(&store, &pod, |job: &Job| {
            job.spec.as_ref().and_then(|s| s.selector.clone())
        })
    });
    let backoffs = Arc::new(Backoffs::default());
    let jobs = crate::runner::drive("job", controller, ctx.clone(), move |job, ctx| {
        let backoffs = backoffs.clone();
        async move { sync(&job, &ctx, &backoffs).await }
    });
    // Upstream's orphan queue: pods whose Job is gone or finished lose the tracking finalizer.
    let orphans = crate::runner::drive(
        "job-orphan-pods",
        Controller::new(pods, watcher::Config::default()),
        ctx,
        |pod, ctx| async move { release_orphan(&pod, &ctx).await },
    );
    tokio::join!(jobs, orphans);
}

/// Removes the tracking finalizer of a pod no unfinished Job controls. The pod is the watch's
/// (upstream reads its informer's; the job-controller role may not get pods): the patch's
/// resourceVersion makes a stale one fail, and the next event brings the fresh one.
async fn release_orphan(pod: &Pod, ctx: &Context) -> Result<Action> {
    if !has_finalizer(pod) {
        return Ok(Action::await_change());
    }
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let fresh = pod;
    if let Some(owner) = pods::controller_of(&fresh.metadata) {
        if owner.kind != "Job" || owner.api_version != "batch/v1" {
            return Ok(Action::await_change());
        }
        let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
        if let Some(job) = jobs.get_opt(&owner.name).await?
            && job.metadata.uid.as_deref() == Some(owner.uid.as_str())
            && (finished(&job).is_none()
                || job
                    .spec
                    .as_ref()
                    .and_then(|s| s.managed_by.as_deref())
                    .is_some_and(|m| m != MANAGED_BY))
        {
            return Ok(Action::await_change());
        }
    }
    remove_finalizer(&api, fresh).await?;
    Ok(Action::await_change())
}

/// An event on the Job, as upstream's job-controller records it.
async fn event(s: &Sync<'_>, type_: &str, reason: &str, message: &str) {
    crate::events::record_as(s.ctx, "job-controller", &s.job, type_, reason, message).await;
}

/// A condition of `type_` that is `True`.
pub(crate) fn condition<'a>(job: &'a Job, type_: &str) -> Option<&'a JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
}

/// `Complete` or `Failed` (upstream's `IsJobFinished`), with its type.
pub(crate) fn finished(job: &Job) -> Option<&JobCondition> {
    condition(job, "Complete").or_else(|| condition(job, "Failed"))
}

fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> JobCondition {
    JobCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()).filter(|r: &String| !r.is_empty()),
        message: Some(message.into()).filter(|m: &String| !m.is_empty()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Upstream's `ensureJobConditionStatus`: sets or adds the condition; says whether it changed.
fn ensure_condition(
    list: &mut Vec<JobCondition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> bool {
    let new = new_condition(type_, status, reason, message, now);
    if let Some(c) = list.iter_mut().find(|c| c.type_ == type_) {
        if c.status != new.status || c.reason != new.reason || c.message != new.message {
            *c = new;
            return true;
        }
        return false;
    }
    if status != "False" {
        list.push(new);
        return true;
    }
    false
}

fn has_finalizer(pod: &Pod) -> bool {
    pod.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == TRACKING_FINALIZER)
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

/// The pod's completion index, if it has a valid one.
pub(crate) fn completion_index(pod: &Pod) -> Option<i32> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(INDEX_ANNOTATION)?
        .parse()
        .ok()
        .filter(|ix| *ix >= 0)
}

fn annotation_count(pod: &Pod, key: &str) -> i32 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .and_then(|v| v.parse().ok())
        .filter(|v: &i32| *v >= 0)
        .unwrap_or(0)
}

/// Everything one sync works out, as upstream's `syncJobCtx`.
pub(crate) struct Sync<'a> {
    pub job: Job,
    pub spec: JobSpec,
    pub pods: Vec<Pod>,
    pub now: Timestamp,
    pub finished: Option<JobCondition>,
    pub succeeded: i32,
    pub failed: i32,
    pub prev_succeeded_indexes: Intervals,
    pub succeeded_indexes: Intervals,
    pub failed_indexes: Option<Intervals>,
    pub uncounted_succeeded: HashSet<String>,
    pub uncounted_failed: HashSet<String>,
    pub delayed_per_index: BTreeMap<i32, Pod>,
    pub terminating: i32,
    pub ready: i32,
    pub record: Record,
    pub ctx: &'a Context,
}

impl Sync<'_> {
    fn indexed(&self) -> bool {
        self.spec.completion_mode.as_deref() == Some("Indexed")
    }

    fn completions(&self) -> i32 {
        self.spec.completions.unwrap_or(0)
    }

    fn per_index(&self) -> bool {
        self.indexed() && self.spec.backoff_limit_per_index.is_some()
    }

    /// Pods are replaced only once they have failed, not while terminating.
    fn only_replace_failed(&self) -> bool {
        self.spec.pod_replacement_policy.as_deref() == Some("Failed")
            || self.spec.pod_failure_policy.is_some()
    }

    fn valid_index(&self, pod: &Pod) -> Option<i32> {
        completion_index(pod).filter(|ix| *ix < self.completions())
    }

    /// Failed, or (unless only failed pods are replaced) deleted before succeeding.
    fn is_failed(&self, pod: &Pod) -> bool {
        if phase(pod) == "Failed" {
            return true;
        }
        !self.only_replace_failed()
            && pod.metadata.deletion_timestamp.is_some()
            && phase(pod) != "Succeeded"
    }

    fn counts(&self, pod: &Pod) -> bool {
        match_policy(self.spec.pod_failure_policy.as_ref(), pod).count
    }

    /// Finished pods not yet counted: with the finalizer, not in the uncounted lists, and (for
    /// Indexed Jobs) with a valid index.
    fn newly_finished(&self, uncounted: &HashSet<String>, succeeded: bool) -> Vec<&Pod> {
        self.pods
            .iter()
            .filter(|p| has_finalizer(p) && !uncounted.contains(&uid(p)))
            .filter(|p| !self.indexed() || self.valid_index(p).is_some())
            .filter(|p| {
                if succeeded {
                    phase(p) == "Succeeded"
                } else {
                    self.is_failed(p)
                }
            })
            .collect()
    }

    fn index_failed(&self, pod: &Pod) -> bool {
        if !self.is_failed(pod) {
            return false;
        }
        let verdict = match_policy(self.spec.pod_failure_policy.as_ref(), pod);
        if verdict.action.as_deref() == Some("FailIndex") {
            return true;
        }
        verdict.count
            && annotation_count(pod, FAILURE_COUNT)
                >= self.spec.backoff_limit_per_index.unwrap_or(0)
    }
}

fn suspended(spec: &JobSpec) -> bool {
    spec.suspend == Some(true)
}

/// One sync of one Job (upstream's `syncJob`).
async fn sync(obj: &Job, ctx: &Context, backoffs: &Backoffs) -> Result<Action> {
    let ns = obj.metadata.namespace.clone().unwrap_or_default();
    let name = obj.metadata.name.clone().unwrap_or_default();
    let key = format!("{ns}/{name}");
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(job) = api.get_opt(&name).await? else {
        backoffs.remove(&key);
        return Ok(Action::await_change());
    };
    let spec = job.spec.clone().unwrap_or_default();
    if spec.managed_by.as_deref().is_some_and(|m| m != MANAGED_BY) {
        return Ok(Action::await_change());
    }
    if finished(&job).is_some() {
        backoffs.remove(&key);
        release_finalizers(ctx, &job).await?;
        return Ok(Action::await_change());
    }
    if let Some(mode) = spec.completion_mode.as_deref()
        && mode != "NonIndexed"
        && mode != "Indexed"
    {
        return Err(Error::Invalid(format!("unknown completion mode {mode:?}")));
    }
    let selector = spec
        .selector
        .clone()
        .ok_or_else(|| Error::Invalid("the Job has no selector".into()))?;
    let mut pods = claim(&ctx.client, &job, &selector).await?;
    pods.sort_by_key(|p| p.metadata.name.clone());
    track_adopted(ctx, &mut pods).await?;
    let now = ctx.clock.now();
    let status = job.status.clone().unwrap_or_default();
    let uncounted = status.uncounted_terminated_pods.clone().unwrap_or_default();
    let mut s = Sync {
        spec: spec.clone(),
        now,
        finished: None,
        succeeded: 0,
        failed: 0,
        prev_succeeded_indexes: Intervals::default(),
        succeeded_indexes: Intervals::default(),
        failed_indexes: None,
        uncounted_succeeded: uncounted.succeeded.into_iter().flatten().collect(),
        uncounted_failed: uncounted.failed.into_iter().flatten().collect(),
        delayed_per_index: BTreeMap::new(),
        terminating: 0,
        ready: 0,
        record: Record::default(),
        ctx,
        job,
        pods,
    };
    let active_pods: Vec<Pod> = s.pods.iter().filter(|p| is_active(p)).cloned().collect();
    let mut active = active_pods.len() as i32;
    s.ready = active_pods.iter().filter(|p| is_ready(p)).count() as i32;
    s.terminating = s
        .pods
        .iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_some() && !matches!(phase(p), "Succeeded" | "Failed")
        })
        .count() as i32;
    let new_succeeded: Vec<Pod> = s
        .newly_finished(&s.uncounted_succeeded, true)
        .into_iter()
        .cloned()
        .collect();
    let new_failed: Vec<Pod> = s
        .newly_finished(&s.uncounted_failed, false)
        .into_iter()
        .cloned()
        .collect();
    s.succeeded = status.succeeded.unwrap_or(0)
        + new_succeeded.len() as i32
        + s.uncounted_succeeded.len() as i32;
    s.failed = status.failed.unwrap_or(0)
        + new_failed.iter().filter(|p| s.counts(p)).count() as i32
        + s.uncounted_failed.len() as i32;
    s.record = backoffs.next(
        &key,
        &new_succeeded.iter().collect::<Vec<_>>(),
        &new_failed.iter().collect::<Vec<_>>(),
    );
    let status = s.job.status.get_or_insert_with(Default::default);
    if status.start_time.is_none() && !suspended(&spec) {
        status.start_time = Some(Time(now));
    }
    let start = status.start_time.as_ref().map(|t| t.0);

    let mut requeue: Option<Duration> = None;
    s.finished = condition(&s.job, "SuccessCriteriaMet").cloned();
    if s.finished.is_none() {
        if let Some(target) = condition(&s.job, "FailureTarget") {
            let reason = target.reason.clone().unwrap_or_default();
            let message = target.message.clone().unwrap_or_default();
            s.finished = Some(new_condition("Failed", "True", &reason, &message, now));
        } else if let Some(message) = fail_job_message(&s) {
            s.finished = Some(new_condition(
                "FailureTarget",
                "True",
                "PodFailurePolicy",
                &message,
                now,
            ));
        }
    }
    if s.finished.is_none() {
        let limit = spec.backoff_limit.unwrap_or(6);
        let deadline = spec.active_deadline_seconds.filter(|_| !suspended(&spec));
        let elapsed = start.map(|t| now.duration_since(t)).unwrap_or_default();
        if s.failed > limit || past_backoff_limit_on_failure(&s, limit) {
            s.finished = Some(failure(
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
                now,
            ));
        } else if let Some(d) = deadline.filter(|_| start.is_some()) {
            let left = SignedDuration::from_secs(d) - elapsed;
            if left <= SignedDuration::ZERO {
                s.finished = Some(failure(
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline",
                    now,
                ));
            } else {
                requeue = Duration::try_from(left).ok();
            }
        }
    }
    if s.indexed() {
        track::index_sets(&mut s);
        if s.finished.is_none()
            && let Some(message) = policy::match_success_policy(
                spec.success_policy.as_ref(),
                s.completions(),
                &s.succeeded_indexes,
            )
        {
            s.finished = Some(new_condition(
                "SuccessCriteriaMet",
                "True",
                "SuccessPolicy",
                &message,
                now,
            ));
        }
    }

    let mut suspend_changed = false;
    let mut manage_err = None;
    if s.finished.is_some() {
        let (deleted_ready, deleted, err) = delete_active(&s, &active_pods, false).await;
        if deleted != active {
            s.finished = None;
        }
        active -= deleted;
        s.terminating += deleted;
        s.ready -= deleted_ready;
        manage_err = err;
    } else {
        let mut managed = false;
        if s.job.metadata.deletion_timestamp.is_none() {
            let (a, wait, err) = manage::manage(&mut s, &active_pods).await;
            active = a;
            requeue = min_some(requeue, wait);
            manage_err = err;
            managed = true;
        }
        let complete = match spec.completions {
            None => s.succeeded > 0 && active == 0,
            Some(c) => s.succeeded >= c && active == 0,
        };
        if complete {
            s.finished = Some(new_condition(
                "SuccessCriteriaMet",
                "True",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
                now,
            ));
        } else if managed {
            let conditions = s
                .job
                .status
                .get_or_insert_with(Default::default)
                .conditions
                .get_or_insert_with(Vec::new);
            if suspended(&spec) {
                suspend_changed = ensure_condition(
                    conditions,
                    "Suspended",
                    "True",
                    "JobSuspended",
                    "Job suspended",
                    now,
                );
                if suspend_changed {
                    event(&s, "Normal", "Suspended", "Job suspended").await;
                }
            } else {
                suspend_changed = ensure_condition(
                    conditions,
                    "Suspended",
                    "False",
                    "JobResumed",
                    "Job resumed",
                    now,
                );
                if suspend_changed {
                    event(&s, "Normal", "Resumed", "Job resumed").await;
                    // A resumed Job's deadline counts from now.
                    s.job.status.get_or_insert_with(Default::default).start_time = Some(Time(now));
                }
            }
        }
    }

    let status = s.job.status.get_or_insert_with(Default::default);
    let needs_update = suspend_changed
        || active != status.active.unwrap_or(0)
        || Some(s.ready) != status.ready
        || Some(s.terminating) != status.terminating;
    status.active = Some(active);
    status.ready = Some(s.ready);
    status.terminating = Some(s.terminating);
    // Go leaves an empty list out.
    if status.conditions.as_ref().is_some_and(Vec::is_empty) {
        status.conditions = None;
    }
    track::status_and_finalizers(&mut s, needs_update).await?;
    backoffs.store(&key, s.record.clone());
    if let Some(err) = manage_err {
        return Err(err);
    }
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

fn failure(reason: &str, message: &str, now: Timestamp) -> JobCondition {
    new_condition("FailureTarget", "True", reason, message, now)
}

fn min_some(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The message of the first failed pod that a `FailJob` rule matches.
fn fail_job_message(s: &Sync) -> Option<String> {
    let policy = s.spec.pod_failure_policy.as_ref()?;
    s.pods
        .iter()
        .filter(|p| s.is_failed(p))
        .find_map(|p| match_policy(Some(policy), p).fail_job)
}

/// With `restartPolicy: OnFailure`, the containers' restarts of running pods count.
fn past_backoff_limit_on_failure(s: &Sync, limit: i32) -> bool {
    let restart = s
        .spec
        .template
        .spec
        .as_ref()
        .and_then(|p| p.restart_policy.as_deref());
    if restart != Some("OnFailure") {
        return false;
    }
    let restarts: i32 = s
        .pods
        .iter()
        .filter(|p| matches!(phase(p), "Running" | "Pending"))
        .flat_map(|p| {
            let st = p.status.clone().unwrap_or_default();
            st.init_container_statuses
                .into_iter()
                .flatten()
                .chain(st.container_statuses.into_iter().flatten())
        })
        .map(|c| c.restart_count)
        .sum();
    if limit == 0 {
        restarts > 0
    } else {
        restarts >= limit
    }
}

/// Deletes active pods; `release` first removes their tracking finalizer (scale-down and
/// suspend, upstream's `deleteJobPods`), otherwise the finalizer stays so that the pods are
/// counted as failed (upstream's `deleteActivePods`). Returns (ready deleted, deleted, error).
async fn delete_active(s: &Sync<'_>, victims: &[Pod], release: bool) -> (i32, i32, Option<Error>) {
    let ns = s.job.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(s.ctx.client.clone(), &ns);
    let (mut ready, mut deleted, mut error) = (0, 0, None);
    for pod in victims {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let mut result = Ok(());
        if release && has_finalizer(pod) {
            result = remove_finalizer(&api, pod).await;
        }
        if result.is_ok() {
            result = match api.delete(&name, &DeleteParams::default()).await {
                Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                r => r.map(|_| ()),
            };
        }
        match result {
            Ok(()) => {
                event(
                    s,
                    "Normal",
                    "SuccessfulDelete",
                    &format!("Deleted pod: {name}"),
                )
                .await;
                deleted += 1;
                if is_ready(pod) {
                    ready += 1;
                }
            }
            Err(err) => error = Some(err.into()),
        }
    }
    (ready, deleted, error)
}

/// Removes the tracking finalizer (a merge patch of the list without it, on the version read);
/// a pod already gone counts as done.
pub(crate) async fn remove_finalizer(api: &Api<Pod>, pod: &Pod) -> kube::Result<()> {
    let kept: Vec<&String> = pod
        .metadata
        .finalizers
        .iter()
        .flatten()
        .filter(|f| *f != TRACKING_FINALIZER)
        .collect();
    // An empty list is left out (as Go writes it): null removes the field.
    let kept = Some(kept).filter(|k| !k.is_empty());
    let patch = json!({"metadata": {"finalizers": kept, "uid": pod.metadata.uid,
                       "resourceVersion": pod.metadata.resource_version}});
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Running pods without the tracking finalizer (adopted orphans) get it, as upstream's claim
/// adds it on adoption: otherwise their end would never be counted.
async fn track_adopted(ctx: &Context, pods: &mut [Pod]) -> Result<()> {
    for pod in pods
        .iter_mut()
        .filter(|p| is_active(p) && !has_finalizer(p))
    {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
        let mut finalizers = pod.metadata.finalizers.clone().unwrap_or_default();
        finalizers.push(TRACKING_FINALIZER.into());
        let patch = json!({"metadata": {"finalizers": finalizers, "uid": pod.metadata.uid,
                           "resourceVersion": pod.metadata.resource_version}});
        let name = pod.metadata.name.clone().unwrap_or_default();
        *pod = api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    Ok(())
}

/// A finished Job's pods keep no tracking finalizer (upstream's orphan-pod cleanup).
async fn release_finalizers(ctx: &Context, job: &Job) -> Result<()> {
    let ns = job.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let Some(selector) = job.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return Ok(());
    };
    let lp = kube::api::ListParams::default().labels(&pods::selector_query(selector)?);
    for pod in api.list(&lp).await?.items {
        if has_finalizer(&pod) && pods::controller_of(&pod.metadata).is_some_and(|r| r.uid == uid) {
            remove_finalizer(&api, &pod).await?;
        }
    }
    Ok(())
}
