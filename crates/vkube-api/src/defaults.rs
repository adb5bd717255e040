//! Upstream's defaulting (the `SetDefaults_*` functions of kube-apiserver's versioned types). It
//! runs on every object a create, update or patch writes, before validation, so what vkube stores
//! and returns is what kube-apiserver would: a Deployment read back has its strategy, a Secret its
//! type, a container its pull policy. Only fields upstream defaults are touched, and only when unset.

use serde_json::{Map, Value, json};

use crate::Resource;

/// Applies the defaults of `resource`'s kind to `obj` in place.
pub fn apply(resource: &Resource, obj: &mut Value) {
    match (resource.group, resource.kind) {
        ("apiextensions.k8s.io", "CustomResourceDefinition") => crd(obj),
        ("", "Pod") => {
            if let Some(spec) = obj.get_mut("spec") {
                pod_spec(spec);
                pod_only(spec);
            }
        }
        ("", "PodTemplate") => template(obj.get_mut("template")),
        ("", "ReplicationController") => {
            let spec = &mut obj["spec"];
            set(spec, "replicas", json!(1));
            template(spec.get_mut("template"));
        }
        ("", "Secret") => {
            string_data(obj);
            set(obj, "type", json!("Opaque"));
        }
        ("", "Service") => service(&mut obj["spec"]),
        ("", "Endpoints") => {
            for subset in items(obj, "subsets") {
                protocols(subset, "ports");
            }
        }
        ("", "PersistentVolumeClaim") => set(&mut obj["spec"], "volumeMode", json!("Filesystem")),
        ("", "PersistentVolume") => {
            let spec = &mut obj["spec"];
            set(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
            set(spec, "volumeMode", json!("Filesystem"));
        }
        ("apps", "Deployment") => deployment(&mut obj["spec"]),
        ("apps", "ReplicaSet") => {
            let spec = &mut obj["spec"];
            set(spec, "replicas", json!(1));
            template(spec.get_mut("template"));
        }
        ("apps", "StatefulSet") => stateful_set(&mut obj["spec"]),
        ("apps", "DaemonSet") => {
            let spec = &mut obj["spec"];
            set(&mut spec["updateStrategy"], "type", json!("RollingUpdate"));
            if spec["updateStrategy"]["type"] == "RollingUpdate" {
                let rolling = &mut spec["updateStrategy"]["rollingUpdate"];
                set(rolling, "maxUnavailable", json!(1));
                set(rolling, "maxSurge", json!(0));
            }
            set(spec, "revisionHistoryLimit", json!(10));
            template(spec.get_mut("template"));
        }
        ("batch", "Job") => job(&mut obj["spec"]),
        ("batch", "CronJob") => {
            let spec = &mut obj["spec"];
            set(spec, "concurrencyPolicy", json!("Allow"));
            set(spec, "suspend", json!(false));
            set(spec, "successfulJobsHistoryLimit", json!(3));
            set(spec, "failedJobsHistoryLimit", json!(1));
            if let Some(job_spec) = spec.get_mut("jobTemplate").and_then(|t| t.get_mut("spec")) {
                job(job_spec);
            }
        }
        ("autoscaling", "HorizontalPodAutoscaler") => {
            set(&mut obj["spec"], "minReplicas", json!(1))
        }
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => binding(obj),
        ("networking.k8s.io", "NetworkPolicy") => network_policy(&mut obj["spec"]),
        ("discovery.k8s.io", "EndpointSlice") => protocols(obj, "ports"),
        ("scheduling.k8s.io", "PriorityClass") => {
            set(obj, "preemptionPolicy", json!("PreemptLowerPriority"))
        }
        ("storage.k8s.io", "StorageClass") => {
            set(obj, "reclaimPolicy", json!("Delete"));
            set(obj, "volumeBindingMode", json!("Immediate"));
        }
        ("storage.k8s.io", "CSIDriver") => {
            let spec = &mut obj["spec"];
            set(spec, "attachRequired", json!(true));
            set(spec, "podInfoOnMount", json!(false));
            set(spec, "requiresRepublish", json!(false));
            set(spec, "storageCapacity", json!(false));
            set(spec, "seLinuxMount", json!(false));
            set(spec, "fsGroupPolicy", json!("ReadWriteOnceWithFSType"));
            set(spec, "volumeLifecycleModes", json!(["Persistent"]));
        }
        (
            "admissionregistration.k8s.io",
            kind @ ("ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration"),
        ) => {
            for hook in items(obj, "webhooks") {
                webhook(hook, kind.starts_with("Mutating"));
            }
        }
        (
            "admissionregistration.k8s.io",
            kind @ ("ValidatingAdmissionPolicy" | "ValidatingAdmissionPolicyBinding"),
        ) => crate::validation::admission_policy::defaults(obj, kind.ends_with("Policy")),
        ("flowcontrol.apiserver.k8s.io", kind) => crate::flowcontrol::defaults(kind, obj),
        _ => {}
    }
}

/// Sets `obj[key]` when it is absent or null; `obj` becomes an object if it was null.
/// apiextensions v1's SetDefaults: singular and listKind from the kind, the `None` conversion.
fn crd(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    let kind = spec["names"]["kind"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if let Some(names) = spec.get_mut("names").filter(|n| n.is_object()) {
        if names["singular"].as_str().is_none_or(str::is_empty) {
            names["singular"] = json!(kind.to_ascii_lowercase());
        }
        if !kind.is_empty() && names["listKind"].as_str().is_none_or(str::is_empty) {
            names["listKind"] = json!(format!("{kind}List"));
        }
    }
    set(spec, "conversion", json!({"strategy": "None"}));
    // SetDefaults_ServiceReference: a conversion webhook's Service port is 443.
    if let Some(svc) = spec
        .pointer_mut("/conversion/webhook/clientConfig/service")
        .filter(|s| s.is_object())
    {
        set(svc, "port", json!(443));
    }
}

/// A Secret's `stringData` is write-only: upstream's conversion merges it into `data` (base64,
/// its keys winning) and drops it, before validation, so it is never stored or returned.
fn string_data(obj: &mut Value) {
    use base64::Engine;
    let Some(Value::Object(strings)) = obj.as_object_mut().and_then(|o| o.remove("stringData"))
    else {
        return;
    };
    if !obj["data"].is_object() {
        obj["data"] = json!({});
    }
    for (k, v) in strings {
        let text = v.as_str().map_or_else(|| v.to_string(), str::to_string);
        obj["data"][k] = json!(base64::engine::general_purpose::STANDARD.encode(text));
    }
}

/// rbac v1's SetDefaults: the roleRef's apiGroup, and the apiGroup of User and Group subjects.
fn binding(obj: &mut Value) {
    const RBAC: &str = "rbac.authorization.k8s.io";
    if let Some(role_ref) = obj.get_mut("roleRef").filter(|r| r.is_object()) {
        if role_ref["apiGroup"].as_str().is_none_or(str::is_empty) {
            role_ref["apiGroup"] = json!(RBAC);
        }
    }
    for subject in items(obj, "subjects") {
        let kind = subject["kind"].as_str().unwrap_or_default();
        if matches!(kind, "User" | "Group")
            && subject["apiGroup"].as_str().is_none_or(str::is_empty)
        {
            subject["apiGroup"] = json!(RBAC);
        }
    }
}

fn set(obj: &mut Value, key: &str, value: Value) {
    if obj.is_null() {
        *obj = Value::Object(Map::new());
    }
    if let Some(map) = obj.as_object_mut() {
        let slot = map.entry(key).or_insert(Value::Null);
        if slot.is_null() {
            *slot = value;
        }
    }
}

/// The items of `parent[key]`, when it is a list. Never creates the key: serde_json's `v["k"]`
/// on a `&mut` inserts a null, which would then be stored.
fn items<'a>(parent: &'a mut Value, key: &str) -> impl Iterator<Item = &'a mut Value> {
    parent
        .get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
}

