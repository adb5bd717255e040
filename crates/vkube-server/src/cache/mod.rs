//! The watch cache (issue 18): every object under `/registry/` as its stored bytes, fed by the
//! hub's one store watch, and the revision it reflects. Gets and lists are answered from it once
//! it has reached the store's *current* revision (read through [`RevisionReads`], coalesced), so
//! an answer is never older than a write any client saw acknowledged (DESIGN rule 3's catch-up
//! rule, applied to every read). Whatever the cache cannot answer exactly goes to the store as
//! before: reads at an older revision, continued lists, a cache being rebuilt, a value the
//! encryption providers could not read.
//!
//! The cache is rebuilt (listed aside and swapped in whole, DESIGN rule 2) when the hub's watch
//! lost its place to a compaction; until then it is marked invalid and every read uses the store.

mod revisions;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

pub use revisions::RevisionReads;
use serde_json::Value;
use serde_json::value::RawValue;
use vkube_store::{KeyValue, ListOptions, Revision, StoreError};

use crate::hub::Hub;

/// How long a consistent read waits for the cache to reach the store's revision before it reads
/// the store instead (a healthy watch delivers within milliseconds).
const CATCH_UP: Duration = Duration::from_secs(1);

/// One cached object: its store record, and what lists derive from it, computed once.
pub struct Entry {
    pub kv: KeyValue,
    /// The metadata fields selectors read (`name`, `namespace`, `labels`).
    pub(crate) shell: OnceLock<Value>,
    /// The object as a typed list item (resourceVersion set, apiVersion and kind dropped).
    pub(crate) item: OnceLock<Box<RawValue>>,
}

impl Entry {
    pub fn new(kv: KeyValue) -> Entry {
        Entry {
            kv,
            shell: OnceLock::new(),
            item: OnceLock::new(),
        }
    }

    /// A stored value the encryption providers could not read reaches the watch as it is
    /// stored (not a JSON object); the store answers reads of it with its own error.
    fn readable(&self) -> bool {
        self.kv.value.first() == Some(&b'{')
    }
}

#[derive(Default)]
struct Objects {
    by_key: BTreeMap<String, Arc<Entry>>,
    /// Every change up to this revision is applied.
    revision: Revision,
    /// False until the first list and while a rebuild is due.
    valid: bool,
}

#[derive(Default)]
pub struct Cache {
    objects: RwLock<Objects>,
}

/// What the cache knows of one key at a revision.
pub enum Lookup {
    Found(Arc<Entry>),
    Absent,
    /// Not answerable from the cache: ask the store.
    Unknown,
}

impl Cache {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Objects> {
        self.objects.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Objects> {
        self.objects.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces everything with a fresh list read at `revision` (built aside, swapped in whole).
    pub fn replace(&self, items: Vec<KeyValue>, revision: Revision) {
        let by_key = items
            .into_iter()
            .map(|kv| (kv.key.clone(), Arc::new(Entry::new(kv))))
            .collect();
        *self.write() = Objects {
            by_key,
            revision,
            valid: true,
        };
    }

    /// Until the next [`Cache::replace`], every read goes to the store.
    pub fn invalidate(&self) {
        let mut objects = self.write();
        objects.valid = false;
        objects.by_key.clear();
    }

    /// Applies one write: `value` after it, `None` for a delete.
    pub fn apply(&self, key: &str, value: Option<KeyValue>, revision: Revision) {
        let mut objects = self.write();
        // A list read after the watch began already holds the changes it then delivers.
        if !objects.valid || revision <= objects.revision {
            return;
        }
        match value {
            Some(kv) => {
                objects
                    .by_key
                    .insert(key.to_string(), Arc::new(Entry::new(kv)));
            }
            None => {
                objects.by_key.remove(key);
            }
        }
        objects.revision = objects.revision.max(revision);
    }

    /// Every change up to `revision` has been applied (a progress report).
    pub fn advance(&self, revision: Revision) {
        let mut objects = self.write();
        objects.revision = objects.revision.max(revision);
    }

    /// `key` as of a revision at or after `at_least`.
    pub fn get(&self, key: &str, at_least: Revision) -> Lookup {
        let objects = self.read();
        if !objects.valid || objects.revision < at_least {
            return Lookup::Unknown;
        }
        match objects.by_key.get(key) {
            Some(entry) if entry.readable() => Lookup::Found(entry.clone()),
            Some(_) => Lookup::Unknown,
            None => Lookup::Absent,
        }
    }

    /// Every object under `prefix` in key order, and the revision they reflect (at or after
    /// `at_least`); `None` when the cache cannot answer.
    pub fn list(&self, prefix: &str, at_least: Revision) -> Option<(Vec<Arc<Entry>>, Revision)> {
        let objects = self.read();
        if !objects.valid || objects.revision < at_least {
            return None;
        }
        let mut items = Vec::new();
        for (key, entry) in objects.by_key.range::<str, _>((
            std::ops::Bound::Included(prefix),
            std::ops::Bound::Unbounded,
        )) {
            if !key.starts_with(prefix) {
                break;
            }
            if !entry.readable() {
                return None;
            }
            items.push(entry.clone());
        }
        Some((items, objects.revision))
    }

    /// Whether it answers reads (false before its first list and until a rebuild after a gap).
    pub fn valid(&self) -> bool {
        self.read().valid
    }

    /// How many objects it holds (tests, metrics).
    pub fn len(&self) -> usize {
        self.read().by_key.len()
    }
}

/// Lists everything the cache holds, for its first fill and its rebuilds.
pub(crate) async fn list_all(
    store: &dyn vkube_store::Store,
) -> Result<(Vec<KeyValue>, Revision), StoreError> {
    let page = store.list("/registry/", ListOptions::default()).await?;
    Ok((page.items, page.revision))
}

/// The revision a consistent read from the cache must reflect: the store's current one, once
/// the hub (and so the cache) has reached it; `None` when the store must answer instead.
async fn caught_up(hub: &Hub) -> Option<Revision> {
    let deadline = tokio::time::Instant::now() + CATCH_UP;
    let now = tokio::time::timeout_at(deadline, hub.revisions.current())
        .await
        .ok()?
        .ok()?;
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    hub.wait_for(now, left).await.then_some(now)
}

/// A consistent get (`resourceVersion` "" or any not-Exact one, as the handlers have always
/// read the current value): from the cache once caught up, else from the store.
pub(crate) async fn get(hub: &Hub, key: &str) -> Result<Option<KeyValue>, StoreError> {
    if let Some(now) = caught_up(hub).await {
        match hub.cache.get(key, now) {
            Lookup::Found(entry) => return Ok(Some(entry.kv.clone())),
            Lookup::Absent => return Ok(None),
            Lookup::Unknown => {}
        }
    }
    hub.store().get(key, None).await
}

/// A consistent list of `prefix`: the cached objects and their revision once caught up.
pub(crate) async fn list(hub: &Hub, prefix: &str) -> Option<(Vec<Arc<Entry>>, Revision)> {
    let now = caught_up(hub).await?;
    hub.cache.list(prefix, now)
}

#[cfg(test)]
mod tests;
