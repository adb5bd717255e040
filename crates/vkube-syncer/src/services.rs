//! Services: a virtual Service that has a ClusterIP has a host copy, and its ClusterIP and
//! NodePorts are the host copy's (item 4). The create itself asks the host (through the server's
//! `HostServices` hook, see [`create`]), so the tenant's create already answers with the address
//! that works. The controller here then keeps the pair level: spec changes go down, a host copy
//! deleted out of band is made again with the same address, and a host copy whose virtual Service
//! is gone is deleted (rule 8: only copies whose annotations name a virtual Service).
//!
//! The host copy selects the host pods of the virtual namespace (the tenant's selector plus the
//! cluster and namespace labels), so the host's own endpoints and kube-proxy carry the traffic.

use crate::translate::Environment;
use crate::{Config, Error, names};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::watcher;
use std::sync::Arc;
use std::time::Duration;

/// Whether the host gives `svc` its addresses (headless and ExternalName Services stay virtual).
pub fn on_host(svc: &Service) -> bool {
    // `default/kubernetes` is vkube's own, on vkube's front Service on the host.
    if svc.metadata.namespace.as_deref() == Some("default")
        && svc.metadata.name.as_deref() == Some("kubernetes")
    {
        return false;
    }
    let spec = svc.spec.as_ref();
    spec.and_then(|s| s.type_.as_deref()) != Some("ExternalName")
        && spec.and_then(|s| s.cluster_ip.as_deref()) != Some("None")
}

/// The host copy of `svc`. What the virtual Service already holds (a ClusterIP, NodePorts) is
/// asked for again, so a host copy made anew keeps the addresses the tenant sees.
pub fn host_service(svc: &Service, env: &Environment) -> Service {
    let m = &svc.metadata;
    let (ns, name) = (
        m.namespace.as_deref().unwrap_or("default"),
        m.name.as_deref().unwrap_or_default(),
    );
    let mut labels = names::tenant_only(m.labels.as_ref());
    labels.extend(names::ownership_labels("Service", &env.cluster));
    let mut annotations = names::tenant_only(m.annotations.as_ref());
    annotations.extend(names::ownership_annotations(
        ns,
        name,
        m.uid.as_deref().unwrap_or_default(),
    ));
    let spec = svc.spec.clone().unwrap_or_default();
    // A selector names virtual pods: on the host, the same labels among this namespace's pods.
    let selector = spec.selector.as_ref().filter(|s| !s.is_empty()).map(|s| {
        let mut selector = names::tenant_only(Some(s));
        selector.extend(names::ownership_labels("Pod", &env.cluster));
        selector.insert(names::NAMESPACE_LABEL.into(), ns.to_string());
        selector
    });
    Service {
        metadata: ObjectMeta {
            name: Some(names::host_name("Service", ns, name, &env.cluster)),
            namespace: Some(env.host_namespace.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: spec.type_,
            ports: spec.ports,
            selector,
            cluster_ip: spec.cluster_ip,
            cluster_ips: spec.cluster_ips,
            ip_families: spec.ip_families,
            ip_family_policy: spec.ip_family_policy,
            session_affinity: spec.session_affinity,
            session_affinity_config: spec.session_affinity_config,
            external_traffic_policy: spec.external_traffic_policy,
            internal_traffic_policy: spec.internal_traffic_policy,
            publish_not_ready_addresses: spec.publish_not_ready_addresses,
            load_balancer_source_ranges: spec.load_balancer_source_ranges,
            allocate_load_balancer_node_ports: spec.allocate_load_balancer_node_ports,
            load_balancer_class: spec.load_balancer_class,
            traffic_distribution: spec.traffic_distribution,
            ..Default::default()
        }),
        status: None,
    }
}

