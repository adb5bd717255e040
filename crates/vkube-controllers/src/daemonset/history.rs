//! A DaemonSet's ControllerRevisions (upstream's `constructHistory`, `snapshot`,
//! `dedupCurHistories`, `cleanupHistory`): one revision per template the DaemonSet has had,
//! named `<daemonset>-<hash>` and labelled `controller-revision-hash: <hash>`, holding the
//! strategic merge patch that restores the template (what `kubectl rollout undo` applies); the
//! current template's revision has the highest number, and old ones no pod runs beyond
//! `revisionHistoryLimit` are deleted.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::Result;
use crate::pods::{controller_of, controller_ref, selects};

/// The label on revisions and pods that names the revision (`apps.DefaultDaemonSetUniqueLabelKey`).
pub const HASH_LABEL: &str = "controller-revision-hash";

/// Upstream's `rand.SafeEncodeString` alphabet: no vowels, no 0/1/3 (no words, no look-alikes).
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The template's hash (upstream's `controller.ComputeHash`: FNV-1a 32 of the template, then of
/// the collision count when there is one, its decimal digits spelled in the safe alphabet).
/// Upstream hashes Go's printing of the template, so the value differs from upstream's for the
/// same template; it is stable for vkube.
pub fn template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    let mut write = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u32::from(*b);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    };
    write(&serde_json::to_vec(template).unwrap_or_default());
    if let Some(n) = collision_count {
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&(n as u32).to_le_bytes());
        write(&bytes);
    }
    hash.to_string()
        .bytes()
        .map(|b| char::from(ALPHANUMS[usize::from(b) % ALPHANUMS.len()]))
        .collect()
}

/// What a revision holds (upstream's `getPatch`): `{"spec":{"template":{…,"$patch":"replace"}}}`,
/// as Go's `json.Marshal` of the typed template writes it, because clients compare the bytes
/// (the DaemonSet conformance specs find the current revision by `daemon.Match`): keys sorted (a
/// `serde_json::Value` object is a sorted map), and the members Go writes for zero values that
/// k8s-openapi leaves out: the template's `"creationTimestamp":null` and each container's
/// `"resources":{}`.
pub fn revision_data(ds: &DaemonSet) -> Value {
    let mut template = ds
        .spec
        .as_ref()
        .map(|s| serde_json::to_value(&s.template).unwrap_or_default())
        .unwrap_or_else(|| json!({}));
    as_go_writes(&mut template);
    template["$patch"] = json!("replace");
    json!({"spec": {"template": template}})
}

/// Adds the zero-valued members Go's encoder writes for a pod template (fields without
/// `omitempty`, or struct fields, where `omitempty` has no effect).
fn as_go_writes(template: &mut Value) {
    let Some(t) = template.as_object_mut() else {
        return;
    };
    let metadata = t.entry("metadata").or_insert_with(|| json!({}));
    if let Some(m) = metadata.as_object_mut() {
        m.entry("creationTimestamp").or_insert(Value::Null);
    }
    let spec = t.entry("spec").or_insert_with(|| json!({}));
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        // `get_mut`: indexing would add the absent lists as nulls.
        let containers = spec.get_mut(list).and_then(Value::as_array_mut);
        for container in containers.into_iter().flatten() {
            if let Some(c) = container.as_object_mut() {
                c.entry("resources").or_insert_with(|| json!({}));
            }
        }
    }
}

/// Whether `revision` holds `ds`'s current template (upstream compares the bytes; here the
/// JSON, without nulls and empty objects, so data Go wrote — `"creationTimestamp":null`,
/// `"resources":{}` — matches the same template).
fn matches(ds: &DaemonSet, revision: &ControllerRevision) -> bool {
    revision
        .data
        .as_ref()
        .is_some_and(|d| pruned(&d.0) == pruned(&revision_data(ds)))
}

/// `value` without null members and members that are (or become) empty objects.
fn pruned(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), pruned(v)))
                .filter(|(_, v)| !v.is_null() && v.as_object().is_none_or(|o| !o.is_empty()))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(pruned).collect()),
        other => other.clone(),
    }
}

