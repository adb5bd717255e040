//! kube-apiserver's repair loops for Service allocations (the ipallocator's `RepairIPAddress` and
//! the portallocator's `Repair`), run by the leader: every interval, the ClusterIPs (`IPAddress`
//! objects) and NodePort claims in the store are compared with the Services that hold them.
//!
//! A Service delete releases what it held through the controllers' watch of deletes; when that
//! event is missed (a lagged or restarted watch, a leader change, a crash between the delete and
//! the release) or an update drops a NodePort, the allocation would stay taken forever and the
//! range would fill up. Here:
//! - an `IPAddress` of the allocator whose Service does not exist is deleted once it is older than
//!   [`IP_GRACE`] (the Service is stored after its address is claimed, so a young orphan may be an
//!   allocation in flight); one whose Service exists but does not hold it is deleted at once, and
//!   one that does not reference a Service at all too, as upstream does;
//! - a NodePort claim no Service holds is freed on the [`PORT_REPAIRS`]th run in a row that finds
//!   it so (upstream's `numRepairsBeforeLeakCleanup`: claims carry no timestamp, and three runs
//!   apart no creation is still in flight);
//! - an address or port a Service holds without its record is recorded again, so it cannot be
//!   handed to a second Service.
//!
//! Deletes are compare-and-swap on the revision read, so an allocation made again meanwhile is
//! never freed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio::task::AbortHandle;
use vkube_api::registry;
use vkube_store::{KeyValue, ListOptions, Revision, Store, StoreError};

use crate::services::{self, NODE_PORT_PREFIX};

/// How often the loops run (kube-apiserver's `repairLoopInterval`).
pub const INTERVAL: Duration = Duration::from_secs(3 * 60);
/// How old an `IPAddress` of a missing Service must be before it is freed (upstream's grace,
/// kube-apiserver's request timeout).
pub const IP_GRACE: Duration = Duration::from_secs(60);
/// On which run in a row that finds a NodePort claim unheld it is freed.
pub const PORT_REPAIRS: u32 = 3;

/// The allocator's label on the `IPAddress` objects it owns; others are left alone.
const MANAGED_BY: &str = "ipallocator.k8s.io";

/// What one run changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub released_ips: Vec<String>,
    pub released_ports: Vec<u16>,
    pub restored_ips: Vec<String>,
    pub restored_ports: Vec<u16>,
}

pub struct Repair {
    store: Arc<dyn Store>,
    /// Services of type other than ExternalName run on a host cluster, which allocates their
    /// addresses and ports (`--host-kubeconfig`): nothing of theirs is restored here.
    host_services: bool,
    /// Consecutive runs that found a port claim unheld, by port and the claim's creation (a
    /// claim made again starts over).
    port_leaks: HashMap<(u16, Revision), u32>,
}

fn services_prefix() -> String {
    registry::find("", "v1", "services")
        .expect("services are registered")
        .key("", "")
}

fn ip_prefix() -> String {
    registry::find("networking.k8s.io", "v1", "ipaddresses")
        .expect("ipaddresses are registered")
        .key("", "")
}

