use std::sync::Arc;

use k8s_openapi::api::core::v1::{EndpointAddress, EndpointSubset, Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};

use super::*;
use crate::Context;
use crate::testing::FakeApi;

const PODS: &str = "/api/v1/namespaces/ns/pods";
const SERVICES: &str = "/api/v1/namespaces/ns/services";
const ENDPOINTS: &str = "/api/v1/namespaces/ns/endpoints";
const SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/ns/endpointslices";
const NODES: &str = "/api/v1/nodes";

fn env(max: u16) -> (FakeApi, Arc<Context>) {
    let fake = FakeApi::default();
    let mut ctx = Context::new(fake.client());
    ctx.max_endpoints_per_slice = max;
    (fake, Arc::new(ctx))
}

fn service(fake: &FakeApi, name: &str, spec: Value) {
    fake.put(
        SERVICES,
        json!({"metadata": {"name": name, "labels": {"team": "a"}}, "spec": spec}),
    );
}

fn web_service(fake: &FakeApi) {
    service(
        fake,
        "web",
        json!({"selector": {"app": "web"}, "clusterIP": "10.0.0.1", "ipFamilies": ["IPv4"],
               "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]}),
    );
}

/// A pod of `app=web` with container port `http` 8080, at `ip` ("" for none).
fn pod(fake: &FakeApi, name: &str, ip: &str, ready: bool) {
    let status = if ip.is_empty() {
        json!({"phase": "Pending"})
    } else {
        json!({"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
               "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"},
                               "lastTransitionTime": "2026-01-01T00:00:05Z"}]})
    };
    fake.put(
        PODS,
        json!({"metadata": {"name": name, "labels": {"app": "web"}},
               "spec": {"nodeName": "n1", "hostname": name, "subdomain": "web",
                        "containers": [{"name": "c", "image": "i", "ports": [{"name": "http", "containerPort": 8080}]}]},
               "status": status}),
    );
}

fn set_ready(fake: &FakeApi, name: &str, ready: bool) {
    fake.edit(PODS, name, |p| {
        p["status"]["conditions"][0]["status"] = json!(if ready { "True" } else { "False" });
        p["status"]["conditions"][0]["lastTransitionTime"] = json!("2026-01-01T00:01:00Z");
    });
}

fn get<K: serde::de::DeserializeOwned>(fake: &FakeApi, collection: &str, name: &str) -> K {
    serde_json::from_value(fake.get(collection, name).expect("the object")).unwrap()
}

fn slices(fake: &FakeApi) -> Vec<EndpointSlice> {
    fake.list(SLICES)
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect()
}

/// `(first address, ready)` of each endpoint of `slice`.
fn readiness(slice: &EndpointSlice) -> Vec<(&str, Option<bool>)> {
    slice
        .endpoints
        .iter()
        .map(|e| {
            (
                e.addresses[0].as_str(),
                e.conditions.as_ref().unwrap().ready,
            )
        })
        .collect()
}

fn ips(addresses: &Option<Vec<EndpointAddress>>) -> Vec<&str> {
    addresses.iter().flatten().map(|a| a.ip.as_str()).collect()
}

async fn sync_endpoints(fake: &FakeApi, ctx: &Arc<Context>, triggers: &TriggerTimes) {
    let svc: Service = get(fake, SERVICES, "web");
    subsets::reconcile(Arc::new(svc), ctx.clone(), triggers)
        .await
        .unwrap();
}

async fn sync_slices(fake: &FakeApi, ctx: &Arc<Context>, name: &str) {
    let svc: Service = get(fake, SERVICES, name);
    slices::reconcile(Arc::new(svc), ctx.clone(), &TriggerTimes::default())
        .await
        .unwrap();
}

async fn sync_mirror(fake: &FakeApi, ctx: &Arc<Context>, name: &str) {
    let ep: Endpoints = get(fake, ENDPOINTS, name);
    mirroring::reconcile(Arc::new(ep), ctx.clone())
        .await
        .unwrap();
}

