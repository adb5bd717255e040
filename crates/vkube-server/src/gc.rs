//! The garbage collector, as kube-controller-manager's: objects whose every owner is gone (by
//! uid) are deleted; an owner deleted with propagationPolicy Orphan keeps an `orphan` finalizer
//! until its dependents' ownerReferences to it are removed; one deleted in the Foreground keeps a
//! `foregroundDeletion` finalizer until the dependents that block its deletion are gone.
//!
//! The finalizers are set by the DELETE handler ([`Policy`], [`deletion_finalizers`]), as
//! upstream's registry does. The leader's collector ([`start`]) keeps an in-memory graph of the
//! objects that have ownerReferences (dependent → owners, owner uid → dependents), fed by the
//! hub, and decides from live store reads; every write is a compare-and-swap, so a stale graph
//! or a lost race only costs a retry.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::AbortHandle;
use vkube_api::registry::{self, Resource};
use vkube_api::{Status, object};
use vkube_store::{ListOptions, Store, StoreError};

use crate::hub::Change;
use crate::rest::{decode, encode};
use crate::router::Api;

/// Deletes after the dependents' ownerReferences to the owner are removed.
pub(crate) const ORPHAN: &str = "orphan";
/// Deletes after the dependents that block the owner's deletion are deleted.
pub(crate) const FOREGROUND: &str = "foregroundDeletion";
/// How often the graph is rebuilt from a full list (insurance against a missed decision).
const RESYNC: Duration = Duration::from_secs(300);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Propagation {
    Orphan,
    Background,
    Foreground,
}

/// The garbage-collection part of DeleteOptions: `propagationPolicy` and the legacy
/// `orphanDependents`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Policy {
    orphan_dependents: Option<bool>,
    propagation: Option<Propagation>,
}

impl Policy {
    pub(crate) fn explicit(p: Propagation) -> Policy {
        Policy {
            orphan_dependents: None,
            propagation: Some(p),
        }
    }

    /// From the DeleteOptions body (or, without one, the query), refused as upstream's
    /// ValidateDeleteOptions refuses them.
    pub(crate) fn parse(opts: &Value, query: &HashMap<String, String>) -> Result<Policy, Status> {
        let field = |name: &str| -> Option<String> {
            match &opts[name] {
                Value::String(s) => Some(s.clone()),
                Value::Bool(b) => Some(b.to_string()),
                _ => query.get(name).cloned(),
            }
        };
        let orphan_dependents = field("orphanDependents").map(|v| v == "true");
        let invalid = |message: String| {
            Status::invalid(
                "DeleteOptions",
                "meta.k8s.io",
                "",
                vec![object::cause(
                    "FieldValueInvalid",
                    "propagationPolicy",
                    message,
                )],
            )
        };
        let propagation = match field("propagationPolicy").as_deref() {
            None => None,
            Some("Orphan") => Some(Propagation::Orphan),
            Some("Background") => Some(Propagation::Background),
            Some("Foreground") => Some(Propagation::Foreground),
            Some(other) => {
                return Err(invalid(format!(
                    "Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
                )));
            }
        };
        if orphan_dependents.is_some() && propagation.is_some() {
            let p = field("propagationPolicy").unwrap_or_default();
            return Err(invalid(format!(
                "Invalid value: \"{p}\": orphanDependents and deletionPropagation cannot be both set"
            )));
        }
        Ok(Policy {
            orphan_dependents,
            propagation,
        })
    }

    /// Upstream's shouldOrphanDependents: the options, then the object's finalizers. (Every
    /// served kind defaults to deleting dependents; the kinds whose default is to orphan are
    /// the legacy extensions/v1beta1 and apps/v1beta1-2 versions, which vkube does not serve.)
    fn orphans(&self, finalizers: &[String]) -> bool {
        if let Some(o) = self.orphan_dependents {
            return o;
        }
        if let Some(p) = self.propagation {
            return p == Propagation::Orphan;
        }
        finalizers
            .iter()
            .find(|f| *f == ORPHAN || *f == FOREGROUND)
            .is_some_and(|f| f == ORPHAN)
    }

