//! Periodic compaction, as kube-apiserver runs it against etcd: every interval, discard history
//! older than the revision the store had one interval ago. Watchers and list continuations older
//! than that get 410 Gone; the store stops growing with every write ever made.
//! Every replica runs it. On etcd, whose compaction is shared by every cluster on it, the rounds
//! coordinate through kube-apiserver's `compact_rev_key`, so N compactors compact once per
//! interval ([`Store::compact_round`]); elsewhere the losers of a race get `Compacted`, which is
//! harmless.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::AbortHandle;
use vkube_store::{Compaction, Store};

pub fn start(store: Arc<dyn Store>, interval: Duration) -> AbortHandle {
    tokio::spawn(async move {
        let mut state = Compaction::default();
        loop {
            tokio::time::sleep(interval).await;
            match store.compact_round(state).await {
                Ok(next) => {
                    if let Some(revision) = next.compacted {
                        tracing::debug!(revision, "compacted");
                    }
                    state = next;
                }
                Err(err) => tracing::warn!(%err, "compaction round failed"),
            }
        }
    })
    .abort_handle()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vkube_store::StoreError;

    #[tokio::test]
    async fn history_older_than_one_interval_is_compacted() {
        let store: Arc<dyn Store> = vkube_store::MemoryStore::new();
        let first = store
            .create("/registry/x/a", b"1".to_vec(), None)
            .await
            .unwrap();
        store
            .update("/registry/x/a", b"2".to_vec(), first.mod_revision, None)
            .await
            .unwrap();
        let task = start(store.clone(), Duration::from_millis(50));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match store.get("/registry/x/a", Some(first.mod_revision)).await {
                Err(StoreError::Compacted {
                    compact_revision, ..
                }) => {
                    assert_eq!(compact_revision, 2);
                    break;
                }
                Ok(_) => assert!(
                    tokio::time::Instant::now() < deadline,
                    "not compacted within 5 s"
                ),
                Err(err) => panic!("{err}"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The current state survives compaction.
        assert_eq!(
            store
                .get("/registry/x/a", None)
                .await
                .unwrap()
                .unwrap()
                .value,
            b"2"
        );
        task.abort();
    }
}