fn hash_of(revision: &ControllerRevision) -> String {
    revision
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(HASH_LABEL))
        .cloned()
        .unwrap_or_default()
}

/// The revisions `ds` controls, after claiming (orphans its selector matches are adopted, its
/// own that the selector no longer matches are released).
async fn controlled(
    api: &Api<ControllerRevision>,
    ds: &DaemonSet,
) -> Result<Vec<ControllerRevision>> {
    let uid = ds.metadata.uid.clone().unwrap_or_default();
    let selector = ds
        .spec
        .as_ref()
        .map(|s| s.selector.clone())
        .unwrap_or_default();
    let deleting = ds.metadata.deletion_timestamp.is_some();
    let mut out = Vec::new();
    for rev in api.list(&ListParams::default()).await?.items {
        let fits = selects(&selector, rev.metadata.labels.as_ref());
        let name = rev.metadata.name.clone().unwrap_or_default();
        let mut refs = rev.metadata.owner_references.clone().unwrap_or_default();
        match controller_of(&rev.metadata) {
            Some(r) if r.uid == uid && fits => out.push(rev),
            Some(r) if r.uid == uid => {
                refs.retain(|r| r.uid != uid);
                let patch = json!({"metadata": {"ownerReferences": refs, "uid": rev.metadata.uid}});
                ignore_gone(
                    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await,
                )?;
            }
            None if fits && !deleting => {
                refs.push(controller_ref(ds));
                let patch = json!({"metadata": {"ownerReferences": refs, "uid": rev.metadata.uid}});
                if let Some(adopted) = ignore_gone(
                    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await,
                )? {
                    out.push(adopted);
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// `Ok(None)` for an object gone or changed meanwhile (404, 409): the next sync sees it.
pub fn ignore_gone<T>(r: kube::Result<T>) -> kube::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(None),
        Err(e) => Err(e),
    }
}

/// The current revision and the old ones. `None` when the current revision's name was taken by
/// another template: the DaemonSet's `collisionCount` was raised, and the next sync hashes anew.
pub async fn construct(
    client: &kube::Client,
    ds: &DaemonSet,
) -> Result<Option<(ControllerRevision, Vec<ControllerRevision>)>> {
    let ns = ds.metadata.namespace.clone().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), &ns);
    let mut current = Vec::new();
    let mut old = Vec::new();
    for mut rev in controlled(&api, ds).await? {
        if hash_of(&rev).is_empty() {
            // Upstream labels a revision that lacks the label with its name.
            let name = rev.metadata.name.clone().unwrap_or_default();
            rev.metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert(HASH_LABEL.into(), name.clone());
            rev = api.replace(&name, &PostParams::default(), &rev).await?;
        }
        if matches(ds, &rev) {
            current.push(rev);
        } else {
            old.push(rev);
        }
    }
    let next = old.iter().map(|r| r.revision).max().unwrap_or(0) + 1;
    let cur = if current.is_empty() {
        match snapshot(client, &api, ds, next).await? {
            Some(cur) => cur,
            None => return Ok(None),
        }
    } else {
        let mut cur = dedup(client, &api, ds, current).await?;
        if cur.revision < next {
            cur.revision = next;
            let name = cur.metadata.name.clone().unwrap_or_default();
            cur = api.replace(&name, &PostParams::default(), &cur).await?;
        }
        cur
    };
    Ok(Some((cur, old)))
}

/// Creates the revision of the current template.
async fn snapshot(
    client: &kube::Client,
    api: &Api<ControllerRevision>,
    ds: &DaemonSet,
    revision: i64,
) -> Result<Option<ControllerRevision>> {
    let spec = ds.spec.clone().unwrap_or_default();
    let collisions = ds.status.as_ref().and_then(|s| s.collision_count);
    let hash = template_hash(&spec.template, collisions);
    let name = format!("{}-{hash}", ds.metadata.name.as_deref().unwrap_or_default());
    let mut labels = spec
        .template
        .metadata
        .and_then(|m| m.labels)
        .unwrap_or_default();
    labels.insert(HASH_LABEL.into(), hash);
    let rev = ControllerRevision {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.clone()),
            namespace: ds.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: ds.metadata.annotations.clone(),
            owner_references: Some(vec![controller_ref(ds)]),
            ..Default::default()
        },
        data: Some(RawExtension(revision_data(ds))),
        revision,
    };
    match api.create(&PostParams::default(), &rev).await {
        Ok(made) => Ok(Some(made)),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let existing = api.get(&name).await?;
            if matches(ds, &existing) {
                return Ok(Some(existing));
            }
            // A hash collision: raise collisionCount so the next hash differs.
            let ds_api: Api<DaemonSet> = Api::namespaced(
                client.clone(),
                ds.metadata.namespace.as_deref().unwrap_or_default(),
            );
            let mut fresh = ds_api
                .get(ds.metadata.name.as_deref().unwrap_or_default())
                .await?;
            let seen = ds.status.as_ref().and_then(|s| s.collision_count);
            if fresh.status.as_ref().and_then(|s| s.collision_count) != seen {
                // Hashed with a stale count: the next sync hashes with the current one.
                return Ok(None);
            }
            let status = fresh.status.get_or_insert_with(Default::default);
            status.collision_count = Some(status.collision_count.unwrap_or(0) + 1);
            tracing::info!(daemonset = ?ds.metadata.name, %name, "revision name collision; raising collisionCount");
            ds_api
                .replace_status(
                    ds.metadata.name.as_deref().unwrap_or_default(),
                    &PostParams::default(),
                    &fresh,
                )
                .await?;
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Several revisions hold the current template (upstream's `dedupCurHistories`): the highest
/// stays, pods labelled with another's hash are relabelled, and the others are deleted.
async fn dedup(
    client: &kube::Client,
    api: &Api<ControllerRevision>,
    ds: &DaemonSet,
    mut current: Vec<ControllerRevision>,
) -> Result<ControllerRevision> {
    current.sort_by_key(|r| r.revision);
    let keep = current.pop().expect("at least one current revision");
    if current.is_empty() {
        return Ok(keep);
    }
    let keep_hash = hash_of(&keep);
    let ns = ds.metadata.namespace.clone().unwrap_or_default();
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &ns);
    let selector = ds
        .spec
        .as_ref()
        .map(|s| s.selector.clone())
        .unwrap_or_default();
    for pod in crate::pods::claim(client, ds, &selector).await? {
        let labels = pod.metadata.labels.as_ref();
        if labels.and_then(|l| l.get(HASH_LABEL)) != Some(&keep_hash) {
            let patch = json!({"metadata": {"labels": {HASH_LABEL: keep_hash}}});
            let name = pod.metadata.name.clone().unwrap_or_default();
            ignore_gone(
                pods.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await,
            )?;
        }
    }
    for dup in current {
        let name = dup.metadata.name.clone().unwrap_or_default();
        ignore_gone(api.delete(&name, &DeleteParams::default()).await)?;
    }
    Ok(keep)
}

/// Deletes the oldest revisions beyond `revisionHistoryLimit` (default 10) that no live pod
/// (`live_hashes`) runs.
pub async fn cleanup(
    client: &kube::Client,
    ds: &DaemonSet,
    mut old: Vec<ControllerRevision>,
    live_hashes: &BTreeSet<String>,
) -> Result<()> {
    let keep = ds
        .spec
        .as_ref()
        .and_then(|s| s.revision_history_limit)
        .unwrap_or(10)
        .max(0) as usize;
    let mut to_kill = old.len().saturating_sub(keep);
    if to_kill == 0 {
        return Ok(());
    }
    let ns = ds.metadata.namespace.clone().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), &ns);
    old.sort_by_key(|r| r.revision);
    for rev in old {
        if to_kill == 0 {
            break;
        }
        if live_hashes.contains(&hash_of(&rev)) {
            continue;
        }
        let name = rev.metadata.name.clone().unwrap_or_default();
        ignore_gone(api.delete(&name, &DeleteParams::default()).await)?;
        to_kill -= 1;
    }
    Ok(())
}
