//! A StatefulSet's PersistentVolumeClaims: one per `volumeClaimTemplates` entry and ordinal,
//! named `<template>-<set>-<ordinal>`, made before the pod that mounts it, and the
//! ownerReferences that carry `persistentVolumeClaimRetentionPolicy` (upstream's
//! `isClaimOwnerUpToDate` and `updateClaimOwnerRefForSetAndPod`): the garbage collector deletes
//! a claim owned by the set when the set goes (`whenDeleted: Delete`) and one owned by its pod
//! when a scaled-down pod goes (`whenScaled: Delete`).

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, PostParams};

use super::{Sync, in_ordinal_range, ordinal};
use crate::pods::controller_ref;
use crate::{Error, Result};

const RETAIN: &str = "Retain";
const DELETE: &str = "Delete";

/// `whenDeleted`, `whenScaled`; both `Retain` when the set has no policy.
fn policy(set: &StatefulSet) -> (&str, &str) {
    let p = set
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_claim_retention_policy.as_ref());
    (
        p.and_then(|p| p.when_deleted.as_deref()).unwrap_or(RETAIN),
        p.and_then(|p| p.when_scaled.as_deref()).unwrap_or(RETAIN),
    )
}

fn templates(set: &StatefulSet) -> &[PersistentVolumeClaim] {
    set.spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.as_deref())
        .unwrap_or_default()
}

fn set_name(set: &StatefulSet) -> &str {
    set.metadata.name.as_deref().unwrap_or_default()
}

/// `<template>-<set>-<ordinal>`.
pub(super) fn claim_name(template: &PersistentVolumeClaim, set: &str, ordinal: i32) -> String {
    let template = template.metadata.name.as_deref().unwrap_or_default();
    format!("{template}-{set}-{ordinal}")
}

/// The claims of ordinal `ordinal`, with the name of the template each comes from: the
/// template's metadata and spec, the set's namespace, and the set's `matchLabels` over the
/// template's labels.
pub(super) fn claims_for(set: &StatefulSet, ordinal: i32) -> Vec<(String, PersistentVolumeClaim)> {
    let match_labels = set
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default();
    templates(set)
        .iter()
        .map(|t| {
            let mut labels = t.metadata.labels.clone().unwrap_or_default();
            labels.extend(match_labels.clone());
            let claim = PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(claim_name(t, set_name(set), ordinal)),
                    namespace: set.metadata.namespace.clone(),
                    labels: Some(labels),
                    annotations: t.metadata.annotations.clone(),
                    finalizers: t.metadata.finalizers.clone(),
                    ..ObjectMeta::default()
                },
                spec: t.spec.clone(),
                status: None,
            };
            (t.metadata.name.clone().unwrap_or_default(), claim)
        })
        .collect()
}

/// The pod's volumes name every claim of its ordinal (upstream's `storageMatches`).
pub(super) fn storage_matches(set: &StatefulSet, pod: &Pod) -> bool {
    let ordinal = ordinal(pod);
    if ordinal < 0 {
        return false;
    }
    let volumes = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or_default();
    templates(set).iter().all(|t| {
        volumes
            .iter()
            .find(|v| v.name == t.metadata.name.as_deref().unwrap_or_default())
            .and_then(|v| v.persistent_volume_claim.as_ref())
            .is_some_and(|c| c.claim_name == claim_name(t, set_name(set), ordinal))
    })
}

/// Points the pod's volumes named after the templates to its claims (upstream's
/// `updateStorage`): one volume per template, then the pod's other volumes.
pub(super) fn update_storage(set: &StatefulSet, pod: &mut Pod, ordinal: i32) {
    let claims = claims_for(set, ordinal);
    let spec = pod.spec.get_or_insert_with(Default::default);
    let current = spec.volumes.take().unwrap_or_default();
    let mut volumes: Vec<Volume> = claims
        .iter()
        .map(|(template, claim)| Volume {
            name: template.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.metadata.name.clone().unwrap_or_default(),
                read_only: Some(false),
            }),
            ..Volume::default()
        })
        .collect();
    volumes.extend(
        current
            .into_iter()
            .filter(|v| !claims.iter().any(|(t, _)| *t == v.name)),
    );
    spec.volumes = (!volumes.is_empty()).then_some(volumes);
}

fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.is_not_found())
}

/// An error retried with backoff that no API call returned.
pub(super) fn retry(message: String) -> Error {
    Error::Api(kube::Error::Service(message.into()))
}

