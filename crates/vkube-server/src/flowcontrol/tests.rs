use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use vkube_api::flowcontrol::bootstrap;
use vkube_auth::UserInfo;

use super::config::{Config, LimitResponse};
use super::ensurer::{dangling, revise, unwanted};
use super::queueset::{QueueSet, Rejected, deal};
use super::view::Objects;
use super::*;
use crate::request::query;

fn info(method: &str, path: &str) -> RequestInfo {
    let (path, q) = path.split_once('?').unwrap_or((path, ""));
    RequestInfo::parse(&method.parse().unwrap(), path, &query(Some(q)))
}

fn user(name: &str, groups: &[&str]) -> UserInfo {
    UserInfo {
        username: name.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        ..UserInfo::default()
    }
}

fn with_uid(mut o: Value) -> Value {
    let name = o["metadata"]["name"].as_str().unwrap().to_string();
    o["metadata"]["uid"] = json!(format!("uid-{name}"));
    o
}

fn upstream_config(extra_schemas: &[Value], extra_levels: &[Value]) -> Config {
    let schemas: Vec<Value> = [
        bootstrap::mandatory_schemas(),
        bootstrap::suggested_schemas(),
    ]
    .concat()
    .into_iter()
    .chain(extra_schemas.iter().cloned())
    .map(with_uid)
    .collect();
    let levels: Vec<Value> = [bootstrap::mandatory_levels(), bootstrap::suggested_levels()]
        .concat()
        .into_iter()
        .chain(extra_levels.iter().cloned())
        .map(with_uid)
        .collect();
    Config::build(&schemas, &levels)
}

fn classified(config: &Config, u: &UserInfo, method: &str, path: &str) -> (String, String) {
    let i = info(method, path);
    let (s, l) = config
        .classify(u, &i, path.split('?').next().unwrap())
        .unwrap();
    (s.name.clone(), l.name.clone())
}

#[test]
fn upstreams_schemas_classify_as_kube_apiserver() {
    let config = upstream_config(&[], &[]);
    let authed = "system:authenticated";
    let admin = user("admin", &["system:masters", authed]);
    let alice = user("alice", &[authed]);
    let node = user("system:node:n1", &["system:nodes", authed]);
    let kcm = user("system:kube-controller-manager", &[authed]);
    let sa = user(
        "system:serviceaccount:kube-system:deployment-controller",
        &[
            "system:serviceaccounts",
            "system:serviceaccounts:kube-system",
            authed,
        ],
    );
    let app = user(
        "system:serviceaccount:default:app",
        &["system:serviceaccounts", authed],
    );
    let anonymous = user("system:anonymous", &["system:unauthenticated"]);
    let cases = [
        (&admin, "GET", "/api/v1/pods", "exempt", "exempt"),
        (
            &alice,
            "GET",
            "/api/v1/namespaces/x/pods",
            "global-default",
            "global-default",
        ),
        (&alice, "GET", "/healthz", "probes", "exempt"),
        (&anonymous, "GET", "/readyz", "probes", "exempt"),
        (
            &anonymous,
            "GET",
            "/version",
            "global-default",
            "global-default",
        ),
        (
            &node,
            "PATCH",
            "/api/v1/nodes/n1/status",
            "system-node-high",
            "node-high",
        ),
        (
            &node,
            "GET",
            "/api/v1/namespaces/x/secrets/s",
            "system-nodes",
            "system",
        ),
        (
            &kcm,
            "PUT",
            "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kcm",
            "system-leader-election",
            "leader-election",
        ),
        (
            &kcm,
            "PUT",
            "/api/v1/namespaces/x/endpoints/e",
            "endpoint-controller",
            "workload-high",
        ),
        (
            &kcm,
            "DELETE",
            "/api/v1/namespaces/x/pods/p",
            "kube-controller-manager",
            "workload-high",
        ),
        (
            &sa,
            "PUT",
            "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/l",
            "system-leader-election",
            "leader-election",
        ),
        (
            &sa,
            "DELETE",
            "/api/v1/namespaces/x/configmaps/c",
            "kube-system-service-accounts",
            "workload-high",
        ),
        (
            &sa,
            "GET",
            "/api/v1/namespaces/x/configmaps/c",
            "workload-leader-election",
            "leader-election",
        ),
        (
            &app,
            "GET",
            "/api/v1/namespaces/default/pods",
            "service-accounts",
            "workload-low",
        ),
    ];
    for (u, method, path, schema, level) in cases {
        assert_eq!(
            classified(&config, u, method, path),
            (schema.to_string(), level.to_string()),
            "{} {method} {path}",
            u.username
        );
    }
}

