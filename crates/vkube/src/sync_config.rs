//! vcluster.yaml's `sync` keys: what the syncer copies to the host (`toHost`) and from it
//! (`fromHost`), with vcluster's defaults. A key vkube honours changes what the syncer does; a key
//! it does not support yet, set to anything but vcluster's default, is named in the startup
//! warning, as every other unknown key is.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::IgnoredAny;

type Other = BTreeMap<String, IgnoredAny>;

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct Sync {
    to_host: ToHost,
    from_host: FromHost,
    #[serde(flatten)]
    other: Other,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ToHost {
    pods: Toggle,
    services: Toggle,
    /// Accepted and changes nothing: vcluster copies the Endpoints of selector-less Services to
    /// the host, which vkube does not do yet; the virtual cluster's own Endpoints and
    /// EndpointSlices are the endpoint controllers' (`--controllers`), with or without a host.
    endpoints: Toggle,
    config_maps: Toggle,
    secrets: Toggle,
    persistent_volume_claims: Toggle,
    ingresses: Toggle,
    network_policies: Toggle,
    service_accounts: Toggle,
    pod_disruption_budgets: Toggle,
    priority_classes: Toggle,
    persistent_volumes: Toggle,
    storage_classes: Toggle,
    volume_snapshots: Toggle,
    volume_snapshot_contents: Toggle,
    custom_resources: BTreeMap<String, IgnoredAny>,
    #[serde(flatten)]
    other: Other,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct FromHost {
    nodes: Nodes,
    events: Toggle,
    storage_classes: Toggle,
    ingress_classes: Toggle,
    priority_classes: Toggle,
    runtime_classes: Toggle,
    csi_drivers: Toggle,
    csi_nodes: Toggle,
    csi_storage_capacities: Toggle,
    volume_snapshot_classes: Toggle,
    config_maps: Toggle,
    secrets: Toggle,
    custom_resources: BTreeMap<String, IgnoredAny>,
    #[serde(flatten)]
    other: Other,
}

/// `enabled` is a boolean, or `auto` for a few `fromHost` keys.
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(untagged)]
enum Switch {
    Bool(bool),
    Word(String),
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Toggle {
    enabled: Option<Switch>,
    all: Option<bool>,
    #[serde(flatten)]
    other: Other,
}

impl Toggle {
    fn on(&self, default: bool) -> bool {
        match &self.enabled {
            Some(Switch::Bool(b)) => *b,
            _ => default,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Nodes {
    enabled: Option<bool>,
    selector: NodeSelector,
    #[serde(flatten)]
    other: Other,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct NodeSelector {
    all: Option<bool>,
    labels: BTreeMap<String, String>,
    #[serde(flatten)]
    other: Other,
}

pub use vkube_syncer::Settings as SyncSettings;

impl Sync {
    /// The settings, and the dotted paths (under `sync.`) that vkube does not support yet.
    pub fn settings(&self) -> (SyncSettings, Vec<String>) {
        let mut unsupported = Vec::new();
        fn note(out: &mut Vec<String>, path: &str, other: &Other) {
            out.extend(other.keys().map(|k| format!("sync.{path}{k}")));
        }
        note(&mut unsupported, "", &self.other);
        let t = &self.to_host;
        note(&mut unsupported, "toHost.", &t.other);
        let f = &self.from_host;
        note(&mut unsupported, "fromHost.", &f.other);
        for (name, toggle) in [
            ("pods", &t.pods),
            ("services", &t.services),
            ("endpoints", &t.endpoints),
            ("configMaps", &t.config_maps),
            ("secrets", &t.secrets),
            ("persistentVolumeClaims", &t.persistent_volume_claims),
            ("ingresses", &t.ingresses),
            ("networkPolicies", &t.network_policies),
            ("serviceAccounts", &t.service_accounts),
            ("podDisruptionBudgets", &t.pod_disruption_budgets),
            ("priorityClasses", &t.priority_classes),
            ("persistentVolumes", &t.persistent_volumes),
            ("storageClasses", &t.storage_classes),
            ("volumeSnapshots", &t.volume_snapshots),
            ("volumeSnapshotContents", &t.volume_snapshot_contents),
        ] {
            note(&mut unsupported, &format!("toHost.{name}."), &toggle.other);
        }
        // Kinds vkube does not copy to the host: only "off", vcluster's default for each, is honoured.
        for (name, toggle) in [
            ("ingresses", &t.ingresses),
            ("networkPolicies", &t.network_policies),
            ("serviceAccounts", &t.service_accounts),
            ("podDisruptionBudgets", &t.pod_disruption_budgets),
            ("priorityClasses", &t.priority_classes),
            ("persistentVolumes", &t.persistent_volumes),
            ("storageClasses", &t.storage_classes),
            ("volumeSnapshots", &t.volume_snapshots),
            ("volumeSnapshotContents", &t.volume_snapshot_contents),
        ] {
            if toggle.on(false) {
                unsupported.push(format!("sync.toHost.{name}.enabled"));
            }
        }
        // ConfigMaps and Secrets: those pods use, always; `all: true` is not supported yet.
        for (name, toggle) in [("configMaps", &t.config_maps), ("secrets", &t.secrets)] {
            if toggle.all == Some(true) {
                unsupported.push(format!("sync.toHost.{name}.all"));
            }
            if !toggle.on(true) {
                unsupported.push(format!("sync.toHost.{name}.enabled"));
            }
        }
        for kind in t.custom_resources.keys() {
            unsupported.push(format!("sync.toHost.customResources.{kind}"));
        }
        note(&mut unsupported, "fromHost.nodes.", &f.nodes.other);
        note(
            &mut unsupported,
            "fromHost.nodes.selector.",
            &f.nodes.selector.other,
        );
        for (name, toggle, default) in [
            ("events", &f.events, true),
            ("storageClasses", &f.storage_classes, false),
            ("ingressClasses", &f.ingress_classes, false),
            ("priorityClasses", &f.priority_classes, false),
            ("runtimeClasses", &f.runtime_classes, false),
            ("csiDrivers", &f.csi_drivers, false),
            ("csiNodes", &f.csi_nodes, false),
            ("csiStorageCapacities", &f.csi_storage_capacities, false),
            ("volumeSnapshotClasses", &f.volume_snapshot_classes, false),
            ("configMaps", &f.config_maps, false),
            ("secrets", &f.secrets, false),
        ] {
            note(
                &mut unsupported,
                &format!("fromHost.{name}."),
                &toggle.other,
            );
            if name != "events" && toggle.on(default) {
                unsupported.push(format!("sync.fromHost.{name}.enabled"));
            }
        }
        for kind in f.custom_resources.keys() {
            unsupported.push(format!("sync.fromHost.customResources.{kind}"));
        }
        let settings = SyncSettings {
            pods: t.pods.on(true),
            services: t.services.on(true),
            persistent_volume_claims: t.persistent_volume_claims.on(true),
            events: f.events.on(true),
            all_nodes: f.nodes.enabled == Some(true),
            node_labels: f.nodes.selector.labels.clone(),
        };
        (settings, unsupported)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(yaml: &str) -> (SyncSettings, Vec<String>) {
        let s: Sync = serde_saphyr::from_str(yaml).unwrap();
        s.settings()
    }

    #[test]
    fn vclusters_defaults_need_no_warning() {
        let (s, u) = settings(
            "toHost:\n  pods: {enabled: true}\n  configMaps: {enabled: true, all: false}\n  ingresses: {enabled: false}\nfromHost:\n  events: {enabled: true}\n  storageClasses: {enabled: auto}\n  nodes: {enabled: false}\n",
        );
        assert_eq!(s, SyncSettings::default());
        assert!(u.is_empty(), "{u:?}");
    }

    #[test]
    fn what_vkube_does_not_do_is_named() {
        let (s, u) = settings(
            "toHost:\n  ingresses: {enabled: true}\n  secrets: {all: true}\n  pods: {enabled: true, translateImage: {a: b}}\n  customResources: {foos.example.com: {enabled: true}}\nfromHost:\n  nodes: {enabled: true, selector: {labels: {pool: tenant}}}\n  ingressClasses: {enabled: true}\n  events: {enabled: false}\n",
        );
        assert!(s.all_nodes);
        assert_eq!(s.node_labels["pool"], "tenant");
        assert!(!s.events);
        assert_eq!(
            u,
            [
                "sync.toHost.pods.translateImage",
                "sync.toHost.ingresses.enabled",
                "sync.toHost.secrets.all",
                "sync.toHost.customResources.foos.example.com",
                "sync.fromHost.ingressClasses.enabled",
            ]
        );
    }
}
