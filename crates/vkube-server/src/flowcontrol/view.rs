//! The FlowSchemas and PriorityLevelConfigurations, fed from the server's one store watch and
//! tagged with the store revision they reflect (DESIGN rule 2): every replica classifies by
//! the same objects. A re-list builds the new set aside and swaps it in whole. Requests do not
//! wait for the view (upstream's filter reads its informer as it is); the leader's upkeep
//! ([`super::ensurer`]) does.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use vkube_store::{ListOptions, Revision, Store, StoreError};

use super::{Config, FlowControl};
use crate::hub::{Change, Hub};

pub(super) fn prefix(plural: &str) -> String {
    vkube_api::registry::find("flowcontrol.apiserver.k8s.io", "v1", plural)
        .map(|r| r.key("", ""))
        .unwrap_or_else(|| format!("/registry/{plural}/"))
}

#[derive(Default, Clone)]
pub struct Objects {
    pub schemas: BTreeMap<String, Value>,
    pub levels: BTreeMap<String, Value>,
}

pub struct FlowControlView {
    objects: Mutex<Arc<Objects>>,
    revision: tokio::sync::watch::Sender<Revision>,
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    schema_prefix: String,
    level_prefix: String,
    control: Arc<FlowControl>,
    /// Bumped on every change to the objects.
    changes: tokio::sync::watch::Sender<u64>,
}

impl FlowControlView {
    /// Loads both kinds at the store's current revision, then follows the hub.
    pub async fn start(
        store: Arc<dyn Store>,
        hub: Arc<Hub>,
        control: Arc<FlowControl>,
    ) -> Result<Arc<FlowControlView>, StoreError> {
        let view = Arc::new(FlowControlView {
            objects: Mutex::new(Arc::default()),
            revision: tokio::sync::watch::channel(0).0,
            store,
            hub: hub.clone(),
            schema_prefix: prefix("flowschemas"),
            level_prefix: prefix("prioritylevelconfigurations"),
            control,
            changes: tokio::sync::watch::channel(0).0,
        });
        let at = crate::hub::retrying_compacted(|| view.load()).await?;
        let this = view.clone();
        tokio::spawn(async move {
            let reload = || this.load();
            hub.follow(at, "flow control view", |c| this.take(c), reload)
                .await
        });
        Ok(view)
    }

    async fn load(&self) -> Result<Revision, StoreError> {
        let schemas = self
            .store
            .list(&self.schema_prefix, ListOptions::default())
            .await?;
        let levels = self
            .store
            .list(
                &self.level_prefix,
                ListOptions {
                    revision: Some(schemas.revision),
                    ..ListOptions::default()
                },
            )
            .await?;
        let mut objects = Objects::default();
        for (items, prefix, into) in [
            (&schemas.items, &self.schema_prefix, &mut objects.schemas),
            (&levels.items, &self.level_prefix, &mut objects.levels),
        ] {
            for kv in items {
                if let (Some(name), Ok(obj)) = (
                    kv.key.strip_prefix(prefix.as_str()),
                    serde_json::from_slice::<Value>(&kv.value),
                ) {
                    into.insert(name.to_string(), obj);
                }
            }
        }
        self.swap(objects);
        self.revision.send_replace(schemas.revision);
        Ok(schemas.revision)
    }

    fn swap(&self, objects: Objects) {
        let schemas: Vec<Value> = objects.schemas.values().cloned().collect();
        let levels: Vec<Value> = objects.levels.values().cloned().collect();
        let mut guard = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        // Configured under the lock, so two changes cannot put their configs in out of order.
        self.control.configure(Config::build(&schemas, &levels));
        *guard = Arc::new(objects);
        self.changes.send_modify(|n| *n += 1);
    }

    /// Resolves at the next change to the objects after this call.
    pub fn changed(&self) -> impl std::future::Future<Output = ()> + use<> {
        let mut rx = self.changes.subscribe();
        async move {
            let _ = rx.changed().await;
        }
    }

    fn take(&self, change: &Change) {
        let schema = change.key.strip_prefix(&self.schema_prefix);
        let level = change.key.strip_prefix(&self.level_prefix);
        if schema.is_some() || level.is_some() {
            let mut objects = (*self.objects()).clone();
            let (name, map) = match (schema, level) {
                (Some(name), _) => (name, &mut objects.schemas),
                (_, Some(name)) => (name, &mut objects.levels),
                _ => unreachable!("one of the two prefixes matched"),
            };
            match &change.object {
                Some(obj) => map.insert(name.to_string(), obj.clone()),
                None => map.remove(name),
            };
            self.swap(objects);
        }
        self.revision.send_replace(change.revision);
    }

    /// The objects as the view has them.
    pub fn objects(&self) -> Arc<Objects> {
        self.objects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits (at most `bound`) until the view reflects the store's current revision; false if
    /// it could not.
    pub async fn catch_up(&self, bound: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + bound;
        let Some(target) = self.hub.sync(bound).await else {
            return false;
        };
        let mut rx = self.revision.subscribe();
        tokio::time::timeout_at(deadline, rx.wait_for(|r| *r >= target))
            .await
            .is_ok()
    }
}
