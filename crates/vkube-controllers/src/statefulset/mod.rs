//! The StatefulSet controller, as upstream's `pkg/controller/statefulset`: pods with stable
//! names `<set>-<ordinal>` (from `spec.ordinals.start`), hostname and subdomain, and claims from
//! `volumeClaimTemplates` made before each pod ([`claims`]); `OrderedReady` creates in ordinal
//! order, each pod waiting for its predecessors to be Running and Ready (and available for
//! `minReadySeconds`), and removes in reverse order one at a time; `Parallel` does both at once.
//! Templates are recorded as ControllerRevisions ([`revisions`]); `RollingUpdate` replaces the
//! pods of an old revision from the highest ordinal down to `partition`, one at a time (or
//! `maxUnavailable` at a time when it is set), and `OnDelete` leaves that to the user. Failed
//! and succeeded pods are deleted and made again. The status goes through the `status`
//! subresource.
//!
//! Where this differs from upstream: pod volumes are not rewritten for an adopted pod whose
//! volumes miss its claims (the API refuses such an update anyway); `maxUnavailable` is honoured
//! whenever it is set (upstream's `MaxUnavailableStatefulSet` gate, off by default in 1.33, ignores
//! it); no events are recorded.

mod claims;
mod revisions;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;

use crate::pods;
use crate::{Context, Error, Result};

pub(crate) const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
pub(crate) const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
pub(crate) const REVISION_LABEL: &str = "controller-revision-hash";
/// Upstream's `MaxBatchSize`: the largest batch of concurrent writes under `Parallel`.
const MAX_BATCH: usize = 500;
/// How soon a set whose pod waits for a stale claim to go is looked at again.
const CLAIM_WAIT: Duration = Duration::from_secs(1);

pub(crate) async fn run(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let controller = Controller::new(
        Api::<StatefulSet>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(Api::<Pod>::all(client), watcher::Config::default());
    crate::runner::drive("statefulset", controller, ctx, reconcile).await;
}

/// One sync of one set, from a fresh read of it.
pub(crate) async fn reconcile(set: Arc<StatefulSet>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = set.metadata.namespace.clone().unwrap_or_default();
    let name = set.metadata.name.clone().unwrap_or_default();
    let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(set) = api.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    Sync::new(&ctx, &set).run().await
}

// Pod names, ordinals and states.

/// The set and ordinal a pod name spells (`<parent>-<digits>`).
fn parent_and_ordinal(name: &str) -> Option<(&str, i32)> {
    let (parent, digits) = name.rsplit_once('-')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((parent, digits.parse().unwrap_or(-1)))
}

/// The pod's ordinal, -1 when its name has none.
fn ordinal(pod: &Pod) -> i32 {
    pod.metadata
        .name
        .as_deref()
        .and_then(parent_and_ordinal)
        .map_or(-1, |(_, o)| o)
}

fn start_ordinal(set: &StatefulSet) -> i32 {
    set.spec
        .as_ref()
        .and_then(|s| s.ordinals.as_ref())
        .and_then(|o| o.start)
        .unwrap_or(0)
}

fn spec_replicas(set: &StatefulSet) -> i32 {
    set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn in_ordinal_range(pod: &Pod, set: &StatefulSet) -> bool {
    let o = ordinal(pod);
    let start = start_ordinal(set);
    o >= start && o < start.saturating_add(spec_replicas(set))
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

fn running_and_ready(pod: &Pod) -> bool {
    phase(pod) == "Running" && pods::is_ready(pod)
}

fn terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

fn revision_of(pod: &Pod) -> &str {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(REVISION_LABEL))
        .map_or("", String::as_str)
}

/// The pod's name, namespace and name label are its set's and ordinal's (upstream's
/// `identityMatches`).
fn identity_matches(set: &StatefulSet, pod: &Pod) -> bool {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    parent_and_ordinal(name).is_some_and(|(p, o)| o >= 0 && Some(p) == set.metadata.name.as_deref())
        && pod.metadata.namespace == set.metadata.namespace
        && pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(POD_NAME_LABEL))
            .map(String::as_str)
            == Some(name)
}

/// A member of the set: a pod read from the API, or one to create.
#[derive(Clone, Debug)]
struct Member {
    pod: Pod,
    created: bool,
}

/// The counts of the status over `members` (upstream's `updateStatus`): pods not yet created and
/// terminating pods count toward no revision.
fn count<'a>(
    status: &mut StatefulSetStatus,
    members: impl Iterator<Item = &'a Member>,
    min_ready: i32,
    now: Timestamp,
    current: &str,
    update: &str,
) {
    let (mut replicas, mut ready, mut available, mut at_current, mut updated) = (0, 0, 0, 0, 0);
    for m in members.filter(|m| m.created) {
        replicas += 1;
        if running_and_ready(&m.pod) {
            ready += 1;
            if pods::is_available(&m.pod, min_ready, now) {
                available += 1;
            }
        }
        if !terminating(&m.pod) {
            let revision = revision_of(&m.pod);
            at_current += i32::from(revision == current);
            updated += i32::from(revision == update);
        }
    }
    let some = |n: i32| (n != 0).then_some(n);
    status.replicas = replicas;
    status.ready_replicas = some(ready);
    status.available_replicas = Some(available);
    status.current_replicas = some(at_current);
    status.updated_replicas = some(updated);
}

