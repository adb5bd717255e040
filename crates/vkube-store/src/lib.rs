//! A revisioned key-value store with the semantics of etcd (and kine), the one source of truth that
//! every vkube replica reads and writes (DESIGN.md, rule 1).
//!
//! The model: a global revision that every successful write raises by exactly one, per-key
//! `create_revision`/`mod_revision`/`version`, reads at a past revision, compare-and-swap writes and
//! an ordered, gap-free watch with previous values. Backends: embedded SQLite (one replica only),
//! PostgreSQL, etcd v3, and memory (tests of the upper layers). The same conformance suite
//! (`tests/conformance.rs`) runs against each of them.
#![forbid(unsafe_code)]

mod error;
mod etcd;
mod kv;
mod log;
mod memory;
mod postgres;
mod sql;
mod sqlite;
pub mod transform;
mod url;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use error::{Result, StoreError};
pub use etcd::{COMPACT_REV_KEY, EtcdStore, EtcdTls};
pub use kv::{Event, EventKind, KeyValue, ListOptions, ListResult, Revision};
pub use memory::MemoryStore;
pub use postgres::PostgresStore;
pub use sqlite::{SqliteStore, Synchronous};
pub use url::StoreUrl;
pub use watch::{ProgressRequester, Watch, WatchItem};

/// The operations every backend offers, with etcd's meaning.
///
/// Keys are UTF-8 strings; a prefix selects every key that starts with it. Writes return the
/// resulting [`KeyValue`], whose `mod_revision` is the revision the write created.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The backend's name, as used in test names and metrics (`sqlite`, `postgres`, `etcd`, `memory`).
    fn backend(&self) -> &'static str;

    /// The value of `key` now, or at `revision` when given.
    async fn get(&self, key: &str, revision: Option<Revision>) -> Result<Option<KeyValue>>;

    /// Keys under `prefix` in key order, read at one revision (the current one unless given).
    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListResult>;

    /// How many live keys a list with these options would return, ignoring its `limit`: a
    /// paged list's `remainingItemCount`. Backends that can count without reading values
    /// override it.
    async fn count(&self, prefix: &str, options: ListOptions) -> Result<usize> {
        let all = ListOptions {
            limit: None,
            ..options
        };
        Ok(self.list(prefix, all).await?.items.len())
    }

    /// Creates `key`; fails with [`StoreError::AlreadyExists`] if it exists. With a TTL, the key is
    /// deleted (a normal delete event) once the TTL has passed.
    async fn create(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> Result<KeyValue>;

    /// Replaces `key` if its `mod_revision` is still `expected`; otherwise fails with
    /// [`StoreError::Conflict`] carrying the current value, or [`StoreError::NotFound`].
    /// The TTL, if any, is replaced by `ttl`.
    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
        ttl: Option<Duration>,
    ) -> Result<KeyValue>;

    /// Deletes `key`, if `expected` is given only when its `mod_revision` matches. Returns the
    /// deleted value and the revision of the delete.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(KeyValue, Revision)>;

    /// The revision of the last successful write.
    async fn current_revision(&self) -> Result<Revision>;

    /// Discards history at and below `revision`; reads and watches below it then fail with
    /// [`StoreError::Compacted`].
    async fn compact(&self, revision: Revision) -> Result<()>;

    /// Every event under `prefix` with a revision above `from`, in revision order, each once.
    /// Resume by passing the last revision seen. The watch also answers progress requests
    /// ([`WatchItem::Progress`]).
    async fn watch(&self, prefix: &str, from: Revision) -> Result<Watch>;

    /// Whether the value of `key` at `revision` (its current one) is stored in a form a write
    /// would not produce now: encryption at rest read it through a provider or key other than
    /// the one that writes. An update that changes nothing must still write such a value, as
    /// kube-apiserver writes its "stale" reads, so that upstream's rotation step (`kubectl get
    /// -o json | kubectl replace -f -`) re-encrypts everything. Plain backends: never.
    async fn stale(&self, key: &str, revision: Revision) -> Result<bool> {
        let _ = (key, revision);
        Ok(false)
    }

    /// One round of the periodic compaction every replica runs each interval, given what the
    /// previous round returned (start from `Compaction::default()`): compacts at the revision the
    /// store had one round ago. Here every caller compacts (a loser of a race meets `Compacted`,
    /// which is harmless); etcd, whose compaction is shared by every cluster on it, lets one
    /// compactor per interval do it, as kube-apiserver's `compact_rev_key` does.
    async fn compact_round(&self, last: Compaction) -> Result<Compaction> {
        let revision = self.current_revision().await?;
        let compacted = if last.revision > 0 {
            match self.compact(last.revision).await {
                Ok(()) => Some(last.revision),
                Err(StoreError::Compacted { .. }) => None,
                Err(err) => return Err(err),
            }
        } else {
            None
        };
        Ok(Compaction {
            epoch: last.epoch + 1,
            revision,
            compacted,
        })
    }
}

/// Where a periodic compactor stands between rounds (kube-apiserver's `compactTime` and `rev`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Compaction {
    /// Rounds taken by all the compactors sharing the backend, as far as this one knows (the
    /// version of etcd's `compact_rev_key`).
    pub epoch: i64,
    /// The revision the next round compacts at: the store's revision at this round.
    pub revision: Revision,
    /// The revision this round compacted at, when this compactor did compact.
    pub compacted: Option<Revision>,
}

/// Opens the store a URL names: `sqlite://PATH`, `postgres://…`, `etcd://host:port[,host:port]`
/// (see [`StoreUrl`] for the options), or `memory://`.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    open_url(&url.parse::<StoreUrl>()?).await
}

/// Opens the store of a parsed [`StoreUrl`].
pub async fn open_url(url: &StoreUrl) -> Result<Arc<dyn Store>> {
    Ok(match url {
        StoreUrl::Memory => MemoryStore::new(),
        StoreUrl::Sqlite { path, synchronous } => SqliteStore::open(path, *synchronous).await?,
        StoreUrl::Postgres { url } => PostgresStore::connect(url).await?,
        StoreUrl::Etcd {
            endpoints,
            prefix,
            tls,
        } => EtcdStore::connect(endpoints, prefix, tls.clone()).await?,
    })
}

/// Reads `key`, computes its next value with `next`, and writes it with compare-and-swap; when
/// another writer got there first, computes again from the value the conflict carries. This is
/// Kubernetes' GuaranteedUpdate. Returns the written value and how many conflicts it met.
pub async fn guaranteed_update(
    store: &dyn Store,
    key: &str,
    mut next: impl FnMut(&KeyValue) -> Vec<u8> + Send,
) -> Result<(KeyValue, u64)> {
    let mut current = store
        .get(key, None)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            key: key.to_string(),
        })?;
    let mut conflicts = 0;
    loop {
        match store
            .update(key, next(&current), current.mod_revision, None)
            .await
        {
            Ok(written) => return Ok((written, conflicts)),
            Err(StoreError::Conflict { current: now, .. }) => {
                conflicts += 1;
                current = *now;
            }
            Err(err) => return Err(err),
        }
    }
}
