//! Leader election on a `coordination.k8s.io/v1` Lease (`kube-system/vkube-controllers`) in the
//! store, written only with compare-and-swap, as client-go's leaderelection does: a candidate
//! takes an absent or expired lease, the holder renews it every `retry_period`, and a holder that
//! has not renewed for `renew_deadline` steps down at once — without exiting: it keeps serving
//! the API. Leader-only work (controllers, compaction, the syncer) runs under [`while_leader`],
//! which aborts it when leadership ends.
//!
//! Fencing rests on two clocks that are both this process's own monotonic clock:
//! - A lease is expired when *this* replica has seen no change to it for `leaseDurationSeconds`,
//!   counted from the moment it first saw the current record (client-go's `observedTime`). The
//!   holder's `renewTime` is wall-clock time on another machine and is only written for people:
//!   a holder whose clock runs behind must not lose its lease, nor one whose clock runs ahead
//!   keep it after it died.
//! - A leader leads until `renew_deadline` after the *start* of its last successful renewal. A
//!   round that hangs in the store is cut off at that instant, and leadership ends then, whether
//!   or not the store ever answers. Since every other replica waits a full `lease_duration`
//!   (> `renew_deadline`) from when it saw that renewal, the old leader's work has stopped
//!   before anyone else may start it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;
use vkube_store::{Revision, Store, StoreError};

pub const LEASE_KEY: &str = "/registry/leases/kube-system/vkube-controllers";

#[derive(Clone, Debug, PartialEq)]
pub struct Timing {
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl Default for Timing {
    /// vkube's own default, for a failover within 5 s (lease 3 s + retry 1 s).
    fn default() -> Self {
        Timing {
            lease_duration: Duration::from_secs(3),
            renew_deadline: Duration::from_secs(2),
            retry_period: Duration::from_secs(1),
        }
    }
}

impl Timing {
    /// vcluster's defaults for `controlPlane.statefulSet.highAvailability` (its chart's
    /// values.yaml: leaseDuration 60, renewDeadline 40, retryPeriod 15): what a vcluster.yaml
    /// that leaves the keys out means.
    pub fn vcluster() -> Self {
        Timing {
            lease_duration: Duration::from_secs(60),
            renew_deadline: Duration::from_secs(40),
            retry_period: Duration::from_secs(15),
        }
    }
}

/// The three durations in seconds, as a flag or a vcluster.yaml key gives them.
#[derive(Clone, Copy, Debug, Default)]
pub struct TimingSeconds {
    pub lease_duration: Option<u64>,
    pub renew_deadline: Option<u64>,
    pub retry_period: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "leader election needs retryPeriod < renewDeadline < leaseDuration (got {retry_period:?} < {renew_deadline:?} < {lease_duration:?})"
)]
pub struct TimingError {
    pub retry_period: Duration,
    pub renew_deadline: Duration,
    pub lease_duration: Duration,
}

impl Timing {
    /// The timing `vkube serve` runs with: each value from its flag, else vcluster.yaml's
    /// `controlPlane.statefulSet.highAvailability` key, else the default. A vcluster.yaml means
    /// there what it means to vcluster, so the keys it leaves out take vcluster's defaults;
    /// without one, vkube's own (faster) defaults apply.
    pub fn resolve(
        flags: TimingSeconds,
        yaml: Option<TimingSeconds>,
    ) -> Result<Timing, TimingError> {
        let defaults = if yaml.is_some() {
            Timing::vcluster()
        } else {
            Timing::default()
        };
        let yaml = yaml.unwrap_or_default();
        let pick = |flag: Option<u64>, key: Option<u64>, default: Duration| {
            flag.or(key).map(Duration::from_secs).unwrap_or(default)
        };
        let timing = Timing {
            lease_duration: pick(
                flags.lease_duration,
                yaml.lease_duration,
                defaults.lease_duration,
            ),
            renew_deadline: pick(
                flags.renew_deadline,
                yaml.renew_deadline,
                defaults.renew_deadline,
            ),
            retry_period: pick(flags.retry_period, yaml.retry_period, defaults.retry_period),
        };
        // The fencing needs renew_deadline < lease_duration: a leader stops at its renew
        // deadline, before any other replica may consider its lease expired.
        if timing.renew_deadline >= timing.lease_duration
            || timing.retry_period >= timing.renew_deadline
        {
            return Err(TimingError {
                retry_period: timing.retry_period,
                renew_deadline: timing.renew_deadline,
                lease_duration: timing.lease_duration,
            });
        }
        Ok(timing)
    }
}

