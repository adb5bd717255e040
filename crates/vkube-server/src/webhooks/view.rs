//! The webhook set: every MutatingWebhookConfiguration and ValidatingWebhookConfiguration, parsed,
//! fed from the server's one store watch and tagged with the store revision it reflects (DESIGN
//! rule 2). A write first waits (briefly) for the view to reach the store's current revision, so a
//! webhook registered through any replica applies to the next write on every replica.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::Value;
use vkube_store::{ListOptions, Revision, Store, StoreError};

use crate::hub::{Change, Hub};

use super::hook::Hook;

/// How long a write may wait for the view to reach the store's revision.
const CATCH_UP_WAIT: Duration = Duration::from_secs(2);

/// Where the two kinds are stored: `/registry/<plural>/`, as upstream.
fn prefix(plural: &str) -> String {
    vkube_api::registry::find("admissionregistration.k8s.io", "v1", plural)
        .map(|r| r.key("", ""))
        .unwrap_or_else(|| format!("/registry/{plural}/"))
}

/// The parsed webhooks of one stored configuration object, by (mutating, configuration name).
type Configurations = BTreeMap<(bool, String), Vec<Arc<Hook>>>;

pub struct WebhookView {
    /// Swapped whole on a re-list; edited in place per change.
    configs: RwLock<Arc<Configurations>>,
    revision: tokio::sync::watch::Sender<Revision>,
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    mutating_prefix: String,
    validating_prefix: String,
    metrics: super::metrics::Metrics,
}

impl WebhookView {
    /// Loads the configurations at the store's current revision, then follows the hub.
    pub async fn start(
        store: Arc<dyn Store>,
        hub: Arc<Hub>,
    ) -> Result<Arc<WebhookView>, StoreError> {
        let view = Arc::new(WebhookView {
            configs: RwLock::new(Arc::default()),
            revision: tokio::sync::watch::channel(0).0,
            store,
            hub: hub.clone(),
            mutating_prefix: prefix("mutatingwebhookconfigurations"),
            validating_prefix: prefix("validatingwebhookconfigurations"),
            metrics: Default::default(),
        });
        let at = crate::hub::retrying_compacted(|| view.load()).await?;
        let this = view.clone();
        tokio::spawn(async move {
            let reload = || this.load();
            hub.follow(at, "webhook view", |c| this.take(c), reload)
                .await
        });
        Ok(view)
    }

    /// Lists both kinds at one revision and swaps the new set in whole: a configuration deleted
    /// while the view was behind must not survive a re-list.
    async fn load(&self) -> Result<Revision, StoreError> {
        let mutating = self
            .store
            .list(&self.mutating_prefix, ListOptions::default())
            .await?;
        let validating = self
            .store
            .list(
                &self.validating_prefix,
                ListOptions {
                    revision: Some(mutating.revision),
                    ..ListOptions::default()
                },
            )
            .await?;
        let mut configs = Configurations::new();
        for (is_mutating, page) in [(true, &mutating), (false, &validating)] {
            for kv in &page.items {
                if let Ok(obj) = serde_json::from_slice::<Value>(&kv.value) {
                    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
                    configs.insert(
                        (is_mutating, name.to_string()),
                        Hook::parse_all(&obj, is_mutating),
                    );
                }
            }
        }
        *self.configs.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(configs);
        self.revision.send_replace(mutating.revision);
        Ok(mutating.revision)
    }

    fn take(&self, change: &Change) {
        let kind = if let Some(name) = change.key.strip_prefix(&self.mutating_prefix) {
            Some((true, name))
        } else {
            change
                .key
                .strip_prefix(&self.validating_prefix)
                .map(|name| (false, name))
        };
        if let Some((is_mutating, name)) = kind {
            let mut guard = self.configs.write().unwrap_or_else(|e| e.into_inner());
            let mut configs = (**guard).clone();
            let key = (is_mutating, name.to_string());
            match &change.object {
                Some(obj) => configs.insert(key, Hook::parse_all(obj, is_mutating)),
                None => configs.remove(&key),
            };
            *guard = Arc::new(configs);
        }
        self.revision.send_replace(change.revision);
    }

    /// The webhooks of one kind, in upstream's order: configurations sorted by name, each
    /// configuration's webhooks in their order.
    pub fn hooks(&self, mutating: bool) -> Vec<Arc<Hook>> {
        let configs = self
            .configs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        configs
            .iter()
            .filter(|((m, _), _)| *m == mutating)
            .flat_map(|(_, hooks)| hooks.iter().cloned())
            .collect()
    }

    /// Waits (at most [`CATCH_UP_WAIT`]) until the view reflects the store's current revision.
    /// When the store cannot be asked in time, the view as it is decides (as upstream's informer).
    pub async fn catch_up(&self) {
        self.catch_up_to(self.hub.sync(CATCH_UP_WAIT).await).await
    }

    /// Waits (at most [`CATCH_UP_WAIT`]) until the view reflects `target`, the store's revision
    /// a write already learned ([`crate::webhooks::Admission::store_revision`]): the admission
    /// policies and the webhooks of one write share one revision read.
    pub async fn catch_up_to(&self, target: Option<Revision>) {
        Hub::view_reach(&self.revision, target, CATCH_UP_WAIT, "webhook view").await
    }

    pub(super) fn metrics(&self) -> &super::metrics::Metrics {
        &self.metrics
    }

    /// Adds the webhook metrics to `/metrics`.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        self.metrics.register(registry);
    }

    /// The revision the view reflects.
    #[cfg(test)]
    pub fn revision(&self) -> Revision {
        *self.revision.borrow()
    }
}
