//! The CronJob controller (upstream's pkg/controller/cronjob, ControllerV2): a Job per
//! scheduled time, named `<cronjob>-<minutes since the epoch>` so that a time is never run twice,
//! with the concurrency policy, the starting deadline, suspend, the time zone, history limits and
//! the status (`active`, `lastScheduleTime`, `lastSuccessfulTime`). Each sync asks to be run
//! again at the next scheduled time.

#[cfg(test)]
mod tests;

use std::cmp::Ordering;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, ListParams, PostParams, PropagationPolicy};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;

use crate::job::{condition, finished};
use crate::pods::{controller_of, controller_ref};
use crate::{Context, Result};
use vkube_api::cron::{self as schedule, Schedule};

/// Upstream's `nextScheduleDelta`: the requeue lands just after the scheduled time.
const NEXT_DELTA: Duration = Duration::from_millis(100);
const SCHEDULED_ANNOTATION: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

pub(crate) async fn run(ctx: Arc<Context>) {
    let cronjobs: Api<CronJob> = Api::all(ctx.client.clone());
    let jobs: Api<Job> = Api::all(ctx.client.clone());
    let controller = Controller::new(cronjobs, watcher::Config::default())
        .owns(jobs, watcher::Config::default());
    crate::runner::drive("cronjob", controller, ctx, |cj, ctx| async move {
        sync(&cj, &ctx).await
    })
    .await;
}

/// One sync of one CronJob (upstream's `sync`).
async fn sync(obj: &CronJob, ctx: &Context) -> Result<Action> {
    let ns = obj.metadata.namespace.clone().unwrap_or_default();
    let name = obj.metadata.name.clone().unwrap_or_default();
    let api: Api<CronJob> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(mut cj) = api.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let jobs: Vec<Job> = jobs_api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|j| {
            controller_of(&j.metadata).is_some_and(|r| r.kind == "CronJob" && r.name == name)
        })
        .collect();
    let (requeue, mut changed) = sync_cronjob(ctx, &mut cj, &jobs).await?;
    changed |= cleanup_finished(ctx, &mut cj, &jobs).await;
    if changed {
        api.replace_status(&name, &PostParams::default(), &cj)
            .await?;
    }
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

fn job_ref(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        ..ObjectReference::default()
    }
}

fn active(cj: &CronJob) -> &[ObjectReference] {
    cj.status
        .as_ref()
        .and_then(|s| s.active.as_deref())
        .unwrap_or_default()
}

fn in_active(cj: &CronJob, uid: Option<&String>) -> bool {
    active(cj).iter().any(|r| r.uid.as_ref() == uid)
}

fn remove_active(cj: &mut CronJob, uid: Option<&String>) {
    if let Some(list) = cj.status.as_mut().and_then(|s| s.active.as_mut()) {
        list.retain(|r| r.uid.as_ref() != uid);
    }
}

/// `<cronjob>-<minutes since the epoch>` (upstream's `getJobName`).
pub(crate) fn job_name(cj_name: &str, scheduled: Timestamp) -> String {
    format!("{cj_name}-{}", scheduled.as_second().div_euclid(60))
}