#[tokio::test]
async fn endpoints_list_ready_and_not_ready_pods_and_follow_readiness() {
    let (fake, ctx) = env(100);
    web_service(&fake);
    pod(&fake, "a", "10.1.0.1", true);
    pod(&fake, "b", "10.1.0.2", false);
    pod(&fake, "no-ip", "", true);
    pod(&fake, "done", "10.1.0.3", true);
    fake.edit(PODS, "done", |p| p["status"]["phase"] = json!("Succeeded"));
    pod(&fake, "leaving", "10.1.0.4", true);
    fake.edit(PODS, "leaving", |p| {
        p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:02:00Z")
    });
    let triggers = TriggerTimes::default();
    sync_endpoints(&fake, &ctx, &triggers).await;
    let ep: Endpoints = get(&fake, ENDPOINTS, "web");
    let subsets = ep.subsets.clone().unwrap();
    assert_eq!(subsets.len(), 1, "{subsets:?}");
    assert_eq!(ips(&subsets[0].addresses), ["10.1.0.1"]);
    assert_eq!(ips(&subsets[0].not_ready_addresses), ["10.1.0.2"]);
    let port = &subsets[0].ports.as_ref().unwrap()[0];
    assert_eq!(
        (port.name.as_deref(), port.port, port.protocol.as_deref()),
        (Some("http"), 8080, Some("TCP"))
    );
    let a = &subsets[0].addresses.as_ref().unwrap()[0];
    assert_eq!(a.hostname.as_deref(), Some("a"));
    assert_eq!(a.node_name.as_deref(), Some("n1"));
    assert_eq!(
        a.target_ref.as_ref().unwrap().name.as_deref(),
        Some("a"),
        "targetRef"
    );
    let labels = ep.metadata.labels.clone().unwrap();
    assert_eq!(labels.get("team").map(String::as_str), Some("a"));
    assert!(!labels.contains_key(HEADLESS_LABEL));
    // A new Service: its creation is the trigger.
    assert_eq!(
        ep.metadata.annotations.unwrap()[TRIGGER_TIME_ANNOTATION],
        "2026-01-01T00:00:00Z"
    );

    set_ready(&fake, "b", true);
    sync_endpoints(&fake, &ctx, &triggers).await;
    let ep: Endpoints = get(&fake, ENDPOINTS, "web");
    let subsets = ep.subsets.unwrap();
    assert_eq!(ips(&subsets[0].addresses), ["10.1.0.1", "10.1.0.2"]);
    assert!(subsets[0].not_ready_addresses.is_none());
    // b's Ready transition is the change this write reflects.
    assert_eq!(
        ep.metadata.annotations.unwrap()[TRIGGER_TIME_ANNOTATION],
        "2026-01-01T00:01:00Z"
    );

    // Nothing changed: nothing written.
    let before = fake.writes().len();
    sync_endpoints(&fake, &ctx, &triggers).await;
    assert_eq!(fake.writes().len(), before, "{:?}", fake.writes());
}

