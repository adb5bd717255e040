//! The `endpointslicemirroring` controller (upstream's pkg/controller/endpointslicemirroring):
//! Endpoints that a client wrote for a Service without a selector are mirrored into
//! EndpointSlices managed by `endpointslicemirroring-controller.k8s.io`, one per subset's port
//! set and address type, with at most 1000 addresses of a subset. Endpoints labelled
//! `endpointslice.kubernetes.io/skip-mirror: "true"` (vkube's own `default/kubernetes`, whose
//! slice the server writes) and leader-election locks are not mirrored; the mirrored slices go
//! when the Endpoints, the Service, or the Service's lack of selector goes.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{EndpointAddress, Endpoints, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use super::{
    EndpointKey, LEADER_ANNOTATION, MANAGED_BY_LABEL, Plan, SERVICE_NAME_LABEL, SKIP_MIRROR_LABEL,
    TRIGGER_TIME_ANNOTATION, endpoint_key, live, port_key, same_beyond_key, selector_of,
};
use crate::{Context, Result};

pub(crate) const CONTROLLER_NAME: &str = "endpointslicemirroring-controller.k8s.io";
/// Upstream's `--mirroring-max-endpoints-per-subset` default: a subset maps to one slice.
pub(crate) const MAX_PER_SUBSET: usize = 1000;
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

pub(crate) async fn run(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let same_name = |meta: &ObjectMeta, name: Option<&String>| {
        let ns = meta.namespace.clone().unwrap_or_default();
        name.map(|n| ObjectRef::<Endpoints>::new(n).within(&ns))
    };
    let mine = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={CONTROLLER_NAME}"));
    let controller = Controller::new(Api::<Endpoints>::all(client.clone()), Default::default())
        .watches(
            Api::<Service>::all(client.clone()),
            Default::default(),
            move |svc| same_name(&svc.metadata, svc.metadata.name.as_ref()),
        )
        .watches(Api::<EndpointSlice>::all(client), mine, move |slice| {
            let service = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL));
            same_name(&slice.metadata, service)
        });
    crate::runner::drive("endpointslicemirroring", controller, ctx, reconcile).await;
}

/// Upstream's `shouldMirror`: not opted out, and not a leader-election lock.
fn should_mirror(ep: &Endpoints) -> bool {
    let skip = ep
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SKIP_MIRROR_LABEL))
        .is_some_and(|v| v == "true");
    let lock = ep
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(LEADER_ANNOTATION));
    !skip && !lock
}

pub(crate) async fn reconcile(ep: Arc<Endpoints>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = ep.metadata.namespace.clone().unwrap_or_default();
    let name = ep.metadata.name.clone().unwrap_or_default();
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &namespace);
    let mine = format!("{SERVICE_NAME_LABEL}={name},{MANAGED_BY_LABEL}={CONTROLLER_NAME}");
    let existing = live(api.list(&ListParams::default().labels(&mine)).await?.items);
    let service = if should_mirror(&ep) {
        Api::<Service>::namespaced(ctx.client.clone(), &namespace)
            .get_opt(&name)
            .await?
    } else {
        None
    };
    // Mirrored only for an existing Service without a selector; otherwise the slices go.
    let Some(service) = service.filter(|s| selector_of(s).is_none()) else {
        let plan = Plan {
            delete: existing,
            ..Plan::default()
        };
        plan.apply(&api, false).await?;
        return Ok(Action::await_change());
    };
    if service.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let (mut plan, skipped) = plan(&ep, existing, MAX_PER_SUBSET);
    if skipped.invalid > 0 {
        let message = format!(
            "Skipped {} invalid IP addresses when mirroring to EndpointSlices",
            skipped.invalid
        );
        event(&ctx, &ep, "InvalidIPAddress", &message).await;
    }
    if skipped.over_max > 0 {
        let message = format!(
            "A max of {MAX_PER_SUBSET} addresses can be mirrored to EndpointSlices per Endpoints subset. {} addresses were skipped",
            skipped.invalid + skipped.over_max
        );
        event(&ctx, &ep, "TooManyAddressesToMirror", &message).await;
    }
    plan.recycle(|_| true);
    plan.apply(&api, ep.metadata.deletion_timestamp.is_none())
        .await?;
    Ok(Action::await_change())
}

/// Upstream's `epPortsToEpsPorts`, with the API's defaults spelled out (a name, TCP).
fn slice_ports(ports: Option<&Vec<k8s_openapi::api::core::v1::EndpointPort>>) -> Vec<EndpointPort> {
    ports
        .into_iter()
        .flatten()
        .map(|p| EndpointPort {
            name: Some(p.name.clone().unwrap_or_default()),
            port: Some(p.port),
            protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
            app_protocol: p.app_protocol.clone(),
        })
        .collect()
}

/// Upstream's `addressToEndpoint`: `None` for an address that is no IP.
fn to_endpoint(address: &EndpointAddress, ready: bool) -> Option<(Endpoint, &'static str)> {
    let ip: std::net::IpAddr = address.ip.parse().ok()?;
    let address_type = if ip.is_ipv6() { "IPv6" } else { "IPv4" };
    let endpoint = Endpoint {
        addresses: vec![ip.to_string()],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            ..EndpointConditions::default()
        }),
        target_ref: address.target_ref.clone(),
        node_name: address.node_name.clone(),
        hostname: Some(address.hostname.clone().unwrap_or_default()).filter(|h| !h.is_empty()),
        ..Endpoint::default()
    };
    Some((endpoint, address_type))
}

