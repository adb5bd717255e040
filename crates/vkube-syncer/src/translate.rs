//! A virtual pod as its host copy: the same containers, under the host name, in the host
//! namespace, with the syncer's ownership labels, and nothing that would reach past the tenant's
//! own pod on the host (no host service account, no host service links).

use crate::names;
use k8s_openapi::api::core::v1::{
    EnvVar, KeyToPath, Pod, PodDNSConfig, PodDNSConfigOption, PodSpec, SecretProjection, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Where the host pod runs, and how it reaches its virtual cluster.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    /// The virtual cluster's name (ownership labels).
    pub cluster: String,
    /// The host namespace of every host object.
    pub host_namespace: String,
    /// The address at which host pods reach vkube: its API on 443 and its DNS on 53 (a host
    /// Service's ClusterIP). `None`: pods keep the kubelet's defaults, and cannot reach the
    /// virtual API.
    pub vkube_ip: Option<String>,
}

/// The virtual cluster's DNS domain, as every Kubernetes cluster's default.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// A projected service-account token the pod asks for: the host pod reads it from the key of the
/// pod's token Secret on the host, which the syncer fills by TokenRequest against vkube.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSource {
    pub key: String,
    pub audience: Option<String>,
    pub expiration_seconds: i64,
}

/// The PersistentVolumeClaims the pod mounts, by their virtual names.
pub fn claims(pod: &Pod) -> Vec<String> {
    let volumes = pod.spec.iter().flat_map(|s| s.volumes.iter().flatten());
    volumes
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .map(|c| c.claim_name.clone())
        .collect()
}

/// The pod's token sources, in the order of its volumes (keys `token-0`, `token-1`, …).
pub fn token_sources(pod: &Pod) -> Vec<TokenSource> {
    let volumes = pod.spec.iter().flat_map(|s| s.volumes.iter().flatten());
    volumes
        .flat_map(|v| v.projected.iter().flat_map(|p| p.sources.iter().flatten()))
        .filter_map(|s| s.service_account_token.as_ref())
        .enumerate()
        .map(|(i, t)| TokenSource {
            key: format!("token-{i}"),
            audience: t.audience.clone().filter(|a| !a.is_empty()),
            // The API server defaulted it (3600); a kubelet asks for at least 10 minutes.
            expiration_seconds: t.expiration_seconds.unwrap_or(3600).max(600),
        })
        .collect()
}

/// The host Secret that holds the pod's service-account tokens.
pub fn token_secret_name(namespace: &str, pod: &str, cluster: &str) -> String {
    names::host_name("PodToken", namespace, pod, cluster)
}

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

