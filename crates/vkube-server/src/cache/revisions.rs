//! Coalesced reads of the store's current revision (etcd's ReadIndex batching): a consistent
//! read needs a revision read that *started after the request arrived*; every request that
//! arrives while one read is in flight shares the next one, so a thousand concurrent gets cost
//! two or three store round trips instead of a thousand.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use vkube_store::{Revision, Store, StoreError};

/// The outcome of one round: its number, and the revision (or the error's text).
#[derive(Clone)]
struct Done {
    round: u64,
    result: Result<Revision, String>,
}

struct State {
    /// The number of the last round started.
    started: u64,
    /// Whether that round is still in flight.
    running: bool,
}

pub struct RevisionReads {
    store: Arc<dyn Store>,
    state: Mutex<State>,
    done: watch::Sender<Done>,
    /// Rounds that reached the store (tests and metrics read it).
    rounds: std::sync::atomic::AtomicU64,
}

impl RevisionReads {
    pub fn new(store: Arc<dyn Store>) -> Arc<RevisionReads> {
        Arc::new(RevisionReads {
            store,
            state: Mutex::new(State {
                started: 0,
                running: false,
            }),
            done: watch::channel(Done {
                round: 0,
                result: Err(String::new()),
            })
            .0,
            rounds: Default::default(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The store's current revision, read by a round that started after this call began. The
    /// round runs in a task of its own, so a caller that gives up (a timeout, a client gone)
    /// never leaves the others waiting on a read nobody finishes.
    pub async fn current(self: &Arc<Self>) -> Result<Revision, StoreError> {
        let mut rx = self.done.subscribe();
        // Any round started before now may have read the revision before a write this request
        // must see; the next one to start cannot have.
        let want = self.state().started + 1;
        loop {
            {
                let mut state = self.state();
                let done = rx.borrow_and_update().clone();
                if done.round >= want {
                    return done.result.map_err(|message| StoreError::Backend {
                        backend: self.store.backend(),
                        message,
                    });
                }
                if !state.running {
                    state.running = true;
                    state.started += 1;
                    tokio::spawn(self.clone().read(state.started));
                }
            }
            if rx.changed().await.is_err() {
                return Err(StoreError::Backend {
                    backend: self.store.backend(),
                    message: "revision reads stopped".into(),
                });
            }
        }
    }

    async fn read(self: Arc<Self>, round: u64) {
        self.rounds
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let result = self
            .store
            .current_revision()
            .await
            .map_err(|e| e.to_string());
        // Published under the state lock: a waiter that checks under it either sees this round
        // done or is woken by it.
        let mut state = self.state();
        state.running = false;
        self.done.send_replace(Done { round, result });
    }

    /// How many rounds have reached the store.
    pub fn rounds(&self) -> u64 {
        self.rounds.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1000 concurrent readers share a handful of store round trips, and each gets a revision
    /// at least as new as every write made before it asked.
    #[tokio::test]
    async fn concurrent_reads_share_rounds() {
        let store: Arc<dyn Store> = vkube_store::MemoryStore::new();
        let reads = RevisionReads::new(store.clone());
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..1000 {
            let (reads, store) = (reads.clone(), store.clone());
            tasks.spawn(async move {
                let written = if i % 100 == 0 {
                    let kv = store
                        .create(&format!("/k/{i}"), b"{}".to_vec(), None)
                        .await
                        .unwrap();
                    kv.mod_revision
                } else {
                    0
                };
                let seen = reads.current().await.unwrap();
                assert!(
                    seen >= written,
                    "read {seen} before its own write {written}"
                );
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
        assert!(
            reads.rounds() < 100,
            "{} rounds for 1000 reads",
            reads.rounds()
        );
        assert_eq!(
            reads.current().await.unwrap(),
            store.current_revision().await.unwrap()
        );
    }

    /// A reader that gives up does not strand the round it started.
    #[tokio::test]
    async fn an_abandoned_read_still_finishes_its_round() {
        let store: Arc<dyn Store> = vkube_store::MemoryStore::new();
        let reads = RevisionReads::new(store.clone());
        let abandoned = tokio::spawn({
            let reads = reads.clone();
            async move { reads.current().await }
        });
        abandoned.abort();
        store.create("/k", b"{}".to_vec(), None).await.unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(2), reads.current())
            .await
            .expect("not stranded")
            .unwrap();
        assert_eq!(got, store.current_revision().await.unwrap());
    }
}
