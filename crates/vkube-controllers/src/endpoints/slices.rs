//! The `endpointslice` controller (upstream's pkg/controller/endpointslice and the reconciler of
//! k8s.io/endpointslice): for every Service with a selector, EndpointSlices per address type and
//! set of ports, each with at most `max_endpoints_per_slice` endpoints, owned by the Service (the
//! garbage collector deletes them with it). Endpoints move between slices as little as upstream
//! moves them: kept where they are, slices that change are filled up first, new ones are made
//! only for what does not fit, and a Service without endpoints gets one empty placeholder slice.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;

use super::{
    EndpointKey, HEADLESS_LABEL, MANAGED_BY_LABEL, Memberships, Plan, SERVICE_NAME_LABEL,
    TRIGGER_TIME_ANNOTATION, TriggerTimes, ZONE_LABEL, endpoint_key, find_port, hostname_for,
    is_headless, is_ipv6, live, pod_ips, pod_ref, port_key, same_beyond_key, selected_pods,
    should_be_endpoint,
};
use crate::{Context, Result};

pub(crate) const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";

pub(crate) async fn run(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let controller = Controller::new(Api::<Service>::all(client.clone()), Default::default());
    let memberships = Memberships::new(controller.store());
    let mine = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={CONTROLLER_NAME}"));
    let controller = controller
        .watches(
            Api::<Pod>::all(client.clone()),
            Default::default(),
            move |pod| memberships.services_of(&pod),
        )
        // A slice changed or deleted by someone else is put back.
        .owns(Api::<EndpointSlice>::all(client.clone()), mine)
        .reconcile_all_on(zone_changes(client));
    let triggers = Arc::new(TriggerTimes::default());
    crate::runner::drive("endpointslice", controller, ctx, move |svc, ctx| {
        let triggers = triggers.clone();
        async move { reconcile(svc, ctx, &triggers).await }
    })
    .await;
}

/// Fires when a node's zone changes (or a node comes with one): endpoints carry their node's
/// zone, so every Service is looked at again.
fn zone_changes(client: kube::Client) -> impl Stream<Item = ()> + Send + 'static {
    let mut zones: HashMap<String, Option<String>> = HashMap::new();
    watcher(Api::<Node>::all(client), Default::default())
        .default_backoff()
        .applied_objects()
        .filter_map(move |node| {
            let changed = node.ok().is_some_and(|node| {
                let zone = node_zone(&node);
                let name = node.metadata.name.unwrap_or_default();
                zones.insert(name, zone.clone()).flatten() != zone
            });
            std::future::ready(changed.then_some(()))
        })
}

fn node_zone(node: &Node) -> Option<String> {
    node.metadata
        .labels
        .as_ref()?
        .get(ZONE_LABEL)
        .filter(|z| !z.is_empty())
        .cloned()
}

pub(crate) async fn reconcile(
    svc: Arc<Service>,
    ctx: Arc<Context>,
    triggers: &TriggerTimes,
) -> Result<Action> {
    let Some(pods) = selected_pods(&ctx.client, &svc).await? else {
        return Ok(Action::await_change());
    };
    let namespace = svc.metadata.namespace.clone().unwrap_or_default();
    let name = svc.metadata.name.clone().unwrap_or_default();
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &namespace);
    let mine = format!("{SERVICE_NAME_LABEL}={name},{MANAGED_BY_LABEL}={CONTROLLER_NAME}");
    let existing = live(api.list(&ListParams::default().labels(&mine)).await?.items);
    let trigger = triggers.compute(&svc, &pods);
    let zones = node_zones(&ctx.client, &pods).await?;
    let max = usize::from(ctx.max_endpoints_per_slice.max(1));
    let mut plan = plan(&svc, &pods, &zones, existing, max);
    // Only slices of this very Service are reused: one of an older Service of the same name is
    // the garbage collector's.
    plan.recycle(|s| owned_by(s, &svc));
    for slice in plan.create.iter_mut().chain(plan.update.iter_mut()) {
        let annotations = slice.metadata.annotations.get_or_insert_with(BTreeMap::new);
        match trigger {
            Some(at) => annotations.insert(TRIGGER_TIME_ANNOTATION.into(), at.to_string()),
            None => annotations.remove(TRIGGER_TIME_ANNOTATION),
        };
        if annotations.is_empty() {
            slice.metadata.annotations = None;
        }
    }
    // No new slices for a Service being deleted: the garbage collector is taking them.
    if let Err(err) = plan
        .apply(&api, svc.metadata.deletion_timestamp.is_none())
        .await
    {
        let why = match &err {
            crate::Error::Api(e) => super::error_text(e),
            other => other.to_string(),
        };
        let message =
            format!("Error updating Endpoint Slices for Service {namespace}/{name}: {why}");
        let component = "endpoint-slice-controller";
        let reason = "FailedToUpdateEndpointSlices";
        crate::events::record_as(&ctx, component, svc.as_ref(), "Warning", reason, &message).await;
        return Err(err);
    }
    Ok(Action::await_change())
}

