//! Virtual nodes: each host node that runs a virtual pod appears in the virtual cluster under its
//! own name, with its labels, taints, capacity, conditions and addresses (vcluster's default),
//! kept current, and removed when the host node goes. With `sync.fromHost.nodes.enabled`, every
//! host node matching its selector is mirrored, pods or not.

use crate::{Config, Error, names, write_status};
use k8s_openapi::api::core::v1::{Node, NodeSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use std::time::Duration;

/// Makes the virtual node `name` from the host node, if it does not exist yet.
pub async fn ensure(config: &Config, name: &str) -> Result<(), Error> {
    let virtual_nodes: Api<Node> = Api::all(config.virtual_client.clone());
    if virtual_nodes.get_opt(name).await?.is_some() {
        return Ok(());
    }
    let host: Api<Node> = Api::all(config.host_client.clone());
    let host_node = host.get(name).await?;
    let node = virtual_node(&host_node, &config.cluster);
    match virtual_nodes.create(&PostParams::default(), &node).await {
        Ok(created) => {
            let mut next = created;
            next.status = host_node.status.clone();
            write_status(&virtual_nodes, &next).await.map(|_| ())
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The virtual copy of a host node: its name, labels and taints, marked as this syncer's.
fn virtual_node(host: &Node, cluster: &str) -> Node {
    let mut labels = names::tenant_only(host.metadata.labels.as_ref());
    labels.insert(names::CLUSTER_LABEL.to_string(), cluster.to_string());
    Node {
        metadata: ObjectMeta {
            name: host.metadata.name.clone(),
            labels: Some(labels),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            taints: host.spec.as_ref().and_then(|s| s.taints.clone()),
            unschedulable: host.spec.as_ref().and_then(|s| s.unschedulable),
            ..Default::default()
        }),
        status: None,
    }
}

/// Keeps the virtual nodes' status current, and deletes a virtual node whose host node is gone.
pub async fn run(config: Config) -> Result<(), Error> {
    let virtual_nodes: Api<Node> = Api::all(config.virtual_client.clone());
    let host: Api<Node> = Api::all(config.host_client.clone());
    let ours =
        ListParams::default().labels(&format!("{}={}", names::CLUSTER_LABEL, config.cluster));
    let wanted = ListParams::default().labels(
        &config
            .settings
            .node_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
    );
    loop {
        // `sync.fromHost.nodes.enabled`: every host node that matches, pods or not.
        if config.settings.all_nodes {
            match host.list(&wanted).await {
                Ok(list) => {
                    for node in list.items {
                        let name = node.metadata.name.unwrap_or_default();
                        if let Err(err) = ensure(&config, &name).await {
                            tracing::warn!(%err, node = %name, "mirroring a host node");
                        }
                    }
                }
                Err(err) => tracing::warn!(%err, "listing host nodes"),
            }
        }
        match virtual_nodes.list(&ours).await {
            Ok(list) => {
                for node in list.items {
                    if let Err(err) = refresh(&virtual_nodes, &host, node).await {
                        tracing::warn!(%err, "virtual node sync");
                    }
                }
            }
            Err(err) => tracing::warn!(%err, "listing virtual nodes"),
        }
        tokio::time::sleep(config.resync.min(Duration::from_secs(10))).await;
    }
}

async fn refresh(virtual_nodes: &Api<Node>, host: &Api<Node>, node: Node) -> Result<(), Error> {
    let name = node.metadata.name.clone().unwrap_or_default();
    match host.get_opt(&name).await? {
        None => {
            tracing::info!(node = %name, "host node gone; deleting the virtual node");
            match virtual_nodes.delete(&name, &DeleteParams::default()).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
        Some(h) if h.status != node.status => {
            let mut next = node;
            next.status = h.status;
            write_status(virtual_nodes, &next).await.map(|_| ())
        }
        Some(_) => Ok(()),
    }
}
