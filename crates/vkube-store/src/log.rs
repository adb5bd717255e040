//! The log model shared by the memory, SQLite and PostgreSQL backends (kine's design, simplified).
//!
//! Every write appends one row whose primary key is its revision. A key's state at revision R is its
//! newest row at or below R; a delete appends a tombstone row. Writers take the next revisions from
//! a counter they lock *inside* their transaction until commit, so revisions commit in order, and a
//! rolled-back write gives its revisions back. A reader that sees revision N committed therefore sees
//! every revision below N: no gaps to detect or fill (see `postgres.rs` for why that holds there).
//!
//! Compaction at R deletes tombstones at or below R and rows superseded at or below R. A row still
//! needed as the previous value of a later event is never superseded at or below R, so events after
//! R keep their `prev`.

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::task::AbortHandle;

use crate::Store;
use crate::error::{Result, StoreError};
use crate::kv::{Event, EventKind, KeyValue, Revision};

/// One row of the log.
#[derive(Clone, Debug)]
pub(crate) struct Row {
    pub revision: Revision,
    pub key: String,
    pub deleted: bool,
    pub create_revision: Revision,
    /// The revision of this key's previous row, 0 if none.
    pub prev_revision: Revision,
    pub version: i64,
    pub value: Vec<u8>,
}

impl Row {
    /// Stamps a planned row with the revision its write took.
    pub fn at(mut self, revision: Revision) -> Row {
        self.revision = revision;
        if self.create_revision == 0 {
            self.create_revision = revision;
        }
        self
    }

    pub fn kv(self) -> KeyValue {
        KeyValue {
            key: self.key,
            value: self.value,
            create_revision: self.create_revision,
            mod_revision: self.revision,
            version: self.version,
        }
    }

    /// The event this row records; `prev` is the row at `prev_revision`, if still stored.
    pub fn event(self, prev: Option<Row>) -> Event {
        let prev = prev.filter(|p| !p.deleted).map(Row::kv);
        let revision = self.revision;
        let key = self.key.clone();
        if self.deleted {
            Event {
                kind: EventKind::Delete,
                revision,
                key,
                value: None,
                prev,
            }
        } else if self.create_revision == revision {
            Event {
                kind: EventKind::Create,
                revision,
                key,
                value: Some(self.kv()),
                prev: None,
            }
        } else {
            Event {
                kind: EventKind::Update,
                revision,
                key,
                value: Some(self.kv()),
                prev,
            }
        }
    }
}

/// What a write does, checked against the key's newest row inside the writer's transaction.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Write {
    Create,
    Update { expected: Revision },
    Delete { expected: Option<Revision> },
}

/// Decides a write against the key's newest row: the row to append (without its revision, which
/// the caller fills in), or the error. Every backend runs this same rule.
pub(crate) fn plan(
    key: &str,
    op: Write,
    latest: Option<Row>,
    value: Vec<u8>,
) -> Result<(Row, Option<KeyValue>)> {
    let live = latest.filter(|r| !r.deleted);
    let prev_revision = live.as_ref().map_or(0, |r| r.revision);
    let not_found = || StoreError::NotFound {
        key: key.to_string(),
    };
    let check = |expected: Revision, current: &Row| {
        if current.revision == expected {
            Ok(())
        } else {
            Err(StoreError::Conflict {
                key: key.to_string(),
                expected,
                current: Box::new(current.clone().kv()),
            })
        }
    };
    let (deleted, create_revision, version) = match (op, &live) {
        (Write::Create, Some(_)) => {
            return Err(StoreError::AlreadyExists {
                key: key.to_string(),
            });
        }
        (Write::Create, None) => (false, 0, 1),
        (Write::Update { .. } | Write::Delete { .. }, None) => return Err(not_found()),
        (Write::Update { expected }, Some(cur)) => {
            check(expected, cur)?;
            (false, cur.create_revision, cur.version + 1)
        }
        (Write::Delete { expected }, Some(cur)) => {
            if let Some(expected) = expected {
                check(expected, cur)?;
            }
            (true, cur.create_revision, 0)
        }
    };
    let row = Row {
        revision: 0,
        key: key.to_string(),
        deleted,
        create_revision,
        prev_revision,
        version,
        value: if deleted { Vec::new() } else { value },
    };
    Ok((row, live.map(Row::kv)))
}

