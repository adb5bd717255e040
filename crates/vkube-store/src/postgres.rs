//! PostgreSQL: the log of `log.rs` in two tables, shared by any number of replicas.
//!
//! Out-of-order commits, the problem kine solves with gap detection and filling, cannot happen here:
//! a writer takes its revision by incrementing the counter row in `vkube_meta` as the first statement
//! of its transaction, and that row lock is held until commit. The next writer's increment waits,
//! then reads the committed value, so revision N+1 commits after N has become visible (PostgreSQL
//! marks a transaction committed before it releases its locks), and a rolled-back writer gives its
//! revision back. A reader that sees N thus sees every revision below it. The price is one writer
//! at a time per database, which a single etcd pays too (its Raft log is one sequence).
//!
//! Watchers wake on `NOTIFY vkube_revisions` (sent inside the writing transaction, so delivered on
//! commit) through one LISTEN connection per process, not by polling.

use std::str::FromStr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{AsyncMessage, IsolationLevel, NoTls};

use crate::Store;
use crate::error::{Result, StoreError, check_key};
use crate::kv::{Event, KeyValue, ListOptions, ListResult, Revision};
use crate::log::{self, Append, Expiring, Pending, Row, Tasks, Write};
use crate::sql;
use crate::watch::{LogSource, Watch, watch_log};

const BACKEND: &str = "postgres";
const CHANNEL: &str = "vkube_revisions";
const POOL_SIZE: usize = 16;

