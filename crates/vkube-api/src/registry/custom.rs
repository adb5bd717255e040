//! Resources defined by CustomResourceDefinitions, as the server's watch of CRDs installs and
//! removes them. Every replica feeds this table from the same store watch, so every replica
//! serves the same custom resources once it has caught up with the same revision.
//!
//! The table is an immutable snapshot behind an `Arc`: a reader takes the current snapshot and
//! reads it without holding any lock, and a change builds the next snapshot and swaps it in. So
//! a reload of every CRD ([`replace_all`]) is one swap, and a request that races it sees the
//! old table or the new one, never an empty or half-filled one (DESIGN rule 2).
//!
//! The rest of vkube addresses resources as `&'static Resource`; a CRD's resources are
//! therefore leaked, interned by their full description so that re-installing an unchanged
//! definition (every replica start, every status update of the CRD) allocates nothing new. Only
//! a definition that really changes its names, scope or subresources leaks a few hundred bytes.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use serde_json::Value;

use super::builtin::{ALL_VERBS, SCALE, STATUS};
use super::{Resource, Subresource};

/// One served version of a CRD, with what serving it needs beyond the [`Resource`].
#[derive(Debug)]
pub struct Definition {
    pub resource: &'static Resource,
    /// The CRD's name (`<plural>.<group>`).
    pub crd: String,
    /// The version's entry of `spec.versions`.
    pub version: Value,
    /// The apiVersion its objects are stored in (the version with `storage: true`).
    pub storage_version: String,
    pub singular: String,
    pub list_kind: String,
    /// `subresources.scale` of this version, when it has one.
    pub scale: Option<Value>,
    /// `additionalPrinterColumns`; empty: the default Age column.
    pub columns: Vec<Value>,
    /// `selectableFields` paths, without their leading dot.
    pub selectable_fields: Vec<String>,
    /// The CRD is being deleted: its objects are being removed, creates are refused.
    pub terminating: bool,
    /// The CRD's `spec.conversion` (strategy `None`, or `Webhook` with its `webhook`).
    pub conversion: Value,
    /// The version's schema and rules, compiled on first use (`custom_objects`).
    pub(crate) compiled: std::sync::OnceLock<crate::custom_objects::Compiled>,
}

impl Definition {
    /// The version's `schema.openAPIV3Schema`, if it has one.
    /// Whether its objects change version through a conversion webhook.
    pub fn converts_by_webhook(&self) -> bool {
        self.conversion["strategy"] == "Webhook"
    }

    pub fn schema(&self) -> Option<&Value> {
        self.version
            .get("schema")
            .and_then(|s| s.get("openAPIV3Schema"))
    }
}

/// One snapshot of the served CRDs. Cloning it is cheap (the definitions are shared), which a
/// single CRD's change relies on when readers still hold the snapshot it replaces.
#[derive(Clone, Default)]
struct Table {
    /// CRD name → its served versions.
    by_crd: BTreeMap<String, Vec<Arc<Definition>>>,
    /// Raised on every change, so cached documents (discovery, OpenAPI) know to rebuild.
    generation: u64,
}

fn table() -> &'static RwLock<Arc<Table>> {
    static TABLE: std::sync::OnceLock<RwLock<Arc<Table>>> = std::sync::OnceLock::new();
    TABLE.get_or_init(Default::default)
}