/// Runs `f` on `0..n`: in order, stopping at the first that says to stop, when `monotonic`;
/// otherwise in batches of 1, 2, 4, … run at once (upstream's `slowStartBatch`), stopping after
/// a batch with an error. Says whether to stop.
async fn run_for_all<F, Fut>(n: usize, monotonic: bool, f: F) -> Result<bool>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    if monotonic {
        for i in 0..n {
            if f(i).await? {
                return Ok(true);
            }
        }
        return Ok(false);
    }
    let (mut next, mut batch) = (0, 1);
    while next < n {
        let size = batch.min(n - next);
        let results = futures_util::future::join_all((next..next + size).map(&f)).await;
        if let Some(err) = results.into_iter().find_map(Result::err) {
            return Err(err);
        }
        next += size;
        batch = (batch * 2).min(MAX_BATCH);
    }
    Ok(false)
}

struct Sync<'a> {
    ctx: &'a Context,
    set: &'a StatefulSet,
    name: String,
    sets: Api<StatefulSet>,
    pods: Api<Pod>,
    claims: Api<PersistentVolumeClaim>,
    revisions: Api<ControllerRevision>,
    client: kube::Client,
    now: Timestamp,
    min_ready: i32,
    monotonic: bool,
    /// A pod waits for a claim of an earlier pod of its name to be collected: no event of ours
    /// says when, so the set is looked at again soon.
    waiting_for_claims: std::sync::atomic::AtomicBool,
}

impl<'a> Sync<'a> {
    fn new(ctx: &'a Context, set: &'a StatefulSet) -> Self {
        let namespace = set.metadata.namespace.clone().unwrap_or_default();
        let spec = set.spec.as_ref();
        Sync {
            ctx,
            set,
            name: set.metadata.name.clone().unwrap_or_default(),
            sets: Api::namespaced(ctx.client.clone(), &namespace),
            pods: Api::namespaced(ctx.client.clone(), &namespace),
            claims: Api::namespaced(ctx.client.clone(), &namespace),
            revisions: Api::namespaced(ctx.client.clone(), &namespace),
            client: ctx.client.clone(),
            now: ctx.clock.now(),
            min_ready: spec.and_then(|s| s.min_ready_seconds).unwrap_or(0),
            monotonic: spec.and_then(|s| s.pod_management_policy.as_deref()) != Some("Parallel"),
            waiting_for_claims: Default::default(),
        }
    }

    fn available(&self, pod: &Pod) -> bool {
        pods::is_available(pod, self.min_ready, self.now)
    }

    /// Not Running and Ready, terminating, or not yet available (upstream's `isUnavailable`).
    fn unavailable(&self, pod: &Pod) -> bool {
        !running_and_ready(pod) || terminating(pod) || !self.available(pod)
    }

