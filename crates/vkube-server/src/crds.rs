//! CustomResourceDefinitions at run time. Every replica keeps the registry's table of custom
//! resources fed from the one store watch (the [`CrdView`]), so every replica serves a CRD once it
//! has seen the same revision; a request for a resource it does not know yet first waits for the
//! view to reach the store's current revision, as an RBAC deny does (DESIGN rule 3). The leader
//! runs upstream's CRD controllers in one loop ([`start`]): names are accepted (or refused on a
//! conflict), the CRD is established, and a deleted CRD's objects are removed before its
//! `customresourcecleanup.apiextensions.k8s.io` finalizer is.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::AbortHandle;
use vkube_api::object;
use vkube_api::registry::custom;
use vkube_store::{ListOptions, Revision, Store, StoreError};

use crate::hub::{Change, Hub};
use crate::rest::{decode, encode};
use crate::router::Api;

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
        let at = view.load().await?;
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

/// The leader's CRD controller: a pass over every CRD at start and after each CRD change (and
/// every few seconds while a deletion waits on finalizers).
pub fn start(api: Arc<Api>) -> AbortHandle {
    let task = tokio::spawn(async move {
        loop {
            let Ok((_, mut changes)) = api.hub.subscribe(api.hub.last()) else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            loop {
                let wait = match reconcile_all(&api).await {
                    Ok(true) => Duration::from_secs(3600),
                    Ok(false) => Duration::from_millis(500),
                    Err(err) => {
                        tracing::warn!(%err, "CRD controller");
                        Duration::from_secs(1)
                    }
                };
                let deadline = tokio::time::sleep(wait);
                tokio::pin!(deadline);
                // Wait for a CRD change (or the retry), then drain what else came meanwhile.
                let lagged = loop {
                    tokio::select! {
                        _ = &mut deadline => break false,
                        change = changes.recv() => match change {
                            Ok(c) if c.key.starts_with(PREFIX) => break false,
                            Ok(_) => {}
                            Err(RecvError::Lagged(_)) => break false,
                            Err(RecvError::Closed) => break true,
                        },
                    }
                };
                if lagged {
                    break;
                }
            }
        }
    });
    task.abort_handle()
}

/// One pass; `false` when something must be looked at again soon.
async fn reconcile_all(api: &Api) -> Result<bool, StoreError> {
    let page = api.store.list(PREFIX, ListOptions::default()).await?;
    let crds: Vec<(vkube_store::KeyValue, Value)> = page
        .items
        .into_iter()
        .filter_map(|kv| decode(&kv).ok().map(|crd| (kv, crd)))
        .collect();
    let mut done = true;
    for (kv, crd) in &crds {
        let others: Vec<&Value> = crds
            .iter()
            .map(|(_, c)| c)
            .filter(|c| c["metadata"]["name"] != crd["metadata"]["name"])
            .collect();
        done &= reconcile(api, kv, crd, &others).await?;
    }
    Ok(done)
}

async fn reconcile(
    api: &Api,
    kv: &vkube_store::KeyValue,
    crd: &Value,
    others: &[&Value],
) -> Result<bool, StoreError> {
    if crd["metadata"]["deletionTimestamp"].is_string() {
        return finalize(api, kv, crd).await;
    }
    let mut new = crd.clone();
    accept_names(&mut new, others);
    if new == *crd {
        return Ok(true);
    }
    match api
        .store
        .update(&kv.key, encode(&new), kv.mod_revision, None)
        .await
    {
        Ok(_) | Err(StoreError::NotFound { .. }) => Ok(true),
        Err(StoreError::Conflict { .. }) => Ok(false),
        Err(err) => Err(err),
    }
}

