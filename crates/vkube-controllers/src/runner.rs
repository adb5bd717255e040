//! The one runner every controller uses: kube's `Controller` (a work queue that de-duplicates
//! keys and never runs one key twice at once, fed by watches), plus what client-go's workqueue
//! adds and kube leaves to the caller: per-key exponential backoff on errors (client-go's
//! default: 5 ms doubling to 1000 s, reset on success), a periodic resync of every object, and
//! `workers` concurrent reconciles.

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use kube::Resource;
use kube::runtime::controller::{Action, Config, Controller};
use serde::de::DeserializeOwned;

use crate::{Context, Error, Result};

const BASE_DELAY: Duration = Duration::from_millis(5);
const MAX_DELAY: Duration = Duration::from_secs(1000);

/// Failures per key since its last success.
#[derive(Debug, Default)]
pub struct Backoff(Mutex<HashMap<String, u32>>);

impl Backoff {
    /// Records a failure of `key` and says how long to wait before its next try.
    pub fn failed(&self, key: &str) -> Duration {
        let mut failures = self.0.lock().expect("backoff lock");
        let n = failures.entry(key.to_string()).or_default();
        let delay = BASE_DELAY
            .saturating_mul(2u32.saturating_pow(*n))
            .min(MAX_DELAY);
        *n = n.saturating_add(1);
        delay
    }

    pub fn succeeded(&self, key: &str) {
        self.0.lock().expect("backoff lock").remove(key);
    }
}

/// `namespace/name`, or `name` for cluster-scoped objects: the queue's key.
pub fn key<K: Resource>(obj: &K) -> String {
    let meta = obj.meta();
    match &meta.namespace {
        Some(ns) => format!("{ns}/{}", meta.name.as_deref().unwrap_or_default()),
        None => meta.name.clone().unwrap_or_default(),
    }
}

struct State<F> {
    ctx: Arc<Context>,
    backoff: Backoff,
    reconcile: F,
    name: &'static str,
}

/// Runs `reconcile` for every object of `controller` until the task is aborted. A reconcile that
/// returns `Action::await_change()` is still run again after `ctx.resync`.
pub async fn drive<K, F, Fut>(
    name: &'static str,
    controller: Controller<K>,
    ctx: Arc<Context>,
    reconcile: F,
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    F: Fn(Arc<K>, Arc<Context>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Action>> + Send + 'static,
{
    let workers = ctx.workers.max(1);
    let state = Arc::new(State {
        ctx,
        backoff: Backoff::default(),
        reconcile,
        name,
    });
    controller
        .with_config(Config::default().concurrency(workers))
        .run(
            |obj: Arc<K>, state: Arc<State<F>>| {
                let key = key(obj.as_ref());
                let run = (state.reconcile)(obj, state.ctx.clone());
                async move {
                    // A panic ends this reconcile, not the controller (its task runs them all).
                    let action = std::panic::AssertUnwindSafe(run)
                        .catch_unwind()
                        .await
                        .map_err(|panic| {
                            let why = panic
                                .downcast_ref::<&str>()
                                .map(|s| s.to_string())
                                .or_else(|| panic.downcast_ref::<String>().cloned())
                                .unwrap_or_default();
                            Error::Panicked(why)
                        })??;
                    state.backoff.succeeded(&key);
                    if action == Action::await_change() {
                        return Ok(Action::requeue(state.ctx.resync));
                    }
                    Ok(action)
                }
            },
            |obj: Arc<K>, err: &Error, state: Arc<State<F>>| {
                let key = key(obj.as_ref());
                match err {
                    Error::Invalid(why) => {
                        tracing::info!(controller = state.name, %key, %why, "not acted on until it changes");
                        Action::await_change()
                    }
                    Error::Api(err) => {
                        let delay = state.backoff.failed(&key);
                        tracing::debug!(controller = state.name, %key, %err, ?delay, "retrying");
                        Action::requeue(delay)
                    }
                    Error::Panicked(why) => {
                        let delay = state.backoff.failed(&key);
                        tracing::error!(controller = state.name, %key, %why, ?delay, "reconcile panicked; retrying");
                        Action::requeue(delay)
                    }
                }
            },
            state.clone(),
        )
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!(controller = name, %err, "queue");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_resets_on_success() {
        let b = Backoff::default();
        assert_eq!(b.failed("a"), Duration::from_millis(5));
        assert_eq!(b.failed("a"), Duration::from_millis(10));
        assert_eq!(b.failed("a"), Duration::from_millis(20));
        assert_eq!(b.failed("b"), Duration::from_millis(5));
        for _ in 0..40 {
            b.failed("a");
        }
        assert_eq!(b.failed("a"), MAX_DELAY);
        b.succeeded("a");
        assert_eq!(b.failed("a"), Duration::from_millis(5));
    }
}
