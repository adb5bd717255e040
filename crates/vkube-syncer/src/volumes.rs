//! PersistentVolumeClaims (item 6): a virtual claim has a host copy, which the host's provisioner
//! binds; the binding flows back as a virtual PersistentVolume of the host volume's name (its
//! source, capacity and node affinity as on the host, its claimRef the virtual claim) and the
//! virtual claim bound to it. A pod's `persistentVolumeClaim` volume names the host copy.
//!
//! Reading host volumes needs the optional ClusterRole (deploy/host-rbac.yaml). Without it (the
//! first 403 decides, once per run; access.rs), the virtual volume is made from the host claim's
//! binding instead (`volume_from_claim`): the same name, capacity, access modes, storage class
//! and volume mode, but vcluster's fake volume's placeholder source and no node affinity. Pods
//! are not affected: they mount the host claim, whatever its virtual volume says.
//!
//! Deletes go down with the uid as precondition; the virtual volume goes with its claim (the host
//! volume follows its own reclaim policy).

use crate::access::{self, Read};
use crate::{Config, Error, names};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{
    FlexPersistentVolumeSource, ObjectReference, PersistentVolume, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PersistentVolumeClaimStatus, PersistentVolumeSpec,
    PersistentVolumeStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::watcher;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The annotation of a virtual volume that names its host volume.
pub const HOST_VOLUME_ANNOTATION: &str = "vkube.dev/host-volume";

pub fn host_claim_name(namespace: &str, name: &str, cluster: &str) -> String {
    names::host_name("PersistentVolumeClaim", namespace, name, cluster)
}

/// The host copy of a virtual claim. A label selector names virtual volumes and a data source
/// virtual objects, so neither goes down.
pub fn host_claim(
    vpvc: &PersistentVolumeClaim,
    cluster: &str,
    host_ns: &str,
) -> PersistentVolumeClaim {
    let m = &vpvc.metadata;
    let (ns, name) = (
        m.namespace.as_deref().unwrap_or_default(),
        m.name.as_deref().unwrap_or_default(),
    );
    let mut labels = names::tenant_only(m.labels.as_ref());
    labels.extend(names::ownership_labels("PersistentVolumeClaim", cluster));
    let mut annotations = names::tenant_only(m.annotations.as_ref());
    annotations.retain(|k, _| {
        !k.starts_with("pv.kubernetes.io/") && !k.starts_with("volume.kubernetes.io/")
    });
    annotations.extend(names::ownership_annotations(
        ns,
        name,
        m.uid.as_deref().unwrap_or_default(),
    ));
    let spec = vpvc.spec.clone().unwrap_or_default();
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(host_claim_name(ns, name, cluster)),
            namespace: Some(host_ns.to_string()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: spec.access_modes,
            resources: spec.resources,
            storage_class_name: spec.storage_class_name,
            volume_mode: spec.volume_mode,
            volume_attributes_class_name: spec.volume_attributes_class_name,
            ..Default::default()
        }),
        status: None,
    }
}

/// The virtual claim, as a volume's claimRef.
fn claim_ref(vpvc: &PersistentVolumeClaim) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        namespace: vpvc.metadata.namespace.clone(),
        name: vpvc.metadata.name.clone(),
        uid: vpvc.metadata.uid.clone(),
        ..Default::default()
    }
}