/// The current snapshot. The lock is held only to clone the `Arc`.
fn read() -> Arc<Table> {
    table().read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Changes the table: in place when no reader holds the current snapshot, else on a copy that
/// then replaces it. Writers are serialised by the lock, so none loses another's change.
fn change<T>(f: impl FnOnce(&mut Table) -> T) -> T {
    let mut guard = table().write().unwrap_or_else(|e| e.into_inner());
    f(Arc::make_mut(&mut guard))
}

/// The leaked resources, by their full description (see the module's note).
fn interned() -> std::sync::MutexGuard<'static, HashMap<String, &'static Resource>> {
    static INTERNED: std::sync::OnceLock<std::sync::Mutex<HashMap<String, &'static Resource>>> =
        std::sync::OnceLock::new();
    INTERNED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Whether a CRD's condition of this type is True.
pub fn condition(crd: &Value, kind: &str) -> bool {
    crd["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == kind && c["status"] == "True")
    })
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Installs a CRD's served versions (replacing what it had), or removes them while it is not
/// established. Upstream serves a CRD's resources once its `Established` condition is True.
pub fn install(crd: &Value) {
    let Some((name, defs)) = served(crd) else {
        return;
    };
    change(|t| {
        match defs {
            Some(defs) => drop(t.by_crd.insert(name, defs)),
            None if t.by_crd.remove(&name).is_some() => {}
            None => return,
        }
        t.generation += 1;
    });
}

/// Replaces every CRD with these (a fresh list of the stored CRDs): the new table is built
/// aside and swapped in whole, so what is not in the list is gone and nothing that is in it
/// is ever missing meanwhile.
pub fn replace_all<'a>(crds: impl IntoIterator<Item = &'a Value>) {
    let mut by_crd = BTreeMap::new();
    for (name, defs) in crds.into_iter().filter_map(served) {
        if let Some(defs) = defs {
            by_crd.insert(name, defs);
        }
    }
    change(|t| {
        t.by_crd = by_crd;
        t.generation += 1;
    });
}

/// A CRD's name and its served versions in priority order (`None`: not established, so not
/// served); `None` for an object without a name.
fn served(crd: &Value) -> Option<(String, Option<Vec<Arc<Definition>>>)> {
    let name = crd["metadata"]["name"].as_str().unwrap_or_default();
    if name.is_empty() {
        return None;
    }
    if !condition(crd, "Established") {
        return Some((name.to_string(), None));
    }
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or_default();
    // The names in effect are the accepted ones (the naming controller's verdict).
    let names = match &crd["status"]["acceptedNames"] {
        n if n["plural"].is_string() => n,
        _ => &spec["names"],
    };
    let plural = names["plural"].as_str().unwrap_or_default();
    let kind = names["kind"].as_str().unwrap_or_default();
    let namespaced = spec["scope"] != "Cluster";
    let short_names = strings(&names["shortNames"]);
    let categories = strings(&names["categories"]);
    let singular = names["singular"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map_or_else(|| kind.to_ascii_lowercase(), str::to_string);
    let list_kind = names["listKind"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map_or_else(|| format!("{kind}List"), str::to_string);
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    let storage = versions
        .iter()
        .find(|v| v["storage"] == true)
        .and_then(|v| v["name"].as_str())
        .unwrap_or_default();
    let terminating = crd["metadata"]["deletionTimestamp"].is_string();
    let mut interned = interned();
    let mut defs = Vec::new();
    for v in versions.iter().filter(|v| v["served"] == true) {
        let version = v["name"].as_str().unwrap_or_default();
        let status = v["subresources"].get("status").is_some();
        let scale = v["subresources"].get("scale").cloned();
        let key = format!(
            "{group}|{version}|{plural}|{kind}|{namespaced}|{short_names:?}|{categories:?}|{status}|{}",
            scale.is_some()
        );
        let resource = match interned.get(&key) {
            Some(r) => *r,
            None => {
                let mut subs: Vec<Subresource> = Vec::new();
                if status {
                    subs.push(STATUS);
                }
                if scale.is_some() {
                    subs.push(SCALE);
                }
                let leaked_list = |l: &[String]| -> &'static [&'static str] {
                    Box::leak(
                        l.iter()
                            .map(|s| leak(s))
                            .collect::<Vec<_>>()
                            .into_boxed_slice(),
                    )
                };
                let r: &'static Resource = Box::leak(Box::new(Resource {
                    group: leak(group),
                    version: leak(version),
                    plural: leak(plural),
                    kind: leak(kind),
                    namespaced,
                    verbs: ALL_VERBS,
                    short_names: leaked_list(&short_names),
                    categories: leaked_list(&categories),
                    subresources: Box::leak(subs.into_boxed_slice()),
                    storage: leak(&format!("{group}/{plural}")),
                    custom: true,
                }));
                interned.insert(key, r);
                r
            }
        };
        defs.push(Arc::new(Definition {
            resource,
            crd: name.to_string(),
            version: v.clone(),
            storage_version: format!("{group}/{storage}"),
            singular: singular.clone(),
            list_kind: list_kind.clone(),
            scale,
            columns: v["additionalPrinterColumns"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
            selectable_fields: v["selectableFields"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|f| f["jsonPath"].as_str())
                        .map(|p| p.trim_start_matches('.').to_string())
                        .collect()
                })
                .unwrap_or_default(),
            terminating,
            conversion: spec["conversion"].clone(),
            compiled: Default::default(),
        }));
    }
    defs.sort_by(|a, b| version_order(a.resource.version, b.resource.version));
    Some((name.to_string(), Some(defs)))
}

/// Stops serving a CRD's resources.
pub fn remove(name: &str) {
    change(|t| {
        if t.by_crd.remove(name).is_some() {
            t.generation += 1;
        }
    });
}

