//! Virtual nodes: each host node that runs a virtual pod appears in the virtual cluster under its
//! own name, with its labels, taints, capacity, conditions and addresses (vcluster's default),
//! kept current, and removed when the host node goes. With `sync.fromHost.nodes.enabled`, every
//! host node matching its selector is mirrored, pods or not.
//!
//! Fake nodes: reading host nodes needs the optional ClusterRole (deploy/host-rbac.yaml). When
//! the host refuses it (403; see access.rs, decided once per run), a virtual node is made from
//! what the syncer knows, as vcluster's fake nodes are (`sync.fromHost.nodes.enabled: false`,
//! pkg/controllers/resources/nodes/fake_syncer.go): the host pod's node name, vcluster's labels
//! (`vcluster.loft.sh/fake-node: "true"`, `kubernetes.io/hostname: fake-NAME`, linux, the
//! syncer's architecture) and annotations, vcluster's fixed capacity (16 CPUs, 32Gi, 100Gi of
//! ephemeral storage, 110 pods), Ready, and the kubelet version of the virtual cluster's. Where
//! vcluster gives a fake node its kubelet proxy's address, vkube gives it the host pod's
//! `status.hostIP` as InternalIP; and vkube keeps the Ready heartbeat current (at most
//! `HEARTBEAT` + one pass old), which vcluster does not. As vcluster does, a fake node goes when
//! no virtual pod but DaemonSet ones is bound to it. A fake node made in an earlier run stays
//! fake until it goes, even once the host shows nodes; without the ClusterRole, a node mirrored
//! in an earlier run is kept like a fake one (status and removal), its labels unchanged.

use crate::access::{self, Read};
use crate::{Config, Error, names, write_status};
use aws_lc_rs::digest;
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
    NodeSystemInfo, Pod,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::sync::RwLock;

/// vcluster's label of a fake node.
pub const FAKE_NODE_LABEL: &str = "vcluster.loft.sh/fake-node";
/// A fake node's Ready heartbeat is renewed once it is this old (the node loop runs every 10 s,
/// so it is never older than 30 s: under the node lifecycle controller's 40 s grace period).
const HEARTBEAT: SignedDuration = SignedDuration::from_secs(20);

/// Held (shared) by a pod's binding from the check that its node exists until the binding is
/// written, and (exclusive) by the removal of an unused fake node from the count of its pods to
/// its delete: a pod is never bound to a node removed meanwhile.
fn binding_lock() -> &'static RwLock<()> {
    static LOCK: OnceLock<RwLock<()>> = OnceLock::new();
    LOCK.get_or_init(|| RwLock::new(()))
}

/// Taken by a pod's binding around `ensure` and the binding itself.
pub async fn binding() -> tokio::sync::RwLockReadGuard<'static, ()> {
    binding_lock().read().await
}

