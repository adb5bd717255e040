//! Watch streams, and the one watch loop the log-backed stores (memory, SQLite, PostgreSQL) share.
//!
//! Those stores keep every write as a row of a log keyed by revision, and commit revisions in order
//! (see `log.rs`), so "every event after revision R" is a range scan. A watcher scans, delivers, and
//! then sleeps until the store says a revision above the last one it covered was committed. It never
//! sleeps on a timer, and it never skips: each scan starts right after the revision the previous scan
//! covered.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;

use crate::error::{Result, StoreError};
use crate::kv::{Event, Revision};

/// How many events one scan reads; also the depth of a watch's buffer.
const BATCH: usize = 512;

/// A stream of events in revision order. Dropping it stops the watch.
///
/// It yields `Err` at most once, as its last item: [`StoreError::Compacted`] if the watcher fell
/// behind a compaction, or a backend error. Watch again from the last revision seen to resume.
pub struct Watch {
    rx: mpsc::Receiver<Result<Event>>,
    task: AbortHandle,
}

impl Watch {
    pub(crate) fn new(rx: mpsc::Receiver<Result<Event>>, task: AbortHandle) -> Self {
        Watch { rx, task }
    }

    /// The next event; `None` once the watch has ended.
    pub async fn next(&mut self) -> Option<Result<Event>> {
        self.rx.recv().await
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
    let task = tokio::spawn(async move {
        let mut batch = Ok(first);
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
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
            if !full && committed.wait_for(|rev| *rev > covered).await.is_err() {
                let _ = tx.send(Err(StoreError::closed("store"))).await;
                return;
            }
            batch = source.events_after(&prefix, covered, BATCH).await;
        }
    });
    Ok(Watch::new(rx, task.abort_handle()))
}