/// What the host decided for the virtual Service: written back into it.
pub fn take_allocations(virt: &mut Service, host: &Service) {
    let (Some(v), Some(h)) = (virt.spec.as_mut(), host.spec.as_ref()) else {
        return;
    };
    v.cluster_ip = h.cluster_ip.clone();
    v.cluster_ips = h.cluster_ips.clone();
    v.ip_families = h.ip_families.clone();
    v.ip_family_policy = h.ip_family_policy.clone();
    v.health_check_node_port = h.health_check_node_port;
    for port in v.ports.iter_mut().flatten() {
        let same = h.ports.iter().flatten().find(|p| {
            p.port == port.port
                && p.protocol.as_deref().unwrap_or("TCP")
                    == port.protocol.as_deref().unwrap_or("TCP")
        });
        port.node_port = same.and_then(|p| p.node_port);
    }
}

/// Creates the host copy of a virtual Service being created, and writes the host's allocations
/// into it. A host copy left by an earlier virtual Service of the same name is replaced; a host
/// Service of that name that is not the syncer's is never touched.
pub async fn create(
    host_client: &kube::Client,
    env: &Environment,
    virt: &mut Service,
) -> Result<(), Error> {
    let api: Api<Service> = Api::namespaced(host_client.clone(), &env.host_namespace);
    let wanted = host_service(virt, env);
    let name = wanted.metadata.name.clone().unwrap_or_default();
    for _ in 0..3 {
        match api.create(&PostParams::default(), &wanted).await {
            Ok(host) => {
                take_allocations(virt, &host);
                return Ok(());
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let Some(existing) = api.get_opt(&name).await? else {
                    continue;
                };
                let owner = names::virtual_of(existing.metadata.annotations.as_ref());
                let uid = virt.metadata.uid.clone().unwrap_or_default();
                match owner {
                    Some((_, _, u)) if u == uid => {
                        take_allocations(virt, &existing);
                        return Ok(());
                    }
                    Some(_) => crate::delete_exact(&api, &existing).await?,
                    None => return Err(kube::Error::Api(e).into()),
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Invalid(format!(
        "host service {name} keeps changing; try again"
    )))
}

/// Carries an update of a virtual Service to its host copy (made anew if it is missing) and
/// writes back what the host allocated (a new NodePort, say).
pub async fn update(
    host_client: &kube::Client,
    env: &Environment,
    virt: &mut Service,
) -> Result<(), Error> {
    let api: Api<Service> = Api::namespaced(host_client.clone(), &env.host_namespace);
    let wanted = host_service(virt, env);
    let name = wanted.metadata.name.clone().unwrap_or_default();
    let Some(current) = api.get_opt(&name).await? else {
        return create(host_client, env, virt).await;
    };
    if let Some(next) = differs(&current, &wanted) {
        let host = api.replace(&name, &PostParams::default(), &next).await?;
        take_allocations(virt, &host);
    } else {
        take_allocations(virt, &current);
    }
    Ok(())
}

/// The host copy to write when `current` lags `wanted` (the host's own allocations kept).
fn differs(current: &Service, wanted: &Service) -> Option<Service> {
    let mut next = current.clone();
    next.metadata.labels = wanted.metadata.labels.clone();
    next.metadata.annotations = wanted.metadata.annotations.clone();
    let mut spec = wanted.spec.clone().unwrap_or_default();
    let have = current.spec.clone().unwrap_or_default();
    spec.cluster_ip = have.cluster_ip.clone();
    spec.cluster_ips = have.cluster_ips.clone();
    spec.ip_families = spec.ip_families.or(have.ip_families.clone());
    spec.ip_family_policy = spec.ip_family_policy.or(have.ip_family_policy.clone());
    for port in spec.ports.iter_mut().flatten() {
        if port.node_port.is_none() {
            port.node_port = have
                .ports
                .iter()
                .flatten()
                .find(|p| p.port == port.port && p.protocol == port.protocol)
                .and_then(|p| p.node_port);
        }
    }
    // Fields the host defaults (sessionAffinity, policies…) count only when the tenant set them.
    let same = |a: &ServiceSpec, b: &ServiceSpec| {
        a.type_ == b.type_
            && a.selector == b.selector
            && ports(a) == ports(b)
            && (b.session_affinity.is_none() || a.session_affinity == b.session_affinity)
            && (b.publish_not_ready_addresses.is_none()
                || a.publish_not_ready_addresses == b.publish_not_ready_addresses)
    };
    if same(&have, &spec)
        && current.metadata.labels == next.metadata.labels
        && current.metadata.annotations == next.metadata.annotations
    {
        return None;
    }
    next.spec = Some(spec);
    Some(next)
}

/// A port as compared: name, port, protocol, target port, node port.
type PortKey = (Option<String>, i32, String, Option<String>, Option<i32>);

fn ports(s: &ServiceSpec) -> Vec<PortKey> {
    s.ports
        .iter()
        .flatten()
        .map(|p| {
            (
                p.name.clone(),
                p.port,
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                p.target_port.as_ref().map(|t| match t {
                    k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(i) => {
                        i.to_string()
                    }
                    k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s) => {
                        s.clone()
                    }
                }),
                p.node_port,
            )
        })
        .collect()
}

/// Deletes the host copy of a Service that could not be stored (uid as precondition).
pub async fn release(host_client: &kube::Client, env: &Environment, virt: &Service) {
    let api: Api<Service> = Api::namespaced(host_client.clone(), &env.host_namespace);
    let name = host_service(virt, env).metadata.name.unwrap_or_default();
    if let Err(err) = crate::delete_copy_of(&api, &name, virt.metadata.uid.as_deref()).await {
        tracing::warn!(%err, service = %name, "releasing a host service");
    }
}

/// The controller that keeps each pair level, and the sweep of orphaned host copies.
pub async fn run(config: Config) -> Result<(), Error> {
    let controller = crate::paired_controller::<Service>(&config, "Service");
    let ctx = Arc::new(config.clone());
    let reconciling = controller
        .run(
            reconcile,
            |_, err, _| {
                tracing::warn!(%err, "service sync failed; retrying");
                Action::requeue(Duration::from_secs(2))
            },
            ctx,
        )
        .for_each(|r| async move {
            if let Err(err) = r {
                tracing::debug!(%err, "service reconcile");
            }
        });
    tokio::select! {
        _ = reconciling => Ok(()),
        r = sweep(config) => r,
    }
}

async fn reconcile(virt: Arc<Service>, config: Arc<Config>) -> Result<Action, Error> {
    if !on_host(&virt) || virt.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let env = config.environment();
    let api: Api<Service> = Api::namespaced(config.host_client.clone(), &config.host_namespace);
    let wanted = host_service(&virt, &env);
    let name = wanted.metadata.name.clone().unwrap_or_default();
    match api.get_opt(&name).await? {
        None => {
            // Lost on the host: made again, asking for the address the tenant already has.
            tracing::info!(service = %name, "host service missing; creating it again");
            if let Err(err) = api.create(&PostParams::default(), &wanted).await {
                tracing::warn!(%err, service = %name, "recreating a host service");
            }
        }
        Some(current) => {
            let ours = names::virtual_of(current.metadata.annotations.as_ref())
                .is_some_and(|(_, _, u)| Some(&u) == virt.metadata.uid.as_ref());
            if ours && let Some(next) = differs(&current, &wanted) {
                api.replace(&name, &PostParams::default(), &next).await?;
            }
        }
    }
    Ok(Action::requeue(config.resync))
}

/// Host copies whose virtual Service is gone (asked of the virtual API itself) are deleted. A copy
/// younger than a minute may belong to a create still in flight, so it waits for the next round.
async fn sweep(config: Config) -> Result<(), Error> {
    let api: Api<Service> = Api::namespaced(config.host_client.clone(), &config.host_namespace);
    let selector = names::selector("Service", &config.cluster);
    loop {
        tokio::time::sleep(config.resync.min(Duration::from_secs(10))).await;
        let Ok(list) = api.list(&ListParams::default().labels(&selector)).await else {
            continue;
        };
        for host in list.items {
            let Some((ns, name, uid)) = names::virtual_of(host.metadata.annotations.as_ref())
            else {
                continue;
            };
            let young = host.metadata.creation_timestamp.as_ref().is_some_and(|t| {
                k8s_openapi::jiff::Timestamp::now().duration_since(t.0)
                    < k8s_openapi::jiff::SignedDuration::from_secs(60)
            });
            if young {
                continue;
            }
            let virt: Api<Service> = Api::namespaced(config.virtual_client.clone(), &ns);
            match virt.get_opt(&name).await {
                Ok(Some(v)) if v.metadata.uid.as_deref() == Some(uid.as_str()) && on_host(&v) => {}
                Ok(_) => {
                    tracing::info!(namespace = %ns, service = %name, "deleting an orphaned host service");
                    if let Err(err) = crate::delete_exact(&api, &host).await {
                        tracing::warn!(%err, "orphan sweep of services");
                    }
                }
                Err(err) => tracing::warn!(%err, "orphan sweep of services"),
            }
        }
    }
}

/// Deletes of virtual Services: the host copy goes at once (the sweep catches what a restart
/// missed).
pub async fn follow_deletes(config: Config) -> Result<(), Error> {
    let virt: Api<Service> = Api::all(config.virtual_client.clone());
    let api: Api<Service> = Api::namespaced(config.host_client.clone(), &config.host_namespace);
    let mut events = std::pin::pin!(watcher(virt, watcher::Config::default()));
    while let Some(event) = events.next().await {
        let Ok(watcher::Event::Delete(v)) = event else {
            continue;
        };
        let name = host_service(&v, &config.environment())
            .metadata
            .name
            .unwrap_or_default();
        if let Err(err) = crate::delete_copy_of(&api, &name, v.metadata.uid.as_deref()).await {
            tracing::warn!(%err, service = %name, "deleting a host service; the sweep will retry");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_service_selects_its_namespaces_host_pods() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "team", "uid": "u1", "labels": {"vkube.dev/cluster": "forged", "app": "web"}},
            "spec": {"selector": {"app": "web", "vkube.dev/namespace": "other"}, "ports": [{"port": 80, "targetPort": 8080}], "clusterIP": "198.19.0.9"}
        }))
        .unwrap();
        let env = Environment {
            cluster: "vc".into(),
            host_namespace: "h".into(),
            vkube_ip: None,
        };
        let host = host_service(&svc, &env);
        assert_eq!(
            host.metadata.name,
            Some(names::host_name("Service", "team", "web", "vc"))
        );
        assert_eq!(
            host.metadata.labels.as_ref().unwrap()[names::CLUSTER_LABEL],
            "vc"
        );
        let spec = host.spec.unwrap();
        let selector = spec.selector.unwrap();
        assert_eq!(selector["app"], "web");
        assert_eq!(selector[names::NAMESPACE_LABEL], "team");
        assert_eq!(selector[names::CLUSTER_LABEL], "vc");
        assert_eq!(selector[names::KIND_LABEL], "pod");
        assert_eq!(spec.cluster_ip.as_deref(), Some("198.19.0.9"));
    }

    #[test]
    fn allocations_come_back_and_unchanged_copies_are_left_alone() {
        let virt: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "team", "uid": "u1"},
            "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80, "protocol": "TCP"}]}
        }))
        .unwrap();
        let env = Environment {
            cluster: "vc".into(),
            host_namespace: "h".into(),
            vkube_ip: None,
        };
        let mut host = host_service(&virt, &env);
        let spec = host.spec.as_mut().unwrap();
        spec.cluster_ip = Some("198.19.0.4".into());
        spec.ports.as_mut().unwrap()[0].node_port = Some(30080);
        spec.session_affinity = Some("None".into());
        let mut v = virt.clone();
        take_allocations(&mut v, &host);
        let vs = v.spec.as_ref().unwrap();
        assert_eq!(vs.cluster_ip.as_deref(), Some("198.19.0.4"));
        assert_eq!(vs.ports.as_ref().unwrap()[0].node_port, Some(30080));
        assert!(differs(&host, &host_service(&v, &env)).is_none());
        let mut changed = v.clone();
        changed.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].port = 81;
        let next = differs(&host, &host_service(&changed, &env)).unwrap();
        assert_eq!(next.spec.unwrap().cluster_ip.as_deref(), Some("198.19.0.4"));
    }
}