fn protocols(parent: &mut Value, key: &str) {
    for port in items(parent, key) {
        set(port, "protocol", json!("TCP"));
    }
}

fn template(t: Option<&mut Value>) {
    if let Some(spec) = t.and_then(|t| t.get_mut("spec")) {
        pod_spec(spec);
    }
}

/// SetDefaults_PodSpec, _Container, _Probe, _Volume and friends.
fn pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    set(spec, "dnsPolicy", json!("ClusterFirst"));
    set(spec, "restartPolicy", json!("Always"));
    set(spec, "terminationGracePeriodSeconds", json!(30));
    set(spec, "securityContext", json!({}));
    set(spec, "schedulerName", json!("default-scheduler"));
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        for c in items(spec, list) {
            container(c);
        }
    }
    for volume in items(spec, "volumes") {
        volume_source(volume);
    }
}

fn container(c: &mut Value) {
    set(c, "terminationMessagePath", json!("/dev/termination-log"));
    set(c, "terminationMessagePolicy", json!("File"));
    set(c, "resources", json!({}));
    let image = c["image"].as_str().unwrap_or_default();
    // The tag is what follows the last ':' after the last '/'; a digest pins the image.
    let tag = image
        .rsplit('/')
        .next()
        .and_then(|last| last.split_once(':').map(|(_, t)| t));
    let policy = if image.contains('@') || tag.is_some_and(|t| t != "latest") {
        "IfNotPresent"
    } else {
        "Always"
    };
    set(c, "imagePullPolicy", json!(policy));
    protocols(c, "ports");
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if c[probe].is_object() {
            let p = &mut c[probe];
            set(p, "timeoutSeconds", json!(1));
            set(p, "periodSeconds", json!(10));
            set(p, "successThreshold", json!(1));
            set(p, "failureThreshold", json!(3));
            if p["httpGet"].is_object() {
                set(&mut p["httpGet"], "path", json!("/"));
                set(&mut p["httpGet"], "scheme", json!("HTTP"));
            }
        }
    }
    for env in items(c, "env") {
        if env["valueFrom"]["fieldRef"].is_object() {
            set(&mut env["valueFrom"]["fieldRef"], "apiVersion", json!("v1"));
        }
    }
}

