//! The workload controllers kube-controller-manager runs, reduced to what an API server without
//! a kubelet can show: ReplicationControllers and ReplicaSets keep `spec.replicas` pods from
//! their template (adopting and releasing pods by selector, as upstream), and Deployments keep
//! one ReplicaSet per pod template (`<deployment>-<pod-template-hash>`).
//!
//! Rollouts are a Recreate-like switch: the ReplicaSet of the current template gets all the
//! replicas and the others are scaled to 0 at once (no surge or unavailability budget). No pod
//! ever runs, so ready and available counts stay 0. Leader only; every write is a
//! compare-and-swap (or a create) in the store, so replicas agree.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::task::AbortHandle;
use vkube_api::object;
use vkube_api::registry::{self, Resource};
use vkube_api::selector::label_selector_matches;
use vkube_store::{KeyValue, ListOptions, Store, StoreError};

use crate::gc::{Propagation, Queue, delete_object};
use crate::hub::Change;
use crate::rest::{decode, encode};
use crate::router::Api;

/// Every controller's objects are looked at again this often.
const RESYNC: Duration = Duration::from_secs(30);
/// Pods one sync creates at most (upstream's burstReplicas).
const BURST: usize = 500;
/// The label that ties a Deployment's ReplicaSet and pods to one pod template.
pub(crate) const HASH_LABEL: &str = "pod-template-hash";
const REVISION: &str = "deployment.kubernetes.io/revision";

fn rcs() -> &'static Resource {
    registry::find("", "v1", "replicationcontrollers").expect("built in")
}
fn replicasets() -> &'static Resource {
    registry::find("apps", "v1", "replicasets").expect("built in")
}
fn deployments() -> &'static Resource {
    registry::find("apps", "v1", "deployments").expect("built in")
}
fn pods() -> &'static Resource {
    registry::find("", "v1", "pods").expect("built in")
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj["metadata"][field].as_str().unwrap_or_default()
}

fn deleting(obj: &Value) -> bool {
    obj["metadata"]["deletionTimestamp"].is_string()
}

