//! CustomResourceDefinitions at run time. Every replica keeps the registry's table of custom
//! resources fed from the one store watch (the [`CrdView`]), so every replica serves a CRD once it
//! has seen the same revision; a request for a resource it does not know yet first waits for the
//! view to reach the store's current revision, as an RBAC deny does (DESIGN rule 3). Upstream's
//! CRD controllers (naming, establishing, and the `customresourcecleanup.apiextensions.k8s.io`
//! finalizer that the DELETE handler sets) run in vkube-controllers as clients of the API, on
//! the loopback identity `system:apiserver`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use vkube_api::registry::custom;
use vkube_store::{ListOptions, Revision, Store, StoreError};

use crate::hub::{Change, Hub};

/// Where CRDs are stored, as upstream.
pub const PREFIX: &str = "/registry/apiextensions.k8s.io/customresourcedefinitions/";
/// The finalizer every CRD gets on delete: its objects go first.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";
/// How long a request for an unknown resource may wait for the view to catch up.
const CATCH_UP_WAIT: Duration = Duration::from_secs(2);

/// The registry's custom resources, with the store revision they reflect.
pub struct CrdView {
    revision: tokio::sync::watch::Sender<Revision>,
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
}

impl CrdView {
    /// Installs the stored CRDs at the current revision, then follows the hub.
    pub async fn start(store: Arc<dyn Store>, hub: Arc<Hub>) -> Result<Arc<CrdView>, StoreError> {
        let view = Arc::new(CrdView {
            revision: tokio::sync::watch::channel(0).0,
            store,
            hub: hub.clone(),
        });
        let at = crate::hub::retrying_compacted(|| view.load()).await?;
        let this = view.clone();
        tokio::spawn(async move {
            let reload = || this.load();
            hub.follow(at, "CRD view", |c| this.take(c), reload).await
        });
        Ok(view)
    }

    /// Lists the CRDs and replaces the registry's table with them in one swap: this runs at
    /// start and whenever the hub's window no longer reaches back to the view, while requests
    /// are being served, so the table must never be seen empty or partly filled meanwhile.
    async fn load(&self) -> Result<Revision, StoreError> {
        let page = self.store.list(PREFIX, ListOptions::default()).await?;
        let crds: Vec<Value> = page
            .items
            .iter()
            .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
            .collect();
        custom::replace_all(&crds);
        self.revision.send_replace(page.revision);
        Ok(page.revision)
    }

    fn take(&self, change: &Change) {
        if let Some(name) = change.key.strip_prefix(PREFIX) {
            match &change.object {
                Some(crd) => custom::install(crd),
                None => custom::remove(name),
            }
        }
        self.revision.send_replace(change.revision);
    }

    /// Waits (briefly) until the view reflects the store's current revision. Returns whether
    /// it had to: then a lookup that failed is worth repeating.
    /// The store's current revision is reached through the hub's progress reports (see
    /// [`Hub::sync`]), so writes outside the view's watch are not waited for.
    pub async fn catch_up(&self) -> bool {
        let deadline = tokio::time::Instant::now() + CATCH_UP_WAIT;
        let before = *self.revision.borrow();
        let Some(target) = self.hub.sync(CATCH_UP_WAIT).await else {
            return false;
        };
        if before >= target {
            return false;
        }
        let mut rx = self.revision.subscribe();
        let _ = tokio::time::timeout_at(deadline, rx.wait_for(|r| *r >= target)).await;
        true
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::rest::encode;

    /// A stored, established CRD of its own group (the registry's table is shared by every
    /// test of this binary).
    fn established(plural: &str) -> Value {
        json!({
            "metadata": {"name": format!("{plural}.reload.example.com")},
            "spec": {"group": "reload.example.com", "scope": "Namespaced",
                     "names": {"plural": plural, "kind": "Reloaded"},
                     "versions": [{"name": "v1", "served": true, "storage": true}]},
            "status": {"acceptedNames": {"plural": plural, "kind": "Reloaded"},
                       "conditions": [{"type": "Established", "status": "True"}]},
        })
    }

    #[test]
    fn a_reload_never_leaves_a_served_crd_missing() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let _in_runtime = runtime.enter();
        let store: Arc<dyn Store> = vkube_store::MemoryStore::new();
        let plurals: Vec<String> = (0..40).map(|i| format!("things{i}")).collect();
        runtime.block_on(async {
            for p in &plurals {
                let c = established(p);
                let key = format!("{PREFIX}{}", c["metadata"]["name"].as_str().unwrap());
                store.create(&key, encode(&c), None).await.unwrap();
            }
        });
        let hub = runtime.block_on(Hub::start(store.clone())).unwrap();
        let view = CrdView {
            revision: tokio::sync::watch::channel(0).0,
            store,
            hub,
        };
        runtime.block_on(view.load()).unwrap();
        let done = std::sync::atomic::AtomicBool::new(false);
        let misses = std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let mut misses = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    for p in &plurals {
                        if vkube_api::registry::find("reload.example.com", "v1", p).is_none() {
                            misses += 1;
                        }
                    }
                }
                misses
            });
            // Re-lists, as after a lagged watch, while requests look the resources up.
            for _ in 0..200 {
                runtime.block_on(view.load()).unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            reader.join().unwrap()
        });
        assert_eq!(misses, 0, "lookups that found no resource during reloads");
    }
}