fn custom_schema(name: &str, precedence: i64, level: &str, subject: Value, rule: Value) -> Value {
    json!({
        "metadata": {"name": name},
        "spec": {
            "priorityLevelConfiguration": {"name": level},
            "matchingPrecedence": precedence,
            "distinguisherMethod": {"type": "ByNamespace"},
            "rules": [{"subjects": [subject], "resourceRules": [rule]}],
        },
    })
}

#[test]
fn lowest_precedence_wins_then_name_and_dangling_schemas_are_skipped() {
    let rule = json!({"verbs": ["list"], "apiGroups": [""], "resources": ["pods"], "namespaces": ["team-a"]});
    let alice = json!({"kind": "User", "user": {"name": "alice"}});
    let schemas = [
        custom_schema("b-alice", 300, "workload-low", alice.clone(), rule.clone()),
        custom_schema("a-alice", 300, "workload-high", alice.clone(), rule.clone()),
        custom_schema("z-alice", 250, "no-such-level", alice.clone(), rule.clone()),
        custom_schema(
            "late",
            9950,
            "system",
            json!({"kind": "Group", "group": {"name": "*"}}),
            json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"], "clusterScope": true, "namespaces": ["*"]}),
        ),
    ];
    let config = upstream_config(&schemas, &[]);
    let alice = user("alice", &["system:authenticated"]);
    // Same precedence: the name decides; a schema whose level is missing does not match.
    assert_eq!(
        classified(&config, &alice, "GET", "/api/v1/namespaces/team-a/pods"),
        ("a-alice".into(), "workload-high".into())
    );
    // Another namespace, another verb: the rule does not match; global-default (9900) comes
    // before `late` (9950).
    assert_eq!(
        classified(&config, &alice, "GET", "/api/v1/namespaces/team-b/pods").0,
        "global-default"
    );
    assert_eq!(
        classified(
            &config,
            &alice,
            "DELETE",
            "/api/v1/namespaces/team-a/pods/p"
        )
        .0,
        "global-default"
    );
    // Cluster-scoped requests need clusterScope.
    assert_eq!(
        classified(&config, &alice, "GET", "/api/v1/pods").0,
        "global-default"
    );
}

#[test]
fn missing_mandatory_objects_are_imagined_and_distinguishers_key_flows() {
    let config = Config::build(&[], &[]);
    let alice = user("alice", &["system:authenticated"]);
    let i = info("GET", "/api/v1/namespaces/x/pods");
    let (schema, level) = config
        .classify(&alice, &i, "/api/v1/namespaces/x/pods")
        .unwrap();
    assert_eq!(
        (schema.name.as_str(), level.name.as_str()),
        ("catch-all", "catch-all")
    );
    assert_eq!(schema.uid, "", "an imagined object has no uid");
    assert_eq!(schema.distinguish(&alice, &i), "alice");
    let by_ns = super::config::Schema::parse(&custom_schema(
        "n",
        500,
        "x",
        json!({"kind": "User", "user": {"name": "*"}}),
        json!({}),
    ));
    assert_eq!(by_ns.distinguish(&alice, &i), "x");
    let admin = user("root", &["system:masters"]);
    let (schema, _) = config.classify(&admin, &i, "").unwrap();
    assert_eq!(schema.name, "exempt");
}

#[test]
fn limits_are_shares_of_the_total_rounded_up() {
    let config = upstream_config(&[], &[]);
    let limits = config.limits(600);
    // shares: 5 + 30 + 40 + 10 + 40 + 100 + 20 = 245 (exempt has 0).
    assert_eq!(limits["catch-all"], 13);
    assert_eq!(limits["workload-low"], 245);
    assert_eq!(limits["global-default"], 49);
    assert!(!limits.contains_key("exempt"));
}

#[test]
fn shuffle_sharding_deals_distinct_cards() {
    for hash in [0u64, 1, 12345, u64::MAX] {
        let hand = deal(hash, 64, 6);
        let mut sorted = hand.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 6);
        assert!(hand.iter().all(|c| *c < 64));
        assert_eq!(deal(hash, 64, 6), hand, "deterministic");
    }
}

