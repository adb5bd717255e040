//! The elector and the leader loop against stores that answer, fail or hang, on paused time.

use super::*;
use std::sync::atomic::AtomicU8;
use vkube_store::{KeyValue, ListOptions, ListResult, MemoryStore, Watch};

const ANSWER: u8 = 0;
const FAIL: u8 = 1;
const HANG: u8 = 2;

/// A store whose calls answer, fail or hang, on demand.
struct Flaky {
    inner: Arc<dyn Store>,
    mode: AtomicU8,
}

impl Flaky {
    fn new(inner: Arc<dyn Store>) -> Arc<Flaky> {
        Arc::new(Flaky {
            inner,
            mode: AtomicU8::new(ANSWER),
        })
    }

    async fn gate(&self) -> Result<(), StoreError> {
        match self.mode.load(Ordering::SeqCst) {
            ANSWER => Ok(()),
            FAIL => Err(StoreError::Backend {
                backend: "flaky",
                message: "connection refused".into(),
            }),
            _ => std::future::pending().await,
        }
    }
}

#[async_trait::async_trait]
impl Store for Flaky {
    fn backend(&self) -> &'static str {
        "flaky"
    }
    async fn get(&self, key: &str, rev: Option<Revision>) -> vkube_store::Result<Option<KeyValue>> {
        self.gate().await?;
        self.inner.get(key, rev).await
    }
    async fn list(&self, prefix: &str, options: ListOptions) -> vkube_store::Result<ListResult> {
        self.gate().await?;
        self.inner.list(prefix, options).await
    }
    async fn create(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> vkube_store::Result<KeyValue> {
        self.gate().await?;
        self.inner.create(key, value, ttl).await
    }
    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
        ttl: Option<Duration>,
    ) -> vkube_store::Result<KeyValue> {
        self.gate().await?;
        self.inner.update(key, value, expected, ttl).await
    }
    async fn delete(
        &self,
        key: &str,
        expected: Option<Revision>,
    ) -> vkube_store::Result<(KeyValue, Revision)> {
        self.gate().await?;
        self.inner.delete(key, expected).await
    }
    async fn current_revision(&self) -> vkube_store::Result<Revision> {
        self.gate().await?;
        self.inner.current_revision().await
    }
    async fn compact(&self, revision: Revision) -> vkube_store::Result<()> {
        self.gate().await?;
        self.inner.compact(revision).await
    }
    async fn watch(&self, prefix: &str, from: Revision) -> vkube_store::Result<Watch> {
        self.gate().await?;
        self.inner.watch(prefix, from).await
    }
}

/// Writes the lease as another process would: `holder`, renewed at `renew` by its clock.
async fn write_lease(store: &dyn Store, holder: &str, renew: time::OffsetDateTime) {
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "vkube-controllers", "namespace": "kube-system"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 3,
                 "acquireTime": micro_time(renew), "renewTime": micro_time(renew)},
    })
    .to_string()
    .into_bytes();
    match store.get(LEASE_KEY, None).await.unwrap() {
        None => store.create(LEASE_KEY, lease, None).await.map(|_| ()),
        Some(kv) => store
            .update(LEASE_KEY, lease, kv.mod_revision, None)
            .await
            .map(|_| ()),
    }
    .unwrap();
}

async fn advance(secs: f64) {
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
}

