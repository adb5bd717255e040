//! The `endpoint` controller (upstream's pkg/controller/endpoint): for every Service with a
//! selector, an Endpoints object of the same name listing the selected pods, grouped into
//! subsets by the ports they offer, ready ones as `addresses` and the others as
//! `notReadyAddresses`. A Service deleted takes its Endpoints with it; at start, Endpoints whose
//! Service is gone are deleted (upstream's `checkLeftoverEndpoints`).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Pod, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};

use super::{
    HEADLESS_LABEL, LEADER_ANNOTATION, Memberships, TRIGGER_TIME_ANNOTATION, TriggerTimes,
    find_port, hostname_for, is_headless, is_ipv6, pod_ips, pod_ref, should_be_endpoint,
};
use crate::{Context, Result};

/// Addresses one Endpoints object holds at most; beyond, it is truncated and says so.
pub(crate) const MAX_CAPACITY: usize = 1000;
pub(crate) const OVER_CAPACITY_ANNOTATION: &str = "endpoints.kubernetes.io/over-capacity";

pub(crate) async fn run(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let controller = Controller::new(Api::<Service>::all(client.clone()), Default::default());
    let memberships = Memberships::new(controller.store());
    let controller = controller
        .watches(
            Api::<Pod>::all(client.clone()),
            Default::default(),
            move |pod| memberships.services_of(&pod),
        )
        // An Endpoints object written or deleted by someone else is put back.
        .watches(
            Api::<Endpoints>::all(client.clone()),
            Default::default(),
            |ep| {
                let ns = ep.metadata.namespace.clone().unwrap_or_default();
                ep.metadata
                    .name
                    .map(|name| ObjectRef::<Service>::new(&name).within(&ns))
            },
        );
    let triggers = Arc::new(TriggerTimes::default());
    let triggers_gone = triggers.clone();
    let sync = crate::runner::drive("endpoint", controller, ctx, move |svc, ctx| {
        let triggers = triggers.clone();
        async move { reconcile(svc, ctx, &triggers).await }
    });
    tokio::join!(sync, follow_deletions(client, triggers_gone));
}

/// The ready and not-ready addresses of `svc`'s pods, grouped and sorted as upstream's
/// `RepackSubsets` does: addresses that offer the same set of ports share a subset.
pub(crate) fn desired_subsets(svc: &Service, pods: &[Pod]) -> Vec<EndpointSubset> {
    let spec = svc.spec.clone().unwrap_or_default();
    let tolerate = spec.publish_not_ready_addresses == Some(true);
    let ports = spec.ports.clone().unwrap_or_default();
    // port (None: a headless Service without ports) → (ip, uid) → (address, ready)
    type Addresses = BTreeMap<(String, String), (EndpointAddress, bool)>;
    let mut by_port: BTreeMap<String, (Option<EndpointPort>, Addresses)> = BTreeMap::new();
    for pod in pods {
        if !should_be_endpoint(pod, tolerate) {
            continue;
        }
        let Some(ip) = address_for(svc, pod) else {
            continue;
        };
        let address = EndpointAddress {
            ip: ip.clone(),
            hostname: hostname_for(pod, svc),
            node_name: pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .filter(|n| !n.is_empty()),
            target_ref: Some(pod_ref(pod)),
        };
        let ready = tolerate || crate::pods::is_ready(pod);
        let key = (ip, pod.metadata.uid.clone().unwrap_or_default());
        let mut add = |port: Option<EndpointPort>| {
            let port_key = serde_json::to_string(&port).unwrap_or_default();
            let entry = by_port
                .entry(port_key)
                .or_insert_with(|| (port, BTreeMap::new()))
                .1
                .entry(key.clone())
                .or_insert_with(|| (address.clone(), ready));
            // One address ready for a port is ready, whatever else says.
            entry.1 |= ready;
        };
        if ports.is_empty() {
            if spec.cluster_ip.as_deref() == Some("None") {
                add(None);
            }
            continue;
        }
        for port in &ports {
            let Some(number) = find_port(pod, port) else {
                continue;
            };
            add(Some(EndpointPort {
                name: port.name.clone().filter(|n| !n.is_empty()),
                port: number,
                protocol: port.protocol.clone(),
                app_protocol: port.app_protocol.clone(),
            }));
        }
    }
    // The same set of addresses (with the same readiness) makes one subset with all its ports.
    type Signature = Vec<((String, String), bool)>;
    let mut subsets: BTreeMap<Signature, (Addresses, Vec<EndpointPort>)> = BTreeMap::new();
    for (_, (port, addresses)) in by_port {
        let signature = addresses
            .iter()
            .map(|(k, (_, r))| (k.clone(), *r))
            .collect();
        let entry = subsets
            .entry(signature)
            .or_insert_with(|| (addresses, Vec::new()));
        entry.1.extend(port);
    }
    subsets
        .into_values()
        .map(|(addresses, mut ports)| {
            ports.sort_by(|a, b| {
                (&a.name, a.port, &a.protocol).cmp(&(&b.name, b.port, &b.protocol))
            });
            let (ready, not_ready): (Vec<_>, Vec<_>) =
                addresses.into_values().partition(|(_, r)| *r);
            let list = |v: Vec<(EndpointAddress, bool)>| {
                Some(v.into_iter().map(|(a, _)| a).collect::<Vec<_>>()).filter(|v| !v.is_empty())
            };
            EndpointSubset {
                addresses: list(ready),
                not_ready_addresses: list(not_ready),
                ports: Some(ports).filter(|p| !p.is_empty()),
            }
        })
        .collect()
}

