//! What every pod-owning controller shares: label selectors, controller references, pods made
//! from a template, readiness and availability, and upstream's claiming of pods (orphans that
//! match are adopted, owned pods that no longer match are released).

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::Resource;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

use crate::{Error, Result};

/// A selector as the `labelSelector` query parameter spells it. An empty selector matches
/// everything, as upstream's `LabelSelectorAsSelector`.
pub fn selector_query(selector: &LabelSelector) -> Result<String> {
    let mut terms = Vec::new();
    for (k, v) in selector.match_labels.iter().flatten() {
        terms.push(format!("{k}={v}"));
    }
    for e in selector.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default();
        terms.push(match e.operator.as_str() {
            "In" if !values.is_empty() => format!("{} in ({})", e.key, values.join(",")),
            "NotIn" if !values.is_empty() => format!("{} notin ({})", e.key, values.join(",")),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            op => {
                return Err(Error::Invalid(format!(
                    "invalid label selector: operator {op:?} with values {values:?}"
                )));
            }
        });
    }
    Ok(terms.join(","))
}

/// Whether `labels` match `selector` (the same rules as [`selector_query`]).
pub fn selects(selector: &LabelSelector, labels: Option<&BTreeMap<String, String>>) -> bool {
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    labels_ok
        && selector.match_expressions.iter().flatten().all(|e| {
            let values = e.values.as_deref().unwrap_or_default();
            match e.operator.as_str() {
                "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
                "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
                "Exists" => labels.contains_key(&e.key),
                "DoesNotExist" => !labels.contains_key(&e.key),
                _ => false,
            }
        })
}

/// The reference that makes `owner` the controller of what it creates.
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    let meta = owner.meta();
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The controller reference of `meta`, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// The controllers of kind `K` a pod event concerns (upstream's `getPodReplicaSets`,
/// `getPodJobs`): its controller if it is a `K`, else (an orphan) every `K` of its namespace
/// whose selector matches it, which may adopt it.
pub fn concerned<K>(
    store: &kube::runtime::reflector::Store<K>,
    pod: &Pod,
    selector: impl Fn(&K) -> Option<LabelSelector>,
) -> Vec<kube::runtime::reflector::ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    use kube::runtime::reflector::ObjectRef;
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    match controller_of(&pod.metadata) {
        Some(r) if r.kind == K::kind(&()) && r.api_version == K::api_version(&()) => {
            vec![ObjectRef::new(&r.name).within(&namespace)]
        }
        Some(_) => Vec::new(),
        None => store
            .state()
            .iter()
            .filter(|o| o.meta().namespace.as_deref() == Some(namespace.as_str()))
            .filter(|o| selector(o).is_some_and(|s| selects(&s, pod.metadata.labels.as_ref())))
            .map(|o| ObjectRef::from_obj(o.as_ref()))
            .collect(),
    }
}

/// A pod as `owner` creates it from `template`: the template's labels, annotations, finalizers
/// and spec, `generateName` (upstream: the owner's name and a dash), and the controller reference.
pub fn from_template(
    template: &PodTemplateSpec,
    owner: OwnerReference,
    generate_name: &str,
) -> Pod {
    let meta = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name.to_string()),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// Not finished and not being deleted (upstream's `IsPodActive`).
pub fn is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    !matches!(phase, Some("Succeeded" | "Failed")) && pod.metadata.deletion_timestamp.is_none()
}

/// The pod's `Ready` condition is `True`.
pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// When the pod's `Ready` condition last became `True`, if it is `True` (`None` for the time
/// when the condition has none: treated as long ago).
pub fn ready_since(pod: &Pod) -> Option<Option<Timestamp>> {
    let condition = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    (condition.status == "True").then(|| condition.last_transition_time.as_ref().map(|t| t.0))
}

/// Ready for at least `min_ready_seconds` at `now` (upstream's `IsPodAvailable`).
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    match ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(None) => false,
        Some(Some(since)) => since
            .checked_add(jiff::SignedDuration::from_secs(min_ready_seconds.into()))
            .is_ok_and(|at| at <= now),
    }
}

/// The pods in `namespace` that `owner` controls, after upstream's claiming: a pod without a
/// controller that `selector` matches is adopted (unless the owner is being deleted), and a pod
/// the owner controls that `selector` no longer matches is released. Pods controlled by others
/// are never touched.
pub async fn claim<K: Resource<DynamicType = ()>>(
    client: &kube::Client,
    owner: &K,
    selector: &LabelSelector,
) -> Result<Vec<Pod>> {
    claim_filtered(client, owner, selector, |_| true).await
}

