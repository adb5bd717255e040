//! kube-controller-manager's three controllers of Service endpoints, with upstream 1.33's
//! semantics:
//! - `endpoint` ([`subsets`]): an Endpoints object per Service with a selector, its pods grouped
//!   into subsets of ready and not-ready addresses;
//! - `endpointslice` ([`slices`]): EndpointSlices per Service with a selector, per address type
//!   and port set, at most `--max-endpoints-per-slice` endpoints each, with the conditions
//!   ready/serving/terminating;
//! - `endpointslicemirroring` ([`mirroring`]): the Endpoints that a client wrote for a Service
//!   without a selector, mirrored into EndpointSlices.
//!
//! What they share lives here: which pods are endpoints and at which address and port, which
//! Services a pod change concerns, the last-change trigger time, and writing a plan of slices.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Mutex;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ObjectReference, Pod, Service, ServicePort};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};

use crate::Result;

pub(crate) mod mirroring;
pub(crate) mod slices;
pub(crate) mod subsets;
#[cfg(test)]
mod tests;

pub(crate) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub(crate) const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub(crate) const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
pub(crate) const SKIP_MIRROR_LABEL: &str = "endpointslice.kubernetes.io/skip-mirror";
pub(crate) const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";
/// client-go's leader-election record: Endpoints that carry it are locks, not endpoints.
pub(crate) const LEADER_ANNOTATION: &str = "control-plane.alpha.kubernetes.io/leader";
pub(crate) const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// The selector that makes a Service's endpoints the controllers' to write. Upstream tests for a
/// nil map; an empty one does not survive its storage either, so both mean "no selector".
pub(crate) fn selector_of(svc: &Service) -> Option<&BTreeMap<String, String>> {
    svc.spec
        .as_ref()?
        .selector
        .as_ref()
        .filter(|s| !s.is_empty())
}

/// The Service's endpoints are the controllers' to write: it selects pods and is no ExternalName.
pub(crate) fn managed_selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    let external = svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("ExternalName");
    if external { None } else { selector_of(svc) }
}

/// A selector map as the `labelSelector` query parameter spells it.
pub(crate) fn label_query(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The pods a Service selects, read from the API; `None` for a Service whose endpoints are not
/// the controllers' ([`managed_selector`]).
pub(crate) async fn selected_pods(
    client: &kube::Client,
    svc: &Service,
) -> Result<Option<Vec<Pod>>> {
    let Some(selector) = managed_selector(svc) else {
        return Ok(None);
    };
    let namespace = svc.metadata.namespace.as_deref().unwrap_or_default();
    let params = kube::api::ListParams::default().labels(&label_query(selector));
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&params)
        .await?;
    Ok(Some(pods.items))
}

fn matches(selector: &BTreeMap<String, String>, pod: &Pod) -> bool {
    let labels = pod.metadata.labels.as_ref();
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// Upstream's `ShouldPodBeInEndpoints`: not finished (Succeeded/Failed), with an IP, and not
/// terminating unless `include_terminating`.
pub(crate) fn should_be_endpoint(pod: &Pod, include_terminating: bool) -> bool {
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) || pod_ips(pod).is_empty() {
        return false;
    }
    include_terminating || pod.metadata.deletion_timestamp.is_none()
}

/// The pod's IPs: `podIPs`, or `podIP` when a writer set only that (the API's conversion
/// upstream fills one from the other).
pub(crate) fn pod_ips(pod: &Pod) -> Vec<String> {
    let Some(status) = pod.status.as_ref() else {
        return Vec::new();
    };
    let ips: Vec<String> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.clone())
        .filter(|ip| !ip.is_empty())
        .collect();
    if !ips.is_empty() {
        return ips;
    }
    status
        .pod_ip
        .clone()
        .filter(|ip| !ip.is_empty())
        .into_iter()
        .collect()
}

pub(crate) fn is_ipv6(ip: &str) -> bool {
    matches!(ip.parse::<IpAddr>(), Ok(IpAddr::V6(_)))
}

/// Upstream's `ShouldSetHostname`: the pod names a hostname and this Service as its subdomain.
pub(crate) fn hostname_for(pod: &Pod, svc: &Service) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let hostname = spec.hostname.as_deref().filter(|h| !h.is_empty())?;
    let same = spec.subdomain.as_deref() == svc.metadata.name.as_deref()
        && pod.metadata.namespace == svc.metadata.namespace;
    same.then(|| hostname.to_string())
}

