use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine as _;
use serde_json::{Value, json};

use super::hook::{Hook, Operation, Target};
use super::*;

fn hook(webhook: Value) -> Hook {
    Hook::parse("config", &webhook, true)
}

fn target<'a>(
    op: Operation,
    group: &'a str,
    resource: &'a str,
    sub: &'a str,
    ns: &'a str,
) -> Target<'a> {
    Target {
        operation: op,
        group,
        version: "v1",
        resource,
        subresource: sub,
        namespace: ns,
    }
}

#[test]
fn rules_match_resources_subresources_and_scope() {
    let rule = |resources: Value, scope: &str| {
        hook(
            json!({"name": "a.b.c", "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": [""],
            "apiVersions": ["v1"], "resources": resources, "scope": scope}]}),
        )
    };
    let pods = target(Operation::Create, "", "pods", "", "default");
    let status = target(Operation::Update, "", "pods", "status", "default");
    // `*`: every resource, no subresource.
    let star = rule(json!(["*"]), "*");
    assert!(star.rules[0].matches(&pods));
    assert!(!star.rules[0].matches(&status));
    // `*/*` and `pods/*`: subresources too; `*/status`: only status.
    for r in ["*/*", "pods/*", "*/status"] {
        assert!(rule(json!([r]), "*").rules[0].matches(&status), "{r}");
    }
    assert!(!rule(json!(["pods/*"]), "*").rules[0].matches(&pods));
    // The operation must be listed.
    let delete = target(Operation::Delete, "", "pods", "", "default");
    assert!(!star.rules[0].matches(&delete));
    // Scope: a Namespace is cluster-scoped; a namespaced request is not.
    let ns_object = target(Operation::Create, "", "namespaces", "", "team-a");
    assert!(rule(json!(["*"]), "Cluster").rules[0].matches(&ns_object));
    assert!(!rule(json!(["*"]), "Namespaced").rules[0].matches(&ns_object));
    assert!(!rule(json!(["*"]), "Cluster").rules[0].matches(&pods));
    assert!(rule(json!(["*"]), "Namespaced").rules[0].matches(&pods));
    // Another group does not match.
    assert!(!star.rules[0].matches(&target(Operation::Create, "apps", "deployments", "", "x")));
}

#[test]
fn equivalent_resources_match_unless_exact() {
    let rules = json!([{"operations": ["*"], "apiGroups": ["events.k8s.io"], "apiVersions": ["v1"],
        "resources": ["events"]}]);
    let core_events = vkube_api::registry::find("", "v1", "events").unwrap();
    let equivalent = hook(json!({"name": "e", "rules": rules, "matchPolicy": "Equivalent"}));
    let invoked = matching::invocation(&equivalent, core_events, "", Operation::Create, "default")
        .expect("core events share the storage of events.k8s.io events");
    assert_eq!((invoked.group, invoked.kind), ("events.k8s.io", "Event"));
    let exact = hook(json!({"name": "e", "rules": rules, "matchPolicy": "Exact"}));
    assert!(matching::invocation(&exact, core_events, "", Operation::Create, "default").is_none());
    // The request's own resource is preferred.
    let both = hook(
        json!({"name": "e", "rules": [{"operations": ["*"], "apiGroups": ["*"],
        "apiVersions": ["*"], "resources": ["events"]}]}),
    );
    let invoked =
        matching::invocation(&both, core_events, "", Operation::Create, "default").unwrap();
    assert!(std::ptr::eq(invoked, core_events));
}

#[test]
fn object_selector_looks_at_the_new_and_the_old_object() {
    let h = hook(json!({"name": "o", "objectSelector": {"matchLabels": {"app": "web"}}}));
    let web = json!({"metadata": {"labels": {"app": "web"}}});
    let other = json!({"metadata": {"labels": {"app": "db"}}});
    let bare = json!({"metadata": {}});
    assert!(matching::object_selected(
        &h.object_selector,
        Some(&web),
        None
    ));
    assert!(matching::object_selected(
        &h.object_selector,
        Some(&bare),
        Some(&web)
    ));
    assert!(!matching::object_selected(
        &h.object_selector,
        Some(&other),
        None
    ));
    assert!(!matching::object_selected(
        &h.object_selector,
        None,
        Some(&bare)
    ));
    let all = hook(json!({"name": "o", "objectSelector": {}}));
    assert!(matching::object_selected(
        &all.object_selector,
        Some(&bare),
        None
    ));
    let expr = hook(json!({"name": "o", "objectSelector": {"matchExpressions": [
        {"key": "skip", "operator": "DoesNotExist"}]}}));
    assert!(matching::object_selected(
        &expr.object_selector,
        Some(&bare),
        None
    ));
    assert!(!matching::object_selected(
        &expr.object_selector,
        Some(&json!({"metadata": {"labels": {"skip": ""}}})),
        None
    ));
}