/// Upstream's naming and establishing controllers in one step: the names are accepted unless
/// another CRD of the group already uses one of them; an accepted CRD is established (once
/// established it stays so); the storage version joins `storedVersions`.
pub fn accept_names(crd: &mut Value, others: &[&Value]) {
    let spec = crd["spec"].clone();
    let group = &spec["group"];
    let mut names = spec["names"].clone();
    let kind = names["kind"].as_str().unwrap_or_default().to_string();
    if names["singular"].as_str().is_none_or(str::is_empty) {
        names["singular"] = json!(kind.to_ascii_lowercase());
    }
    if names["listKind"].as_str().is_none_or(str::is_empty) {
        names["listKind"] = json!(format!("{kind}List"));
    }
    // What the group's other CRDs hold: their accepted names.
    let mut taken_resources = BTreeSet::new();
    let mut taken_kinds = BTreeSet::new();
    for other in others.iter().filter(|o| o["spec"]["group"] == *group) {
        let n = &other["status"]["acceptedNames"];
        for field in ["plural", "singular"] {
            if let Some(s) = n[field].as_str().filter(|s| !s.is_empty()) {
                taken_resources.insert(s.to_string());
            }
        }
        for s in n["shortNames"].as_array().into_iter().flatten() {
            if let Some(s) = s.as_str() {
                taken_resources.insert(s.to_string());
            }
        }
        for field in ["kind", "listKind"] {
            if let Some(s) = n[field].as_str().filter(|s| !s.is_empty()) {
                taken_kinds.insert(s.to_string());
            }
        }
    }
    let taken = |field: &str, set: &BTreeSet<String>| {
        names[field]
            .as_str()
            .filter(|s| set.contains(*s))
            .map(str::to_string)
    };
    let conflict = taken("plural", &taken_resources)
        .map(|n| ("PluralConflict", n))
        .or_else(|| taken("singular", &taken_resources).map(|n| ("SingularConflict", n)))
        .or_else(|| {
            names["shortNames"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .find(|s| taken_resources.contains(*s))
                .map(|s| ("ShortNamesConflict", s.to_string()))
        })
        .or_else(|| taken("kind", &taken_kinds).map(|n| ("KindConflict", n)))
        .or_else(|| taken("listKind", &taken_kinds).map(|n| ("ListKindConflict", n)));
    let established = custom::condition(crd, "Established");
    if !crd["status"].is_object() {
        crd["status"] = json!({});
    }
    let status = &mut crd["status"];
    match conflict {
        None => {
            status["acceptedNames"] = names;
            set_condition(
                status,
                "NamesAccepted",
                true,
                "NoConflicts",
                "no conflicts found",
            );
            set_condition(
                status,
                "Established",
                true,
                "InitialNamesAccepted",
                "the initial names have been accepted",
            );
        }
        Some((reason, name)) => {
            set_condition(
                status,
                "NamesAccepted",
                false,
                reason,
                &format!("{name:?} is already in use"),
            );
            if !established {
                set_condition(
                    status,
                    "Established",
                    false,
                    "NotAccepted",
                    "not all names are accepted",
                );
            }
        }
    }
    if let Some(storage) = spec["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["storage"] == true)
        .map(|v| v["name"].clone())
    {
        let stored = &mut status["storedVersions"];
        match stored.as_array_mut() {
            Some(list) if list.contains(&storage) => {}
            Some(list) => list.push(storage),
            None => *stored = json!([storage]),
        }
    }
}

/// Sets a condition, keeping its transition time when its status does not change.
pub fn set_condition(status: &mut Value, kind: &str, value: bool, reason: &str, message: &str) {
    let value = if value { "True" } else { "False" };
    if !status["conditions"].is_array() {
        status["conditions"] = json!([]);
    }
    let Some(conditions) = status["conditions"].as_array_mut() else {
        return;
    };
    let since = conditions
        .iter()
        .find(|c| c["type"] == kind && c["status"] == value)
        .map(|c| c["lastTransitionTime"].clone())
        .filter(|t| t.is_string())
        .unwrap_or_else(|| json!(object::now()));
    let condition = json!({
        "type": kind, "status": value, "lastTransitionTime": since,
        "reason": reason, "message": message,
    });
    match conditions.iter_mut().find(|c| c["type"] == kind) {
        Some(c) => *c = condition,
        None => conditions.push(condition),
    }
}

/// A deleted CRD: marked Terminating, its objects deleted, then its cleanup finalizer removed
/// (and the CRD itself once no finalizer remains).
async fn finalize(api: &Api, kv: &vkube_store::KeyValue, crd: &Value) -> Result<bool, StoreError> {
    let finalizers: Vec<Value> = crd["metadata"]["finalizers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut new = crd.clone();
    if finalizers.iter().any(|f| f == CLEANUP_FINALIZER) {
        if !custom::condition(crd, "Terminating") {
            set_condition(
                &mut new["status"],
                "Terminating",
                true,
                "InstanceDeletionInProgress",
                "CustomResource deletion is in progress",
            );
            return update(api, kv, &new).await;
        }
        let group = crd["spec"]["group"].as_str().unwrap_or_default();
        let plural = crd["status"]["acceptedNames"]["plural"]
            .as_str()
            .or_else(|| crd["spec"]["names"]["plural"].as_str())
            .unwrap_or_default();
        if group.is_empty() || plural.is_empty() {
            return Ok(true);
        }
        let prefix = format!("/registry/{group}/{plural}/");
        if !crate::controllers::empty_prefix(api, &prefix).await? {
            return Ok(false);
        }
        let rest: Vec<Value> = finalizers
            .into_iter()
            .filter(|f| f != CLEANUP_FINALIZER)
            .collect();
        new["metadata"]["finalizers"] = json!(rest);
        if rest.is_empty() {
            return match api.store.delete(&kv.key, Some(kv.mod_revision)).await {
                Ok(_) | Err(StoreError::NotFound { .. }) => Ok(true),
                Err(StoreError::Conflict { .. }) => Ok(false),
                Err(err) => Err(err),
            };
        }
        return update(api, kv, &new).await;
    }
    Ok(true)
}

async fn update(api: &Api, kv: &vkube_store::KeyValue, new: &Value) -> Result<bool, StoreError> {
    match api
        .store
        .update(&kv.key, encode(new), kv.mod_revision, None)
        .await
    {
        // Written: the change comes back through the watch and triggers the next step.
        Ok(_) | Err(StoreError::NotFound { .. }) => Ok(true),
        Err(StoreError::Conflict { .. }) => Ok(false),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd(plural: &str, kind: &str, short: &[&str]) -> Value {
        json!({
            "metadata": {"name": format!("{plural}.example.com")},
            "spec": {"group": "example.com", "scope": "Namespaced",
                     "names": {"plural": plural, "kind": kind, "shortNames": short},
                     "versions": [{"name": "v1", "served": true, "storage": true}]},
        })
    }

    #[test]
    fn names_are_accepted_and_the_crd_established() {
        let mut c = crd("widgets", "Widget", &["wd"]);
        accept_names(&mut c, &[]);
        let s = &c["status"];
        assert_eq!(s["acceptedNames"]["singular"], "widget");
        assert_eq!(s["acceptedNames"]["listKind"], "WidgetList");
        assert_eq!(s["storedVersions"], json!(["v1"]));
        assert!(custom::condition(&c, "NamesAccepted"));
        assert!(custom::condition(&c, "Established"));
        let again = {
            let mut again = c.clone();
            accept_names(&mut again, &[]);
            again
        };
        assert_eq!(again, c, "a second pass changes nothing");
    }

    /// A stored, established CRD of its own group (the registry's table is shared by every
    /// test of this binary).
    fn established(plural: &str) -> Value {
        let mut c = crd(plural, "Reloaded", &[]);
        c["metadata"]["name"] = json!(format!("{plural}.reload.example.com"));
        c["spec"]["group"] = json!("reload.example.com");
        accept_names(&mut c, &[]);
        c
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

    #[test]
    fn a_name_in_use_in_the_group_is_refused() {
        let mut first = crd("widgets", "Widget", &["wd"]);
        accept_names(&mut first, &[]);
        let mut second = crd("gadgets", "Gadget", &["wd"]);
        accept_names(&mut second, &[&first]);
        assert!(!custom::condition(&second, "NamesAccepted"));
        assert!(!custom::condition(&second, "Established"));
        let names_accepted = &second["status"]["conditions"][0];
        assert_eq!(names_accepted["reason"], "ShortNamesConflict");
        assert_eq!(names_accepted["message"], "\"wd\" is already in use");
    }
}
