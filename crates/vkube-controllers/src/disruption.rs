//! kube-controller-manager's disruption controller: each PodDisruptionBudget's status says how
//! many of its pods are healthy, how many must stay so, and how many may be evicted now. The
//! eviction subresource reads exactly that (and refuses while `observedGeneration` lags), so
//! without this controller `kubectl drain` could never evict a pod a budget covers.
//!
//! As upstream: the pods are those in the budget's namespace that its selector matches (an empty
//! selector matches all of them). `minAvailable` as a number needs no controller; a percentage,
//! and any `maxUnavailable`, count the pods' controllers' `spec.replicas` (ReplicationController,
//! ReplicaSet or the Deployment that owns it, StatefulSet). A pod is healthy when it is Ready and
//! not being deleted, unless it was evicted in the last two minutes (`disruptedPods`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;

use crate::pods::{controller_of, is_ready, selects};
use crate::{Context, Error, Result};

/// How long an eviction's entry in `disruptedPods` keeps its pod out of the healthy count.
const DELETION_TIMEOUT: Duration = Duration::from_secs(120);

pub(crate) async fn run(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let controller = Controller::new(
        Api::<PodDisruptionBudget>::all(client.clone()),
        Default::default(),
    );
    let budgets = controller.store();
    // A pod's change concerns every budget in its namespace that selects it.
    let controller = controller.watches(Api::<Pod>::all(client), Default::default(), move |pod| {
        let namespace = pod.metadata.namespace.clone();
        budgets
            .state()
            .into_iter()
            .filter(|b| b.metadata.namespace == namespace)
            .filter(|b| {
                b.spec
                    .as_ref()
                    .and_then(|s| s.selector.as_ref())
                    .is_some_and(|s| selects(s, pod.metadata.labels.as_ref()))
            })
            .map(|b| ObjectRef::from_obj(b.as_ref()))
            .collect::<Vec<_>>()
    });
    crate::runner::drive("disruption", controller, ctx, reconcile).await;
}

/// The scale that `pod`'s controller asks for, and that controller's uid, as upstream's
/// `getExpectedScale` finds them; `None` when the pod has no controller of a known kind.
async fn controller_scale(client: &kube::Client, pod: &Pod) -> Result<Option<(String, i32)>> {
    let Some(owner) = controller_of(&pod.metadata) else {
        return Ok(None);
    };
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let found = match (owner.api_version.as_str(), owner.kind.as_str()) {
        ("v1", "ReplicationController") => {
            let rc = get_owner::<ReplicationController>(client, namespace, owner).await?;
            rc.map(|rc| {
                (
                    owner.uid.clone(),
                    rc.spec.and_then(|s| s.replicas).unwrap_or(1),
                )
            })
        }
        ("apps/v1", "StatefulSet") => {
            let set = get_owner::<StatefulSet>(client, namespace, owner).await?;
            set.map(|s| {
                (
                    owner.uid.clone(),
                    s.spec.and_then(|s| s.replicas).unwrap_or(1),
                )
            })
        }
        ("apps/v1", "ReplicaSet") => {
            let Some(rs) = get_owner::<ReplicaSet>(client, namespace, owner).await? else {
                return Ok(None);
            };
            // A Deployment's ReplicaSets share its scale: counted once, as the Deployment.
            if let Some(d) = controller_of(&rs.metadata).filter(|d| d.kind == "Deployment") {
                if let Some(dep) = get_owner::<Deployment>(client, namespace, d).await? {
                    let replicas = dep.spec.and_then(|s| s.replicas).unwrap_or(1);
                    return Ok(Some((d.uid.clone(), replicas)));
                }
                return Ok(None);
            }
            Some((
                owner.uid.clone(),
                rs.spec.and_then(|s| s.replicas).unwrap_or(1),
            ))
        }
        _ => None,
    };
    Ok(found)
}

/// The object `owner` names, if it is still that object (same uid).
async fn get_owner<K>(
    client: &kube::Client,
    namespace: &str,
    owner: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
) -> Result<Option<K>>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let found = api.get_opt(&owner.name).await?;
    Ok(found.filter(|o| o.meta().uid.as_deref() == Some(owner.uid.as_str())))
}

/// `value` of `total`: a number as is, a percentage rounded up (upstream's
/// `GetScaledValueFromIntOrPercent(…, true)`).
fn scaled(value: &IntOrString, total: i32) -> Result<i32, String> {
    match value {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(s) => {
            let percent: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("invalid value for IntOrString: invalid value {s:?}"))?;
            Ok(((percent * i64::from(total) + 99) / 100) as i32)
        }
    }
}