/// The controller ownerReference of an object.
fn controller_of(obj: &Value) -> Option<&Value> {
    obj["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == true)
}

fn controller_ref(owner: &Value, resource: &Resource) -> Value {
    json!({"apiVersion": resource.api_version(), "kind": resource.kind, "name": meta_str(owner, "name"),
           "uid": meta_str(owner, "uid"), "controller": true, "blockOwnerDeletion": true})
}

/// The label selector of a controller: a ReplicationController's is a plain map (defaulting to
/// its template's labels), the others' a metav1.LabelSelector.
fn selector_of(owner: &Value, resource: &Resource) -> Value {
    if resource.kind != "ReplicationController" {
        return owner["spec"]["selector"].clone();
    }
    let map = &owner["spec"]["selector"];
    let map = if map.as_object().is_some_and(|m| !m.is_empty()) {
        map
    } else {
        &owner["spec"]["template"]["metadata"]["labels"]
    };
    json!({"matchLabels": map})
}

/// An empty selector selects nothing here (validation refuses one; never adopt everything).
fn selects(selector: &Value, labels: &Value) -> bool {
    let empty = |f: &str| {
        selector[f].as_object().is_none_or(|m| m.is_empty())
            && selector[f].as_array().is_none_or(|a| a.is_empty())
    };
    !(empty("matchLabels") && empty("matchExpressions")) && label_selector_matches(selector, labels)
}

async fn list(
    store: &dyn Store,
    r: &Resource,
    ns: &str,
) -> Result<Vec<(KeyValue, Value)>, StoreError> {
    let page = store.list(&r.key(ns, ""), ListOptions::default()).await?;
    Ok(page
        .items
        .into_iter()
        .filter_map(|kv| decode(&kv).ok().map(|v| (kv, v)))
        .collect())
}

/// Creates an object as the API would (type, defaults, name, create strategy), unless its
/// namespace is going away. `None` when it was not created.
async fn create(
    store: &dyn Store,
    r: &Resource,
    ns: &str,
    mut obj: Value,
) -> Result<Option<Value>, StoreError> {
    let ns_key = registry::find("", "v1", "namespaces")
        .expect("built in")
        .key("", ns);
    match store.get(&ns_key, None).await? {
        Some(kv) if !decode(&kv).is_ok_and(|n| deleting(&n)) => {}
        _ => return Ok(None),
    }
    if object::check_type(r, &mut obj).is_err() {
        return Ok(None);
    }
    obj["metadata"]["namespace"] = json!(ns);
    vkube_api::defaults::apply(r, &mut obj);
    let Ok(name) = object::prepare_create(r, &mut obj) else {
        return Ok(None);
    };
    vkube_api::strategy::prepare_for_create(r, &mut obj);
    match store.create(&r.key(ns, &name), encode(&obj), None).await {
        Ok(_) => Ok(Some(obj)),
        Err(StoreError::AlreadyExists { .. }) => Ok(None),
        Err(err) => Err(err),
    }
}

/// Writes `obj` back over `kv` when `changed`; a lost race is left to the next sync (the
/// write that beat it triggers one).
async fn write(store: &dyn Store, kv: &KeyValue, obj: &Value) -> Result<(), StoreError> {
    match store
        .update(&kv.key, encode(obj), kv.mod_revision, None)
        .await
    {
        Ok(_) | Err(StoreError::Conflict { .. }) | Err(StoreError::NotFound { .. }) => Ok(()),
        Err(err) => Err(err),
    }
}

/// Claims the objects a controller selects, as upstream's ControllerRefManager: its own that
/// still match, orphans that match (adopted, unless either side is being deleted); its own
/// that no longer match are released.
async fn claim(
    store: &dyn Store,
    owner: &Value,
    resource: &Resource,
    selector: &Value,
    candidates: Vec<(KeyValue, Value)>,
) -> Result<Vec<Value>, StoreError> {
    let uid = meta_str(owner, "uid");
    let mut mine = Vec::new();
    for (kv, mut obj) in candidates {
        let matches = selects(selector, &obj["metadata"]["labels"]);
        match controller_of(&obj).map(|c| c["uid"] == uid) {
            Some(true) if matches => mine.push(obj),
            Some(true) if !deleting(owner) => {
                if let Some(refs) = obj["metadata"]["ownerReferences"].as_array_mut() {
                    refs.retain(|r| r["uid"] != uid);
                }
                write(store, &kv, &obj).await?;
            }
            None if matches && !deleting(owner) && !deleting(&obj) => {
                let r = controller_ref(owner, resource);
                match obj["metadata"]["ownerReferences"].as_array_mut() {
                    Some(refs) => refs.push(r),
                    None => obj["metadata"]["ownerReferences"] = json!([r]),
                }
                if store
                    .update(&kv.key, encode(&obj), kv.mod_revision, None)
                    .await
                    .is_ok()
                {
                    mine.push(obj);
                }
            }
            _ => {}
        }
    }
    Ok(mine)
}

fn active(pod: &Value) -> bool {
    let phase = pod["status"]["phase"].as_str().unwrap_or_default();
    !deleting(pod) && phase != "Succeeded" && phase != "Failed"
}

fn ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn replicas_of(obj: &Value) -> i64 {
    obj["spec"]["replicas"].as_i64().unwrap_or(1)
}

/// Upstream's GetPodFromTemplate: labels, annotations and finalizers of the template, a name
/// generated from the controller's, and the controller reference.
fn pod_from_template(owner: &Value, resource: &Resource) -> Value {
    let template = &owner["spec"]["template"];
    let mut prefix = format!("{}-", meta_str(owner, "name"));
    if prefix.len() > 58 {
        prefix.truncate(58);
    }
    let mut meta =
        json!({"generateName": prefix, "ownerReferences": [controller_ref(owner, resource)]});
    for field in ["labels", "annotations", "finalizers"] {
        if !template["metadata"][field].is_null() {
            meta[field] = template["metadata"][field].clone();
        }
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template["spec"]})
}

/// The pods to delete when scaling down: unscheduled, then pending, then not ready, newest
/// first (upstream's ranking, reduced to what a pod here can differ in).
fn deletion_order(pods: &mut [Value]) {
    pods.sort_by_key(|p| {
        let scheduled = p["spec"]["nodeName"]
            .as_str()
            .is_some_and(|n| !n.is_empty());
        let running = p["status"]["phase"] == "Running";
        let created = meta_str(p, "creationTimestamp").to_string();
        (scheduled, running, ready(p), std::cmp::Reverse(created))
    });
}

