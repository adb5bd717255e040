//! The embedded default: the log of `log.rs` in one SQLite file (WAL mode) in the data dir.
//!
//! SQLite serves one replica (DESIGN.md, rule 1). Several processes may still open one file (tools,
//! the tests): writers serialize on SQLite's write lock (`BEGIN IMMEDIATE`), so revisions commit in
//! order. Within a process, concurrent writes are group-committed: one transaction and one fsync
//! for all the writes queued while the previous commit ran. Watchers in this process wake on its own commits at once; commits by other processes are
//! noticed through `PRAGMA data_version`, checked every [`CHANGE_CHECK`].
//!
//! Durability: a write is acknowledged after its transaction commits. In WAL mode the commit is in
//! the WAL file before `COMMIT` returns, so it survives `kill -9` of the process under any
//! `synchronous` setting. On power loss: with `synchronous=full` (the default) the WAL is fsynced
//! at every commit and nothing acknowledged is lost; with `synchronous=normal` (`?synchronous=normal`)
//! the last commits since the previous checkpoint may be lost, never corrupting the file.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use tokio::sync::watch;

use crate::Store;
use crate::error::{Result, StoreError, check_key};
use crate::kv::{Event, KeyValue, ListOptions, ListResult, Revision};
use crate::log::{self, Append, Expiring, Pending, Row, Tasks, Write};
use crate::sql;
use crate::watch::{LogSource, Watch, watch_log};

const BACKEND: &str = "sqlite";
const CHANGE_CHECK: Duration = Duration::from_millis(20);

/// SQLite's `synchronous` pragma, as the durability it buys (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Synchronous {
    #[default]
    Full,
    Normal,
}