const SCHEMA: &str = r#"
SELECT pg_advisory_xact_lock(7275617453);
CREATE TABLE IF NOT EXISTS vkube_meta (name TEXT PRIMARY KEY, value BIGINT NOT NULL);
INSERT INTO vkube_meta (name, value) VALUES ('revision', 0), ('compacted', 0) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS vkube_log (
    revision BIGINT PRIMARY KEY,
    key TEXT COLLATE "C" NOT NULL,
    deleted INTEGER NOT NULL,
    create_revision BIGINT NOT NULL,
    prev_revision BIGINT NOT NULL,
    version BIGINT NOT NULL,
    value BYTEA NOT NULL,
    expires_at BIGINT
);
CREATE INDEX IF NOT EXISTS vkube_log_key ON vkube_log (key, revision);
CREATE INDEX IF NOT EXISTS vkube_log_expires ON vkube_log (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS vkube_log_deleted ON vkube_log (key, revision) WHERE deleted = 1;
"#;

pub struct PostgresStore {
    pool: Pool,
    /// Writes waiting for the next group commit, and the flusher's wake-up.
    queue: std::sync::Mutex<Vec<Pending>>,
    queued: Arc<tokio::sync::Notify>,
    committed: watch::Sender<Revision>,
    me: Weak<PostgresStore>,
    tasks: Tasks,
}

fn db_err(err: impl std::fmt::Display) -> StoreError {
    StoreError::backend(BACKEND, err)
}

impl PostgresStore {
    /// Connects to the database a `postgres://` URL names, creating the tables if needed.
    pub async fn connect(url: &str) -> Result<Arc<Self>> {
        let config = tokio_postgres::Config::from_str(url).map_err(|e| StoreError::InvalidUrl {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .build()
            .map_err(db_err)?;
        let mut client = pool.get().await.map_err(db_err)?;
        let tx = client.transaction().await.map_err(db_err)?;
        tx.batch_execute(SCHEMA).await.map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        let revision = meta(&client).await?.0;
        drop(client);
        let store = Arc::new_cyclic(|me| PostgresStore {
            pool,
            queue: Default::default(),
            queued: Default::default(),
            committed: watch::channel(revision).0,
            me: me.clone(),
            tasks: Tasks::default(),
        });
        let listener = listen(&config).await?;
        store.tasks.add(
            tokio::spawn(run_listener(Arc::downgrade(&store), config, listener)).abort_handle(),
        );
        store
            .tasks
            .add(log::spawn_ttl_sweeper(Arc::downgrade(&store)));
        let flusher = run_flusher(Arc::downgrade(&store), store.queued.clone());
        store.tasks.add(tokio::spawn(flusher).abort_handle());
        Ok(store)
    }

    fn me(&self) -> Result<Arc<Self>> {
        self.me.upgrade().ok_or_else(|| StoreError::closed(BACKEND))
    }

    fn saw(&self, revision: Revision) {
        self.committed.send_if_modified(|c| {
            let newer = *c < revision;
            *c = (*c).max(revision);
            newer
        });
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(db_err)
    }

    /// Runs reads in one REPEATABLE READ snapshot, after checking `revision` against it.
    async fn read_at<T>(
        &self,
        statement: &str,
        revision: Option<Revision>,
        params: impl FnOnce(Revision) -> Params,
        map: impl Fn(&tokio_postgres::Row) -> Result<T>,
    ) -> Result<(Vec<T>, Revision, Revision)> {
        let mut client = self.client().await?;
        let stmt = client.prepare_cached(statement).await.map_err(db_err)?;
        let meta_stmt = client.prepare_cached(sql::META).await.map_err(db_err)?;
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(db_err)?;
        let m = tx.query_one(&meta_stmt, &[]).await.map_err(db_err)?;
        let (current, compacted): (Revision, Revision) =
            (m.try_get(0).map_err(db_err)?, m.try_get(1).map_err(db_err)?);
        let at = sql::at(revision, current);
        if let Some(requested) = revision {
            log::check_read_revision(requested, current, compacted)?;
        }
        let params = params(at);
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as _).collect();
        let rows = tx.query(&stmt, &refs).await.map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        let items = rows.iter().map(map).collect::<Result<Vec<_>>>()?;
        Ok((items, current, compacted))
    }
}

async fn meta(client: &tokio_postgres::Client) -> Result<(Revision, Revision)> {
    let m = client.query_one(sql::META, &[]).await.map_err(db_err)?;
    Ok((m.try_get(0).map_err(db_err)?, m.try_get(1).map_err(db_err)?))
}

/// A log row from columns `offset..offset + 7` (`sql::ROW`'s order).
fn pg_row(r: &tokio_postgres::Row, offset: usize) -> Result<Row> {
    Ok(Row {
        revision: r.try_get(offset).map_err(db_err)?,
        key: r.try_get(offset + 1).map_err(db_err)?,
        deleted: r.try_get::<_, i32>(offset + 2).map_err(db_err)? != 0,
        create_revision: r.try_get(offset + 3).map_err(db_err)?,
        prev_revision: r.try_get(offset + 4).map_err(db_err)?,
        version: r.try_get(offset + 5).map_err(db_err)?,
        value: r.try_get(offset + 6).map_err(db_err)?,
    })
}

type Notifications = tokio::sync::mpsc::UnboundedReceiver<Result<Revision, String>>;

/// Opens the LISTEN connection; its notifications (or its end) arrive on the returned channel.
/// The connection lives as long as the returned client.
async fn listen(
    config: &tokio_postgres::Config,
) -> Result<(tokio_postgres::Client, Notifications)> {
    let (client, mut connection) = config.connect(NoTls).await.map_err(db_err)?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            let item = match message {
                Ok(AsyncMessage::Notification(n)) => match n.payload().parse::<Revision>() {
                    Ok(revision) => Ok(revision),
                    Err(_) => continue,
                },
                Ok(_) => continue,
                Err(err) => Err(err.to_string()),
            };
            if tx.send(item).is_err() {
                return;
            }
        }
        let _ = tx.send(Err("the LISTEN connection closed".into()));
    });
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .map_err(db_err)?;
    Ok((client, rx))
}