/// The write path of the log backends: each appends one row per write; create, update and
/// delete are the three ways of calling it.
#[async_trait]
pub(crate) trait Append: Send + Sync {
    /// Plans `op` against the key's newest row (`plan`) and appends the row, atomically.
    async fn append(
        &self,
        key: &str,
        op: Write,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<(Row, Option<KeyValue>)>;

    async fn append_create(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<KeyValue> {
        Ok(self.append(key, Write::Create, value, ttl).await?.0.kv())
    }

    async fn append_update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
        ttl: Option<Duration>,
    ) -> Result<KeyValue> {
        Ok(self
            .append(key, Write::Update { expected }, value, ttl)
            .await?
            .0
            .kv())
    }

    async fn append_delete(
        &self,
        key: &str,
        expected: Option<Revision>,
    ) -> Result<(KeyValue, Revision)> {
        let (row, prev) = self
            .append(key, Write::Delete { expected }, Vec::new(), None)
            .await?;
        let prev = prev.ok_or_else(|| StoreError::NotFound { key: key.into() })?;
        Ok((prev, row.revision))
    }
}

/// A write's outcome: the row it appended and the value it replaced.
pub(crate) type Written = Result<(Row, Option<KeyValue>)>;

/// A write queued for a group commit (SQLite's writer thread, PostgreSQL's flusher task).
pub(crate) struct Pending {
    pub key: String,
    pub op: Write,
    pub value: Vec<u8>,
    pub expires: Option<i64>,
    pub reply: tokio::sync::oneshot::Sender<Written>,
}

impl Pending {
    pub fn new(
        key: &str,
        op: Write,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> (Pending, tokio::sync::oneshot::Receiver<Written>) {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Pending {
            key: key.to_string(),
            op,
            value,
            expires: expiry(ttl),
            reply,
        };
        (job, answer)
    }
}

/// Answers every write of a batch: each with its own result, or all with the same error when
/// the batch's transaction did not commit (then none of its writes happened).
pub(crate) fn answer(
    backend: &'static str,
    replies: Vec<tokio::sync::oneshot::Sender<Written>>,
    outcome: Result<Vec<Written>>,
) {
    match outcome {
        Ok(results) => {
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result);
            }
        }
        Err(err) => {
            let message = err.to_string();
            for reply in replies {
                let _ = reply.send(Err(StoreError::backend(backend, &message)));
            }
        }
    }
}

/// Checks a read revision against the store's current and compacted revisions.
pub(crate) fn check_read_revision(
    requested: Revision,
    current: Revision,
    compacted: Revision,
) -> Result<()> {
    if requested < compacted {
        Err(StoreError::Compacted {
            requested,
            compact_revision: compacted,
        })
    } else if requested > current {
        Err(StoreError::FutureRevision { requested, current })
    } else {
        Ok(())
    }
}

/// Checks a compaction request the way etcd does.
pub(crate) fn check_compact(
    requested: Revision,
    current: Revision,
    compacted: Revision,
) -> Result<()> {
    if requested <= compacted {
        Err(StoreError::Compacted {
            requested,
            compact_revision: compacted,
        })
    } else if requested > current {
        Err(StoreError::FutureRevision { requested, current })
    } else {
        Ok(())
    }
}

/// Milliseconds since the Unix epoch when a TTL given now runs out.
pub(crate) fn expiry(ttl: Option<Duration>) -> Option<i64> {
    ttl.map(|ttl| now_millis().saturating_add(ttl.as_millis().min(i64::MAX as u128) as i64))
}

pub(crate) fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A store that can list its keys whose TTL has run out.
#[async_trait]
pub(crate) trait Expiring: Store {
    /// Keys (with their `mod_revision`) whose newest row has an expiry in the past.
    async fn expired(&self) -> Result<Vec<(String, Revision)>>;
}

/// How often expired keys are swept. Kubernetes' TTLs (Events, Leases) are seconds or more.
const SWEEP_PERIOD: Duration = Duration::from_millis(250);

/// Deletes expired keys with an ordinary conditional delete, so watchers see a delete event and a
/// key rewritten in the meantime survives. Several processes may sweep one store: the losers of a
/// race get `Conflict` or `NotFound`, which is the intended outcome.
pub(crate) fn spawn_ttl_sweeper<S: Expiring>(store: Weak<S>) -> AbortHandle {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(SWEEP_PERIOD).await;
            let Some(store) = store.upgrade() else { return };
            sweep(&store).await;
        }
    })
    .abort_handle()
}

async fn sweep<S: Expiring>(store: &Arc<S>) {
    let expired = match store.expired().await {
        Ok(expired) => expired,
        Err(err) => {
            tracing::warn!(backend = store.backend(), %err, "TTL sweep failed");
            return;
        }
    };
    for (key, revision) in expired {
        match store.delete(&key, Some(revision)).await {
            Ok(_) | Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => {}
            Err(err) => tracing::warn!(backend = store.backend(), %key, %err, "TTL delete failed"),
        }
    }
}

/// Aborts a store's background tasks when the store is dropped.
#[derive(Default)]
pub(crate) struct Tasks(std::sync::Mutex<Vec<AbortHandle>>);

impl Tasks {
    pub fn add(&self, task: AbortHandle) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(task);
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in self
            .0
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }
}