#[test]
fn match_conditions_are_cel_over_object_old_object_and_request() {
    let h = hook(json!({"name": "m", "matchConditions": [
        {"name": "not-kube-system", "expression": "request.namespace != 'kube-system'"},
        {"name": "labelled", "expression": "has(object.metadata.labels) && 'team' in object.metadata.labels"},
        {"name": "in-request", "expression": "request.object.metadata.labels.team == 'a'"}]}));
    let labelled = json!({"metadata": {"labels": {"team": "a"}}});
    let req = json!({"namespace": "default", "operation": "CREATE", "object": labelled});
    assert_eq!(
        matching::conditions_match(&h, Some(&labelled), None, &req),
        Ok(true)
    );
    let bare = json!({"metadata": {}});
    assert_eq!(
        matching::conditions_match(&h, Some(&bare), None, &req),
        Ok(false)
    );
    let system = json!({"namespace": "kube-system", "object": labelled});
    assert_eq!(
        matching::conditions_match(&h, Some(&labelled), None, &system),
        Ok(false)
    );
    // An expression that cannot be evaluated is an error, for the failure policy to weigh.
    let broken = hook(json!({"name": "m", "matchConditions": [
        {"name": "bad", "expression": "object.spec.missing == 1"}]}));
    let err = matching::conditions_match(&broken, Some(&bare), None, &req).unwrap_err();
    assert!(err.contains("\"bad\""), "{err}");
}

#[test]
fn a_denial_reads_as_upstream_words_it() {
    let s = review::denied(
        "deny.example.com",
        Some(&json!({"message": "no labels here", "code": 403})),
    );
    assert_eq!(s.code, 403);
    assert_eq!(
        s.message,
        "admission webhook \"deny.example.com\" denied the request: no labels here"
    );
    // A code below 400 becomes 400; no message: "without explanation".
    let s = review::denied("d", None);
    assert_eq!(
        (s.code, s.message.as_str()),
        (
            400,
            "admission webhook \"d\" denied the request without explanation"
        )
    );
    let s = review::denied("d", Some(&json!({"reason": "Forbidden", "code": 200})));
    assert_eq!((s.code, s.reason), (400, "Forbidden"));
    assert_eq!(
        s.message,
        "admission webhook \"d\" denied the request: Forbidden"
    );
}

#[test]
fn an_answer_is_checked_as_upstream_checks_it() {
    let ok = |resp: Value| json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": resp});
    assert!(
        review::verify("v1", "u", true, &ok(json!({"uid": "u", "allowed": true})))
            .unwrap()
            .allowed
    );
    assert_eq!(
        review::verify("v1", "u", true, &ok(json!({"uid": "x", "allowed": true}))).unwrap_err(),
        "expected response.uid=\"u\", got \"x\""
    );
    let patch = base64::engine::general_purpose::STANDARD.encode("[]");
    assert_eq!(
        review::verify(
            "v1",
            "u",
            true,
            &ok(json!({"uid": "u", "allowed": true, "patch": patch}))
        )
        .unwrap_err(),
        "webhook returned response.patch but not response.patchType"
    );
    let with_type =
        ok(json!({"uid": "u", "allowed": true, "patch": patch, "patchType": "JSONPatch"}));
    assert!(review::verify("v1", "u", true, &with_type).is_ok());
    assert!(review::verify("v1", "u", false, &with_type).is_err());
    let v1beta1 = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "response": {"uid": "", "allowed": true}});
    assert!(review::verify("v1beta1", "u", true, &v1beta1).is_ok());
    assert_eq!(
        review::verify(
            "v1",
            "u",
            true,
            &json!({"response": {"uid": "u", "allowed": true}})
        )
        .unwrap_err(),
        "expected webhook response of admission.k8s.io/v1, Kind=AdmissionReview, got , Kind="
    );
}