/// Upstream's syncReplicaSet for a ReplicationController or ReplicaSet at `key`.
async fn sync_replicas(
    store: &dyn Store,
    resource: &Resource,
    key: &str,
) -> Result<(), StoreError> {
    let Some(kv) = store.get(key, None).await? else {
        return Ok(());
    };
    let Ok(mut owner) = decode(&kv) else {
        return Ok(());
    };
    let ns = meta_str(&owner, "namespace").to_string();
    let selector = selector_of(&owner, resource);
    let listed = list(store, pods(), &ns).await?;
    let candidates = listed
        .into_iter()
        .filter(|(_, p)| active(p) || controller_of(p).is_some())
        .collect();
    let mine: Vec<Value> = claim(store, &owner, resource, &selector, candidates)
        .await?
        .into_iter()
        .filter(active)
        .collect();
    if !deleting(&owner) {
        let want = replicas_of(&owner).max(0) as usize;
        if mine.len() < want {
            for _ in 0..(want - mine.len()).min(BURST) {
                create(store, pods(), &ns, pod_from_template(&owner, resource)).await?;
            }
        } else if mine.len() > want {
            let mut extra = mine.clone();
            deletion_order(&mut extra);
            for pod in extra.iter().take(mine.len() - want) {
                let pod_key = pods().key(&ns, meta_str(pod, "name"));
                delete_object(
                    store,
                    &pod_key,
                    meta_str(pod, "uid"),
                    Propagation::Background,
                )
                .await?;
            }
        }
    }
    let template_labels = owner["spec"]["template"]["metadata"]["labels"].clone();
    let fully = mine.iter().filter(|p| {
        template_labels
            .as_object()
            .into_iter()
            .flatten()
            .all(|(k, v)| p["metadata"]["labels"][k] == *v)
    });
    let ready_count = mine.iter().filter(|p| ready(p)).count();
    let mut status = owner["status"].clone();
    if !status.is_object() {
        status = json!({});
    }
    status["replicas"] = json!(mine.len());
    status["fullyLabeledReplicas"] = json!(fully.count());
    status["readyReplicas"] = json!(ready_count);
    status["availableReplicas"] = json!(ready_count);
    status["observedGeneration"] = owner["metadata"]["generation"].clone();
    if status != owner["status"] {
        owner["status"] = status;
        write(store, &kv, &owner).await?;
    }
    Ok(())
}

/// The pod-template-hash of a template: FNV-32a of its JSON (and the collision count), written
/// with upstream's SafeEncodeString alphabet.
pub(crate) fn template_hash(template: &Value, collisions: Option<i64>) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u32::from(*b);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    };
    feed(
        serde_json::to_string(template)
            .unwrap_or_default()
            .as_bytes(),
    );
    if let Some(c) = collisions {
        feed(&c.to_le_bytes());
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    hash.to_string()
        .bytes()
        .map(|b| ALPHABET[b as usize % ALPHABET.len()] as char)
        .collect()
}

/// A template without the hash label, to compare a ReplicaSet's with its Deployment's.
fn without_hash(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(labels) = t["metadata"]["labels"].as_object_mut() {
        labels.remove(HASH_LABEL);
        if labels.is_empty() {
            t["metadata"].as_object_mut().map(|m| m.remove("labels"));
        }
    }
    if t["metadata"].as_object().is_some_and(|m| m.is_empty()) {
        t.as_object_mut().map(|m| m.remove("metadata"));
    }
    t
}

fn revision_of(obj: &Value) -> i64 {
    obj["metadata"]["annotations"][REVISION]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// The ReplicaSet a Deployment creates for its current template.
fn new_replicaset(d: &Value, hash: &str, revision: i64) -> Value {
    let mut template = d["spec"]["template"].clone();
    template["metadata"]["labels"][HASH_LABEL] = json!(hash);
    let mut selector = d["spec"]["selector"].clone();
    selector["matchLabels"][HASH_LABEL] = json!(hash);
    let replicas = replicas_of(d);
    json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {
            "name": format!("{}-{hash}", meta_str(d, "name")),
            "labels": template["metadata"]["labels"],
            "annotations": {REVISION: revision.to_string(),
                            "deployment.kubernetes.io/desired-replicas": replicas.to_string(),
                            "deployment.kubernetes.io/max-replicas": replicas.to_string()},
            "ownerReferences": [controller_ref(d, deployments())],
        },
        "spec": {"replicas": replicas, "minReadySeconds": d["spec"]["minReadySeconds"].as_i64().unwrap_or(0),
                 "selector": selector, "template": template},
    })
}

