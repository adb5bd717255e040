//! The chart in `chart/`, rendered in Rust: `vkube create` needs no helm binary. The objects
//! and names are the chart's (chart/README.md's contract); `tests/chart/run` compares this
//! renderer with `helm template` object by object, so the two cannot drift apart unseen.

use anyhow::{Result, bail};
use serde_json::{Value, json};
use sha2::Digest;

use super::values::Reader;

/// One rendered object and the chart template it comes from (`templates/NAME.yaml`).
pub struct Rendered {
    pub template: &'static str,
    pub object: Value,
}

/// The cluster CA of the `NAME-certs` Secret, PEM.
#[derive(Clone)]
pub struct CaPair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Where the virtual cluster's state lives, from `controlPlane.backingStore`.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Store {
    EmbeddedSqlite,
    EmbeddedEtcd,
    ExternalEtcd,
    ExternalDatabase,
}

impl Store {
    pub fn of(values: &Value) -> Result<Store> {
        let r = Reader(values);
        let on = [
            (
                r.bool("controlPlane.backingStore.etcd.embedded.enabled")?,
                Store::EmbeddedEtcd,
            ),
            (
                r.bool("controlPlane.backingStore.etcd.external.enabled")?,
                Store::ExternalEtcd,
            ),
            (
                r.bool("controlPlane.backingStore.database.external.enabled")?,
                Store::ExternalDatabase,
            ),
        ];
        let mut enabled = on.iter().filter(|(e, _)| *e).map(|(_, s)| *s);
        let store = enabled.next().unwrap_or(Store::EmbeddedSqlite);
        if enabled.next().is_some() {
            bail!("controlPlane.backingStore: enable one store, not several");
        }
        Ok(store)
    }

    /// Whether the data lives in the pod's volume (so it wants a claim by default).
    fn embedded(self) -> bool {
        matches!(self, Store::EmbeddedSqlite | Store::EmbeddedEtcd)
    }
}

/// The checks the chart makes with `fail`, with its messages (and `vkube serve`'s).
pub fn validate(values: &Value) -> Result<()> {
    let store = Store::of(values)?;
    let replicas = Reader(values).int("controlPlane.statefulSet.highAvailability.replicas")?;
    if replicas < 1 {
        bail!("controlPlane.statefulSet.highAvailability.replicas must be at least 1");
    }
    if replicas > 1 && store == Store::EmbeddedSqlite {
        bail!(
            "{replicas} replicas on embedded SQLite: embedded SQLite keeps one database per replica, so replicas would disagree (for example on RBAC); use controlPlane.backingStore.etcd.embedded or an external etcd/PostgreSQL"
        );
    }
    Ok(())
}

