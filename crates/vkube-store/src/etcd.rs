//! etcd v3: native Range, Txn and Watch. The vkube revision *is* the etcd revision, so this backend
//! adds no bookkeeping of its own; writes are single transactions whose compare clauses encode
//! create / compare-and-swap / conditional delete. Keys live under a prefix, so several virtual
//! clusters can share one etcd. TTLs use etcd leases. With several endpoints the first is
//! preferred and the others serve while it cannot (`failover`).
//!
//! Clusters that share an etcd share its revision, so a consumer waiting for "the current
//! revision" must learn how far its own watch has come without a write under its own prefix:
//! watches answer progress requests (see `ProgressMechanism`). They also share compaction, which
//! is etcd-wide, so compaction rounds coordinate through one key at the etcd root, as
//! kube-apiserver's do (`compact_round`).

mod failover;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions,
    Identity, PutOptions, TlsOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use tokio::sync::mpsc;

use crate::error::{Result, StoreError, check_key};
use crate::kv::{Event, EventKind, KeyValue, ListOptions, ListResult, Revision, prefix_end};
use crate::watch::{ProgressRequester, Watch, WatchItem};
use crate::{Compaction, Store};
use failover::{Endpoints, Kind};

const BACKEND: &str = "etcd";

/// Client TLS for etcd: the CA that signed the servers, and an optional client certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EtcdTls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

pub struct EtcdStore {
    endpoints: Arc<Endpoints>,
    prefix: String,
    progress: ProgressMechanism,
}

/// How a watch answers a progress request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ProgressMechanism {
    /// etcd's `RequestProgress` on the watch stream, as kube-apiserver's consistent reads use it.
    /// Only where every member is a release whose answer is ordered after the events it covers
    /// (3.4.31+, 3.5.13+): older ones send it on a control channel that can overtake events still
    /// queued for the stream, and kube-apiserver does not use it with them either.
    RequestProgress,
    /// On older members: a put of the watch's barrier key, which lies inside the watched range.
    /// Its event arrives in order, after every earlier event under the prefix, so it is an exact
    /// progress report at the cost of one write.
    Barrier,
}

/// The key, under a watch's prefix, whose puts serve as progress barriers. No Kubernetes storage
/// key starts a segment with \u{1}, and watchers turn any barrier event into a progress report
/// instead of delivering it.
const BARRIER: &str = "\u{1}progress";

/// kube-apiserver's compaction key, at the root of etcd (outside every cluster's prefix): every
/// compactor sharing the etcd — each replica of each vkube cluster, and a kube-apiserver if one
/// shares it — coordinates through its version, so etcd is compacted once per interval.
pub const COMPACT_REV_KEY: &str = "compact_rev_key";

/// Whether an etcd release orders `RequestProgress` answers after pending events (etcd's fix of
/// issue 15220 and its follow-ups, the versions kube-apiserver checks for).
fn orders_progress(version: &str) -> bool {
    let mut parts = version
        .split(['.', '-', '+'])
        .map(|p| p.parse::<u64>().ok());
    let (Some(Some(major)), Some(Some(minor)), Some(Some(patch))) =
        (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    match (major, minor) {
        (3, 4) => patch >= 31,
        (3, 5) => patch >= 13,
        (3, m) => m > 5,
        (m, _) => m > 3,
    }
}

/// Largest response accepted from etcd, as kube-apiserver allows (its values reach 1.5 MiB each).
const MAX_RESPONSE: usize = i32::MAX as usize;
/// Keys per Range when a list asks for more: bounds one response, as kube-apiserver pages etcd.
const LIST_CHUNK: usize = 1000;

fn etcd_err(err: etcd_client::Error) -> StoreError {
    StoreError::backend(BACKEND, err)
}

fn read_pem(path: &PathBuf) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| StoreError::backend(BACKEND, format!("reading {}: {e}", path.display())))
}

