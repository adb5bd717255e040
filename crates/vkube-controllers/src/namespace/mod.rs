//! The namespace controller (upstream's pkg/controller/namespace and its
//! namespaced_resources_deleter.go), as the `namespace-controller` service account: a namespace
//! with a `deletionTimestamp` is marked `Terminating`, emptied through the API (every namespaced
//! resource discovery lists with `delete`), and its conditions say what is left and why; once
//! nothing is left, the `kubernetes` finalizer is taken off through `namespaces/{name}/finalize`,
//! and the API deletes the namespace when no finalizer (spec or metadata) remains.
//!
//! Differences from upstream: no 5 s delay before a deleted namespace is first looked at
//! (upstream's gives HA API servers' caches time to refuse new content; vkube's API refuses it
//! from the store itself), and up to four resources are emptied at once.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;

use crate::runner::Backoff;
use crate::{Context, Result};

mod conditions;
mod content;
mod discovery;
#[cfg(test)]
mod tests;

/// The spec finalizer this controller owns (upstream's `api.FinalizerKubernetes`).
const FINALIZER: &str = "kubernetes";
/// The longest retry wait after a failure (upstream's namespace rate limiter: 5 ms to 60 s).
const MAX_RETRY: Duration = Duration::from_secs(60);

/// The `namespace` controller.
pub(crate) async fn run(ctx: Arc<Context>) {
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    let controller = Controller::new(namespaces, watcher::Config::default());
    let backoff = Arc::new(Backoff::default());
    crate::runner::drive("namespace", controller, ctx, move |ns, ctx| {
        let backoff = backoff.clone();
        async move { reconcile(&ns, &ctx, &backoff).await }
    })
    .await;
}

/// A failure's text as upstream's would read: an API error's message, else the error.
fn message(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(s) if !s.message.is_empty() => s.message.clone(),
        err => err.to_string(),
    }
}

/// What one look at a terminating namespace ended with.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// Nothing (more) to do.
    Done,
    /// Content is still going away: look again in about this many seconds.
    Remaining(i64),
}

#[derive(Debug)]
struct Failed(String);

async fn reconcile(ns: &Namespace, ctx: &Context, backoff: &Backoff) -> Result<Action> {
    // Only deleted namespaces are queued upstream.
    if ns.metadata.deletion_timestamp.is_none() {
        return Ok(Action::await_change());
    }
    let name = ns.metadata.name.clone().unwrap_or_default();
    match delete(&name, ctx).await {
        Ok(Outcome::Done) => {
            backoff.succeeded(&name);
            Ok(Action::await_change())
        }
        Ok(Outcome::Remaining(estimate)) => {
            backoff.succeeded(&name);
            let wait = estimate / 2 + 1;
            tracing::debug!(namespace = %name, wait, "content remaining");
            Ok(Action::requeue(Duration::from_secs(wait.unsigned_abs())))
        }
        Err(Failed(why)) => {
            let wait = backoff.failed(&name).min(MAX_RETRY);
            tracing::info!(namespace = %name, %why, ?wait, "namespace deletion; retrying");
            Ok(Action::requeue(wait))
        }
    }
}

/// Upstream's `namespacedResourcesDeleter.Delete`.
async fn delete(name: &str, ctx: &Context) -> Result<Outcome, Failed> {
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    let failed = |err: kube::Error| Failed(message(&err));
    let Some(ns) = api.get_opt(name).await.map_err(failed)? else {
        return Ok(Outcome::Done);
    };
    if ns.metadata.deletion_timestamp.is_none() {
        return Ok(Outcome::Done);
    }
    let Some(mut ns) = retry_on_conflict(&api, ns, Step::Terminating).await? else {
        return Ok(Outcome::Done);
    };
    let Some(deleted_at) = ns.metadata.deletion_timestamp.as_ref().map(|t| t.0) else {
        return Ok(Outcome::Done);
    };
    if finalizers(&ns).is_empty() {
        return Ok(Outcome::Done);
    }
    let pass = content::delete_all(ctx, &ns, deleted_at).await;
    // The conditions are written whatever the pass found, so a failure that went away shows.
    let now = Time(ctx.clock.now());
    let status = ns.status.get_or_insert_with(Default::default);
    if pass.findings.apply(status, &now) {
        match api.replace_status(name, &PostParams::default(), &ns).await {
            Ok(written) => ns = written,
            Err(err) => {
                tracing::info!(namespace = name, err = %message(&err), "couldn't update status condition");
            }
        }
    }
    if !pass.errors.is_empty() {
        return Err(Failed(pass.errors.join(", ")));
    }
    if pass.estimate > 0 {
        return Ok(Outcome::Remaining(pass.estimate));
    }
    retry_on_conflict(&api, ns, Step::Finalize).await?;
    Ok(Outcome::Done)
}

fn finalizers(ns: &Namespace) -> Vec<String> {
    ns.spec
        .as_ref()
        .and_then(|s| s.finalizers.clone())
        .unwrap_or_default()
}

/// A write to a namespace that is retried on a conflict with the namespace read again.
#[derive(Clone, Copy)]
enum Step {
    /// `status.phase: Terminating`, through `/status`, unless it is so already.
    Terminating,
    /// The spec's finalizers without ours, through `/finalize`.
    Finalize,
}

/// `Ok(None)`: the namespace is gone.
async fn retry_on_conflict(
    api: &Api<Namespace>,
    mut ns: Namespace,
    step: Step,
) -> Result<Option<Namespace>, Failed> {
    let name = ns.metadata.name.clone().unwrap_or_default();
    loop {
        let result = match step {
            Step::Terminating => {
                let phase = ns.status.as_ref().and_then(|s| s.phase.as_deref());
                if phase == Some("Terminating") {
                    return Ok(Some(ns));
                }
                let mut new = ns.clone();
                new.status.get_or_insert_with(Default::default).phase = Some("Terminating".into());
                api.replace_status(&name, &PostParams::default(), &new)
                    .await
            }
            Step::Finalize => {
                let mut kept = finalizers(&ns);
                kept.retain(|f| f != FINALIZER);
                kept.sort();
                kept.dedup();
                let mut new = ns.clone();
                new.spec.get_or_insert_with(Default::default).finalizers = Some(kept);
                api.replace_subresource("finalize", &name, &PostParams::default(), &new)
                    .await
            }
        };
        match result {
            Ok(ns) => return Ok(Some(ns)),
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(None),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let latest = api.get_opt(&name).await;
                let Some(latest) = latest.map_err(|e| Failed(message(&e)))? else {
                    return Ok(None);
                };
                if latest.metadata.uid != ns.metadata.uid {
                    return Err(Failed("namespace uid has changed across retries".into()));
                }
                ns = latest;
            }
            Err(err) => return Err(Failed(message(&err))),
        }
    }
}