    /// Upstream's shouldDeleteDependents.
    fn foreground(&self, finalizers: &[String]) -> bool {
        if self.orphan_dependents.is_some() {
            return false;
        }
        if let Some(p) = self.propagation {
            return p == Propagation::Foreground;
        }
        finalizers
            .iter()
            .find(|f| *f == ORPHAN || *f == FOREGROUND)
            .is_some_and(|f| f == FOREGROUND)
    }
}

fn finalizers_of(obj: &Value) -> Vec<String> {
    obj["metadata"]["finalizers"]
        .as_array()
        .map(|f| {
            f.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The finalizers a delete with `policy` leaves on `obj`, when they differ from its current
/// ones (upstream's deletionFinalizersForGarbageCollection).
pub(crate) fn deletion_finalizers(obj: &Value, policy: &Policy) -> Option<Vec<String>> {
    let current = finalizers_of(obj);
    let mut new: Vec<String> = current
        .iter()
        .filter(|f| *f != ORPHAN && *f != FOREGROUND)
        .cloned()
        .collect();
    if policy.orphans(&current) {
        new.push(ORPHAN.into());
    }
    if policy.foreground(&current) {
        new.push(FOREGROUND.into());
    }
    let set = |v: &[String]| v.iter().cloned().collect::<BTreeSet<_>>();
    (set(&current) != set(&new)).then_some(new)
}

fn deleting(obj: &Value) -> bool {
    obj["metadata"]["deletionTimestamp"].is_string()
}

fn uid_of(obj: &Value) -> &str {
    obj["metadata"]["uid"].as_str().unwrap_or_default()
}

/// One ownerReference of a dependent.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Owner {
    uid: String,
    api_version: String,
    kind: String,
    name: String,
    block: bool,
}

fn owners_of(obj: &Value) -> Vec<Owner> {
    let refs = obj["metadata"]["ownerReferences"].as_array();
    refs.into_iter()
        .flatten()
        .map(|r| Owner {
            uid: r["uid"].as_str().unwrap_or_default().into(),
            api_version: r["apiVersion"].as_str().unwrap_or_default().into(),
            kind: r["kind"].as_str().unwrap_or_default().into(),
            name: r["name"].as_str().unwrap_or_default().into(),
            block: r["blockOwnerDeletion"] == true,
        })
        .collect()
}

/// Where a dependent's owner is stored.
#[derive(Debug, PartialEq, Eq)]
enum OwnerAt {
    Key(String),
    /// A kind this server does not serve: never treated as absent (upstream retries).
    Unknown,
    /// A namespaced owner of a cluster-scoped dependent: it cannot exist.
    Impossible,
}

fn owner_resource(api_version: &str, kind: &str) -> Option<&'static Resource> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let all = registry::all();
    let same_kind = |r: &&&Resource| r.group == group && r.kind == kind;
    all.iter()
        .filter(same_kind)
        .find(|r| r.version == version)
        .or_else(|| all.iter().find(same_kind))
        .copied()
}

fn owner_at(namespace: &str, owner: &Owner) -> OwnerAt {
    match owner_resource(&owner.api_version, &owner.kind) {
        None => OwnerAt::Unknown,
        Some(r) if r.namespaced && namespace.is_empty() => OwnerAt::Impossible,
        Some(r) => OwnerAt::Key(r.key(namespace, &owner.name)),
    }
}

/// A dependent as the graph knows it.
#[derive(Clone, Debug)]
struct Node {
    key: String,
    namespace: String,
    owners: Vec<Owner>,
    /// Deleting with the foreground finalizer: its own blocking dependents go first.
    deleting_dependents: bool,
}

impl Node {
    fn of(key: &str, obj: &Value) -> Option<(String, Node)> {
        let owners = owners_of(obj);
        let uid = uid_of(obj);
        if owners.is_empty() || uid.is_empty() {
            return None;
        }
        let node = Node {
            key: key.into(),
            namespace: obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .into(),
            owners,
            deleting_dependents: deleting(obj)
                && finalizers_of(obj).iter().any(|f| f == FOREGROUND),
        };
        Some((uid.into(), node))
    }
}

/// The objects with ownerReferences, and the reverse index from owner uid to dependents.
#[derive(Default)]
struct Graph {
    nodes: HashMap<String, Node>,
    dependents: HashMap<String, BTreeSet<String>>,
}

impl Graph {
    fn remove(&mut self, uid: &str) -> Option<Node> {
        let node = self.nodes.remove(uid)?;
        for o in &node.owners {
            if let Some(set) = self.dependents.get_mut(&o.uid) {
                set.remove(uid);
                if set.is_empty() {
                    self.dependents.remove(&o.uid);
                }
            }
        }
        Some(node)
    }

    fn insert(&mut self, uid: String, node: Node) {
        self.remove(&uid);
        for o in &node.owners {
            self.dependents
                .entry(o.uid.clone())
                .or_default()
                .insert(uid.clone());
        }
        self.nodes.insert(uid, node);
    }

    fn dependents_of(&self, uid: &str) -> Vec<(&String, &Node)> {
        self.dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|d| self.nodes.get_key_value(d))
            .collect()
    }

    /// Feeds one change; returns the keys to look at.
    fn apply(&mut self, change: &Change) -> Vec<String> {
        let mut todo = Vec::new();
        let prev_uid = change.prev.as_ref().map(|p| uid_of(p).to_string());
        let Some(obj) = &change.object else {
            // Gone: its dependents may be orphans now, its owners may wait for it.
            let Some(uid) = prev_uid else { return todo };
            todo.extend(
                self.dependents_of(&uid)
                    .into_iter()
                    .map(|(_, n)| n.key.clone()),
            );
            if let Some(node) = self.remove(&uid) {
                todo.extend(node.owners.iter().filter_map(|o| {
                    match owner_at(&node.namespace, o) {
                        OwnerAt::Key(k) => Some(k),
                        _ => None,
                    }
                }));
            }
            return todo;
        };
        let uid = uid_of(obj).to_string();
        let prev = change
            .prev
            .as_ref()
            .filter(|_| prev_uid.as_deref() == Some(&uid));
        let gc_state = |o: &Value| {
            let f = finalizers_of(o);
            (
                deleting(o),
                f.iter().any(|f| f == ORPHAN),
                f.iter().any(|f| f == FOREGROUND),
            )
        };
        let state = gc_state(obj);
        let changed_state = prev.map(gc_state) != Some(state);
        let (is_deleting, orphaning, foreground) = state;
        if is_deleting && (orphaning || foreground) && changed_state {
            todo.push(change.key.clone());
            if foreground {
                todo.extend(
                    self.dependents_of(&uid)
                        .into_iter()
                        .map(|(_, n)| n.key.clone()),
                );
            }
        }
        let old = self.nodes.get(&uid).cloned();
        match Node::of(&change.key, obj) {
            Some((uid, node)) => {
                let owners_changed = old.as_ref().is_none_or(|o| o.owners != node.owners);
                if owners_changed || changed_state {
                    todo.push(change.key.clone());
                }
                // Owners it stopped blocking may be waiting for exactly that.
                if let Some(old) = &old {
                    for o in old.owners.iter().filter(|o| o.block) {
                        if !node.owners.iter().any(|n| n.uid == o.uid && n.block) {
                            if let OwnerAt::Key(k) = owner_at(&old.namespace, o) {
                                todo.push(k);
                            }
                        }
                    }
                }
                self.insert(uid, node);
            }
            None => {
                if let Some(old) = self.remove(&uid) {
                    todo.extend(old.owners.iter().filter_map(|o| {
                        match owner_at(&old.namespace, o) {
                            OwnerAt::Key(k) => Some(k),
                            _ => None,
                        }
                    }));
                }
            }
        }
        todo
    }
}