/// Upstream's `syncCronJob`: the active list against the Jobs, then at most one new Job for
/// the most recent unmet scheduled time. Returns when to sync again and whether the status
/// changed.
async fn sync_cronjob(
    ctx: &Context,
    cj: &mut CronJob,
    jobs: &[Job],
) -> Result<(Option<Duration>, bool)> {
    let now = ctx.clock.now();
    let mut changed = false;
    let ns = cj.metadata.namespace.clone().unwrap_or_default();
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let mut children = HashSet::new();
    for j in jobs {
        children.insert(j.metadata.uid.clone());
        let listed = in_active(cj, j.metadata.uid.as_ref());
        let done = finished(j);
        if !listed && done.is_none() {
            let api: Api<CronJob> = Api::namespaced(ctx.client.clone(), &ns);
            let fresh = api
                .get(cj.metadata.name.as_deref().unwrap_or_default())
                .await?;
            if in_active(&fresh, j.metadata.uid.as_ref()) {
                *cj = fresh;
                continue;
            }
            let msg = format!(
                "Saw a job that the controller did not create or forgot: {}",
                j.metadata.name.as_deref().unwrap_or_default()
            );
            record(ctx, cj, "Warning", "UnexpectedJob", &msg).await;
        } else if let (true, Some(c)) = (listed, done) {
            remove_active(cj, j.metadata.uid.as_ref());
            let msg = format!(
                "Saw completed job: {}, status: {}",
                j.metadata.name.as_deref().unwrap_or_default(),
                c.type_
            );
            record(ctx, cj, "Normal", "SawCompletedJob", &msg).await;
            changed = true;
        } else if condition(j, "Complete").is_some() {
            let done_at = j.status.as_ref().and_then(|s| s.completion_time.clone());
            let status = cj.status.get_or_insert_with(Default::default);
            let later = match (&status.last_successful_time, &done_at) {
                (None, _) => true,
                (Some(last), Some(at)) => at.0 > last.0,
                _ => false,
            };
            if later && done_at.is_some() {
                status.last_successful_time = done_at;
                changed = true;
            }
        }
    }
    for r in active(cj).to_vec() {
        if children.contains(&r.uid) {
            continue;
        }
        let name = r.name.clone().unwrap_or_default();
        if jobs_api.get_opt(&name).await?.is_none() {
            let msg = format!("Active job went missing: {name}");
            record(ctx, cj, "Normal", "MissingJob", &msg).await;
            remove_active(cj, r.uid.as_ref());
            changed = true;
        }
    }
    if cj.metadata.deletion_timestamp.is_some() {
        return Ok((None, changed));
    }
    let spec = cj.spec.clone().unwrap_or_default();
    let mut tz = TimeZone::UTC;
    if let Some(zone) = &spec.time_zone {
        match TimeZone::get(zone) {
            Ok(found) => tz = found,
            Err(_) => {
                // Go's time.LoadLocation error.
                let msg = format!("invalid timeZone: {zone:?}: unknown time zone {zone}");
                record(ctx, cj, "Warning", "UnknownTimeZone", &msg).await;
                return Ok((None, changed));
            }
        }
    }
    if spec.suspend == Some(true) {
        return Ok((None, changed));
    }
    if spec.schedule.contains("TZ") {
        let msg = format!(
            "CRON_TZ or TZ used in schedule {:?} is not officially supported, see https://kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/ for more details",
            spec.schedule
        );
        record(ctx, cj, "Warning", "UnsupportedSchedule", &msg).await;
    }
    let sched = match schedule::parse(&spec.schedule, tz) {
        Ok(s) => s,
        Err(err) => {
            let msg = format!("unparseable schedule: {:?} : {err}", spec.schedule);
            record(ctx, cj, "Warning", "UnparseableSchedule", &msg).await;
            return Ok((None, changed));
        }
    };
    let scheduled = match most_recent(cj, now, &sched, true) {
        Err(err) => {
            let msg = format!("invalid schedule: {} : {err}", spec.schedule);
            record(ctx, cj, "Warning", "InvalidSchedule", &msg).await;
            return Ok((None, changed));
        }
        Ok(Recent { time: None, .. }) => return Ok((next_in(cj, now, &sched), changed)),
        Ok(Recent {
            time: Some(t),
            many,
            ..
        }) => {
            if many {
                let msg = "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew";
                record(ctx, cj, "Warning", "TooManyMissedTimes", msg).await;
            }
            t
        }
    };
    if let Some(deadline) = spec.starting_deadline_seconds
        && scheduled
            .checked_add(SignedDuration::from_secs(deadline))
            .is_ok_and(|late| late < now)
    {
        let msg = format!(
            "Missed scheduled time to start a job: {}",
            scheduled.strftime("%a, %d %b %Y %H:%M:%S +0000")
        );
        record(ctx, cj, "Warning", "MissSchedule", &msg).await;
        return Ok((next_in(cj, now, &sched), changed));
    }
    let cj_name = cj.metadata.name.clone().unwrap_or_default();
    let name = job_name(&cj_name, scheduled);
    let last = cj
        .status
        .as_ref()
        .and_then(|s| s.last_schedule_time.as_ref())
        .map(|t| t.0);
    if active(cj).iter().any(|r| r.name.as_deref() == Some(&name)) || last == Some(scheduled) {
        return Ok((next_in(cj, now, &sched), changed));
    }
    let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
    if policy == "Forbid" && !active(cj).is_empty() {
        let msg =
            "Not starting job because prior execution is running and concurrency policy is Forbid";
        record(ctx, cj, "Normal", "JobAlreadyActive", msg).await;
        return Ok((next_in(cj, now, &sched), changed));
    }
    if policy == "Replace" {
        for r in active(cj).to_vec() {
            let job = jobs_api.get(r.name.as_deref().unwrap_or_default()).await?;
            delete_job(ctx, cj, &job).await?;
            changed = true;
        }
    }
    let request = job_from_template(cj, scheduled, &sched);
    let made = match jobs_api.create(&PostParams::default(), &request).await {
        Ok(made) => {
            let msg = format!("Created job {name}");
            record(ctx, cj, "Normal", "SuccessfulCreate", &msg).await;
            made
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {
            // Created before the status was written: list it as active again, if it is ours.
            let job = jobs_api.get(&name).await?;
            let ours = controller_of(&job.metadata)
                .is_some_and(|r| r.uid.as_str() == cj.metadata.uid.as_deref().unwrap_or_default());
            if !ours || in_active(cj, job.metadata.uid.as_ref()) {
                return Ok((None, changed));
            }
            job
        }
        Err(err) => {
            let msg = format!("Error creating job: {err}");
            record(ctx, cj, "Warning", "FailedCreate", &msg).await;
            return Err(err.into());
        }
    };
    let status = cj.status.get_or_insert_with(Default::default);
    status
        .active
        .get_or_insert_with(Vec::new)
        .push(job_ref(&made));
    status.last_schedule_time = Some(Time(scheduled));
    Ok((next_in(cj, now, &sched), true))
}

/// Deletes a Job in the background and drops it from the active list.
async fn delete_job(ctx: &Context, cj: &mut CronJob, job: &Job) -> Result<()> {
    let ns = job.metadata.namespace.clone().unwrap_or_default();
    let name = job.metadata.name.clone().unwrap_or_default();
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    match api.delete(&name, &dp).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(err) => {
            let msg = format!("Deleted job: {err}");
            record(ctx, cj, "Warning", "FailedDelete", &msg).await;
            return Err(err.into());
        }
    }
    remove_active(cj, job.metadata.uid.as_ref());
    record(
        ctx,
        cj,
        "Normal",
        "SuccessfulDelete",
        &format!("Deleted job {name}"),
    )
    .await;
    Ok(())
}