/// The parts of a lease record an election decides on.
#[derive(Clone, Debug, PartialEq)]
struct Record {
    holder: String,
    lease_duration: Duration,
    /// The store's revision of the record: any write to the lease changes it, so two reads with
    /// the same revision saw the same renewal.
    revision: Revision,
}

/// What this process knows about the election, on its own clock.
#[derive(Default)]
struct State {
    /// The last record seen, and the instant this process first saw it.
    observed: Option<(Record, Instant)>,
    /// While leading: the instant leadership ends unless a renewal succeeds before it.
    leading_until: Option<Instant>,
}

pub struct Elector {
    /// The holder identity written in the lease: unique to this process (see [`holder_identity`]).
    pub identity: String,
    timing: Timing,
    store: Arc<dyn Store>,
    state: Mutex<State>,
    /// The leadership last announced on `changed` (so each change is announced once).
    announced: AtomicBool,
    changed: tokio::sync::watch::Sender<bool>,
}

fn micro_time(t: time::OffsetDateTime) -> String {
    let base = t
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    // MicroTime: six fractional digits, UTC.
    format!("{}.{:06}Z", &base[..19], t.microsecond())
}

/// A holder identity no other process has: the replica's name, then client-go's
/// `<hostname>_<uuid>`. The replica's name alone is not enough: two processes started without
/// `--replica-id` both call themselves `vkube-0`, and a lease whose holder is "me" is renewed,
/// so both would lead at once. It leads the identity so that an operator (and `kubectl get
/// lease`) sees which replica leads.
pub fn holder_identity(replica: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "vkube".into());
    format!("{replica}_{host}_{}", uuid::Uuid::new_v4())
}

/// Why a round did not end with this process holding the lease.
#[derive(Debug, thiserror::Error)]
enum RoundError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the store did not answer within the renew deadline")]
    TimedOut,
}