impl EtcdStore {
    /// Connects to `endpoints` (`host:port`, or URLs), the first preferred; every key is stored
    /// under `prefix`.
    pub async fn connect(
        endpoints: &[String],
        prefix: &str,
        tls: Option<EtcdTls>,
    ) -> Result<Arc<Self>> {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let endpoints: Vec<String> = endpoints
            .iter()
            .map(|e| {
                if e.contains("://") {
                    e.clone()
                } else {
                    format!("{scheme}://{e}")
                }
            })
            .collect();
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            // A member cut off from its leader refuses requests (and ends watches) at once, so
            // they move to another endpoint instead of waiting on it.
            .with_require_leader(true);
        if let Some(tls) = tls {
            let mut config = TlsOptions::new();
            if let Some(ca) = &tls.ca_file {
                config = config.ca_certificate(Certificate::from_pem(read_pem(ca)?));
            }
            match (&tls.cert_file, &tls.key_file) {
                (Some(cert), Some(key)) => {
                    config = config.identity(Identity::from_pem(read_pem(cert)?, read_pem(key)?));
                }
                (None, None) => {}
                _ => {
                    return Err(StoreError::backend(
                        BACKEND,
                        "a client certificate needs both a cert file and a key file",
                    ));
                }
            }
            options = options.with_tls(config);
        }
        let mut clients = Vec::new();
        let mut ordered = true;
        for endpoint in endpoints {
            let client = Client::connect([&endpoint], Some(options.clone()))
                .await
                .map_err(etcd_err)?;
            // A member that cannot be asked counts as an old one: barriers are always exact.
            let version = client
                .clone()
                .status()
                .await
                .map(|s| s.version().to_string());
            ordered &= version.as_deref().is_ok_and(orders_progress);
            clients.push((endpoint, client));
        }
        let progress = if ordered {
            ProgressMechanism::RequestProgress
        } else {
            ProgressMechanism::Barrier
        };
        tracing::debug!(?progress, "etcd watch progress");
        let store = EtcdStore {
            endpoints: Endpoints::new(clients),
            prefix: prefix.to_string(),
            progress,
        };
        // Fail now, not on first use, when no endpoint answers.
        store.current_revision().await?;
        Ok(Arc::new(store))
    }

    /// A Range on whichever endpoint serves.
    async fn get_on_any(
        &self,
        key: String,
        options: GetOptions,
    ) -> std::result::Result<etcd_client::GetResponse, etcd_client::Error> {
        self.endpoints
            .call(Kind::Read, |c| {
                let (key, options) = (key.clone(), options.clone());
                async move { kv(&c).get(key, Some(options)).await }
            })
            .await
    }

