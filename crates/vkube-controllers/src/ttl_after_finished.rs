//! The TTL-after-finished controller (upstream's pkg/controller/ttlafterfinished): a finished
//! Job with `ttlSecondsAfterFinished` is deleted that long after its `Complete` or `Failed`
//! condition's transition, in the foreground (its pods first), with a uid precondition so that
//! a Job made again under the same name is not taken.

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DeleteParams, Preconditions, PropagationPolicy};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;

use crate::job::finished;
use crate::{Context, Error, Result};

pub(crate) async fn run(ctx: Arc<Context>) {
    let jobs: Api<Job> = Api::all(ctx.client.clone());
    let controller = Controller::new(jobs, watcher::Config::default());
    crate::runner::drive(
        "ttl-after-finished",
        controller,
        ctx,
        |job, ctx| async move { sync(&job, &ctx).await },
    )
    .await;
}

/// When the Job expires: `None` if it has no TTL or has not finished.
fn expires_at(job: &Job) -> Result<Option<Timestamp>> {
    let Some(ttl) = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished) else {
        return Ok(None);
    };
    let Some(done) = finished(job) else {
        return Ok(None);
    };
    let at = done
        .last_transition_time
        .as_ref()
        .map(|t| t.0)
        .ok_or_else(|| {
            Error::Invalid(format!(
                "unable to find the time when the Job {}/{} finished",
                job.metadata.namespace.as_deref().unwrap_or_default(),
                job.metadata.name.as_deref().unwrap_or_default()
            ))
        })?;
    Ok(at.checked_add(SignedDuration::from_secs(ttl.into())).ok())
}

async fn sync(obj: &Job, ctx: &Context) -> Result<Action> {
    let ns = obj.metadata.namespace.clone().unwrap_or_default();
    let name = obj.metadata.name.clone().unwrap_or_default();
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(job) = api.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let Some(expires) = expires_at(&job)? else {
        return Ok(Action::await_change());
    };
    let now = ctx.clock.now();
    if expires > now {
        let wait = Duration::try_from(expires.duration_since(now)).unwrap_or_default();
        return Ok(Action::requeue(wait));
    }
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        preconditions: Some(Preconditions {
            uid: job.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    tracing::debug!(job = %format!("{ns}/{name}"), "cleaning up a finished Job");
    match api.delete(&name, &dp).await {
        Ok(_) => Ok(Action::await_change()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(Action::await_change()),
        Err(err) => Err(err.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;
    use crate::testing::FakeApi;
    use serde_json::json;

    const JOBS: &str = "/apis/batch/v1/namespaces/ns/jobs";

    #[tokio::test]
    async fn finished_jobs_go_ttl_seconds_after_they_finished() {
        let fake = FakeApi::default();
        let clock = Arc::new(FakeClock::new("2026-01-01T00:00:10Z".parse().unwrap()));
        let ctx = Context {
            client: fake.client(),
            clock: clock.clone(),
            workers: 1,
            resync: Duration::from_secs(600),
            max_endpoints_per_slice: 100,
        };
        let job = |name: &str, ttl: Option<i32>, done: bool| {
            let mut j = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
                "spec": {"template": {}}});
            if let Some(ttl) = ttl {
                j["spec"]["ttlSecondsAfterFinished"] = json!(ttl);
            }
            if done {
                j["status"] = json!({"conditions": [{"type": "Complete", "status": "True",
                    "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
            }
            j
        };
        fake.put(JOBS, job("done", Some(30), true));
        fake.put(JOBS, job("running", Some(30), false));
        fake.put(JOBS, job("kept", None, true));
        let sync_of = |name: &str| {
            let obj: Job = serde_json::from_value(fake.get(JOBS, name).unwrap()).unwrap();
            let ctx = ctx.clone();
            async move { sync(&obj, &ctx).await.unwrap() }
        };
        assert_eq!(
            sync_of("done").await,
            Action::requeue(Duration::from_secs(20))
        );
        assert_eq!(sync_of("running").await, Action::await_change());
        assert_eq!(sync_of("kept").await, Action::await_change());
        clock.advance(Duration::from_secs(20));
        sync_of("done").await;
        assert!(fake.get(JOBS, "done").is_none());
        assert!(fake.get(JOBS, "running").is_some() && fake.get(JOBS, "kept").is_some());
        assert_eq!(
            fake.writes().last().unwrap(),
            &format!("DELETE {JOBS}/done")
        );
    }
}