/// The release's objects, in the chart's template order.
pub fn render(name: &str, namespace: &str, values: &Value, ca: &CaPair) -> Result<Vec<Rendered>> {
    validate(values)?;
    let r = Reader(values);
    let labels = json!({"app": "vkube", "release": name});
    let meta = |object_name: String| json!({"name": object_name, "namespace": namespace, "labels": labels.clone()});
    let config_yaml = super::values::to_yaml(values)?;
    let mut out = Vec::new();
    let mut push = |template: &'static str, object: Value| out.push(Rendered { template, object });

    push(
        "templates/config-secret.yaml",
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": meta(format!("vc-config-{name}")),
               "type": "Opaque", "data": {"config.yaml": b64(&config_yaml)}}),
    );
    push(
        "templates/certs-secret.yaml",
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": meta(format!("{name}-certs")),
               "type": "Opaque", "data": {"ca.crt": b64(&ca.cert_pem), "ca.key": b64(&ca.key_pem)}}),
    );
    let account = format!("vc-{name}");
    push(
        "templates/serviceaccount.yaml",
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(account.clone())}),
    );
    push(
        "templates/role.yaml",
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": meta(account.clone()), "rules": role_rules()}),
    );
    let subjects = json!([{"kind": "ServiceAccount", "name": account, "namespace": namespace}]);
    push(
        "templates/rolebinding.yaml",
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": meta(account.clone()),
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
               "subjects": subjects}),
    );
    if r.bool("sync.fromHost.nodes.enabled")? {
        let cluster_name = format!("vc-{name}-v-{namespace}");
        let cluster_meta = json!({"name": cluster_name, "labels": labels});
        push(
            "templates/clusterrole.yaml",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                   "metadata": cluster_meta, "rules": cluster_rules()}),
        );
        push(
            "templates/clusterrolebinding.yaml",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                   "metadata": cluster_meta,
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_name},
                   "subjects": subjects}),
        );
    }
    let selector = labels.clone();
    if r.bool("controlPlane.service.enabled")? {
        let kind = match r.string("controlPlane.service.spec.type")? {
            t if t.is_empty() => "ClusterIP".to_string(),
            t => t,
        };
        push(
            "templates/service.yaml",
            json!({"apiVersion": "v1", "kind": "Service", "metadata": meta(name.to_string()),
                   "spec": {"type": kind, "selector": selector, "ports": [
                       {"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP"},
                       {"name": "dns-udp", "port": 53, "targetPort": 1053, "protocol": "UDP"},
                       {"name": "dns-tcp", "port": 53, "targetPort": 1053, "protocol": "TCP"}]}}),
        );
    }
    let headless = format!("{name}-headless");
    push(
        "templates/headless-service.yaml",
        json!({"apiVersion": "v1", "kind": "Service", "metadata": meta(headless.clone()),
               "spec": {"clusterIP": "None", "publishNotReadyAddresses": true, "selector": selector,
                        "ports": [
                            {"name": "https", "port": 8443, "targetPort": 8443, "protocol": "TCP"},
                            {"name": "etcd", "port": 2379, "targetPort": 2379, "protocol": "TCP"},
                            {"name": "peer", "port": 2380, "targetPort": 2380, "protocol": "TCP"}]}}),
    );
    push(
        "templates/statefulset.yaml",
        stateful_set(
            name,
            namespace,
            values,
            &config_yaml,
            meta(name.to_string()),
            &headless,
        )?,
    );
    Ok(out)
}

/// The chart's `appVersion` (chart/Chart.yaml), the image tag when `image.tag` is empty.
fn app_version() -> Result<String> {
    let chart: Value = serde_saphyr::from_str(include_str!("../../../../chart/Chart.yaml"))
        .map_err(|e| anyhow::anyhow!("chart/Chart.yaml: {e}"))?;
    match &chart["appVersion"] {
        Value::String(s) if !s.is_empty() => Ok(s.clone()),
        other => bail!("chart/Chart.yaml: appVersion is {other}, not a version"),
    }
}