    /// A transaction, sent to another endpoint only when it surely never reached one.
    async fn txn(&self, txn: Txn) -> Result<etcd_client::TxnResponse> {
        self.endpoints
            .call(Kind::Write, |c| {
                let txn = txn.clone();
                async move { kv(&c).txn(txn).await }
            })
            .await
            .map_err(etcd_err)
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn kv_of(&self, kv: &etcd_client::KeyValue) -> Result<KeyValue> {
        convert(&self.prefix, kv)
    }

    /// Maps etcd's revision errors to ours; they carry no numbers, so fetch them.
    async fn revision_err(&self, err: etcd_client::Error, requested: Revision) -> StoreError {
        let text = err.to_string();
        if text.contains("required revision has been compacted") {
            StoreError::Compacted {
                requested,
                compact_revision: self.compact_revision().await.unwrap_or(0),
            }
        } else if text.contains("required revision is a future revision") {
            match self.current_revision().await {
                Ok(current) => StoreError::FutureRevision { requested, current },
                Err(e) => e,
            }
        } else {
            etcd_err(err)
        }
    }

    /// etcd reports its compaction revision only to a watcher that starts below it.
    async fn compact_revision(&self) -> Result<Revision> {
        let key = self.full("\u{1}compaction-probe");
        let mut stream = self
            .endpoints
            .call(Kind::Read, |c| {
                let key = key.clone();
                async move {
                    c.watch_client()
                        .max_decoding_message_size(MAX_RESPONSE)
                        .watch(key, Some(WatchOptions::new().with_start_revision(1)))
                        .await
                }
            })
            .await
            .map_err(etcd_err)?;
        let probe = async {
            while let Some(resp) = stream.message().await.map_err(etcd_err)? {
                if resp.compact_revision() > 0 {
                    return Ok(resp.compact_revision());
                }
            }
            Ok(0)
        };
        tokio::time::timeout(Duration::from_secs(2), probe)
            .await
            .unwrap_or(Ok(0))
    }

    async fn lease(&self, ttl: Option<Duration>) -> Result<Option<PutOptions>> {
        let Some(ttl) = ttl else { return Ok(None) };
        let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        // A lease nobody uses expires by itself, so a grant may be sent again elsewhere.
        let lease = self
            .endpoints
            .call(Kind::Read, |c| async move {
                c.lease_client().grant(secs.max(1) as i64, None).await
            })
            .await
            .map_err(etcd_err)?;
        Ok(Some(PutOptions::new().with_lease(lease.id())))
    }

    fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Result<Revision> {
        header
            .map(|h| h.revision())
            .ok_or_else(|| StoreError::backend(BACKEND, "response without a header"))
    }

    /// The current value of a key from a failed transaction's `or_else` get.
    fn failed_get(&self, responses: &[TxnOpResponse]) -> Result<Option<KeyValue>> {
        match responses.first() {
            Some(TxnOpResponse::Get(get)) => get.kvs().first().map(|kv| self.kv_of(kv)).transpose(),
            _ => Ok(None),
        }
    }
}

/// Our view of an etcd key-value: the key without the store's prefix.
fn convert(prefix: &str, kv: &etcd_client::KeyValue) -> Result<KeyValue> {
    let key = kv
        .key_str()
        .ok()
        .and_then(|k| k.strip_prefix(prefix))
        .ok_or_else(|| StoreError::backend(BACKEND, format!("unexpected key {:?}", kv.key())))?;
    Ok(KeyValue {
        key: key.to_string(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
    })
}

fn kv(client: &Client) -> etcd_client::KvClient {
    client.kv_client().max_decoding_message_size(MAX_RESPONSE)
}

/// The end of etcd's key range for everything under `prefix` (bytewise); "\0" means "to the end".
fn range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[async_trait]
impl Store for EtcdStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn get(&self, key: &str, revision: Option<Revision>) -> Result<Option<KeyValue>> {
        let mut options = GetOptions::new();
        if let Some(rev) = revision {
            if rev <= 0 {
                return Err(self.revision_err_for_nonpositive(rev).await);
            }
            options = options.with_revision(rev);
        }
        match self.get_on_any(self.full(key), options).await {
            Ok(resp) => resp.kvs().first().map(|kv| self.kv_of(kv)).transpose(),
            Err(err) => Err(self.revision_err(err, revision.unwrap_or(0)).await),
        }
    }

    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListResult> {
        if let Some(rev) = options.revision.filter(|r| *r <= 0) {
            return Err(self.revision_err_for_nonpositive(rev).await);
        }
        let end = match prefix_end(prefix) {
            Some(end) => self.full(&end).into_bytes(),
            None => range_end(self.prefix.as_bytes()),
        };
        let mut start = match &options.start_after {
            Some(after) if after.as_str() >= prefix => format!("{}{after}\0", self.prefix),
            _ => self.full(prefix),
        };
        let wanted = options.limit.unwrap_or(usize::MAX);
        let mut revision = options.revision;
        let mut items = Vec::new();
        // Chunks of at most LIST_CHUNK keys, all read at the revision of the first.
        loop {
            let chunk = (wanted - items.len()).clamp(1, LIST_CHUNK);
            let mut get = GetOptions::new()
                .with_range(end.clone())
                .with_limit(chunk as i64);
            if let Some(rev) = revision {
                get = get.with_revision(rev);
            }
            let resp = match self.get_on_any(start.clone(), get).await {
                Ok(resp) => resp,
                Err(err) => return Err(self.revision_err(err, revision.unwrap_or(0)).await),
            };
            let at = match revision {
                Some(rev) => rev,
                None => Self::header_revision(resp.header())?,
            };
            revision = Some(at);
            let kvs = resp.kvs();
            if wanted == 0 {
                return Ok(ListResult {
                    items,
                    revision: at,
                    more: !kvs.is_empty(),
                });
            }
            for kv in kvs {
                items.push(self.kv_of(kv)?);
            }
            if !resp.more() || items.len() >= wanted {
                return Ok(ListResult {
                    items,
                    revision: at,
                    more: resp.more(),
                });
            }
            start = format!(
                "{}\0",
                String::from_utf8_lossy(kvs.last().map_or(&[][..], |kv| kv.key()))
            );
        }
    }

    async fn count(&self, prefix: &str, options: ListOptions) -> Result<usize> {
        if let Some(rev) = options.revision.filter(|r| *r <= 0) {
            return Err(self.revision_err_for_nonpositive(rev).await);
        }
        let end = match prefix_end(prefix) {
            Some(end) => self.full(&end).into_bytes(),
            None => range_end(self.prefix.as_bytes()),
        };
        let start = match &options.start_after {
            Some(after) if after.as_str() >= prefix => format!("{}{after}\0", self.prefix),
            _ => self.full(prefix),
        };
        let mut get = GetOptions::new().with_range(end).with_count_only();
        if let Some(rev) = options.revision {
            get = get.with_revision(rev);
        }
        match self.get_on_any(start, get).await {
            Ok(resp) => Ok(usize::try_from(resp.count()).unwrap_or(0)),
            Err(err) => Err(self.revision_err(err, options.revision.unwrap_or(0)).await),
        }
    }

    async fn create(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> Result<KeyValue> {
        check_key(key)?;
        let full = self.full(key);
        let put = self.lease(ttl).await?;
        let txn = Txn::new()
            .when([Compare::create_revision(full.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(full.clone(), value.clone(), put)]);
        let resp = self.txn(txn).await?;
        if !resp.succeeded() {
            return Err(StoreError::AlreadyExists {
                key: key.to_string(),
            });
        }
        let revision = Self::header_revision(resp.header())?;
        Ok(KeyValue {
            key: key.to_string(),
            value,
            create_revision: revision,
            mod_revision: revision,
            version: 1,
        })
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
        ttl: Option<Duration>,
    ) -> Result<KeyValue> {
        check_key(key)?;
        let full = self.full(key);
        let put = self.lease(ttl).await?.unwrap_or_default().with_prev_key();
        let txn = Txn::new()
            .when([
                Compare::version(full.clone(), CompareOp::Greater, 0),
                Compare::mod_revision(full.clone(), CompareOp::Equal, expected),
            ])
            .and_then([TxnOp::put(full.clone(), value.clone(), Some(put))])
            .or_else([TxnOp::get(full, None)]);
        let resp = self.txn(txn).await?;
        let responses = resp.op_responses();
        if !resp.succeeded() {
            return Err(match self.failed_get(&responses)? {
                None => StoreError::NotFound {
                    key: key.to_string(),
                },
                Some(current) => StoreError::Conflict {
                    key: key.to_string(),
                    expected,
                    current: Box::new(current),
                },
            });
        }
        let revision = Self::header_revision(resp.header())?;
        let prev = match responses.first() {
            Some(TxnOpResponse::Put(put)) => put.prev_key().map(|kv| self.kv_of(kv)).transpose()?,
            _ => None,
        }
        .ok_or_else(|| StoreError::backend(BACKEND, "a put without its previous value"))?;
        Ok(KeyValue {
            key: key.to_string(),
            value,
            create_revision: prev.create_revision,
            mod_revision: revision,
            version: prev.version + 1,
        })
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(KeyValue, Revision)> {
        check_key(key)?;
        let full = self.full(key);
        let mut when = vec![Compare::version(full.clone(), CompareOp::Greater, 0)];
        if let Some(expected) = expected {
            when.push(Compare::mod_revision(
                full.clone(),
                CompareOp::Equal,
                expected,
            ));
        }
        let txn = Txn::new()
            .when(when)
            .and_then([TxnOp::delete(
                full.clone(),
                Some(DeleteOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(full, None)]);
        let resp = self.txn(txn).await?;
        let responses = resp.op_responses();
        if !resp.succeeded() {
            return Err(match (self.failed_get(&responses)?, expected) {
                (Some(current), Some(expected)) => StoreError::Conflict {
                    key: key.to_string(),
                    expected,
                    current: Box::new(current),
                },
                _ => StoreError::NotFound {
                    key: key.to_string(),
                },
            });
        }
        let revision = Self::header_revision(resp.header())?;
        let prev = match responses.first() {
            Some(TxnOpResponse::Delete(del)) => del
                .prev_kvs()
                .first()
                .map(|kv| self.kv_of(kv))
                .transpose()?,
            _ => None,
        }
        .ok_or_else(|| StoreError::NotFound {
            key: key.to_string(),
        })?;
        Ok((prev, revision))
    }

    async fn current_revision(&self) -> Result<Revision> {
        let resp = self
            .get_on_any(
                self.full("\u{1}revision-probe"),
                GetOptions::new().with_count_only(),
            )
            .await
            .map_err(etcd_err)?;
        Self::header_revision(resp.header())
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let current = self.current_revision().await?;
        if revision > current {
            return Err(StoreError::FutureRevision {
                requested: revision,
                current,
            });
        }
        let compaction = self
            .endpoints
            .call(Kind::Read, |c| async move {
                let options = etcd_client::CompactionOptions::new().with_physical();
                kv(&c).compact(revision, Some(options)).await
            })
            .await;
        match compaction {
            Ok(_) => Ok(()),
            Err(err) => Err(self.revision_err(err, revision).await),
        }
    }

    /// kube-apiserver's compactor round: a transaction on [`COMPACT_REV_KEY`]'s version. The one
    /// compactor whose view of the version is current wins the round, records the revision it
    /// read an interval ago and compacts at it; the others learn the version and revision and wait
    /// for the next interval. So N compactors (replicas, clusters) compact once per interval,
    /// always at least an interval behind the newest write.
    async fn compact_round(&self, last: Compaction) -> Result<Compaction> {
        let txn = Txn::new()
            .when([Compare::version(
                COMPACT_REV_KEY,
                CompareOp::Equal,
                last.epoch,
            )])
            .and_then([TxnOp::put(COMPACT_REV_KEY, last.revision.to_string(), None)])
            .or_else([TxnOp::get(COMPACT_REV_KEY, None)]);
        let resp = self.txn(txn).await?;
        let revision = Self::header_revision(resp.header())?;
        if !resp.succeeded() {
            let epoch = match resp.op_responses().first() {
                Some(TxnOpResponse::Get(get)) => get.kvs().first().map_or(0, |kv| kv.version()),
                _ => 0,
            };
            return Ok(Compaction {
                epoch,
                revision,
                compacted: None,
            });
        }
        let epoch = last.epoch + 1;
        // The first round only records a revision: nothing is an interval old yet.
        if last.revision <= 0 {
            return Ok(Compaction {
                epoch,
                revision,
                compacted: None,
            });
        }
        let compacted = match self.compact(last.revision).await {
            Ok(()) => Some(last.revision),
            Err(StoreError::Compacted { .. }) => None,
            Err(err) => {
                tracing::warn!(%err, revision = last.revision, "etcd compaction failed");
                None
            }
        };
        Ok(Compaction {
            epoch,
            revision,
            compacted,
        })
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<Watch> {
        // A range read at `from` fails exactly when `from` is below the compaction, which is
        // when events after `from` may be gone: the same rule as the log-backed stores.
        if from > 0 {
            let probe = GetOptions::new().with_revision(from).with_count_only();
            if let Err(err) = self.get_on_any(self.full(prefix), probe).await {
                let err = self.revision_err(err, from).await;
                if !matches!(err, StoreError::FutureRevision { .. }) {
                    return Err(err);
                }
            }
        } else {
            let compacted = self.compact_revision().await?;
            if compacted > 0 {
                return Err(StoreError::Compacted {
                    requested: from,
                    compact_revision: compacted,
                });
            }
        }
        let (tx, rx) = mpsc::channel(512);
        let requests = ProgressRequester::default();
        let watcher = EtcdWatcher {
            endpoints: self.endpoints.clone(),
            store_prefix: self.prefix.clone(),
            prefix: prefix.to_string(),
            last: from,
            tx,
            failures: 0,
            requests: requests.clone(),
            mechanism: self.progress,
            pending: false,
        };
        let task = tokio::spawn(watcher.run());
        Ok(Watch::new(rx, task.abort_handle(), requests))
    }
}

impl EtcdStore {
    async fn revision_err_for_nonpositive(&self, requested: Revision) -> StoreError {
        match self.compact_revision().await {
            Ok(c) if c > 0 => StoreError::Compacted {
                requested,
                compact_revision: c,
            },
            Ok(_) => StoreError::Compacted {
                requested,
                compact_revision: 1,
            },
            Err(e) => e,
        }
    }
}

/// One watch: re-opens etcd's stream after a transport error, from the last revision delivered,
/// so the consumer sees no gap and no duplicate.
struct EtcdWatcher {
    endpoints: Arc<Endpoints>,
    store_prefix: String,
    prefix: String,
    last: Revision,
    tx: mpsc::Sender<Result<WatchItem>>,
    /// Transport errors in a row; the watch gives up after 20 without a response between them.
    failures: u32,
    requests: ProgressRequester,
    mechanism: ProgressMechanism,
    /// A progress request not yet answered (asked again on a new stream after a break).
    pending: bool,
}

impl EtcdWatcher {
    async fn run(mut self) {
        loop {
            match self.stream().await {
                Ok(Some(err)) => {
                    let _ = self.tx.send(Err(err)).await;
                    return;
                }
                Ok(None) => return,
                Err(err) => {
                    self.failures += 1;
                    if self.failures > 20 {
                        let _ = self.tx.send(Err(err)).await;
                        return;
                    }
                    tracing::warn!(%err, "etcd watch broke; resuming");
                    tokio::time::sleep(Duration::from_millis(
                        100 * u64::from(self.failures.min(10)),
                    ))
                    .await;
                }
            }
        }
    }

    /// Streams until the consumer leaves (`Ok(None)`), a final error (`Ok(Some)`), or a transport
    /// error worth retrying (`Err`).
    async fn stream(&mut self) -> Result<Option<StoreError>> {
        let full = format!("{}{}", self.store_prefix, self.prefix);
        let end = match prefix_end(&self.prefix) {
            Some(end) => format!("{}{end}", self.store_prefix).into_bytes(),
            None => range_end(self.store_prefix.as_bytes()),
        };
        // Periodic progress notifications (etcd sends them per watcher, in order, on every
        // release) keep `last` moving on a quiet prefix, so a resumed watch starts near the head
        // instead of below a compaction.
        let options = WatchOptions::new()
            .with_range(end)
            .with_start_revision(self.last + 1)
            .with_prev_key()
            .with_progress_notify();
        let (at, client) = self.endpoints.current();
        let opened = client
            .watch_client()
            .max_decoding_message_size(MAX_RESPONSE)
            .watch(full, Some(options))
            .await;
        let (mut sender, mut stream) = opened.map_err(|e| self.broke(at, e))?.split();
        if self.pending {
            self.ask_progress(&mut sender, at).await?;
        }
        loop {
            let message = tokio::select! {
                message = stream.message() => message,
                () = self.requests.requested() => {
                    self.pending = true;
                    self.ask_progress(&mut sender, at).await?;
                    continue;
                }
            };
            let Some(resp) = message.map_err(|e| self.broke(at, e))? else {
                break;
            };
            self.failures = 0;
            if resp.compact_revision() > 0 {
                return Ok(Some(StoreError::Compacted {
                    requested: self.last,
                    compact_revision: resp.compact_revision(),
                }));
            }
            // etcd's IsProgressNotify: no events, not a creation or cancellation.
            if resp.events().is_empty() && !resp.created() && !resp.canceled() {
                let revision = Self::header_revision(resp.header())?;
                if revision > 0 && !self.progressed(revision).await {
                    return Ok(None);
                }
                continue;
            }
            for event in resp.events() {
                let event = match self.event(event) {
                    Ok(event) => event,
                    Err(err) => return Ok(Some(err)),
                };
                if event.key.ends_with(BARRIER) {
                    // A barrier (ours, or another watcher's under our prefix): every event
                    // before it in the range has been delivered.
                    if !self.progressed(event.revision).await {
                        return Ok(None);
                    }
                    continue;
                }
                if event.revision <= self.last {
                    continue;
                }
                self.last = event.revision;
                if self.tx.send(Ok(WatchItem::Event(event))).await.is_err() {
                    return Ok(None);
                }
            }
            if resp.canceled() {
                // For instance "no leader": the member lost its cluster, another may not have.
                self.endpoints.failed(at);
                return Err(StoreError::backend(
                    BACKEND,
                    format!("watch canceled: {}", resp.cancel_reason()),
                ));
            }
        }
        self.endpoints.failed(at);
        Err(StoreError::backend(BACKEND, "watch stream ended"))
    }

    fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Result<Revision> {
        EtcdStore::header_revision(header)
    }

    /// Reports that every event up to `revision` has been delivered; `false` once the consumer
    /// has gone.
    async fn progressed(&mut self, revision: Revision) -> bool {
        self.pending = false;
        self.last = self.last.max(revision);
        self.tx
            .send(Ok(WatchItem::Progress(self.last)))
            .await
            .is_ok()
    }

    /// Asks etcd, on the stream of endpoint `at`, for a progress report.
    async fn ask_progress(
        &self,
        sender: &mut etcd_client::WatchRequestSender,
        at: usize,
    ) -> Result<()> {
        match self.mechanism {
            ProgressMechanism::RequestProgress => sender
                .request_progress()
                .await
                .map_err(|e| self.broke(at, e)),
            ProgressMechanism::Barrier => {
                let key = format!("{}{}{BARRIER}", self.store_prefix, self.prefix);
                // Not awaited here: the stream must keep being read while the put is on its way.
                let endpoints = self.endpoints.clone();
                tokio::spawn(async move {
                    let put = endpoints
                        .call(Kind::Read, |c| {
                            let key = key.clone();
                            async move { kv(&c).put(key, Vec::new(), None).await }
                        })
                        .await;
                    if let Err(err) = put {
                        tracing::debug!(%err, "etcd progress barrier failed");
                    }
                });
                Ok(())
            }
        }
    }

    /// A transport error on endpoint `at`: the next attempt goes to another endpoint.
    fn broke(&self, at: usize, err: etcd_client::Error) -> StoreError {
        if failover::retryable(&err, Kind::Read) {
            self.endpoints.failed(at);
        }
        etcd_err(err)
    }

    fn event(&self, event: &etcd_client::Event) -> Result<Event> {
        let convert = |kv| convert(&self.store_prefix, kv);
        let kv = event
            .kv()
            .ok_or_else(|| StoreError::backend(BACKEND, "an event without a key"))?;
        let current = convert(kv)?;
        let prev = event.prev_kv().map(convert).transpose()?;
        Ok(match event.event_type() {
            EventType::Delete => Event {
                kind: EventKind::Delete,
                revision: current.mod_revision,
                key: current.key,
                value: None,
                prev,
            },
            EventType::Put if current.create_revision == current.mod_revision => Event {
                kind: EventKind::Create,
                revision: current.mod_revision,
                key: current.key.clone(),
                value: Some(current),
                prev: None,
            },
            EventType::Put => Event {
                kind: EventKind::Update,
                revision: current.mod_revision,
                key: current.key.clone(),
                value: Some(current),
                prev,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::orders_progress;

    #[test]
    fn request_progress_only_on_releases_that_order_it() {
        for old in [
            "3.4.23", "3.4.30", "3.5.0", "3.5.12", "3.3.27", "garbage", "",
        ] {
            assert!(!orders_progress(old), "{old}");
        }
        for new in [
            "3.4.31",
            "3.4.35",
            "3.5.13",
            "3.5.17",
            "3.6.0",
            "3.6.1-rc.0",
            "4.0.0",
        ] {
            assert!(orders_progress(new), "{new}");
        }
    }
}
