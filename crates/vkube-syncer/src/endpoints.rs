//! Endpoints and EndpointSlices in the virtual cluster, as kube-controller-manager's endpoint and
//! endpointslice controllers write them: for each Service with a selector, the ready (and, for
//! slices, the not-ready and terminating) pods it selects, at their real IPs, which the syncer
//! copied from the host. Tenants' tools read them (`kubectl get endpoints`, operators), and the
//! virtual cluster's DNS answers headless names from them.

use crate::{Config, Error};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
    ServicePort,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
const CONTROLLER: &str = "endpointslice-controller.k8s.io";
const SERVICE_NAME: &str = "kubernetes.io/service-name";

/// One pod as an endpoint of one Service.
#[derive(Debug, Clone, PartialEq)]
struct Member {
    ip: String,
    ready: bool,
    terminating: bool,
    hostname: Option<String>,
    node: Option<String>,
    target: ObjectReference,
    ports: Vec<EndpointPort>,
}

fn matches(selector: &BTreeMap<String, String>, pod: &Pod) -> bool {
    let labels = pod.metadata.labels.as_ref();
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// The Service's port on this pod: a number, or the container port of that name (the pod is no
/// endpoint of the port when it has none of that name, as upstream).
fn resolve(port: &ServicePort, pod: &Pod) -> Option<EndpointPort> {
    let target = match &port.target_port {
        None => port.port,
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(name)) => pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port)?,
    };
    Some(EndpointPort {
        name: port.name.clone(),
        port: target,
        protocol: Some(port.protocol.clone().unwrap_or_else(|| "TCP".into())),
        app_protocol: port.app_protocol.clone(),
    })
}

fn member(svc: &Service, pod: &Pod) -> Option<Member> {
    let status = pod.status.as_ref()?;
    let ip = status.pod_ip.clone().filter(|ip| !ip.is_empty())?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let spec = svc.spec.as_ref()?;
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let ports = spec
        .ports
        .iter()
        .flatten()
        .map(|p| resolve(p, pod))
        .collect::<Option<Vec<_>>>()?;
    let pod_spec = pod.spec.as_ref();
    let svc_name = svc.metadata.name.as_deref();
    let hostname = pod_spec
        .filter(|s| s.subdomain.as_deref() == svc_name)
        .and_then(|s| s.hostname.clone());
    Some(Member {
        ip,
        ready: ready || spec.publish_not_ready_addresses == Some(true),
        terminating: pod.metadata.deletion_timestamp.is_some(),
        hostname,
        node: pod_spec.and_then(|s| s.node_name.clone()),
        target: ObjectReference {
            kind: Some("Pod".into()),
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        },
        ports,
    })
}

/// One subset being built: its ports, ready and not-ready addresses.
type Group = (
    Vec<EndpointPort>,
    Vec<EndpointAddress>,
    Vec<EndpointAddress>,
);

/// The Endpoints object: members grouped by their port sets, addresses sorted by IP; terminating
/// pods are left out, not-ready ones listed as such.
fn endpoints(svc: &Service, members: &[Member]) -> Endpoints {
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for m in members.iter().filter(|m| !m.terminating) {
        let key = serde_json::to_string(&m.ports).unwrap_or_default();
        let group = groups
            .entry(key)
            .or_insert_with(|| (m.ports.clone(), vec![], vec![]));
        let address = EndpointAddress {
            ip: m.ip.clone(),
            hostname: m.hostname.clone(),
            node_name: m.node.clone(),
            target_ref: Some(m.target.clone()),
        };
        if m.ready {
            group.1.push(address)
        } else {
            group.2.push(address)
        }
    }
    let subsets: Vec<EndpointSubset> = groups
        .into_values()
        .map(|(ports, mut ready, mut not_ready)| {
            ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            not_ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            EndpointSubset {
                addresses: Some(ready).filter(|a| !a.is_empty()),
                not_ready_addresses: Some(not_ready).filter(|a| !a.is_empty()),
                ports: Some(ports).filter(|p| !p.is_empty()),
            }
        })
        .collect();
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    if svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None") {
        labels.insert("service.kubernetes.io/headless".into(), String::new());
    }
    Endpoints {
        metadata: ObjectMeta {
            name: svc.metadata.name.clone(),
            namespace: svc.metadata.namespace.clone(),
            labels: Some(labels).filter(|l| !l.is_empty()),
            ..Default::default()
        },
        subsets: Some(subsets).filter(|s| !s.is_empty()),
    }
}