/// Feeds notifications to the watchers; reconnects when the connection drops, then catches up
/// by reading the current revision, so a notification lost meanwhile delays nobody.
async fn run_listener(
    store: Weak<PostgresStore>,
    config: tokio_postgres::Config,
    (mut _client, mut notifications): (tokio_postgres::Client, Notifications),
) {
    loop {
        while let Some(item) = notifications.recv().await {
            let Some(store) = store.upgrade() else { return };
            match item {
                Ok(revision) => store.saw(revision),
                Err(err) => {
                    tracing::warn!(%err, "postgres LISTEN connection failed; reconnecting");
                    break;
                }
            }
        }
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let Some(store) = store.upgrade() else { return };
            match listen(&config).await {
                Ok((client, rx)) => {
                    (_client, notifications) = (client, rx);
                    if let Ok(revision) = store.current_revision().await {
                        store.saw(revision);
                    }
                    break;
                }
                Err(err) => tracing::warn!(%err, "postgres LISTEN reconnect failed"),
            }
        }
    }
}

type Params = Vec<Box<dyn ToSql + Sync + Send>>;

#[async_trait]
impl Append for PostgresStore {
    /// Queues the write and flushes the queue (group commit, as for SQLite): one transaction
    /// and four round trips for all writes queued while the previous flush ran, each write with
    /// its own revision in queue order.
    async fn append(
        &self,
        key: &str,
        op: Write,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<(Row, Option<KeyValue>)> {
        check_key(key)?;
        let (job, answer) = Pending::new(key, op, value, ttl);
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(job);
        self.queued.notify_one();
        let (row, prev) = answer
            .await
            .map_err(|_| StoreError::backend(BACKEND, "the write was dropped"))??;
        self.saw(row.revision);
        Ok((row, prev))
    }
}

/// The one flusher of this process: whatever queued while a batch committed forms the next batch.
/// (Flushing from the writers' own tasks hands the lock over faster than completed writers queue
/// again, so batches stay at one write.)
async fn run_flusher(store: Weak<PostgresStore>, queued: Arc<tokio::sync::Notify>) {
    loop {
        // Registered before the queue is read, so a write queued in between still wakes us.
        let wake = queued.notified();
        let Some(me) = store.upgrade() else { return };
        let batch = std::mem::take(&mut *me.queue.lock().unwrap_or_else(|e| e.into_inner()));
        if batch.is_empty() {
            drop(me);
            wake.await;
            continue;
        }
        me.flush(batch).await;
    }
}

const LOCK_REVISION: &str = "SELECT value FROM vkube_meta WHERE name = 'revision' FOR UPDATE";
const LATEST_OF_KEYS: &str = "SELECT DISTINCT ON (key) revision, key, deleted, create_revision, prev_revision, version, value \
    FROM vkube_log WHERE key = ANY($1) ORDER BY key, revision DESC";
const INSERT_ROWS: &str = "INSERT INTO vkube_log \
    (revision, key, deleted, create_revision, prev_revision, version, value, expires_at) \
    SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::int[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bytea[], $8::bigint[])";

impl PostgresStore {
    async fn flush(&self, batch: Vec<Pending>) {
        let (jobs, replies): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|p| ((p.key, p.op, p.value, p.expires), p.reply))
            .unzip();
        log::answer(BACKEND, replies, self.commit_batch(jobs).await);
    }