#[tokio::test]
async fn publish_not_ready_addresses_lists_every_pod_as_ready() {
    let (fake, ctx) = env(100);
    service(
        &fake,
        "web",
        json!({"selector": {"app": "web"}, "clusterIP": "None", "publishNotReadyAddresses": true,
               "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]}),
    );
    pod(&fake, "a", "10.1.0.1", false);
    pod(&fake, "leaving", "10.1.0.4", false);
    fake.edit(PODS, "leaving", |p| {
        p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:02:00Z")
    });
    sync_endpoints(&fake, &ctx, &TriggerTimes::default()).await;
    let ep: Endpoints = get(&fake, ENDPOINTS, "web");
    let subsets = ep.subsets.unwrap();
    assert_eq!(ips(&subsets[0].addresses), ["10.1.0.1", "10.1.0.4"]);
    assert!(ep.metadata.labels.unwrap().contains_key(HEADLESS_LABEL));

    sync_slices(&fake, &ctx, "web").await;
    let all = slices(&fake);
    let leaving = all[0]
        .endpoints
        .iter()
        .find(|e| e.addresses == ["10.1.0.4"])
        .unwrap();
    let c = leaving.conditions.clone().unwrap();
    assert_eq!(
        (c.ready, c.serving, c.terminating),
        (Some(true), Some(false), Some(true))
    );
}

#[tokio::test]
async fn a_service_without_pods_gets_empty_endpoints_and_one_without_selector_none() {
    let (fake, ctx) = env(100);
    web_service(&fake);
    sync_endpoints(&fake, &ctx, &TriggerTimes::default()).await;
    let ep: Endpoints = get(&fake, ENDPOINTS, "web");
    assert!(ep.subsets.is_none());

    service(&fake, "custom", json!({"ports": [{"port": 80}]}));
    let custom = json!({"metadata": {"name": "custom"},
        "subsets": [{"addresses": [{"ip": "192.0.2.1"}], "ports": [{"port": 80}]}]});
    fake.put(ENDPOINTS, custom);
    let before = fake.writes().len();
    let svc: Service = get(&fake, SERVICES, "custom");
    subsets::reconcile(Arc::new(svc.clone()), ctx.clone(), &TriggerTimes::default())
        .await
        .unwrap();
    slices::reconcile(Arc::new(svc), ctx.clone(), &TriggerTimes::default())
        .await
        .unwrap();
    assert_eq!(fake.writes().len(), before, "{:?}", fake.writes());
}

#[tokio::test]
async fn endpoints_of_a_deleted_service_are_deleted_but_not_locks_or_live_ones() {
    let (fake, ctx) = env(100);
    web_service(&fake);
    sync_endpoints(&fake, &ctx, &TriggerTimes::default()).await;
    fake.put(
        ENDPOINTS,
        json!({"metadata": {"name": "lock", "annotations": {LEADER_ANNOTATION: "{}"}}}),
    );
    fake.put(ENDPOINTS, json!({"metadata": {"name": "orphan"}}));
    let known = [("ns".to_string(), "web".to_string())].into();
    let all: Vec<Endpoints> = fake
        .list(ENDPOINTS)
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();
    let gone = subsets::leftovers(all, &known);
    assert_eq!(gone, [("ns".to_string(), "orphan".to_string())]);
    subsets::delete_orphan(&ctx.client, "ns", "orphan").await;
    subsets::delete_orphan(&ctx.client, "ns", "lock").await;
    subsets::delete_orphan(&ctx.client, "ns", "web").await;
    assert!(fake.get(ENDPOINTS, "orphan").is_none());
    assert!(fake.get(ENDPOINTS, "lock").is_some());
    assert!(fake.get(ENDPOINTS, "web").is_some(), "its Service exists");
}

#[test]
fn over_capacity_keeps_each_subsets_share_ready_first() {
    let addresses = |prefix: &str, n: usize| {
        Some(
            (0..n)
                .map(|i| EndpointAddress {
                    ip: format!("{prefix}.{}.{}", i / 256, i % 256),
                    ..Default::default()
                })
                .collect::<Vec<_>>(),
        )
    };
    let mut subsets = vec![
        EndpointSubset {
            addresses: addresses("10.1", 900),
            not_ready_addresses: addresses("10.9", 5),
            ports: None,
        },
        EndpointSubset {
            addresses: addresses("10.2", 300),
            ..Default::default()
        },
    ];
    assert!(subsets::truncate(&mut subsets));
    assert_eq!(subsets[0].addresses.as_ref().unwrap().len(), 750);
    assert!(subsets[0].not_ready_addresses.is_none());
    assert_eq!(subsets[1].addresses.as_ref().unwrap().len(), 250);
    let mut small = vec![EndpointSubset {
        addresses: addresses("10.1", 600),
        not_ready_addresses: addresses("10.9", 600),
        ports: None,
    }];
    assert!(subsets::truncate(&mut small));
    assert_eq!(small[0].addresses.as_ref().unwrap().len(), 600);
    assert_eq!(small[0].not_ready_addresses.as_ref().unwrap().len(), 400);
    let mut fits = vec![EndpointSubset {
        addresses: addresses("10.1", 1000),
        ..Default::default()
    }];
    assert!(!subsets::truncate(&mut fits));
}

#[tokio::test]
async fn named_ports_split_pods_into_subsets_and_slices() {
    let (fake, ctx) = env(100);
    web_service(&fake);
    pod(&fake, "a", "10.1.0.1", true);
    pod(&fake, "b", "10.1.0.2", true);
    fake.edit(PODS, "b", |p| {
        p["spec"]["containers"][0]["ports"][0]["containerPort"] = json!(9090)
    });
    sync_endpoints(&fake, &ctx, &TriggerTimes::default()).await;
    let ep: Endpoints = get(&fake, ENDPOINTS, "web");
    let mut ports: Vec<(Vec<&str>, i32)> = ep
        .subsets
        .iter()
        .flatten()
        .map(|s| (ips(&s.addresses), s.ports.as_ref().unwrap()[0].port))
        .collect();
    ports.sort();
    assert_eq!(ports, [(vec!["10.1.0.1"], 8080), (vec!["10.1.0.2"], 9090)]);
    sync_slices(&fake, &ctx, "web").await;
    let mut by_port: Vec<(i32, usize)> = slices(&fake)
        .iter()
        .map(|s| {
            (
                s.ports.as_ref().unwrap()[0].port.unwrap(),
                s.endpoints.len(),
            )
        })
        .collect();
    by_port.sort();
    assert_eq!(by_port, [(8080, 1), (9090, 1)]);
}

#[tokio::test]
async fn slices_carry_upstreams_conditions_labels_owner_and_zone() {
    let (fake, ctx) = env(100);
    web_service(&fake);
    fake.put(
        NODES,
        json!({"metadata": {"name": "n1", "labels": {ZONE_LABEL: "zone-a"}}}),
    );
    pod(&fake, "a", "10.1.0.1", true);
    pod(&fake, "b", "10.1.0.2", false);
    pod(&fake, "leaving", "10.1.0.4", true);
    fake.edit(PODS, "leaving", |p| {
        p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:02:00Z")
    });
    sync_slices(&fake, &ctx, "web").await;
    let all = slices(&fake);
    assert_eq!(all.len(), 1);
    let s = &all[0];
    assert!(s.metadata.name.as_deref().unwrap().starts_with("web-"));
    assert_eq!(s.address_type, "IPv4");
    let labels = s.metadata.labels.clone().unwrap();
    assert_eq!(labels[SERVICE_NAME_LABEL], "web");
    assert_eq!(labels[MANAGED_BY_LABEL], "endpointslice-controller.k8s.io");
    assert_eq!(labels["team"], "a");
    let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("Service", "web", Some(true))
    );
    let port = &s.ports.as_ref().unwrap()[0];
    assert_eq!(
        (port.name.as_deref(), port.port, port.protocol.as_deref()),
        (Some("http"), Some(8080), Some("TCP"))
    );
    let conditions = |ip: &str| {
        let e = s.endpoints.iter().find(|e| e.addresses == [ip]).unwrap();
        let c = e.conditions.clone().unwrap();
        (c.ready, c.serving, c.terminating)
    };
    assert_eq!(
        conditions("10.1.0.1"),
        (Some(true), Some(true), Some(false))
    );
    assert_eq!(
        conditions("10.1.0.2"),
        (Some(false), Some(false), Some(false))
    );
    // Terminating pods stay in slices (not in Endpoints), serving but not ready.
    assert_eq!(
        conditions("10.1.0.4"),
        (Some(false), Some(true), Some(true))
    );
    let a = s
        .endpoints
        .iter()
        .find(|e| e.addresses == ["10.1.0.1"])
        .unwrap();
    assert_eq!(a.zone.as_deref(), Some("zone-a"));
    assert_eq!(a.node_name.as_deref(), Some("n1"));
    assert_eq!(a.hostname.as_deref(), Some("a"));

    // Readiness changes update the slice in place.
    set_ready(&fake, "b", true);
    sync_slices(&fake, &ctx, "web").await;
    let after = slices(&fake);
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].metadata.name, s.metadata.name);
    let b = after[0]
        .endpoints
        .iter()
        .find(|e| e.addresses == ["10.1.0.2"])
        .unwrap();
    assert_eq!(b.conditions.as_ref().unwrap().ready, Some(true));
    let before = fake.writes().len();
    sync_slices(&fake, &ctx, "web").await;
    assert_eq!(fake.writes().len(), before, "{:?}", fake.writes());
}