/// A digest of what a group-version's CRDs define (empty when none): the same on every replica
/// that has the same CRDs, so documents' `?hash=` keys agree across replicas.
pub fn fingerprint(group: &str, version: &str) -> String {
    let t = read();
    let mut h: u64 = 0xcbf29ce484222325;
    let mut any = false;
    for d in t.by_crd.values().flatten() {
        let r = d.resource;
        if r.group != group || r.version != version {
            continue;
        }
        any = true;
        let text = format!("{}|{}|{}|{}", d.crd, r.kind, d.list_kind, d.version);
        for b in text.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    if any {
        format!("#{h:016x}")
    } else {
        String::new()
    }
}

/// A counter raised on every change of the table.
pub fn generation() -> u64 {
    read().generation
}

pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    read()
        .by_crd
        .values()
        .flatten()
        .map(|d| d.resource)
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Whether the CRD defining this kind in this group converts its objects by a webhook.
pub fn converts_by_webhook(group: &str, kind: &str) -> bool {
    read()
        .by_crd
        .values()
        .flatten()
        .any(|d| d.resource.group == group && d.resource.kind == kind && d.converts_by_webhook())
}

/// Whether an established CRD defines this kind in this group.
pub fn has_kind(group: &str, kind: &str) -> bool {
    read()
        .by_crd
        .values()
        .flatten()
        .any(|d| d.resource.group == group && d.resource.kind == kind)
}

/// What a custom resource's CRD says about it.
pub fn definition(resource: &Resource) -> Option<Arc<Definition>> {
    if !resource.custom {
        return None;
    }
    read()
        .by_crd
        .get(&format!("{}.{}", resource.plural, resource.group))
        .and_then(|defs| {
            defs.iter()
                .find(|d| d.resource.version == resource.version)
                .cloned()
        })
}

/// Every served custom resource: by group, then version priority (preferred first).
pub fn resources() -> Vec<&'static Resource> {
    let t = read();
    let mut all: Vec<&'static Resource> = t.by_crd.values().flatten().map(|d| d.resource).collect();
    all.sort_by(|a, b| {
        a.group
            .cmp(b.group)
            .then_with(|| version_order(a.version, b.version))
            .then_with(|| a.plural.cmp(b.plural))
    });
    all
}

/// Kubernetes' version priority: GA before beta before alpha, higher numbers first, then
/// versions that do not look like Kubernetes versions in lexical order.
pub fn version_order(a: &str, b: &str) -> Ordering {
    fn parse(v: &str) -> Option<(u8, u64, u64)> {
        let rest = v.strip_prefix('v')?;
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        let major: u64 = rest[..digits].parse().ok()?;
        let tail = &rest[digits..];
        if tail.is_empty() {
            return Some((0, major, 0));
        }
        for (rank, label) in [(1, "beta"), (2, "alpha")] {
            if let Some(n) = tail.strip_prefix(label) {
                return n.parse().ok().map(|n| (rank, major, n));
            }
        }
        None
    }
    match (parse(a), parse(b)) {
        (Some((ra, ma, na)), Some((rb, mb, nb))) => ra
            .cmp(&rb)
            .then_with(|| mb.cmp(&ma))
            .then_with(|| nb.cmp(&na)),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn crd(name: &str, established: bool) -> Value {
        json!({
            "metadata": {"name": format!("{name}s.example.com")},
            "spec": {
                "group": "example.com",
                "scope": "Namespaced",
                "names": {"plural": format!("{name}s"), "kind": "Widget", "shortNames": ["wd"]},
                "versions": [
                    {"name": "v1beta1", "served": true, "storage": false},
                    {"name": "v1", "served": true, "storage": true, "subresources": {"status": {}}},
                    {"name": "v2alpha1", "served": false, "storage": false},
                ],
            },
            "status": {"conditions": [{"type": "Established", "status": if established { "True" } else { "False" }}]},
        })
    }

    #[test]
    fn established_crds_are_served_in_version_priority() {
        install(&crd("widget", true));
        let r = find("example.com", "v1", "widgets").expect("served");
        assert!(r.custom && r.namespaced);
        assert_eq!(r.storage, "example.com/widgets");
        assert!(r.subresource("status").is_some());
        assert!(
            find("example.com", "v2alpha1", "widgets").is_none(),
            "not served"
        );
        let d = definition(find("example.com", "v1beta1", "widgets").unwrap()).unwrap();
        assert_eq!(d.storage_version, "example.com/v1");
        assert_eq!(d.list_kind, "WidgetList");
        let versions: Vec<_> = resources()
            .into_iter()
            .filter(|r| r.plural == "widgets")
            .map(|r| r.version)
            .collect();
        assert_eq!(versions, ["v1", "v1beta1"]);
        // Re-installing an unchanged definition reuses the interned resource.
        install(&crd("widget", true));
        assert!(std::ptr::eq(
            r,
            find("example.com", "v1", "widgets").unwrap()
        ));
        install(&crd("widget", false));
        assert!(
            find("example.com", "v1", "widgets").is_none(),
            "not established"
        );
    }

    #[test]
    fn version_priority_matches_upstream() {
        let mut v = vec![
            "v1alpha1",
            "foo1",
            "v10",
            "v2",
            "v11beta2",
            "v10beta3",
            "v3beta1",
            "v12alpha1",
            "v1",
            "foo10",
        ];
        v.sort_by(|a, b| version_order(a, b));
        assert_eq!(
            v,
            [
                "v10",
                "v2",
                "v1",
                "v11beta2",
                "v10beta3",
                "v3beta1",
                "v12alpha1",
                "v1alpha1",
                "foo1",
                "foo10"
            ]
        );
    }
}
