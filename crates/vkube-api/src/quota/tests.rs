use super::*;

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn pod(requests: Value, limits: Value) -> Value {
    json!({"metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "c", "image": "x", "resources": {"requests": requests, "limits": limits}}]}})
}

fn quota(name: &str, hard: Value, used: Value) -> Value {
    json!({"metadata": {"name": name}, "spec": {"hard": hard}, "status": {"hard": hard, "used": used}})
}

fn rendered(list: &ResourceList) -> Value {
    to_json(list)
}

#[test]
fn pod_usage_charges_requests_limits_and_extended_resources() {
    let p = pod(
        json!({"cpu": "500m", "memory": "252Mi", "ephemeral-storage": "30Gi", "example.com/dongle": "2"}),
        json!({"example.com/dongle": "2", "cpu": "1"}),
    );
    assert_eq!(
        rendered(&Evaluator::Pods.usage(&p, now())),
        json!({"count/pods": "1", "pods": "1", "cpu": "500m", "requests.cpu": "500m", "limits.cpu": "1",
               "memory": "252Mi", "requests.memory": "252Mi", "ephemeral-storage": "30Gi",
               "requests.ephemeral-storage": "30Gi", "requests.example.com/dongle": "2"})
    );
    // Terminal pods keep only their object count.
    let mut done = p.clone();
    done["status"]["phase"] = json!("Succeeded");
    assert_eq!(
        rendered(&Evaluator::Pods.usage(&done, now())),
        json!({"count/pods": "1"})
    );
}

#[test]
fn init_containers_count_where_they_need_more_and_sidecars_add() {
    let spec = json!({"metadata": {}, "spec": {
        "containers": [{"name": "a", "resources": {"requests": {"cpu": "100m"}}},
                       {"name": "b", "resources": {"requests": {"cpu": "200m", "memory": "1Gi"}}}],
        "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "1", "memory": "10Mi"}}},
                           {"name": "s", "restartPolicy": "Always", "resources": {"requests": {"cpu": "50m"}}}],
        "overhead": {"cpu": "10m"}}});
    let u = Evaluator::Pods.usage(&spec, now());
    // Containers 300m + sidecar 50m = 350m < init 1; plus overhead 10m.
    assert_eq!(u["requests.cpu"].to_string(), "1010m");
    assert_eq!(u["requests.memory"].to_string(), "1Gi");
}

#[test]
fn scopes_sort_pods() {
    let p = pod(json!({}), json!({}));
    let scope = |name: &str| json!({"scopeName": name, "operator": "Exists"});
    let ev = Evaluator::Pods;
    assert!(ev.in_scope(&scope("BestEffort"), &p));
    assert!(ev.in_scope(&scope("NotTerminating"), &p));
    let mut t = pod(json!({"cpu": "1"}), json!({}));
    t["spec"]["activeDeadlineSeconds"] = json!(3600);
    assert!(ev.in_scope(&scope("Terminating"), &t));
    assert!(ev.in_scope(&scope("NotBestEffort"), &t));
    let mut pc = p.clone();
    pc["spec"]["priorityClassName"] = json!("gold");
    let sel = |op: &str, values: Value| json!({"scopeName": "PriorityClass", "operator": op, "values": values});
    assert!(ev.in_scope(&sel("In", json!(["gold", "x"])), &pc));
    assert!(!ev.in_scope(&sel("In", json!(["x"])), &pc));
    assert!(ev.in_scope(&sel("NotIn", json!(["x"])), &pc));
    assert!(ev.in_scope(&sel("NotIn", json!(["x"])), &p));
    assert!(ev.in_scope(&sel("Exists", json!([])), &pc));
    assert!(!ev.in_scope(&sel("Exists", json!([])), &p));
    let mut cross = p.clone();
    cross["spec"]["affinity"] = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "r", "namespaces": ["ns1"]}]}});
    assert!(ev.in_scope(&scope("CrossNamespacePodAffinity"), &cross));
    assert!(!ev.in_scope(&scope("CrossNamespacePodAffinity"), &p));
    // Only pods have scopes.
    assert!(!Evaluator::Services.in_scope(&scope("BestEffort"), &p));
}