/// The pod's IP of the Service's (first) family, as upstream's
/// `podToEndpointAddressForService`: from `ipFamilies`, else from the ClusterIP, else (headless)
/// from the pod's own IP.
fn address_for(svc: &Service, pod: &Pod) -> Option<String> {
    let spec = svc.spec.as_ref()?;
    let ips = pod_ips(pod);
    let v6 = match spec.ip_families.as_ref().and_then(|f| f.first()) {
        Some(family) => family == "IPv6",
        None if !is_headless(svc) => is_ipv6(spec.cluster_ip.as_deref().unwrap_or_default()),
        None => ips.first().is_some_and(|ip| is_ipv6(ip)),
    };
    ips.into_iter().find(|ip| is_ipv6(ip) == v6)
}

/// Upstream's `truncateEndpoints`: beyond [`MAX_CAPACITY`] addresses, each subset keeps its
/// share (rounded up), ready addresses before not-ready ones. Returns whether it truncated.
pub(crate) fn truncate(subsets: &mut [EndpointSubset]) -> bool {
    let count = |v: &Option<Vec<EndpointAddress>>| v.as_ref().map_or(0, Vec::len);
    let ready: usize = subsets.iter().map(|s| count(&s.addresses)).sum();
    let not_ready: usize = subsets.iter().map(|s| count(&s.not_ready_addresses)).sum();
    if ready + not_ready <= MAX_CAPACITY {
        return false;
    }
    let truncate_ready = ready > MAX_CAPACITY;
    let (max, total) = if truncate_ready {
        (MAX_CAPACITY, ready)
    } else {
        (MAX_CAPACITY - ready, not_ready)
    };
    let mut room = max;
    for subset in subsets.iter_mut() {
        let here = if truncate_ready {
            count(&subset.addresses)
        } else {
            count(&subset.not_ready_addresses)
        };
        let share = (here * max).div_ceil(total).min(room);
        let list = if truncate_ready {
            subset.not_ready_addresses = None;
            &mut subset.addresses
        } else {
            &mut subset.not_ready_addresses
        };
        if let Some(v) = list.as_mut() {
            v.truncate(share);
            room -= v.len();
        }
        if list.as_ref().is_some_and(Vec::is_empty) {
            *list = None;
        }
    }
    true
}

fn capacity_annotation_right(ep: &Endpoints) -> bool {
    let total: usize = ep
        .subsets
        .iter()
        .flatten()
        .map(|s| {
            s.addresses.as_ref().map_or(0, Vec::len)
                + s.not_ready_addresses.as_ref().map_or(0, Vec::len)
        })
        .sum();
    total <= MAX_CAPACITY
        && !ep
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(OVER_CAPACITY_ANNOTATION))
}

pub(crate) async fn reconcile(
    svc: Arc<Service>,
    ctx: Arc<Context>,
    triggers: &TriggerTimes,
) -> Result<Action> {
    let Some(pods) = super::selected_pods(&ctx.client, &svc).await? else {
        // No selector: the Endpoints are the client's own to write (and mirrored).
        return Ok(Action::await_change());
    };
    let namespace = svc.metadata.namespace.clone().unwrap_or_default();
    let name = svc.metadata.name.clone().unwrap_or_default();
    // Computed on every sync, so the tracker moves on even when nothing is written.
    let trigger = triggers.compute(&svc, &pods);
    let subsets = desired_subsets(&svc, &pods);
    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &namespace);
    let current = api.get_opt(&name).await?;
    let service_labels = svc.metadata.labels.clone().unwrap_or_default();
    if let Some(current) = &current {
        let mut labels = current.metadata.labels.clone().unwrap_or_default();
        labels.remove(HEADLESS_LABEL);
        if current.subsets.clone().unwrap_or_default() == subsets
            && labels == service_labels
            && capacity_annotation_right(current)
        {
            return Ok(Action::await_change());
        }
    }
    let mut next = current.clone().unwrap_or_else(|| Endpoints {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.clone()),
            ..ObjectMeta::default()
        },
        subsets: None,
    });
    let mut labels = service_labels;
    if is_headless(&svc) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    next.metadata.labels = Some(labels).filter(|l| !l.is_empty());
    let mut subsets = subsets;
    let mut annotations = next.metadata.annotations.take().unwrap_or_default();
    match trigger {
        Some(at) => annotations.insert(TRIGGER_TIME_ANNOTATION.into(), at.to_string()),
        None => annotations.remove(TRIGGER_TIME_ANNOTATION),
    };
    if truncate(&mut subsets) {
        annotations.insert(OVER_CAPACITY_ANNOTATION.into(), "truncated".into());
    } else {
        annotations.remove(OVER_CAPACITY_ANNOTATION);
    }
    next.metadata.annotations = Some(annotations).filter(|a| !a.is_empty());
    next.subsets = Some(subsets).filter(|s| !s.is_empty());
    let written = if current.is_none() {
        api.create(&PostParams::default(), &next).await.map(drop)
    } else {
        api.replace(&name, &PostParams::default(), &next)
            .await
            .map(drop)
    };
    match written {
        Ok(()) => Ok(Action::await_change()),
        Err(kube::Error::Api(e)) if current.is_none() && super::namespace_terminating(&e) => {
            Ok(Action::await_change())
        }
        Err(err) => {
            let (reason, message) = if current.is_none() {
                let why = format!("Failed to create endpoint for service {namespace}/{name}");
                ("FailedToCreateEndpoint", why)
            } else {
                let why = format!("Failed to update endpoint {namespace}/{name}");
                ("FailedToUpdateEndpoint", why)
            };
            let message = format!("{message}: {}", super::error_text(&err));
            crate::events::record_as(
                &ctx,
                "endpoint-controller",
                &next,
                "Warning",
                reason,
                &message,
            )
            .await;
            Err(err.into())
        }
    }
}