/// [`claim`] where a pod must also pass `filter` to match (upstream's `ClaimPods` filters: a
/// StatefulSet claims only pods named after it, and releases a pod it controls that is not).
pub async fn claim_filtered<K: Resource<DynamicType = ()>>(
    client: &kube::Client,
    owner: &K,
    selector: &LabelSelector,
    filter: impl Fn(&Pod) -> bool,
) -> Result<Vec<Pod>> {
    let namespace = owner.meta().namespace.clone().unwrap_or_default();
    let uid = owner.meta().uid.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let pods = api.list(&ListParams::default()).await?;
    let deleting = owner.meta().deletion_timestamp.is_some();
    let mut owned = Vec::new();
    for pod in pods.items {
        let matches = selects(selector, pod.metadata.labels.as_ref()) && filter(&pod);
        let name = pod.metadata.name.clone().unwrap_or_default();
        match controller_of(&pod.metadata) {
            Some(r) if r.uid == uid => {
                if matches || pod.metadata.deletion_timestamp.is_some() {
                    owned.push(pod);
                } else if let Err(err) = release(&api, &pod, &uid).await {
                    tracing::debug!(%name, %err, "releasing a pod");
                }
            }
            Some(_) => {}
            None if matches && !deleting && pod.metadata.deletion_timestamp.is_none() => {
                match adopt(&api, &pod, controller_ref(owner)).await {
                    Ok(adopted) => owned.push(adopted),
                    // Gone meanwhile: nothing to count.
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    // Changed meanwhile (409): the sync fails and is retried, as upstream's
                    // ClaimPods fails, rather than go on one pod short and create a replacement
                    // that the adoption then makes one too many.
                    Err(err) => return Err(err.into()),
                }
            }
            None => {}
        }
    }
    Ok(owned)
}

/// Adds the controller reference to an orphan.
async fn adopt(api: &Api<Pod>, pod: &Pod, owner: OwnerReference) -> kube::Result<Pod> {
    let mut refs = pod.metadata.owner_references.clone().unwrap_or_default();
    refs.push(owner);
    set_owners(api, pod, refs).await
}

async fn release(api: &Api<Pod>, pod: &Pod, owner_uid: &str) -> kube::Result<Pod> {
    let mut refs = pod.metadata.owner_references.clone().unwrap_or_default();
    refs.retain(|r| r.uid != owner_uid);
    set_owners(api, pod, refs).await
}

/// Writes `refs` as the pod's owners; the uid and resourceVersion preconditions make sure it is
/// the pod, as it was read.
async fn set_owners(api: &Api<Pod>, pod: &Pod, refs: Vec<OwnerReference>) -> kube::Result<Pod> {
    let patch = json!({"metadata": {"ownerReferences": refs, "uid": pod.metadata.uid,
                       "resourceVersion": pod.metadata.resource_version}});
    api.patch(
        pod.metadata.name.as_deref().unwrap_or_default(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelectorRequirement, Time};

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selectors_match_and_spell_as_upstream() {
        let s = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: Some(vec!["a".into(), "b".into()]),
                },
                LabelSelectorRequirement {
                    key: "canary".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
        };
        assert_eq!(selector_query(&s).unwrap(), "app=web,tier in (a,b),!canary");
        assert!(selects(&s, Some(&labels(&[("app", "web"), ("tier", "b")]))));
        assert!(!selects(
            &s,
            Some(&labels(&[("app", "web"), ("tier", "c")]))
        ));
        assert!(!selects(
            &s,
            Some(&labels(&[("app", "web"), ("tier", "a"), ("canary", "1")]))
        ));
        assert!(selects(&LabelSelector::default(), None));
    }

    #[test]
    fn availability_waits_min_ready_seconds() {
        let since: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let pod = Pod {
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    last_transition_time: Some(Time(since)),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        };
        let later = |s: i64| {
            since
                .checked_add(jiff::SignedDuration::from_secs(s))
                .unwrap()
        };
        assert!(is_ready(&pod));
        assert!(is_available(&pod, 0, since));
        assert!(!is_available(&pod, 10, later(9)));
        assert!(is_available(&pod, 10, later(10)));
        assert!(!is_ready(&Pod::default()));
    }
}