#[test]
fn status_sums_the_namespace_per_quota_and_scope() {
    let q = json!({"metadata": {"name": "q"}, "spec": {"hard": {
        "pods": "5", "requests.cpu": "1", "memory": "500Mi", "configmaps": "10",
        "count/replicasets.apps": "5", "services.nodeports": "1", "example.com/unknown": "1"}},
        "status": {"used": {"example.com/unknown": "3", "stale": "1"}}});
    let mut objects = BTreeMap::new();
    objects.insert(
        Evaluator::Pods,
        vec![
            pod(json!({"cpu": "500m", "memory": "252Mi"}), json!({})),
            pod(json!({"cpu": "1", "memory": "100Mi"}), json!({})),
        ],
    );
    objects.insert(
        Evaluator::for_resource("", "configmaps").unwrap(),
        vec![json!({}), json!({})],
    );
    objects.insert(
        Evaluator::Services,
        vec![json!({"spec": {"type": "NodePort", "ports": [{"port": 80}]}})],
    );
    objects.insert(
        Evaluator::for_resource("apps", "replicasets").unwrap(),
        vec![],
    );
    let s = status(&q, &objects, now());
    assert_eq!(
        s["used"],
        json!({"pods": "2", "requests.cpu": "1500m", "memory": "352Mi", "configmaps": "2",
               "count/replicasets.apps": "0", "services.nodeports": "1", "example.com/unknown": "3"})
    );
    assert_eq!(s["hard"]["requests.cpu"], "1");

    // A Terminating quota sees only pods with a deadline; services never match a scoped quota.
    let scoped = json!({"metadata": {"name": "t"}, "spec": {"hard": {"pods": "5", "limits.cpu": "2"}, "scopes": ["Terminating"]}});
    let mut deadline = pod(json!({"cpu": "500m"}), json!({"cpu": "1"}));
    deadline["spec"]["activeDeadlineSeconds"] = json!(10);
    objects.insert(Evaluator::Pods, vec![pod(json!({}), json!({})), deadline]);
    assert_eq!(
        status(&scoped, &objects, now())["used"],
        json!({"pods": "1", "limits.cpu": "1"})
    );
}

#[test]
fn admission_charges_and_refuses_with_upstream_wording() {
    let q = quota(
        "test-quota",
        json!({"pods": "1", "cpu": "1", "memory": "500Mi"}),
        json!({"pods": "0", "cpu": "500m", "memory": "252Mi"}),
    );
    let p = pod(json!({"cpu": "500m", "memory": "100Mi"}), json!({}));
    let charged = check(&Evaluator::Pods, std::slice::from_ref(&q), &p, None, now()).unwrap();
    assert_eq!(charged.len(), 1);
    assert_eq!(
        rendered(&charged[0].1),
        json!({"pods": "1", "cpu": "1", "memory": "352Mi"})
    );

    let big = pod(json!({"cpu": "600m", "memory": "100Mi"}), json!({}));
    assert_eq!(
        check(
            &Evaluator::Pods,
            std::slice::from_ref(&q),
            &big,
            None,
            now()
        )
        .unwrap_err(),
        "exceeded quota: test-quota, requested: cpu=600m, used: cpu=500m, limited: cpu=1"
    );

    let full = quota("q", json!({"pods": "1"}), json!({"pods": "1"}));
    assert_eq!(
        check(&Evaluator::Pods, &[full], &p, None, now()).unwrap_err(),
        "exceeded quota: q, requested: pods=1, used: pods=1, limited: pods=1"
    );

    let limits = quota(
        "lim",
        json!({"limits.cpu": "4", "requests.memory": "1Gi"}),
        json!({"limits.cpu": "0", "requests.memory": "0"}),
    );
    let mut two = pod(json!({}), json!({}));
    two["spec"]["containers"] =
        json!([{"name": "b"}, {"name": "a", "resources": {"requests": {"memory": "1Mi"}}}]);
    assert_eq!(
        check(&Evaluator::Pods, &[limits], &two, None, now()).unwrap_err(),
        "failed quota: lim: must specify limits.cpu for: a,b; requests.memory for: b"
    );

    let fresh = json!({"metadata": {"name": "new"}, "spec": {"hard": {"pods": "1"}}, "status": {"hard": {"pods": "1"}}});
    assert_eq!(
        check(&Evaluator::Pods, &[fresh], &p, None, now()).unwrap_err(),
        "status unknown for quota: new, resources: pods"
    );

    // A quota that limits nothing pods use, or a scope the pod is outside of, lets it pass.
    let other = quota("cm", json!({"configmaps": "0"}), json!({"configmaps": "0"}));
    let mut scoped = quota("t", json!({"pods": "0"}), json!({"pods": "0"}));
    scoped["spec"]["scopes"] = json!(["Terminating"]);
    assert_eq!(
        check(&Evaluator::Pods, &[other, scoped], &p, None, now()).unwrap(),
        vec![]
    );
}

#[test]
fn services_are_charged_node_ports_and_type_changes_on_update() {
    let q = quota(
        "q",
        json!({"services": "10", "services.nodeports": "1", "services.loadbalancers": "1"}),
        json!({"services": "1", "services.nodeports": "1", "services.loadbalancers": "0"}),
    );
    let lb = json!({"spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": true, "ports": [{"port": 80}]}});
    assert_eq!(
        check(
            &Evaluator::Services,
            std::slice::from_ref(&q),
            &lb,
            None,
            now()
        )
        .unwrap_err(),
        "exceeded quota: q, requested: services.nodeports=1, used: services.nodeports=1, limited: services.nodeports=1"
    );
    let lb_no_ports = json!({"spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false, "ports": [{"port": 80}]}});
    let charged = check(
        &Evaluator::Services,
        std::slice::from_ref(&q),
        &lb_no_ports,
        None,
        now(),
    )
    .unwrap();
    assert_eq!(charged[0].1["services.loadbalancers"].to_string(), "1");
    // ClusterIP → NodePort charges the node port only.
    let before = json!({"spec": {"type": "ClusterIP", "ports": [{"port": 80}]}});
    let after = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}]}});
    assert!(
        check(
            &Evaluator::Services,
            std::slice::from_ref(&q),
            &after,
            Some(&before),
            now()
        )
        .unwrap_err()
        .contains("requested: services.nodeports=1")
    );
    let unchanged = check(
        &Evaluator::Services,
        std::slice::from_ref(&q),
        &before,
        Some(&before),
        now(),
    )
    .unwrap();
    assert!(unchanged.is_empty());
}