/// Makes the virtual node `name` if it does not exist yet: from the host node, or a fake node if
/// the host refuses to show its nodes. `host_ip`: the address of a host pod on it, if known.
pub async fn ensure(config: &Config, name: &str, host_ip: Option<&str>) -> Result<(), Error> {
    let virtual_nodes: Api<Node> = Api::all(config.virtual_client.clone());
    if virtual_nodes.get_opt(name).await?.is_some() {
        return Ok(());
    }
    let access = access::of(config);
    let mut from_host = None;
    if access.allowed(Read::Nodes) {
        let host: Api<Node> = Api::all(config.host_client.clone());
        match host.get(name).await {
            Ok(h) => from_host = Some(h),
            Err(e) if access.refused(Read::Nodes, &e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let (node, status) = match from_host {
        Some(h) => (virtual_node(&h, &config.cluster), h.status),
        None => {
            let version = virtual_version(config).await?;
            let now = Timestamp::now();
            tracing::info!(node = %name, "making a fake node");
            (
                fake_node(name, &config.cluster),
                Some(fake_status(name, host_ip, &version, now, None)),
            )
        }
    };
    match virtual_nodes.create(&PostParams::default(), &node).await {
        Ok(created) => {
            let mut next = created;
            next.status = status;
            write_status(&virtual_nodes, &next).await.map(|_| ())
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The virtual cluster's version (vkube's own `/version`), asked once per run: fake nodes'
/// kubelet version, as vcluster's (FakeNodesVersion, set from the virtual server's version).
async fn virtual_version(config: &Config) -> Result<String, Error> {
    let access = access::of(config);
    let version = access
        .virtual_version
        .get_or_try_init(|| async {
            config
                .virtual_client
                .apiserver_version()
                .await
                .map(|info| info.git_version)
        })
        .await?;
    Ok(version.clone())
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

/// Whether a virtual node is a fake one (by vcluster's label).
pub fn is_fake(node: &Node) -> bool {
    node.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(FAKE_NODE_LABEL))
        .is_some_and(|v| v == "true")
}

/// The architecture of this process in Kubernetes' (Go's) spelling: vcluster labels fake nodes
/// with its own (`runtime.GOARCH`), the host's nodes being taken to match.
fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// `fake-NAME`, as vcluster's hostname label of a fake node (translate.SafeConcatName: past 63
/// characters, 52 of them, a dash and 10 hex digits of the SHA-256 of the whole).
fn fake_hostname(name: &str) -> String {
    let full = format!("fake-{name}");
    if full.len() <= 63 {
        return full;
    }
    let digest = digest::digest(&digest::SHA256, full.as_bytes());
    let hex: String = digest.as_ref()[..5]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{}-{hex}", &full[..52]).replace(".-", "-")
}

/// The metadata and spec of the fake node `name` (vcluster's labels and annotations, no taints).
pub fn fake_node(name: &str, cluster: &str) -> Node {
    let labels = BTreeMap::from(
        [
            (FAKE_NODE_LABEL, "true".to_string()),
            ("beta.kubernetes.io/arch", arch().to_string()),
            ("beta.kubernetes.io/os", "linux".to_string()),
            ("kubernetes.io/arch", arch().to_string()),
            ("kubernetes.io/hostname", fake_hostname(name)),
            ("kubernetes.io/os", "linux".to_string()),
            (names::CLUSTER_LABEL, cluster.to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    );
    let annotations = BTreeMap::from(
        [
            ("node.alpha.kubernetes.io/ttl", "0"),
            (
                "volumes.kubernetes.io/controller-managed-attach-detach",
                "false",
            ),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    Node {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(NodeSpec::default()),
        status: None,
    }
}

/// A stable GUID-shaped id of the fake node `name` (vcluster's are random, and look right only).
fn fake_id(name: &str, what: &str) -> String {
    let digest = digest::digest(&digest::SHA256, format!("{what}\0{name}").as_bytes());
    let hex: String = digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The status of the fake node `name` at `now`: vcluster's fixed capacity, conditions and
/// system info, the kubelet version `version`, and the InternalIP `host_ip` (else the one it had).
/// A condition that keeps its status keeps its transition time from `previous`.
pub fn fake_status(
    name: &str,
    host_ip: Option<&str>,
    version: &str,
    now: Timestamp,
    previous: Option<&NodeStatus>,
) -> NodeStatus {
    let resources: BTreeMap<String, Quantity> = [
        ("cpu", "16"),
        ("memory", "32Gi"),
        ("ephemeral-storage", "100Gi"),
        ("hugepages-1Gi", "0"),
        ("hugepages-2Mi", "0"),
        ("pods", "110"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
    .collect();
    let condition = |type_: &str, status: &str, reason: &str, message: &str| {
        let since = previous
            .and_then(|p| p.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == type_ && c.status == status))
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or(Time(now));
        NodeCondition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: Some(reason.to_string()),
            message: Some(message.to_string()),
            last_heartbeat_time: Some(Time(now)),
            last_transition_time: Some(since),
        }
    };
    let ip = host_ip.map(str::to_string).or_else(|| {
        previous
            .and_then(|p| p.addresses.as_ref())
            .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
            .map(|a| a.address.clone())
    });
    let mut addresses: Vec<NodeAddress> = ip
        .into_iter()
        .map(|address| NodeAddress {
            type_: "InternalIP".into(),
            address,
        })
        .collect();
    addresses.push(NodeAddress {
        type_: "Hostname".into(),
        address: name.to_string(),
    });
    NodeStatus {
        capacity: Some(resources.clone()),
        allocatable: Some(resources),
        conditions: Some(vec![
            condition(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            condition(
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
            ),
            condition(
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
            condition(
                "Ready",
                "True",
                "KubeletReady",
                "kubelet is posting ready status",
            ),
        ]),
        addresses: Some(addresses),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint { port: 10250 }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: arch().to_string(),
            boot_id: fake_id(name, "boot"),
            container_runtime_version: "docker://19.3.12".into(),
            kernel_version: "4.19.76-fakelinux".into(),
            kube_proxy_version: version.to_string(),
            kubelet_version: version.to_string(),
            machine_id: fake_id(name, "machine").replace('-', ""),
            operating_system: "linux".into(),
            os_image: "Fake Kubernetes Image".into(),
            system_uuid: fake_id(name, "system"),
            ..Default::default()
        }),
        images: Some(vec![]),
        ..Default::default()
    }
}

/// The status a fake node should get now, if it needs a write: its content differs from the
/// wanted one (heartbeats aside), or its Ready heartbeat is `HEARTBEAT` old.
pub fn fake_status_update(
    node: &Node,
    host_ip: Option<&str>,
    version: &str,
    now: Timestamp,
) -> Option<NodeStatus> {
    let name = node.metadata.name.as_deref().unwrap_or_default();
    let current = node.status.as_ref();
    let wanted = fake_status(name, host_ip, version, now, current);
    let without_heartbeats = |s: &NodeStatus| {
        let mut s = s.clone();
        for c in s.conditions.iter_mut().flatten() {
            c.last_heartbeat_time = None;
        }
        s
    };
    let heartbeat = current
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_heartbeat_time.as_ref())
        .map(|t| t.0);
    let fresh = heartbeat.is_some_and(|t| now.duration_since(t) < HEARTBEAT);
    let same = current.is_some_and(|c| without_heartbeats(c) == without_heartbeats(&wanted));
    (!same || !fresh).then_some(wanted)
}

/// Whether a virtual pod keeps its node: vcluster counts every pod bound to a fake node but those
/// of DaemonSets (which would keep every node forever).
fn keeps_node(pod: &Pod) -> bool {
    !pod.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.api_version == "apps/v1" && o.kind == "DaemonSet")
}

/// Keeps the virtual nodes' status current, and deletes a virtual node whose host node is gone
/// (or, for a fake node, that no virtual pod uses any more).
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
    let access = access::of(&config);
    let mut warned = false;
    loop {
        // `sync.fromHost.nodes.enabled`: every host node that matches, pods or not.
        if config.settings.all_nodes && access.allowed(Read::Nodes) {
            match host.list(&wanted).await {
                Ok(list) => {
                    for node in list.items {
                        let name = node.metadata.name.unwrap_or_default();
                        if let Err(err) = ensure(&config, &name, None).await {
                            tracing::warn!(%err, node = %name, "mirroring a host node");
                        }
                    }
                }
                Err(err) if access.refused(Read::Nodes, &err) => {}
                Err(err) => tracing::warn!(%err, "listing host nodes"),
            }
        }
        // Refused here or by any other read of a host node: said once.
        if config.settings.all_nodes && !access.allowed(Read::Nodes) && !warned {
            warned = true;
            tracing::warn!(
                "sync.fromHost.nodes.enabled needs the host's nodes (the ClusterRole of \
                 deploy/host-rbac.yaml): only the nodes of virtual pods appear, as fake nodes"
            );
        }
        match virtual_nodes.list(&ours).await {
            Ok(list) => {
                for node in list.items {
                    let result = if !is_fake(&node) && access.allowed(Read::Nodes) {
                        match refresh(&virtual_nodes, &host, &node).await {
                            Err(Error::Kube(e)) if access.refused(Read::Nodes, &e) => {
                                keep_fake(&config, &virtual_nodes, &node).await
                            }
                            other => other,
                        }
                    } else {
                        keep_fake(&config, &virtual_nodes, &node).await
                    };
                    if let Err(err) = result {
                        tracing::warn!(%err, "virtual node sync");
                    }
                }
            }
            Err(err) => tracing::warn!(%err, "listing virtual nodes"),
        }
        tokio::time::sleep(config.resync.min(Duration::from_secs(10))).await;
    }
}

async fn refresh(virtual_nodes: &Api<Node>, host: &Api<Node>, node: &Node) -> Result<(), Error> {
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
            let mut next = node.clone();
            next.status = h.status;
            write_status(virtual_nodes, &next).await.map(|_| ())
        }
        Some(_) => Ok(()),
    }
}

/// A fake node: deleted once no virtual pod (but DaemonSet ones) is bound to it, else its status
/// kept current (heartbeat, the InternalIP of the host pods on it).
async fn keep_fake(config: &Config, virtual_nodes: &Api<Node>, node: &Node) -> Result<(), Error> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let pods: Api<Pod> = Api::all(config.virtual_client.clone());
    let on_node = ListParams::default().fields(&format!("spec.nodeName={name}"));
    let host_ip = {
        // No pod is bound between the count and the delete (see `binding_lock`).
        let _exclusive = binding_lock().write().await;
        let pods = pods.list(&on_node).await?.items;
        if !pods.iter().any(keeps_node) {
            tracing::info!(node = %name, "no virtual pod runs on the fake node; deleting it");
            return crate::delete_exact(virtual_nodes, node).await;
        }
        pods.iter()
            .find_map(|p| p.status.as_ref().and_then(|s| s.host_ip.clone()))
    };
    let version = virtual_version(config).await?;
    if let Some(status) = fake_status_update(node, host_ip.as_deref(), &version, Timestamp::now()) {
        let mut next = node.clone();
        next.status = Some(status);
        write_status(virtual_nodes, &next).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock;
    use serde_json::{Value, json};

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    #[test]
    fn a_fake_node_has_vclusters_shape() {
        let node = fake_node("worker-1", "vc");
        let labels = node.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[FAKE_NODE_LABEL], "true");
        assert_eq!(labels["kubernetes.io/hostname"], "fake-worker-1");
        assert_eq!(labels["kubernetes.io/os"], "linux");
        assert_eq!(labels["beta.kubernetes.io/os"], "linux");
        assert_eq!(labels["kubernetes.io/arch"], arch());
        assert_eq!(labels[names::CLUSTER_LABEL], "vc");
        assert!(is_fake(&node));
        assert!(node.spec.unwrap().taints.is_none());
        assert_eq!(
            node.metadata.annotations.unwrap()["node.alpha.kubernetes.io/ttl"],
            "0"
        );

        let status = fake_status("worker-1", Some("10.0.0.7"), "v1.33.0-vkube.1", at(0), None);
        let v = serde_json::to_value(&status).unwrap();
        assert_eq!(
            v["capacity"],
            json!({"cpu": "16", "memory": "32Gi",
            "ephemeral-storage": "100Gi", "hugepages-1Gi": "0", "hugepages-2Mi": "0", "pods": "110"})
        );
        assert_eq!(v["allocatable"], v["capacity"]);
        assert_eq!(
            v["addresses"],
            json!([{"type": "InternalIP", "address": "10.0.0.7"},
                   {"type": "Hostname", "address": "worker-1"}])
        );
        let conditions = status.conditions.as_ref().unwrap();
        let ready = conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "True");
        assert_eq!(ready.last_heartbeat_time, Some(Time(at(0))));
        assert!(
            conditions
                .iter()
                .filter(|c| c.type_ != "Ready")
                .all(|c| c.status == "False")
        );
        let info = status.node_info.as_ref().unwrap();
        assert_eq!(info.kubelet_version, "v1.33.0-vkube.1");
        assert_eq!(info.kube_proxy_version, "v1.33.0-vkube.1");
        assert_eq!(
            (info.operating_system.as_str(), info.architecture.as_str()),
            ("linux", arch())
        );
        assert_eq!(info.system_uuid.len(), 36);
        assert_eq!(info.machine_id.len(), 32);
        assert_eq!(v["daemonEndpoints"]["kubeletEndpoint"]["Port"], 10250);
        // The same name gives the same ids (a restart does not "reboot" the node).
        assert_eq!(
            fake_status("worker-1", None, "v", at(9), None).node_info,
            fake_status("worker-1", None, "v", at(9), None).node_info
        );
    }

    #[test]
    fn a_long_node_name_gets_vclusters_truncated_hostname_label() {
        let name = format!("{}.compute.internal", "ip-10-44-12-111-".repeat(4));
        let label = fake_hostname(&name);
        assert_eq!(label.len(), 63);
        assert!(label.starts_with("fake-ip-10-44-12-111-"));
        assert!(label.chars().last().unwrap().is_ascii_alphanumeric());
        assert_eq!(label, fake_hostname(&name));
        // A cut ending in '.' does not give ".-".
        let dotted = format!("{}.{}", "a".repeat(46), "b".repeat(30));
        assert!(!fake_hostname(&dotted).contains(".-"));
    }

    #[test]
    fn the_heartbeat_is_renewed_when_old_and_the_address_follows_the_host_pods() {
        let mut node = fake_node("n", "vc");
        // No status yet (made in an earlier run, or a mirrored node without the ClusterRole).
        assert!(fake_status_update(&node, None, "v", at(0)).is_some());
        node.status = Some(fake_status("n", Some("10.0.0.1"), "v", at(0), None));
        assert_eq!(fake_status_update(&node, None, "v", at(5)), None);
        assert_eq!(
            fake_status_update(&node, Some("10.0.0.1"), "v", at(19)),
            None
        );
        // Old heartbeat: renewed, transition times kept, the address kept.
        let renewed = fake_status_update(&node, None, "v", at(20)).unwrap();
        let ready = renewed
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.last_heartbeat_time, Some(Time(at(20))));
        assert_eq!(ready.last_transition_time, Some(Time(at(0))));
        assert_eq!(renewed.addresses.as_ref().unwrap()[0].address, "10.0.0.1");
        // A new host IP, or a new version: written at once.
        let moved = fake_status_update(&node, Some("10.0.0.2"), "v", at(1)).unwrap();
        assert_eq!(moved.addresses.as_ref().unwrap()[0].address, "10.0.0.2");
        assert!(fake_status_update(&node, None, "v2", at(1)).is_some());
        // A node whose status came from the host (mirrored in an earlier run) becomes fake's.
        node.status = Some(NodeStatus {
            capacity: Some([("cpu".to_string(), Quantity("4".into()))].into()),
            ..Default::default()
        });
        assert!(fake_status_update(&node, None, "v", at(0)).is_some());
    }

    /// The scripted virtual API: nodes absent until created, writes echoed, pods on a node as
    /// `pods` lists them.
    async fn virtual_api(pods: Value) -> mock::Api {
        mock::serve(move |method, path, body| match method {
            "GET" if path == "/version" => mock::version(),
            "GET" if path.starts_with("/api/v1/nodes/") => mock::status(404, "NotFound"),
            "GET" if path.starts_with("/api/v1/pods?") => (
                200,
                json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": pods}),
            ),
            "POST" | "PUT" => (200, body.clone()),
            "DELETE" => (
                200,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
            ),
            _ => mock::status(500, "Unexpected"),
        })
        .await
    }

    fn writes(api: &mock::Api, method: &str) -> Vec<(String, Value)> {
        api.requests()
            .into_iter()
            .filter(|r| r.0 == method)
            .map(|r| (r.1, r.2))
            .collect()
    }

    #[tokio::test]
    async fn the_first_refusal_of_host_nodes_makes_fake_nodes_for_the_run() {
        let host = mock::serve(|_, _, _| mock::status(403, "Forbidden")).await;
        let virt = virtual_api(json!([])).await;
        let config = mock::config(&virt, &host, "fake-nodes");
        access::start(&config);
        ensure(&config, "n1", Some("10.0.0.7")).await.unwrap();
        ensure(&config, "n2", None).await.unwrap();
        // The host was asked once: its refusal holds for the run.
        assert_eq!(host.requests().len(), 1);
        assert_eq!(host.requests()[0].1, "/api/v1/nodes/n1");
        let created = writes(&virt, "POST");
        assert_eq!(created.len(), 2);
        for (_, node) in &created {
            assert_eq!(node["metadata"]["labels"][FAKE_NODE_LABEL], "true");
            assert_eq!(node["metadata"]["labels"][names::CLUSTER_LABEL], "vc");
        }
        let statuses = writes(&virt, "PUT");
        assert_eq!(statuses[0].0, "/api/v1/nodes/n1/status?");
        let status = &statuses[0].1["status"];
        assert_eq!(status["nodeInfo"]["kubeletVersion"], "v1.33.0-vkube.9");
        assert_eq!(
            status["addresses"][0],
            json!({"type": "InternalIP", "address": "10.0.0.7"})
        );
        // The virtual cluster's version was asked once too.
        let asked = virt.requests().iter().filter(|r| r.1 == "/version").count();
        assert_eq!(asked, 1);
        // A new run asks the host again.
        access::start(&config);
        ensure(&config, "n3", None).await.unwrap();
        assert_eq!(host.requests().len(), 2);
    }

    #[tokio::test]
    async fn other_host_errors_are_no_refusal_and_a_readable_node_is_mirrored() {
        let host = mock::serve(|_, path, _| match path {
            "/api/v1/nodes/down" => mock::status(500, "InternalError"),
            _ => (
                200,
                json!({"apiVersion": "v1", "kind": "Node",
                       "metadata": {"name": "real", "labels": {"zone": "a"}},
                       "status": {"capacity": {"cpu": "4"}}}),
            ),
        })
        .await;
        let virt = virtual_api(json!([])).await;
        let config = mock::config(&virt, &host, "real-nodes");
        access::start(&config);
        assert!(ensure(&config, "down", None).await.is_err());
        assert!(access::of(&config).allowed(Read::Nodes));
        ensure(&config, "real", None).await.unwrap();
        let (_, node) = &writes(&virt, "POST")[0];
        assert_eq!(
            node["metadata"]["labels"],
            json!({"zone": "a", "vkube.dev/cluster": "vc"})
        );
        assert_eq!(writes(&virt, "PUT")[0].1["status"]["capacity"]["cpu"], "4");
    }

    #[tokio::test]
    async fn a_fake_node_goes_once_only_daemonset_pods_are_bound_to_it() {
        let ds_pod = json!({"metadata": {"name": "ds-1", "namespace": "kube-system",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "ds", "uid": "d"}]},
            "spec": {"nodeName": "n1", "containers": []}, "status": {"hostIP": "10.0.0.9"}});
        let host = mock::serve(|_, _, _| mock::status(403, "Forbidden")).await;
        let virt = virtual_api(json!([ds_pod])).await;
        let config = mock::config(&virt, &host, "fake-node-goes");
        access::start(&config);
        let mut node = fake_node("n1", "vc");
        node.metadata.uid = Some("u1".into());
        let nodes: Api<Node> = Api::all(virt.client.clone());
        keep_fake(&config, &nodes, &node).await.unwrap();
        let listed = &virt.requests()[0].1;
        assert!(
            listed.contains("fieldSelector=spec.nodeName%3Dn1"),
            "{listed}"
        );
        let deleted = writes(&virt, "DELETE");
        assert_eq!(deleted[0].0, "/api/v1/nodes/n1?");
        assert_eq!(deleted[0].1["preconditions"]["uid"], "u1");
        assert!(writes(&virt, "PUT").is_empty());
    }

    #[tokio::test]
    async fn a_used_fake_node_stays_with_a_fresh_status_and_its_pods_host_ip() {
        let pod = json!({"metadata": {"name": "web-1", "namespace": "default"},
            "spec": {"nodeName": "n1", "containers": []}, "status": {"hostIP": "10.0.0.9"}});
        let host = mock::serve(|_, _, _| mock::status(403, "Forbidden")).await;
        let virt = virtual_api(json!([pod])).await;
        let config = mock::config(&virt, &host, "fake-node-stays");
        access::start(&config);
        let mut node = fake_node("n1", "vc");
        node.status = Some(fake_status("n1", None, "v1.33.0-vkube.9", at(0), None));
        let nodes: Api<Node> = Api::all(virt.client.clone());
        keep_fake(&config, &nodes, &node).await.unwrap();
        assert!(writes(&virt, "DELETE").is_empty());
        let status = &writes(&virt, "PUT")[0].1["status"];
        assert_eq!(status["addresses"][0]["address"], "10.0.0.9");
        // The host was not asked: a fake node is the syncer's own.
        assert!(host.requests().is_empty());
    }

    #[test]
    fn daemonset_pods_do_not_keep_a_fake_node() {
        let pod = |owner: serde_json::Value| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": "p", "ownerReferences": owner}}))
                .unwrap()
        };
        let owner = |api: &str, kind: &str| json!([{"apiVersion": api, "kind": kind, "name": "o", "uid": "u"}]);
        assert!(keeps_node(&pod(json!(null))));
        assert!(keeps_node(&pod(owner("apps/v1", "ReplicaSet"))));
        assert!(!keeps_node(&pod(owner("apps/v1", "DaemonSet"))));
    }
}