    #[allow(clippy::type_complexity)]
    async fn commit_batch(
        &self,
        jobs: Vec<(String, Write, Vec<u8>, Option<i64>)>,
    ) -> Result<Vec<Result<(Row, Option<KeyValue>)>>> {
        let mut client = self.client().await?;
        let lock = client.prepare_cached(LOCK_REVISION).await.map_err(db_err)?;
        let latest_stmt = client
            .prepare_cached(LATEST_OF_KEYS)
            .await
            .map_err(db_err)?;
        let insert = client.prepare_cached(INSERT_ROWS).await.map_err(db_err)?;
        let set = client
            .prepare_cached(&sql::pg(sql::SET_REVISION))
            .await
            .map_err(db_err)?;
        let notify = client
            .prepare_cached("SELECT pg_notify($1, $2)")
            .await
            .map_err(db_err)?;
        let tx = client.transaction().await.map_err(db_err)?;
        // The latest rows are read after the lock is held, in a snapshot of their own (READ
        // COMMITTED): every earlier writer's commit is visible.
        let keys: Vec<&str> = jobs.iter().map(|(k, ..)| k.as_str()).collect();
        let latest_params: [&(dyn ToSql + Sync); 1] = [&keys];
        let (locked, rows) = tokio::try_join!(
            tx.query_one(&lock, &[]),
            tx.query(&latest_stmt, &latest_params)
        )
        .map_err(db_err)?;
        let mut revision: Revision = locked.try_get(0).map_err(db_err)?;
        let mut latest: std::collections::HashMap<String, Row> = std::collections::HashMap::new();
        for r in &rows {
            let row = pg_row(r, 0)?;
            latest.insert(row.key.clone(), row);
        }
        let mut results = Vec::with_capacity(jobs.len());
        let mut written: Vec<(Row, Option<i64>)> = Vec::new();
        for (key, op, value, expires) in jobs {
            match log::plan(&key, op, latest.get(&key).cloned(), value) {
                Ok((row, prev)) => {
                    revision += 1;
                    let row = row.at(revision);
                    latest.insert(key, row.clone());
                    written.push((row.clone(), expires));
                    results.push(Ok((row, prev)));
                }
                Err(err) => results.push(Err(err)),
            }
        }
        if written.is_empty() {
            tx.rollback().await.map_err(db_err)?;
            return Ok(results);
        }
        let revisions: Vec<i64> = written.iter().map(|(r, _)| r.revision).collect();
        let keys: Vec<&str> = written.iter().map(|(r, _)| r.key.as_str()).collect();
        let deleted: Vec<i32> = written.iter().map(|(r, _)| i32::from(r.deleted)).collect();
        let creates: Vec<i64> = written.iter().map(|(r, _)| r.create_revision).collect();
        let prevs: Vec<i64> = written.iter().map(|(r, _)| r.prev_revision).collect();
        let versions: Vec<i64> = written.iter().map(|(r, _)| r.version).collect();
        let values = Redacted(written.iter().map(|(r, _)| r.value.as_slice()).collect());
        let expiries: Vec<Option<i64>> = written.iter().map(|(_, e)| *e).collect();
        let insert_params: [&(dyn ToSql + Sync); 8] = [
            &revisions, &keys, &deleted, &creates, &prevs, &versions, &values, &expiries,
        ];
        let notified = revision.to_string();
        let notify_params: [&(dyn ToSql + Sync); 2] = [&CHANNEL, &notified];
        let set_params: [&(dyn ToSql + Sync); 1] = [&revision];
        tokio::try_join!(
            tx.execute(&insert, &insert_params),
            tx.execute(&set, &set_params),
            tx.execute(&notify, &notify_params),
        )
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(results)
    }
}

/// The values of a write, as a query parameter. tokio-postgres logs every query's parameters at
/// debug level (`tokio_postgres::query`), and values are Secrets and the cluster's keys: a log at
/// any level must never hold them, so their `Debug` names only how many there are and their size.
struct Redacted<'a>(Vec<&'a [u8]>);

impl std::fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bytes: usize = self.0.iter().map(|v| v.len()).sum();
        write!(f, "<{} values, {bytes} bytes, redacted>", self.0.len())
    }
}