/// A webhook server on 127.0.0.1 serving HTTPS with a certificate of its own CA; `answer` turns
/// each AdmissionReview into the response's `response` field (its uid is filled in).
async fn webhook_server(answer: fn(&Value) -> Value) -> (SocketAddr, String) {
    let ca = crate::identity::Ca::generate().unwrap();
    let pair = ca
        .serving_cert(&["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap();
    let tls = crate::tls::server_config(&ca.cert_pem, crate::tls::ServingCert::new(&pair).unwrap())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    move |req: http::Request<hyper::body::Incoming>| async move {
                        use http_body_util::BodyExt;
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let review: Value = serde_json::from_slice(&body).unwrap();
                        let mut resp = answer(&review["request"]);
                        resp["uid"] = review["request"]["uid"].clone();
                        let out = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": resp});
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(
                                serde_json::to_vec(&out).unwrap(),
                            )),
                        ))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, ca.cert_pem)
}

fn url_hook(addr: SocketAddr, ca_pem: &str, path: &str) -> Hook {
    hook(
        json!({"name": "label.example.com", "admissionReviewVersions": ["v1"], "sideEffects": "None",
        "clientConfig": {"url": format!("https://127.0.0.1:{}{path}", addr.port()),
            "caBundle": base64::engine::general_purpose::STANDARD.encode(ca_pem)}}),
    )
}

async fn round_trip(h: &Hook, object: &Value) -> Result<review::Answer, String> {
    let store = vkube_store::MemoryStore::new();
    let t = client::target(store.as_ref(), h).await?;
    let user = vkube_auth::UserInfo {
        username: "alice".into(),
        ..Default::default()
    };
    let options = json!({});
    let attrs = review::Attributes {
        operation: Operation::Create,
        group: "",
        version: "v1",
        resource: "configmaps",
        kind: "ConfigMap",
        subresource: "",
        request_group: "",
        request_version: "v1",
        request_resource: "configmaps",
        request_kind: "ConfigMap",
        name: "cm",
        namespace: "default",
        user: &user,
        dry_run: false,
        options: &options,
    };
    let uid = "7c1b1d0e-0000-4000-8000-000000000001";
    let body = review::review("v1", review::request(uid, &attrs, Some(object), None));
    let tls = h.tls.as_ref().map_err(Clone::clone)?;
    let (code, bytes) = client::post(tls, &t, serde_json::to_vec(&body).unwrap(), h.timeout)
        .await
        .map_err(|e| format!("Post {:?}: {e}", t.url))?;
    assert_eq!(code, 200);
    review::verify("v1", uid, true, &serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn a_review_round_trip_over_https_applies_the_patch() {
    let (addr, ca) = webhook_server(|req| {
        assert_eq!(req["userInfo"]["username"], "alice");
        assert_eq!(req["operation"], "CREATE");
        assert_eq!(
            req["resource"],
            json!({"group": "", "version": "v1", "resource": "configmaps"})
        );
        let patch = json!([{"op": "add", "path": "/metadata/labels", "value": {"mutated": "yes"}}]);
        json!({"allowed": true, "patchType": "JSONPatch", "warnings": ["mind the gap"],
            "patch": base64::engine::general_purpose::STANDARD.encode(patch.to_string())})
    })
    .await;
    let h = url_hook(addr, &ca, "/mutate");
    let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}});
    let answer = round_trip(&h, &cm).await.unwrap();
    assert!(answer.allowed);
    assert_eq!(answer.warnings, vec!["mind the gap".to_string()]);
    let sent = Some(cm.clone());
    let (store, patch) = (vkube_store::MemoryStore::new(), answer.patch.unwrap());
    let configmaps = vkube_api::registry::find("", "v1", "configmaps").unwrap();
    let changed = apply_patch(store.as_ref(), configmaps, &h, &mut cm, sent, &patch).await;
    assert!(changed.unwrap());
    assert_eq!(cm["metadata"]["labels"]["mutated"], "yes");
}

#[tokio::test]
async fn the_ca_bundle_is_the_only_trust_and_a_dead_server_reads_as_go_says() {
    let (addr, _ca) = webhook_server(|_| json!({"allowed": true})).await;
    let other = crate::identity::Ca::generate().unwrap();
    let h = url_hook(addr, &other.cert_pem, "/v");
    let err = round_trip(&h, &json!({})).await.err().unwrap();
    assert_eq!(
        err,
        format!(
            "Post \"https://127.0.0.1:{}/v?timeout=10s\": tls: failed to verify certificate: x509: certificate signed by unknown authority",
            addr.port()
        )
    );
    // Nothing listens on a port just freed.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dead = url_hook(
        SocketAddr::from(([127, 0, 0, 1], port)),
        &other.cert_pem,
        "/v",
    );
    let err = round_trip(&dead, &json!({})).await.err().unwrap();
    assert_eq!(
        err,
        format!(
            "Post \"https://127.0.0.1:{port}/v?timeout=10s\": dial tcp 127.0.0.1:{port}: connect: connection refused"
        )
    );
    let status = review::call_failed("w.example.com", &format!("failed to call webhook: {err}"));
    assert_eq!(status.code, 500);
    assert_eq!(
        status.message,
        format!(
            "Internal error occurred: failed calling webhook \"w.example.com\": failed to call webhook: {err}"
        )
    );
}

