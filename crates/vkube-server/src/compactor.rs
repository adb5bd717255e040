//! Periodic compaction, as kube-apiserver runs it against etcd: every interval, discard history
//! older than the revision the store had one interval ago. Watchers and list continuations older
//! than that get 410 Gone; the store stops growing with every write ever made.
//! With several replicas each runs it; the losers of a race get `Compacted`, which is harmless.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::AbortHandle;
use vkube_store::{Store, StoreError};

pub fn start(store: Arc<dyn Store>, interval: Duration) -> AbortHandle {
    tokio::spawn(async move {
        let mut previous = None;
        loop {
            tokio::time::sleep(interval).await;
            let current = match store.current_revision().await {
                Ok(r) => r,
                Err(err) => {
                    tracing::warn!(%err, "compactor: reading the revision failed");
                    continue;
                }
            };
            if let Some(target) = previous.filter(|t| *t > 0) {
                match store.compact(target).await {
                    Ok(()) => tracing::debug!(revision = target, "compacted"),
                    Err(StoreError::Compacted { .. }) => {}
                    Err(err) => tracing::warn!(%err, revision = target, "compaction failed"),
                }
            }
            previous = Some(current);
        }
    })
    .abort_handle()
}

#[cfg(test)]
mod tests {
    use super::*;

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