fn stateful_set(
    name: &str,
    namespace: &str,
    values: &Value,
    config_yaml: &str,
    metadata: Value,
    headless: &str,
) -> Result<Value> {
    let r = Reader(values);
    let ss = "controlPlane.statefulSet";
    let store = Store::of(values)?;
    let registry = r.string(&format!("{ss}.image.registry"))?;
    // `tag | default .Chart.AppVersion`: an empty or absent tag is the chart's appVersion.
    let mut tag = r.string(&format!("{ss}.image.tag"))?;
    if tag.is_empty() {
        tag = app_version()?;
    }
    let repository_tag = format!("{}:{tag}", r.string(&format!("{ss}.image.repository"))?);
    let image = if registry.is_empty() {
        repository_tag
    } else {
        format!("{registry}/{repository_tag}")
    };
    // The user's labels and annotations first: the selector labels and the checksum win.
    let mut pod_labels = object_or_empty(r.raw(&format!("{ss}.pods.labels")));
    extend_map(&mut pod_labels, json!({"app": "vkube", "release": name}));
    let mut pod_annotations = object_or_empty(r.raw(&format!("{ss}.pods.annotations")));
    extend_map(
        &mut pod_annotations,
        json!({"checksum/config": hex(&sha2::Sha256::digest(config_yaml))}),
    );
    let mut args = vec![
        "serve".to_string(),
        "--config=/etc/vkube/config.yaml".into(),
        "--data-dir=/data".into(),
        "--listen=0.0.0.0:8443".into(),
        format!("--name={name}"),
    ];
    for san in [
        name.to_string(),
        format!("{name}.{namespace}"),
        format!("{name}.{namespace}.svc"),
        format!("{name}.{namespace}.svc.cluster.local"),
    ] {
        args.push(format!("--tls-san={san}"));
    }
    args.push("--ca-cert-file=/etc/vkube/pki/ca.crt".into());
    args.push("--ca-key-file=/etc/vkube/pki/ca.key".into());
    let field = |env: &str, path: &str| json!({"name": env, "valueFrom": {"fieldRef": {"fieldPath": path}}});
    let mut env = vec![
        field("POD_NAME", "metadata.name"),
        field("POD_NAMESPACE", "metadata.namespace"),
        field("VKUBE_ADVERTISE_ADDRESS", "status.podIP"),
    ];
    env.extend(list(r.raw(&format!("{ss}.env")), &format!("{ss}.env"))?);
    let probe = |path: &str| json!({"httpGet": {"path": path, "port": 8443, "scheme": "HTTPS"}});
    let mut readiness = probe("/readyz");
    extend_map(
        &mut readiness,
        json!({"periodSeconds": 2, "failureThreshold": 3}),
    );
    let mut liveness = probe("/livez");
    extend_map(
        &mut liveness,
        json!({"initialDelaySeconds": 60, "periodSeconds": 10, "failureThreshold": 6}),
    );
    let mut startup = probe("/readyz");
    extend_map(
        &mut startup,
        json!({"periodSeconds": 2, "failureThreshold": 150}),
    );
    let mut mounts = vec![
        json!({"name": "data", "mountPath": "/data"}),
        json!({"name": "config", "mountPath": "/etc/vkube", "readOnly": true}),
        json!({"name": "certs", "mountPath": "/etc/vkube/pki", "readOnly": true}),
    ];
    mounts.extend(list(
        r.raw(&format!("{ss}.persistence.addVolumeMounts")),
        &format!("{ss}.persistence.addVolumeMounts"),
    )?);
    let mut volumes = vec![
        json!({"name": "config", "secret": {"secretName": format!("vc-config-{name}")}}),
        json!({"name": "certs", "secret": {"secretName": format!("{name}-certs"), "defaultMode": 0o440}}),
    ];
    volumes.extend(list(
        r.raw(&format!("{ss}.persistence.addVolumes")),
        &format!("{ss}.persistence.addVolumes"),
    )?);
    let claim = format!("{ss}.persistence.volumeClaim");
    let wants_claim = match r.raw(&format!("{claim}.enabled")) {
        Value::Bool(b) => b,
        Value::String(s) if s == "true" || s == "false" => s == "true",
        Value::String(s) if s == "auto" => store.embedded(),
        Value::Null => store.embedded(),
        other => bail!("{claim}.enabled: expected true, false or \"auto\", got {other}"),
    };
    let mut claims = Vec::new();
    if wants_claim {
        let mut spec = json!({
            "accessModes": r.raw(&format!("{claim}.accessModes")),
            "resources": {"requests": {"storage": r.string(&format!("{claim}.size"))?}},
        });
        let class = r.string(&format!("{claim}.storageClass"))?;
        if !class.is_empty() {
            extend_map(&mut spec, json!({"storageClassName": class}));
        }
        claims.push(json!({"metadata": {"name": "data"}, "spec": spec}));
    } else {
        volumes.push(json!({"name": "data", "emptyDir": {}}));
    }
    let mut container = json!({
        "name": "vkube",
        "image": image,
        "args": args,
        "env": env,
        "ports": [
            {"name": "https", "containerPort": 8443, "protocol": "TCP"},
            {"name": "dns-udp", "containerPort": 1053, "protocol": "UDP"},
            {"name": "dns-tcp", "containerPort": 1053, "protocol": "TCP"},
            {"name": "etcd", "containerPort": 2379, "protocol": "TCP"},
            {"name": "peer", "containerPort": 2380, "protocol": "TCP"},
        ],
        "readinessProbe": readiness,
        "livenessProbe": liveness,
        "startupProbe": startup,
        "securityContext": {"readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": mounts,
    });
    let pull_policy = r.string(&format!("{ss}.imagePullPolicy"))?;
    if !pull_policy.is_empty() {
        container["imagePullPolicy"] = json!(pull_policy);
    }
    let resources = r.raw(&format!("{ss}.resources"));
    if resources.as_object().is_some_and(|m| !m.is_empty()) {
        container["resources"] = resources;
    }
    let mut metadata = metadata;
    let mut labels = object_or_empty(r.raw(&format!("{ss}.labels")));
    extend_map(&mut labels, metadata["labels"].take());
    metadata["labels"] = labels;
    let annotations = r.raw(&format!("{ss}.annotations"));
    if annotations.as_object().is_some_and(|m| !m.is_empty()) {
        metadata["annotations"] = annotations;
    }
    let mut spec = json!({
        "serviceName": headless,
        "podManagementPolicy": "Parallel",
        "replicas": r.int(&format!("{ss}.highAvailability.replicas"))?,
        "selector": {"matchLabels": {"app": "vkube", "release": name}},
        "template": {
            "metadata": {"labels": pod_labels, "annotations": pod_annotations},
            "spec": {
                "serviceAccountName": format!("vc-{name}"),
                "terminationGracePeriodSeconds": 10,
                "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
                                    "fsGroup": 65532},
                "containers": [container],
                "volumes": volumes,
            }
        },
    });
    if !claims.is_empty() {
        spec["volumeClaimTemplates"] = Value::Array(claims);
    }
    Ok(json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": metadata, "spec": spec}))
}

/// The Role of deploy/host-rbac.yaml: what the syncer needs in its host namespace.
fn role_rules() -> Value {
    let all = json!([
        "get", "list", "watch", "create", "update", "patch", "delete"
    ]);
    json!([
        {"apiGroups": [""], "resources": ["pods"], "verbs": all},
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods/ephemeralcontainers", "pods/resize"], "verbs": ["get", "update", "patch"]},
        {"apiGroups": [""], "resources": ["pods/exec", "pods/attach", "pods/portforward"], "verbs": ["get", "create"]},
        {"apiGroups": [""], "resources": ["pods/proxy", "services/proxy"], "verbs": ["get", "create", "update", "patch", "delete"]},
        {"apiGroups": [""], "resources": ["configmaps", "secrets"], "verbs": all},
        {"apiGroups": [""], "resources": ["services"], "verbs": all},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "create", "update", "patch"]},
        {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": all},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "list", "watch"]},
    ])
}