/// Rewrites one object (if it is still `uid`) by compare-and-swap; `edit` returns whether it
/// changed anything. An object marked deleted whose last finalizer this removes is deleted.
/// `Ok(false)`: a race was lost, look again.
async fn edit(
    store: &dyn Store,
    key: &str,
    uid: &str,
    edit: impl FnOnce(&mut Value) -> bool,
) -> Result<bool, StoreError> {
    let Some(kv) = store.get(key, None).await? else {
        return Ok(true);
    };
    let Ok(mut obj) = decode(&kv) else {
        return Ok(true);
    };
    if uid_of(&obj) != uid || !edit(&mut obj) {
        return Ok(true);
    }
    // A namespace's end is the namespace controller's (its spec finalizers come after).
    let finished = deleting(&obj)
        && finalizers_of(&obj).is_empty()
        && !key.starts_with("/registry/namespaces/");
    match store.update(key, encode(&obj), kv.mod_revision, None).await {
        Ok(new) if finished => match store.delete(key, Some(new.mod_revision)).await {
            Ok(_) | Err(StoreError::NotFound { .. }) => Ok(true),
            Err(StoreError::Conflict { .. }) => Ok(false),
            Err(err) => Err(err),
        },
        Ok(_) | Err(StoreError::NotFound { .. }) => Ok(true),
        Err(StoreError::Conflict { .. }) => Ok(false),
        Err(err) => Err(err),
    }
}