/// The virtual volume for a host volume bound to the host copy of `vpvc`.
pub fn virtual_volume(
    host_pv: &PersistentVolume,
    vpvc: &PersistentVolumeClaim,
) -> PersistentVolume {
    let name = host_pv.metadata.name.clone().unwrap_or_default();
    let mut spec = host_pv.spec.clone().unwrap_or_default();
    spec.claim_ref = Some(claim_ref(vpvc));
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            annotations: Some([(HOST_VOLUME_ANNOTATION.to_string(), name)].into()),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// vcluster's label of a volume it made up (its fake persistent volumes).
pub const FAKE_VOLUME_LABEL: &str = "vcluster.loft.sh/fake-pv";

/// The virtual volume `volume` for the host copy `host` of `vpvc` when the host volume cannot be
/// read (no ClusterRole): what the host claim says of it (its name, the bound capacity and access
/// modes, storage class, volume mode) and vcluster's fake volume's placeholders (label, the
/// `fake` flexVolume driver as its source, which upstream's validation requires; reclaim policy
/// Delete). The host volume's real source and node affinity stay unknown.
pub fn volume_from_claim(
    volume: &str,
    host: &PersistentVolumeClaim,
    vpvc: &PersistentVolumeClaim,
) -> PersistentVolume {
    let spec = host.spec.clone().unwrap_or_default();
    let status = host.status.clone().unwrap_or_default();
    let mut annotations =
        BTreeMap::from([(HOST_VOLUME_ANNOTATION.to_string(), volume.to_string())]);
    // The provisioner the host's binder named on the claim, as upstream's on the volume.
    let provisioner = host.metadata.annotations.as_ref().and_then(|a| {
        a.get("volume.kubernetes.io/storage-provisioner")
            .or_else(|| a.get("volume.beta.kubernetes.io/storage-provisioner"))
    });
    if let Some(p) = provisioner {
        annotations.insert("pv.kubernetes.io/provisioned-by".into(), p.clone());
    }
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(volume.to_string()),
            labels: Some(BTreeMap::from([(
                FAKE_VOLUME_LABEL.to_string(),
                "true".to_string(),
            )])),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: status
                .capacity
                .or_else(|| spec.resources.and_then(|r| r.requests)),
            access_modes: status.access_modes.or(spec.access_modes),
            storage_class_name: spec.storage_class_name,
            volume_mode: spec.volume_mode,
            claim_ref: Some(claim_ref(vpvc)),
            persistent_volume_reclaim_policy: Some("Delete".into()),
            flex_volume: Some(FlexPersistentVolumeSource {
                driver: "fake".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    }
}

/// Makes sure the host copy of the virtual claim `namespace/name` exists. `Ok(false)`: there is no
/// such virtual claim.
pub async fn ensure(config: &Config, namespace: &str, name: &str) -> Result<bool, Error> {
    let vapi: Api<PersistentVolumeClaim> =
        Api::namespaced(config.virtual_client.clone(), namespace);
    let Some(vpvc) = vapi.get_opt(name).await? else {
        return Ok(false);
    };
    ensure_host(config, &vpvc).await.map(|_| true)
}

async fn ensure_host(
    config: &Config,
    vpvc: &PersistentVolumeClaim,
) -> Result<Option<PersistentVolumeClaim>, Error> {
    let hapi: Api<PersistentVolumeClaim> =
        Api::namespaced(config.host_client.clone(), &config.host_namespace);
    let wanted = host_claim(vpvc, &config.cluster, &config.host_namespace);
    let hname = wanted.metadata.name.clone().unwrap_or_default();
    if let Some(current) = hapi.get_opt(&hname).await? {
        match names::virtual_of(current.metadata.annotations.as_ref()) {
            Some((_, _, uid)) if Some(&uid) == vpvc.metadata.uid.as_ref() => {
                return Ok(Some(current));
            }
            // An earlier claim's of this name: it goes first.
            Some(_) => {
                crate::delete_exact(&hapi, &current).await?;
                return Ok(None);
            }
            None => {
                return Err(Error::Invalid(format!(
                    "host claim {hname} exists and is not the syncer's"
                )));
            }
        }
    }
    match hapi.create(&PostParams::default(), &wanted).await {
        Ok(created) => Ok(Some(created)),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub async fn run(config: Config) -> Result<(), Error> {
    let vapi: Api<PersistentVolumeClaim> = Api::all(config.virtual_client.clone());
    let controller =
        crate::paired_controller::<PersistentVolumeClaim>(&config, "PersistentVolumeClaim");
    let ctx = Arc::new(config.clone());
    let reconciling = controller
        .run(
            reconcile,
            |_, err, _| {
                tracing::warn!(%err, "volume claim sync failed; retrying");
                Action::requeue(Duration::from_secs(2))
            },
            ctx,
        )
        .for_each(|_| async {});
    tokio::select! {
        _ = reconciling => Ok(()),
        r = follow_deletes(config.clone(), vapi) => r,
        r = sweep(config) => r,
    }
}

async fn reconcile(vpvc: Arc<PersistentVolumeClaim>, config: Arc<Config>) -> Result<Action, Error> {
    if vpvc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let Some(host) = ensure_host(&config, &vpvc).await? else {
        return Ok(Action::requeue(Duration::from_millis(500)));
    };
    let bound = host.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    let Some(volume) = host
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .filter(|_| bound)
    else {
        return Ok(Action::requeue(config.resync));
    };
    // The host volume, mirrored as a virtual one bound to the virtual claim; without the right
    // to read host volumes, one made from the host claim.
    let access = access::of(&config);
    let mut host_pv = None;
    if access.allowed(Read::Volumes) {
        let host_pvs: Api<PersistentVolume> = Api::all(config.host_client.clone());
        match host_pvs.get_opt(&volume).await {
            Ok(Some(pv)) => host_pv = Some(pv),
            Ok(None) => return Ok(Action::requeue(Duration::from_secs(1))),
            Err(e) if access.refused(Read::Volumes, &e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let vpvs: Api<PersistentVolume> = Api::all(config.virtual_client.clone());
    let wanted = match &host_pv {
        Some(host_pv) => virtual_volume(host_pv, &vpvc),
        None => volume_from_claim(&volume, &host, &vpvc),
    };
    let pv = match vpvs.get_opt(&volume).await? {
        Some(pv) => pv,
        None => vpvs.create(&PostParams::default(), &wanted).await?,
    };
    if pv.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound") {
        let mut next = pv.clone();
        next.status = Some(PersistentVolumeStatus {
            phase: Some("Bound".into()),
            ..Default::default()
        });
        crate::write_status(&vpvs, &next).await?;
    }
    let ns = vpvc.metadata.namespace.clone().unwrap_or_default();
    let name = vpvc.metadata.name.clone().unwrap_or_default();
    let vapi: Api<PersistentVolumeClaim> = Api::namespaced(config.virtual_client.clone(), &ns);
    let mut claim = (*vpvc).clone();
    if claim.spec.as_ref().and_then(|s| s.volume_name.as_deref()) != Some(volume.as_str()) {
        claim.spec.get_or_insert_with(Default::default).volume_name = Some(volume.clone());
        // The binder's annotations, as kube-controller-manager's writes them.
        let annotations = claim
            .metadata
            .annotations
            .get_or_insert_with(Default::default);
        annotations.insert("pv.kubernetes.io/bind-completed".into(), "yes".into());
        annotations.insert("pv.kubernetes.io/bound-by-controller".into(), "yes".into());
        match vapi.replace(&name, &PostParams::default(), &claim).await {
            Ok(c) => claim = c,
            Err(kube::Error::Api(e)) if e.code == 409 => {
                return Ok(Action::requeue(Duration::from_millis(200)));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let hs = host.status.clone().unwrap_or_default();
    let status = PersistentVolumeClaimStatus {
        phase: Some("Bound".into()),
        access_modes: hs.access_modes,
        capacity: hs.capacity,
        ..claim.status.clone().unwrap_or_default()
    };
    if claim.status.as_ref() != Some(&status) {
        claim.status = Some(status);
        if !crate::write_status(&vapi, &claim).await? {
            return Ok(Action::requeue(Duration::from_millis(200)));
        }
    }
    Ok(Action::requeue(config.resync))
}

/// A virtual claim deleted: its host copy and its virtual volume go.
async fn follow_deletes(config: Config, vapi: Api<PersistentVolumeClaim>) -> Result<(), Error> {
    let hapi: Api<PersistentVolumeClaim> =
        Api::namespaced(config.host_client.clone(), &config.host_namespace);
    let vpvs: Api<PersistentVolume> = Api::all(config.virtual_client.clone());
    let mut events = std::pin::pin!(watcher(vapi, watcher::Config::default()));
    while let Some(event) = events.next().await {
        let Ok(watcher::Event::Delete(v)) = event else {
            continue;
        };
        let (ns, name) = (
            v.metadata.namespace.clone().unwrap_or_default(),
            v.metadata.name.clone().unwrap_or_default(),
        );
        let hname = host_claim_name(&ns, &name, &config.cluster);
        if let Err(err) = crate::delete_copy_of(&hapi, &hname, v.metadata.uid.as_deref()).await {
            tracing::warn!(%err, claim = %name, "deleting a host claim; the sweep will retry");
        }
        if let Some(volume) = v.spec.as_ref().and_then(|s| s.volume_name.clone())
            && let Ok(Some(pv)) = vpvs.get_opt(&volume).await
            && pv
                .spec
                .as_ref()
                .and_then(|s| s.claim_ref.as_ref())
                .and_then(|c| c.uid.as_ref())
                == v.metadata.uid.as_ref()
            && let Err(err) = crate::delete_exact(&vpvs, &pv).await
        {
            tracing::warn!(%err, volume = %volume, "deleting a virtual volume");
        }
    }
    Ok(())
}

/// Host claims whose virtual claim is gone (asked of the virtual API) are deleted.
async fn sweep(config: Config) -> Result<(), Error> {
    let hapi: Api<PersistentVolumeClaim> =
        Api::namespaced(config.host_client.clone(), &config.host_namespace);
    let selector = names::selector("PersistentVolumeClaim", &config.cluster);
    loop {
        tokio::time::sleep(config.resync.min(Duration::from_secs(10))).await;
        let Ok(list) = hapi.list(&ListParams::default().labels(&selector)).await else {
            continue;
        };
        for h in list.items {
            let Some((ns, name, uid)) = names::virtual_of(h.metadata.annotations.as_ref()) else {
                continue;
            };
            let vapi: Api<PersistentVolumeClaim> =
                Api::namespaced(config.virtual_client.clone(), &ns);
            match vapi.get_opt(&name).await {
                Ok(Some(v)) if v.metadata.uid.as_deref() == Some(uid.as_str()) => {}
                Ok(_) => {
                    if let Err(err) = crate::delete_exact(&hapi, &h).await {
                        tracing::warn!(%err, "orphan sweep of claims");
                    }
                }
                Err(err) => tracing::warn!(%err, "orphan sweep of claims"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock;
    use serde_json::json;

    #[test]
    fn a_claim_goes_down_without_virtual_references_and_comes_back_bound() {
        let v: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": "data", "namespace": "team", "uid": "c1",
                         "annotations": {"pv.kubernetes.io/bind-completed": "yes", "note": "x"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                     "selector": {"matchLabels": {"tier": "fast"}}, "volumeName": "pv-virtual"}
        }))
        .unwrap();
        let h = host_claim(&v, "vc", "h");
        assert_eq!(
            h.metadata.name.as_deref(),
            Some(host_claim_name("team", "data", "vc").as_str())
        );
        let ann = h.metadata.annotations.unwrap();
        assert_eq!(ann["note"], "x");
        assert!(!ann.contains_key("pv.kubernetes.io/bind-completed"));
        let spec = h.spec.unwrap();
        assert!(spec.selector.is_none() && spec.volume_name.is_none());
        assert_eq!(spec.access_modes.unwrap(), ["ReadWriteOnce"]);
        let host_pv: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": "pvc-123"},
            "spec": {"capacity": {"storage": "1Gi"}, "hostPath": {"path": "/tmp/x"},
                     "claimRef": {"namespace": "h", "name": "host-claim", "uid": "hc"}}
        }))
        .unwrap();
        let pv = virtual_volume(&host_pv, &v);
        let claim = pv.spec.as_ref().unwrap().claim_ref.as_ref().unwrap();
        assert_eq!(
            (
                claim.namespace.as_deref(),
                claim.name.as_deref(),
                claim.uid.as_deref()
            ),
            (Some("team"), Some("data"), Some("c1"))
        );
        assert_eq!(pv.spec.unwrap().host_path.unwrap().path, "/tmp/x");
    }

    #[tokio::test]
    async fn the_first_refusal_of_host_volumes_makes_them_from_host_claims_for_the_run() {
        let claim = |name: &str, uid: &str| -> PersistentVolumeClaim {
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "team", "uid": uid},
                "spec": {"accessModes": ["ReadWriteOnce"],
                         "resources": {"requests": {"storage": "1Gi"}}}
            }))
            .unwrap()
        };
        // Every host claim is bound, to the volume `pv-<its virtual uid>`.
        let host = mock::serve(|method, path, _| match method {
            "GET" if path.starts_with("/api/v1/persistentvolumes/") => {
                mock::status(403, "Forbidden")
            }
            "GET" => {
                let uid = if path.contains("data-a") { "c1" } else { "c2" };
                let name = path.rsplit('/').next().unwrap();
                (
                    200,
                    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "metadata": {"name": name, "namespace": "h",
                                 "annotations": names::ownership_annotations("team", "x", uid)},
                    "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "standard",
                             "resources": {"requests": {"storage": "1Gi"}},
                             "volumeName": format!("pv-{uid}")},
                    "status": {"phase": "Bound", "capacity": {"storage": "1Gi"},
                               "accessModes": ["ReadWriteOnce"]}}),
                )
            }
            _ => mock::status(500, "Unexpected"),
        })
        .await;
        let virt = mock::serve(|method, path, body| match method {
            "GET" if path.starts_with("/api/v1/persistentvolumes/") => {
                mock::status(404, "NotFound")
            }
            "POST" | "PUT" => (200, body.clone()),
            _ => mock::status(500, "Unexpected"),
        })
        .await;
        let config = Arc::new(mock::config(&virt, &host, "volumes-from-claims"));
        access::start(&config);
        for (name, uid) in [("data-a", "c1"), ("data-b", "c2")] {
            reconcile(Arc::new(claim(name, uid)), config.clone())
                .await
                .unwrap();
        }
        // The host refused once, and was not asked for a volume again.
        let asked: Vec<String> = host
            .requests()
            .into_iter()
            .map(|r| r.1)
            .filter(|p| p.starts_with("/api/v1/persistentvolumes/"))
            .collect();
        assert_eq!(asked, ["/api/v1/persistentvolumes/pv-c1"]);
        let created: Vec<serde_json::Value> = virt
            .requests()
            .into_iter()
            .filter(|r| r.0 == "POST")
            .map(|r| r.2)
            .collect();
        assert_eq!(created.len(), 2);
        assert_eq!(created[1]["metadata"]["name"], "pv-c2");
        assert_eq!(created[1]["metadata"]["labels"][FAKE_VOLUME_LABEL], "true");
        assert_eq!(created[1]["spec"]["storageClassName"], "standard");
        assert_eq!(created[1]["spec"]["claimRef"]["uid"], "c2");
        // The virtual claim is bound to it, as with a mirrored volume.
        let bound = virt.requests().into_iter().any(|r| {
            r.0 == "PUT"
                && r.1
                    .starts_with("/api/v1/namespaces/team/persistentvolumeclaims/data-b")
                && r.2["spec"]["volumeName"] == "pv-c2"
        });
        assert!(bound);
    }

    #[test]
    fn without_the_host_volume_the_virtual_one_comes_from_the_host_claim() {
        let v: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": "data", "namespace": "team", "uid": "c1"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
        }))
        .unwrap();
        let host: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": "data-team-x", "namespace": "h",
                         "annotations": {"volume.kubernetes.io/storage-provisioner": "rancher.io/local-path"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                     "storageClassName": "local-path", "volumeMode": "Filesystem",
                     "volumeName": "pvc-123"},
            "status": {"phase": "Bound", "accessModes": ["ReadWriteOnce", "ReadWriteOncePod"],
                       "capacity": {"storage": "2Gi"}}
        }))
        .unwrap();
        let pv = volume_from_claim("pvc-123", &host, &v);
        let got = serde_json::to_value(&pv).unwrap();
        assert_eq!(
            got,
            json!({
                "apiVersion": "v1", "kind": "PersistentVolume",
                "metadata": {"name": "pvc-123", "labels": {"vcluster.loft.sh/fake-pv": "true"},
                             "annotations": {"vkube.dev/host-volume": "pvc-123",
                                             "pv.kubernetes.io/provisioned-by": "rancher.io/local-path"}},
                "spec": {"capacity": {"storage": "2Gi"},
                         "accessModes": ["ReadWriteOnce", "ReadWriteOncePod"],
                         "storageClassName": "local-path", "volumeMode": "Filesystem",
                         "persistentVolumeReclaimPolicy": "Delete",
                         "flexVolume": {"driver": "fake"},
                         "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                                      "namespace": "team", "name": "data", "uid": "c1"}}
            })
        );
        // Bound without capacity in its status yet: the request.
        let mut early = host.clone();
        early.status = None;
        let pv = volume_from_claim("pvc-123", &early, &v);
        let spec = pv.spec.unwrap();
        assert_eq!(spec.capacity.unwrap()["storage"].0, "1Gi");
        assert_eq!(spec.access_modes.unwrap(), ["ReadWriteOnce"]);
    }
}
