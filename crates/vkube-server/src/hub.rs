//! One store watch for the whole server, fanned out to every client watch (upstream's watch
//! cache, reduced to its event window). It keeps the last [`WINDOW`] changes, so a client that
//! watches from a recent resourceVersion is served from memory; one older than the window gets
//! 410 Expired, as kube-apiserver answers.
//!
//! "Has the hub caught up with the store?" ([`Hub::sync`]) is answered as kube-apiserver's
//! consistent reads from its watch cache answer it: read the store's current revision, then ask
//! the watch for progress (etcd's `RequestProgress`) until it reports that revision. The store's
//! revision also moves with writes the hub never sees — other clusters on a shared etcd, keys
//! outside `/registry/` — so waiting for a change at that revision would wait in vain.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{broadcast, watch};
use vkube_store::{Event, EventKind, ProgressRequester, Revision, Store, StoreError, WatchItem};

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
    /// The current objects, fed by this hub's watch (cache/): what gets and lists read.
    pub cache: crate::cache::Cache,
    /// The store's current revision, read once for every request waiting (cache/).
    pub revisions: Arc<crate::cache::RevisionReads>,
    /// The revision up to which every change has been fed (by a change or a progress report);
    /// readiness and consistent decisions wait on it.
    fed: watch::Sender<Revision>,
    store: Arc<dyn Store>,
    /// Asks the current store watch for progress.
    progress: Mutex<ProgressRequester>,
    /// The admission webhook set, a view fed by this hub (set once at start; it lives here so
    /// the REST handlers reach it through `Api::hub`).
    pub webhooks: std::sync::OnceLock<Arc<crate::webhooks::WebhookView>>,
    /// The admission policy set (ValidatingAdmissionPolicy and bindings), likewise.
    pub admission_policies: std::sync::OnceLock<Arc<crate::admission_policy::PolicyView>>,
    /// API aggregation: the APIService view and the front-proxy identity, likewise.
    pub aggregation: std::sync::OnceLock<Arc<crate::aggregation::Aggregation>>,
}

/// How often a waiter asks again for progress (kube-apiserver's progress requester ticks at
/// 100 ms while a consistent read waits).
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// How often a cache whose list failed lists again.
const REFILL_EVERY: Duration = Duration::from_secs(10);

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

/// Runs a start-up load again when a compaction overtook the revision it pinned (another
/// cluster's periodic compaction of a shared etcd, or a migration's): the next attempt reads at
/// the store's new current revision. Without this a replica starting at that moment exited with
/// `revision N has been compacted`.
pub(crate) async fn retrying_compacted<T, F, Fut>(mut load: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    for _ in 0..20 {
        match load().await {
            Err(StoreError::Compacted { .. }) => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await
            }
            other => return other,
        }
    }
    load().await
}

