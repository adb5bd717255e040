//! Each case is an object upstream refuses, with the message kube-apiserver 1.33 gives for it.

use serde_json::{Value, json};

use super::*;
use crate::{defaults, registry};

fn check(group: &str, plural: &str, mut obj: Value, old: Option<Value>) -> Result<(), String> {
    let resource = registry::RESOURCES
        .iter()
        .find(|r| r.group == group && r.plural == plural)
        .unwrap();
    defaults::apply(resource, &mut obj);
    validate(resource, &obj, old.as_ref()).map_err(|s| s.message)
}

fn deployment(replicas: i64, labels: Value) -> Value {
    json!({"metadata": {"name": "web"}, "spec": {
        "replicas": replicas,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}},
    }})
}

#[test]
fn a_valid_deployment_passes_and_bad_ones_get_upstreams_words() {
    check(
        "apps",
        "deployments",
        deployment(2, json!({"app": "web"})),
        None,
    )
    .unwrap();
    assert_eq!(
        check(
            "apps",
            "deployments",
            deployment(-1, json!({"app": "web"})),
            None
        )
        .unwrap_err(),
        "Deployment.apps \"web\" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0"
    );
    assert_eq!(
        check(
            "apps",
            "deployments",
            deployment(1, json!({"app": "db"})),
            None
        )
        .unwrap_err(),
        "Deployment.apps \"web\" is invalid: spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"db\"}: `selector` does not match template `labels`"
    );
    let mut no_containers = deployment(1, json!({"app": "web"}));
    no_containers["spec"]["template"]["spec"]["containers"] = json!([]);
    assert_eq!(
        check("apps", "deployments", no_containers, None).unwrap_err(),
        "Deployment.apps \"web\" is invalid: spec.template.spec.containers: Required value"
    );
    let mut empty_selector = deployment(1, json!({"app": "web"}));
    empty_selector["spec"]["selector"] = json!({});
    assert_eq!(
        check("apps", "deployments", empty_selector, None).unwrap_err(),
        "Deployment.apps \"web\" is invalid: spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for deployment"
    );
    let old = deployment(1, json!({"app": "web"}));
    let mut moved = deployment(1, json!({"app": "web", "v": "2"}));
    moved["spec"]["selector"]["matchLabels"]["v"] = json!("2");
    assert_eq!(
        check("apps", "deployments", moved, Some(old)).unwrap_err(),
        "Deployment.apps \"web\" is invalid: spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"web\", \"v\":\"2\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable"
    );
}