/// Creates the claims of the pod's ordinal that do not exist (upstream's
/// `createPersistentVolumeClaims`), with an event each; a claim being deleted is an error until
/// it is gone.
pub(super) async fn create(sync: &Sync<'_>, pod: &Pod) -> Result<()> {
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    let mut first_error = None;
    for (_, claim) in claims_for(sync.set, ordinal(pod)) {
        let name = claim.metadata.name.clone().unwrap_or_default();
        match sync.claims.get_opt(&name).await {
            Ok(None) => match sync.claims.create(&PostParams::default(), &claim).await {
                Ok(_) => sync.claim_event(&name, pod_name, None).await,
                Err(err) => {
                    let exists = matches!(&err, kube::Error::Api(s) if s.reason == "AlreadyExists");
                    if !exists {
                        sync.claim_event(&name, pod_name, Some(&err)).await;
                    }
                    first_error.get_or_insert(Error::Api(err));
                }
            },
            Ok(Some(existing)) if existing.metadata.deletion_timestamp.is_some() => {
                first_error.get_or_insert(retry(format!("pvc {name} is being deleted")));
            }
            Ok(Some(_)) => {}
            Err(err) => {
                sync.claim_event(&name, pod_name, Some(&err)).await;
                first_error.get_or_insert(Error::Api(err));
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn pod_ref(pod: &Pod) -> OwnerReference {
    controller_ref(pod)
}

/// `r` names `kind` `name` (whatever its uid).
fn names(r: &OwnerReference, api_version: &str, kind: &str, name: Option<&str>) -> bool {
    r.api_version == api_version && r.kind == kind && Some(r.name.as_str()) == name
}

fn names_set(r: &OwnerReference, set: &StatefulSet) -> bool {
    names(r, "apps/v1", "StatefulSet", set.metadata.name.as_deref())
}

fn names_pod(r: &OwnerReference, pod: &Pod) -> bool {
    names(r, "v1", "Pod", pod.metadata.name.as_deref())
}

fn uid(meta: &ObjectMeta) -> &str {
    meta.uid.as_deref().unwrap_or_default()
}

fn refs(claim: &PersistentVolumeClaim) -> &[OwnerReference] {
    claim
        .metadata
        .owner_references
        .as_deref()
        .unwrap_or_default()
}

fn has_owner_ref(claim: &PersistentVolumeClaim, owner: &ObjectMeta) -> bool {
    refs(claim).iter().any(|r| r.uid == uid(owner))
}

/// The first reference naming the object has another uid: a previous object of that name.
fn has_stale_ref(
    claim: &PersistentVolumeClaim,
    named: impl Fn(&OwnerReference) -> bool,
    owner: &ObjectMeta,
) -> bool {
    refs(claim)
        .iter()
        .find(|r| named(r))
        .is_some_and(|r| r.uid != uid(owner))
}

/// Another controller manages the claim, or a reference to the set or pod has a stale uid (upstream's
/// `hasUnexpectedController`); never under a Retain/Retain policy.
fn has_unexpected_controller(claim: &PersistentVolumeClaim, set: &StatefulSet, pod: &Pod) -> bool {
    if policy(set) == (RETAIN, RETAIN) {
        return false;
    }
    refs(claim).iter().any(|r| {
        if names_set(r, set) {
            r.uid != uid(&set.metadata)
        } else if names_pod(r, pod) {
            r.uid != uid(&pod.metadata)
        } else {
            r.controller == Some(true)
        }
    })
}

fn has_non_controller_owner(claim: &PersistentVolumeClaim, set: &StatefulSet, pod: &Pod) -> bool {
    refs(claim).iter().any(|r| {
        (r.uid == uid(&set.metadata) || r.uid == uid(&pod.metadata)) && r.controller != Some(true)
    })
}

/// The claim's references agree with the retention policy (upstream's `isClaimOwnerUpToDate`):
/// Retain/Retain none; whenDeleted Delete the set's; whenScaled Delete the pod's once the pod is
/// out of the ordinal range (and then not the set's).
pub(super) fn owner_up_to_date(
    claim: &PersistentVolumeClaim,
    set: &StatefulSet,
    pod: &Pod,
) -> bool {
    if has_stale_ref(claim, |r| names_set(r, set), &set.metadata)
        || has_stale_ref(claim, |r| names_pod(r, pod), &pod.metadata)
    {
        // Managed by an earlier set or pod of the same name: left alone.
        return true;
    }
    let on_set = has_owner_ref(claim, &set.metadata);
    let on_pod = has_owner_ref(claim, &pod.metadata);
    if has_unexpected_controller(claim, set, pod) {
        return !(on_set || on_pod);
    }
    if has_non_controller_owner(claim, set, pod) {
        return false;
    }
    let scaled_down = !in_ordinal_range(pod, set);
    match policy(set) {
        (DELETE, RETAIN) => on_set && !on_pod,
        (RETAIN, DELETE) => !on_set && scaled_down == on_pod,
        (DELETE, DELETE) => scaled_down != on_set && scaled_down == on_pod,
        // Retain/Retain, and an unknown policy treated as Retain.
        _ => !on_set && !on_pod,
    }
}

/// The claim's references as the policy wants them (upstream's
/// `updateClaimOwnerRefForSetAndPod`): the set's and pod's references scrubbed, then added back
/// as controller references where the policy says.
pub(super) fn owner_refs_for_policy(
    claim: &PersistentVolumeClaim,
    set: &StatefulSet,
    pod: &Pod,
) -> Vec<OwnerReference> {
    let unexpected = has_unexpected_controller(claim, set, pod);
    let mut refs: Vec<OwnerReference> = refs(claim)
        .iter()
        .filter(|r| !names_set(r, set) && !names_pod(r, pod))
        .cloned()
        .collect();
    if unexpected {
        return refs;
    }
    let scaled_down = !in_ordinal_range(pod, set);
    let (when_deleted, when_scaled) = policy(set);
    let known = [RETAIN, DELETE];
    if !known.contains(&when_deleted) || !known.contains(&when_scaled) {
        return refs;
    }
    if when_scaled == DELETE && scaled_down {
        refs.push(pod_ref(pod));
    }
    if when_deleted == DELETE && !(when_scaled == DELETE && scaled_down) {
        refs.push(controller_ref(set));
    }
    refs
}

/// Every existing claim of the pod agrees with the policy (upstream's `ClaimsMatchRetentionPolicy`);
/// missing claims are left to a later sync.
pub(super) async fn match_policy(
    api: &Api<PersistentVolumeClaim>,
    set: &StatefulSet,
    pod: &Pod,
) -> Result<bool> {
    for (_, claim) in claims_for(set, ordinal(pod)) {
        let name = claim.metadata.name.unwrap_or_default();
        if let Some(claim) = api.get_opt(&name).await?
            && !owner_up_to_date(&claim, set, pod)
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Brings the references of the pod's existing claims in line with the policy (upstream's
/// `UpdatePodClaimForRetentionPolicy`).
pub(super) async fn update_for_policy(
    api: &Api<PersistentVolumeClaim>,
    set: &StatefulSet,
    pod: &Pod,
) -> Result<()> {
    for (_, claim) in claims_for(set, ordinal(pod)) {
        let name = claim.metadata.name.unwrap_or_default();
        let Some(claim) = api.get_opt(&name).await? else {
            continue;
        };
        if has_unexpected_controller(&claim, set, pod) {
            tracing::info!(claim = %name, "a conflicting controller owns the claim: its retention policy is ignored");
        }
        if owner_up_to_date(&claim, set, pod) {
            continue;
        }
        // An update, as upstream (its role may not patch claims); a claim changed meanwhile is a
        // conflict, retried.
        let mut updated = claim.clone();
        let refs = owner_refs_for_policy(&claim, set, pod);
        updated.metadata.owner_references = (!refs.is_empty()).then_some(refs);
        match api.replace(&name, &PostParams::default(), &updated).await {
            Ok(_) => {}
            Err(err) if is_not_found(&err) => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(())
}

/// Under `whenScaled: Delete`, a claim that still refers to an earlier pod of this name waits
/// for the garbage collector: no pod is made over it (upstream's `PodClaimIsStale`).
pub(super) async fn is_stale(
    api: &Api<PersistentVolumeClaim>,
    set: &StatefulSet,
    pod: &Pod,
) -> Result<bool> {
    if policy(set).1 == RETAIN {
        return Ok(false);
    }
    for (_, claim) in claims_for(set, ordinal(pod)) {
        let name = claim.metadata.name.unwrap_or_default();
        if let Some(claim) = api.get_opt(&name).await?
            && has_stale_ref(&claim, |r| names_pod(r, pod), &pod.metadata)
        {
            return Ok(true);
        }
    }
    Ok(false)
}
