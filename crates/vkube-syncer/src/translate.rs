//! A virtual pod as its host copy: the same containers, under the host name, in the host
//! namespace, with the syncer's ownership labels, and nothing that would reach past the tenant's
//! own pod on the host (no host service account, no host service links).

use crate::names;
use k8s_openapi::api::core::v1::{EnvVar, Pod, PodSpec, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Why a virtual pod cannot run on the host yet: shown in its status and events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unsupported(pub String);

/// A ConfigMap or Secret a pod uses (by the kind's name and the object's), which the syncer
/// copies to the host before the pod.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reference {
    pub kind: &'static str,
    pub name: String,
    /// `optional: true`: the pod runs without it.
    pub optional: bool,
}

/// The ConfigMaps and Secrets `pod` uses: volumes (also projected ones), env and envFrom.
pub fn references(pod: &Pod) -> Vec<Reference> {
    let mut refs = Vec::new();
    let mut add = |kind: &'static str, name: Option<&String>, optional: Option<bool>| {
        if let Some(name) = name {
            refs.push(Reference {
                kind,
                name: name.clone(),
                optional: optional == Some(true),
            });
        }
    };
    let Some(spec) = &pod.spec else {
        return refs;
    };
    for v in spec.volumes.iter().flatten() {
        if let Some(c) = &v.config_map {
            add("ConfigMap", Some(&c.name), c.optional);
        }
        if let Some(s) = &v.secret {
            add("Secret", s.secret_name.as_ref(), s.optional);
        }
        for source in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(c) = &source.config_map {
                add("ConfigMap", Some(&c.name), c.optional);
            }
            if let Some(s) = &source.secret {
                add("Secret", Some(&s.name), s.optional);
            }
        }
    }
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        for from in c.env.iter().flatten().filter_map(|e| e.value_from.as_ref()) {
            if let Some(r) = &from.config_map_key_ref {
                add("ConfigMap", Some(&r.name), r.optional);
            }
            if let Some(r) = &from.secret_key_ref {
                add("Secret", Some(&r.name), r.optional);
            }
        }
        for from in c.env_from.iter().flatten() {
            if let Some(r) = &from.config_map_ref {
                add("ConfigMap", Some(&r.name), r.optional);
            }
            if let Some(r) = &from.secret_ref {
                add("Secret", Some(&r.name), r.optional);
            }
        }
    }
    refs.sort();
    refs.dedup();
    refs
}