#[test]
fn pod_specs() {
    let pod =
        |containers: Value| json!({"metadata": {"name": "p"}, "spec": {"containers": containers}});
    check("", "pods", pod(json!([{"name": "a", "image": "x"}])), None).unwrap();
    let err = check(
        "",
        "pods",
        pod(json!([
            {"name": "a", "image": "x", "ports": [{"containerPort": 70000, "protocol": "FOO"}]},
            {"name": "a", "image": "", "volumeMounts": [{"name": "nope", "mountPath": "/x"}]},
        ])),
        None,
    )
    .unwrap_err();
    assert_eq!(
        err,
        "Pod \"p\" is invalid: [spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive, \
         spec.containers[0].ports[0].protocol: Unsupported value: \"FOO\": supported values: \"SCTP\", \"TCP\", \"UDP\", \
         spec.containers[1].image: Required value, spec.containers[1].volumeMounts[0].name: Not found: \"nope\", \
         spec.containers[1].name: Duplicate value: \"a\"]"
    );
    let mut bad_policy = pod(json!([{"name": "a", "image": "x"}]));
    bad_policy["spec"]["restartPolicy"] = json!("Sometimes");
    assert!(
        check("", "pods", bad_policy, None)
            .unwrap_err()
            .ends_with("spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"")
    );
}

#[test]
fn labels_annotations_and_config_keys() {
    let cm = json!({"metadata": {"name": "c", "labels": {"bad key!": "ok", "k": "-bad"}}, "data": {"a b": "x"}});
    let err = check("", "configmaps", cm, None).unwrap_err();
    assert!(err.starts_with("ConfigMap \"c\" is invalid: [metadata.labels: Invalid value: \"bad key!\": name part must consist of alphanumeric characters"), "{err}");
    assert!(
        err.contains(
            "metadata.labels: Invalid value: \"-bad\": a valid label must be an empty string"
        ),
        "{err}"
    );
    assert!(err.contains("data[a b]: Invalid value: \"a b\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"), "{err}");
    let tls = json!({"metadata": {"name": "t"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "eA=="}});
    assert_eq!(
        check("", "secrets", tls, None).unwrap_err(),
        "Secret \"t\" is invalid: data[tls.key]: Required value"
    );
    let old = json!({"metadata": {"name": "i"}, "immutable": true, "data": {"a": "1"}});
    let changed = json!({"metadata": {"name": "i"}, "immutable": true, "data": {"a": "2"}});
    assert_eq!(
        check("", "configmaps", changed, Some(old)).unwrap_err(),
        "ConfigMap \"i\" is invalid: data: Forbidden: field is immutable when `immutable` is set"
    );
}

#[test]
fn services_jobs_cronjobs_and_rbac() {
    let svc = json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}, {"port": 0, "name": "b"}]}});
    assert_eq!(
        check("", "services", svc, None).unwrap_err(),
        "Service \"s\" is invalid: [spec.ports[0].name: Required value, spec.ports[1].port: Invalid value: 0: must be between 1 and 65535, inclusive, spec.ports[1].targetPort: Invalid value: 0: must be between 1 and 65535, inclusive]"
    );
    let job = json!({"metadata": {"name": "j"}, "spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x"}]}}}});
    assert_eq!(
        check("batch", "jobs", job, None).unwrap_err(),
        "Job.batch \"j\" is invalid: spec.template.spec.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\""
    );
    let cron = json!({"metadata": {"name": "c"}, "spec": {"schedule": "* * *", "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "a", "image": "x"}]}}}}}});
    assert_eq!(
        check("batch", "cronjobs", cron, None).unwrap_err(),
        "CronJob.batch \"c\" is invalid: spec.schedule: Invalid value: \"* * *\": expected exactly 5 fields, found 3: [* * *]"
    );
    let cron = |schedule: &str, zone: Option<&str>| {
        let mut c = json!({"metadata": {"name": "c"}, "spec": {"schedule": schedule, "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "a", "image": "x"}]}}}}}});
        if let Some(z) = zone {
            c["spec"]["timeZone"] = json!(z);
        }
        c
    };
    let err = check("batch", "cronjobs", cron("61 * * * *", None), None).unwrap_err();
    assert!(
        err.contains("spec.schedule: Invalid value: \"61 * * * *\": "),
        "{err}"
    );
    assert_eq!(
        check("batch", "cronjobs", cron("TZ=UTC * * * * *", None), None).unwrap_err(),
        "CronJob.batch \"c\" is invalid: spec.schedule: Invalid value: \"TZ=UTC * * * * *\": cannot use TZ or CRON_TZ in schedule, use timeZone field instead"
    );
    assert_eq!(
        check(
            "batch",
            "cronjobs",
            cron("@hourly", Some("Mars/Olympus")),
            None
        )
        .unwrap_err(),
        "CronJob.batch \"c\" is invalid: spec.timeZone: Invalid value: \"Mars/Olympus\": unknown time zone Mars/Olympus"
    );
    check(
        "batch",
        "cronjobs",
        cron("*/5 * * * 1-5", Some("Europe/Berlin")),
        None,
    )
    .unwrap();
    let role = json!({"metadata": {"name": "r"}, "rules": [{"resources": ["pods"]}]});
    assert_eq!(
        check("rbac.authorization.k8s.io", "roles", role, None).unwrap_err(),
        "Role.rbac.authorization.k8s.io \"r\" is invalid: [rules[0].verbs: Required value: verbs must contain at least one value, rules[0].apiGroups: Required value: resource rules must supply at least one api group]"
    );
    let binding = |name: &str| json!({"metadata": {"name": "b"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}, "subjects": [{"kind": "User", "name": "u"}]});
    check(
        "rbac.authorization.k8s.io",
        "rolebindings",
        binding("r"),
        None,
    )
    .unwrap();
    assert_eq!(
        check(
            "rbac.authorization.k8s.io",
            "rolebindings",
            binding("s"),
            Some(binding("r"))
        )
        .unwrap_err(),
        "RoleBinding.rbac.authorization.k8s.io \"b\" is invalid: roleRef: Invalid value: rbac.RoleRef{APIGroup:\"rbac.authorization.k8s.io\", Kind:\"Role\", Name:\"s\"}: cannot change roleRef"
    );
}

#[test]
fn a_statefulsets_mounts_may_name_its_claim_templates_as_upstream_allows() {
    let set = |labels: Value| {
        json!({"metadata": {"name": "db"}, "spec": {
            "serviceName": "db",
            "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [{
                "name": "c", "image": "nginx", "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}],
        }})
    };
    check("apps", "statefulsets", set(json!({"app": "db"})), None).unwrap();
    assert_eq!(
        check("apps", "statefulsets", set(json!({"app": "web"})), None).unwrap_err(),
        "StatefulSet.apps \"db\" is invalid: spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not match template `labels`"
    );
}
