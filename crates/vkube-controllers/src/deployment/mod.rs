//! The Deployment controller (upstream's pkg/controller/deployment): one ReplicaSet per pod
//! template (`<deployment>-<pod-template-hash>`, with the revision and replicas annotations),
//! rolled out RollingUpdate (maxSurge/maxUnavailable) or Recreate, scaled proportionally when
//! the Deployment is scaled mid-rollout, paused and resumed, with the revision history that
//! `kubectl rollout history|undo` reads, and upstream's status and `Progressing`/`Available`
//! conditions (progressDeadlineSeconds included).
//!
//! Every sync reads the Deployment, its ReplicaSets and (for Recreate) its pods from the API,
//! not from a cache, so a sync never acts on a view older than its own last write.

mod rollout;
mod util;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use serde_json::json;

use crate::{Context, Result, pods, runner};
use util::*;

pub(crate) async fn run(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let controller = Controller::new(
        Api::<Deployment>::all(client.clone()),
        watcher::Config::default(),
    );
    let store = controller.store();
    let recreating = store.clone();
    let controller = controller
        .watches(
            Api::<ReplicaSet>::all(client.clone()),
            watcher::Config::default(),
            move |rs: ReplicaSet| owners_of(&store, &rs),
        )
        .watches(
            Api::<Pod>::all(client),
            watcher::Config::default(),
            move |pod: Pod| recreating_with(&recreating, &pod),
        );
    runner::drive(
        "deployment",
        controller,
        ctx,
        |d: Arc<Deployment>, ctx| async move { sync(d.as_ref(), &ctx).await },
    )
    .await;
}

/// The Deployments a ReplicaSet event concerns: its controller, or for an orphan every
/// Deployment of its namespace that selects it.
fn owners_of(store: &Store<Deployment>, rs: &ReplicaSet) -> Vec<ObjectRef<Deployment>> {
    let namespace = rs.metadata.namespace.clone().unwrap_or_default();
    match pods::controller_of(&rs.metadata) {
        Some(r) if r.kind == "Deployment" && r.api_version == "apps/v1" => {
            vec![ObjectRef::new(&r.name).within(&namespace)]
        }
        Some(_) => Vec::new(),
        None => store
            .state()
            .iter()
            .filter(|d| d.metadata.namespace.as_deref() == Some(namespace.as_str()))
            .filter(|d| {
                d.spec.as_ref().is_some_and(|s| {
                    !empty_selector(&s.selector)
                        && pods::selects(&s.selector, rs.metadata.labels.as_ref())
                })
            })
            .map(|d| ObjectRef::from_obj(d.as_ref()))
            .collect(),
    }
}

/// The Recreate Deployments selecting a pod: one waiting for its old pods to be gone learns it
/// from their events (the old ReplicaSets report no replicas before terminating pods go).
fn recreating_with(store: &Store<Deployment>, pod: &Pod) -> Vec<ObjectRef<Deployment>> {
    store
        .state()
        .iter()
        .filter(|d| d.metadata.namespace == pod.metadata.namespace && !is_rolling(d))
        .filter(|d| {
            d.spec.as_ref().is_some_and(|s| {
                !empty_selector(&s.selector)
                    && pods::selects(&s.selector, pod.metadata.labels.as_ref())
            })
        })
        .map(|d| ObjectRef::from_obj(d.as_ref()))
        .collect()
}

fn empty_selector(s: &LabelSelector) -> bool {
    s.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && s.match_expressions.as_ref().is_none_or(|e| e.is_empty())
}

/// The Deployment being synced, kept as the API last returned it, and the writes to it.
pub(crate) struct Sync<'a> {
    ctx: &'a Context,
    d: Deployment,
    deployments: Api<Deployment>,
    replicasets: Api<ReplicaSet>,
    namespace: String,
}

/// The ReplicaSets of a Deployment: the one whose template is the Deployment's, and the others.
pub(crate) struct Sets {
    new: Option<ReplicaSet>,
    old: Vec<ReplicaSet>,
}