async fn reconcile(pdb: Arc<PodDisruptionBudget>, ctx: Arc<Context>) -> Result<Action> {
    if pdb.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = pdb.metadata.namespace.clone().unwrap_or_default();
    let spec = pdb.spec.clone().unwrap_or_default();
    let pods: Vec<Pod> = match &spec.selector {
        // policy/v1: a missing selector selects nothing, an empty one everything.
        None => Vec::new(),
        Some(selector) => Api::<Pod>::namespaced(ctx.client.clone(), &namespace)
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|p| selects(selector, p.metadata.labels.as_ref()))
            .collect(),
    };
    let now = ctx.clock.now();
    let computed = expected_and_desired(&ctx.client, &spec, &pods).await?;
    let old = pdb.status.clone().unwrap_or_default();
    let mut disrupted = old.disrupted_pods.clone().unwrap_or_default();
    let mut recheck = None;
    let live: BTreeMap<&str, &Pod> = pods
        .iter()
        .map(|p| (p.metadata.name.as_deref().unwrap_or_default(), p))
        .collect();
    disrupted.retain(|name, at| {
        let Some(pod) = live.get(name.as_str()) else {
            return false;
        };
        let until = at.0.checked_add(DELETION_TIMEOUT).unwrap_or(at.0);
        let keep = pod.metadata.deletion_timestamp.is_none() && until > now;
        if keep {
            let wait = Duration::try_from(until.duration_since(now)).unwrap_or_default();
            recheck = Some(recheck.map_or(wait, |r: Duration| r.min(wait)));
        }
        keep
    });
    let healthy = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
        .filter(|p| !disrupted.contains_key(p.metadata.name.as_deref().unwrap_or_default()))
        .count() as i32;
    let mut status = PodDisruptionBudgetStatus {
        observed_generation: pdb.metadata.generation,
        current_healthy: healthy,
        disrupted_pods: Some(disrupted).filter(|d| !d.is_empty()),
        conditions: old.conditions.clone(),
        ..Default::default()
    };
    let (allowed, reason, message) = match computed {
        Ok((expected, desired)) => {
            status.expected_pods = expected;
            status.desired_healthy = desired;
            let allowed = if expected <= 0 {
                0
            } else {
                (healthy - desired).max(0)
            };
            status.disruptions_allowed = allowed;
            let reason = if allowed > 0 {
                "SufficientPods"
            } else {
                "InsufficientPods"
            };
            (allowed > 0, reason, String::new())
        }
        Err(why) => (false, "SyncFailed", why),
    };
    set_condition(
        &mut status,
        allowed,
        reason,
        &message,
        pdb.metadata.generation,
        now,
    );
    if Some(&status) != pdb.status.as_ref() {
        let mut updated = (*pdb).clone();
        updated.status = Some(status);
        let api: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), &namespace);
        api.replace_status(
            pdb.metadata.name.as_deref().unwrap_or_default(),
            &PostParams::default(),
            &updated,
        )
        .await?;
    }
    Ok(recheck.map_or(Action::await_change(), Action::requeue))
}

/// `(expectedPods, desiredHealthy)`, or why they cannot be known (upstream's messages).
async fn expected_and_desired(
    client: &kube::Client,
    spec: &k8s_openapi::api::policy::v1::PodDisruptionBudgetSpec,
    pods: &[Pod],
) -> Result<Result<(i32, i32), String>> {
    let needs_scale = match (&spec.max_unavailable, &spec.min_available) {
        (Some(_), _) => true,
        (None, Some(IntOrString::String(_))) => true,
        (None, Some(IntOrString::Int(_))) => false,
        // Neither: validation refuses it; nothing may be disrupted.
        (None, None) => return Ok(Ok((pods.len() as i32, pods.len() as i32))),
    };
    if !needs_scale {
        let Some(IntOrString::Int(min)) = &spec.min_available else {
            unreachable!("checked above");
        };
        return Ok(Ok((pods.len() as i32, *min)));
    }
    let mut seen = BTreeSet::new();
    let mut expected = 0;
    for pod in pods {
        match controller_scale(client, pod).await {
            Ok(Some((uid, replicas))) => {
                if seen.insert(uid) {
                    expected += replicas;
                }
            }
            Ok(None) => {
                let name = pod.metadata.name.as_deref().unwrap_or_default();
                return Ok(Err(format!("found no controllers for pod {name:?}")));
            }
            Err(Error::Api(err)) => return Err(err.into()),
            Err(err) => return Ok(Err(err.to_string())),
        }
    }
    let result = match (&spec.max_unavailable, &spec.min_available) {
        (Some(max), _) => scaled(max, expected).map(|m| (expected, (expected - m).max(0))),
        (None, Some(min)) => scaled(min, expected).map(|m| (expected, m)),
        (None, None) => unreachable!("handled above"),
    };
    Ok(result)
}