/// Sets a condition, keeping its timestamps when nothing about it changed.
fn set_condition(
    conditions: &mut Vec<Value>,
    kind: &str,
    status: &str,
    reason: &str,
    message: &str,
) {
    let now = object::now();
    let old = conditions.iter().position(|c| c["type"] == kind);
    let mut c = json!({"type": kind, "status": status, "reason": reason, "message": message,
                       "lastUpdateTime": now, "lastTransitionTime": now});
    if let Some(i) = old {
        let prev = &conditions[i];
        if prev["status"] == status {
            c["lastTransitionTime"] = prev["lastTransitionTime"].clone();
            if prev["reason"] == reason && prev["message"] == message {
                c["lastUpdateTime"] = prev["lastUpdateTime"].clone();
            }
        }
        conditions[i] = c;
    } else {
        conditions.push(c);
    }
}

/// `maxUnavailable` of a RollingUpdate Deployment (an int or a percentage, rounded down).
fn max_unavailable(d: &Value, replicas: i64) -> i64 {
    if d["spec"]["strategy"]["type"] == "Recreate" {
        return 0;
    }
    match &d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::String(s) => s
            .trim_end_matches('%')
            .parse::<i64>()
            .map_or(0, |p| replicas * p / 100),
        _ => replicas / 4,
    }
}

/// The Deployment controller's sync, Recreate-like: the ReplicaSet of the current template
/// gets `spec.replicas`, the others 0.
async fn sync_deployment(store: &dyn Store, key: &str) -> Result<(), StoreError> {
    let Some(kv) = store.get(key, None).await? else {
        return Ok(());
    };
    let Ok(mut d) = decode(&kv) else {
        return Ok(());
    };
    let ns = meta_str(&d, "namespace").to_string();
    let selector = d["spec"]["selector"].clone();
    let listed = list(store, replicasets(), &ns).await?;
    let mut mine = claim(store, &d, deployments(), &selector, listed).await?;
    let template = without_hash(&d["spec"]["template"]);
    let mut current = mine
        .iter()
        .position(|rs| without_hash(&rs["spec"]["template"]) == template);
    let paused = d["spec"]["paused"] == true;
    if current.is_none() && !deleting(&d) && !paused {
        let hash = template_hash(
            &d["spec"]["template"],
            d["status"]["collisionCount"].as_i64(),
        );
        let revision = mine.iter().map(revision_of).max().unwrap_or(0) + 1;
        if let Some(rs) = create(
            store,
            replicasets(),
            &ns,
            new_replicaset(&d, &hash, revision),
        )
        .await?
        {
            mine.push(rs);
            current = Some(mine.len() - 1);
        }
    }
    let replicas = replicas_of(&d);
    if !deleting(&d) && !paused {
        for (i, rs) in mine.iter_mut().enumerate() {
            let want = if Some(i) == current { replicas } else { 0 };
            if rs["spec"]["replicas"].as_i64() == Some(want) {
                continue;
            }
            let rs_key = replicasets().key(&ns, meta_str(rs, "name"));
            let Some(rs_kv) = store.get(&rs_key, None).await? else {
                continue;
            };
            let Ok(mut fresh) = decode(&rs_kv) else {
                continue;
            };
            fresh["spec"]["replicas"] = json!(want);
            let generation = fresh["metadata"]["generation"].as_i64().unwrap_or(1);
            fresh["metadata"]["generation"] = json!(generation + 1);
            write(store, &rs_kv, &fresh).await?;
        }
    }
    let sum = |field: &str| {
        mine.iter()
            .map(|rs| rs["status"][field].as_i64().unwrap_or(0))
            .sum::<i64>()
    };
    let available = sum("availableReplicas");
    let updated = current.map_or(0, |i| mine[i]["status"]["replicas"].as_i64().unwrap_or(0));
    let mut status = d["status"].clone();
    if !status.is_object() {
        status = json!({});
    }
    status["observedGeneration"] = d["metadata"]["generation"].clone();
    status["replicas"] = json!(sum("replicas"));
    status["updatedReplicas"] = json!(updated);
    status["readyReplicas"] = json!(sum("readyReplicas"));
    status["availableReplicas"] = json!(available);
    status["unavailableReplicas"] = json!((replicas - available).max(0));
    let mut annotated = false;
    let mut conditions: Vec<Value> = status["conditions"].as_array().cloned().unwrap_or_default();
    if available >= replicas - max_unavailable(&d, replicas) {
        set_condition(
            &mut conditions,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
        );
    } else {
        set_condition(
            &mut conditions,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
        );
    }
    if let Some(i) = current {
        let name = meta_str(&mine[i], "name");
        set_condition(
            &mut conditions,
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            &format!("ReplicaSet \"{name}\" is progressing."),
        );
        let revision = mine[i]["metadata"]["annotations"][REVISION].clone();
        if revision.is_string() && d["metadata"]["annotations"][REVISION] != revision {
            d["metadata"]["annotations"][REVISION] = revision;
            annotated = true;
        }
    }
    status["conditions"] = json!(conditions);
    if annotated || status != d["status"] {
        d["status"] = status;
        write(store, &kv, &d).await?;
    }
    Ok(())
}