/// The host copy of `pod` of virtual cluster `cluster` in host namespace `host_ns`.
pub fn host_pod(pod: &Pod, cluster: &str, host_ns: &str) -> Result<Pod, Unsupported> {
    let meta = &pod.metadata;
    let (ns, name) = (
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or_default(),
    );
    let uid = meta.uid.as_deref().unwrap_or_default();
    let spec = pod
        .spec
        .as_ref()
        .ok_or_else(|| Unsupported("pod has no spec".into()))?;
    let mut labels = names::tenant_only(meta.labels.as_ref());
    labels.extend(names::ownership_labels("Pod", cluster));
    let mut annotations = names::tenant_only(meta.annotations.as_ref());
    annotations.extend(names::ownership_annotations(ns, name, uid));

    let host = |kind: &str, name: &str| names::host_name(kind, ns, name, cluster);
    let mut volumes = spec.volumes.clone();
    for volume in volumes.iter_mut().flatten() {
        translate_volume(volume, &host)?;
    }
    let mut containers = spec.containers.clone();
    let mut init_containers = spec.init_containers.clone();
    for c in containers
        .iter_mut()
        .chain(init_containers.iter_mut().flatten())
    {
        for env in c.env.iter_mut().flatten() {
            resolve_env(env, ns, name, &host);
        }
        for from in c.env_from.iter_mut().flatten() {
            if let Some(r) = &mut from.config_map_ref {
                r.name = host("ConfigMap", &r.name);
            }
            if let Some(r) = &mut from.secret_ref {
                r.name = host("Secret", &r.name);
            }
        }
    }
    let host_spec = PodSpec {
        containers,
        init_containers,
        volumes,
        restart_policy: spec.restart_policy.clone(),
        termination_grace_period_seconds: spec.termination_grace_period_seconds,
        active_deadline_seconds: spec.active_deadline_seconds,
        security_context: spec.security_context.clone(),
        node_selector: spec.node_selector.clone(),
        tolerations: spec.tolerations.clone(),
        // Node affinity is about nodes, which the virtual cluster mirrors; pod (anti-)affinity
        // names virtual labels and namespaces, which mean something else on the host.
        affinity: spec.affinity.as_ref().and_then(|a| {
            a.node_affinity
                .as_ref()
                .map(|n| k8s_openapi::api::core::v1::Affinity {
                    node_affinity: Some(n.clone()),
                    ..Default::default()
                })
        }),
        // The pod's hostname is its virtual name, as a tenant expects (`hostname` prints it).
        hostname: Some(
            spec.hostname
                .clone()
                .unwrap_or_else(|| truncate_label(name)),
        ),
        subdomain: spec.subdomain.clone(),
        // A tenant's nodeName names a virtual node, which is the host node of that name.
        node_name: spec.node_name.clone(),
        scheduler_name: None,
        // The host namespace's service account and service links are the host's, not the
        // tenant's: the pod gets neither.
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        dns_policy: spec.dns_policy.clone(),
        dns_config: spec.dns_config.clone(),
        share_process_namespace: spec.share_process_namespace,
        runtime_class_name: spec.runtime_class_name.clone(),
        host_aliases: spec.host_aliases.clone(),
        readiness_gates: spec.readiness_gates.clone(),
        ..Default::default()
    };
    Ok(Pod {
        metadata: ObjectMeta {
            name: Some(names::host_name("Pod", ns, name, cluster)),
            namespace: Some(host_ns.to_string()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(host_spec),
        status: None,
    })
}

/// A pod's own name and namespace are constant, so a downward-API reference to them becomes the
/// virtual value (on the host they would read the host's); a ConfigMap or Secret key names the
/// host copy.
fn resolve_env(env: &mut EnvVar, ns: &str, name: &str, host: &impl Fn(&str, &str) -> String) {
    let Some(from) = &mut env.value_from else {
        return;
    };
    if let Some(r) = &mut from.config_map_key_ref {
        r.name = host("ConfigMap", &r.name);
    }
    if let Some(r) = &mut from.secret_key_ref {
        r.name = host("Secret", &r.name);
    }
    let value = match from.field_ref.as_ref().map(|f| f.field_path.as_str()) {
        Some("metadata.name") => name.to_string(),
        Some("metadata.namespace") => ns.to_string(),
        // Node name, pod IP, host IP…: the kubelet's values are the right ones.
        _ => return,
    };
    env.value = Some(value);
    env.value_from = None;
}

/// A volume as the host pod mounts it: ConfigMaps and Secrets by their host copies' names.
fn translate_volume(
    v: &mut Volume,
    host: &impl Fn(&str, &str) -> String,
) -> Result<(), Unsupported> {
    if v.empty_dir.is_some() {
        return Ok(());
    }
    if let Some(c) = &mut v.config_map {
        c.name = host("ConfigMap", &c.name);
        return Ok(());
    }
    if let Some(s) = &mut v.secret {
        s.secret_name = s.secret_name.as_deref().map(|n| host("Secret", n));
        return Ok(());
    }
    if let Some(p) = &mut v.projected {
        for source in p.sources.iter_mut().flatten() {
            if let Some(c) = &mut source.config_map {
                c.name = host("ConfigMap", &c.name);
            } else if let Some(s) = &mut source.secret {
                s.name = host("Secret", &s.name);
            } else {
                return Err(Unsupported(format!(
                    "volume {:?}: projected service-account tokens, downward API and cluster trust bundles are not synced to the host yet (ConfigMaps and Secrets are)",
                    v.name
                )));
            }
        }
        return Ok(());
    }
    let kind = if v.persistent_volume_claim.is_some() {
        "persistentVolumeClaim"
    } else if v.downward_api.is_some() {
        "downwardAPI"
    } else if v.host_path.is_some() {
        "hostPath"
    } else {
        "this kind of"
    };
    Err(Unsupported(format!(
        "volume {:?}: {kind} volumes are not synced to the host yet (emptyDir, configMap, secret and projected ConfigMaps and Secrets are)",
        v.name
    )))
}

/// Kubernetes' own rule for a hostname that is too long: the first 63 characters, without a
/// trailing '-' or '.'.
fn truncate_label(name: &str) -> String {
    name.chars()
        .take(63)
        .collect::<String>()
        .trim_end_matches(['-', '.'])
        .to_string()
}

/// Whether a host pod's spec lags the virtual pod's in what Kubernetes lets change on a running
/// pod: images and activeDeadlineSeconds. Returns the host pod to write, if it does.
pub fn spec_update(host: &Pod, wanted: &Pod) -> Option<Pod> {
    let (h, w) = (host.spec.as_ref()?, wanted.spec.as_ref()?);
    let images = |s: &PodSpec| -> Vec<Option<String>> {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .map(|c| c.image.clone())
            .collect()
    };
    if images(h) == images(w) && h.active_deadline_seconds == w.active_deadline_seconds {
        return None;
    }
    let mut next = host.clone();
    let spec = next.spec.as_mut()?;
    for (c, image) in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
        .zip(images(w))
    {
        c.image = image;
    }
    spec.active_deadline_seconds = w.active_deadline_seconds;
    Some(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_pod_becomes_its_host_copy() {
        let p = pod(json!({
            "metadata": {"name": "web", "namespace": "team", "uid": "u1",
                         "labels": {"app": "web", "vkube.dev/cluster": "forged"}},
            "spec": {"containers": [{"name": "c", "image": "busybox",
                                     "env": [{"name": "ME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                                             {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]}],
                     "serviceAccountName": "builder",
                     "volumes": [{"name": "scratch", "emptyDir": {}}]}
        }));
        let h = host_pod(&p, "vc", "host-ns").unwrap();
        assert_eq!(h.metadata.namespace.as_deref(), Some("host-ns"));
        assert_eq!(
            h.metadata.name,
            Some(names::host_name("Pod", "team", "web", "vc"))
        );
        let labels = h.metadata.labels.unwrap();
        assert_eq!(labels["app"], "web");
        assert_eq!(labels[names::CLUSTER_LABEL], "vc");
        let ann = h.metadata.annotations.unwrap();
        assert_eq!(ann[names::UID_ANNOTATION], "u1");
        let spec = h.spec.unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("web"));
        assert_eq!(spec.service_account_name, None);
        assert_eq!(spec.automount_service_account_token, Some(false));
        let env = spec.containers[0].env.as_ref().unwrap();
        assert_eq!(env[0].value.as_deref(), Some("web"));
        assert!(env[0].value_from.is_none());
        assert!(env[1].value_from.is_some());
    }

    #[test]
    fn what_is_not_synced_yet_is_named() {
        let p = pod(json!({
            "metadata": {"name": "web", "namespace": "team", "uid": "u1"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}],
                     "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "x"}}]}
        }));
        let err = host_pod(&p, "vc", "h").unwrap_err();
        assert!(
            err.0.contains("volume \"data\": persistentVolumeClaim"),
            "{err}"
        );
        let p = pod(json!({
            "metadata": {"name": "web", "namespace": "team", "uid": "u1"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}],
                     "volumes": [{"name": "tok", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}}]}
        }));
        assert!(
            host_pod(&p, "vc", "h")
                .unwrap_err()
                .0
                .contains("service-account tokens")
        );
    }

    #[test]
    fn configmaps_and_secrets_are_named_by_their_host_copies() {
        let p = pod(json!({
            "metadata": {"name": "web", "namespace": "team", "uid": "u1"},
            "spec": {"containers": [{"name": "c", "image": "busybox",
                        "env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                                {"name": "C", "valueFrom": {"configMapKeyRef": {"name": "conf", "key": "k", "optional": true}}}],
                        "envFrom": [{"configMapRef": {"name": "env"}}]}],
                     "volumes": [{"name": "v1", "configMap": {"name": "conf"}},
                                 {"name": "v2", "secret": {"secretName": "s"}},
                                 {"name": "v3", "projected": {"sources": [{"configMap": {"name": "p"}}]}}]}
        }));
        let named: Vec<_> = references(&p)
            .into_iter()
            .map(|r| (r.kind, r.name, r.optional))
            .collect();
        let want = [
            ("ConfigMap", "conf", false),
            ("ConfigMap", "conf", true),
            ("ConfigMap", "env", false),
            ("ConfigMap", "p", false),
            ("Secret", "s", false),
        ];
        assert_eq!(named, want.map(|(k, n, o)| (k, n.to_string(), o)));
        let spec = host_pod(&p, "vc", "h").unwrap().spec.unwrap();
        let host = |kind: &str, name: &str| names::host_name(kind, "team", name, "vc");
        let vols = spec.volumes.unwrap();
        assert_eq!(
            vols[0].config_map.as_ref().unwrap().name,
            host("ConfigMap", "conf")
        );
        assert_eq!(
            vols[1].secret.as_ref().unwrap().secret_name,
            Some(host("Secret", "s"))
        );
        let env = spec.containers[0].env.as_ref().unwrap();
        let secret_ref = env[0].value_from.as_ref().unwrap().secret_key_ref.as_ref();
        assert_eq!(secret_ref.unwrap().name, host("Secret", "s"));
        let from = &spec.containers[0].env_from.as_ref().unwrap()[0];
        assert_eq!(
            from.config_map_ref.as_ref().unwrap().name,
            host("ConfigMap", "env")
        );
    }

    #[test]
    fn image_changes_reach_the_host() {
        let v = pod(
            json!({"metadata": {"name": "w", "namespace": "n", "uid": "u"},
                           "spec": {"containers": [{"name": "c", "image": "one"}]}}),
        );
        let host = host_pod(&v, "vc", "h").unwrap();
        assert!(spec_update(&host, &host).is_none());
        let v2 = pod(
            json!({"metadata": {"name": "w", "namespace": "n", "uid": "u"},
                            "spec": {"containers": [{"name": "c", "image": "two"}], "activeDeadlineSeconds": 5}}),
        );
        let wanted = host_pod(&v2, "vc", "h").unwrap();
        let next = spec_update(&host, &wanted).unwrap();
        let spec = next.spec.unwrap();
        assert_eq!(spec.containers[0].image.as_deref(), Some("two"));
        assert_eq!(spec.active_deadline_seconds, Some(5));
    }
}