#[tokio::test]
async fn a_queue_holds_at_most_its_limit_and_waiters_get_freed_seats() {
    let set = QueueSet::new(
        LimitResponse::Queue {
            queues: 1,
            hand_size: 1,
            queue_length_limit: 2,
        },
        1,
    );
    let running = set.acquire(7, Duration::from_secs(5)).await.unwrap();
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let set = set.clone();
            tokio::spawn(async move { set.acquire(7, Duration::from_secs(5)).await.is_ok() })
        })
        .collect();
    while set.counts() != (1, 2) {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        set.acquire(7, Duration::from_secs(5)).await.err(),
        Some(Rejected::QueueFull)
    );
    drop(running);
    for w in waiting {
        assert!(w.await.unwrap(), "each waiter runs in turn");
    }
    assert_eq!(set.counts(), (0, 0));
}

#[tokio::test]
async fn reject_and_wait_limit() {
    let reject = QueueSet::new(LimitResponse::Reject, 1);
    let held = reject.acquire(1, Duration::from_secs(1)).await.unwrap();
    assert_eq!(
        reject.acquire(1, Duration::from_secs(1)).await.err(),
        Some(Rejected::ConcurrencyLimit)
    );
    drop(held);
    assert!(reject.acquire(1, Duration::from_secs(1)).await.is_ok());
    let queued = QueueSet::new(
        LimitResponse::Queue {
            queues: 4,
            hand_size: 2,
            queue_length_limit: 10,
        },
        1,
    );
    let _held = queued.acquire(1, Duration::from_secs(1)).await.unwrap();
    assert_eq!(
        queued.acquire(2, Duration::from_millis(50)).await.err(),
        Some(Rejected::TimeOut)
    );
    assert_eq!(
        queued.counts(),
        (1, 0),
        "a timed-out request leaves its queue"
    );
}

#[tokio::test]
async fn exempt_users_pass_a_full_level_and_headers_carry_uids() {
    let tiny = json!({"metadata": {"name": "tiny"}, "spec": {"type": "Limited", "limited": {"nominalConcurrencyShares": 1, "limitResponse": {"type": "Reject"}}}});
    let schema = custom_schema(
        "alice",
        500,
        "tiny",
        json!({"kind": "User", "user": {"name": "alice"}}),
        json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"], "namespaces": ["*"], "clusterScope": true}),
    );
    let fc = FlowControl::new(1, None);
    fc.configure(upstream_config(&[schema], &[tiny]));
    let alice = user("alice", &["system:authenticated"]);
    let admin = user("admin", &["system:masters", "system:authenticated"]);
    let i = info("GET", "/api/v1/namespaces/x/pods");
    let held = fc.admit(&i, &alice, "").await.ok().flatten().unwrap();
    assert_eq!(fc.counts("tiny"), (1, 0));
    let resp = held.decorate(crate::response::text(200, "ok"));
    assert_eq!(resp.headers()[FLOW_SCHEMA_UID], "uid-alice");
    assert_eq!(resp.headers()[PRIORITY_LEVEL_UID], "uid-tiny");
    let refused = fc.admit(&i, &alice, "").await.err().unwrap().response();
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(refused.headers()[PRIORITY_LEVEL_UID], "uid-tiny");
    for _ in 0..10 {
        assert!(fc.admit(&i, &admin, "").await.is_ok(), "exempt");
    }
    // Watches are classified but take no seat; exec is not even classified.
    let watch = info("GET", "/api/v1/namespaces/x/pods?watch=true");
    assert!(fc.admit(&watch, &alice, "").await.unwrap().is_some());
    let exec = info("POST", "/api/v1/namespaces/x/pods/p/exec");
    assert!(fc.admit(&exec, &alice, "").await.unwrap().is_none());
    drop(held);
    assert!(fc.admit(&i, &alice, "").await.is_ok());
}

#[test]
fn zero_total_means_no_limit() {
    let fc = Arc::new(FlowControl::new(0, None));
    let alice = user("alice", &["system:authenticated"]);
    let i = info("GET", "/api/v1/pods");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tickets: Vec<_> = (0..100)
        .map(|_| {
            rt.block_on(fc.admit(&i, &alice, ""))
                .ok()
                .flatten()
                .unwrap()
        })
        .collect();
    assert_eq!(tickets.len(), 100);
}

fn stored(mut o: Value, generation: i64) -> Value {
    o["metadata"]["generation"] = json!(generation);
    o["metadata"]["uid"] = json!("u");
    o
}