/// Deletes the Endpoints of every Service deleted (a watch's DELETED, or a Service missing
/// from a re-list), and after the first list every Endpoints whose Service does not exist.
async fn follow_deletions(client: kube::Client, triggers: Arc<TriggerTimes>) {
    let services =
        watcher(Api::<Service>::all(client.clone()), Default::default()).default_backoff();
    let mut services = std::pin::pin!(services);
    let mut known: HashSet<(String, String)> = HashSet::new();
    let mut listing: HashSet<(String, String)> = HashSet::new();
    let mut first = true;
    let key = |s: &Service| {
        (
            s.metadata.namespace.clone().unwrap_or_default(),
            s.metadata.name.clone().unwrap_or_default(),
        )
    };
    while let Some(event) = services.next().await {
        match event {
            Ok(watcher::Event::Init) => listing.clear(),
            Ok(watcher::Event::InitApply(s)) => {
                listing.insert(key(&s));
            }
            Ok(watcher::Event::InitDone) => {
                let gone: Vec<_> = if first {
                    match Api::<Endpoints>::all(client.clone())
                        .list(&ListParams::default())
                        .await
                    {
                        Ok(all) => leftovers(all.items, &listing),
                        Err(err) => {
                            tracing::info!(%err, "endpoint controller: listing endpoints; leftovers stay");
                            Vec::new()
                        }
                    }
                } else {
                    known.difference(&listing).cloned().collect()
                };
                first = false;
                known = std::mem::take(&mut listing);
                for (ns, name) in gone {
                    delete_orphan(&client, &ns, &name).await;
                }
            }
            Ok(watcher::Event::Apply(s)) => {
                known.insert(key(&s));
            }
            Ok(watcher::Event::Delete(s)) => {
                let (ns, name) = key(&s);
                known.remove(&(ns.clone(), name.clone()));
                triggers.forget(&format!("{ns}/{name}"));
                delete_orphan(&client, &ns, &name).await;
            }
            Err(err) => tracing::debug!(%err, "endpoint controller: watching services"),
        }
    }
}

/// Endpoints whose Service is not among `services` (leader-election locks excepted).
pub(super) fn leftovers(
    endpoints: Vec<Endpoints>,
    services: &HashSet<(String, String)>,
) -> Vec<(String, String)> {
    endpoints
        .into_iter()
        .filter(|ep| {
            !ep.metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(LEADER_ANNOTATION))
        })
        .map(|ep| {
            (
                ep.metadata.namespace.unwrap_or_default(),
                ep.metadata.name.unwrap_or_default(),
            )
        })
        .filter(|k| !services.contains(k))
        .collect()
}

/// Deletes `ns/name`'s Endpoints if its Service does not exist (asked of the API, not of a
/// watch that may lag: a Service made again meanwhile keeps them). Retried with backoff a few
/// times, then left (upstream drops a key after its retries too).
pub(super) async fn delete_orphan(client: &kube::Client, ns: &str, name: &str) {
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), ns);
    let backoff = crate::runner::Backoff::default();
    for _ in 0..8 {
        let attempt = async {
            if services.get_opt(name).await?.is_some() {
                return Ok(());
            }
            let Some(ep) = endpoints.get_opt(name).await? else {
                return Ok(());
            };
            if ep
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(LEADER_ANNOTATION))
            {
                return Ok(());
            }
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: ep.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match endpoints.delete(name, &params).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
                Err(err) => Err(err),
            }
        };
        match attempt.await {
            Ok(()) => return,
            Err(err) => {
                let delay = backoff.failed(name);
                tracing::debug!(%err, ns, name, ?delay, "deleting the endpoints of a deleted service");
                tokio::time::sleep(delay).await;
            }
        }
    }
}
