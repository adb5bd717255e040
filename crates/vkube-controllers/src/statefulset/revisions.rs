//! A StatefulSet's history as ControllerRevisions (upstream's `pkg/controller/history` as the
//! StatefulSet controller uses it): each revision holds the patch that restores the pod template
//! (`{"spec":{"template":{…,"$patch":"replace"}}}`), is named `<set>-<hash>` after a hash of that
//! data (and of `status.collisionCount` when names collide), is labelled with the template's labels
//! and `controller.kubernetes.io/hash`, carries the set's annotations (so `kubernetes.io/change-cause`
//! shows in `kubectl rollout history`) and a `revision` number that grows with each new template.

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::REVISION_LABEL;
use crate::pods::{controller_of, controller_ref, selector_query};
use crate::{Error, Result};

pub(super) const HASH_LABEL: &str = "controller.kubernetes.io/hash";

/// The data upstream stores: a strategic merge patch that replaces the set's pod template,
/// encoded as Go encodes it (see [`go_template`]), so that the same template makes the same
/// data, hash and revision name as upstream's controller.
pub(super) fn patch_of(template: &PodTemplateSpec) -> Value {
    let mut template = go_template(template);
    template["$patch"] = json!("replace");
    json!({"spec": {"template": template}})
}

/// The template as Go's `encoding/json` writes a `PodTemplateSpec`: what k8s-openapi writes, plus
/// the fields Go writes although empty (`omitempty` leaves structs alone): the metadata's
/// `creationTimestamp` (null) and each container's `resources` (`{}`).
fn go_template(template: &PodTemplateSpec) -> Value {
    let mut t = serde_json::to_value(template).unwrap_or_else(|_| json!({}));
    let Some(obj) = t.as_object_mut() else {
        return t;
    };
    let meta = obj.entry("metadata").or_insert_with(|| json!({}));
    if let Some(meta) = meta.as_object_mut() {
        meta.entry("creationTimestamp").or_insert(Value::Null);
    }
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        for list in ["initContainers", "containers", "ephemeralContainers"] {
            let containers = spec.get_mut(list).and_then(Value::as_array_mut);
            for c in containers
                .into_iter()
                .flatten()
                .filter_map(Value::as_object_mut)
            {
                c.entry("resources").or_insert_with(|| json!({}));
            }
        }
    }
    t
}

/// Compact JSON with sorted keys and Go's escapes of `<`, `>`, `&`, U+2028 and U+2029 (only
/// ever inside strings), as Go's `json.Marshal` of a map writes it.
fn go_json(value: &Value) -> String {
    value
        .to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// The pod template a revision restores (upstream's `ApplyRevision`: the patch replaces the
/// template whole).
pub(super) fn template_of(revision: &ControllerRevision) -> Result<PodTemplateSpec> {
    let mut template = revision
        .data
        .as_ref()
        .map(|d| d.0["spec"]["template"].clone())
        .unwrap_or(Value::Null);
    if let Some(t) = template.as_object_mut() {
        t.remove("$patch");
    }
    serde_json::from_value(template).map_err(|e| {
        Error::Invalid(format!(
            "controllerrevision {} holds no pod template: {e}",
            revision.metadata.name.as_deref().unwrap_or_default()
        ))
    })
}

/// FNV-1 (32 bits) of the data's JSON and of the collision count, spelled as upstream's
/// `rand.SafeEncodeString` spells the decimal number (no vowels, no look-alike digits).
pub(super) fn hash(data: &Value, collision_count: Option<i32>) -> String {
    let mut h: u32 = 0x811c_9dc5;
    let mut write = |bytes: &[u8]| {
        for b in bytes {
            h = h.wrapping_mul(0x0100_0193);
            h ^= u32::from(*b);
        }
    };
    write(go_json(data).as_bytes());
    if let Some(c) = collision_count {
        write(c.to_string().as_bytes());
    }
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

/// `<prefix>-<hash>`, the prefix cut to 223 bytes so the name fits 253.
fn revision_name(prefix: &str, hash: &str) -> String {
    let mut end = prefix.len().min(223);
    while !prefix.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}-{hash}", &prefix[..end])
}

/// The revision the set's template would make, numbered `revision` (upstream's `newRevision`).
pub(super) fn new_revision(
    set: &StatefulSet,
    revision: i64,
    collision_count: i32,
) -> ControllerRevision {
    let template = set
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let data = patch_of(&template);
    let hash = hash(&data, Some(collision_count));
    let mut labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(HASH_LABEL.into(), hash.clone());
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(revision_name(
                set.metadata.name.as_deref().unwrap_or_default(),
                &hash,
            )),
            namespace: set.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: set.metadata.annotations.clone(),
            owner_references: Some(vec![controller_ref(set)]),
            ..ObjectMeta::default()
        },
        data: Some(RawExtension(data)),
        revision,
    }
}