#[tokio::test]
async fn slices_split_at_the_max_and_shrink_without_churn() {
    let (fake, ctx) = env(3);
    web_service(&fake);
    for i in 0..7 {
        pod(&fake, &format!("p{i}"), &format!("10.1.0.{i}"), true);
    }
    sync_slices(&fake, &ctx, "web").await;
    let mut sizes: Vec<usize> = slices(&fake).iter().map(|s| s.endpoints.len()).collect();
    sizes.sort();
    assert_eq!(sizes, [1, 3, 3]);

    // Two pods of full slices go: their slices are updated, nothing is created or deleted.
    fake.edit(PODS, "p0", |p| p["status"]["phase"] = json!("Failed"));
    fake.edit(PODS, "p3", |p| p["status"]["phase"] = json!("Failed"));
    let names: Vec<_> = slices(&fake).into_iter().map(|s| s.metadata.name).collect();
    let before = fake.writes().len();
    sync_slices(&fake, &ctx, "web").await;
    let writes = fake.writes()[before..].to_vec();
    assert!(writes.iter().all(|w| w.starts_with("PUT")), "{writes:?}");
    let now = slices(&fake);
    let total: usize = now.iter().map(|s| s.endpoints.len()).sum();
    assert_eq!(total, 5);
    assert!(now.iter().all(|s| s.endpoints.len() <= 3));
    assert!(now.iter().all(|s| names.contains(&s.metadata.name)));

    // Every pod gone: one placeholder slice, kept as it is on the next sync.
    for i in [1, 2, 4, 5, 6] {
        fake.edit(PODS, &format!("p{i}"), |p| {
            p["status"]["phase"] = json!("Failed")
        });
    }
    sync_slices(&fake, &ctx, "web").await;
    let now = slices(&fake);
    assert_eq!(now.len(), 1, "{now:?}");
    assert!(now[0].endpoints.is_empty());
    assert!(now[0].ports.as_ref().is_none_or(Vec::is_empty));
    let before = fake.writes().len();
    sync_slices(&fake, &ctx, "web").await;
    assert_eq!(fake.writes().len(), before, "{:?}", fake.writes());
}