/// The host copy of `pod` in `env`.
pub fn host_pod(pod: &Pod, env: &Environment) -> Result<Pod, Unsupported> {
    let (cluster, host_ns) = (env.cluster.as_str(), env.host_namespace.as_str());
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
    // Host Services select the host pods of one virtual namespace.
    labels.insert(names::NAMESPACE_LABEL.into(), ns.to_string());
    let mut annotations = names::tenant_only(meta.annotations.as_ref());
    annotations.extend(names::ownership_annotations(ns, name, uid));

    let host = |kind: &str, name: &str| names::host_name(kind, ns, name, cluster);
    let mut volumes = spec.volumes.clone();
    let token_secret = token_secret_name(ns, name, cluster);
    let mut tokens = 0;
    for volume in volumes.iter_mut().flatten() {
        translate_volume(volume, &host, &token_secret, &mut tokens)?;
    }
    let mut containers = spec.containers.clone();
    let mut init_containers = spec.init_containers.clone();
    let vkube_ip = env.vkube_ip.as_deref();
    for c in containers
        .iter_mut()
        .chain(init_containers.iter_mut().flatten())
    {
        translate_env(&mut c.env, &mut c.env_from, pod, &host, vkube_ip);
    }
    // Ephemeral containers cannot be created with the pod: the syncer adds them through the host
    // pod's `ephemeralcontainers` subresource (see [`ephemeral_update`]).
    let mut ephemeral_containers = spec.ephemeral_containers.clone();
    for c in ephemeral_containers.iter_mut().flatten() {
        translate_env(&mut c.env, &mut c.env_from, pod, &host, vkube_ip);
    }
    let dns = dns(spec, ns, env.vkube_ip.as_deref());
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
        dns_policy: dns.0,
        dns_config: dns.1,
        share_process_namespace: spec.share_process_namespace,
        ephemeral_containers,
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

/// A container's environment as the host pod has it: references name host copies, the pod's
/// identity is the virtual one, and the API is vkube.
fn translate_env(
    env: &mut Option<Vec<EnvVar>>,
    env_from: &mut Option<Vec<k8s_openapi::api::core::v1::EnvFromSource>>,
    pod: &Pod,
    host: &impl Fn(&str, &str) -> String,
    vkube_ip: Option<&str>,
) {
    for e in env.iter_mut().flatten() {
        resolve_env(e, pod, host);
    }
    if let Some(ip) = vkube_ip {
        api_env(env.get_or_insert_with(Vec::new), ip);
    }
    for from in env_from.iter_mut().flatten() {
        if let Some(r) = &mut from.config_map_ref {
            r.name = host("ConfigMap", &r.name);
        }
        if let Some(r) = &mut from.secret_ref {
            r.name = host("Secret", &r.name);
        }
    }
}

/// A downward-API reference to the pod's identity becomes the virtual value (on the host it would
/// read the host's), since name, namespace, uid and service account never change; a ConfigMap or
/// Secret key names the host copy.
fn resolve_env(env: &mut EnvVar, pod: &Pod, host: &impl Fn(&str, &str) -> String) {
    let Some(from) = &mut env.value_from else {
        return;
    };
    if let Some(r) = &mut from.config_map_key_ref {
        r.name = host("ConfigMap", &r.name);
    }
    if let Some(r) = &mut from.secret_key_ref {
        r.name = host("Secret", &r.name);
    }
    let meta = &pod.metadata;
    let value = match from.field_ref.as_ref().map(|f| f.field_path.as_str()) {
        Some("metadata.name") => meta.name.clone(),
        Some("metadata.namespace") => meta.namespace.clone(),
        Some("metadata.uid") => meta.uid.clone(),
        Some("spec.serviceAccountName") => pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone()),
        // Node name, pod IP, host IP…: the kubelet's values are the right ones.
        _ => return,
    };
    env.value = Some(value.unwrap_or_default());
    env.value_from = None;
}

/// The variables through which in-cluster clients find the API (client-go reads
/// `KUBERNETES_SERVICE_HOST` and `_PORT`): the kubelet would set the host's; a container's own
/// variables take precedence over the kubelet's, so these point the pod at vkube.
fn api_env(env: &mut Vec<EnvVar>, ip: &str) {
    let vars = [
        ("KUBERNETES_SERVICE_HOST", ip.to_string()),
        ("KUBERNETES_SERVICE_PORT", "443".into()),
        ("KUBERNETES_SERVICE_PORT_HTTPS", "443".into()),
        ("KUBERNETES_PORT", format!("tcp://{ip}:443")),
        ("KUBERNETES_PORT_443_TCP", format!("tcp://{ip}:443")),
        ("KUBERNETES_PORT_443_TCP_PROTO", "tcp".into()),
        ("KUBERNETES_PORT_443_TCP_PORT", "443".into()),
        ("KUBERNETES_PORT_443_TCP_ADDR", ip.to_string()),
    ];
    for (name, value) in vars {
        if !env.iter().any(|e| e.name == name) {
            env.push(EnvVar {
                name: name.into(),
                value: Some(value),
                value_from: None,
            });
        }
    }
}