fn remove_finalizer(obj: &mut Value, name: &str) -> bool {
    let before = finalizers_of(obj);
    let after: Vec<&String> = before.iter().filter(|f| *f != name).collect();
    let changed = after.len() != before.len();
    obj["metadata"]["finalizers"] = json!(after);
    changed
}

/// Removes the ownerReferences `drop` selects.
fn drop_refs(obj: &mut Value, drop: impl Fn(&str) -> bool) -> bool {
    let Some(refs) = obj["metadata"]["ownerReferences"].as_array_mut() else {
        return false;
    };
    let before = refs.len();
    refs.retain(|r| !drop(r["uid"].as_str().unwrap_or_default()));
    let changed = refs.len() != before;
    if refs.is_empty() {
        if let Some(meta) = obj["metadata"].as_object_mut() {
            meta.remove("ownerReferences");
        }
    }
    changed
}

/// Deletes an object (if it is still `uid`) as a DELETE with `propagation` would: marked
/// with the finalizer the policy asks for, else removed.
pub(crate) async fn delete_object(
    store: &dyn Store,
    key: &str,
    uid: &str,
    propagation: Propagation,
) -> Result<bool, StoreError> {
    let Some(kv) = store.get(key, None).await? else {
        return Ok(true);
    };
    let Ok(mut obj) = decode(&kv) else {
        return Ok(true);
    };
    if uid_of(&obj) != uid {
        return Ok(true);
    }
    let new = deletion_finalizers(&obj, &Policy::explicit(propagation));
    if let Some(f) = &new {
        obj["metadata"]["finalizers"] = json!(f);
    }
    let namespace = key.starts_with("/registry/namespaces/");
    let result = if finalizers_of(&obj).is_empty() && !namespace {
        store.delete(key, Some(kv.mod_revision)).await.map(drop)
    } else if deleting(&obj) && new.is_none() {
        return Ok(true);
    } else {
        if !deleting(&obj) {
            obj["metadata"]["deletionTimestamp"] = json!(object::now());
            obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            if namespace {
                obj["status"]["phase"] = json!("Terminating");
            }
        }
        store
            .update(key, encode(&obj), kv.mod_revision, None)
            .await
            .map(drop)
    };
    match result {
        Ok(()) | Err(StoreError::NotFound { .. }) => Ok(true),
        Err(StoreError::Conflict { .. }) => Ok(false),
        Err(err) => Err(err),
    }
}

/// What one look at a key asks for next.
enum Step {
    /// Done; these keys are worth a look.
    Next(Vec<String>),
    /// A race was lost: look again shortly.
    Retry,
}

fn step(done: bool) -> Step {
    if done {
        Step::Next(Vec::new())
    } else {
        Step::Retry
    }
}