/// The Job for `scheduled` (upstream's `getJobFromTemplate2`).
fn job_from_template(cj: &CronJob, scheduled: Timestamp, sched: &Schedule) -> Job {
    let template = cj
        .spec
        .as_ref()
        .map(|s| s.job_template.clone())
        .unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    let local = scheduled.to_zoned(sched.time_zone());
    let stamp = if local.offset().seconds() == 0 {
        local.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        local.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
    };
    annotations.insert(SCHEDULED_ANNOTATION.into(), stamp);
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(
                cj.metadata.name.as_deref().unwrap_or_default(),
                scheduled,
            )),
            labels: meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![controller_ref(cj)]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    }
}

struct Recent {
    earliest: Timestamp,
    time: Option<Timestamp>,
    many: bool,
    missed: bool,
}

/// Upstream's `mostRecentScheduleTime`: the latest scheduled time at or before `now` since the
/// last one run (or the creation), and whether more than 100 were missed.
fn most_recent(
    cj: &CronJob,
    now: Timestamp,
    sched: &Schedule,
    with_deadline: bool,
) -> Result<Recent, String> {
    let status = cj.status.clone().unwrap_or_default();
    let mut earliest = status
        .last_schedule_time
        .map(|t| t.0)
        .or_else(|| cj.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(now);
    if with_deadline
        && let Some(d) = cj.spec.as_ref().and_then(|s| s.starting_deadline_seconds)
        && let Ok(deadline) = now.checked_sub(SignedDuration::from_secs(d))
        && deadline > earliest
    {
        earliest = deadline;
    }
    let none = |missed| Recent {
        earliest,
        time: None,
        many: false,
        missed,
    };
    let Some(t1) = sched.next(earliest) else {
        return Ok(none(false));
    };
    if now < t1 {
        return Ok(none(false));
    }
    let Some(t2) = sched.next(t1) else {
        return Ok(Recent {
            earliest,
            time: Some(t1),
            many: false,
            missed: false,
        });
    };
    if now < t2 {
        return Ok(Recent {
            earliest,
            time: Some(t1),
            many: false,
            missed: false,
        });
    }
    let between = t2.duration_since(t1).as_secs_f64().round() as i64;
    if between < 1 {
        return Err("time difference between two schedules is less than 1 second".into());
    }
    let elapsed = now.duration_since(t1).as_secs();
    let missed = elapsed / between + 1;
    let mut most_recent = None;
    let mut t = t1
        .checked_add(SignedDuration::from_secs((missed - 2) * between))
        .ok()
        .and_then(|potential| sched.next(potential));
    while let Some(at) = t.filter(|at| *at <= now) {
        most_recent = Some(at);
        t = sched.next(at);
    }
    Ok(Recent {
        earliest,
        time: most_recent,
        many: missed > 100,
        missed: missed > 0,
    })
}

/// How long until just after the next scheduled time (upstream's `nextScheduleTimeDuration`).
fn next_in(cj: &CronJob, now: Timestamp, sched: &Schedule) -> Option<Duration> {
    let from = match most_recent(cj, now, sched, false) {
        Err(_) => now,
        Ok(Recent { time: Some(t), .. }) => t,
        Ok(Recent {
            missed: false,
            earliest,
            ..
        }) => earliest,
        Ok(_) => now,
    };
    let next = sched.next(from)?;
    let wait = Duration::try_from(next.duration_since(now)).unwrap_or(Duration::ZERO);
    Some(wait + NEXT_DELTA)
}

/// Upstream's `byJobStartTime`: started before not started, then by start, then by name.
fn by_start(a: &Job, b: &Job) -> Ordering {
    let start = |j: &Job| {
        j.status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0)
    };
    match (start(a), start(b)) {
        (Some(x), Some(y)) if x != y => x.cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        _ => a.metadata.name.cmp(&b.metadata.name),
    }
}

/// Deletes the oldest finished Jobs beyond the history limits.
async fn cleanup_finished(ctx: &Context, cj: &mut CronJob, jobs: &[Job]) -> bool {
    let spec = cj.spec.clone().unwrap_or_default();
    let mut changed = false;
    for (kind, limit) in [
        ("Complete", spec.successful_jobs_history_limit),
        ("Failed", spec.failed_jobs_history_limit),
    ] {
        let Some(limit) = limit else { continue };
        let mut done: Vec<&Job> = jobs
            .iter()
            .filter(|j| finished(j).is_some_and(|c| c.type_ == kind))
            .collect();
        let surplus = done.len().saturating_sub(limit.max(0) as usize);
        done.sort_by(|a, b| by_start(a, b));
        for job in done.into_iter().take(surplus) {
            if delete_job(ctx, cj, job).await.is_ok() {
                changed = true;
            }
        }
    }
    changed
}

/// An event from `cronjob-controller`.
async fn record<K: kube::Resource<DynamicType = ()>>(
    ctx: &Context,
    obj: &K,
    type_: &str,
    reason: &str,
    message: &str,
) {
    crate::events::record_as(ctx, "cronjob-controller", obj, type_, reason, message).await;
}
