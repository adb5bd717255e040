//! The APIService set: every APIService parsed, fed from the server's one store watch and tagged
//! with the store revision it reflects (DESIGN rule 2), so every replica proxies and advertises
//! the same aggregated group/versions. A request for an aggregated path first waits (briefly)
//! for the view to reach the store's current revision.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::Value;
use vkube_store::{ListOptions, Revision, Store, StoreError};

use crate::hub::{Change, Hub};

const CATCH_UP_WAIT: Duration = Duration::from_secs(2);

/// Where a non-local APIService sends its requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    pub namespace: String,
    pub name: String,
    pub port: u16,
}

/// One APIService as the proxy and discovery read it.
#[derive(Clone, Debug)]
pub struct Registration {
    pub name: String,
    pub group: String,
    pub version: String,
    /// `None` for a local APIService (served by vkube itself).
    pub backend: Option<Backend>,
    pub ca_bundle: Option<String>,
    pub insecure: bool,
    pub group_priority: i64,
    pub version_priority: i64,
    /// `status.conditions[type=Available].status == "True"`.
    pub available: bool,
    /// The Available condition's (status, reason, message), if any.
    pub condition: Option<(String, String, String)>,
    /// The `kube-aggregator.kubernetes.io/automanaged` label: `onstart` (built-in groups) or
    /// `true` (CRD groups).
    pub automanaged: Option<String>,
    pub resource_version: String,
}

impl Registration {
    pub fn parse(obj: &Value) -> Registration {
        let spec = &obj["spec"];
        let backend = spec["service"].as_object().map(|svc| Backend {
            namespace: svc
                .get("namespace")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .into(),
            name: svc
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .into(),
            port: svc
                .get("port")
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(443),
        });
        let condition = obj["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Available")
            .map(|c| {
                let text = |k: &str| c[k].as_str().unwrap_or_default().to_string();
                (text("status"), text("reason"), text("message"))
            });
        let available = condition.as_ref().is_some_and(|c| c.0 == "True");
        Registration {
            name: obj["metadata"]["name"].as_str().unwrap_or_default().into(),
            group: spec["group"].as_str().unwrap_or_default().into(),
            version: spec["version"].as_str().unwrap_or_default().into(),
            backend,
            ca_bundle: spec["caBundle"]
                .as_str()
                .filter(|b| !b.is_empty())
                .map(Into::into),
            insecure: spec["insecureSkipTLSVerify"].as_bool().unwrap_or(false),
            group_priority: spec["groupPriorityMinimum"].as_i64().unwrap_or(0),
            version_priority: spec["versionPriority"].as_i64().unwrap_or(0),
            available,
            condition,
            automanaged: obj["metadata"]["labels"]["kube-aggregator.kubernetes.io/automanaged"]
                .as_str()
                .map(Into::into),
            resource_version: obj["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
                .into(),
        }
    }
}

type Registrations = BTreeMap<String, Arc<Registration>>;

pub struct ApiServiceView {
    registrations: RwLock<Arc<Registrations>>,
    revision: tokio::sync::watch::Sender<Revision>,
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    prefix: String,
}

impl ApiServiceView {
    pub async fn start(
        store: Arc<dyn Store>,
        hub: Arc<Hub>,
    ) -> Result<Arc<ApiServiceView>, StoreError> {
        let prefix = vkube_api::registry::find("apiregistration.k8s.io", "v1", "apiservices")
            .map(|r| r.key("", ""))
            .unwrap_or_else(|| "/registry/apiregistration.k8s.io/apiservices/".into());
        let view = Arc::new(ApiServiceView {
            registrations: RwLock::new(Arc::default()),
            revision: tokio::sync::watch::channel(0).0,
            store,
            hub: hub.clone(),
            prefix,
        });
        let at = crate::hub::retrying_compacted(|| view.load()).await?;
        let this = view.clone();
        tokio::spawn(async move {
            let reload = || this.load();
            hub.follow(at, "apiservice view", |c| this.take(c), reload)
                .await
        });
        Ok(view)
    }

    /// Lists every APIService and swaps the new set in whole.
    async fn load(&self) -> Result<Revision, StoreError> {
        let page = self
            .store
            .list(&self.prefix, ListOptions::default())
            .await?;
        let set: Registrations = page
            .items
            .iter()
            .filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
            .map(|obj| {
                let r = Registration::parse(&obj);
                (r.name.clone(), Arc::new(r))
            })
            .collect();
        *self
            .registrations
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
        self.revision.send_replace(page.revision);
        Ok(page.revision)
    }

    fn take(&self, change: &Change) {
        if let Some(name) = change.key.strip_prefix(&self.prefix) {
            let mut guard = self
                .registrations
                .write()
                .unwrap_or_else(|e| e.into_inner());
            let mut set = (**guard).clone();
            match &change.object {
                Some(obj) => set.insert(name.to_string(), Arc::new(Registration::parse(obj))),
                None => set.remove(name),
            };
            *guard = Arc::new(set);
        }
        self.revision.send_replace(change.revision);
    }

    /// Every APIService, by name.
    pub fn all(&self) -> Vec<Arc<Registration>> {
        let set = self
            .registrations
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        set.values().cloned().collect()
    }

    /// The APIService with a backend that serves `group`/`version`, if any.
    pub fn remote(&self, group: &str, version: &str) -> Option<Arc<Registration>> {
        self.all()
            .into_iter()
            .find(|r| r.backend.is_some() && r.group == group && r.version == version)
    }

    /// Waits (at most [`CATCH_UP_WAIT`]) until the view reflects the store's current revision.
    pub async fn catch_up(&self) {
        let target = self.hub.sync(CATCH_UP_WAIT).await;
        Hub::view_reach(&self.revision, target, CATCH_UP_WAIT, "apiservice view").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_registration_reads_its_service_and_availability() {
        let r = Registration::parse(&json!({
            "metadata": {"name": "v1alpha1.wardle.example.com", "resourceVersion": "7"},
            "spec": {"group": "wardle.example.com", "version": "v1alpha1",
                     "service": {"namespace": "ns", "name": "api"},
                     "groupPriorityMinimum": 2000, "versionPriority": 200},
            "status": {"conditions": [{"type": "Available", "status": "True"}]},
        }));
        assert_eq!(
            r.backend,
            Some(Backend {
                namespace: "ns".into(),
                name: "api".into(),
                port: 443
            })
        );
        assert!(r.available && !r.insecure && r.ca_bundle.is_none());
        assert_eq!((r.group_priority, r.version_priority), (2000, 200));
        let local = Registration::parse(&json!({
            "metadata": {"name": "v1.apps"},
            "spec": {"group": "apps", "version": "v1", "service": null},
            "status": {"conditions": [{"type": "Available", "status": "False"}]},
        }));
        assert!(local.backend.is_none() && !local.available);
    }
}