/// Upstream's attemptToDeleteItem, attemptToOrphan and processDeletingDependentsItem, for the
/// object at `key`, decided on its stored state and its owners' (the graph gives dependents).
async fn process(store: &dyn Store, graph: &Graph, key: &str) -> Result<Step, StoreError> {
    let Some(kv) = store.get(key, None).await? else {
        return Ok(Step::Next(Vec::new()));
    };
    let Ok(obj) = decode(&kv) else {
        return Ok(Step::Next(Vec::new()));
    };
    let uid = uid_of(&obj).to_string();
    let finalizers = finalizers_of(&obj);
    let dependents = graph.dependents_of(&uid);
    if deleting(&obj) {
        if finalizers.iter().any(|f| f == ORPHAN) {
            for (dep_uid, node) in &dependents {
                if !edit(store, &node.key, dep_uid, |d| drop_refs(d, |o| o == uid)).await? {
                    return Ok(Step::Retry);
                }
            }
            return Ok(step(
                edit(store, key, &uid, |o| remove_finalizer(o, ORPHAN)).await?,
            ));
        }
        if finalizers.iter().any(|f| f == FOREGROUND) {
            let blocking: Vec<&Node> = dependents
                .iter()
                .map(|(_, n)| *n)
                .filter(|n| n.owners.iter().any(|o| o.uid == uid && o.block))
                .collect();
            if blocking.is_empty() {
                return Ok(step(
                    edit(store, key, &uid, |o| remove_finalizer(o, FOREGROUND)).await?,
                ));
            }
            let next = blocking.iter().filter(|n| !n.deleting_dependents);
            return Ok(Step::Next(next.map(|n| n.key.clone()).collect()));
        }
        return Ok(Step::Next(Vec::new()));
    }
    let owners = owners_of(&obj);
    if owners.is_empty() {
        return Ok(Step::Next(Vec::new()));
    }
    let namespace = obj["metadata"]["namespace"].as_str().unwrap_or_default();
    let (mut solid, mut dangling, mut waiting) = (0, BTreeSet::new(), BTreeSet::new());
    for o in &owners {
        let found = match owner_at(namespace, o) {
            OwnerAt::Unknown => {
                solid += 1;
                continue;
            }
            OwnerAt::Impossible => None,
            OwnerAt::Key(k) => store.get(&k, None).await?,
        };
        let owner = found.and_then(|kv| decode(&kv).ok());
        match owner {
            Some(owner) if uid_of(&owner) == o.uid => {
                if deleting(&owner) && finalizers_of(&owner).iter().any(|f| f == FOREGROUND) {
                    waiting.insert(o.uid.clone());
                } else {
                    solid += 1;
                }
            }
            _ => drop(dangling.insert(o.uid.clone())),
        }
    }
    if solid > 0 {
        // A valid owner keeps it: only the references to gone or waiting owners go.
        if dangling.is_empty() && waiting.is_empty() {
            return Ok(Step::Next(Vec::new()));
        }
        let gone = |u: &str| dangling.contains(u) || waiting.contains(u);
        return Ok(step(edit(store, key, &uid, |d| drop_refs(d, gone)).await?));
    }
    if !waiting.is_empty() && !dependents.is_empty() {
        // An owner waits for it and it has dependents of its own: foreground, and a circle
        // (a dependent already deleting its dependents) is broken by no longer blocking.
        if dependents.iter().any(|(_, n)| n.deleting_dependents) {
            let unblock = |d: &mut Value| {
                let mut changed = false;
                for r in d["metadata"]["ownerReferences"]
                    .as_array_mut()
                    .into_iter()
                    .flatten()
                {
                    if r["blockOwnerDeletion"] == true {
                        r["blockOwnerDeletion"] = json!(false);
                        changed = true;
                    }
                }
                changed
            };
            if !edit(store, key, &uid, unblock).await? {
                return Ok(Step::Retry);
            }
        }
        return Ok(step(
            delete_object(store, key, &uid, Propagation::Foreground).await?,
        ));
    }
    let propagation = if finalizers.iter().any(|f| f == ORPHAN) {
        Propagation::Orphan
    } else if finalizers.iter().any(|f| f == FOREGROUND) {
        Propagation::Foreground
    } else {
        Propagation::Background
    };
    Ok(step(delete_object(store, key, &uid, propagation).await?))
}