/// The ClusterRole of deploy/host-rbac.yaml (only with `sync.fromHost.nodes.enabled`).
fn cluster_rules() -> Value {
    json!([
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["persistentvolumes"], "verbs": ["get"]},
    ])
}

fn extend_map(into: &mut Value, from: Value) {
    if let (Some(into), Value::Object(from)) = (into.as_object_mut(), from) {
        into.extend(from);
    }
}

fn object_or_empty(value: Value) -> Value {
    match value {
        Value::Object(_) => value,
        _ => json!({}),
    }
}

fn list(value: Value, key: &str) -> Result<Vec<Value>> {
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => Ok(items),
        other => bail!("{key}: expected a list, got {other}"),
    }
}

pub fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The manifest as Helm records it: each object after `---` and a `# Source:` line.
pub fn manifest(rendered: &[Rendered]) -> Result<String> {
    let mut out = String::new();
    for item in rendered {
        let yaml = super::values::to_yaml(&item.object)?;
        out.push_str(&format!("---\n# Source: vkube/{}\n{}", item.template, yaml));
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::values;
    use super::*;

    fn ca() -> CaPair {
        CaPair {
            cert_pem: "CERT".into(),
            key_pem: "KEY".into(),
        }
    }

    fn with(sets: &[&str]) -> Value {
        let mut v = values::defaults();
        for s in sets {
            values::apply_set(&mut v, s).unwrap();
        }
        v
    }

    fn kinds(r: &[Rendered]) -> Vec<String> {
        r.iter()
            .map(|o| {
                format!(
                    "{}/{}",
                    o.object["kind"].as_str().unwrap(),
                    o.object["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect()
    }

    #[test]
    fn defaults_render_one_replica_on_sqlite_with_a_claim_and_no_cluster_role() {
        let r = render("team-a", "vkube-team-a", &with(&[]), &ca()).unwrap();
        assert_eq!(
            kinds(&r),
            [
                "Secret/vc-config-team-a",
                "Secret/team-a-certs",
                "ServiceAccount/vc-team-a",
                "Role/vc-team-a",
                "RoleBinding/vc-team-a",
                "Service/team-a",
                "Service/team-a-headless",
                "StatefulSet/team-a"
            ]
        );
        let ss = &r.last().unwrap().object;
        assert_eq!(ss["spec"]["replicas"], 1);
        assert_eq!(
            ss["spec"]["volumeClaimTemplates"][0]["metadata"]["name"],
            "data"
        );
        let args = &ss["spec"]["template"]["spec"]["containers"][0]["args"];
        assert!(args.as_array().unwrap().contains(&json!("--name=team-a")));
    }

    #[test]
    fn three_replicas_need_etcd_with_serves_message() {
        let err = render(
            "ha",
            "ns",
            &with(&["controlPlane.statefulSet.highAvailability.replicas=3"]),
            &ca(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.starts_with("3 replicas on embedded SQLite") && err.contains("etcd"),
            "{err}"
        );
        let r = render(
            "ha",
            "ns",
            &with(&[
                "controlPlane.statefulSet.highAvailability.replicas=3",
                "controlPlane.backingStore.etcd.embedded.enabled=true",
                "sync.fromHost.nodes.enabled=true",
            ]),
            &ca(),
        )
        .unwrap();
        assert!(kinds(&r).contains(&"ClusterRole/vc-ha-v-ns".to_string()));
        assert_eq!(r.last().unwrap().object["spec"]["replicas"], 3);
    }

    #[test]
    fn two_stores_are_refused() {
        let err = render(
            "x",
            "ns",
            &with(&[
                "controlPlane.backingStore.etcd.embedded.enabled=true",
                "controlPlane.backingStore.database.external.enabled=true",
            ]),
            &ca(),
        )
        .err()
        .unwrap()
        .to_string();
        assert_eq!(
            err,
            "controlPlane.backingStore: enable one store, not several"
        );
    }

    #[test]
    fn an_empty_or_null_tag_is_the_charts_app_version() {
        let image = |set: &str| {
            let r = render("x", "ns", &with(&[set]), &ca()).unwrap();
            r.last().unwrap().object["spec"]["template"]["spec"]["containers"][0]["image"].clone()
        };
        assert_eq!(
            image("controlPlane.statefulSet.image.tag="),
            "vkube.local/vkube:dev"
        );
        assert_eq!(
            image("controlPlane.statefulSet.image.tag=null"),
            "vkube.local/vkube:dev"
        );
        assert_eq!(
            image("controlPlane.statefulSet.image.tag=v2"),
            "vkube.local/vkube:v2"
        );
    }

    #[test]
    fn the_manifest_names_each_template() {
        let r = render("x", "ns", &with(&[]), &ca()).unwrap();
        let m = manifest(&r).unwrap();
        assert!(
            m.starts_with("---\n# Source: vkube/templates/config-secret.yaml\n"),
            "{m}"
        );
        assert_eq!(m.matches("\n---\n").count() + 1, r.len());
    }
}
