//! One store watch for the whole server, fanned out to every client watch (upstream's watch
//! cache, reduced to its event window). It keeps the last [`WINDOW`] changes, so a client that
//! watches from a recent resourceVersion is served from memory; one older than the window gets
//! 410 Expired, as kube-apiserver answers.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{broadcast, watch};
use vkube_store::{Event, EventKind, Revision, Store, StoreError};

use vkube_api::object::set_resource_version;

/// Changes kept for watchers that start in the past.
const WINDOW: usize = 10_000;

/// One write under `/registry/`, decoded.
#[derive(Debug)]
pub struct Change {
    pub revision: Revision,
    pub key: String,
    /// The object after the write (`None` for a delete), with its resourceVersion.
    pub object: Option<Value>,
    /// The object before the write, with its resourceVersion.
    pub prev: Option<Value>,
}

struct Window {
    changes: VecDeque<Arc<Change>>,
    /// Every change after this revision is in `changes`.
    oldest: Revision,
    /// The revision of the last change seen.
    last: Revision,
    tx: broadcast::Sender<Arc<Change>>,
}

pub struct Hub {
    window: Mutex<Window>,
    /// The last revision fed; readiness waits on it.
    fed: watch::Sender<Revision>,
}

/// The changes still in the window after a revision, and a receiver of every later one.
pub type Subscription = (Vec<Arc<Change>>, broadcast::Receiver<Arc<Change>>);

/// A watch that starts before the window.
#[derive(Debug)]
pub struct TooOld {
    pub requested: Revision,
    pub oldest: Revision,
}

fn decode(kv: &vkube_store::KeyValue) -> Option<Value> {
    let mut obj: Value = serde_json::from_slice(&kv.value).ok()?;
    set_resource_version(&mut obj, kv.mod_revision);
    Some(obj)
}

impl Hub {
    /// Starts feeding from the store's current revision.
    pub async fn start(store: Arc<dyn Store>) -> Result<Arc<Hub>, StoreError> {
        let from = store.current_revision().await?;
        let hub = Arc::new(Hub {
            window: Mutex::new(Window {
                changes: VecDeque::new(),
                oldest: from,
                last: from,
                tx: broadcast::channel(WINDOW).0,
            }),
            fed: watch::channel(from).0,
        });
        let watch = store.watch("/registry/", from).await?;
        tokio::spawn(feed(Arc::downgrade(&hub), store, watch, from));
        Ok(hub)
    }

    fn window(&self) -> MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The changes after `after` still in the window, and a receiver for every later one.
    pub fn subscribe(&self, after: Revision) -> Result<Subscription, TooOld> {
        let w = self.window();
        if after < w.oldest {
            return Err(TooOld {
                requested: after,
                oldest: w.oldest + 1,
            });
        }
        let past = w
            .changes
            .iter()
            .filter(|c| c.revision > after)
            .cloned()
            .collect();
        Ok((past, w.tx.subscribe()))
    }

    /// Waits until the hub has fed every change up to `revision`.
    pub async fn wait_for(&self, revision: Revision, timeout: Duration) -> bool {
        let mut rx = self.fed.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|r| *r >= revision))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    pub fn last(&self) -> Revision {
        self.window().last
    }

    /// Feeds a watch-fed view forever, from revision `at`: every change to `take`, in order;
    /// when the window no longer reaches back to where the view is, `reload` lists afresh and
    /// returns the revision to go on from (`what` names the view in the log when it fails).
    pub async fn follow<R>(
        self: Arc<Self>,
        mut at: Revision,
        what: &str,
        take: impl Fn(&Change),
        reload: impl Fn() -> R,
    ) where
        R: std::future::Future<Output = Result<Revision, StoreError>>,
    {
        loop {
            let Ok((past, mut rx)) = self.subscribe(at) else {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                match reload().await {
                    Ok(now) => at = now,
                    Err(err) => tracing::warn!(%err, "{what}: reloading failed"),
                }
                continue;
            };
            for change in past {
                take(&change);
                at = change.revision;
            }
            while let Ok(change) = rx.recv().await {
                take(&change);
                at = change.revision;
            }
        }
    }

    fn push(&self, event: Event) {
        let change = Arc::new(Change {
            revision: event.revision,
            object: event.value.as_ref().and_then(decode),
            prev: event.prev.as_ref().and_then(decode).map(|mut p| {
                if event.kind == EventKind::Delete {
                    // A DELETED event carries the object at the revision of the delete.
                    set_resource_version(&mut p, event.revision);
                }
                p
            }),
            key: event.key,
        });
        let mut w = self.window();
        w.last = change.revision;
        w.changes.push_back(change.clone());
        while w.changes.len() > WINDOW {
            if let Some(old) = w.changes.pop_front() {
                w.oldest = old.revision;
            }
        }
        let _ = w.tx.send(change.clone());
        drop(w);
        self.fed.send_replace(change.revision);
    }

    /// After a gap (the store compacted past us), every subscriber must start over: a new
    /// channel closes the old receivers, and the window restarts empty.
    fn reset(&self, at: Revision) {
        let mut w = self.window();
        w.changes.clear();
        w.oldest = at;
        w.last = at;
        w.tx = broadcast::channel(WINDOW).0;
        drop(w);
        self.fed.send_replace(at);
    }
}

async fn feed(
    hub: std::sync::Weak<Hub>,
    store: Arc<dyn Store>,
    mut watch: vkube_store::Watch,
    mut last: Revision,
) {
    loop {
        match watch.next().await {
            Some(Ok(event)) => {
                let Some(hub) = hub.upgrade() else { return };
                last = event.revision;
                hub.push(event);
            }
            other => {
                if let Some(Err(err)) = &other {
                    tracing::warn!(%err, "store watch ended; resuming");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                if hub.strong_count() == 0 {
                    return;
                }
                match store.watch("/registry/", last).await {
                    Ok(w) => watch = w,
                    Err(StoreError::Compacted { .. }) => match store.current_revision().await {
                        Ok(now) => {
                            if let Some(hub) = hub.upgrade() {
                                hub.reset(now);
                            }
                            last = now;
                            if let Ok(w) = store.watch("/registry/", now).await {
                                watch = w;
                            }
                        }
                        Err(err) => tracing::warn!(%err, "store unavailable"),
                    },
                    Err(err) => tracing::warn!(%err, "store watch failed"),
                }
            }
        }
    }
}