/// The EndpointSlice: one per Service here (upstream splits at 100 endpoints and by port set).
fn slice(svc: &Service, members: &[Member], name: Option<String>) -> EndpointSlice {
    let svc_name = svc.metadata.name.clone().unwrap_or_default();
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    labels.insert(SERVICE_NAME.into(), svc_name.clone());
    labels.insert(MANAGED_BY.into(), CONTROLLER.into());
    let ports = members.first().map(|m| {
        m.ports
            .iter()
            .map(|p| SlicePort {
                name: Some(p.name.clone().unwrap_or_default()),
                port: Some(p.port),
                protocol: p.protocol.clone(),
                app_protocol: p.app_protocol.clone(),
            })
            .collect::<Vec<_>>()
    });
    let mut sorted: Vec<&Member> = members.iter().collect();
    sorted.sort_by(|a, b| a.ip.cmp(&b.ip));
    EndpointSlice {
        metadata: ObjectMeta {
            name: name.clone(),
            generate_name: name.is_none().then(|| format!("{svc_name}-")),
            namespace: svc.metadata.namespace.clone(),
            labels: Some(labels),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Service".into(),
                name: svc_name,
                uid: svc.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: sorted
            .into_iter()
            .map(|m| Endpoint {
                addresses: vec![m.ip.clone()],
                conditions: Some(EndpointConditions {
                    ready: Some(m.ready && !m.terminating),
                    serving: Some(m.ready),
                    terminating: Some(m.terminating),
                }),
                hostname: m.hostname.clone(),
                node_name: m.node.clone(),
                target_ref: Some(m.target.clone()),
                ..Default::default()
            })
            .collect(),
        ports: ports.or_else(|| Some(vec![])),
    }
}

pub async fn run(config: Config) -> Result<(), Error> {
    let services: Api<Service> = Api::all(config.virtual_client.clone());
    let pods: Api<Pod> = Api::all(config.virtual_client.clone());
    let controller = Controller::new(services, watcher::Config::default());
    let store = controller.store();
    let controller = controller.watches(pods, watcher::Config::default(), move |pod: Pod| {
        let ns = pod.metadata.namespace.clone();
        store
            .state()
            .into_iter()
            .filter(|s| s.metadata.namespace == ns)
            .filter(|s| {
                s.spec
                    .as_ref()
                    .and_then(|sp| sp.selector.as_ref())
                    .is_some_and(|sel| !sel.is_empty() && matches(sel, &pod))
            })
            .map(|s| ObjectRef::from_obj(s.as_ref()))
            .collect::<Vec<_>>()
    });
    controller
        .run(
            reconcile,
            |_, err, _| {
                tracing::warn!(%err, "endpoints failed; retrying");
                Action::requeue(Duration::from_secs(2))
            },
            Arc::new(config),
        )
        .for_each(|r| async move {
            if let Err(err) = r {
                tracing::debug!(%err, "endpoints reconcile");
            }
        })
        .await;
    Ok(())
}

async fn reconcile(svc: Arc<Service>, config: Arc<Config>) -> Result<Action, Error> {
    let Some(selector) = svc
        .spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .filter(|s| !s.is_empty())
    else {
        // Without a selector, Endpoints are the tenant's own to write.
        return Ok(Action::await_change());
    };
    if svc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = svc.metadata.namespace.clone().unwrap_or_default();
    let name = svc.metadata.name.clone().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(config.virtual_client.clone(), &ns);
    let label_selector = selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let listed = pods
        .list(&ListParams::default().labels(&label_selector))
        .await?;
    let members: Vec<Member> = listed
        .items
        .iter()
        .filter_map(|p| member(&svc, p))
        .collect();

    let eps: Api<Endpoints> = Api::namespaced(config.virtual_client.clone(), &ns);
    let wanted = endpoints(&svc, &members);
    match eps.get_opt(&name).await? {
        None => ignore_conflict(
            eps.create(&PostParams::default(), &wanted)
                .await
                .map(|_| ()),
        )?,
        Some(current)
            if current.subsets != wanted.subsets
                || current.metadata.labels != wanted.metadata.labels =>
        {
            let mut next = wanted.clone();
            next.metadata.resource_version = current.metadata.resource_version.clone();
            ignore_conflict(
                eps.replace(&name, &PostParams::default(), &next)
                    .await
                    .map(|_| ()),
            )?;
        }
        Some(_) => {}
    }

    let slices: Api<EndpointSlice> = Api::namespaced(config.virtual_client.clone(), &ns);
    let mine = format!("{SERVICE_NAME}={name},{MANAGED_BY}={CONTROLLER}");
    let mut existing = slices
        .list(&ListParams::default().labels(&mine))
        .await?
        .items;
    existing.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let first = existing.first().cloned();
    for extra in existing.iter().skip(1) {
        let extra_name = extra.metadata.name.clone().unwrap_or_default();
        let _ = slices.delete(&extra_name, &DeleteParams::default()).await;
    }
    match first {
        None => {
            ignore_conflict(
                slices
                    .create(&PostParams::default(), &slice(&svc, &members, None))
                    .await
                    .map(|_| ()),
            )?;
        }
        Some(current) => {
            let mut wanted = slice(&svc, &members, current.metadata.name.clone());
            if current.endpoints != wanted.endpoints
                || current.ports != wanted.ports
                || current.metadata.labels != wanted.metadata.labels
            {
                wanted.metadata.resource_version = current.metadata.resource_version.clone();
                let slice_name = current.metadata.name.clone().unwrap_or_default();
                ignore_conflict(
                    slices
                        .replace(&slice_name, &PostParams::default(), &wanted)
                        .await
                        .map(|_| ()),
                )?;
            }
        }
    }
    Ok(Action::requeue(config.resync))
}

/// A conflict means someone wrote meanwhile: the watch brings the next reconcile.
fn ignore_conflict(r: Result<(), kube::Error>) -> Result<(), Error> {
    match r {
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        other => other.map_err(Error::from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, ip: &str, ready: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "team", "uid": format!("u-{name}"), "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "hostname": name, "subdomain": "web",
                     "containers": [{"name": "c", "image": "i", "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": ip,
                       "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        }))
        .unwrap()
    }

    #[test]
    fn ready_pods_are_addresses_and_named_ports_resolve() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "team", "uid": "s1"},
            "spec": {"selector": {"app": "web"}, "clusterIP": "None",
                     "ports": [{"name": "h", "port": 80, "targetPort": "http", "protocol": "TCP"}]}
        }))
        .unwrap();
        let members: Vec<_> = [
            pod("b", "198.18.0.9", true),
            pod("a", "198.18.0.5", false),
            pod("c", "", true),
        ]
        .iter()
        .filter_map(|p| member(&svc, p))
        .collect();
        assert_eq!(members.len(), 2);
        let e = endpoints(&svc, &members);
        let subset = &e.subsets.unwrap()[0];
        assert_eq!(subset.addresses.as_ref().unwrap()[0].ip, "198.18.0.9");
        assert_eq!(
            subset.addresses.as_ref().unwrap()[0].hostname.as_deref(),
            Some("b")
        );
        assert_eq!(
            subset.not_ready_addresses.as_ref().unwrap()[0].ip,
            "198.18.0.5"
        );
        assert_eq!(subset.ports.as_ref().unwrap()[0].port, 8080);
        assert!(
            e.metadata
                .labels
                .unwrap()
                .contains_key("service.kubernetes.io/headless")
        );
        let s = slice(&svc, &members, None);
        assert_eq!(s.metadata.generate_name.as_deref(), Some("web-"));
        assert_eq!(s.endpoints[0].addresses, ["198.18.0.5"]);
        assert_eq!(
            s.endpoints[0].conditions.as_ref().unwrap().ready,
            Some(false)
        );
        assert_eq!(s.ports.unwrap()[0].port, Some(8080));
    }
}