#[tokio::test]
async fn a_service_webhook_goes_to_a_ready_endpoint_and_names_the_service() {
    let store: Arc<dyn vkube_store::Store> = vkube_store::MemoryStore::new();
    let put = |key: String, v: Value| {
        let store = store.clone();
        async move {
            store
                .create(&key, serde_json::to_vec(&v).unwrap(), None)
                .await
                .unwrap()
        }
    };
    let svc = vkube_api::registry::find("", "v1", "services").unwrap();
    put(
        svc.key("hooks", "web"),
        json!({"metadata": {"name": "web"}, "spec": {"clusterIP": "10.96.0.9",
        "ports": [{"name": "https", "port": 443, "targetPort": 8443}]}}),
    )
    .await;
    let h = hook(
        json!({"name": "s", "clientConfig": {"service": {"namespace": "hooks", "name": "web", "path": "/m"}}}),
    );
    let t = client::target(store.as_ref(), &h).await.unwrap();
    assert_eq!(t.url, "https://web.hooks.svc:443/m?timeout=10s");
    // No endpoints yet: the clusterIP.
    assert_eq!(client_connect(&t), ("10.96.0.9".to_string(), 443));
    let slices = vkube_api::registry::find("discovery.k8s.io", "v1", "endpointslices").unwrap();
    put(slices.key("hooks", "web-abc"), json!({"metadata": {"name": "web-abc",
        "labels": {"kubernetes.io/service-name": "web"}}, "ports": [{"name": "https", "port": 8443}],
        "endpoints": [{"addresses": ["10.1.0.5"], "conditions": {"ready": false}},
                      {"addresses": ["10.1.0.6"], "conditions": {"ready": true}}]})).await;
    let t = client::target(store.as_ref(), &h).await.unwrap();
    assert_eq!(client_connect(&t), ("10.1.0.6".to_string(), 8443));
    let missing = hook(
        json!({"name": "s", "clientConfig": {"service": {"namespace": "hooks", "name": "nope"}}}),
    );
    assert_eq!(
        client::target(store.as_ref(), &missing)
            .await
            .err()
            .unwrap(),
        "service \"nope\" not found"
    );
}

fn client_connect(t: &client::Target) -> (String, u16) {
    t.connect_to()
}

#[tokio::test]
async fn the_view_follows_the_store_and_catches_up_before_a_write() {
    let store: Arc<dyn vkube_store::Store> = vkube_store::MemoryStore::new();
    let hub = crate::hub::Hub::start(store.clone()).await.unwrap();
    let view = WebhookView::start(store.clone(), hub.clone())
        .await
        .unwrap();
    assert!(view.hooks(true).is_empty());
    let r = vkube_api::registry::find(
        "admissionregistration.k8s.io",
        "v1",
        "mutatingwebhookconfigurations",
    )
    .unwrap();
    let config = |names: &[&str]| {
        let hooks: Vec<Value> = names.iter().map(|n| json!({"name": n})).collect();
        serde_json::to_vec(&json!({"metadata": {"name": "b"}, "webhooks": hooks})).unwrap()
    };
    let kv = store
        .create(&r.key("", "b"), config(&["one.x.y", "two.x.y"]), None)
        .await
        .unwrap();
    store
        .create(
            &r.key("", "a"),
            serde_json::to_vec(&json!({"metadata": {"name": "a"},
        "webhooks": [{"name": "first.x.y"}]}))
            .unwrap(),
            None,
        )
        .await
        .unwrap();
    // At once, as the next write on any replica would see it.
    view.catch_up().await;
    let names: Vec<String> = view.hooks(true).iter().map(|h| h.name.clone()).collect();
    assert_eq!(names, ["first.x.y", "one.x.y", "two.x.y"]);
    assert!(view.hooks(false).is_empty());
    assert!(view.revision() > kv.mod_revision);
    store.delete(&r.key("", "b"), None).await.unwrap();
    view.catch_up().await;
    assert_eq!(view.hooks(true).len(), 1);
}