#[test]
fn timing_comes_from_the_flag_then_vcluster_yaml_then_the_default() {
    let secs = |l, r, p| Timing {
        lease_duration: Duration::from_secs(l),
        renew_deadline: Duration::from_secs(r),
        retry_period: Duration::from_secs(p),
    };
    let none = TimingSeconds::default();
    assert_eq!(Timing::resolve(none, None).unwrap(), secs(3, 2, 1));
    // A vcluster.yaml without the keys: vcluster's chart defaults.
    assert_eq!(Timing::resolve(none, Some(none)).unwrap(), secs(60, 40, 15));
    let yaml = TimingSeconds {
        lease_duration: Some(30),
        renew_deadline: Some(20),
        retry_period: None,
    };
    assert_eq!(Timing::resolve(none, Some(yaml)).unwrap(), secs(30, 20, 15));
    let flags = TimingSeconds {
        retry_period: Some(2),
        ..none
    };
    assert_eq!(Timing::resolve(flags, Some(yaml)).unwrap(), secs(30, 20, 2));
    let wrong = TimingSeconds {
        renew_deadline: Some(60),
        ..none
    };
    let err = Timing::resolve(wrong, Some(none)).unwrap_err().to_string();
    assert_eq!(
        err,
        "leader election needs retryPeriod < renewDeadline < leaseDuration (got 15s < 60s < 60s)"
    );
}

