//! Watch streams, and the one watch loop the log-backed stores (memory, SQLite, PostgreSQL) share.
//!
//! Those stores keep every write as a row of a log keyed by revision, and commit revisions in order
//! (see `log.rs`), so "every event after revision R" is a range scan. A watcher scans, delivers, and
//! then sleeps until the store says a revision above the last one it covered was committed. It never
//! sleeps on a timer, and it never skips: each scan starts right after the revision the previous scan
//! covered.
//!
//! A watch also answers progress requests (etcd's `RequestProgress`): a [`WatchItem::Progress`]
//! in the stream, after every event up to its revision, tells the consumer how far the watch has
//! come when nothing under its prefix changed. That is what lets a consumer wait for "the store's
//! current revision" without waiting for a write under its own prefix at that revision, which
//! never comes when the revision was raised by a write elsewhere (another cluster sharing an etcd,
//! or keys outside the prefix).

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::AbortHandle;

use crate::error::{Result, StoreError};
use crate::kv::{Event, Revision};

/// How many events one scan reads; also the depth of a watch's buffer.
const BATCH: usize = 512;

/// One item of a watch stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchItem {
    Event(Event),
    /// Every event under the watch's prefix up to this revision has been delivered before this
    /// item (etcd's progress notification). Sent after a [`ProgressRequester::request`], and
    /// whenever the backend volunteers one.
    Progress(Revision),
}

/// A stream of events in revision order. Dropping it stops the watch.
///
/// It yields `Err` at most once, as its last item: [`StoreError::Compacted`] if the watcher fell
/// behind a compaction, or a backend error. Watch again from the last revision seen to resume.
pub struct Watch {
    rx: mpsc::Receiver<Result<WatchItem>>,
    task: AbortHandle,
    progress: ProgressRequester,
}

/// Asks a watch to report its progress; cloneable, so a consumer that hands the stream to a task
/// can still ask from elsewhere.
#[derive(Clone, Debug, Default)]
pub struct ProgressRequester(Arc<Notify>);

impl ProgressRequester {
    /// Asks for a [`WatchItem::Progress`]. Requests made before the watch gets to them count
    /// once: one answer serves them all.
    pub fn request(&self) {
        self.0.notify_one();
    }

    pub(crate) async fn requested(&self) {
        self.0.notified().await;
    }
}

impl Watch {
    pub(crate) fn new(
        rx: mpsc::Receiver<Result<WatchItem>>,
        task: AbortHandle,
        progress: ProgressRequester,
    ) -> Self {
        Watch { rx, task, progress }
    }

    /// This watch with every event passed through `f` (a store decorator's view of the
    /// values). Progress requests still reach this watch; dropping the result stops both.
    pub(crate) fn map(self, f: impl Fn(Event) -> Event + Send + 'static) -> Watch {
        let progress = self.progress.clone();
        let (tx, rx) = mpsc::channel(BATCH);
        let mut inner = self;
        let task = tokio::spawn(async move {
            while let Some(item) = inner.next_item().await {
                let item = match item {
                    Ok(WatchItem::Event(event)) => Ok(WatchItem::Event(f(event))),
                    other => other,
                };
                if tx.send(item).await.is_err() {
                    return;
                }
            }
        });
        Watch::new(rx, task.abort_handle(), progress)
    }

    /// The next event, skipping progress reports; `None` once the watch has ended.
    pub async fn next(&mut self) -> Option<Result<Event>> {
        loop {
            match self.rx.recv().await? {
                Ok(WatchItem::Progress(_)) => {}
                Ok(WatchItem::Event(event)) => return Some(Ok(event)),
                Err(err) => return Some(Err(err)),
            }
        }
    }

    /// The next event or progress report; `None` once the watch has ended.
    pub async fn next_item(&mut self) -> Option<Result<WatchItem>> {
        self.rx.recv().await
    }

    /// Asks for a progress report (see [`WatchItem::Progress`]).
    pub fn request_progress(&self) {
        self.progress.request();
    }

    /// A handle that asks this watch for progress reports.
    pub fn progress_requester(&self) -> ProgressRequester {
        self.progress.clone()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A store whose history is a log of rows by revision.
#[async_trait]
pub(crate) trait LogSource: Send + Sync + 'static {
    /// Up to `limit` events under `prefix` with a revision above `after`, in order, read from one
    /// snapshot, and the revision that snapshot covers: the current revision, or the last event's
    /// when the limit cut the scan short. Fails with `Compacted` if `after` is below the compaction.
    async fn events_after(
        &self,
        prefix: &str,
        after: Revision,
        limit: usize,
    ) -> Result<(Vec<Event>, Revision)>;
}

/// Starts a watch over a log. The first scan runs before this returns, so a start below the
/// compacted revision is an error of the call, not of the stream.
pub(crate) async fn watch_log(
    source: Arc<dyn LogSource>,
    mut committed: watch::Receiver<Revision>,
    prefix: &str,
    from: Revision,
) -> Result<Watch> {
    let first = source.events_after(prefix, from, BATCH).await?;
    let prefix = prefix.to_string();
    let (tx, rx) = mpsc::channel(BATCH);
    let progress = ProgressRequester::default();
    let requests = progress.clone();
    let task = tokio::spawn(async move {
        let mut batch = Ok(first);
        let mut requested = false;
        loop {
            let (events, covered) = match batch {
                Ok(b) => b,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            let full = events.len() >= BATCH;
            for event in events {
                if tx.send(Ok(WatchItem::Event(event))).await.is_err() {
                    return;
                }
            }
            if !full {
                // A scan that was not cut short covered every commit up to `covered`, whatever
                // its key: that is the progress a request asks about.
                if std::mem::take(&mut requested)
                    && tx.send(Ok(WatchItem::Progress(covered))).await.is_err()
                {
                    return;
                }
                tokio::select! {
                    closed = async { committed.wait_for(|rev| *rev > covered).await.is_err() } => {
                        if closed {
                            let _ = tx.send(Err(StoreError::closed("store"))).await;
                            return;
                        }
                    }
                    // Scan again before answering: a commit may have landed meanwhile.
                    () = requests.requested() => requested = true,
                }
            }
            batch = source.events_after(&prefix, covered, BATCH).await;
        }
    });
    Ok(Watch::new(rx, task.abort_handle(), progress))
}