/// The zone of each node the pods run on, when the node exists and has one.
async fn node_zones(client: &kube::Client, pods: &[Pod]) -> Result<HashMap<String, String>> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut zones = HashMap::new();
    let mut asked = std::collections::HashSet::new();
    for pod in pods {
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
            continue;
        };
        if node.is_empty() || !asked.insert(node.to_string()) {
            continue;
        }
        if let Some(zone) = nodes.get_opt(node).await?.as_ref().and_then(node_zone) {
            zones.insert(node.to_string(), zone);
        }
    }
    Ok(zones)
}

/// The address types a Service's slices have: its `ipFamilies`; before those were set, the
/// ClusterIP's family, or both for a headless Service (upstream's `getAddressTypesForService`).
pub(crate) fn address_types(svc: &Service) -> Vec<String> {
    let spec = svc.spec.clone().unwrap_or_default();
    let mut types: Vec<String> = spec
        .ip_families
        .iter()
        .flatten()
        .filter(|f| *f == "IPv4" || *f == "IPv6")
        .cloned()
        .collect();
    types.sort();
    types.dedup();
    if !types.is_empty() {
        return types;
    }
    if !is_headless(svc) {
        let v6 = is_ipv6(spec.cluster_ip.as_deref().unwrap_or_default());
        return vec![if v6 { "IPv6" } else { "IPv4" }.to_string()];
    }
    vec!["IPv4".into(), "IPv6".into()]
}

fn owned_by(slice: &EndpointSlice, svc: &Service) -> bool {
    slice.metadata.owner_references.iter().flatten().any(|o| {
        Some(&o.uid) == svc.metadata.uid.as_ref() && o.kind == "Service" && o.api_version == "v1"
    })
}