impl Hub {
    /// Starts feeding from the store's current revision.
    pub async fn start(store: Arc<dyn Store>) -> Result<Arc<Hub>, StoreError> {
        let (from, watch) = retrying_compacted(|| async {
            let from = store.current_revision().await?;
            Ok((from, store.watch("/registry/", from).await?))
        })
        .await?;
        let hub = Arc::new(Hub {
            cache: crate::cache::Cache::default(),
            revisions: crate::cache::RevisionReads::new(store.clone()),
            window: Mutex::new(Window {
                changes: VecDeque::new(),
                oldest: from,
                last: from,
                tx: broadcast::channel(WINDOW).0,
            }),
            fed: watch::channel(from).0,
            store: store.clone(),
            progress: Mutex::new(ProgressRequester::default()),
            webhooks: std::sync::OnceLock::new(),
            admission_policies: std::sync::OnceLock::new(),
            aggregation: std::sync::OnceLock::new(),
        });
        hub.set_progress(watch.progress_requester());
        // Listed after the watch began: changes the list already holds are skipped as they
        // arrive. A list that fails (a value no encryption provider reads) leaves the cache
        // off; the feed tries again.
        hub.refill_cache().await;
        tokio::spawn(feed(Arc::downgrade(&hub), store, watch, from));
        Ok(hub)
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Fills the cache from a fresh list of everything (first fill, and rebuilds after a gap).
    pub(crate) async fn refill_cache(&self) {
        match crate::cache::list_all(self.store.as_ref()).await {
            Ok((items, revision)) => self.cache.replace(items, revision),
            Err(err) => tracing::warn!(%err, "watch cache: listing failed; reads use the store"),
        }
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

    fn set_progress(&self, requester: ProgressRequester) {
        *self.progress.lock().unwrap_or_else(|e| e.into_inner()) = requester;
    }

    fn request_progress(&self) {
        self.progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .request();
    }

    /// Waits until the hub has fed every change up to `revision`, asking the store watch for
    /// progress meanwhile so that a revision raised by writes it does not watch is reached too.
    pub async fn wait_for(&self, revision: Revision, timeout: Duration) -> bool {
        let mut rx = self.fed.subscribe();
        let reached = async {
            loop {
                if *rx.borrow_and_update() >= revision {
                    return true;
                }
                self.request_progress();
                // Asked again each tick: an answer may have been lost with a broken stream.
                if let Ok(Err(_)) = tokio::time::timeout(PROGRESS_EVERY, rx.changed()).await {
                    return false;
                }
            }
        };
        tokio::time::timeout(timeout, reached)
            .await
            .unwrap_or(false)
    }

    /// Waits (at most `timeout`) until the hub has fed everything up to the store's current
    /// revision, and returns the revision a view fed by the hub must have reached to be as
    /// current as the store: the last change at or below it. `None` when the store cannot be
    /// asked or the hub did not get there in time.
    pub async fn sync(&self, timeout: Duration) -> Option<Revision> {
        let deadline = tokio::time::Instant::now() + timeout;
        let now = tokio::time::timeout_at(deadline, self.revisions.current())
            .await
            .ok()?
            .ok()?;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if !self.wait_for(now, left).await {
            return None;
        }
        Some(self.last_change_at_or_below(now))
    }

    /// Waits until a view fed by the hub (its revision in `view`) reaches `target`, the answer of
    /// a [`Hub::sync`] (`None`: the store could not be asked), for at most `wait`; says so in
    /// the log when it does not. Shared by the views a write consults (DESIGN rule 2).
    pub(crate) async fn view_reach(
        view: &watch::Sender<Revision>,
        target: Option<Revision>,
        wait: Duration,
        what: &str,
    ) {
        let Some(target) = target else {
            tracing::warn!("{what}: the store's revision could not be reached in time");
            return;
        };
        let mut rx = view.subscribe();
        if tokio::time::timeout(wait, rx.wait_for(|r| *r >= target))
            .await
            .is_err()
        {
            tracing::warn!(target, "{what}: behind the store");
        }
    }

    /// The revision of the last change at or below `revision`; when the window no longer holds
    /// one, a bound the views reach by taking the changes they have been sent.
    fn last_change_at_or_below(&self, revision: Revision) -> Revision {
        let w = self.window();
        w.changes
            .iter()
            .rev()
            .map(|c| c.revision)
            .find(|r| *r <= revision)
            .unwrap_or(w.oldest.min(revision))
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
        // The cache first: a reader that sees `fed` at this revision finds it applied.
        self.cache
            .apply(&event.key, event.value.clone(), event.revision);
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
        self.progressed(change.revision);
    }

    /// Every change up to `revision` has been fed.
    fn progressed(&self, revision: Revision) {
        self.cache.advance(revision);
        self.fed.send_if_modified(|fed| {
            let moved = revision > *fed;
            *fed = (*fed).max(revision);
            moved
        });
    }

    /// After a gap (the store compacted past us), every subscriber must start over: a new
    /// channel closes the old receivers, and the window restarts empty.
    pub(crate) fn reset(&self, at: Revision) {
        let mut w = self.window();
        w.changes.clear();
        w.oldest = at;
        w.last = at;
        w.tx = broadcast::channel(WINDOW).0;
        drop(w);
        // Changes were missed: the cache is rebuilt from a list before it answers again.
        self.cache.invalidate();
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
        let off = hub.upgrade().is_some_and(|hub| !hub.cache.valid());
        let next = if off {
            if let Some(hub) = hub.upgrade() {
                hub.refill_cache().await;
            }
            // Tried again a while later if still off, even with no change to wake it.
            tokio::time::timeout(REFILL_EVERY, watch.next_item()).await
        } else {
            Ok(watch.next_item().await)
        };
        let Ok(next) = next else { continue };
        match next {
            Some(Ok(WatchItem::Event(event))) => {
                let Some(hub) = hub.upgrade() else { return };
                last = event.revision;
                hub.push(event);
            }
            Some(Ok(WatchItem::Progress(at))) => {
                let Some(hub) = hub.upgrade() else { return };
                last = last.max(at);
                hub.progressed(at);
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
                    Ok(w) => {
                        if let Some(hub) = hub.upgrade() {
                            hub.set_progress(w.progress_requester());
                        }
                        watch = w;
                    }
                    Err(StoreError::Compacted { .. }) => match store.current_revision().await {
                        Ok(now) => {
                            if let Some(hub) = hub.upgrade() {
                                hub.reset(now);
                            }
                            last = now;
                            if let Ok(w) = store.watch("/registry/", now).await {
                                if let Some(hub) = hub.upgrade() {
                                    hub.set_progress(w.progress_requester());
                                }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 17, defect 6: readiness waits for the store's revision; writes outside the hub's
    /// watch (another cluster's on a shared etcd) raise it without a change for the hub, and the
    /// hub must still get there at once, through its watch's progress report.
    #[tokio::test]
    async fn the_current_revision_is_reached_without_a_change_at_it() {
        let store: Arc<dyn Store> = vkube_store::MemoryStore::new();
        let hub = Hub::start(store.clone()).await.unwrap();
        let mine = store
            .create("/registry/pods/a/b", b"{}".to_vec(), None)
            .await
            .unwrap();
        for i in 0..3 {
            store
                .create(&format!("/elsewhere/{i}"), b"{}".to_vec(), None)
                .await
                .unwrap();
        }
        let now = store.current_revision().await.unwrap();
        let started = tokio::time::Instant::now();
        assert!(hub.wait_for(now, Duration::from_secs(2)).await);
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "waited {:?}",
            started.elapsed()
        );
        // A view is as current as the store once it has the last change at or below it.
        assert_eq!(
            hub.sync(Duration::from_secs(2)).await,
            Some(mine.mod_revision)
        );
        assert_eq!(hub.last(), mine.mod_revision);
    }

    /// Progress never runs ahead of a change: a sync after a write under /registry/ names it.
    #[tokio::test]
    async fn sync_names_the_last_change_of_its_own() {
        let store: Arc<dyn Store> = vkube_store::MemoryStore::new();
        let hub = Hub::start(store.clone()).await.unwrap();
        for i in 0..20 {
            store
                .create(&format!("/elsewhere/{i}"), b"{}".to_vec(), None)
                .await
                .unwrap();
            let mine = store
                .create(&format!("/registry/pods/a/{i}"), b"{}".to_vec(), None)
                .await
                .unwrap();
            assert_eq!(
                hub.sync(Duration::from_secs(2)).await,
                Some(mine.mod_revision)
            );
            let (past, _) = hub.subscribe(mine.mod_revision - 1).unwrap();
            assert_eq!(past.last().map(|c| c.revision), Some(mine.mod_revision));
        }
    }
}
