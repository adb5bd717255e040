//! Emptying a terminating namespace (upstream's `deleteAllContent`): for each deletable resource,
//! a `deletecollection` (or a list and a delete per object where the resource has no
//! `deletecollection`), background propagation, then a list of what is left. Objects held by
//! finalizers are counted by finalizer; pods still terminating give an estimate of how long
//! to wait.

use std::collections::BTreeMap;

use futures_util::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams};

use super::conditions::Findings;
use super::discovery::{self, Deletable};
use super::message;
use crate::Context;

/// Seconds assumed for finalizers to finish (upstream's `finalizerEstimateSeconds`).
const FINALIZER_ESTIMATE: i64 = 15;
/// Resources emptied at once. Upstream goes one by one; in-process requests are cheap, and a
/// namespace with many kinds empties sooner.
const CONCURRENCY: usize = 4;

/// What is left of one resource after a pass.
#[derive(Debug, Default)]
struct Left {
    /// Seconds before it should be gone; 0: no estimate (which does not mean gone).
    estimate: i64,
    count: usize,
    finalizers: BTreeMap<String, usize>,
}

/// The outcome of one pass over a namespace's content.
#[derive(Debug, Default)]
pub(super) struct Pass {
    /// Seconds before the remaining content should be gone; 0 when nothing is left to wait for.
    pub estimate: i64,
    /// Failures (discovery, deletes, unexpected leftovers); the pass went on past each.
    pub errors: Vec<String>,
    /// The namespace's conditions as this pass found them.
    pub findings: Findings,
}

pub(super) async fn delete_all(ctx: &Context, ns: &Namespace, deleted_at: Timestamp) -> Pass {
    let name = ns.metadata.name.as_deref().unwrap_or_default();
    let mut pass = Pass::default();
    let found = discovery::deletable(&ctx.client).await;
    if let Some(err) = found.discovery_error {
        pass.errors.push(err.clone());
        pass.findings.discovery_failed(err);
    }
    if let Some(err) = found.parse_error {
        pass.errors.push(err.clone());
        pass.findings.parsing_failed(err);
    }
    let results: Vec<(Deletable, Left, Option<String>)> =
        futures_util::stream::iter(found.resources)
            .map(|r| async move {
                let (left, err) = empty(ctx, &r, name, deleted_at).await;
                (r, left, err)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
    let mut by_resource = Vec::new();
    let mut by_finalizer: BTreeMap<String, usize> = BTreeMap::new();
    for (r, left, err) in results {
        if let Some(err) = err {
            pass.findings.content_failed(err.clone());
            pass.errors.push(err);
        }
        pass.estimate = pass.estimate.max(left.estimate);
        if left.count > 0 {
            by_resource.push((format!("{}.{}", r.resource, r.group), left.count));
            for (f, n) in left.finalizers {
                *by_finalizer.entry(f).or_default() += n;
            }
        }
    }
    pass.findings.remaining(&by_resource, &by_finalizer);
    pass
}

fn unsupported(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if matches!(s.code, 404 | 405))
}

/// Upstream's `deleteAllContentForGroupVersionResource`.
async fn empty(
    ctx: &Context,
    r: &Deletable,
    ns: &str,
    deleted_at: Timestamp,
) -> (Left, Option<String>) {
    let estimate = match estimate(ctx, r, ns, deleted_at).await {
        Ok(e) => e,
        Err(err) => return (Left::default(), Some(message(&err))),
    };
    let at_estimate = || Left {
        estimate,
        ..Left::default()
    };
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &r.api_resource());
    let background = DeleteParams::background();
    let collected = if r.supports("deletecollection") {
        match api
            .delete_collection(&background, &ListParams::default())
            .await
        {
            Ok(_) => true,
            Err(err) if unsupported(&err) => false,
            Err(err) => return (at_estimate(), Some(message(&err))),
        }
    } else {
        false
    };
    if !collected {
        match list(&api, r).await {
            Ok(items) => {
                for item in items {
                    let name = item.metadata.name.unwrap_or_default();
                    match api.delete(&name, &background).await {
                        Ok(_) => {}
                        Err(err) if unsupported(&err) => {}
                        Err(err) => return (at_estimate(), Some(message(&err))),
                    }
                }
            }
            Err(err) => return (at_estimate(), Some(message(&err))),
        }
    }
    let items = match list(&api, r).await {
        Ok(items) => items,
        Err(err) => return (at_estimate(), Some(message(&err))),
    };
    if items.is_empty() {
        return (Left::default(), None);
    }
    let mut finalizers = BTreeMap::new();
    for item in &items {
        for f in item.metadata.finalizers.iter().flatten() {
            *finalizers.entry(f.clone()).or_insert(0) += 1;
        }
    }
    let count = items.len();
    let estimate = match (estimate, finalizers.is_empty()) {
        (0, false) => FINALIZER_ESTIMATE,
        (0, true) => {
            let err = format!(
                "unexpected items still remain in namespace: {ns} for gvr: {}",
                r.gvr()
            );
            let left = Left {
                count,
                ..Left::default()
            };
            return (left, Some(err));
        }
        (e, _) => e,
    };
    let left = Left {
        estimate,
        count,
        finalizers,
    };
    (left, None)
}

/// The objects of `r` in the namespace; none when `r` cannot be listed.
async fn list(api: &Api<DynamicObject>, r: &Deletable) -> kube::Result<Vec<DynamicObject>> {
    if !r.supports("list") {
        return Ok(Vec::new());
    }
    match api.list(&ListParams::default()).await {
        Ok(list) => Ok(list.items),
        Err(err) if unsupported(&err) => Ok(Vec::new()),
        Err(err) => Err(err),
    }
}

/// How long the graceful deletion of `r`'s objects may take: the longest grace period of the
/// pods not yet Succeeded or Failed, or 0 once that long has passed since the namespace's
/// deletion. Other resources have none.
async fn estimate(
    ctx: &Context,
    r: &Deletable,
    ns: &str,
    deleted_at: Timestamp,
) -> kube::Result<i64> {
    if !(r.group.is_empty() && r.resource == "pods") {
        return Ok(0);
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let estimate = pods
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|p| {
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            !matches!(phase, Some("Succeeded" | "Failed"))
        })
        .filter_map(|p| p.spec.as_ref()?.termination_grace_period_seconds)
        .fold(0, i64::max);
    let waited = ctx.clock.now().duration_since(deleted_at).as_secs();
    Ok(if waited >= estimate { 0 } else { estimate })
}