impl Elector {
    /// An elector for the replica `replica` (named in the log), holding the lease under an
    /// identity of this process's own.
    pub fn new(store: Arc<dyn Store>, replica: String, timing: Timing) -> Arc<Elector> {
        let identity = holder_identity(&replica);
        tracing::info!(%replica, %identity, ?timing, "leader election identity");
        Arc::new(Elector {
            identity,
            timing,
            store,
            state: Mutex::new(State::default()),
            announced: AtomicBool::new(false),
            changed: tokio::sync::watch::channel(false).0,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is plain data updated in one statement; a panic elsewhere cannot leave it
        // half-written, so a poisoned lock is still good.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether this process leads now: judged against the renew deadline on every call, so it
    /// turns false on time even while the election task is stuck in a store call.
    pub fn is_leader(&self) -> bool {
        self.state()
            .leading_until
            .is_some_and(|until| Instant::now() < until)
    }

    /// Wakes on every change of leadership.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<bool> {
        self.changed.subscribe()
    }

    /// Leads until `until` (the start of the renewal that just succeeded + renew deadline).
    fn lead_until(&self, until: Instant) {
        self.state().leading_until = Some(until);
        self.announce();
    }

    fn step_down(&self, why: &str) {
        if self.state().leading_until.take().is_some() {
            tracing::warn!(identity = %self.identity, why, "leader election: stepping down");
        }
        self.announce();
    }

    /// Tells subscribers (and so [`while_leader`]) what [`is_leader`](Self::is_leader) says now.
    fn announce(&self) {
        let leader = self.is_leader();
        if self.announced.swap(leader, Ordering::SeqCst) != leader {
            tracing::info!(identity = %self.identity, leader, "leadership changed");
            self.changed.send_replace(leader);
        }
    }

    /// Runs the election until the process ends.
    pub fn start(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                this.round().await;
                let next = Instant::now() + this.timing.retry_period;
                // A leader whose deadline falls before the next round announces the end of
                // its leadership on time, not a retry period late.
                let until = this.state().leading_until;
                if let Some(until) = until.filter(|u| *u <= next) {
                    tokio::time::sleep_until(until).await;
                    if !this.is_leader() {
                        this.step_down("no renewal within the renew deadline");
                    }
                }
                tokio::time::sleep_until(next).await;
            }
        })
    }

    /// One round of the election, never longer than what is left of the renew deadline.
    async fn round(&self) {
        let started = Instant::now();
        let leading_until = self.state().leading_until;
        let deadline = leading_until.unwrap_or(started + self.timing.renew_deadline);
        let outcome = match tokio::time::timeout_at(deadline, self.try_acquire_or_renew()).await {
            Ok(result) => result.map_err(RoundError::from),
            Err(_) => Err(RoundError::TimedOut),
        };
        match outcome {
            // Counted from the round's start, the earliest the renewal can have been written:
            // every other replica saw it no earlier, so this leader stops first.
            Ok(true) => self.lead_until(started + self.timing.renew_deadline),
            Ok(false) => self.step_down("another process holds the lease"),
            Err(err) => {
                tracing::warn!(%err, "leader election: renewing the lease failed");
                // A leader keeps its deadline: it may still renew before it runs out.
                if !self.is_leader() {
                    self.step_down("no renewal within the renew deadline");
                }
            }
        }
    }

    /// One try: true when this process holds the lease afterwards.
    async fn try_acquire_or_renew(&self) -> Result<bool, StoreError> {
        let wall = time::OffsetDateTime::now_utc();
        let secs = self.timing.lease_duration.as_secs().max(1);
        let current = self.store.get(LEASE_KEY, None).await?;
        let (lease, revision) = match &current {
            None => (None, None),
            Some(kv) => (
                serde_json::from_slice::<Value>(&kv.value).ok(),
                Some(kv.mod_revision),
            ),
        };
        let spec = lease
            .as_ref()
            .map(|l| l["spec"].clone())
            .unwrap_or(Value::Null);
        let holder = spec["holderIdentity"].as_str().unwrap_or_default();
        if let Some(revision) = revision {
            let record = Record {
                holder: holder.to_string(),
                lease_duration: Duration::from_secs(
                    spec["leaseDurationSeconds"].as_u64().unwrap_or(secs).max(1),
                ),
                revision,
            };
            let mut state = self.state();
            // The clock starts when this process first sees a record, not at its renewTime;
            // and at the read's answer, not its start, so that a slow read never makes the
            // lease look older than it is.
            let read_at = Instant::now();
            let seen_at = match &state.observed {
                Some((seen, at)) if *seen == record => *at,
                _ => read_at,
            };
            state.observed = Some((record.clone(), seen_at));
            let mine = record.holder == self.identity;
            if !mine && !record.holder.is_empty() && read_at < seen_at + record.lease_duration {
                return Ok(false);
            }
        }
        let mine = holder == self.identity;
        let transitions = spec["leaseTransitions"].as_i64().unwrap_or(0) + i64::from(!mine);
        let acquired = if mine {
            spec["acquireTime"].clone()
        } else {
            json!(micro_time(wall))
        };
        let mut object = lease.unwrap_or_else(|| {
            json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": "vkube-controllers", "namespace": "kube-system",
                             "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": vkube_api::object::now()},
            })
        });
        // renewTime and acquireTime are wall-clock times for people (kubectl get lease); no
        // replica decides on them.
        object["spec"] = json!({
            "holderIdentity": self.identity, "leaseDurationSeconds": secs,
            "acquireTime": acquired, "renewTime": micro_time(wall), "leaseTransitions": transitions,
        });
        if let Some(meta) = object["metadata"].as_object_mut() {
            meta.remove("resourceVersion");
        }
        let bytes = object.to_string().into_bytes();
        let written = match revision {
            None => self.store.create(LEASE_KEY, bytes, None).await,
            Some(rev) => self.store.update(LEASE_KEY, bytes, rev, None).await,
        };
        match written {
            Ok(kv) => {
                let record = Record {
                    holder: self.identity.clone(),
                    lease_duration: Duration::from_secs(secs),
                    revision: kv.mod_revision,
                };
                self.state().observed = Some((record, Instant::now()));
                Ok(true)
            }
            // Another replica wrote first: it holds the lease now.
            Err(
                StoreError::Conflict { .. }
                | StoreError::AlreadyExists { .. }
                | StoreError::NotFound { .. },
            ) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up (at a graceful shutdown), as client-go's `ReleaseOnCancel`: the
    /// holder becomes empty, so another replica takes over at its next round instead of
    /// waiting out the lease. Leadership ends first, so no leader-only work overlaps the next
    /// leader's. Bounded by the renew deadline; a lease that cannot be released simply expires.
    pub async fn release(&self) {
        self.step_down("releasing the lease");
        let release = async {
            let Some(kv) = self.store.get(LEASE_KEY, None).await? else {
                return Ok(());
            };
            let mut object: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
            if object["spec"]["holderIdentity"] != self.identity.as_str() {
                return Ok(());
            }
            let wall = json!(micro_time(time::OffsetDateTime::now_utc()));
            object["spec"]["holderIdentity"] = json!("");
            object["spec"]["leaseDurationSeconds"] = json!(1);
            object["spec"]["renewTime"] = wall.clone();
            object["spec"]["acquireTime"] = wall;
            self.store
                .update(
                    LEASE_KEY,
                    object.to_string().into_bytes(),
                    kv.mod_revision,
                    None,
                )
                .await
                .map(|_| ())
        };
        // A shutdown must not wait out a 40 s renew deadline for a store that does not answer.
        let bound = self.timing.renew_deadline.min(Duration::from_secs(5));
        match tokio::time::timeout(bound, release).await {
            Ok(Ok(())) => {
                tracing::info!(identity = %self.identity, "leader election: lease released")
            }
            Ok(Err(err)) => tracing::warn!(%err, "leader election: releasing the lease failed"),
            Err(_) => tracing::warn!("leader election: releasing the lease timed out"),
        }
    }
}

/// Runs `work` (the leader-only tasks) while this replica leads, and aborts it when it does
/// not: an abort cancels a task at its current await, so a task stuck in a store call stops too.
pub fn while_leader<F>(elector: Arc<Elector>, work: F) -> tokio::task::JoinHandle<()>
where
    F: Fn() -> Vec<tokio::task::AbortHandle> + Send + 'static,
{
    tokio::spawn(async move {
        let mut rx = elector.subscribe();
        // Aborted with this task too (a shutdown aborts it before releasing the lease): the
        // leader-only work must not outlive it, or it would overlap the next leader's.
        let mut running = AbortOnDrop(Vec::new());
        loop {
            let leading = *rx.borrow_and_update();
            if leading && running.0.is_empty() {
                running.0 = work();
            } else if !leading {
                running.abort_all();
            }
            if rx.changed().await.is_err() {
                running.abort_all();
                return;
            }
        }
    })
}

/// Tasks that are aborted when this is dropped.
struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl AbortOnDrop {
    fn abort_all(&mut self) {
        self.0.drain(..).for_each(|h| h.abort());
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.abort_all();
    }
}

#[cfg(test)]
mod tests;