fn data(revision: &ControllerRevision) -> Option<&Value> {
    revision.data.as_ref().map(|d| &d.0)
}

/// Upstream's `EqualRevision`: different hash labels mean different revisions; otherwise the
/// data decides, compared as the templates they restore (whatever the API did to nulls and empty
/// objects on the way).
fn equal(a: &ControllerRevision, b: &ControllerRevision) -> bool {
    let label = |r: &ControllerRevision| {
        r.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(HASH_LABEL))
            .and_then(|h| h.parse::<u32>().ok())
    };
    if let (Some(x), Some(y)) = (label(a), label(b))
        && x != y
    {
        return false;
    }
    match (template_of(a), template_of(b)) {
        (Ok(x), Ok(y)) => go_template(&x) == go_template(&y),
        _ => data(a) == data(b),
    }
}

/// The set's revisions, oldest first: those it controls and the orphans its selector matches,
/// which it adopts (unless it is being deleted). Ordered by revision number, then creation time
/// and name (upstream's `SortControllerRevisions`).
pub(super) async fn list(
    api: &Api<ControllerRevision>,
    set: &StatefulSet,
) -> Result<Vec<ControllerRevision>> {
    let selector = set
        .spec
        .as_ref()
        .map(|s| &s.selector)
        .cloned()
        .unwrap_or_default();
    let query = selector_query(&selector)?;
    let uid = set.metadata.uid.clone().unwrap_or_default();
    let listed = api.list(&ListParams::default().labels(&query)).await?;
    let mut revisions = Vec::new();
    for revision in listed.items {
        match controller_of(&revision.metadata) {
            Some(r) if r.uid == uid => revisions.push(revision),
            Some(_) => {}
            None if set.metadata.deletion_timestamp.is_none() => {
                let mut refs = revision
                    .metadata
                    .owner_references
                    .clone()
                    .unwrap_or_default();
                refs.push(controller_ref(set));
                let patch = json!({"metadata": {"ownerReferences": refs,
                    "uid": revision.metadata.uid, "resourceVersion": revision.metadata.resource_version}});
                let name = revision.metadata.name.clone().unwrap_or_default();
                revisions.push(
                    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await?,
                );
            }
            None => revisions.push(revision),
        }
    }
    sort(&mut revisions);
    Ok(revisions)
}

fn sort(revisions: &mut [ControllerRevision]) {
    revisions.sort_by(|a, b| {
        (a.revision, &a.metadata.creation_timestamp, &a.metadata.name).cmp(&(
            b.revision,
            &b.metadata.creation_timestamp,
            &b.metadata.name,
        ))
    });
}

/// The current and update revisions and the collision count (upstream's
/// `getStatefulSetRevisions`): the update revision is the last one if it holds the set's
/// template, else an earlier one that does, renumbered as the newest (a rollback), else a new
/// one. The current revision is `status.currentRevision`'s, or the update revision when there is
/// none yet.
pub(super) async fn current_and_update(
    api: &Api<ControllerRevision>,
    set: &StatefulSet,
    revisions: &mut [ControllerRevision],
) -> Result<(ControllerRevision, ControllerRevision, i32)> {
    let status = set.status.clone().unwrap_or_default();
    let mut collision_count = status.collision_count.unwrap_or(0);
    let next = revisions.last().map_or(1, |r| r.revision + 1);
    let wanted = new_revision(set, next, collision_count);
    let last_equal = revisions.iter().rposition(|r| equal(r, &wanted));
    let update = match last_equal {
        Some(i) if i + 1 == revisions.len() => revisions[i].clone(),
        Some(i) => {
            let name = revisions[i].metadata.name.clone().unwrap_or_default();
            let patch = json!({"revision": next});
            let updated = api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            revisions[i] = updated.clone();
            updated
        }
        None => loop {
            let mut attempt = wanted.clone();
            let hash = hash(data(&wanted).unwrap_or(&Value::Null), Some(collision_count));
            let prefix = set.metadata.name.as_deref().unwrap_or_default();
            attempt.metadata.name = Some(revision_name(prefix, &hash));
            match api.create(&PostParams::default(), &attempt).await {
                Ok(created) => break created,
                Err(kube::Error::Api(s)) if s.code == 409 && s.reason == "AlreadyExists" => {
                    let name = attempt.metadata.name.clone().unwrap_or_default();
                    let existing = api.get(&name).await?;
                    if equal(&existing, &attempt) {
                        break existing;
                    }
                    collision_count = collision_count.saturating_add(1);
                }
                Err(err) => return Err(err.into()),
            }
        },
    };
    let current = status
        .current_revision
        .as_deref()
        .and_then(|name| {
            revisions
                .iter()
                .find(|r| r.metadata.name.as_deref() == Some(name))
        })
        .cloned()
        .unwrap_or_else(|| update.clone());
    Ok((current, update, collision_count))
}