    async fn run(&self) -> Result<Action> {
        let Some(spec) = self.set.spec.as_ref() else {
            return Err(Error::Invalid("a StatefulSet without spec".into()));
        };
        // An invalid selector is not retried until the set changes (upstream drops the key).
        pods::selector_query(&spec.selector)?;
        let mut revisions = revisions::list(&self.revisions, self.set).await?;
        let set_name = self.name.clone();
        let members = pods::claim_filtered(&self.client, self.set, &spec.selector, move |pod| {
            pod.metadata
                .name
                .as_deref()
                .and_then(parent_and_ordinal)
                .is_some_and(|(parent, _)| parent == set_name)
        })
        .await?;

        let (current, update, collision_count) =
            revisions::current_and_update(&self.revisions, self.set, &mut revisions).await?;
        let (status, result) = self
            .update(&current, &update, collision_count, members.clone())
            .await;
        let status_result = self.write_status(status.clone()).await;
        let live = [
            current.metadata.name.as_deref().unwrap_or_default(),
            update.metadata.name.as_deref().unwrap_or_default(),
        ];
        let truncated =
            revisions::truncate(&self.revisions, self.set, &members, &revisions, &live).await;
        result?;
        status_result?;
        truncated?;
        if self
            .waiting_for_claims
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Ok(Action::requeue(CLAIM_WAIT));
        }
        if self.min_ready > 0 && status.available_replicas.unwrap_or(0) != spec_replicas(self.set) {
            let wait = u64::try_from(self.min_ready).unwrap_or(1);
            return Ok(Action::requeue(Duration::from_secs(wait)));
        }
        Ok(Action::await_change())
    }

    /// A new pod for `ordinal` from `template` at `revision` (upstream's `newStatefulSetPod`):
    /// the template's metadata and spec, the controller reference, the identity labels,
    /// hostname and subdomain, and volumes for the claims.
    fn new_pod(&self, template: &PodTemplateSpec, ordinal: i32, revision: &str) -> Pod {
        let mut pod = pods::from_template(
            template,
            pods::controller_ref(self.set),
            &format!("{}-", self.name),
        );
        let name = format!("{}-{ordinal}", self.name);
        pod.metadata.name = Some(name.clone());
        pod.metadata.namespace = self.set.metadata.namespace.clone();
        let labels = pod.metadata.labels.get_or_insert_with(Default::default);
        labels.insert(POD_NAME_LABEL.into(), name.clone());
        labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
        labels.insert(REVISION_LABEL.into(), revision.into());
        let spec = pod.spec.get_or_insert_with(Default::default);
        spec.hostname = Some(name);
        spec.subdomain = self
            .set
            .spec
            .as_ref()
            .and_then(|s| s.service_name.clone())
            .filter(|s| !s.is_empty());
        claims::update_storage(self.set, &mut pod, ordinal);
        pod
    }

    /// Makes the pods agree with the set and says the status they make (upstream's
    /// `updateStatefulSet`): first the replicas in the ordinal range, then the condemned beyond
    /// it, then the rolling update. The status is returned with the error, if any, to be written
    /// regardless.
    async fn update(
        &self,
        current: &ControllerRevision,
        update: &ControllerRevision,
        collision_count: i32,
        pods: Vec<Pod>,
    ) -> (StatefulSetStatus, Result<()>) {
        let current_name = current.metadata.name.clone().unwrap_or_default();
        let update_name = update.metadata.name.clone().unwrap_or_default();
        let mut status = StatefulSetStatus {
            observed_generation: self.set.metadata.generation,
            current_revision: Some(current_name.clone()),
            update_revision: Some(update_name.clone()),
            collision_count: Some(collision_count),
            ..StatefulSetStatus::default()
        };
        let all: Vec<Member> = pods
            .into_iter()
            .map(|pod| Member { pod, created: true })
            .collect();
        count(
            &mut status,
            all.iter(),
            self.min_ready,
            self.now,
            &current_name,
            &update_name,
        );
        let templates = revisions::template_of(current)
            .and_then(|c| revisions::template_of(update).map(|u| (c, u)));
        let (current_template, update_template) = match templates {
            Ok(t) => t,
            Err(err) => return (status, Err(err)),
        };

        let start = start_ordinal(self.set);
        let n = usize::try_from(spec_replicas(self.set)).unwrap_or(0);
        let mut slots: Vec<Option<Member>> = vec![None; n];
        let mut condemned = Vec::new();
        for m in all {
            let o = ordinal(&m.pod);
            match usize::try_from(o.saturating_sub(start)) {
                Ok(i) if o >= start && i < n => slots[i] = Some(m),
                _ if o >= 0 => condemned.push(m),
                _ => {}
            }
        }
        let strategy = self
            .set
            .spec
            .as_ref()
            .and_then(|s| s.update_strategy.as_ref());
        let rolling = strategy
            .and_then(|s| s.type_.as_deref())
            .unwrap_or("RollingUpdate")
            == "RollingUpdate";
        let rolling_update = strategy.and_then(|s| s.rolling_update.as_ref());
        let partition = rolling_update.and_then(|r| r.partition).unwrap_or(0);
        let status_current = self
            .set
            .status
            .as_ref()
            .and_then(|s| s.current_replicas)
            .unwrap_or(0);
        let replicas: Vec<Member> = slots
            .into_iter()
            .enumerate()
            .map(|(i, slot)| {
                slot.unwrap_or_else(|| {
                    let o = start + i32::try_from(i).unwrap_or(i32::MAX);
                    // Upstream's `newVersionedStatefulSetPod`: below the partition (or, without
                    // rollingUpdate, below the current replicas) the current revision.
                    let at_current =
                        (rolling && rolling_update.is_none() && o < start + status_current)
                            || (rolling_update.is_some() && o < start + partition);
                    let pod = if at_current {
                        self.new_pod(&current_template, o, &current_name)
                    } else {
                        self.new_pod(&update_template, o, &update_name)
                    };
                    Member {
                        pod,
                        created: false,
                    }
                })
            })
            .collect();
        condemned.sort_by_key(|m| std::cmp::Reverse(ordinal(&m.pod)));

        // The first unavailable pod: of the replicas in order, else of the condemned from the
        // lowest ordinal.
        let first_unavailable = replicas
            .iter()
            .chain(condemned.iter().rev())
            .find(|m| !m.created || self.unavailable(&m.pod))
            .and_then(|m| m.pod.metadata.name.clone());

        let recount = |status: &mut StatefulSetStatus| {
            count(
                status,
                replicas.iter().chain(&condemned),
                self.min_ready,
                self.now,
                &current_name,
                &update_name,
            )
        };
        if self.set.metadata.deletion_timestamp.is_some() {
            return (status, Ok(()));
        }

        let stop = run_for_all(replicas.len(), self.monotonic, |i| {
            self.process_replica(&replicas[i])
        })
        .await;
        if !matches!(stop, Ok(false)) {
            recount(&mut status);
            return (status, stop.map(|_| ()));
        }
        let fix_claims = |i: usize| {
            let pod = &condemned[i].pod;
            async move {
                if !claims::match_policy(&self.claims, self.set, pod).await? {
                    claims::update_for_policy(&self.claims, self.set, pod).await?;
                }
                Ok(false)
            }
        };
        let stop = run_for_all(condemned.len(), self.monotonic, fix_claims).await;
        if !matches!(stop, Ok(false)) {
            recount(&mut status);
            return (status, stop.map(|_| ()));
        }
        let stop = run_for_all(condemned.len(), self.monotonic, |i| {
            self.process_condemned(&condemned[i].pod, first_unavailable.as_deref())
        })
        .await;
        recount(&mut status);
        if !matches!(stop, Ok(false)) {
            return (status, stop.map(|_| ()));
        }
        if !rolling {
            // OnDelete: pods change revision when their user deletes them.
            return (status, Ok(()));
        }

        let lowest = usize::try_from(partition).unwrap_or(0);
        if let Some(max) = rolling_update.and_then(|r| r.max_unavailable.as_ref()) {
            let max = max_unavailable(max, n);
            let unavailable = replicas
                .iter()
                .filter(|m| !m.created || self.unavailable(&m.pod))
                .count();
            if unavailable >= max {
                return (status, Ok(()));
            }
            let mut budget = max - unavailable;
            for m in replicas.iter().skip(lowest).rev() {
                if budget == 0 {
                    break;
                }
                if m.created && revision_of(&m.pod) != update_name && !terminating(&m.pod) {
                    if let Err(err) = self.delete(&m.pod).await {
                        return (status, Err(err));
                    }
                    budget -= 1;
                    status.current_replicas =
                        status.current_replicas.map(|c| c - 1).filter(|c| *c != 0);
                }
            }
            return (status, Ok(()));
        }
        // The pod of the highest ordinal not at the update revision is deleted, once every pod
        // above it is updated and available.
        for m in replicas.iter().skip(lowest).rev() {
            if m.created && revision_of(&m.pod) != update_name && !terminating(&m.pod) {
                tracing::info!(set = %self.name, pod = m.pod.metadata.name.as_deref().unwrap_or_default(), "terminating for update");
                let result = self.delete(&m.pod).await;
                status.current_replicas =
                    status.current_replicas.map(|c| c - 1).filter(|c| *c != 0);
                return (status, result);
            }
            if !m.created || self.unavailable(&m.pod) {
                break;
            }
        }
        (status, Ok(()))
    }

    async fn delete(&self, pod: &Pod) -> Result<()> {
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let result = self.pods.delete(name, &DeleteParams::default()).await;
        self.pod_event("delete", name, result.as_ref().err()).await;
        match result {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    /// An event about the set, as client-go's recorder writes it.
    async fn event(&self, type_: &str, reason: &str, message: &str) {
        crate::events::record_as(
            self.ctx,
            "statefulset-controller",
            self.set,
            type_,
            reason,
            message,
        )
        .await;
    }

    /// Upstream's `recordPodEvent`: `SuccessfulCreate` … or `FailedCreate` … with the error.
    async fn pod_event(&self, verb: &str, pod: &str, err: Option<&kube::Error>) {
        let set = &self.name;
        match err {
            None => {
                let message = format!("{verb} Pod {pod} in StatefulSet {set} successful");
                self.event("Normal", &format!("Successful{}", title(verb)), &message)
                    .await;
            }
            Some(err) => {
                let message = format!(
                    "{verb} Pod {pod} in StatefulSet {set} failed error: {}",
                    error_message(err)
                );
                self.event("Warning", &format!("Failed{}", title(verb)), &message)
                    .await;
            }
        }
    }

    /// Upstream's `recordClaimEvent`.
    async fn claim_event(&self, claim: &str, pod: &str, err: Option<&kube::Error>) {
        let set = &self.name;
        match err {
            None => {
                let message =
                    format!("create Claim {claim} Pod {pod} in StatefulSet {set} success");
                self.event("Normal", "SuccessfulCreate", &message).await;
            }
            Some(err) => {
                let message = format!(
                    "create Claim {claim} for Pod {pod} in StatefulSet {set} failed error: {}",
                    error_message(err)
                );
                self.event("Warning", "FailedCreate", &message).await;
            }
        }
    }

    /// One replica in the ordinal range (upstream's `processReplica`); says whether to stop
    /// (in order, the next may not proceed).
    async fn process_replica(&self, member: &Member) -> Result<bool> {
        let pod = &member.pod;
        let name = pod.metadata.name.clone().unwrap_or_default();
        if member.created && matches!(phase(pod), "Failed" | "Succeeded") {
            if !terminating(pod) {
                tracing::info!(set = %self.name, pod = %name, phase = phase(pod), "deleting to make again");
                self.delete(pod).await?;
            }
            // Made again once it is gone.
            return Ok(true);
        }
        let mut pod = pod.clone();
        if !member.created {
            if claims::is_stale(&self.claims, self.set, &pod).await? {
                self.waiting_for_claims
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                return Ok(true);
            }
            claims::create(self, &pod).await?;
            let created = match self.pods.create(&PostParams::default(), &pod).await {
                Ok(created) => {
                    self.pod_event("create", &name, None).await;
                    created
                }
                Err(kube::Error::Api(s)) if s.code == 409 && s.reason == "AlreadyExists" => {
                    return Err(Error::Api(kube::Error::Api(s)));
                }
                Err(err) => {
                    self.pod_event("create", &name, Some(&err)).await;
                    return Err(err.into());
                }
            };
            claims::update_for_policy(&self.claims, self.set, &created).await?;
            if self.monotonic {
                return Ok(true);
            }
            // Its claims were just made and referenced; the rest is checked on the pod as
            // created.
            pod = created;
        } else if phase(&pod) == "Pending" {
            claims::create(self, &pod).await?;
            claims::update_for_policy(&self.claims, self.set, &pod).await?;
        }
        if self.monotonic
            && (terminating(&pod) || !running_and_ready(&pod) || !self.available(&pod))
        {
            return Ok(true);
        }
        let retention = claims::match_policy(&self.claims, self.set, &pod)
            .await
            .unwrap_or(true);
        let storage = claims::storage_matches(self.set, &pod);
        if identity_matches(self.set, &pod) && storage && retention {
            return Ok(false);
        }
        // Upstream's `UpdateStatefulPod`: the identity labels, the missing claims, the claims'
        // references.
        if !identity_matches(self.set, &pod) {
            let o = ordinal(&pod);
            let patch = json!({"metadata": {"labels": {POD_NAME_LABEL: name, POD_INDEX_LABEL: o.to_string()},
                               "resourceVersion": pod.metadata.resource_version}});
            let result = self
                .pods
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
            self.pod_event("update", &name, result.as_ref().err()).await;
            result?;
        }
        if !storage {
            claims::create(self, &pod).await?;
        }
        if !retention {
            claims::update_for_policy(&self.claims, self.set, &pod).await?;
        }
        Ok(false)
    }

    /// One pod beyond the ordinal range (upstream's `processCondemned`): deleted once it and (in
    /// order) every pod below it is Running, Ready and available, or when it is the first
    /// unavailable pod.
    async fn process_condemned(&self, pod: &Pod, first_unavailable: Option<&str>) -> Result<bool> {
        if terminating(pod) {
            return Ok(self.monotonic);
        }
        let first = pod.metadata.name.as_deref() == first_unavailable;
        if self.monotonic && !first && (!running_and_ready(pod) || !self.available(pod)) {
            return Ok(true);
        }
        tracing::info!(set = %self.name, pod = pod.metadata.name.as_deref().unwrap_or_default(), "terminating for scale down");
        self.delete(pod).await?;
        Ok(true)
    }

    /// Writes `status` unless the set already says it (upstream's `updateStatefulSetStatus`),
    /// completing a rolling update whose pods are all updated and ready.
    async fn write_status(&self, mut status: StatefulSetStatus) -> Result<()> {
        let replicas = spec_replicas(self.set);
        let rolling = self
            .set
            .spec
            .as_ref()
            .and_then(|s| s.update_strategy.as_ref())
            .and_then(|s| s.type_.as_deref())
            .unwrap_or("RollingUpdate")
            == "RollingUpdate";
        if rolling
            && status.updated_replicas.unwrap_or(0) == replicas
            && status.ready_replicas.unwrap_or(0) == replicas
            && status.replicas == replicas
        {
            status.current_replicas = status.updated_replicas;
            status.current_revision = status.update_revision.clone();
        }
        let old = self.set.status.clone().unwrap_or_default();
        let changed = status.observed_generation.unwrap_or(0)
            > old.observed_generation.unwrap_or(0)
            || status.replicas != old.replicas
            || status.current_replicas.unwrap_or(0) != old.current_replicas.unwrap_or(0)
            || status.ready_replicas.unwrap_or(0) != old.ready_replicas.unwrap_or(0)
            || status.updated_replicas.unwrap_or(0) != old.updated_replicas.unwrap_or(0)
            || status.available_replicas.unwrap_or(0) != old.available_replicas.unwrap_or(0)
            || status.current_revision != old.current_revision
            || status.update_revision != old.update_revision;
        if !changed {
            return Ok(());
        }
        let mut set = self.set.clone();
        for _ in 0..5 {
            set.status = Some(status.clone());
            match self
                .sets
                .replace_status(&self.name, &PostParams::default(), &set)
                .await
            {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    set = self.sets.get(&self.name).await?;
                }
                Err(err) => return Err(err.into()),
            }
        }
        Err(claims::retry(format!(
            "status of statefulset {}: conflicts",
            self.name
        )))
    }
}

/// `create` → `Create`.
fn title(verb: &str) -> String {
    let mut chars = verb.chars();
    chars
        .next()
        .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

/// What Go's `err.Error()` says: an API error's message.
fn error_message(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(s) => s.message.clone(),
        err => err.to_string(),
    }
}

/// `maxUnavailable` as a number of pods, percentages rounded down, at least 1 (upstream's
/// `getStatefulSetMaxUnavailable`).
fn max_unavailable(value: &IntOrString, replicas: usize) -> usize {
    let n = match value {
        IntOrString::Int(n) => usize::try_from(*n).unwrap_or(0),
        IntOrString::String(s) => s
            .strip_suffix('%')
            .and_then(|p| p.parse::<usize>().ok())
            .map_or(0, |p| p * replicas / 100),
    };
    n.max(1)
}
