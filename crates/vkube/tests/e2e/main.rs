//! End to end: a real `vkube serve` process driven by real kubectl — the default binary and the
//! pinned `kubectl.1.27` and `kubectl.1.33` beside it — checking what kubectl prints.

mod admission_policy;
mod aggregation;
mod apply;
mod audit;
mod auth;
mod certificates;
mod cli;
mod clients;
mod crd_conversion;
mod crds;
mod daemonsets;
mod difftest;
mod disruption;
mod embedded_etcd;
mod embedded_etcd_tls;
mod encryption;
mod endpoints;
mod flowcontrol;
mod fuzz;
mod gc;
mod ha;
mod harness;
mod https_server;
mod hygiene;
mod identity;
mod jobs;
mod migrate;
mod migrate_scale;
mod namespaces;
mod objects;
mod outage;
mod quota;
pub(crate) mod rbac;
#[path = "../../../vkube-store/tests/common/servers.rs"]
mod servers;
mod shared_etcd;
mod statefulsets;
mod subresources;
mod typed;
mod watches;
mod webhooks;
mod workloads;