pub struct SqliteStore {
    path: PathBuf,
    synchronous: Synchronous,
    /// Writes for the writer thread, which commits whatever queued meanwhile as one group.
    jobs: std::sync::mpsc::Sender<Pending>,
    /// Idle read connections; WAL lets them read while the writer writes.
    readers: Mutex<Vec<Connection>>,
    committed: watch::Sender<Revision>,
    me: Weak<SqliteStore>,
    tasks: Tasks,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS vkube_meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO vkube_meta (name, value) VALUES ('revision', 0), ('compacted', 0);
CREATE TABLE IF NOT EXISTS vkube_log (
    revision INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    deleted INTEGER NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision INTEGER NOT NULL,
    version INTEGER NOT NULL,
    value BLOB NOT NULL,
    expires_at INTEGER
);
CREATE INDEX IF NOT EXISTS vkube_log_key ON vkube_log (key, revision);
CREATE INDEX IF NOT EXISTS vkube_log_expires ON vkube_log (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS vkube_log_deleted ON vkube_log (key, revision) WHERE deleted = 1;
";

fn db_err(err: rusqlite::Error) -> StoreError {
    StoreError::backend(BACKEND, err)
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path`.
    pub async fn open(path: &Path, synchronous: Synchronous) -> Result<Arc<Self>> {
        let path = path.to_path_buf();
        let (writer, revision) = tokio::task::spawn_blocking({
            let path = path.clone();
            move || -> Result<_> {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        StoreError::backend(BACKEND, format!("creating {}: {e}", dir.display()))
                    })?;
                }
                let mut conn = connect(&path, synchronous)?;
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(db_err)?;
                tx.execute_batch(SCHEMA).map_err(db_err)?;
                tx.commit().map_err(db_err)?;
                let (revision, _) = meta(&conn)?;
                Ok((conn, revision))
            }
        })
        .await
        .map_err(|e| StoreError::backend(BACKEND, e))??;
        let jobs = spawn_writer(writer)?;
        let store = Arc::new_cyclic(|me| SqliteStore {
            path,
            synchronous,
            jobs,
            readers: Mutex::new(Vec::new()),
            committed: watch::channel(revision).0,
            me: me.clone(),
            tasks: Tasks::default(),
        });
        store
            .tasks
            .add(log::spawn_ttl_sweeper(Arc::downgrade(&store)));
        spawn_change_detector(&store)?;
        Ok(store)
    }

    fn me(&self) -> Result<Arc<Self>> {
        self.me.upgrade().ok_or_else(|| StoreError::closed(BACKEND))
    }

    /// Runs `f` on a read connection, in a read transaction (one snapshot), off the async runtime.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let me = self.me()?;
        tokio::task::spawn_blocking(move || {
            let idle = me.readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let mut conn = match idle {
                Some(conn) => conn,
                None => connect(&me.path, me.synchronous)?,
            };
            let result = conn
                .transaction_with_behavior(TransactionBehavior::Deferred)
                .map_err(db_err)
                .and_then(|tx| f(&tx));
            me.readers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(conn);
            result
        })
        .await
        .map_err(|e| StoreError::backend(BACKEND, e))?
    }
}

fn connect(path: &Path, synchronous: Synchronous) -> Result<Connection> {
    let conn = Connection::open(path)
        .map_err(|e| StoreError::backend(BACKEND, format!("opening {}: {e}", path.display())))?;
    conn.busy_timeout(Duration::from_secs(30)).map_err(db_err)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(db_err)?;
    let sync = match synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync)
        .map_err(db_err)?;
    // Every statement is prepared once per connection (parsing them on each call cost ~7 % of
    // vkube's CPU under bench/sync); the list, count and event variants need more than the
    // default 16 slots.
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// The current and compacted revisions.
fn meta(conn: &Connection) -> Result<(Revision, Revision)> {
    conn.prepare_cached(sql::META)
        .and_then(|mut stmt| stmt.query_row([], |r| Ok((r.get(0)?, r.get(1)?))))
        .map_err(db_err)
}

fn row_at(r: &rusqlite::Row<'_>, offset: usize) -> rusqlite::Result<Row> {
    Ok(Row {
        revision: r.get(offset)?,
        key: r.get(offset + 1)?,
        deleted: r.get(offset + 2)?,
        create_revision: r.get(offset + 3)?,
        prev_revision: r.get(offset + 4)?,
        version: r.get(offset + 5)?,
        value: r.get(offset + 6)?,
    })
}

fn latest(conn: &Connection, key: &str, at: Revision) -> Result<Option<Row>> {
    conn.prepare_cached(sql::LATEST)
        .and_then(|mut stmt| {
            stmt.query_row(params![key, at], |r| row_at(r, 0))
                .optional()
        })
        .map_err(db_err)
}

/// Wakes this process's watchers on commits made by other processes.
fn spawn_change_detector(store: &Arc<SqliteStore>) -> Result<()> {
    let conn = connect(&store.path, store.synchronous)?;
    let weak = Arc::downgrade(store);
    std::thread::Builder::new()
        .name("vkube-sqlite-changes".into())
        .spawn(move || {
            let mut seen = -1i64;
            loop {
                std::thread::sleep(CHANGE_CHECK);
                let Some(store) = weak.upgrade() else { return };
                let version: rusqlite::Result<i64> =
                    conn.query_row("PRAGMA data_version", [], |r| r.get(0));
                match version {
                    Ok(v) if v != seen => {
                        seen = v;
                        if let Ok((revision, _)) = meta(&conn) {
                            store.committed.send_if_modified(|c| {
                                let newer = *c < revision;
                                *c = (*c).max(revision);
                                newer
                            });
                        }
                    }
                    Ok(_) => {}
                    Err(err) => tracing::warn!(%err, "sqlite change check failed"),
                }
            }
        })
        .map(drop)
        .map_err(|e| StoreError::backend(BACKEND, e))
}

#[async_trait]
impl Append for SqliteStore {
    /// Queues the write and flushes the queue; concurrent writes share one transaction and one
    /// fsync (group commit), each still taking its own revision in queue order. A write is
    /// answered only after the transaction that holds it has committed.
    async fn append(
        &self,
        key: &str,
        op: Write,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<(Row, Option<KeyValue>)> {
        check_key(key)?;
        let me = self.me()?;
        let (job, answer) = Pending::new(key, op, value, ttl);
        me.jobs.send(job).map_err(|_| StoreError::closed(BACKEND))?;
        let (row, prev) = answer
            .await
            .map_err(|_| StoreError::backend(BACKEND, "the write was dropped"))??;
        self.committed.send_if_modified(|c| {
            let newer = *c < row.revision;
            *c = (*c).max(row.revision);
            newer
        });
        Ok((row, prev))
    }
}

/// The writer thread: takes the first queued write and every other one already queued, commits
/// them as one transaction, answers each, and repeats until the store is dropped.
fn spawn_writer(mut conn: Connection) -> Result<std::sync::mpsc::Sender<Pending>> {
    let (tx, rx) = std::sync::mpsc::channel::<Pending>();
    std::thread::Builder::new()
        .name("vkube-sqlite-writer".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut batch = vec![first];
                while batch.len() < 1024 {
                    match rx.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                flush(&mut conn, batch);
            }
        })
        .map_err(|e| StoreError::backend(BACKEND, e))?;
    Ok(tx)
}

/// Commits a batch of writes in one transaction.
fn flush(conn: &mut Connection, batch: Vec<Pending>) {
    let mut replies = Vec::with_capacity(batch.len());
    let mut results = Vec::with_capacity(batch.len());
    let outcome = (|| -> Result<()> {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err)?;
        let mut revision = meta(&tx)?.0;
        for job in batch {
            replies.push(job.reply);
            let latest = latest(&tx, &job.key, Revision::MAX)?;
            let planned = log::plan(&job.key, job.op, latest, job.value);
            let Ok((row, prev)) = planned else {
                results.push(planned);
                continue;
            };
            revision += 1;
            let row = row.at(revision);
            tx.prepare_cached(sql::INSERT)
                .and_then(|mut stmt| {
                    stmt.execute(params![
                        row.revision,
                        row.key,
                        row.deleted,
                        row.create_revision,
                        row.prev_revision,
                        row.version,
                        row.value,
                        job.expires
                    ])
                })
                .map_err(db_err)?;
            results.push(Ok((row, prev)));
        }
        tx.prepare_cached(sql::SET_REVISION)
            .and_then(|mut stmt| stmt.execute([revision]))
            .map_err(db_err)?;
        tx.commit().map_err(db_err)
    })();
    log::answer(BACKEND, replies, outcome.map(|()| results));
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn get(&self, key: &str, revision: Option<Revision>) -> Result<Option<KeyValue>> {
        let key = key.to_string();
        self.read(move |tx| {
            let (current, compacted) = meta(tx)?;
            let at = sql::at(revision, current);
            log::check_read_revision(at, current, compacted)?;
            Ok(latest(tx, &key, at)?.filter(|r| !r.deleted).map(Row::kv))
        })
        .await
    }

    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListResult> {
        let (lower, exclusive, upper) = sql::range(prefix, options.start_after.as_deref());
        self.read(move |tx| {
            let (current, compacted) = meta(tx)?;
            let at = sql::at(options.revision, current);
            log::check_read_revision(at, current, compacted)?;
            let mut stmt = tx
                .prepare_cached(&sql::list(exclusive, upper.is_some()))
                .map_err(db_err)?;
            let limit = sql::limit(options.limit);
            let map = |r: &rusqlite::Row<'_>| row_at(r, 0);
            let rows = match &upper {
                Some(upper) => stmt.query_map(params![at, limit, lower, upper], map),
                None => stmt.query_map(params![at, limit, lower], map),
            }
            .map_err(db_err)?;
            let items = rows
                .map(|r| r.map(Row::kv))
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(db_err)?;
            Ok(sql::page(items, options.limit, at))
        })
        .await
    }

    async fn count(&self, prefix: &str, options: ListOptions) -> Result<usize> {
        let (lower, exclusive, upper) = sql::range(prefix, options.start_after.as_deref());
        self.read(move |tx| {
            let (current, compacted) = meta(tx)?;
            let at = sql::at(options.revision, current);
            log::check_read_revision(at, current, compacted)?;
            let mut stmt = tx
                .prepare_cached(&sql::count(exclusive, upper.is_some()))
                .map_err(db_err)?;
            let n: i64 = match &upper {
                Some(upper) => stmt.query_row(params![at, lower, upper], |r| r.get(0)),
                None => stmt.query_row(params![at, lower], |r| r.get(0)),
            }
            .map_err(db_err)?;
            Ok(usize::try_from(n).unwrap_or(0))
        })
        .await
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
        self.read(|tx| Ok(meta(tx)?.0)).await
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let me = self.me()?;
        tokio::task::spawn_blocking(move || {
            // Compaction is rare: a connection of its own, serialized with the writer by
            // SQLite's write lock.
            let mut conn = connect(&me.path, me.synchronous)?;
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)?;
            let (current, compacted) = meta(&tx)?;
            log::check_compact(revision, current, compacted)?;
            tx.execute(sql::COMPACT, [revision]).map_err(db_err)?;
            tx.execute(sql::SET_COMPACTED, [revision]).map_err(db_err)?;
            tx.commit().map_err(db_err)
        })
        .await
        .map_err(|e| StoreError::backend(BACKEND, e))?
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<Watch> {
        watch_log(self.me()?, self.committed.subscribe(), prefix, from).await
    }
}

#[async_trait]
impl LogSource for SqliteStore {
    async fn events_after(
        &self,
        prefix: &str,
        after: Revision,
        limit: usize,
    ) -> Result<(Vec<Event>, Revision)> {
        let (lower, _, upper) = sql::range(prefix, None);
        self.read(move |tx| {
            let (current, compacted) = meta(tx)?;
            if after < compacted {
                return Err(StoreError::Compacted {
                    requested: after,
                    compact_revision: compacted,
                });
            }
            let mut stmt = tx
                .prepare_cached(&sql::events(upper.is_some()))
                .map_err(db_err)?;
            let map = |r: &rusqlite::Row<'_>| {
                let row = row_at(r, 0)?;
                let prev = r
                    .get::<_, Option<Revision>>(7)?
                    .map(|_| row_at(r, 7))
                    .transpose()?;
                Ok(row.event(prev))
            };
            let limit = limit as i64;
            let events = match &upper {
                Some(upper) => stmt.query_map(params![after, limit, lower, upper], map),
                None => stmt.query_map(params![after, limit, lower], map),
            }
            .map_err(db_err)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db_err)?;
            let covered = if events.len() as i64 >= limit {
                events.last().map_or(after, |e| e.revision)
            } else {
                current.max(after)
            };
            Ok((events, covered))
        })
        .await
    }
}

#[async_trait]
impl Expiring for SqliteStore {
    async fn expired(&self) -> Result<Vec<(String, Revision)>> {
        let now = log::now_millis();
        self.read(move |tx| {
            let mut stmt = tx.prepare_cached(sql::EXPIRED).map_err(db_err)?;
            stmt.query_map([now], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(db_err)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(db_err)
        })
        .await
    }
}