/// The graph from a full list, and the keys to look at: every dependent, every owner being
/// deleted with a garbage-collection finalizer.
async fn build(store: &dyn Store) -> Result<(Graph, Vec<String>), StoreError> {
    let storages: BTreeSet<&str> = registry::all()
        .into_iter()
        .map(|r| r.storage)
        .filter(|s| *s != "events")
        .collect();
    let (mut graph, mut todo) = (Graph::default(), Vec::new());
    for storage in storages {
        let prefix = format!("/registry/{storage}/");
        for kv in store.list(&prefix, ListOptions::default()).await?.items {
            let Ok(obj) = decode(&kv) else { continue };
            let f = finalizers_of(&obj);
            let gc_finalizer = f.iter().any(|f| f == ORPHAN || f == FOREGROUND);
            if let Some((uid, node)) = Node::of(&kv.key, &obj) {
                graph.insert(uid, node);
                todo.push(kv.key.clone());
            } else if deleting(&obj) && gc_finalizer {
                todo.push(kv.key.clone());
            }
        }
    }
    Ok((graph, todo))
}

/// Keys to look at, each once.
#[derive(Default)]
pub(crate) struct Queue {
    order: std::collections::VecDeque<String>,
    queued: std::collections::HashSet<String>,
}

impl Queue {
    pub(crate) fn extend(&mut self, keys: impl IntoIterator<Item = String>) {
        for k in keys {
            if self.queued.insert(k.clone()) {
                self.order.push_back(k);
            }
        }
    }

    pub(crate) fn pop(&mut self) -> Option<String> {
        let k = self.order.pop_front()?;
        self.queued.remove(&k);
        Some(k)
    }
}

/// The leader's garbage collector: builds the graph, then looks at what each change concerns,
/// one key at a time with the graph kept current in between; rebuilds after a lag or every
/// [`RESYNC`].
pub fn start(api: Arc<Api>) -> AbortHandle {
    use tokio::sync::broadcast::error::TryRecvError;
    let task = tokio::spawn(async move {
        let store = api.store.as_ref();
        loop {
            // Subscribe first, then list: nothing falls between the two.
            let Ok((_, mut changes)) = api.hub.subscribe(api.hub.last()) else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let (mut graph, initial) = match build(store).await {
                Ok(built) => built,
                Err(err) => {
                    tracing::warn!(%err, "garbage collector: listing failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let mut queue = Queue::default();
            queue.extend(initial);
            let mut retry = BTreeSet::new();
            let rebuild = tokio::time::Instant::now() + RESYNC;
            let mut retry_at = tokio::time::Instant::now();
            'watching: loop {
                loop {
                    match changes.try_recv() {
                        Ok(c) => queue.extend(graph.apply(&c)),
                        Err(TryRecvError::Empty) => break,
                        Err(_) => break 'watching,
                    }
                }
                let now = tokio::time::Instant::now();
                if now >= retry_at && !retry.is_empty() {
                    queue.extend(std::mem::take(&mut retry));
                }
                if let Some(key) = queue.pop() {
                    match process(store, &graph, &key).await {
                        Ok(Step::Next(more)) => queue.extend(more),
                        Ok(Step::Retry) => drop(retry.insert(key)),
                        Err(err) => {
                            tracing::warn!(%err, %key, "garbage collector");
                            retry.insert(key);
                        }
                    }
                    if retry.len() == 1 && retry_at <= now {
                        retry_at = now + Duration::from_millis(500);
                    }
                    continue;
                }
                let wake = if retry.is_empty() {
                    rebuild
                } else {
                    retry_at.min(rebuild)
                };
                tokio::select! {
                    _ = tokio::time::sleep_until(wake) => {
                        if tokio::time::Instant::now() >= rebuild {
                            break 'watching;
                        }
                    }
                    change = changes.recv() => match change {
                        Ok(c) => queue.extend(graph.apply(&c)),
                        Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => break 'watching,
                    },
                }
            }
        }
    });
    task.abort_handle()
}

#[cfg(test)]
#[path = "gc_tests.rs"]
mod tests;