/// The host pod's DNS: `ClusterFirst` (the default) means vkube's DNS with the virtual
/// namespace's search path, as a kubelet of the virtual cluster would write resolv.conf; the
/// pod's own dnsConfig is merged in as upstream does. `Default` and `None` stay as they are.
fn dns(spec: &PodSpec, ns: &str, vkube_ip: Option<&str>) -> (Option<String>, Option<PodDNSConfig>) {
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let Some(ip) =
        vkube_ip.filter(|_| matches!(policy, "ClusterFirst" | "ClusterFirstWithHostNet"))
    else {
        return (spec.dns_policy.clone(), spec.dns_config.clone());
    };
    let own = spec.dns_config.clone().unwrap_or_default();
    let mut nameservers = vec![ip.to_string()];
    nameservers.extend(own.nameservers.into_iter().flatten());
    let mut searches = vec![
        format!("{ns}.svc.{CLUSTER_DOMAIN}"),
        format!("svc.{CLUSTER_DOMAIN}"),
        CLUSTER_DOMAIN.to_string(),
    ];
    searches.extend(own.searches.into_iter().flatten());
    let mut options = vec![PodDNSConfigOption {
        name: Some("ndots".into()),
        value: Some("5".into()),
    }];
    for o in own.options.into_iter().flatten() {
        options.retain(|x| x.name != o.name);
        options.push(o);
    }
    let config = PodDNSConfig {
        nameservers: Some(nameservers),
        searches: Some(searches),
        options: Some(options),
    };
    (Some("None".into()), Some(config))
}

/// A volume as the host pod mounts it: ConfigMaps and Secrets by their host copies' names,
/// service-account tokens from the pod's token Secret (`tokens` counts them, as
/// [`token_sources`] does), and downward-API references to the pod's identity from the
/// annotations that carry the virtual values.
fn translate_volume(
    v: &mut Volume,
    host: &impl Fn(&str, &str) -> String,
    token_secret: &str,
    tokens: &mut usize,
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
    if let Some(d) = &mut v.downward_api {
        for item in d.items.iter_mut().flatten() {
            if let Some(f) = &mut item.field_ref {
                f.field_path = downward_field(&f.field_path);
            }
        }
        return Ok(());
    }
    if let Some(p) = &mut v.projected {
        for source in p.sources.iter_mut().flatten() {
            if let Some(c) = &mut source.config_map {
                c.name = host("ConfigMap", &c.name);
            } else if let Some(s) = &mut source.secret {
                s.name = host("Secret", &s.name);
            } else if let Some(d) = &mut source.downward_api {
                for item in d.items.iter_mut().flatten() {
                    if let Some(f) = &mut item.field_ref {
                        f.field_path = downward_field(&f.field_path);
                    }
                }
            } else if let Some(t) = source.service_account_token.take() {
                source.secret = Some(SecretProjection {
                    name: token_secret.to_string(),
                    items: Some(vec![KeyToPath {
                        key: format!("token-{tokens}"),
                        path: t.path,
                        mode: None,
                    }]),
                    optional: Some(false),
                });
                *tokens += 1;
            } else {
                return Err(Unsupported(format!(
                    "volume {:?}: projected cluster trust bundles and pod certificates are not synced to the host yet (ConfigMaps, Secrets, downward API and service-account tokens are)",
                    v.name
                )));
            }
        }
        return Ok(());
    }
    if let Some(c) = &mut v.persistent_volume_claim {
        c.claim_name = host("PersistentVolumeClaim", &c.claim_name);
        return Ok(());
    }
    let kind = if v.host_path.is_some() {
        "hostPath"
    } else {
        "this kind of"
    };
    Err(Unsupported(format!(
        "volume {:?}: {kind} volumes are not synced to the host (emptyDir, configMap, secret, downwardAPI, projected and persistentVolumeClaim volumes are)",
        v.name
    )))
}