impl Sets {
    fn all(&self) -> impl Iterator<Item = &ReplicaSet> {
        self.old.iter().chain(self.new.as_ref())
    }
}

/// One sync of a Deployment (upstream's `syncDeployment`).
pub(crate) async fn sync(seen: &Deployment, ctx: &Context) -> Result<Action> {
    let namespace = seen.metadata.namespace.clone().unwrap_or_default();
    let name = seen.metadata.name.clone().unwrap_or_default();
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(d) = deployments.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    let mut s = Sync {
        ctx,
        d,
        deployments,
        replicasets: Api::namespaced(ctx.client.clone(), &namespace),
        namespace,
    };
    let requeue = s.run().await?;
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

impl Sync<'_> {
    fn name(&self) -> String {
        self.d.metadata.name.clone().unwrap_or_default()
    }

    fn now(&self) -> jiff::Timestamp {
        self.ctx.clock.now()
    }

    fn status(&self) -> DeploymentStatus {
        self.d.status.clone().unwrap_or_default()
    }

    async fn run(&mut self) -> Result<Option<Duration>> {
        let selector = self
            .d
            .spec
            .as_ref()
            .map(|s| s.selector.clone())
            .unwrap_or_default();
        if empty_selector(&selector) {
            let msg = "This deployment is selecting all pods. A non-empty selector is required.";
            self.event("Warning", "SelectingAll", msg).await;
            let generation = self.d.metadata.generation;
            let mut status = self.status();
            if status.observed_generation < generation {
                status.observed_generation = generation;
                self.write_status(status).await?;
            }
            return Ok(None);
        }
        pods::selector_query(&selector)?;
        let mut owned = self.claim_replicasets(&selector).await?;

        if self.d.metadata.deletion_timestamp.is_some() {
            let sets = self.sets(owned, false).await?;
            self.sync_status(&sets).await?;
            return Ok(None);
        }
        self.check_paused_conditions().await?;
        if paused(&self.d) {
            return self.scale_and_sync(owned).await;
        }
        if self.is_scaling_event(&mut owned).await? {
            return self.scale_and_sync(owned).await;
        }
        if is_rolling(&self.d) {
            self.rollout_rolling(owned).await
        } else {
            self.rollout_recreate(owned).await
        }
    }

    /// The ReplicaSets of the namespace this Deployment controls, after adopting orphans its
    /// selector matches and releasing those it no longer matches (upstream's
    /// `ClaimReplicaSets`).
    async fn claim_replicasets(&self, selector: &LabelSelector) -> Result<Vec<ReplicaSet>> {
        let uid = self.d.metadata.uid.clone().unwrap_or_default();
        let deleting = self.d.metadata.deletion_timestamp.is_some();
        let mut owned = Vec::new();
        for rs in self.replicasets.list(&ListParams::default()).await?.items {
            let matches = pods::selects(selector, rs.metadata.labels.as_ref());
            let name = rs.metadata.name.clone().unwrap_or_default();
            let refs = rs.metadata.owner_references.clone().unwrap_or_default();
            match pods::controller_of(&rs.metadata) {
                Some(r) if r.uid == uid => {
                    if matches || rs.metadata.deletion_timestamp.is_some() {
                        owned.push(rs);
                    } else {
                        let refs: Vec<_> = refs.into_iter().filter(|r| r.uid != uid).collect();
                        if let Err(err) = self.patch_owners(&rs, refs).await {
                            tracing::debug!(%name, %err, "releasing a ReplicaSet");
                        }
                    }
                }
                Some(_) => {}
                None if matches && !deleting && rs.metadata.deletion_timestamp.is_none() => {
                    let mut refs = refs;
                    refs.push(pods::controller_ref(&self.d));
                    match self.patch_owners(&rs, refs).await {
                        Ok(adopted) => owned.push(adopted),
                        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                        Err(err) => return Err(err.into()),
                    }
                }
                None => {}
            }
        }
        Ok(owned)
    }

    async fn patch_owners(
        &self,
        rs: &ReplicaSet,
        refs: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
    ) -> kube::Result<ReplicaSet> {
        let patch = json!({"metadata": {"ownerReferences": refs, "uid": rs.metadata.uid,
                           "resourceVersion": rs.metadata.resource_version}});
        self.replicasets
            .patch(
                rs.metadata.name.as_deref().unwrap_or_default(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
    }

    /// Records an event about the Deployment (best effort).
    async fn event(&self, type_: &str, reason: &str, message: &str) {
        crate::events::record_as(
            self.ctx,
            "deployment-controller",
            &self.d,
            type_,
            reason,
            message,
        )
        .await;
    }

    /// Writes `status` through the status subresource; the Deployment becomes the answer.
    async fn write_status(&mut self, status: DeploymentStatus) -> Result<()> {
        let mut d = self.d.clone();
        d.status = Some(status);
        self.d = self
            .deployments
            .replace_status(&self.name(), &PostParams::default(), &d)
            .await?;
        Ok(())
    }

    /// Sets the Deployment's revision annotation (upstream writes it with an update of the
    /// status, whose strategy keeps annotations; here an update of the Deployment, which its
    /// role allows, so it does not depend on that quirk).
    async fn set_revision(&mut self, revision: &str) -> Result<()> {
        if let Some(annotations) = with_revision(&self.d, revision) {
            let mut d = self.d.clone();
            d.metadata.annotations = Some(annotations);
            self.d = self
                .deployments
                .replace(&self.name(), &PostParams::default(), &d)
                .await?;
        }
        Ok(())
    }

    /// Records `DeploymentPaused`/`DeploymentResumed` (upstream's `checkPausedConditions`), so a
    /// paused rollout never times out.
    async fn check_paused_conditions(&mut self) -> Result<()> {
        if progress_deadline(&self.d).is_none() {
            return Ok(());
        }
        let mut status = self.status();
        let reason = condition(&status, "Progressing").and_then(|c| c.reason.clone());
        if reason.as_deref() == Some(TIMED_OUT) {
            return Ok(());
        }
        let paused_recorded = reason.as_deref() == Some(PAUSED);
        let now = self.now();
        let (reason, message) = match (paused(&self.d), paused_recorded) {
            (true, false) => (PAUSED, "Deployment is paused"),
            (false, true) => (RESUMED, "Deployment is resumed"),
            _ => return Ok(()),
        };
        set_condition(
            &mut status,
            new_condition("Progressing", "Unknown", reason, message.into(), now),
        );
        self.write_status(status).await
    }

    /// The new and old ReplicaSets, the new one's annotations and the Deployment's revision
    /// brought up to date, the new one created if `create` and missing (upstream's
    /// `getAllReplicaSetsAndSyncRevision`).
    async fn sets(&mut self, mut owned: Vec<ReplicaSet>, create: bool) -> Result<Sets> {
        owned.sort_by(by_creation);
        let template = self.d.spec.clone().unwrap_or_default().template;
        let new_at = owned.iter().position(|rs| {
            rs.spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .is_some_and(|t| equal_ignore_hash(t, &template))
        });
        let existing = new_at.map(|i| owned.remove(i));
        let old = owned;
        let new_revision = old.iter().map(revision).max().unwrap_or(0) + 1;
        let new = match existing {
            Some(rs) => Some(self.sync_existing_new(rs, new_revision).await?),
            None if create => Some(self.create_new(&old, new_revision).await?),
            None => None,
        };
        Ok(Sets { new, old })
    }

    async fn sync_existing_new(&mut self, rs: ReplicaSet, new_revision: i64) -> Result<ReplicaSet> {
        let mut copy = rs.clone();
        let changed = set_new_rs_annotations(&self.d, &mut copy, new_revision, true);
        let min_ready = min_ready_seconds(&self.d);
        let rs_min_ready = copy
            .spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0);
        if changed || rs_min_ready != min_ready {
            copy.spec.get_or_insert_default().min_ready_seconds = Some(min_ready);
            let name = copy.metadata.name.clone().unwrap_or_default();
            return Ok(self
                .replicasets
                .replace(&name, &PostParams::default(), &copy)
                .await?);
        }
        let rs_revision = copy
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION))
            .cloned()
            .unwrap_or_default();
        self.set_revision(&rs_revision).await?;
        let status = self.status();
        if progress_deadline(&self.d).is_some() && condition(&status, "Progressing").is_none() {
            let mut status = status;
            let message = format!(
                "Found new replica set {:?}",
                copy.metadata.name.as_deref().unwrap_or_default()
            );
            set_condition(
                &mut status,
                new_condition("Progressing", "True", FOUND_NEW_RS, message, self.now()),
            );
            self.write_status(status).await?;
        }
        Ok(copy)
    }

    /// Creates the new ReplicaSet `<deployment>-<hash>`; a name taken by a ReplicaSet with
    /// another template is a hash collision: `collisionCount` goes up and the sync is retried.
    async fn create_new(&mut self, old: &[ReplicaSet], new_revision: i64) -> Result<ReplicaSet> {
        let spec = self.d.spec.clone().unwrap_or_default();
        let mut status = self.status();
        let hash = template_hash(&spec.template, status.collision_count);
        let mut template = spec.template.clone();
        template
            .metadata
            .get_or_insert_default()
            .labels
            .get_or_insert_default()
            .insert(HASH_LABEL.into(), hash.clone());
        let mut selector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_default()
            .insert(HASH_LABEL.into(), hash.clone());
        let name = format!("{}-{hash}", self.name());
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(self.namespace.clone()),
                owner_references: Some(vec![pods::controller_ref(&self.d)]),
                labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: Some(min_ready_seconds(&self.d)),
                selector,
                template: Some(template),
            }),
            status: None,
        };
        let all: Vec<ReplicaSet> = old.iter().cloned().chain([rs.clone()]).collect();
        let replicas = rollout::new_rs_new_replicas(&self.d, &all, &rs);
        set_rs_replicas(&mut rs, replicas);
        set_new_rs_annotations(&self.d, &mut rs, new_revision, false);
        let created = match self.replicasets.create(&PostParams::default(), &rs).await {
            Ok(made) => made,
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let existing = self.replicasets.get(&name).await?;
                let ours = pods::controller_of(&existing.metadata)
                    .is_some_and(|r| Some(&r.uid) == self.d.metadata.uid.as_ref());
                let same = existing
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| equal_ignore_hash(t, &spec.template));
                if ours && same {
                    return Ok(existing);
                }
                status.collision_count = Some(status.collision_count.unwrap_or(0) + 1);
                self.write_status(status).await?;
                return Err(kube::Error::Api(e).into());
            }
            Err(err) => {
                let message = format!(
                    "Failed to create new replica set {name:?}: {}",
                    crate::replicaset::message(&err)
                );
                self.event("Warning", FAILED_RS_CREATE, &message).await;
                if progress_deadline(&self.d).is_some() {
                    set_condition(
                        &mut status,
                        new_condition(
                            "Progressing",
                            "False",
                            FAILED_RS_CREATE,
                            message,
                            self.now(),
                        ),
                    );
                    let _ = self.write_status(status).await;
                }
                return Err(err.into());
            }
        };
        if replicas > 0 {
            let msg = format!("Scaled up replica set {name} from 0 to {replicas}");
            self.event("Normal", "ScalingReplicaSet", &msg).await;
        }
        self.set_revision(&new_revision.to_string()).await?;
        if progress_deadline(&self.d).is_some() {
            let mut status = self.status();
            let message = format!("Created new replica set {name:?}");
            set_condition(
                &mut status,
                new_condition("Progressing", "True", NEW_RS_CREATED, message, self.now()),
            );
            self.write_status(status).await?;
        }
        Ok(created)
    }

    /// Whether the Deployment's replicas differ from what its active ReplicaSets were scaled for
    /// (upstream's `isScalingEvent`).
    /// `owned` becomes the ReplicaSets as this wrote them.
    async fn is_scaling_event(&mut self, owned: &mut Vec<ReplicaSet>) -> Result<bool> {
        let sets = self.sets(std::mem::take(owned), false).await?;
        owned.extend(sets.all().cloned());
        let replicas = spec_replicas(&self.d);
        Ok(sets
            .all()
            .filter(|rs| rs_replicas(rs) > 0)
            .filter_map(|rs| int_annotation(rs, DESIRED_REPLICAS))
            .any(|desired| desired != replicas))
    }

    /// Scaling without rolling out (paused, or a scaling event; upstream's `sync`).
    async fn scale_and_sync(&mut self, owned: Vec<ReplicaSet>) -> Result<Option<Duration>> {
        let mut sets = self.sets(owned, false).await?;
        self.scale(&mut sets).await?;
        if paused(&self.d) {
            self.cleanup(&sets).await?;
        }
        self.sync_status(&sets).await?;
        Ok(None)
    }

    /// upstream's `calculateStatus`.
    fn calculate_status(&self, sets: &Sets) -> DeploymentStatus {
        let sum = |f: fn(&ReplicaSet) -> i32| sets.all().map(f).sum::<i32>();
        let available = sum(rs_available);
        let total = sum(rs_replicas);
        let some = |n: i32| (n != 0).then_some(n);
        let old = self.status();
        let mut status = DeploymentStatus {
            observed_generation: self.d.metadata.generation,
            replicas: some(sum(rs_status_replicas)),
            updated_replicas: some(sets.new.as_ref().map_or(0, rs_status_replicas)),
            ready_replicas: some(sum(rs_ready)),
            available_replicas: some(available),
            unavailable_replicas: some((total - available).max(0)),
            collision_count: old.collision_count,
            conditions: old.conditions.clone(),
            terminating_replicas: None,
        };
        let now = self.now();
        let condition = if available >= spec_replicas(&self.d) - max_unavailable(&self.d) {
            new_condition(
                "Available",
                "True",
                MIN_AVAILABLE,
                "Deployment has minimum availability.".into(),
                now,
            )
        } else {
            new_condition(
                "Available",
                "False",
                MIN_UNAVAILABLE,
                "Deployment does not have minimum availability.".into(),
                now,
            )
        };
        set_condition(&mut status, condition);
        status
    }

    /// upstream's `syncDeploymentStatus`: the status, without progress estimation.
    async fn sync_status(&mut self, sets: &Sets) -> Result<()> {
        let status = self.calculate_status(sets);
        if normalized_status(&self.status()) != normalized_status(&status) {
            self.write_status(status).await?;
        }
        Ok(())
    }

    /// upstream's `syncRolloutStatus`: the status with the `Progressing` condition and the
    /// ReplicaSets' `ReplicaFailure`; the time to look again for a stuck rollout.
    async fn sync_rollout_status(&mut self, sets: &Sets) -> Result<Option<Duration>> {
        let mut status = self.calculate_status(sets);
        let deadline = progress_deadline(&self.d);
        if deadline.is_none() {
            remove_condition(&mut status, "Progressing");
        }
        let old = self.status();
        let current = condition(&old, "Progressing").cloned();
        let complete_before = status.replicas == status.updated_replicas
            && current.as_ref().and_then(|c| c.reason.as_deref()) == Some(NEW_RS_AVAILABLE);
        let now = self.now();
        let new_name = sets.new.as_ref().and_then(|rs| rs.metadata.name.clone());
        let about = |what: &str| match &new_name {
            Some(n) => format!("ReplicaSet {n:?} {what}"),
            None => format!("Deployment {:?} {what}", self.name()),
        };
        if deadline.is_some() && !complete_before {
            if rollout::complete(&self.d, &status) {
                let c = new_condition(
                    "Progressing",
                    "True",
                    NEW_RS_AVAILABLE,
                    about("has successfully progressed."),
                    now,
                );
                set_condition(&mut status, c);
            } else if rollout::progressing(&old, &status) {
                let mut c = new_condition(
                    "Progressing",
                    "True",
                    RS_UPDATED,
                    about("is progressing."),
                    now,
                );
                if let Some(current) = &current {
                    if current.status == "True" {
                        c.last_transition_time = current.last_transition_time.clone();
                    }
                    remove_condition(&mut status, "Progressing");
                }
                set_condition(&mut status, c);
            } else if rollout::timed_out(&self.d, &status, now) {
                let c = new_condition(
                    "Progressing",
                    "False",
                    TIMED_OUT,
                    about("has timed out progressing."),
                    now,
                );
                set_condition(&mut status, c);
            }
        }
        let failure = sets
            .new
            .iter()
            .chain(sets.all())
            .flat_map(|rs| rs.status.iter().flat_map(|s| s.conditions.iter().flatten()))
            .find(|c| c.type_ == "ReplicaFailure")
            .cloned();
        match failure {
            Some(c) => set_condition(
                &mut status,
                k8s_openapi::api::apps::v1::DeploymentCondition {
                    type_: c.type_,
                    status: c.status,
                    reason: c.reason,
                    message: c.message,
                    last_update_time: c.last_transition_time.clone(),
                    last_transition_time: c.last_transition_time,
                },
            ),
            None => remove_condition(&mut status, "ReplicaFailure"),
        }
        if normalized_status(&old) == normalized_status(&status) {
            return Ok(self.requeue_stuck(&status));
        }
        self.write_status(status).await?;
        Ok(None)
    }

    /// When to check a rollout that made no progress for its deadline (upstream's
    /// `requeueStuckDeployment`).
    fn requeue_stuck(&self, status: &DeploymentStatus) -> Option<Duration> {
        let deadline = progress_deadline(&self.d)?;
        let current = condition(self.d.status.as_ref()?, "Progressing")?;
        if rollout::complete(&self.d, status) || current.reason.as_deref() == Some(TIMED_OUT) {
            return None;
        }
        let updated = current.last_update_time.as_ref()?.0;
        let at = updated
            .checked_add(jiff::SignedDuration::from_secs(deadline.into()))
            .ok()?;
        let after = at.duration_since(self.now());
        if after < jiff::SignedDuration::from_secs(1) {
            return Some(Duration::from_secs(1));
        }
        Duration::try_from(after)
            .ok()
            .map(|d| d + Duration::from_secs(1))
    }

    /// The pods of the Deployment by the uid of the ReplicaSet that controls them (for
    /// Recreate: are old pods still running?).
    async fn pods_of(&self, sets: &Sets) -> Result<Vec<(String, Pod)>> {
        let selector = self.d.spec.clone().unwrap_or_default().selector;
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let pods = api
            .list(&ListParams::default().labels(&pods::selector_query(&selector)?))
            .await?;
        let uids: Vec<String> = sets
            .all()
            .filter_map(|rs| rs.metadata.uid.clone())
            .collect();
        Ok(pods
            .items
            .into_iter()
            .filter_map(|p| {
                let owner = pods::controller_of(&p.metadata)?.uid.clone();
                uids.contains(&owner).then_some((owner, p))
            })
            .collect())
    }
}

/// A status as upstream would serialize it (zeroes left out), to compare.
fn normalized_status(s: &DeploymentStatus) -> DeploymentStatus {
    let z = |n: Option<i32>| n.filter(|n| *n != 0);
    DeploymentStatus {
        available_replicas: z(s.available_replicas),
        ready_replicas: z(s.ready_replicas),
        replicas: z(s.replicas),
        unavailable_replicas: z(s.unavailable_replicas),
        updated_replicas: z(s.updated_replicas),
        terminating_replicas: z(s.terminating_replicas),
        conditions: s.conditions.clone().filter(|c| !c.is_empty()),
        ..s.clone()
    }
}

#[cfg(test)]
mod tests;
