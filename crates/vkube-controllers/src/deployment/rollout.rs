//! Rolling out (upstream's rolling.go and recreate.go), scaling (sync.go's `scale`: the only
//! active ReplicaSet gets all replicas, else proportional scaling) and the revision history
//! limit (`cleanupDeployment`).

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet};
use kube::api::{DeleteParams, PostParams, Preconditions};

use super::util::*;
use super::{Sets, Sync};
use crate::Result;

/// The replicas the new ReplicaSet may have now (upstream's `NewRSNewReplicas`): all of them for
/// Recreate; for RollingUpdate, as many more as maxSurge leaves room for.
pub(crate) fn new_rs_new_replicas(d: &Deployment, all: &[ReplicaSet], new: &ReplicaSet) -> i32 {
    let replicas = spec_replicas(d);
    if !is_rolling(d) {
        return replicas;
    }
    let current: i32 = all.iter().map(rs_replicas).sum();
    let max_total = replicas + max_surge(d);
    if current >= max_total {
        return rs_replicas(new);
    }
    let up = (max_total - current).min(replicas - rs_replicas(new));
    rs_replicas(new) + up
}

/// Every replica updated and available, and the latest generation observed (upstream's
/// `DeploymentComplete`).
pub(crate) fn complete(d: &Deployment, status: &DeploymentStatus) -> bool {
    let replicas = spec_replicas(d);
    status.updated_replicas.unwrap_or(0) == replicas
        && status.replicas.unwrap_or(0) == replicas
        && status.available_replicas.unwrap_or(0) == replicas
        && status.observed_generation >= d.metadata.generation
}

/// More updated, fewer old, more ready or more available replicas than before (upstream's
/// `DeploymentProgressing`).
pub(crate) fn progressing(old: &DeploymentStatus, new: &DeploymentStatus) -> bool {
    let n = |v: Option<i32>| v.unwrap_or(0);
    let old_old = n(old.replicas) - n(old.updated_replicas);
    let new_old = n(new.replicas) - n(new.updated_replicas);
    n(new.updated_replicas) > n(old.updated_replicas)
        || new_old < old_old
        || n(new.ready_replicas) > n(old.ready_replicas)
        || n(new.available_replicas) > n(old.available_replicas)
}

/// No progress for `progressDeadlineSeconds` (upstream's `DeploymentTimedOut`).
pub(crate) fn timed_out(d: &Deployment, status: &DeploymentStatus, now: Timestamp) -> bool {
    let Some(deadline) = progress_deadline(d) else {
        return false;
    };
    let Some(c) = condition(status, "Progressing") else {
        return false;
    };
    match c.reason.as_deref() {
        Some(NEW_RS_AVAILABLE) => false,
        Some(TIMED_OUT) => true,
        _ => c.last_update_time.as_ref().is_some_and(|t| {
            t.0.checked_add(jiff::SignedDuration::from_secs(deadline.into()))
                .is_ok_and(|at| at < now)
        }),
    }
}