#[test]
fn claims_are_charged_by_storage_class() {
    let claim = json!({"spec": {"storageClassName": "gold", "resources": {"requests": {"storage": "1.5Gi"}}}});
    assert_eq!(
        rendered(&Evaluator::PersistentVolumeClaims.usage(&claim, now())),
        json!({"count/persistentvolumeclaims": "1", "persistentvolumeclaims": "1", "requests.storage": "1536Mi",
               "gold.storageclass.storage.k8s.io/persistentvolumeclaims": "1",
               "gold.storageclass.storage.k8s.io/requests.storage": "1536Mi"})
    );
    assert_eq!(
        Evaluator::for_quota_name("gold.storageclass.storage.k8s.io/requests.storage"),
        Some(Evaluator::PersistentVolumeClaims)
    );
}

#[test]
fn quota_names_map_to_evaluators() {
    let count = |g: &str, p: &str| {
        Some(Evaluator::Count {
            group: g.into(),
            plural: p.into(),
        })
    };
    assert_eq!(
        Evaluator::for_quota_name("count/pods"),
        Some(Evaluator::Pods)
    );
    assert_eq!(
        Evaluator::for_quota_name("requests.example.com/dongle"),
        Some(Evaluator::Pods)
    );
    assert_eq!(
        Evaluator::for_quota_name("requests.hugepages-2Mi"),
        Some(Evaluator::Pods)
    );
    assert_eq!(Evaluator::for_quota_name("example.com/dongle"), None);
    assert_eq!(
        Evaluator::for_quota_name("count/replicasets.apps"),
        count("apps", "replicasets")
    );
    assert_eq!(
        Evaluator::for_quota_name("count/widgets.example.com"),
        count("example.com", "widgets")
    );
    assert_eq!(Evaluator::for_quota_name("secrets"), count("", "secrets"));
    assert_eq!(Evaluator::for_quota_name("count/events"), None);
    assert_eq!(
        rendered(
            &Evaluator::for_resource("", "configmaps")
                .unwrap()
                .usage(&json!({}), now())
        ),
        json!({"count/configmaps": "1", "configmaps": "1"})
    );
    let (p, any) = (pod(json!({}), json!({})), json!({}));
    assert!(Evaluator::Pods.handles(&p, None) && Evaluator::Services.handles(&any, Some(&any)));
    assert!(!Evaluator::Pods.handles(&p, Some(&p)));
    assert!(
        !Evaluator::for_quota_name("secrets")
            .unwrap()
            .handles(&any, Some(&any))
    );
}

#[test]
fn kubectl_columns_show_used_over_hard() {
    let q = json!({"spec": {"hard": {"pods": "1", "limits.cpu": "2", "requests.memory": "1Gi", "configmaps": "10"}},
                   "status": {"used": {"pods": "1", "limits.cpu": "500m"}}});
    assert_eq!(
        printed(&q, false),
        "configmaps: 0/10, pods: 1/1, requests.memory: 0/1Gi"
    );
    assert_eq!(printed(&q, true), "limits.cpu: 500m/2");
}

#[test]
fn a_pod_given_a_deadline_is_charged_to_terminating_quotas() {
    let mut terminating = quota("t", json!({"pods": "1"}), json!({"pods": "0"}));
    terminating["spec"]["scopes"] = json!(["Terminating"]);
    let mut not_terminating = quota("n", json!({"pods": "1"}), json!({"pods": "1"}));
    not_terminating["spec"]["scopes"] = json!(["NotTerminating"]);
    let old = pod(json!({}), json!({}));
    let mut new = old.clone();
    new["spec"]["activeDeadlineSeconds"] = json!(3600);
    assert!(Evaluator::Pods.handles(&new, Some(&old)));
    let quotas = [terminating, not_terminating];
    let charged = check(&Evaluator::Pods, &quotas, &new, Some(&old), now()).unwrap();
    assert_eq!(charged.len(), 1);
    assert_eq!(
        (charged[0].0, charged[0].1["pods"].to_string()),
        (0, "1".into())
    );
    // Unchanged, nothing more is charged.
    assert!(
        check(&Evaluator::Pods, &quotas, &old, Some(&old), now())
            .unwrap()
            .is_empty()
    );
}
