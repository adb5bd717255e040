#![forbid(unsafe_code)]
//! kube-controller-manager's job for a virtual cluster: the workload controllers (Deployment,
//! ReplicaSet, ReplicationController, StatefulSet, DaemonSet, Job, CronJob, TTL after finished),
//! PodDisruptionBudget status, the CSR signer, Endpoints/EndpointSlices (with mirroring), the
//! garbage collector and ResourceQuota status.
//!
//! They are clients of the API and nothing else: every read and write goes through a
//! [`kube::Client`], so what they write passes authentication, RBAC, admission (quota),
//! validation, defaulting and managedFields like any client's write. The binary gives them an
//! in-process client that calls the server's request path as each controller's service account
//! (`system:serviceaccount:kube-system:deployment-controller`, …), as kube-controller-manager
//! runs with `--use-service-account-credentials`. Tests give them a fake API
//! ([`testing`]). They run on the leader only; the binary starts and stops them.
//!
//! One runner ([`runner`]) drives each of them: kube's `Controller` (a queue that de-duplicates
//! keys, fed by watches that the server answers from its shared hub), with per-key exponential
//! backoff on errors, periodic resync and `workers` concurrent reconciles.

use std::sync::Arc;

pub mod clock;
pub mod pods;
pub mod runner;
#[cfg(test)]
pub(crate) mod testing;

mod crd;
mod cronjob;
pub mod csr_signing;
mod daemonset;
mod deployment;
mod disruption;
mod endpoints;
mod events;
mod garbagecollector;
mod job;
mod namespace;
pub mod namespace_defaults;
mod pod_gc;
mod replicaset;
mod resourcequota;
mod resources;
mod statefulset;
mod ttl_after_finished;

pub use clock::{Clock, SystemClock};

/// The controllers of this crate by kube-controller-manager's names (`--controllers`), each
/// with the kube-system service account it runs as, as upstream names them.
pub const CONTROLLERS: &[(&str, &str)] = &[
    ("deployment", "deployment-controller"),
    ("replicaset", "replicaset-controller"),
    ("replicationcontroller", "replication-controller"),
    ("statefulset", "statefulset-controller"),
    ("daemonset", "daemon-set-controller"),
    ("job", "job-controller"),
    ("cronjob", "cronjob-controller"),
    ("ttl-after-finished", "ttl-after-finished-controller"),
    ("disruption", "disruption-controller"),
    ("csrsigning", "certificate-controller"),
    ("namespace", "namespace-controller"),
    ("podgc", "pod-garbage-collector"),
    ("resourcequota", "resourcequota-controller"),
    ("garbagecollector", "generic-garbage-collector"),
    ("serviceaccount", "service-account-controller"),
    ("root-ca-cert-publisher", "root-ca-cert-publisher"),
    ("endpoint", "endpoint-controller"),
    ("endpointslice", "endpointslice-controller"),
    (
        "endpointslicemirroring",
        "endpointslicemirroring-controller",
    ),
];

/// The controllers kube-apiserver runs itself (apiextensions-apiserver's CRD naming,
/// establishing and finalizer controllers), by the name `--controllers` takes here. They run as
/// the server's loopback identity, `system:apiserver` in group `system:masters`, not as a
/// service account.
pub const APISERVER_CONTROLLERS: &[&str] = &["customresourcedefinition"];

/// What a controller runs with.
#[derive(Clone)]
pub struct Context {
    /// The API, as this controller's service account.
    pub client: kube::Client,
    /// Wall-clock time for the fields the API writes (`startTime`, `lastScheduleTime`, …).
    pub clock: Arc<dyn Clock>,
    /// Concurrent reconciles (kube-controller-manager's `--concurrent-*-syncs`).
    pub workers: u16,
    /// Every object is reconciled again this often, events or not.
    pub resync: std::time::Duration,
    /// Endpoints per EndpointSlice at most (kube-controller-manager's `--max-endpoints-per-slice`).
    pub max_endpoints_per_slice: u16,
}

impl Context {
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            clock: Arc::new(SystemClock),
            workers: 5,
            resync: std::time::Duration::from_secs(600),
            max_endpoints_per_slice: 100,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Api(#[from] kube::Error),
    /// The object cannot be acted on as written (a bad selector, …): retried only on change.
    #[error("{0}")]
    Invalid(String),
    /// The reconcile panicked (a bug): logged and retried with backoff, the controller goes on.
    #[error("reconcile panicked: {0}")]
    Panicked(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Controller `name` (one of [`CONTROLLERS`] or [`APISERVER_CONTROLLERS`]) as a future that
/// runs until dropped; `None` for an unknown name, for `csrsigning`, which needs its CA
/// ([`csr_signing::run`]), and for `root-ca-cert-publisher`, which needs its certificate
/// ([`namespace_defaults::run_root_ca_publisher`]).
pub fn run(name: &str, ctx: Context) -> Option<futures_util::future::BoxFuture<'static, ()>> {
    let ctx = Arc::new(ctx);
    Some(match name {
        "deployment" => Box::pin(deployment::run(ctx)),
        "replicaset" => Box::pin(replicaset::run_replicasets(ctx)),
        "replicationcontroller" => Box::pin(replicaset::run_replication_controllers(ctx)),
        "statefulset" => Box::pin(statefulset::run(ctx)),
        "daemonset" => Box::pin(daemonset::run(ctx)),
        "job" => Box::pin(job::run(ctx)),
        "cronjob" => Box::pin(cronjob::run(ctx)),
        "ttl-after-finished" => Box::pin(ttl_after_finished::run(ctx)),
        "disruption" => Box::pin(disruption::run(ctx)),
        "endpoint" => Box::pin(endpoints::subsets::run(ctx)),
        "endpointslice" => Box::pin(endpoints::slices::run(ctx)),
        "endpointslicemirroring" => Box::pin(endpoints::mirroring::run(ctx)),
        "namespace" => Box::pin(namespace::run(ctx)),
        "podgc" => Box::pin(pod_gc::run(ctx)),
        "resourcequota" => Box::pin(resourcequota::run(ctx)),
        "garbagecollector" => Box::pin(garbagecollector::run(ctx)),
        "customresourcedefinition" => Box::pin(crd::run(ctx)),
        "serviceaccount" => Box::pin(namespace_defaults::run_service_accounts(ctx)),
        _ => return None,
    })
}
