//! The dependency graph (upstream's GraphBuilder and its `uidToNode`): a node per object the
//! metadata watches show, by uid, with its owner references, and the reverse index from an owner
//! uid to its dependents. Each change says which items are worth a look (upstream's
//! `processGraphChanges` and `processTransitions`).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use kube::core::ObjectMeta;

use crate::resources::Served;

/// Deletes after the dependents' ownerReferences to the owner are removed.
pub(crate) const ORPHAN: &str = "orphan";
/// Deletes after the dependents that block the owner's deletion are deleted.
pub(crate) const FOREGROUND: &str = "foregroundDeletion";

/// One ownerReference of a dependent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Owner {
    pub uid: String,
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub block: bool,
}

pub(crate) fn owners_of(meta: &ObjectMeta) -> Vec<Owner> {
    meta.owner_references
        .iter()
        .flatten()
        .map(|r| Owner {
            uid: r.uid.clone(),
            api_version: r.api_version.clone(),
            kind: r.kind.clone(),
            name: r.name.clone(),
            block: r.block_owner_deletion == Some(true),
        })
        .collect()
}

pub(crate) fn has_finalizer(meta: &ObjectMeta, name: &str) -> bool {
    meta.finalizers.iter().flatten().any(|f| f == name)
}

/// An object as the graph knows it.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub resource: Arc<Served>,
    pub namespace: Option<String>,
    pub name: String,
    pub owners: Vec<Owner>,
    pub deleting: bool,
    /// Being deleted with the `foregroundDeletion` finalizer: its blocking dependents go first.
    pub deleting_dependents: bool,
    /// Being deleted with the `orphan` finalizer.
    pub orphaning: bool,
}

impl Node {
    pub fn of(resource: Arc<Served>, meta: &ObjectMeta) -> Node {
        let deleting = meta.deletion_timestamp.is_some();
        Node {
            resource,
            namespace: meta.namespace.clone(),
            name: meta.name.clone().unwrap_or_default(),
            owners: owners_of(meta),
            deleting,
            deleting_dependents: deleting && has_finalizer(meta, FOREGROUND),
            orphaning: deleting && has_finalizer(meta, ORPHAN),
        }
    }
}

/// What the collector does with an item (by uid).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Work {
    /// Upstream's attemptToDelete: collect it if its owners are gone; for an owner deleting its
    /// dependents, wait for them, then remove its finalizer.
    Delete(String),
    /// Upstream's attemptToOrphan: remove the references to it, then its `orphan` finalizer.
    Orphan(String),
}

#[derive(Debug, Default)]
pub(crate) struct Graph {
    nodes: HashMap<String, Node>,
    dependents: HashMap<String, BTreeSet<String>>,
}

impl Graph {
    pub fn get(&self, uid: &str) -> Option<&Node> {
        self.nodes.get(uid)
    }

    /// The uids of the nodes of one resource.
    pub fn of_resource(&self, group: &str, plural: &str) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.resource.api.group == group && n.resource.api.plural == plural)
            .map(|(uid, _)| uid.clone())
            .collect()
    }

    /// The dependents of `uid` (by uid) and their nodes.
    pub fn dependents_of(&self, uid: &str) -> Vec<(String, Node)> {
        self.dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|d| Some((d.clone(), self.nodes.get(d)?.clone())))
            .collect()
    }

    /// The dependents whose reference to `uid` blocks its deletion.
    pub fn blocking_dependents(&self, uid: &str) -> Vec<(String, Node)> {
        let mut deps = self.dependents_of(uid);
        deps.retain(|(_, n)| n.owners.iter().any(|o| o.uid == uid && o.block));
        deps
    }

    fn unindex(&mut self, uid: &str, owners: &[Owner]) {
        for o in owners {
            if let Some(set) = self.dependents.get_mut(&o.uid) {
                set.remove(uid);
                if set.is_empty() {
                    self.dependents.remove(&o.uid);
                }
            }
        }
    }

    /// An object added or changed.
    pub fn apply(&mut self, uid: &str, node: Node) -> Vec<Work> {
        let mut work = Vec::new();
        let old = self.nodes.get(uid).cloned();
        let was = |f: fn(&Node) -> bool| old.as_ref().is_some_and(f);
        // An owner the graph has not seen (upstream's virtual node), or one that waits for its
        // dependents: the item is looked at, which asks the API.
        let unknown_owner = node.owners.iter().any(|o| {
            let known = old
                .as_ref()
                .is_some_and(|old| old.owners.iter().any(|p| p.uid == o.uid));
            !known && self.nodes.get(&o.uid).is_none_or(|n| n.deleting_dependents)
        });
        if unknown_owner {
            work.push(Work::Delete(uid.to_string()));
        }
        if let Some(old) = &old {
            // Owners it no longer blocks may be waiting for exactly that.
            for o in old.owners.iter().filter(|o| o.block) {
                let still = node.owners.iter().any(|n| n.uid == o.uid && n.block);
                if !still
                    && self
                        .nodes
                        .get(&o.uid)
                        .is_some_and(|n| n.deleting_dependents)
                {
                    work.push(Work::Delete(o.uid.clone()));
                }
            }
            self.unindex(uid, &old.owners);
        }
        for o in &node.owners {
            self.dependents
                .entry(o.uid.clone())
                .or_default()
                .insert(uid.to_string());
        }
        if node.orphaning && !was(|n| n.orphaning) {
            work.push(Work::Orphan(uid.to_string()));
        }
        if node.deleting_dependents && !was(|n| n.deleting_dependents) {
            work.push(Work::Delete(uid.to_string()));
            work.extend(
                self.dependents_of(uid)
                    .into_iter()
                    .map(|(d, _)| Work::Delete(d)),
            );
        }
        self.nodes.insert(uid.to_string(), node);
        work
    }

    /// An object gone: its dependents may be orphans now, its owners may wait for it.
    pub fn remove(&mut self, uid: &str) -> Vec<Work> {
        let Some(node) = self.nodes.remove(uid) else {
            return Vec::new();
        };
        self.unindex(uid, &node.owners);
        let mut work: Vec<Work> = self
            .dependents_of(uid)
            .into_iter()
            .map(|(d, _)| Work::Delete(d))
            .collect();
        for o in &node.owners {
            if self
                .nodes
                .get(&o.uid)
                .is_some_and(|n| n.deleting_dependents)
            {
                work.push(Work::Delete(o.uid.clone()));
            }
        }
        work
    }

    /// The items with an owner the graph has not seen (upstream's virtual nodes): worth a look
    /// once a new watch has listed, which may have been the owner's only way in.
    pub fn with_unseen_owners(&self) -> Vec<Work> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.owners.iter().any(|o| !self.nodes.contains_key(&o.uid)))
            .map(|(uid, _)| Work::Delete(uid.clone()))
            .collect()
    }

    /// Whether every owner of `uid` is in the graph and none waits for its dependents: then
    /// there is nothing to collect, and the API need not be asked.
    pub fn owners_all_present(&self, node: &Node) -> bool {
        node.owners.iter().all(|o| {
            self.nodes
                .get(&o.uid)
                .is_some_and(|n| !n.deleting_dependents && n.name == o.name)
        })
    }
}