fn new_slice(
    ep: &Endpoints,
    ports: Vec<EndpointPort>,
    address_type: &str,
    name: Option<String>,
) -> EndpointSlice {
    let ep_name = ep.metadata.name.clone().unwrap_or_default();
    let mut labels = ep.metadata.labels.clone().unwrap_or_default();
    labels.insert(SERVICE_NAME_LABEL.into(), ep_name.clone());
    labels.insert(MANAGED_BY_LABEL.into(), CONTROLLER_NAME.into());
    let annotations: BTreeMap<String, String> = ep
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| *k != TRIGGER_TIME_ANNOTATION && *k != LAST_APPLIED)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: name.is_none().then(|| format!("{ep_name}-")),
            name,
            namespace: ep.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(annotations).filter(|a| !a.is_empty()),
            owner_references: Some(vec![crate::pods::controller_ref(ep)]),
            ..ObjectMeta::default()
        },
        address_type: address_type.into(),
        endpoints: Vec::new(),
        ports: Some(ports),
    }
}

async fn event(ctx: &Context, ep: &Endpoints, reason: &str, message: &str) {
    let component = "endpoint-slice-mirroring-controller";
    crate::events::record_as(ctx, component, ep, "Warning", reason, message).await;
}

type Desired = (String, Vec<EndpointPort>, BTreeMap<EndpointKey, Endpoint>);

/// Addresses left out of the mirror: not IPs, or beyond the max of a subset.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Skipped {
    pub invalid: usize,
    pub over_max: usize,
}

/// What to write so that `existing` mirrors `ep` (upstream's mirroring `reconcile`), and what
/// was left out.
pub(crate) fn plan(ep: &Endpoints, existing: Vec<EndpointSlice>, max: usize) -> (Plan, Skipped) {
    let mut skipped = Skipped::default();
    let key = |t: &str, ports: &Vec<EndpointPort>| format!("{t}/{}", port_key(Some(ports)));
    let mut desired: BTreeMap<String, Desired> = BTreeMap::new();
    for subset in ep.subsets.iter().flatten() {
        let ports = slice_ports(subset.ports.as_ref());
        // Both address types get an entry, so slices of a type no longer wanted go.
        for t in ["IPv4", "IPv6"] {
            desired
                .entry(key(t, &ports))
                .or_insert_with(|| (t.to_string(), ports.clone(), BTreeMap::new()));
        }
        let ready = subset.addresses.iter().flatten().map(|a| (a, true));
        let not_ready = subset
            .not_ready_addresses
            .iter()
            .flatten()
            .map(|a| (a, false));
        let mut added = 0;
        let mut all = ready.chain(not_ready);
        for (address, ready) in all.by_ref() {
            if added >= max {
                skipped.over_max += 1;
                break;
            }
            let Some((endpoint, t)) = to_endpoint(address, ready) else {
                skipped.invalid += 1;
                continue;
            };
            let entry = desired.get_mut(&key(t, &ports)).expect("made above");
            entry.2.insert(endpoint_key(&endpoint), endpoint);
            added += 1;
        }
        skipped.over_max += all.count();
    }
    let mut existing_by_key: BTreeMap<String, Vec<EndpointSlice>> = BTreeMap::new();
    for slice in existing {
        let k = key(
            &slice.address_type,
            &slice.ports.clone().unwrap_or_default(),
        );
        existing_by_key.entry(k).or_default().push(slice);
    }
    let mut plan = Plan::default();
    for (k, (t, ports, wanted)) in desired {
        let slices = existing_by_key.remove(&k).unwrap_or_default();
        plan_for_key(ep, slices, wanted, ports, &t, max, &mut plan);
    }
    plan.delete.extend(existing_by_key.into_values().flatten());
    (plan, skipped)
}

/// Upstream's mirroring `reconcileByPortMapping`: one slice per key; the first existing one is
/// rewritten when it differs, the others go.
fn plan_for_key(
    ep: &Endpoints,
    existing: Vec<EndpointSlice>,
    wanted: BTreeMap<EndpointKey, Endpoint>,
    ports: Vec<EndpointPort>,
    address_type: &str,
    max: usize,
    plan: &mut Plan,
) {
    let mut existing = existing.into_iter();
    if wanted.is_empty() {
        plan.delete.extend(existing);
        return;
    }
    let first = existing.next();
    plan.delete.extend(existing);
    let name = first.as_ref().and_then(|s| s.metadata.name.clone());
    let mut slice = new_slice(ep, ports, address_type, name);
    if let Some(first) = &first {
        let same_endpoints = first.endpoints.len() == wanted.len()
            && first.endpoints.iter().all(|e| {
                wanted
                    .get(&endpoint_key(e))
                    .is_some_and(|w| same_beyond_key(w, e))
            });
        let labels = |s: &EndpointSlice| s.metadata.labels.clone().unwrap_or_default();
        let annotations = |s: &EndpointSlice| s.metadata.annotations.clone().unwrap_or_default();
        if same_endpoints
            && labels(first) == labels(&slice)
            && annotations(first) == annotations(&slice)
        {
            return;
        }
        slice.metadata.resource_version = first.metadata.resource_version.clone();
    }
    slice.endpoints = wanted.into_values().take(max).collect();
    match first {
        Some(_) => plan.update.push(slice),
        None => plan.create.push(slice),
    }
}