/// Upstream's `FindPort`: a numeric target port as is; a named one is the container port of
/// that name and the Service port's protocol, in a container or a sidecar (an init container
/// that restarts always). `None`: the pod offers no such port.
pub(crate) fn find_port(pod: &Pod, port: &ServicePort) -> Option<i32> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let name = match &port.target_port {
        None => return Some(port.port),
        Some(IntOrString::Int(n)) => return Some(*n),
        Some(IntOrString::String(name)) => name,
    };
    let protocol = port.protocol.as_deref().unwrap_or("TCP");
    let spec = pod.spec.as_ref()?;
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    spec.containers
        .iter()
        .chain(sidecars)
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| {
            p.name.as_deref() == Some(name.as_str())
                && p.protocol.as_deref().unwrap_or("TCP") == protocol
        })
        .map(|p| p.container_port)
}

/// The reference to a pod that endpoints carry.
pub(crate) fn pod_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..ObjectReference::default()
    }
}

/// Upstream's `IsServiceIPSet`: a ClusterIP that is neither empty nor `None`.
pub(crate) fn is_headless(svc: &Service) -> bool {
    let ip = svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref());
    matches!(ip, None | Some("" | "None"))
}

/// Which Services a pod's change concerns: those in its namespace whose selector matches it
/// now, and those it matched when last seen (so a pod whose labels change leaves the old
/// Service's endpoints, as upstream's union of old and new memberships).
pub(crate) struct Memberships {
    services: Store<Service>,
    last: Mutex<HashMap<String, HashSet<ObjectRef<Service>>>>,
}

impl Memberships {
    pub(crate) fn new(services: Store<Service>) -> Self {
        Self {
            services,
            last: Mutex::default(),
        }
    }

    pub(crate) fn services_of(&self, pod: &Pod) -> Vec<ObjectRef<Service>> {
        let namespace = pod.metadata.namespace.clone();
        let now: HashSet<ObjectRef<Service>> = self
            .services
            .state()
            .into_iter()
            .filter(|s| s.metadata.namespace == namespace)
            .filter(|s| selector_of(s).is_some_and(|sel| matches(sel, pod)))
            .map(|s| ObjectRef::from_obj(s.as_ref()))
            .collect();
        let key = crate::runner::key(pod);
        let mut last = self.last.lock().expect("memberships lock");
        let before = if now.is_empty() {
            last.remove(&key)
        } else {
            last.insert(key, now.clone())
        };
        now.into_iter()
            .chain(before.into_iter().flatten())
            .collect()
    }
}

/// Upstream's trigger-time tracker: the time of the earliest change, since a Service's last
/// sync, that its endpoints reflect (a pod's Ready transition, or the Service's creation for a
/// Service seen for the first time). Written as `endpoints.kubernetes.io/last-change-trigger-time`.
#[derive(Default)]
pub(crate) struct TriggerTimes(Mutex<HashMap<String, Seen>>);

#[derive(Default)]
struct Seen {
    pods: HashMap<String, Timestamp>,
    service: Option<Timestamp>,
}

impl TriggerTimes {
    pub(crate) fn compute(&self, svc: &Service, pods: &[Pod]) -> Option<Timestamp> {
        let key = crate::runner::key(svc);
        let created = svc.metadata.creation_timestamp.as_ref().map(|t| t.0);
        let mut all = self.0.lock().expect("trigger times lock");
        let known = all.contains_key(&key);
        let seen = all.entry(key).or_default();
        let mut earliest: Option<Timestamp> = None;
        let mut now = HashMap::new();
        for pod in pods {
            let ready = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
                .and_then(|c| c.last_transition_time.as_ref())
                .map(|t| t.0);
            let (Some(at), Some(name)) = (ready, pod.metadata.name.clone()) else {
                continue;
            };
            if seen.pods.get(&name).is_none_or(|before| at > *before) {
                earliest = Some(earliest.map_or(at, |e| e.min(at)));
            }
            now.insert(name, at);
        }
        if let Some(at) = created
            && seen.service.is_none_or(|before| at > before)
        {
            earliest = Some(earliest.map_or(at, |e| e.min(at)));
        }
        seen.pods = now;
        seen.service = created;
        if known { earliest } else { created }
    }

    pub(crate) fn forget(&self, svc_key: &str) {
        self.0.lock().expect("trigger times lock").remove(svc_key);
    }
}

