//! Leader election on a `coordination.k8s.io/v1` Lease (`kube-system/vkube-controllers`) in the
//! store, written only with compare-and-swap, as client-go's leaderelection does: a candidate
//! takes an absent or expired lease, the holder renews it every `retry_period`, and a holder that
//! has not renewed for `renew_deadline` steps down at once — without exiting: it keeps serving
//! the API. Leader-only work (controllers, compaction) runs while `is_leader()` holds, and checks
//! it before each write.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vkube_store::{Store, StoreError};

pub const LEASE_KEY: &str = "/registry/leases/kube-system/vkube-controllers";

#[derive(Clone, Debug)]
pub struct Timing {
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl Default for Timing {
    /// Fast enough for a failover within 5 s (lease 3 s + retry 1 s).
    fn default() -> Self {
        Timing {
            lease_duration: Duration::from_secs(3),
            renew_deadline: Duration::from_secs(2),
            retry_period: Duration::from_secs(1),
        }
    }
}

pub struct Elector {
    /// The holder identity written in the lease: unique to this process (see [`holder_identity`]).
    pub identity: String,
    timing: Timing,
    store: Arc<dyn Store>,
    leader: AtomicBool,
    changed: tokio::sync::watch::Sender<bool>,
}

fn micro_time(t: time::OffsetDateTime) -> String {
    let base = t
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    // MicroTime: six fractional digits, UTC.
    format!("{}.{:06}Z", &base[..19], t.microsecond())
}

fn parse_time(s: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
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

impl Elector {
    /// An elector for the replica `replica` (named in the log), holding the lease under an
    /// identity of this process's own.
    pub fn new(store: Arc<dyn Store>, replica: String, timing: Timing) -> Arc<Elector> {
        let identity = holder_identity(&replica);
        tracing::info!(%replica, %identity, "leader election identity");
        Arc::new(Elector {
            identity,
            timing,
            store,
            leader: AtomicBool::new(false),
            changed: tokio::sync::watch::channel(false).0,
        })
    }

    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::SeqCst)
    }

    /// Wakes on every change of leadership.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<bool> {
        self.changed.subscribe()
    }

    fn set_leader(&self, leader: bool) {
        if self.leader.swap(leader, Ordering::SeqCst) != leader {
            tracing::info!(identity = %self.identity, leader, "leadership changed");
            self.changed.send_replace(leader);
        }
    }

    /// Runs the election until the process ends.
    pub fn start(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut last_renew = Instant::now();
            loop {
                match this.try_acquire_or_renew().await {
                    Ok(true) => {
                        last_renew = Instant::now();
                        this.set_leader(true);
                    }
                    Ok(false) => this.set_leader(false),
                    Err(err) => {
                        tracing::warn!(%err, "leader election: the store did not answer");
                        if this.is_leader() && last_renew.elapsed() >= this.timing.renew_deadline {
                            this.set_leader(false);
                        }
                    }
                }
                tokio::time::sleep(this.timing.retry_period).await;
            }
        })
    }

    /// One round: true when this replica holds the lease afterwards.
    async fn try_acquire_or_renew(&self) -> Result<bool, StoreError> {
        let now = time::OffsetDateTime::now_utc();
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
        let renewed = spec["renewTime"].as_str().and_then(parse_time);
        let duration = spec["leaseDurationSeconds"].as_i64().unwrap_or(secs as i64);
        let expired = renewed.is_none_or(|r| r + time::Duration::seconds(duration) < now);
        let mine = holder == self.identity;
        if !mine && !expired && !holder.is_empty() {
            return Ok(false);
        }
        let transitions = spec["leaseTransitions"].as_i64().unwrap_or(0) + i64::from(!mine);
        let acquired = if mine {
            spec["acquireTime"].clone()
        } else {
            json!(micro_time(now))
        };
        let mut object = lease.unwrap_or_else(|| {
            json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": "vkube-controllers", "namespace": "kube-system",
                             "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": vkube_api::object::now()},
            })
        });
        object["spec"] = json!({
            "holderIdentity": self.identity, "leaseDurationSeconds": secs,
            "acquireTime": acquired, "renewTime": micro_time(now), "leaseTransitions": transitions,
        });
        if let Some(meta) = object["metadata"].as_object_mut() {
            meta.remove("resourceVersion");
        }
        let bytes = object.to_string().into_bytes();
        let written = match revision {
            None => self.store.create(LEASE_KEY, bytes, None).await.map(|_| ()),
            Some(rev) => self
                .store
                .update(LEASE_KEY, bytes, rev, None)
                .await
                .map(|_| ()),
        };
        match written {
            Ok(()) => Ok(true),
            // Another replica wrote first: it holds the lease now.
            Err(
                StoreError::Conflict { .. }
                | StoreError::AlreadyExists { .. }
                | StoreError::NotFound { .. },
            ) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Runs `work` (the leader-only tasks) while this replica leads, and stops it when it does not.
pub fn while_leader<F>(elector: Arc<Elector>, work: F) -> tokio::task::JoinHandle<()>
where
    F: Fn() -> Vec<tokio::task::AbortHandle> + Send + 'static,
{
    tokio::spawn(async move {
        let mut rx = elector.subscribe();
        let mut running: Vec<tokio::task::AbortHandle> = Vec::new();
        loop {
            let leading = *rx.borrow_and_update();
            if leading && running.is_empty() {
                running = work();
            } else if !leading {
                running.drain(..).for_each(|h| h.abort());
            }
            if rx.changed().await.is_err() {
                running.drain(..).for_each(|h| h.abort());
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn two_electors_of_one_replica_name_do_not_both_lead() {
        let store: Arc<dyn Store> = vkube_store::MemoryStore::new();
        // Two processes started without --replica-id: both are "vkube-0".
        let a = Elector::new(store.clone(), "vkube-0".into(), Timing::default());
        let b = Elector::new(store.clone(), "vkube-0".into(), Timing::default());
        assert_ne!(a.identity, b.identity);
        assert!(
            a.try_acquire_or_renew().await.unwrap(),
            "the first takes the lease"
        );
        assert!(
            !b.try_acquire_or_renew().await.unwrap(),
            "the second must not take (or \"renew\") a live lease it does not hold"
        );
        assert!(a.try_acquire_or_renew().await.unwrap(), "the holder renews");
    }
}