/// A downward-API field of the virtual pod, as the host pod reads it: its identity from the
/// ownership annotations (on the host, `metadata.name` is the host name), the rest as is.
fn downward_field(path: &str) -> String {
    let annotation = match path {
        "metadata.name" => names::NAME_ANNOTATION,
        "metadata.namespace" => names::NAMESPACE_ANNOTATION,
        "metadata.uid" => names::UID_ANNOTATION,
        _ => return path.to_string(),
    };
    format!("metadata.annotations['{annotation}']")
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

/// The host pod with the ephemeral containers the virtual pod has and the host pod lacks (they are
/// only ever added), for the host's `ephemeralcontainers` subresource; `None` when none is new.
pub fn ephemeral_update(host: &Pod, wanted: &Pod) -> Option<Pod> {
    let names = |p: &Pod| -> Vec<String> {
        p.spec
            .iter()
            .flat_map(|s| s.ephemeral_containers.iter().flatten())
            .map(|c| c.name.clone())
            .collect()
    };
    let have = names(host);
    if names(wanted).iter().all(|n| have.contains(n)) {
        return None;
    }
    let mut next = host.clone();
    next.spec.as_mut()?.ephemeral_containers = wanted.spec.as_ref()?.ephemeral_containers.clone();
    Some(next)
}

/// The host pod with the virtual pod's container resources, for the host's `resize`
/// subresource (in-place resize); `None` when they agree.
pub fn resize_update(host: &Pod, wanted: &Pod) -> Option<Pod> {
    let (h, w) = (host.spec.as_ref()?, wanted.spec.as_ref()?);
    let resources =
        |s: &PodSpec| -> Vec<_> { s.containers.iter().map(|c| c.resources.clone()).collect() };
    if resources(h) == resources(w) || h.containers.len() != w.containers.len() {
        return None;
    }
    let mut next = host.clone();
    for (c, want) in next.spec.as_mut()?.containers.iter_mut().zip(&w.containers) {
        c.resources = want.resources.clone();
    }
    Some(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn env(cluster: &str, host_ns: &str) -> Environment {
        Environment {
            cluster: cluster.into(),
            host_namespace: host_ns.into(),
            vkube_ip: None,
        }
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
        let h = host_pod(&p, &env("vc", "host-ns")).unwrap();
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
                     "volumes": [{"name": "data", "hostPath": {"path": "/etc"}}]}
        }));
        let err = host_pod(&p, &env("vc", "h")).unwrap_err();
        assert!(err.0.contains("volume \"data\": hostPath"), "{err}");
    }

    #[test]
    fn tokens_come_from_the_pods_token_secret_and_the_api_is_vkube() {
        let p = pod(json!({
            "metadata": {"name": "web", "namespace": "team", "uid": "u1"},
            "spec": {"containers": [{"name": "c", "image": "busybox",
                                     "env": [{"name": "KUBERNETES_SERVICE_PORT", "value": "8443"}]}],
                     "serviceAccountName": "builder",
                     "volumes": [{"name": "kube-api-access-abcde", "projected": {"sources": [
                        {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}},
                        {"name": "vault", "projected": {"sources": [{"serviceAccountToken": {"path": "v", "audience": "vault"}}]}}]}
        }));
        let sources = token_sources(&p);
        assert_eq!(
            sources,
            vec![
                TokenSource {
                    key: "token-0".into(),
                    audience: None,
                    expiration_seconds: 3607
                },
                TokenSource {
                    key: "token-1".into(),
                    audience: Some("vault".into()),
                    expiration_seconds: 3600
                },
            ]
        );
        let env = Environment {
            vkube_ip: Some("198.19.0.7".into()),
            ..env("vc", "h")
        };
        let spec = host_pod(&p, &env).unwrap().spec.unwrap();
        let secret = token_secret_name("team", "web", "vc");
        let vols = spec.volumes.unwrap();
        let first = vols[0]
            .projected
            .as_ref()
            .unwrap()
            .sources
            .as_ref()
            .unwrap();
        let token = first[0].secret.as_ref().unwrap();
        assert_eq!(token.name, secret);
        assert_eq!(token.items.as_ref().unwrap()[0].key, "token-0");
        assert_eq!(token.items.as_ref().unwrap()[0].path, "token");
        assert!(first[0].service_account_token.is_none());
        assert_eq!(
            first[1].config_map.as_ref().unwrap().name,
            names::host_name("ConfigMap", "team", "kube-root-ca.crt", "vc")
        );
        let field = &first[2]
            .downward_api
            .as_ref()
            .unwrap()
            .items
            .as_ref()
            .unwrap()[0];
        assert_eq!(
            field.field_ref.as_ref().unwrap().field_path,
            "metadata.annotations['vkube.dev/namespace']"
        );
        let second = vols[1]
            .projected
            .as_ref()
            .unwrap()
            .sources
            .as_ref()
            .unwrap();
        assert_eq!(
            second[0].secret.as_ref().unwrap().items.as_ref().unwrap()[0].key,
            "token-1"
        );
        let vars = spec.containers[0].env.as_ref().unwrap();
        let var = |n: &str| {
            vars.iter()
                .find(|e| e.name == n)
                .and_then(|e| e.value.clone())
        };
        assert_eq!(
            var("KUBERNETES_SERVICE_HOST").as_deref(),
            Some("198.19.0.7")
        );
        // The pod's own value wins, as over a kubelet's.
        assert_eq!(var("KUBERNETES_SERVICE_PORT").as_deref(), Some("8443"));
        assert_eq!(spec.dns_policy.as_deref(), Some("None"));
        let dns = spec.dns_config.unwrap();
        assert_eq!(dns.nameservers.unwrap(), ["198.19.0.7"]);
        assert_eq!(
            dns.searches.unwrap(),
            [
                "team.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local"
            ]
        );
        assert_eq!(dns.options.unwrap()[0].value.as_deref(), Some("5"));
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
        let spec = host_pod(&p, &env("vc", "h")).unwrap().spec.unwrap();
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
        let host = host_pod(&v, &env("vc", "h")).unwrap();
        assert!(spec_update(&host, &host).is_none());
        let v2 = pod(
            json!({"metadata": {"name": "w", "namespace": "n", "uid": "u"},
                            "spec": {"containers": [{"name": "c", "image": "two"}], "activeDeadlineSeconds": 5}}),
        );
        let wanted = host_pod(&v2, &env("vc", "h")).unwrap();
        let next = spec_update(&host, &wanted).unwrap();
        let spec = next.spec.unwrap();
        assert_eq!(spec.containers[0].image.as_deref(), Some("two"));
        assert_eq!(spec.active_deadline_seconds, Some(5));
    }

    #[test]
    fn debug_containers_and_resizes_reach_the_host() {
        let v = pod(
            json!({"metadata": {"name": "w", "namespace": "n", "uid": "u"},
                           "spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "100m"}}}]}}),
        );
        let host = host_pod(&v, &env("vc", "h")).unwrap();
        assert!(ephemeral_update(&host, &host).is_none() && resize_update(&host, &host).is_none());
        let v2 = pod(
            json!({"metadata": {"name": "w", "namespace": "n", "uid": "u"},
                            "spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "200m"}}}],
                                     "ephemeralContainers": [{"name": "dbg", "image": "busybox",
                                        "env": [{"name": "ME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}]}}),
        );
        let wanted = host_pod(&v2, &env("vc", "h")).unwrap();
        let next = ephemeral_update(&host, &wanted).unwrap();
        let eph = &next
            .spec
            .as_ref()
            .unwrap()
            .ephemeral_containers
            .as_ref()
            .unwrap()[0];
        assert_eq!(eph.name, "dbg");
        assert_eq!(eph.env.as_ref().unwrap()[0].value.as_deref(), Some("w"));
        let resized = resize_update(&host, &wanted).unwrap();
        let requests = resized.spec.unwrap().containers[0]
            .resources
            .clone()
            .unwrap()
            .requests
            .unwrap();
        assert_eq!(requests["cpu"].0, "200m");
    }
}