#[tokio::test]
async fn a_service_with_no_pods_gets_a_placeholder_and_foreign_slices_go() {
    let (fake, ctx) = env(100);
    web_service(&fake);
    // A slice of the address type the Service no longer has, and one of an older Service.
    for (name, t, uid) in [("web-v6", "IPv6", "uid-web"), ("web-old", "IPv4", "old")] {
        fake.put(
            SLICES,
            json!({"metadata": {"name": name, "labels": {SERVICE_NAME_LABEL: "web", MANAGED_BY_LABEL: "endpointslice-controller.k8s.io"},
                   "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "web", "uid": uid, "controller": true}]},
                   "addressType": t, "endpoints": []}),
        );
    }
    sync_slices(&fake, &ctx, "web").await;
    let now = slices(&fake);
    assert_eq!(now.len(), 1, "{now:?}");
    // A slice of an older Service is never reused: the placeholder is new.
    assert!(!["web-old", "web-v6"].contains(&now[0].metadata.name.as_deref().unwrap()));
    assert_eq!(
        now[0].metadata.owner_references.as_ref().unwrap()[0].uid,
        "uid-web"
    );
    assert!(now[0].endpoints.is_empty());
}

#[tokio::test]
async fn custom_endpoints_of_a_selectorless_service_are_mirrored() {
    let (fake, ctx) = env(100);
    service(
        &fake,
        "db",
        json!({"ports": [{"name": "pg", "port": 5432}]}),
    );
    fake.put(
        ENDPOINTS,
        json!({"metadata": {"name": "db", "labels": {"tier": "data"},
                            "annotations": {"note": "x", "kubectl.kubernetes.io/last-applied-configuration": "{}"}},
               "subsets": [{"addresses": [{"ip": "192.0.2.1", "hostname": "one"}], "notReadyAddresses": [{"ip": "192.0.2.2"}, {"ip": "nonsense"}],
                            "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}]}),
    );
    sync_mirror(&fake, &ctx, "db").await;
    let all = slices(&fake);
    assert_eq!(all.len(), 1);
    let s = &all[0];
    assert!(s.metadata.name.as_deref().unwrap().starts_with("db-"));
    let labels = s.metadata.labels.clone().unwrap();
    assert_eq!(
        labels[MANAGED_BY_LABEL],
        "endpointslicemirroring-controller.k8s.io"
    );
    assert_eq!(
        (labels[SERVICE_NAME_LABEL].as_str(), labels["tier"].as_str()),
        ("db", "data")
    );
    let annotations = s.metadata.annotations.clone().unwrap();
    assert_eq!(annotations.keys().collect::<Vec<_>>(), ["note"]);
    let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("Endpoints", "db")
    );
    assert_eq!(
        readiness(s),
        [("192.0.2.1", Some(true)), ("192.0.2.2", Some(false))]
    );
    assert_eq!(s.endpoints[0].hostname.as_deref(), Some("one"));
    let events = fake.list("/api/v1/namespaces/ns/events");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["reason"], "InvalidIPAddress");
    assert_eq!(
        events[0]["message"],
        "Skipped 1 invalid IP addresses when mirroring to EndpointSlices"
    );

    // A change of the Endpoints rewrites the same slice.
    fake.edit(ENDPOINTS, "db", |e| {
        e["subsets"][0]["addresses"] = json!([{"ip": "192.0.2.3"}])
    });
    sync_mirror(&fake, &ctx, "db").await;
    let after = slices(&fake);
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].metadata.name, s.metadata.name);
    assert!(
        after[0]
            .endpoints
            .iter()
            .any(|e| e.addresses == ["192.0.2.3"])
    );
    let before = fake.writes().len();
    sync_mirror(&fake, &ctx, "db").await;
    // Only the warning again (upstream records it on every sync), no slice written.
    let writes = fake.writes()[before..].to_vec();
    assert!(writes.iter().all(|w| w.ends_with("/events")), "{writes:?}");

    // The Service gets a selector: its endpoints are the other controllers' now.
    fake.edit(SERVICES, "db", |s| {
        s["spec"]["selector"] = json!({"app": "db"})
    });
    sync_mirror(&fake, &ctx, "db").await;
    assert!(slices(&fake).is_empty());
}

#[tokio::test]
async fn skip_mirror_and_missing_services_are_not_mirrored() {
    let (fake, ctx) = env(100);
    service(&fake, "kubernetes", json!({"ports": [{"port": 443}]}));
    fake.put(
        ENDPOINTS,
        json!({"metadata": {"name": "kubernetes", "labels": {SKIP_MIRROR_LABEL: "true"}},
               "subsets": [{"addresses": [{"ip": "192.0.2.1"}], "ports": [{"port": 443}]}]}),
    );
    sync_mirror(&fake, &ctx, "kubernetes").await;
    fake.put(
        ENDPOINTS,
        json!({"metadata": {"name": "alone"}, "subsets": [{"addresses": [{"ip": "192.0.2.1"}]}]}),
    );
    // A mirrored slice left from when the Service existed goes.
    fake.put(
        SLICES,
        json!({"metadata": {"name": "alone-x", "labels": {SERVICE_NAME_LABEL: "alone", MANAGED_BY_LABEL: mirroring::CONTROLLER_NAME}},
               "addressType": "IPv4", "endpoints": []}),
    );
    sync_mirror(&fake, &ctx, "alone").await;
    assert!(slices(&fake).is_empty(), "{:?}", slices(&fake));
}

#[test]
fn trigger_time_is_the_earliest_change_since_the_last_sync() {
    let svc: Service =
        serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "ns",
        "creationTimestamp": "2026-01-01T00:00:00Z"}}))
        .unwrap();
    let pod = |name: &str, at: &str| -> k8s_openapi::api::core::v1::Pod {
        serde_json::from_value(json!({"metadata": {"name": name},
            "status": {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": at}]}}))
        .unwrap()
    };
    let t = TriggerTimes::default();
    let first = t.compute(&svc, &[pod("a", "2026-01-01T00:00:09Z")]);
    assert_eq!(first.unwrap().to_string(), "2026-01-01T00:00:00Z");
    assert_eq!(t.compute(&svc, &[pod("a", "2026-01-01T00:00:09Z")]), None);
    let later = t.compute(
        &svc,
        &[
            pod("a", "2026-01-01T00:00:30Z"),
            pod("b", "2026-01-01T00:00:20Z"),
        ],
    );
    assert_eq!(later.unwrap().to_string(), "2026-01-01T00:00:20Z");
}

#[test]
fn pods_leaving_a_service_by_labels_still_concern_it() {
    let (reader, mut writer) = kube::runtime::reflector::store::<Service>();
    let svc: Service =
        serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "ns"},
        "spec": {"selector": {"app": "web"}}}))
        .unwrap();
    writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(svc));
    let m = Memberships::new(reader);
    let pod = |app: &str| -> k8s_openapi::api::core::v1::Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "p", "namespace": "ns", "labels": {"app": app}}}),
        )
        .unwrap()
    };
    assert_eq!(m.services_of(&pod("web")).len(), 1);
    // Relabelled away: the Service it left is told once.
    assert_eq!(m.services_of(&pod("db")).len(), 1);
    assert!(m.services_of(&pod("db")).is_empty());
}