/// Which controller keys a change concerns: the controller itself, the controller of a changed
/// pod or ReplicaSet, and for an orphan, every controller of its namespace that might adopt it.
async fn affected(store: &dyn Store, change: &Change) -> Vec<String> {
    let mut keys = Vec::new();
    for r in [rcs(), replicasets(), deployments()] {
        if change.key.starts_with(&r.key("", "")) {
            keys.push(change.key.clone());
        }
    }
    let (pod_prefix, rs_prefix) = (pods().key("", ""), replicasets().key("", ""));
    let dependent_of: &[&Resource] = if change.key.starts_with(&pod_prefix) {
        &[rcs(), replicasets()]
    } else if change.key.starts_with(&rs_prefix) {
        &[deployments()]
    } else {
        return keys;
    };
    for obj in change.object.iter().chain(change.prev.iter()) {
        let ns = meta_str(obj, "namespace");
        match controller_of(obj) {
            Some(c) => {
                let kind = c["kind"].as_str().unwrap_or_default();
                if let Some(r) = dependent_of.iter().find(|r| r.kind == kind) {
                    keys.push(r.key(ns, c["name"].as_str().unwrap_or_default()));
                }
            }
            None if !obj["metadata"]["labels"].is_null() => {
                for r in dependent_of {
                    if let Ok(all) = list(store, r, ns).await {
                        keys.extend(all.into_iter().map(|(kv, _)| kv.key));
                    }
                }
            }
            None => {}
        }
    }
    keys
}

async fn all_keys(store: &dyn Store) -> Result<Vec<String>, StoreError> {
    let mut keys = Vec::new();
    for r in [rcs(), replicasets(), deployments()] {
        let page = store.list(&r.key("", ""), ListOptions::default()).await?;
        keys.extend(page.items.into_iter().map(|kv| kv.key));
    }
    Ok(keys)
}

async fn sync(store: &dyn Store, key: &str) -> Result<(), StoreError> {
    if key.starts_with(&deployments().key("", "")) {
        sync_deployment(store, key).await
    } else if key.starts_with(&replicasets().key("", "")) {
        sync_replicas(store, replicasets(), key).await
    } else {
        sync_replicas(store, rcs(), key).await
    }
}

/// The leader's ReplicationController, ReplicaSet and Deployment controllers: every object at
/// start and each [`RESYNC`], and promptly the ones a change concerns.
pub fn start(api: Arc<Api>) -> AbortHandle {
    let task = tokio::spawn(async move {
        let store = api.store.as_ref();
        loop {
            // Subscribe first, then list: nothing falls between the two.
            let Ok((_, mut changes)) = api.hub.subscribe(api.hub.last()) else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let mut queue = Queue::default();
            match all_keys(store).await {
                Ok(keys) => queue.extend(keys),
                Err(err) => {
                    tracing::warn!(%err, "workload controllers: listing failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
            let resync = tokio::time::Instant::now() + RESYNC;
            let mut failed = BTreeSet::new();
            'watching: loop {
                loop {
                    match changes.try_recv() {
                        Ok(c) => queue.extend(affected(store, &c).await),
                        Err(TryRecvError::Empty) => break,
                        Err(_) => break 'watching,
                    }
                }
                if let Some(key) = queue.pop() {
                    if let Err(err) = sync(store, &key).await {
                        tracing::warn!(%err, %key, "workload controllers");
                        failed.insert(key);
                    }
                    continue;
                }
                let wake = if failed.is_empty() {
                    resync
                } else {
                    tokio::time::Instant::now() + Duration::from_secs(1)
                };
                tokio::select! {
                    _ = tokio::time::sleep_until(wake) => {
                        if tokio::time::Instant::now() >= resync {
                            break 'watching;
                        }
                        queue.extend(std::mem::take(&mut failed));
                    }
                    change = changes.recv() => match change {
                        Ok(c) => queue.extend(affected(store, &c).await),
                        Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => break 'watching,
                    },
                }
            }
        }
    });
    task.abort_handle()
}

#[cfg(test)]
#[path = "workloads_tests.rs"]
mod tests;