/// The identity of an endpoint within a slice (upstream's endpoint hash): its addresses, its
/// hostname and the object it points at.
pub(crate) type EndpointKey = (Vec<String>, Option<String>, Option<String>, Option<String>);

pub(crate) fn endpoint_key(e: &Endpoint) -> EndpointKey {
    let mut addresses = e.addresses.clone();
    addresses.sort();
    let target = e.target_ref.as_ref();
    (
        addresses,
        e.hostname.clone(),
        target.and_then(|t| t.namespace.clone()),
        target.and_then(|t| t.name.clone()),
    )
}

/// Upstream's `EndpointsEqualBeyondHash`: what the key leaves out is the same (node, zone,
/// conditions, the target without its resourceVersion).
pub(crate) fn same_beyond_key(a: &Endpoint, b: &Endpoint) -> bool {
    let target = |e: &Endpoint| {
        e.target_ref.clone().map(|mut t| {
            t.resource_version = None;
            t
        })
    };
    let conditions = |e: &Endpoint| {
        let c = e.conditions.clone().unwrap_or_default();
        (c.ready, c.serving, c.terminating)
    };
    a.node_name == b.node_name
        && a.zone == b.zone
        && conditions(a) == conditions(b)
        && target(a) == target(b)
}

/// A set of slice ports as one key: the same ports in any order are the same set.
pub(crate) fn port_key(ports: Option<&Vec<EndpointPort>>) -> String {
    let mut each: Vec<String> = ports
        .into_iter()
        .flatten()
        .map(|p| serde_json::to_string(p).unwrap_or_default())
        .collect();
    each.sort();
    each.join("|")
}

/// What a sync writes: slices to create, to update and to delete.
#[derive(Default, Debug)]
pub(crate) struct Plan {
    pub create: Vec<EndpointSlice>,
    pub update: Vec<EndpointSlice>,
    pub delete: Vec<EndpointSlice>,
}

impl Plan {
    /// Upstream's recycling: a slice to create instead updates a slice to delete of the same
    /// address type (when `reusable` allows it), so a sync never creates and deletes at once.
    pub(crate) fn recycle(&mut self, reusable: impl Fn(&EndpointSlice) -> bool) {
        let mut i = 0;
        while i < self.delete.len() && !self.create.is_empty() {
            let gone = &self.delete[i];
            let last = self.create.len() - 1;
            if gone.address_type == self.create[last].address_type && reusable(gone) {
                let mut slice = self.create.remove(last);
                let gone = self.delete.remove(i);
                slice.metadata.name = gone.metadata.name;
                slice.metadata.resource_version = gone.metadata.resource_version;
                self.update.push(slice);
            } else {
                i += 1;
            }
        }
    }

    /// Writes the plan; `create` false (the owner is being deleted) skips the creates.
    pub(crate) async fn apply(self, api: &Api<EndpointSlice>, create: bool) -> Result<()> {
        if create {
            for slice in &self.create {
                match api.create(&PostParams::default(), slice).await {
                    Ok(_) => {}
                    // Creates keep failing in a terminating namespace: nothing to retry.
                    Err(kube::Error::Api(e)) if namespace_terminating(&e) => return Ok(()),
                    Err(err) => return Err(err.into()),
                }
            }
        }
        for slice in &self.update {
            let name = slice.metadata.name.as_deref().unwrap_or_default();
            api.replace(name, &PostParams::default(), slice).await?;
        }
        for slice in &self.delete {
            let name = slice.metadata.name.as_deref().unwrap_or_default();
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(err) => return Err(err.into()),
            }
        }
        Ok(())
    }
}

/// The API refused a create because the namespace is being deleted (upstream's
/// `NamespaceTerminatingCause`; vkube says it in the message).
pub(crate) fn namespace_terminating(e: &kube::core::Status) -> bool {
    e.code == 403 && e.message.contains("because it is being terminated")
}

/// An error as Go's `err.Error()` reads in upstream's event messages.
pub(crate) fn error_text(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(e) => e.message.clone(),
        other => other.to_string(),
    }
}

/// Slices not being deleted: upstream drops those before reconciling.
pub(crate) fn live(slices: Vec<EndpointSlice>) -> Vec<EndpointSlice> {
    slices
        .into_iter()
        .filter(|s| s.metadata.deletion_timestamp.is_none())
        .collect()
}