fn volume_source(v: &mut Value) {
    let Some(map) = v.as_object_mut() else { return };
    if map.keys().all(|k| k == "name") {
        map.insert("emptyDir".into(), json!({}));
    }
    for source in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(s) = map.get_mut(source).filter(|s| s.is_object()) {
            set(s, "defaultMode", json!(420));
        }
    }
    if let Some(downward) = map.get_mut("downwardAPI") {
        for item in items(downward, "items") {
            if item["fieldRef"].is_object() {
                set(&mut item["fieldRef"], "apiVersion", json!("v1"));
            }
        }
    }
    if let Some(h) = map.get_mut("hostPath").filter(|s| s.is_object()) {
        set(h, "type", json!(""));
    }
}

/// What a Pod gets beyond its spec's defaults: SetDefaults_Pod and the default admission plugins
/// (ServiceAccount, Priority, DefaultTolerationSeconds).
fn pod_only(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    set(spec, "enableServiceLinks", json!(true));
    for list in ["containers", "initContainers"] {
        for c in items(spec, list) {
            // Limits without requests become the requests.
            let limits = c["resources"]["limits"].clone();
            if let Some(limits) = limits.as_object() {
                for (name, q) in limits {
                    set(&mut c["resources"]["requests"], name, q.clone());
                }
            }
        }
    }
    let account = spec["serviceAccountName"]
        .as_str()
        .or(spec["serviceAccount"].as_str())
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
        .to_string();
    spec["serviceAccountName"] = json!(account);
    spec["serviceAccount"] = json!(account);
    if spec["priorityClassName"]
        .as_str()
        .unwrap_or_default()
        .is_empty()
    {
        set(spec, "priority", json!(0));
    }
    set(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    let tolerations = spec["tolerations"].as_array().cloned().unwrap_or_default();
    let mut added = tolerations.clone();
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let tolerated = tolerations.iter().any(|t| {
            (t["key"] == key || (t["key"].is_null() && t["operator"] == "Exists"))
                && (t["effect"].is_null() || t["effect"] == "NoExecute")
        });
        if !tolerated {
            added.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
        }
    }
    spec["tolerations"] = Value::Array(added);
}