impl ToSql for Redacted<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        self.0.to_sql(ty, out)
    }

    fn accepts(ty: &Type) -> bool {
        <Vec<&[u8]> as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn get(&self, key: &str, revision: Option<Revision>) -> Result<Option<KeyValue>> {
        let key = key.to_string();
        let params = move |at: Revision| -> Params { vec![Box::new(key), Box::new(at)] };
        let (rows, _, _) = self
            .read_at(&sql::pg(sql::LATEST), revision, params, |r| pg_row(r, 0))
            .await?;
        Ok(rows.into_iter().find(|r| !r.deleted).map(Row::kv))
    }

    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListResult> {
        let (lower, exclusive, upper) = sql::range(prefix, options.start_after.as_deref());
        let statement = sql::pg(&sql::list(exclusive, upper.is_some()));
        let limit = sql::limit(options.limit);
        let params = |at: Revision| -> Params {
            let mut p: Params = vec![Box::new(at), Box::new(limit), Box::new(lower)];
            if let Some(upper) = upper {
                p.push(Box::new(upper));
            }
            p
        };
        let (rows, current, _) = self
            .read_at(&statement, options.revision, params, |r| {
                Ok(pg_row(r, 0)?.kv())
            })
            .await?;
        let at = sql::at(options.revision, current);
        Ok(sql::page(rows, options.limit, at))
    }

    async fn count(&self, prefix: &str, options: ListOptions) -> Result<usize> {
        let (lower, exclusive, upper) = sql::range(prefix, options.start_after.as_deref());
        let statement = sql::pg(&sql::count(exclusive, upper.is_some()));
        let params = |at: Revision| -> Params {
            let mut p: Params = vec![Box::new(at), Box::new(lower)];
            if let Some(upper) = upper {
                p.push(Box::new(upper));
            }
            p
        };
        let (rows, ..) = self
            .read_at(&statement, options.revision, params, |r| {
                r.try_get::<_, i64>(0).map_err(db_err)
            })
            .await?;
        Ok(rows.first().map_or(0, |n| usize::try_from(*n).unwrap_or(0)))
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
        let client = self.client().await?;
        Ok(meta(&client).await?.0)
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_err)?;
        tx.execute(
            "SELECT 1 FROM vkube_meta WHERE name = 'compacted' FOR UPDATE",
            &[],
        )
        .await
        .map_err(db_err)?;
        let m = tx.query_one(sql::META, &[]).await.map_err(db_err)?;
        let (current, compacted) = (m.try_get(0).map_err(db_err)?, m.try_get(1).map_err(db_err)?);
        log::check_compact(revision, current, compacted)?;
        tx.execute(&sql::pg(sql::COMPACT), &[&revision])
            .await
            .map_err(db_err)?;
        tx.execute(&sql::pg(sql::SET_COMPACTED), &[&revision])
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<Watch> {
        watch_log(self.me()?, self.committed.subscribe(), prefix, from).await
    }
}

#[async_trait]
impl LogSource for PostgresStore {
    async fn events_after(
        &self,
        prefix: &str,
        after: Revision,
        limit: usize,
    ) -> Result<(Vec<Event>, Revision)> {
        let (lower, _, upper) = sql::range(prefix, None);
        let statement = sql::pg(&sql::events(upper.is_some()));
        let limit = limit as i64;
        let params = |_| -> Params {
            let mut p: Params = vec![Box::new(after), Box::new(limit), Box::new(lower)];
            if let Some(upper) = upper {
                p.push(Box::new(upper));
            }
            p
        };
        let map = |r: &tokio_postgres::Row| {
            let prev = match r.try_get::<_, Option<Revision>>(7).map_err(db_err)? {
                Some(_) => Some(pg_row(r, 7)?),
                None => None,
            };
            Ok(pg_row(r, 0)?.event(prev))
        };
        let (events, current, compacted) = self.read_at(&statement, None, params, map).await?;
        if after < compacted {
            return Err(StoreError::Compacted {
                requested: after,
                compact_revision: compacted,
            });
        }
        let covered = if events.len() as i64 >= limit {
            events.last().map_or(after, |e| e.revision)
        } else {
            current.max(after)
        };
        Ok((events, covered))
    }
}

#[async_trait]
impl Expiring for PostgresStore {
    async fn expired(&self) -> Result<Vec<(String, Revision)>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&sql::pg(sql::EXPIRED))
            .await
            .map_err(db_err)?;
        let rows = client
            .query(&stmt, &[&log::now_millis()])
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|r| Ok((r.try_get(0).map_err(db_err)?, r.try_get(1).map_err(db_err)?)))
            .collect()
    }
}