#[tokio::test]
async fn a_new_port_set_rewrites_the_old_slice_instead_of_replacing_it() {
    let (fake, ctx) = env(100);
    web_service(&fake);
    pod(&fake, "a", "10.1.0.1", true);
    sync_slices(&fake, &ctx, "web").await;
    let before = slices(&fake);
    fake.edit(SERVICES, "web", |s| {
        s["spec"]["ports"][0]["targetPort"] = json!(9090)
    });
    let writes = fake.writes().len();
    sync_slices(&fake, &ctx, "web").await;
    let after = slices(&fake);
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].metadata.name, before[0].metadata.name);
    assert_eq!(after[0].ports.as_ref().unwrap()[0].port, Some(9090));
    let new_writes = fake.writes()[writes..].to_vec();
    assert!(
        new_writes.len() == 1 && new_writes[0].starts_with("PUT"),
        "{new_writes:?}"
    );
}

#[test]
fn mirroring_keeps_at_most_the_max_of_a_subset_ready_first() {
    let ep: Endpoints =
        serde_json::from_value(json!({"metadata": {"name": "db", "namespace": "ns"},
        "subsets": [{"addresses": [{"ip": "192.0.2.1"}, {"ip": "192.0.2.2"}],
                     "notReadyAddresses": [{"ip": "192.0.2.3"}, {"ip": "192.0.2.4"}]}]}))
        .unwrap();
    let (plan, skipped) = mirroring::plan(&ep, Vec::new(), 3);
    assert_eq!(
        skipped,
        mirroring::Skipped {
            invalid: 0,
            over_max: 1
        }
    );
    assert_eq!(plan.create.len(), 1);
    assert_eq!(
        readiness(&plan.create[0]),
        [
            ("192.0.2.1", Some(true)),
            ("192.0.2.2", Some(true)),
            ("192.0.2.3", Some(false))
        ]
    );
}