#[tokio::test]
async fn two_electors_of_one_replica_name_do_not_both_lead() {
    let store: Arc<dyn Store> = MemoryStore::new();
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

#[tokio::test(start_paused = true)]
async fn a_live_holder_whose_clock_runs_behind_keeps_its_lease() {
    let store: Arc<dyn Store> = MemoryStore::new();
    // The holder's wall clock is an hour behind ours: by its renewTime the lease looks long
    // expired, yet it renews every second.
    let behind = || time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    write_lease(store.as_ref(), "other", behind()).await;
    let b = Elector::new(store.clone(), "vkube-1".into(), Timing::default());
    assert!(
        !b.try_acquire_or_renew().await.unwrap(),
        "a lease first seen now is valid for its whole duration"
    );
    for _ in 0..5 {
        advance(2.0).await;
        write_lease(store.as_ref(), "other", behind()).await;
        assert!(
            !b.try_acquire_or_renew().await.unwrap(),
            "a lease renewed 0 s ago (by our clock) is not expired"
        );
    }
    // The holder stops renewing: 2 s after the renewal this replica saw, still valid ...
    advance(2.0).await;
    assert!(!b.try_acquire_or_renew().await.unwrap());
    // ... and taken once leaseDurationSeconds (3) have passed since.
    advance(1.5).await;
    assert!(b.try_acquire_or_renew().await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn a_dead_holder_whose_clock_ran_ahead_loses_its_lease_after_the_lease_duration() {
    let store: Arc<dyn Store> = MemoryStore::new();
    // The holder's clock was an hour ahead, and it died right after renewing.
    let ahead = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    write_lease(store.as_ref(), "other", ahead).await;
    let b = Elector::new(store.clone(), "vkube-1".into(), Timing::default());
    assert!(!b.try_acquire_or_renew().await.unwrap());
    advance(2.5).await;
    assert!(!b.try_acquire_or_renew().await.unwrap());
    advance(1.0).await;
    assert!(
        b.try_acquire_or_renew().await.unwrap(),
        "no renewal seen for the lease duration: the lease is expired, whatever its renewTime says"
    );
}

/// Starts `elector` and waits until it leads; then runs leader-only work under
/// [`while_leader`], whose end (an abort) is reported on the returned channel with its instant.
async fn lead_with_work(elector: &Arc<Elector>) -> tokio::sync::mpsc::UnboundedReceiver<Instant> {
    elector.start();
    while !elector.is_leader() {
        advance(0.01).await;
    }
    let (ended, rx) = tokio::sync::mpsc::unbounded_channel();
    struct OnDrop(tokio::sync::mpsc::UnboundedSender<Instant>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            let _ = self.0.send(Instant::now());
        }
    }
    while_leader(elector.clone(), move || {
        let guard = OnDrop(ended.clone());
        vec![
            tokio::spawn(async move {
                let _guard = guard;
                // Leader-only work that is itself stuck in a call that never answers.
                std::future::pending::<()>().await
            })
            .abort_handle(),
        ]
    });
    advance(0.01).await;
    rx
}

#[tokio::test(start_paused = true)]
async fn a_hung_store_ends_leadership_and_its_work_before_another_replica_may_lead() {
    let inner: Arc<dyn Store> = MemoryStore::new();
    let flaky = Flaky::new(inner.clone());
    let timing = Timing::default();
    let a = Elector::new(flaky.clone(), "vkube-0".into(), timing.clone());
    let mut ended = lead_with_work(&a).await;
    // b watches the lease on a store that answers.
    let b = Elector::new(inner.clone(), "vkube-1".into(), timing.clone());
    b.start();
    advance(1.5).await;
    assert!(a.is_leader() && !b.is_leader());

    flaky.mode.store(HANG, Ordering::SeqCst);
    let hung_at = Instant::now();
    let stopped_at = tokio::time::timeout(Duration::from_secs(60), ended.recv())
        .await
        .expect("the leader-only work still runs a minute after the store hung")
        .unwrap();
    assert!(
        stopped_at <= hung_at + timing.renew_deadline,
        "work stopped {:?} after the store hung (renew deadline {:?})",
        stopped_at - hung_at,
        timing.renew_deadline
    );
    assert!(!a.is_leader());
    while !b.is_leader() {
        advance(0.01).await;
    }
    let b_led_at = Instant::now();
    assert!(
        b_led_at > stopped_at,
        "b led {:?} before a's work stopped",
        stopped_at - b_led_at
    );
}

#[tokio::test(start_paused = true)]
async fn failing_renewals_end_leadership_within_the_renew_deadline() {
    let flaky = Flaky::new(MemoryStore::new());
    let timing = Timing::default();
    let a = Elector::new(flaky.clone(), "vkube-0".into(), timing.clone());
    let mut ended = lead_with_work(&a).await;
    advance(0.5).await;
    flaky.mode.store(FAIL, Ordering::SeqCst);
    let failing_at = Instant::now();
    let stopped_at = tokio::time::timeout(Duration::from_secs(60), ended.recv())
        .await
        .expect("leader-only work still runs a minute after the store failed")
        .unwrap();
    assert!(stopped_at <= failing_at + timing.renew_deadline);
    assert!(!a.is_leader());
    // The store answers again: the lease (still ours) is renewed and the work restarts.
    flaky.mode.store(ANSWER, Ordering::SeqCst);
    advance(timing.retry_period.as_secs_f64() + 0.1).await;
    assert!(a.is_leader());
}

#[tokio::test(start_paused = true)]
async fn a_released_lease_is_taken_at_once() {
    let store: Arc<dyn Store> = MemoryStore::new();
    let a = Elector::new(store.clone(), "vkube-0".into(), Timing::default());
    let b = Elector::new(store.clone(), "vkube-1".into(), Timing::default());
    assert!(a.try_acquire_or_renew().await.unwrap());
    assert!(!b.try_acquire_or_renew().await.unwrap());
    a.release().await;
    assert!(!a.is_leader());
    assert!(
        b.try_acquire_or_renew().await.unwrap(),
        "a released lease needs no waiting out"
    );
}

#[tokio::test(start_paused = true)]
async fn aborting_the_leader_loop_aborts_the_leader_only_work() {
    // A graceful shutdown aborts the loop before it releases the lease: the work it started
    // must end with it, not run on beside the next leader's.
    let a = Elector::new(MemoryStore::new(), "vkube-0".into(), Timing::default());
    a.start();
    while !a.is_leader() {
        advance(0.01).await;
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let looped = while_leader(a.clone(), move || {
        let tx = tx.clone();
        vec![
            tokio::spawn(async move {
                let _tx = tx;
                std::future::pending::<()>().await
            })
            .abort_handle(),
        ]
    });
    advance(0.01).await;
    assert!(a.is_leader());
    looped.abort();
    // Every sender is gone only once the work was aborted.
    tokio::time::timeout(Duration::from_secs(2), rx.recv())
        .await
        .expect("the leader-only work was aborted with its loop");
}
