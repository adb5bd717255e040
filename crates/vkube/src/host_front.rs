//! vkube's front door on the host, and the host copies of virtual Services.
//!
//! Pods on the host reach vkube through one host Service named after the virtual cluster: 443
//! for the API, 53 (UDP and TCP) for the virtual cluster's DNS. Inside a pod of the host (the
//! chart) that Service exists and selects vkube's pods. Beside the host (`--host-kubeconfig`),
//! vkube makes it itself, without a selector, with an EndpointSlice that points at the advertise
//! address. Its ClusterIP becomes the virtual `kubernetes` Service's, pods' `KUBERNETES_SERVICE_HOST`
//! and their nameserver.

use std::net::IpAddr;
use std::pin::Pin;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, Patch, PatchParams};
use serde_json::Value;
use vkube_api::Status;
use vkube_syncer::names;
use vkube_syncer::translate::Environment;

/// The host Service through which pods reach vkube.
pub struct Front {
    pub cluster_ip: String,
}

const FIELD_MANAGER: &str = "vkube";

/// Makes sure the front Service exists. `advertise`: (address, API port, DNS port) of this
/// process, when it runs beside the host; `None` inside a pod (the chart made the Service), or
/// when pods cannot reach it (then `Ok(None)` if no such Service exists).
pub async fn ensure(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    advertise: Option<(IpAddr, u16, u16)>,
    replica: u32,
) -> Result<Option<Front>> {
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let existing = services
        .get_opt(name)
        .await
        .with_context(|| {
            format!(
                "reading host service {namespace}/{name} (the syncer needs deploy/host-rbac.yaml's permissions on the host; a pod that is not meant to sync sets automountServiceAccountToken: false)"
            )
        })?;
    let selects = existing
        .as_ref()
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.selector.as_ref())
        .is_some_and(|s| !s.is_empty());
    let ours = existing
        .as_ref()
        .and_then(|s| s.metadata.labels.as_ref())
        .and_then(|l| l.get(names::CLUSTER_LABEL))
        .is_some_and(|c| c == name);
    let Some((ip, api_port, dns_port)) = advertise.filter(|_| !selects) else {
        // In a pod: the chart's Service (if any) is the front door as it is.
        return Ok(existing
            .and_then(|s| s.spec?.cluster_ip)
            .map(|cluster_ip| Front { cluster_ip }));
    };
    if existing.is_some() && !ours {
        bail!(
            "host service {namespace}/{name} exists and is not this virtual cluster's; choose another --name"
        );
    }
    let port = |name: &str, protocol: &str, port: i32, target: u16| ServicePort {
        name: Some(name.into()),
        protocol: Some(protocol.into()),
        port,
        target_port: Some(IntOrString::Int(i32::from(target))),
        ..Default::default()
    };
    let labels = [(names::CLUSTER_LABEL.to_string(), name.to_string())].into();
    let service = Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            ports: Some(vec![
                port("https", "TCP", 443, api_port),
                port("dns", "UDP", 53, dns_port),
                port("dns-tcp", "TCP", 53, dns_port),
            ]),
            ..Default::default()
        }),
        status: None,
    };
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let applied = services
        .patch(name, &params, &Patch::Apply(&service))
        .await
        .with_context(|| format!("creating host service {namespace}/{name}"))?;
    let slice_port = |name: &str, protocol: &str, port: u16| EndpointPort {
        name: Some(name.into()),
        protocol: Some(protocol.into()),
        port: Some(i32::from(port)),
        app_protocol: None,
    };
    // One slice per replica, so replicas beside the host do not overwrite each other's endpoint
    // (kube-proxy balances over all of them), and a replica restarted on another port replaces
    // its own.
    let slice_name = format!("{name}-replica-{replica}");
    let slice = EndpointSlice {
        metadata: ObjectMeta {
            name: Some(slice_name.clone()),
            labels: Some(
                [
                    ("kubernetes.io/service-name".to_string(), name.to_string()),
                    (
                        "endpointslice.kubernetes.io/managed-by".into(),
                        "vkube.dev".into(),
                    ),
                    (names::CLUSTER_LABEL.into(), name.into()),
                ]
                .into(),
            ),
            ..Default::default()
        },
        address_type: if ip.is_ipv4() { "IPv4" } else { "IPv6" }.into(),
        endpoints: vec![Endpoint {
            addresses: vec![ip.to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false),
            }),
            ..Default::default()
        }],
        ports: Some(vec![
            slice_port("https", "TCP", api_port),
            slice_port("dns", "UDP", dns_port),
            slice_port("dns-tcp", "TCP", dns_port),
        ]),
    };
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
    slices
        .patch(&slice_name, &params, &Patch::Apply(&slice))
        .await
        .with_context(|| format!("creating host endpointslice {namespace}/{slice_name}"))?;
    let cluster_ip = applied
        .spec
        .and_then(|s| s.cluster_ip)
        .context("the host gave vkube's service no ClusterIP")?;
    Ok(Some(Front { cluster_ip }))
}

