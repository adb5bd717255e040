//! Test harness: a fresh, isolated store of each backend, on the servers the environment names
//! (`VKUBE_TEST_ETCD_ENDPOINTS`, `VKUBE_TEST_POSTGRES_URL`) or on servers it starts itself.
//! A backend that cannot be reached fails the test; nothing is skipped.

pub mod servers;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use vkube_store::{Event, Revision, Store, Watch};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Memory,
    /// Memory behind encryption at rest (every key, AES-GCM): the decorator must keep every
    /// promise of the store it wraps.
    Encrypted,
    Sqlite,
    Postgres,
    Etcd,
}

/// One test's store. On etcd, tests share the server, so they hold a lock for their duration:
/// that keeps revision arithmetic exact (no other test writes in between).
pub struct Fixture {
    pub backend: Backend,
    pub store: Arc<dyn Store>,
    /// The URL another process (or a reopen) uses to reach the same data; none for memory.
    pub url: Option<String>,
    _dir: Option<tempfile::TempDir>,
    _lock: Option<tokio::sync::MutexGuard<'static, ()>>,
}

static ETCD_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
static COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{tag}_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// `store` with every key encrypted by AES-GCM.
fn encrypted(store: Arc<dyn Store>) -> Arc<dyn Store> {
    let config = vkube_store::transform::parse(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: ['*.*']\n  providers:\n  - aesgcm: {keys: [{name: k, secret: AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=}]}\n",
        "conformance",
    )
    .expect("a valid config");
    vkube_store::transform::EncryptedStore::wrap(store, &config, |_| vec![String::new()])
}

impl Fixture {
    pub async fn new(backend: Backend) -> Fixture {
        let (url, dir, lock) = match backend {
            Backend::Memory | Backend::Encrypted => (None, None, None),
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("state.db").display());
                (Some(url), Some(dir), None)
            }
            Backend::Postgres => {
                let url = servers::postgres_database(&unique("vkube_t")).await;
                (Some(url), None, None)
            }
            Backend::Etcd => {
                let lock = ETCD_LOCK.lock().await;
                let endpoints = servers::etcd_endpoints();
                let url = format!("etcd://{endpoints}?prefix=/{}", unique("vkube-t"));
                (Some(url), None, Some(lock))
            }
        };
        let store = match &url {
            Some(url) => vkube_store::open(url)
                .await
                .unwrap_or_else(|e| panic!("{backend:?} at {url}: {e}")),
            None if backend == Backend::Encrypted => encrypted(vkube_store::MemoryStore::new()),
            None => vkube_store::MemoryStore::new(),
        };
        Fixture {
            backend,
            store,
            url,
            _dir: dir,
            _lock: lock,
        }
    }

    /// A second, independent handle on the same data, as after a process restart.
    pub async fn reopen(&self) -> Arc<dyn Store> {
        match &self.url {
            Some(url) => vkube_store::open(url).await.expect("reopen"),
            None => self.store.clone(),
        }
    }
}

impl Fixture {
    /// A store of another cluster on the same etcd: its own key prefix, the shared revision.
    pub async fn neighbour(&self) -> Arc<dyn Store> {
        assert_eq!(
            self.backend,
            Backend::Etcd,
            "only etcd stores have neighbours"
        );
        let url = format!(
            "etcd://{}?prefix=/{}",
            servers::etcd_endpoints(),
            unique("vkube-n")
        );
        vkube_store::open(&url).await.expect("open a neighbour")
    }
}

/// The next item of a watch, failing the test after 20 s.
pub async fn next_event(watch: &mut Watch) -> Event {
    match tokio::time::timeout(Duration::from_secs(20), watch.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(err))) => panic!("watch failed: {err}"),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no event within 20 s"),
    }
}

/// Events from a watch until one at or above `until`.
pub async fn events_until(watch: &mut Watch, until: Revision) -> Vec<Event> {
    let mut events = Vec::new();
    while events.last().is_none_or(|e: &Event| e.revision < until) {
        events.push(next_event(watch).await);
    }
    events
}

/// Asserts that no further event arrives within a short while.
pub async fn assert_quiet(watch: &mut Watch) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(300), watch.next()).await {
        panic!("unexpected watch item: {item:?}");
    }
}

/// The worker binary of the multi-process tests.
pub fn worker() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_vkube-store-worker"))
}