fn service(spec: &mut Value) {
    set(spec, "type", json!("ClusterIP"));
    set(spec, "sessionAffinity", json!("None"));
    if spec["type"] != "ExternalName" {
        set(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if matches!(spec["type"].as_str(), Some("NodePort" | "LoadBalancer")) {
        set(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if spec["type"] == "LoadBalancer" {
        set(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    for port in items(spec, "ports") {
        set(port, "protocol", json!("TCP"));
        // Go clients send an unset targetPort as 0 (IntOrString has no empty form); upstream's
        // SetDefaults_Service treats 0 and "" as unset.
        if port["targetPort"] == json!(0) || port["targetPort"] == json!("") {
            port["targetPort"] = Value::Null;
        }
        let number = port["port"].clone();
        set(port, "targetPort", number);
    }
}

fn deployment(spec: &mut Value) {
    set(spec, "replicas", json!(1));
    set(&mut spec["strategy"], "type", json!("RollingUpdate"));
    if spec["strategy"]["type"] == "RollingUpdate" {
        let rolling = &mut spec["strategy"]["rollingUpdate"];
        set(rolling, "maxUnavailable", json!("25%"));
        set(rolling, "maxSurge", json!("25%"));
    }
    set(spec, "revisionHistoryLimit", json!(10));
    set(spec, "progressDeadlineSeconds", json!(600));
    template(spec.get_mut("template"));
}

fn stateful_set(spec: &mut Value) {
    set(spec, "replicas", json!(1));
    set(spec, "podManagementPolicy", json!("OrderedReady"));
    set(&mut spec["updateStrategy"], "type", json!("RollingUpdate"));
    if spec["updateStrategy"]["type"] == "RollingUpdate" {
        set(
            &mut spec["updateStrategy"]["rollingUpdate"],
            "partition",
            json!(0),
        );
    }
    set(spec, "revisionHistoryLimit", json!(10));
    let retention = &mut spec["persistentVolumeClaimRetentionPolicy"];
    set(retention, "whenDeleted", json!("Retain"));
    set(retention, "whenScaled", json!("Retain"));
    for claim in items(spec, "volumeClaimTemplates") {
        set(&mut claim["spec"], "volumeMode", json!("Filesystem"));
    }
    template(spec.get_mut("template"));
}

fn job(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    if spec["completions"].is_null() && spec["parallelism"].is_null() {
        spec["completions"] = json!(1);
    }
    set(spec, "parallelism", json!(1));
    let per_index = !spec["backoffLimitPerIndex"].is_null();
    set(
        spec,
        "backoffLimit",
        json!(if per_index { i32::MAX } else { 6 }),
    );
    set(spec, "completionMode", json!("NonIndexed"));
    set(spec, "suspend", json!(false));
    // With a pod failure policy, a pod counts as failed only once it is gone (upstream).
    let replacement = if spec["podFailurePolicy"].is_null() {
        "TerminatingOrFailed"
    } else {
        "Failed"
    };
    set(spec, "podReplacementPolicy", json!(replacement));
    template(spec.get_mut("template"));
}

fn network_policy(spec: &mut Value) {
    if spec["policyTypes"].as_array().is_none_or(Vec::is_empty) {
        let mut types = vec![json!("Ingress")];
        if spec["egress"].as_array().is_some_and(|e| !e.is_empty()) {
            types.push(json!("Egress"));
        }
        spec["policyTypes"] = Value::Array(types);
    }
    for direction in ["ingress", "egress"] {
        for rule in items(spec, direction) {
            protocols(rule, "ports");
        }
    }
}

fn webhook(hook: &mut Value, mutating: bool) {
    set(hook, "failurePolicy", json!("Fail"));
    set(hook, "matchPolicy", json!("Equivalent"));
    set(hook, "namespaceSelector", json!({}));
    set(hook, "objectSelector", json!({}));
    set(hook, "timeoutSeconds", json!(10));
    if mutating {
        set(hook, "reinvocationPolicy", json!("Never"));
    }
    for rule in items(hook, "rules") {
        set(rule, "scope", json!("*"));
    }
    if hook["clientConfig"]["service"].is_object() {
        set(&mut hook["clientConfig"]["service"], "port", json!(443));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry;

    fn defaulted(group: &str, plural: &str, mut obj: Value) -> Value {
        let resource = registry::RESOURCES
            .iter()
            .find(|r| r.group == group && r.plural == plural)
            .unwrap();
        apply(resource, &mut obj);
        obj
    }

    #[test]
    fn secret_string_data_is_merged_into_data() {
        let s = defaulted(
            "",
            "secrets",
            json!({"data": {"a": "eA==", "b": "eA=="}, "stringData": {"b": "s3cret", "c": ""}}),
        );
        assert_eq!(
            s,
            json!({"type": "Opaque", "data": {"a": "eA==", "b": "czNjcmV0", "c": ""}})
        );
    }

    #[test]
    fn bindings_default_their_api_groups() {
        let b = defaulted(
            "rbac.authorization.k8s.io",
            "rolebindings",
            json!({"roleRef": {"apiGroup": "", "kind": "Role", "name": "r"},
                   "subjects": [{"kind": "User", "name": "u"}, {"kind": "ServiceAccount", "name": "s", "namespace": "n"}]}),
        );
        assert_eq!(b["roleRef"]["apiGroup"], "rbac.authorization.k8s.io");
        assert_eq!(b["subjects"][0]["apiGroup"], "rbac.authorization.k8s.io");
        assert!(b["subjects"][1].get("apiGroup").is_none());
    }

    #[test]
    fn a_deployment_reads_back_as_upstream_stores_it() {
        let d = defaulted(
            "apps",
            "deployments",
            json!({"spec": {"selector": {}, "template": {"spec": {"containers": [
                {"name": "a", "image": "nginx", "ports": [{"containerPort": 80}]},
                {"name": "b", "image": "registry:5000/app:1.2"},
                {"name": "c", "image": "app@sha256:abc"},
            ]}}}}),
        );
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(
            d["spec"]["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
        let pod = &d["spec"]["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Always");
        assert_eq!(pod["dnsPolicy"], "ClusterFirst");
        assert_eq!(pod["terminationGracePeriodSeconds"], 30);
        assert_eq!(pod["schedulerName"], "default-scheduler");
        assert!(
            pod.get("enableServiceLinks").is_none(),
            "templates are not pods"
        );
        let pulls: Vec<_> = (0..3)
            .map(|i| pod["containers"][i]["imagePullPolicy"].clone())
            .collect();
        assert_eq!(pulls, ["Always", "IfNotPresent", "IfNotPresent"]);
        assert_eq!(pod["containers"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(pod["containers"][0]["terminationMessagePolicy"], "File");
    }

    #[test]
    fn absent_lists_stay_absent() {
        let d = defaulted(
            "apps",
            "deployments",
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x"}]}}}}),
        );
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        for key in ["ports", "env", "volumeMounts"] {
            assert!(c.get(key).is_none(), "{key} appeared: {c}");
        }
        let cron = defaulted(
            "batch",
            "cronjobs",
            json!({"spec": {"schedule": "* * * * *"}}),
        );
        assert!(cron["spec"].get("jobTemplate").is_none(), "{cron}");
    }

    #[test]
    fn set_values_win_and_recreate_strategies_get_no_rolling_update() {
        let d = defaulted(
            "apps",
            "deployments",
            json!({"spec": {"replicas": 0, "strategy": {"type": "Recreate"}}}),
        );
        assert_eq!(d["spec"]["replicas"], 0);
        assert_eq!(d["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn pods_get_admission_defaults_too() {
        let p = defaulted(
            "",
            "pods",
            json!({"spec": {"containers": [{"name": "a", "image": "x:1", "resources": {"limits": {"cpu": "1"}}}]}}),
        );
        let spec = &p["spec"];
        assert_eq!(spec["serviceAccountName"], "default");
        assert_eq!(spec["enableServiceLinks"], true);
        assert_eq!(spec["priority"], 0);
        assert_eq!(
            spec["containers"][0]["resources"]["requests"],
            json!({"cpu": "1"})
        );
        assert_eq!(spec["tolerations"].as_array().unwrap().len(), 2);
        assert_eq!(spec["tolerations"][0]["tolerationSeconds"], 300);
    }

    #[test]
    fn services_secrets_jobs_and_bindings() {
        let s = defaulted("", "services", json!({"spec": {"ports": [{"port": 80}]}}));
        assert_eq!(
            s["spec"],
            json!({"type": "ClusterIP", "sessionAffinity": "None", "internalTrafficPolicy": "Cluster",
                   "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}]})
        );
        // A Go client's unset targetPort (0, or "") is defaulted too; a set one is kept.
        let s = defaulted(
            "",
            "services",
            json!({"spec": {"ports": [{"port": 80, "targetPort": 0}, {"port": 81, "targetPort": ""},
                                      {"port": 82, "targetPort": "http"}]}}),
        );
        let target: Vec<&Value> = s["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| &p["targetPort"])
            .collect();
        assert_eq!(target, [&json!(80), &json!(81), &json!("http")]);
        assert_eq!(defaulted("", "secrets", json!({}))["type"], "Opaque");
        let j = defaulted("batch", "jobs", json!({"spec": {"template": {"spec": {}}}}));
        assert_eq!(j["spec"]["completions"], 1);
        assert_eq!(j["spec"]["parallelism"], 1);
        assert_eq!(j["spec"]["backoffLimit"], 6);
        let j = defaulted("batch", "jobs", json!({"spec": {"parallelism": 3}}));
        assert!(
            j["spec"]["completions"].is_null(),
            "a work queue has no completions"
        );
        assert_eq!(j["spec"]["podReplacementPolicy"], "TerminatingOrFailed");
        let j = defaulted(
            "batch",
            "jobs",
            json!({"spec": {"podFailurePolicy": {"rules": []}}}),
        );
        assert_eq!(j["spec"]["podReplacementPolicy"], "Failed");
        let b = defaulted(
            "rbac.authorization.k8s.io",
            "rolebindings",
            json!({"subjects": [{"kind": "User", "name": "u"}, {"kind": "ServiceAccount", "name": "s"}]}),
        );
        assert_eq!(b["subjects"][0]["apiGroup"], "rbac.authorization.k8s.io");
        assert!(b["subjects"][1].get("apiGroup").is_none());
    }
}