impl Sync<'_> {
    /// Scales `rs` to `replicas` (with the replicas annotations); whether it did.
    pub(super) async fn scale_rs(&self, rs: &mut ReplicaSet, replicas: i32) -> Result<bool> {
        // upstream's `scaleReplicaSetAndRecordEvent`: nothing at the same size.
        if rs_replicas(rs) == replicas {
            return Ok(false);
        }
        self.scale_replicaset(rs, replicas).await
    }

    /// Scales `rs` to `replicas` and brings its replicas annotations up to date, even at the
    /// same size; whether its size changed (upstream's `scaleReplicaSet`).
    async fn scale_replicaset(&self, rs: &mut ReplicaSet, replicas: i32) -> Result<bool> {
        let desired = spec_replicas(&self.d);
        let max = desired + max_surge(&self.d);
        let before = rs_replicas(rs);
        let resize = before != replicas;
        let mut copy = rs.clone();
        let annotate = set_replicas_annotations(&mut copy, desired, max);
        if resize || annotate {
            set_rs_replicas(&mut copy, replicas);
            let name = copy.metadata.name.clone().unwrap_or_default();
            *rs = self
                .replicasets
                .replace(&name, &PostParams::default(), &copy)
                .await?;
            if resize {
                let direction = if before < replicas { "up" } else { "down" };
                let msg =
                    format!("Scaled {direction} replica set {name} from {before} to {replicas}");
                self.event("Normal", "ScalingReplicaSet", &msg).await;
            }
        }
        Ok(resize)
    }

    /// upstream's `rolloutRolling`.
    pub(super) async fn rollout_rolling(
        &mut self,
        owned: Vec<ReplicaSet>,
    ) -> Result<Option<Duration>> {
        let mut sets = self.sets(owned, true).await?;
        if self.reconcile_new(&mut sets).await? {
            return self.sync_rollout_status(&sets).await;
        }
        if self.reconcile_old(&mut sets).await? {
            return self.sync_rollout_status(&sets).await;
        }
        if complete(&self.d, &self.status()) {
            self.cleanup(&sets).await?;
        }
        self.sync_rollout_status(&sets).await
    }

    async fn reconcile_new(&self, sets: &mut Sets) -> Result<bool> {
        let replicas = spec_replicas(&self.d);
        let all: Vec<ReplicaSet> = sets.all().cloned().collect();
        let Some(new) = sets.new.as_mut() else {
            return Ok(false);
        };
        let current = rs_replicas(new);
        if current == replicas {
            return Ok(false);
        }
        let target = if current > replicas {
            replicas
        } else {
            new_rs_new_replicas(&self.d, &all, new)
        };
        self.scale_rs(new, target).await
    }

    /// Scales old ReplicaSets down as far as maxUnavailable allows, unhealthy replicas first
    /// (upstream's `reconcileOldReplicaSets`).
    async fn reconcile_old(&self, sets: &mut Sets) -> Result<bool> {
        let old_count: i32 = sets.old.iter().map(rs_replicas).sum();
        if old_count == 0 {
            return Ok(false);
        }
        let Some(new) = sets.new.as_ref() else {
            return Ok(false);
        };
        let all_count: i32 = sets.all().map(rs_replicas).sum();
        let min_available = spec_replicas(&self.d) - max_unavailable(&self.d);
        let new_unavailable = rs_replicas(new) - rs_countable_available(new);
        let max_scaled_down = all_count - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        let cleaned = self.cleanup_unhealthy(sets, max_scaled_down).await?;
        let scaled = self.scale_down_old_rolling(sets).await?;
        Ok(cleaned + scaled > 0)
    }

    /// Scales old ReplicaSets down by their unavailable replicas, oldest first, at most `max`.
    async fn cleanup_unhealthy(&self, sets: &mut Sets, max: i32) -> Result<i32> {
        sets.old.sort_by(by_creation);
        let mut total = 0;
        for rs in sets.old.iter_mut() {
            if total >= max {
                break;
            }
            let replicas = rs_replicas(rs);
            let available = rs_countable_available(rs);
            if replicas == 0 || replicas == available {
                continue;
            }
            let down = (max - total).min(replicas - available);
            self.scale_rs(rs, replicas - down).await?;
            total += down;
        }
        Ok(total)
    }

    /// Scales old ReplicaSets down, oldest first, by what is available beyond the minimum.
    async fn scale_down_old_rolling(&self, sets: &mut Sets) -> Result<i32> {
        let min_available = spec_replicas(&self.d) - max_unavailable(&self.d);
        let available: i32 = sets.all().map(rs_countable_available).sum();
        if available <= min_available {
            return Ok(0);
        }
        let to_scale_down = available - min_available;
        sets.old.sort_by(by_creation);
        let mut total = 0;
        for rs in sets.old.iter_mut() {
            if total >= to_scale_down {
                break;
            }
            let replicas = rs_replicas(rs);
            if replicas == 0 {
                continue;
            }
            let down = replicas.min(to_scale_down - total);
            self.scale_rs(rs, replicas - down).await?;
            total += down;
        }
        Ok(total)
    }

    /// upstream's `rolloutRecreate`: old ReplicaSets to 0, then (once no old pod runs) the new
    /// one to all replicas.
    pub(super) async fn rollout_recreate(
        &mut self,
        owned: Vec<ReplicaSet>,
    ) -> Result<Option<Duration>> {
        let mut sets = self.sets(owned.clone(), false).await?;
        let mut scaled_down = false;
        for rs in sets.old.iter_mut() {
            if rs_replicas(rs) != 0 && self.scale_rs(rs, 0).await? {
                scaled_down = true;
            }
        }
        if scaled_down {
            return self.sync_rollout_status(&sets).await;
        }
        if self.old_pods_running(&sets).await? {
            return self.sync_rollout_status(&sets).await;
        }
        if sets.new.is_none() {
            let mut owned = owned;
            // The ReplicaSets as now scaled.
            for rs in owned.iter_mut() {
                if let Some(now) = sets.old.iter().find(|o| o.metadata.uid == rs.metadata.uid) {
                    *rs = now.clone();
                }
            }
            sets = self.sets(owned, true).await?;
        }
        let replicas = spec_replicas(&self.d);
        if let Some(new) = sets.new.as_mut()
            && rs_replicas(new) != replicas
        {
            self.scale_rs(new, replicas).await?;
        }
        if complete(&self.d, &self.status()) {
            self.cleanup(&sets).await?;
        }
        self.sync_rollout_status(&sets).await
    }

    /// Old ReplicaSets that still report pods, or pods of old ReplicaSets not yet finished
    /// (upstream's `oldPodsRunning`).
    async fn old_pods_running(&self, sets: &Sets) -> Result<bool> {
        if sets.old.iter().map(rs_status_replicas).sum::<i32>() > 0 {
            return Ok(true);
        }
        let new_uid = sets.new.as_ref().and_then(|rs| rs.metadata.uid.clone());
        Ok(self.pods_of(sets).await?.iter().any(|(owner, pod)| {
            Some(owner) != new_uid.as_ref()
                && !matches!(
                    pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Failed" | "Succeeded")
                )
        }))
    }

    /// upstream's `scale`: a single active (or the latest) ReplicaSet gets the Deployment's
    /// replicas; a saturated new one leaves the old ones at 0; otherwise, rolling, every active
    /// ReplicaSet gets its share of the change, the leftover going to the largest.
    pub(super) async fn scale(&self, sets: &mut Sets) -> Result<()> {
        let replicas = spec_replicas(&self.d);
        let active: Vec<&ReplicaSet> = sets.all().filter(|rs| rs_replicas(rs) > 0).collect();
        let target_uid = match active.len() {
            0 => {
                // The newest: the new one, else the latest old one.
                let mut old: Vec<&ReplicaSet> = sets.old.iter().collect();
                old.sort_by(|a, b| by_creation(b, a));
                sets.new
                    .as_ref()
                    .or(old.first().copied())
                    .and_then(|rs| rs.metadata.uid.clone())
            }
            1 => active[0].metadata.uid.clone(),
            _ => None,
        };
        if active.len() <= 1 {
            if target_uid.is_none() {
                return Ok(());
            }
            let target = sets
                .new
                .iter_mut()
                .chain(sets.old.iter_mut())
                .find(|rs| rs.metadata.uid == target_uid);
            if let Some(rs) = target
                && rs_replicas(rs) != replicas
            {
                self.scale_rs(rs, replicas).await?;
            }
            return Ok(());
        }
        if let Some(new) = &sets.new
            && rs_replicas(new) == replicas
            && int_annotation(new, DESIRED_REPLICAS) == Some(replicas)
            && rs_available(new) == replicas
        {
            for rs in sets.old.iter_mut() {
                if rs_replicas(rs) > 0 {
                    self.scale_rs(rs, 0).await?;
                }
            }
            return Ok(());
        }
        if !is_rolling(&self.d) {
            return Ok(());
        }
        let total: i32 = sets.all().map(rs_replicas).sum();
        let allowed = if replicas > 0 {
            replicas + max_surge(&self.d)
        } else {
            0
        };
        let to_add = allowed - total;
        let mut active: Vec<&mut ReplicaSet> = sets
            .new
            .iter_mut()
            .chain(sets.old.iter_mut())
            .filter(|rs| rs_replicas(rs) > 0)
            .collect();
        if to_add > 0 {
            active.sort_by(|a, b| by_size_newer(a, b));
        } else if to_add < 0 {
            active.sort_by(|a, b| by_size_older(a, b));
        }
        let mut added = 0;
        let mut sizes = Vec::with_capacity(active.len());
        for rs in active.iter() {
            if to_add != 0 {
                let p = proportion(rs, &self.d, to_add, added);
                sizes.push(rs_replicas(rs) + p);
                added += p;
            } else {
                sizes.push(rs_replicas(rs));
            }
        }
        for (i, rs) in active.into_iter().enumerate() {
            let mut size = sizes[i];
            if i == 0 && to_add != 0 {
                size = (size + to_add - added).max(0);
            }
            self.scale_replicaset(rs, size).await?;
        }
        Ok(())
    }

    /// Deletes old ReplicaSets with no replicas beyond `revisionHistoryLimit`, lowest revision
    /// first (upstream's `cleanupDeployment`).
    pub(super) async fn cleanup(&self, sets: &Sets) -> Result<()> {
        let Some(limit) = self.d.spec.as_ref().and_then(|s| s.revision_history_limit) else {
            return Ok(());
        };
        let mut cleanable: Vec<&ReplicaSet> = sets
            .old
            .iter()
            .filter(|rs| rs.metadata.deletion_timestamp.is_none())
            .collect();
        let diff = cleanable.len() as i64 - i64::from(limit);
        if diff <= 0 {
            return Ok(());
        }
        cleanable.sort_by(|a, b| by_revision(a, b));
        for rs in cleanable.into_iter().take(diff as usize) {
            let observed = rs
                .status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .unwrap_or(0);
            if rs_status_replicas(rs) != 0
                || rs_replicas(rs) != 0
                || rs.metadata.generation.unwrap_or(0) > observed
            {
                continue;
            }
            let name = rs.metadata.name.clone().unwrap_or_default();
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: rs.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match self.replicasets.delete(&name, &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(err) => return Err(err.into()),
            }
        }
        Ok(())
    }
}