#[test]
fn the_producer_keeps_mandatory_objects_and_respects_autoupdate_false() {
    let boot = bootstrap::mandatory("FlowSchema", "catch-all").unwrap();
    // Unchanged: nothing to do.
    assert!(revise("FlowSchema", &stored(boot.clone(), 1), &boot, true).is_none());
    // A mandatory object's annotation set to false is put back, spec reset.
    let mut edited = stored(boot.clone(), 2);
    edited["metadata"]["annotations"][bootstrap::AUTO_UPDATE] = json!("false");
    edited["spec"]["matchingPrecedence"] = json!(9000);
    let fixed = revise("FlowSchema", &edited, &boot, true).unwrap();
    assert_eq!(
        fixed["metadata"]["annotations"][bootstrap::AUTO_UPDATE],
        "true"
    );
    assert_eq!(fixed["spec"], boot["spec"]);
    assert_eq!(fixed["metadata"]["uid"], "u");
    // A suggested object with autoupdate false keeps the operator's spec.
    let boot = bootstrap::suggested_levels().remove(0);
    let mut mine = stored(boot.clone(), 2);
    mine["metadata"]["annotations"][bootstrap::AUTO_UPDATE] = json!("false");
    mine["spec"]["limited"]["nominalConcurrencyShares"] = json!(99);
    assert!(revise("PriorityLevelConfiguration", &mine, &boot, false).is_none());
    // With true, it is reset.
    mine["metadata"]["annotations"][bootstrap::AUTO_UPDATE] = json!("true");
    let fixed = revise("PriorityLevelConfiguration", &mine, &boot, false).unwrap();
    assert_eq!(fixed["spec"]["limited"]["nominalConcurrencyShares"], 30);
    // No annotation: generation 1 means "never edited", so updated and annotated true; a
    // later generation means edited, so only annotated false.
    mine["metadata"]["annotations"] = json!({});
    let fixed = revise("PriorityLevelConfiguration", &mine, &boot, false).unwrap();
    assert_eq!(
        fixed["metadata"]["annotations"][bootstrap::AUTO_UPDATE],
        "false"
    );
    assert_eq!(fixed["spec"]["limited"]["nominalConcurrencyShares"], 99);
    mine["metadata"]["generation"] = json!(1);
    let fixed = revise("PriorityLevelConfiguration", &mine, &boot, false).unwrap();
    assert_eq!(
        fixed["metadata"]["annotations"][bootstrap::AUTO_UPDATE],
        "true"
    );
    assert_eq!(fixed["spec"]["limited"]["nominalConcurrencyShares"], 30);
    // The exempt level's shares are the operator's.
    let boot = bootstrap::mandatory("PriorityLevelConfiguration", "exempt").unwrap();
    let mut exempt = stored(boot.clone(), 2);
    exempt["spec"]["exempt"]["nominalConcurrencyShares"] = json!(10);
    assert!(revise("PriorityLevelConfiguration", &exempt, &boot, true).is_none());
}

#[test]
fn only_annotated_strangers_are_removed_and_dangling_reads_as_upstream() {
    let wanted = bootstrap::suggested_schemas();
    let objects = [
        json!({"metadata": {"name": "global-default", "annotations": {bootstrap::AUTO_UPDATE: "true"}}}),
        json!({"metadata": {"name": "old-suggested", "annotations": {bootstrap::AUTO_UPDATE: "true"}}}),
        json!({"metadata": {"name": "kept", "annotations": {bootstrap::AUTO_UPDATE: "false"}}}),
        json!({"metadata": {"name": "mine"}}),
        json!({"metadata": {"name": "odd", "annotations": {bootstrap::AUTO_UPDATE: "yes"}}}),
    ];
    assert_eq!(unwanted(objects.iter(), &wanted), ["old-suggested"]);

    let mut levels = Objects::default();
    levels.levels.insert("system".into(), json!({}));
    let schema = json!({"spec": {"priorityLevelConfiguration": {"name": "gone"}}});
    let c = dangling(&schema, &levels, "2026-01-01T00:00:00Z").unwrap();
    assert_eq!(c["status"], "True");
    assert_eq!(c["reason"], "NotFound");
    assert_eq!(
        c["message"],
        "This FlowSchema references the PriorityLevelConfiguration object named \"gone\" but there is no such object"
    );
    let schema = json!({"spec": {"priorityLevelConfiguration": {"name": "system"}}, "status": {"conditions": [c]}});
    let c = dangling(&schema, &levels, "2026-01-01T00:00:00Z").unwrap();
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("False"), Some("Found"))
    );
    let schema = json!({"spec": {"priorityLevelConfiguration": {"name": "system"}}, "status": {"conditions": [c]}});
    assert!(
        dangling(&schema, &levels, "later").is_none(),
        "nothing to write"
    );
}