/// When an object was created, from its `creationTimestamp`.
fn created_at(obj: &Value) -> Option<SystemTime> {
    let text = obj["metadata"]["creationTimestamp"].as_str()?;
    let at =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    let secs = u64::try_from(at.unix_timestamp()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// The NodePorts a Service holds: its ports' and its health check's.
fn node_ports(svc: &Value) -> impl Iterator<Item = u16> + '_ {
    let ports = svc["spec"]["ports"].as_array().into_iter().flatten();
    ports
        .map(|p| &p["nodePort"])
        .chain(std::iter::once(&svc["spec"]["healthCheckNodePort"]))
        .filter_map(Value::as_u64)
        .filter_map(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
}

fn cluster_ips(svc: &Value) -> impl Iterator<Item = &str> {
    svc["spec"]["clusterIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|ip| *ip != "None")
}

impl Repair {
    pub fn new(store: Arc<dyn Store>, host_services: bool) -> Self {
        Repair {
            store,
            host_services,
            port_leaks: HashMap::new(),
        }
    }

    /// One pass of both loops, reading Services and allocations at one revision.
    pub async fn run_once(&mut self, now: SystemTime) -> Result<Report, StoreError> {
        let services = self
            .store
            .list(&services_prefix(), ListOptions::default())
            .await?;
        let at = ListOptions {
            revision: Some(services.revision),
            ..ListOptions::default()
        };
        let ips = self.store.list(&ip_prefix(), at.clone()).await?.items;
        let ports = self.store.list(NODE_PORT_PREFIX, at).await?.items;

        let services: Vec<Value> = services
            .items
            .iter()
            .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
            .collect();
        let by_name: HashMap<(&str, &str), &Value> = services
            .iter()
            .map(|svc| {
                let meta = &svc["metadata"];
                let key = (
                    meta["namespace"].as_str().unwrap_or_default(),
                    meta["name"].as_str().unwrap_or_default(),
                );
                (key, svc)
            })
            .collect();
        let held_ips: HashSet<&str> = services.iter().flat_map(cluster_ips).collect();
        let held_ports: HashSet<u16> = services.iter().flat_map(node_ports).collect();

        let mut report = Report::default();
        let prefix = ip_prefix();
        let mut recorded_ips = HashSet::new();
        for kv in &ips {
            let ip = kv.key.trim_start_matches(&prefix).to_string();
            recorded_ips.insert(ip.clone());
            let Ok(obj) = serde_json::from_slice::<Value>(&kv.value) else {
                continue;
            };
            if obj["metadata"]["labels"]["ipaddress.kubernetes.io/managed-by"] != MANAGED_BY {
                continue;
            }
            let parent = &obj["spec"]["parentRef"];
            let release = if parent["group"].as_str().unwrap_or_default() != ""
                || parent["resource"] != "services"
            {
                tracing::warn!(%ip, "IPAddress does not reference a Service: cleaning up");
                true
            } else {
                let owner = (
                    parent["namespace"].as_str().unwrap_or_default(),
                    parent["name"].as_str().unwrap_or_default(),
                );
                match by_name.get(&owner) {
                    Some(svc) => {
                        let holds = cluster_ips(svc).any(|held| held == ip);
                        if !holds {
                            tracing::warn!(%ip, namespace = owner.0, name = owner.1,
                                "IPAddress has a wrong reference: cleaning up");
                        }
                        !holds
                    }
                    // Another Service holds it (two were given one address): freeing it would
                    // let a third have it too.
                    None if held_ips.contains(ip.as_str()) => false,
                    None => {
                        let age = created_at(&obj)
                            .and_then(|t| now.duration_since(t).ok())
                            .unwrap_or_default();
                        let leaked = age > IP_GRACE;
                        if leaked {
                            tracing::warn!(%ip, namespace = owner.0, name = owner.1,
                                "IPAddress appears to have leaked: cleaning up");
                        }
                        leaked
                    }
                }
            };
            if release && self.delete(kv).await? {
                report.released_ips.push(ip);
            }
        }

        let mut recorded_ports = HashSet::new();
        let mut still_leaking = HashMap::new();
        for kv in &ports {
            let Ok(port) = kv.key.trim_start_matches(NODE_PORT_PREFIX).parse::<u16>() else {
                continue;
            };
            recorded_ports.insert(port);
            if held_ports.contains(&port) {
                continue;
            }
            let id = (port, kv.create_revision);
            let seen = self.port_leaks.get(&id).copied().unwrap_or(0) + 1;
            if seen < PORT_REPAIRS {
                tracing::info!(
                    port,
                    "the node port may have leaked: flagging for later clean up"
                );
                still_leaking.insert(id, seen);
            } else if self.delete(kv).await? {
                tracing::warn!(port, "the node port has leaked: cleaning up");
                report.released_ports.push(port);
            }
        }
        // A port found held, or whose claim is gone, is no longer counted.
        self.port_leaks = still_leaking;

        for svc in &services {
            if svc["spec"]["type"] == "ExternalName"
                || (self.host_services && crate::host_services::on_host(svc))
            {
                continue;
            }
            let namespace = svc["metadata"]["namespace"].as_str().unwrap_or_default();
            let name = svc["metadata"]["name"].as_str().unwrap_or_default();
            for ip in cluster_ips(svc) {
                let in_range = ip.parse().is_ok_and(services::in_range);
                if !in_range || recorded_ips.contains(ip) {
                    continue;
                }
                tracing::warn!(%ip, namespace, name, "the ClusterIP is not allocated; repairing");
                match services::claim_ip(self.store.as_ref(), ip, namespace, name).await {
                    Ok(true) => report.restored_ips.push(ip.to_string()),
                    Ok(false) => {}
                    Err(status) => {
                        tracing::warn!(%ip, message = %status.message, "repairing failed")
                    }
                }
            }
            for port in node_ports(svc) {
                if !services::NODE_PORTS.contains(&port) || recorded_ports.contains(&port) {
                    continue;
                }
                tracing::warn!(
                    port,
                    namespace,
                    name,
                    "the node port is not allocated; repairing"
                );
                match services::claim_port(self.store.as_ref(), port, namespace, name).await {
                    Ok(true) => report.restored_ports.push(port),
                    Ok(false) => {}
                    Err(status) => {
                        tracing::warn!(port, message = %status.message, "repairing failed")
                    }
                }
            }
        }
        Ok(report)
    }

    /// Deletes an allocation if it is still the one read; `false` when it changed or went.
    async fn delete(&self, kv: &KeyValue) -> Result<bool, StoreError> {
        match self.store.delete(&kv.key, Some(kv.mod_revision)).await {
            Ok(_) => Ok(true),
            Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => Ok(false),
            Err(err) => Err(err),
        }
    }
}

/// Runs the repair every [`INTERVAL`], first at once; for the leader.
pub fn start(store: Arc<dyn Store>, host_services: bool) -> AbortHandle {
    let mut repair = Repair::new(store, host_services);
    tokio::spawn(async move {
        loop {
            match repair.run_once(SystemTime::now()).await {
                Ok(report) if report != Report::default() => {
                    tracing::info!(?report, "service allocations repaired");
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(%err, "service allocation repair failed"),
            }
            tokio::time::sleep(INTERVAL).await;
        }
    })
    .abort_handle()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use vkube_store::MemoryStore;

    async fn create_service(store: &dyn Store, name: &str, spec: Value) -> Value {
        let mut svc = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"namespace": "default", "name": name}, "spec": spec});
        services::allocate(store, &mut svc).await.unwrap();
        let key = registry::find("", "v1", "services")
            .unwrap()
            .key("default", name);
        store
            .create(&key, serde_json::to_vec(&svc).unwrap(), None)
            .await
            .unwrap();
        svc
    }

    /// Deletes a Service without releasing anything: the release event was missed.
    async fn lose_service(store: &dyn Store, name: &str) {
        let key = registry::find("", "v1", "services")
            .unwrap()
            .key("default", name);
        store.delete(&key, None).await.unwrap();
    }

    async fn exists(store: &dyn Store, key: &str) -> bool {
        store.get(key, None).await.unwrap().is_some()
    }

    fn ip_key(ip: &str) -> String {
        format!("{}{ip}", ip_prefix())
    }

    fn port_key(port: u64) -> String {
        format!("{NODE_PORT_PREFIX}{port}")
    }

    /// Issue 17, defect 7: a Service deleted while nobody released its allocations leaves its
    /// ClusterIP and NodePort taken; the repair frees both, after upstream's grace, and leaves a
    /// live Service's alone.
    #[tokio::test]
    async fn allocations_of_a_service_whose_release_was_missed_are_freed() {
        let store: Arc<dyn Store> = MemoryStore::new();
        let kept = create_service(
            &*store,
            "kept",
            json!({"type": "NodePort",
            "ports": [{"port": 80, "protocol": "TCP"}]}),
        )
        .await;
        let lost = create_service(
            &*store,
            "lost",
            json!({"type": "NodePort",
            "ports": [{"port": 80, "protocol": "TCP"}]}),
        )
        .await;
        lose_service(&*store, "lost").await;
        let lost_ip = lost["spec"]["clusterIP"].as_str().unwrap();
        let lost_port = lost["spec"]["ports"][0]["nodePort"].as_u64().unwrap();

        let mut repair = Repair::new(store.clone(), false);
        let start = SystemTime::now();
        // Within the grace the address may belong to a Service being created; the port is
        // flagged, not freed.
        let report = repair.run_once(start).await.unwrap();
        assert_eq!(report, Report::default());
        assert!(exists(&*store, &ip_key(lost_ip)).await);

        let later = start + IP_GRACE + Duration::from_secs(1);
        let report = repair.run_once(later).await.unwrap();
        assert_eq!(report.released_ips, [lost_ip]);
        assert!(report.released_ports.is_empty(), "{report:?}");
        let report = repair.run_once(later).await.unwrap();
        assert_eq!(report.released_ports, [lost_port as u16]);
        assert!(!exists(&*store, &ip_key(lost_ip)).await);
        assert!(!exists(&*store, &port_key(lost_port)).await);

        // The live Service keeps both.
        let kept_ip = kept["spec"]["clusterIP"].as_str().unwrap();
        let kept_port = kept["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
        assert!(exists(&*store, &ip_key(kept_ip)).await);
        assert!(exists(&*store, &port_key(kept_port)).await);
        for _ in 0..PORT_REPAIRS {
            assert_eq!(repair.run_once(later).await.unwrap(), Report::default());
        }

        // A freed address and port can be asked for again.
        create_service(
            &*store,
            "again",
            json!({"type": "NodePort", "clusterIP": lost_ip,
            "ports": [{"port": 80, "protocol": "TCP", "nodePort": lost_port}]}),
        )
        .await;
    }

    /// An allocation in flight (claimed, its Service not yet stored) is never freed: the
    /// address within the grace, the port until it has been seen unheld PORT_REPAIRS times.
    #[tokio::test]
    async fn an_allocation_in_flight_is_kept() {
        let store: Arc<dyn Store> = MemoryStore::new();
        let mut svc = json!({"metadata": {"namespace": "default", "name": "slow"},
            "spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}});
        services::allocate(&*store, &mut svc).await.unwrap();
        let mut repair = Repair::new(store.clone(), false);
        let now = SystemTime::now();
        for _ in 0..PORT_REPAIRS - 1 {
            assert_eq!(repair.run_once(now).await.unwrap(), Report::default());
        }
        // Now the Service is stored: the count starts over and nothing is ever freed.
        let key = registry::find("", "v1", "services")
            .unwrap()
            .key("default", "slow");
        store
            .create(&key, serde_json::to_vec(&svc).unwrap(), None)
            .await
            .unwrap();
        for _ in 0..2 * PORT_REPAIRS {
            let later = now + IP_GRACE * 2;
            assert_eq!(repair.run_once(later).await.unwrap(), Report::default());
        }
    }

    /// An update that turns a NodePort Service into a ClusterIP one drops its ports without a
    /// release; the repair frees them. An address whose Service exists but holds another is freed
    /// at once; a Service's address or port with no record is recorded again.
    #[tokio::test]
    async fn dropped_ports_wrong_references_and_lost_records() {
        let store: Arc<dyn Store> = MemoryStore::new();
        let svc = create_service(
            &*store,
            "web",
            json!({"type": "NodePort",
            "ports": [{"port": 80, "protocol": "TCP"}]}),
        )
        .await;
        let key = registry::find("", "v1", "services")
            .unwrap()
            .key("default", "web");
        let port = svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
        let mut changed = svc.clone();
        changed["spec"]["type"] = json!("ClusterIP");
        changed["spec"]["ports"][0]
            .as_object_mut()
            .unwrap()
            .remove("nodePort");
        let kv = store.get(&key, None).await.unwrap().unwrap();
        store
            .update(
                &key,
                serde_json::to_vec(&changed).unwrap(),
                kv.mod_revision,
                None,
            )
            .await
            .unwrap();
        // A stray address claimed for "web", which holds another one.
        assert!(
            services::claim_ip(&*store, "10.96.7.7", "default", "web")
                .await
                .unwrap()
        );
        // And the record of web's own address lost.
        let ip = svc["spec"]["clusterIP"].as_str().unwrap();
        store.delete(&ip_key(ip), None).await.unwrap();

        let mut repair = Repair::new(store.clone(), false);
        let now = SystemTime::now();
        let first = repair.run_once(now).await.unwrap();
        assert_eq!(first.released_ips, ["10.96.7.7"]);
        assert_eq!(first.restored_ips, [ip]);
        assert!(exists(&*store, &ip_key(ip)).await);
        let mut released = first.released_ports;
        for _ in 1..PORT_REPAIRS {
            released.extend(repair.run_once(now).await.unwrap().released_ports);
        }
        assert_eq!(released, [port as u16]);

        // A port record lost while its Service still holds it is claimed again.
        let np = create_service(
            &*store,
            "np",
            json!({"type": "NodePort",
            "ports": [{"port": 80, "protocol": "TCP"}]}),
        )
        .await;
        let np_port = np["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
        store.delete(&port_key(np_port), None).await.unwrap();
        let report = repair.run_once(now).await.unwrap();
        assert_eq!(report.restored_ports, [np_port as u16]);
        assert!(exists(&*store, &port_key(np_port)).await);
    }
}
