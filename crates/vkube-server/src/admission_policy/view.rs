//! The policy set: every ValidatingAdmissionPolicy and ValidatingAdmissionPolicyBinding, parsed
//! and compiled, fed from the server's one store watch and tagged with the store revision it
//! reflects (DESIGN rule 2). A write first waits (briefly) for the view to reach the store's
//! current revision, so a policy or binding written through any replica applies to the next
//! write on every replica.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::Value;
use vkube_store::{ListOptions, Revision, Store, StoreError};

use crate::hub::{Change, Hub};

use super::policy::{Binding, Policy};

/// How long a write may wait for the view to reach the store's revision.
const CATCH_UP_WAIT: Duration = Duration::from_secs(2);

fn prefix(plural: &str) -> String {
    vkube_api::registry::find("admissionregistration.k8s.io", "v1", plural)
        .map(|r| r.key("", ""))
        .unwrap_or_else(|| format!("/registry/{plural}/"))
}

#[derive(Default, Clone)]
struct Set {
    policies: BTreeMap<String, Arc<Policy>>,
    bindings: BTreeMap<String, Arc<Binding>>,
}

/// A policy with the bindings that name it, both in name order (upstream sorts neither, but a
/// fixed order makes the first denial the same on every replica).
pub type Hooks = Vec<(Arc<Policy>, Vec<Arc<Binding>>)>;

pub struct PolicyView {
    /// Swapped whole on a re-list; copied and edited per change.
    set: RwLock<Arc<Set>>,
    revision: tokio::sync::watch::Sender<Revision>,
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    policy_prefix: String,
    binding_prefix: String,
}

impl PolicyView {
    /// Loads both kinds at the store's current revision, then follows the hub.
    pub async fn start(
        store: Arc<dyn Store>,
        hub: Arc<Hub>,
    ) -> Result<Arc<PolicyView>, StoreError> {
        let view = Arc::new(PolicyView {
            set: RwLock::new(Arc::default()),
            revision: tokio::sync::watch::channel(0).0,
            store,
            hub: hub.clone(),
            policy_prefix: prefix("validatingadmissionpolicies"),
            binding_prefix: prefix("validatingadmissionpolicybindings"),
        });
        let at = crate::hub::retrying_compacted(|| view.load()).await?;
        let this = view.clone();
        tokio::spawn(async move {
            let reload = || this.load();
            hub.follow(at, "admission policy view", |c| this.take(c), reload)
                .await
        });
        Ok(view)
    }

    /// Lists both kinds at one revision and swaps the new set in whole: an object deleted while
    /// the view was behind must not survive a re-list.
    async fn load(&self) -> Result<Revision, StoreError> {
        let policies = self
            .store
            .list(&self.policy_prefix, ListOptions::default())
            .await?;
        let bindings = self
            .store
            .list(
                &self.binding_prefix,
                ListOptions {
                    revision: Some(policies.revision),
                    ..ListOptions::default()
                },
            )
            .await?;
        let mut set = Set::default();
        for kv in &policies.items {
            if let Ok(obj) = serde_json::from_slice::<Value>(&kv.value) {
                let p = Policy::parse(&obj);
                set.policies.insert(p.name.clone(), Arc::new(p));
            }
        }
        for kv in &bindings.items {
            if let Ok(obj) = serde_json::from_slice::<Value>(&kv.value) {
                let b = Binding::parse(&obj);
                set.bindings.insert(b.name.clone(), Arc::new(b));
            }
        }
        *self.set.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
        self.revision.send_replace(policies.revision);
        Ok(policies.revision)
    }

    fn take(&self, change: &Change) {
        let policy = change.key.strip_prefix(&self.policy_prefix);
        let binding = change.key.strip_prefix(&self.binding_prefix);
        if policy.is_some() || binding.is_some() {
            let mut guard = self.set.write().unwrap_or_else(|e| e.into_inner());
            let mut set = (**guard).clone();
            match (policy, binding, &change.object) {
                (Some(name), _, Some(obj)) => {
                    set.policies
                        .insert(name.to_string(), Arc::new(Policy::parse(obj)));
                }
                (Some(name), _, None) => {
                    set.policies.remove(name);
                }
                (_, Some(name), Some(obj)) => {
                    set.bindings
                        .insert(name.to_string(), Arc::new(Binding::parse(obj)));
                }
                (_, Some(name), None) => {
                    set.bindings.remove(name);
                }
                _ => {}
            }
            *guard = Arc::new(set);
        }
        self.revision.send_replace(change.revision);
    }

    /// The policies that have at least one binding, with their bindings. A binding whose policy
    /// does not exist is ignored, as upstream.
    pub fn hooks(&self) -> Hooks {
        let set = self.set.read().unwrap_or_else(|e| e.into_inner()).clone();
        set.policies
            .values()
            .filter_map(|p| {
                let bindings: Vec<Arc<Binding>> = set
                    .bindings
                    .values()
                    .filter(|b| b.policy_name == p.name)
                    .cloned()
                    .collect();
                (!bindings.is_empty()).then(|| (p.clone(), bindings))
            })
            .collect()
    }

    /// Whether any binding exists (nothing to wait for or evaluate otherwise).
    pub fn is_empty(&self) -> bool {
        self.set
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .bindings
            .is_empty()
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
        Hub::view_reach(
            &self.revision,
            target,
            CATCH_UP_WAIT,
            "admission policy view",
        )
        .await
    }

    /// The revision the view reflects.
    #[cfg(test)]
    pub fn revision(&self) -> Revision {
        *self.revision.borrow()
    }
}