/// Deletes the oldest revisions that are not live (the current and update revisions and those of
/// the set's pods) beyond `revisionHistoryLimit` (upstream's `truncateHistory`).
pub(super) async fn truncate(
    api: &Api<ControllerRevision>,
    set: &StatefulSet,
    pods: &[Pod],
    revisions: &[ControllerRevision],
    live: &[&str],
) -> Result<()> {
    let limit = set
        .spec
        .as_ref()
        .and_then(|s| s.revision_history_limit)
        .unwrap_or(10);
    let pod_revisions: Vec<&str> = pods
        .iter()
        .filter_map(|p| p.metadata.labels.as_ref()?.get(REVISION_LABEL))
        .map(String::as_str)
        .collect();
    let history: Vec<&ControllerRevision> = revisions
        .iter()
        .filter(|r| {
            let name = r.metadata.name.as_deref().unwrap_or_default();
            !live.contains(&name) && !pod_revisions.contains(&name)
        })
        .collect();
    let Ok(limit) = usize::try_from(limit) else {
        return Ok(());
    };
    if history.len() <= limit {
        return Ok(());
    }
    for revision in &history[..history.len() - limit] {
        let name = revision.metadata.name.as_deref().unwrap_or_default();
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_not_found() => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Upstream's own vector (stateful_set_compatibility_test.go): a 1.33 set's defaulted
    /// template, its revision data and the name `test-c77f6d978`.
    #[test]
    fn revisions_match_upstream_byte_for_byte() {
        let template: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"annotations": {"test": "value"}, "labels": {"app": "foo"}},
            "spec": {
                "containers": [{"image": "test", "imagePullPolicy": "Always", "name": "test",
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File"}],
                "dnsPolicy": "ClusterFirst", "restartPolicy": "Always",
                "schedulerName": "default-scheduler", "securityContext": {},
                "terminationGracePeriodSeconds": 30
            }
        }))
        .unwrap();
        let data = patch_of(&template);
        assert_eq!(
            go_json(&data),
            r#"{"spec":{"template":{"$patch":"replace","metadata":{"annotations":{"test":"value"},"creationTimestamp":null,"labels":{"app":"foo"}},"spec":{"containers":[{"image":"test","imagePullPolicy":"Always","name":"test","resources":{},"terminationMessagePath":"/dev/termination-log","terminationMessagePolicy":"File"}],"dnsPolicy":"ClusterFirst","restartPolicy":"Always","schedulerName":"default-scheduler","securityContext":{},"terminationGracePeriodSeconds":30}}}}"#
        );
        assert_eq!(hash(&data, Some(0)), "c77f6d978");
        assert_eq!(go_json(&json!("a<b>&c")), r#""a\u003cb\u003e\u0026c""#);
    }

    #[test]
    fn hashes_spell_as_upstream() {
        // FNV-1 32 of "a" is 0x050c5d7e = 84696446; its digits map through upstream's alphabet.
        let mut h: u32 = 0x811c_9dc5;
        h = h.wrapping_mul(0x0100_0193);
        h ^= u32::from(b'a');
        assert_eq!(h, 0x050c_5d7e);
        let spelled = hash(&json!("x"), None);
        assert!(
            spelled
                .chars()
                .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c))
        );
        assert_ne!(hash(&json!("x"), Some(0)), hash(&json!("x"), Some(1)));
        assert_eq!(revision_name("web", "abc"), "web-abc");
        assert_eq!(revision_name(&"a".repeat(300), "h").len(), 225);
    }
}