fn set_condition(
    status: &mut PodDisruptionBudgetStatus,
    allowed: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: jiff::Timestamp,
) {
    let value = if allowed { "True" } else { "False" };
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    if let Some(c) = conditions
        .iter_mut()
        .find(|c| c.type_ == "DisruptionAllowed")
    {
        if c.status != value {
            c.last_transition_time = Time(now);
        }
        c.status = value.into();
        c.reason = reason.into();
        c.message = message.into();
        c.observed_generation = generation;
        return;
    }
    conditions.push(Condition {
        type_: "DisruptionAllowed".into(),
        status: value.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: Time(now),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeApi;
    use serde_json::json;

    const PODS: &str = "/api/v1/namespaces/ns/pods";
    const PDBS: &str = "/apis/policy/v1/namespaces/ns/poddisruptionbudgets";
    const RSS: &str = "/apis/apps/v1/namespaces/ns/replicasets";

    fn pod(fake: &FakeApi, name: &str, ready: bool, owner: Option<&str>) {
        let owners = owner.map_or(json!([]), |o| {
            json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": o, "uid": format!("uid-{o}"), "controller": true}])
        });
        fake.put(PODS, json!({"metadata": {"name": name, "labels": {"app": "web"}, "ownerReferences": owners},
            "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}}));
    }

    async fn sync(fake: &FakeApi, name: &str) -> PodDisruptionBudgetStatus {
        let ctx = Arc::new(Context::new(fake.client()));
        let pdb: PodDisruptionBudget =
            serde_json::from_value(fake.get(PDBS, name).unwrap()).unwrap();
        reconcile(Arc::new(pdb), ctx).await.unwrap();
        let pdb: PodDisruptionBudget =
            serde_json::from_value(fake.get(PDBS, name).unwrap()).unwrap();
        pdb.status.unwrap()
    }

    #[tokio::test]
    async fn min_available_as_a_number_counts_ready_pods() {
        let fake = FakeApi::default();
        pod(&fake, "a", true, None);
        pod(&fake, "b", true, None);
        pod(&fake, "c", false, None);
        fake.put(PDBS, json!({"metadata": {"name": "p"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}}));
        let s = sync(&fake, "p").await;
        assert_eq!(
            (
                s.expected_pods,
                s.desired_healthy,
                s.current_healthy,
                s.disruptions_allowed
            ),
            (3, 1, 2, 1)
        );
        assert_eq!(s.observed_generation, Some(1));
        let c = &s.conditions.unwrap()[0];
        assert_eq!(
            (c.type_.as_str(), c.status.as_str(), c.reason.as_str()),
            ("DisruptionAllowed", "True", "SufficientPods")
        );
    }

    #[tokio::test]
    async fn max_unavailable_counts_the_controllers_scale() {
        let fake = FakeApi::default();
        fake.put(RSS, json!({"metadata": {"name": "rs"}, "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}}}}));
        for (name, ready) in [("a", true), ("b", true), ("c", true)] {
            pod(&fake, name, ready, Some("rs"));
        }
        fake.put(PDBS, json!({"metadata": {"name": "p"}, "spec": {"maxUnavailable": "25%", "selector": {"matchLabels": {"app": "web"}}}}));
        let s = sync(&fake, "p").await;
        // 25% of 4 rounds up to 1: 3 must stay healthy, 3 are: nothing may go.
        assert_eq!(
            (
                s.expected_pods,
                s.desired_healthy,
                s.current_healthy,
                s.disruptions_allowed
            ),
            (4, 3, 3, 0)
        );
        assert_eq!(s.conditions.unwrap()[0].reason, "InsufficientPods");
    }

    #[tokio::test]
    async fn a_percentage_without_controllers_fails_with_upstreams_message() {
        let fake = FakeApi::default();
        pod(&fake, "a", true, None);
        fake.put(
            PDBS,
            json!({"metadata": {"name": "p"}, "spec": {"minAvailable": "50%", "selector": {}}}),
        );
        let s = sync(&fake, "p").await;
        assert_eq!(s.disruptions_allowed, 0);
        let c = &s.conditions.unwrap()[0];
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "SyncFailed")
        );
        assert_eq!(c.message, "found no controllers for pod \"a\"");
    }

    #[tokio::test]
    async fn recently_evicted_pods_are_not_healthy_and_gone_ones_are_forgotten() {
        let fake = FakeApi::default();
        pod(&fake, "a", true, None);
        pod(&fake, "b", true, None);
        let recent = jiff::Timestamp::now().to_string();
        fake.put(PDBS, json!({"metadata": {"name": "p"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}},
            "status": {"disruptedPods": {"a": recent, "gone": recent}}}));
        let s = sync(&fake, "p").await;
        assert_eq!((s.current_healthy, s.disruptions_allowed), (1, 0));
        assert_eq!(s.disrupted_pods.unwrap().keys().collect::<Vec<_>>(), ["a"]);
    }
}