/// Upstream's `getEndpointPorts`: each Service port the pod offers; none for a headless Service
/// without ports.
fn endpoint_ports(svc: &Service, pod: &Pod) -> Vec<EndpointPort> {
    let spec = svc.spec.clone().unwrap_or_default();
    spec.ports
        .iter()
        .flatten()
        .filter_map(|port| {
            let number = find_port(pod, port)?;
            Some(EndpointPort {
                name: Some(port.name.clone().unwrap_or_default()),
                port: Some(number),
                protocol: Some(port.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: port.app_protocol.clone(),
            })
        })
        .collect()
}

/// Upstream's `podToEndpoint`: `serving` is the pod's readiness, `terminating` its deletion,
/// and `ready` is serving and not terminating, or always with `publishNotReadyAddresses`.
fn pod_to_endpoint(
    pod: &Pod,
    zones: &HashMap<String, String>,
    svc: &Service,
    address_type: &str,
) -> Endpoint {
    let serving = crate::pods::is_ready(pod);
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let publish = svc
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        == Some(true);
    let node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty());
    Endpoint {
        addresses: pod_ips(pod)
            .iter()
            .filter_map(|ip| ip.parse::<std::net::IpAddr>().ok())
            .filter(|ip| ip.is_ipv6() == (address_type == "IPv6"))
            .map(|ip| ip.to_string())
            .collect(),
        conditions: Some(EndpointConditions {
            ready: Some(publish || (serving && !terminating)),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        hostname: hostname_for(pod, svc),
        zone: node.as_ref().and_then(|n| zones.get(n).cloned()),
        node_name: node,
        target_ref: Some(pod_ref(pod)),
        ..Endpoint::default()
    }
}

/// Upstream's `setEndpointSliceLabels`: the Service's labels (without the reserved ones) and
/// the reserved ones set by the controller; and whether the slice's own labels differed from
/// the Service's.
fn slice_labels(slice: &EndpointSlice, svc: &Service) -> (BTreeMap<String, String>, bool) {
    let reserved =
        |k: &String| k == SERVICE_NAME_LABEL || k == MANAGED_BY_LABEL || k == HEADLESS_LABEL;
    let unreserved = |labels: Option<&BTreeMap<String, String>>| -> BTreeMap<String, String> {
        labels
            .into_iter()
            .flatten()
            .filter(|(k, _)| !reserved(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let mut labels = unreserved(svc.metadata.labels.as_ref());
    let changed = unreserved(slice.metadata.labels.as_ref()) != labels;
    if is_headless(svc) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    labels.insert(
        SERVICE_NAME_LABEL.into(),
        svc.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(MANAGED_BY_LABEL.into(), CONTROLLER_NAME.into());
    (labels, changed)
}

fn new_slice(svc: &Service, ports: Vec<EndpointPort>, address_type: &str) -> EndpointSlice {
    let mut slice = EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!(
                "{}-",
                svc.metadata.name.as_deref().unwrap_or_default()
            )),
            namespace: svc.metadata.namespace.clone(),
            owner_references: Some(vec![crate::pods::controller_ref(svc)]),
            ..ObjectMeta::default()
        },
        address_type: address_type.into(),
        endpoints: Vec::new(),
        ports: Some(ports),
    };
    slice.metadata.labels = Some(slice_labels(&slice, svc).0);
    slice
}

/// What to write so that `existing` (this Service's slices) shows `pods` (upstream's
/// `Reconcile`).
pub(crate) fn plan(
    svc: &Service,
    pods: &[Pod],
    zones: &HashMap<String, String>,
    existing: Vec<EndpointSlice>,
    max: usize,
) -> Plan {
    let types = address_types(svc);
    let mut plan = Plan::default();
    let mut by_type: BTreeMap<String, Vec<EndpointSlice>> = BTreeMap::new();
    for slice in existing {
        if types.contains(&slice.address_type) {
            by_type
                .entry(slice.address_type.clone())
                .or_default()
                .push(slice);
        } else {
            plan.delete.push(slice);
        }
    }
    for t in &types {
        let existing = by_type.remove(t).unwrap_or_default();
        let part = plan_for_type(svc, pods, zones, existing, t, max);
        plan.create.extend(part.create);
        plan.update.extend(part.update);
        plan.delete.extend(part.delete);
    }
    plan
}

type Desired = (Vec<EndpointPort>, BTreeMap<EndpointKey, Endpoint>);

fn plan_for_type(
    svc: &Service,
    pods: &[Pod],
    zones: &HashMap<String, String>,
    existing: Vec<EndpointSlice>,
    address_type: &str,
    max: usize,
) -> Plan {
    let mut plan = Plan::default();
    let existing_count = existing.len();
    let mut existing_by_ports: BTreeMap<String, Vec<EndpointSlice>> = BTreeMap::new();
    for slice in existing {
        if owned_by(&slice, svc) {
            let key = port_key(slice.ports.as_ref());
            existing_by_ports.entry(key).or_default().push(slice);
        } else {
            plan.delete.push(slice);
        }
    }
    let mut desired: BTreeMap<String, Desired> = BTreeMap::new();
    for pod in pods.iter().filter(|p| should_be_endpoint(p, true)) {
        let ports = endpoint_ports(svc, pod);
        let key = port_key(Some(&ports));
        let entry = desired
            .entry(key)
            .or_insert_with(|| (ports, BTreeMap::new()));
        let endpoint = pod_to_endpoint(pod, zones, svc, address_type);
        if !endpoint.addresses.is_empty() {
            entry.1.insert(endpoint_key(&endpoint), endpoint);
        }
    }
    for (key, (ports, wanted)) in desired {
        let slices = existing_by_ports.remove(&key).unwrap_or_default();
        plan_for_ports(svc, slices, wanted, ports, address_type, max, &mut plan);
    }
    // Port sets no longer wanted.
    plan.delete
        .extend(existing_by_ports.into_values().flatten());
    // A Service with no slices left gets a placeholder, kept if it is already there.
    if existing_count == plan.delete.len() && plan.create.is_empty() {
        let placeholder = new_slice(svc, Vec::new(), address_type);
        if plan.delete.len() == 1 && same_placeholder(&plan.delete[0], &placeholder) {
            plan.delete.clear();
        } else {
            plan.create.push(placeholder);
        }
    }
    plan
}

/// Upstream's `placeholderSliceCompare`: same namespace, labels and owners, and otherwise empty.
fn same_placeholder(slice: &EndpointSlice, placeholder: &EndpointSlice) -> bool {
    let labels = |s: &EndpointSlice| s.metadata.labels.clone().unwrap_or_default();
    slice.metadata.namespace == placeholder.metadata.namespace
        && labels(slice) == labels(placeholder)
        && slice.metadata.owner_references == placeholder.metadata.owner_references
        && slice.address_type == placeholder.address_type
        && slice.endpoints.is_empty()
        && slice.ports.as_ref().is_none_or(Vec::is_empty)
}

/// Upstream's `reconcileByPortMapping` for the slices of one port set.
fn plan_for_ports(
    svc: &Service,
    existing: Vec<EndpointSlice>,
    mut wanted: BTreeMap<EndpointKey, Endpoint>,
    ports: Vec<EndpointPort>,
    address_type: &str,
    max: usize,
    plan: &mut Plan,
) {
    let mut unchanged = Vec::new();
    let mut updated = Vec::new();
    // 1. Keep the endpoints still wanted where they are, brought up to date.
    for mut slice in existing {
        let mut kept = Vec::new();
        let mut changed = false;
        for endpoint in &slice.endpoints {
            if let Some(want) = wanted.remove(&endpoint_key(endpoint)) {
                changed |= !same_beyond_key(&want, endpoint);
                kept.push(want);
            }
        }
        let (labels, labels_changed) = slice_labels(&slice, svc);
        if changed || kept.len() != slice.endpoints.len() {
            if kept.is_empty() {
                plan.delete.push(slice);
            } else {
                slice.endpoints = kept;
                slice.metadata.labels = Some(labels);
                updated.push(slice);
            }
        } else if labels_changed {
            slice.metadata.labels = Some(labels);
            updated.push(slice);
        } else {
            unchanged.push(slice);
        }
    }
    // 2. Fill the slices being written anyway, fullest first.
    if !wanted.is_empty() {
        updated.sort_by_key(|s| Reverse(s.endpoints.len()));
        for slice in &mut updated {
            fill(slice, &mut wanted, max);
        }
    }
    // 3. The rest goes into the unchanged slice it fills best, else into new slices.
    while !wanted.is_empty() {
        let reuse = (wanted.len() < max)
            .then(|| slice_to_fill(&unchanged, wanted.len(), max))
            .flatten();
        match reuse {
            Some(i) => {
                let mut slice = unchanged.remove(i);
                fill(&mut slice, &mut wanted, max);
                updated.push(slice);
            }
            None => {
                let mut slice = new_slice(svc, ports.clone(), address_type);
                fill(&mut slice, &mut wanted, max);
                plan.create.push(slice);
            }
        }
    }
    plan.update.extend(updated);
}

fn fill(slice: &mut EndpointSlice, wanted: &mut BTreeMap<EndpointKey, Endpoint>, max: usize) {
    while slice.endpoints.len() < max {
        let Some((_, endpoint)) = wanted.pop_first() else {
            break;
        };
        slice.endpoints.push(endpoint);
    }
}

/// Upstream's `getSliceToFill`: the slice that `n` more endpoints bring closest to full.
fn slice_to_fill(slices: &[EndpointSlice], n: usize, max: usize) -> Option<usize> {
    let mut best: Option<(usize, usize)> = None;
    for (i, slice) in slices.iter().enumerate() {
        let Some(room) = max.checked_sub(n + slice.endpoints.len()) else {
            continue;
        };
        if best.is_none_or(|(_, r)| room < r) && room < max {
            best = Some((i, room));
            if room == 0 {
                break;
            }
        }
    }
    best.map(|(i, _)| i)
}
