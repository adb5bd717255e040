//! The in-memory backend: the log model of `log.rs` in a `BTreeMap`, for fast tests of the upper
//! layers. It passes the same conformance suite as the durable backends, and shares their write
//! rule (`log::plan`) and watch loop.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::Store;
use crate::error::{Result, StoreError, check_key};
use crate::kv::{Event, KeyValue, ListOptions, ListResult, Revision, prefix_end};
use crate::log::{self, Append, Expiring, Row, Tasks, Write};
use crate::watch::{LogSource, Watch, watch_log};

pub struct MemoryStore {
    state: Mutex<State>,
    committed: watch::Sender<Revision>,
    me: Weak<MemoryStore>,
    tasks: Tasks,
}

#[derive(Default)]
struct State {
    revision: Revision,
    compacted: Revision,
    log: BTreeMap<Revision, Row>,
    /// Each key's row revisions, oldest first.
    history: BTreeMap<String, Vec<Revision>>,
    /// Expiry (ms since the epoch) of rows written with a TTL.
    expires: BTreeMap<Revision, i64>,
}

impl State {
    fn row_at(&self, key: &str, at: Revision) -> Option<&Row> {
        let revs = self.history.get(key)?;
        let i = revs.partition_point(|r| *r <= at);
        let rev = revs.get(i.checked_sub(1)?)?;
        self.log.get(rev)
    }
}

impl MemoryStore {
    pub fn new() -> Arc<Self> {
        let store = Arc::new_cyclic(|me| MemoryStore {
            state: Mutex::default(),
            committed: watch::channel(0).0,
            me: me.clone(),
            tasks: Tasks::default(),
        });
        store
            .tasks
            .add(log::spawn_ttl_sweeper(Arc::downgrade(&store)));
        store
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Append for MemoryStore {
    async fn append(
        &self,
        key: &str,
        op: Write,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<(Row, Option<KeyValue>)> {
        check_key(key)?;
        let mut st = self.state();
        let latest = st.row_at(key, Revision::MAX).cloned();
        if let Some(old) = &latest {
            st.expires.remove(&old.revision);
        }
        let (row, prev) = log::plan(key, op, latest, value)?;
        st.revision += 1;
        let row = row.at(st.revision);
        st.history
            .entry(key.to_string())
            .or_default()
            .push(row.revision);
        if let Some(at) = log::expiry(ttl) {
            st.expires.insert(row.revision, at);
        }
        st.log.insert(row.revision, row.clone());
        self.committed.send_replace(st.revision);
        Ok((row, prev))
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn get(&self, key: &str, revision: Option<Revision>) -> Result<Option<KeyValue>> {
        let st = self.state();
        let at = revision.unwrap_or(st.revision);
        log::check_read_revision(at, st.revision, st.compacted)?;
        Ok(st
            .row_at(key, at)
            .filter(|r| !r.deleted)
            .cloned()
            .map(Row::kv))
    }

    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListResult> {
        let st = self.state();
        let at = options.revision.unwrap_or(st.revision);
        log::check_read_revision(at, st.revision, st.compacted)?;
        let start = match &options.start_after {
            Some(after) if after.as_str() >= prefix => Bound::Excluded(after.clone()),
            _ => Bound::Included(prefix.to_string()),
        };
        let end = prefix_end(prefix).map_or(Bound::Unbounded, Bound::Excluded);
        let limit = options.limit.unwrap_or(usize::MAX);
        let mut items = Vec::new();
        let mut more = false;
        for key in st.history.range((start, end)).map(|(k, _)| k) {
            if let Some(row) = st.row_at(key, at).filter(|r| !r.deleted) {
                if items.len() == limit {
                    more = true;
                    break;
                }
                items.push(row.clone().kv());
            }
        }
        Ok(ListResult {
            items,
            revision: at,
            more,
        })
    }

    async fn create(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> Result<KeyValue> {
        self.append_create(key, value, ttl).await
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
        ttl: Option<Duration>,
    ) -> Result<KeyValue> {
        self.append_update(key, value, expected, ttl).await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(KeyValue, Revision)> {
        self.append_delete(key, expected).await
    }

    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.state().revision)
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let mut guard = self.state();
        let st = &mut *guard;
        log::check_compact(revision, st.revision, st.compacted)?;
        for revs in st.history.values_mut() {
            let keep_from = revs.partition_point(|r| *r <= revision).saturating_sub(1);
            let newest_old = revs.get(keep_from).copied();
            let mut drop: Vec<Revision> = revs.drain(..keep_from).collect();
            if let Some(rev) = newest_old.filter(|r| *r <= revision && st.log[r].deleted) {
                revs.retain(|r| *r != rev);
                drop.push(rev);
            }
            for rev in drop {
                st.log.remove(&rev);
                st.expires.remove(&rev);
            }
        }
        st.history.retain(|_, revs| !revs.is_empty());
        st.compacted = revision;
        Ok(())
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<Watch> {
        let me = self
            .me
            .upgrade()
            .ok_or_else(|| StoreError::closed("memory"))?;
        watch_log(me, self.committed.subscribe(), prefix, from).await
    }
}

#[async_trait]
impl LogSource for MemoryStore {
    async fn events_after(
        &self,
        prefix: &str,
        after: Revision,
        limit: usize,
    ) -> Result<(Vec<Event>, Revision)> {
        let st = self.state();
        if after < st.compacted {
            return Err(StoreError::Compacted {
                requested: after,
                compact_revision: st.compacted,
            });
        }
        let mut events = Vec::new();
        for row in st.log.range(after + 1..).map(|(_, r)| r) {
            if !row.key.starts_with(prefix) {
                continue;
            }
            let prev = st.log.get(&row.prev_revision).cloned();
            events.push(row.clone().event(prev));
            if events.len() == limit {
                return Ok((events, row.revision));
            }
        }
        Ok((events, st.revision.max(after)))
    }
}

#[async_trait]
impl Expiring for MemoryStore {
    async fn expired(&self) -> Result<Vec<(String, Revision)>> {
        let st = self.state();
        let now = log::now_millis();
        Ok(st
            .expires
            .iter()
            .filter(|(_, at)| **at <= now)
            .filter_map(|(rev, _)| st.log.get(rev))
            .filter(|row| {
                !row.deleted
                    && st.row_at(&row.key, Revision::MAX).map(|r| r.revision) == Some(row.revision)
            })
            .map(|row| (row.key.clone(), row.revision))
            .collect())
    }
}