/// The server's `HostServices`: the syncer's host copies.
pub struct SyncedServices {
    pub client: kube::Client,
    pub env: Environment,
}

type Answer<'a, T> = Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

impl vkube_server::host_services::HostServices for SyncedServices {
    fn create<'a>(&'a self, svc: &'a mut Value) -> Answer<'a, Result<(), Status>> {
        Box::pin(async move {
            let mut typed = typed(svc)?;
            vkube_syncer::services::create(&self.client, &self.env, &mut typed)
                .await
                .map_err(|e| host_status(svc, e))?;
            write_back(svc, &typed)
        })
    }

    fn update<'a>(&'a self, svc: &'a mut Value) -> Answer<'a, Result<(), Status>> {
        Box::pin(async move {
            let mut typed = typed(svc)?;
            vkube_syncer::services::update(&self.client, &self.env, &mut typed)
                .await
                .map_err(|e| host_status(svc, e))?;
            write_back(svc, &typed)
        })
    }

    fn release<'a>(&'a self, svc: &'a Value) -> Answer<'a, ()> {
        Box::pin(async move {
            if let Ok(typed) = typed(svc) {
                vkube_syncer::services::release(&self.client, &self.env, &typed).await;
            }
        })
    }
}

fn typed(svc: &Value) -> Result<Service, Status> {
    serde_json::from_value(svc.clone()).map_err(|e| Status::internal(format!("service: {e}")))
}

/// The host's allocations into the stored object (the rest of it stays as the client sent it).
fn write_back(svc: &mut Value, typed: &Service) -> Result<(), Status> {
    let spec = serde_json::to_value(typed.spec.as_ref()).map_err(Status::internal)?;
    for field in [
        "clusterIP",
        "clusterIPs",
        "ipFamilies",
        "ipFamilyPolicy",
        "healthCheckNodePort",
    ] {
        if !spec[field].is_null() {
            svc["spec"][field] = spec[field].clone();
        }
    }
    let ports = spec["ports"].as_array().cloned().unwrap_or_default();
    for (port, host) in svc["spec"]["ports"]
        .as_array_mut()
        .into_iter()
        .flatten()
        .zip(ports)
    {
        if !host["nodePort"].is_null() {
            port["nodePort"] = host["nodePort"].clone();
        }
    }
    Ok(())
}

/// A host refusal in the tenant's words: the host's code and reason, the virtual Service's name
/// in place of the host copy's.
fn host_status(svc: &Value, err: vkube_syncer::Error) -> Status {
    let name = svc["metadata"]["name"].as_str().unwrap_or_default();
    match err {
        vkube_syncer::Error::Kube(kube::Error::Api(e)) => {
            let why = e
                .message
                .split_once(": ")
                .map_or(e.message.as_str(), |(_, why)| why);
            match e.code {
                422 => Status::unprocessable(match e.message.split_once(" is invalid: ") {
                    Some((_, why)) => format!("Service \"{name}\" is invalid: {why}"),
                    None => format!("Service \"{name}\" is invalid: {}", e.message),
                }),
                403 => Status::forbidden(
                    "services",
                    "",
                    name,
                    &format!("the host cluster refused it: {why}"),
                ),
                409 => Status::conflict("services", "", name, why),
                _ => Status::service_unavailable(format!(
                    "the host cluster refused the service: {}",
                    e.message
                )),
            }
        }
        other => Status::service_unavailable(format!(
            "the host cluster did not give the service an address: {other}"
        )),
    }
}
