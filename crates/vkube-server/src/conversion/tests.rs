//! The review's checks with upstream's messages, and whole conversions against a webhook served
//! over HTTPS on 127.0.0.1 by the test.

use std::net::SocketAddr;

use base64::Engine as _;
use serde_json::{Value, json};

use super::review::{self, Batch};

fn batch<'a>(objects: &'a [Value], list: bool) -> Batch<'a> {
    Batch {
        objects,
        desired: "stable.example.com/v2",
        gvk: if list {
            "stable.example.com/v2, Kind=TestList".into()
        } else {
            "stable.example.com/v1, Kind=Test".into()
        },
        list,
    }
}

fn stored(name: &str) -> Value {
    json!({"apiVersion": "stable.example.com/v1", "kind": "Test",
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "resourceVersion": "7",
            "labels": {"a": "1"}, "creationTimestamp": "2026-01-01T00:00:00Z"},
        "hostPort": "localhost:8080"})
}

fn converted(name: &str) -> Value {
    json!({"apiVersion": "stable.example.com/v2", "kind": "Test",
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "labels": {"a": "1"}},
        "host": "localhost", "port": "8080"})
}

#[test]
fn the_request_is_a_v1_conversion_review_without_resource_versions() {
    let r = review::request("v1", "u-1", "stable.example.com/v2", &[stored("a")]);
    assert_eq!(r["apiVersion"], "apiextensions.k8s.io/v1");
    assert_eq!(r["kind"], "ConversionReview");
    assert_eq!(r["request"]["uid"], "u-1");
    assert_eq!(r["request"]["desiredAPIVersion"], "stable.example.com/v2");
    assert!(r["request"]["objects"][0]["metadata"]["resourceVersion"].is_null());
    assert_eq!(r["request"]["objects"][0]["hostPort"], "localhost:8080");
}

#[test]
fn the_answer_is_checked_as_upstream_checks_it() {
    let ok = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview",
        "response": {"uid": "u", "result": {"status": "Success"}, "convertedObjects": [converted("a")]}});
    assert_eq!(review::converted_objects("v1", "u", &ok).unwrap().len(), 1);
    let e = |v: &Value| review::converted_objects("v1", "u", v).unwrap_err();
    assert_eq!(
        e(&json!({"apiVersion": "apiextensions.k8s.io/v1beta1", "kind": "ConversionReview"})),
        "expected webhook response of apiextensions.k8s.io/v1, Kind=ConversionReview, got apiextensions.k8s.io/v1beta1, Kind=ConversionReview"
    );
    let mut a = ok.clone();
    a["response"]["uid"] = json!("other");
    assert_eq!(e(&a), "expected response.uid=\"u\", got \"other\"");
    a["response"] = json!({"uid": "u", "result": {"status": "Failure", "message": "no can do"}});
    assert_eq!(e(&a), "no can do");
    a["response"] = json!({"uid": "u", "result": {}});
    assert_eq!(e(&a), "response.result.status was '', not 'Success'");
    a.as_object_mut().unwrap().remove("response");
    assert_eq!(e(&a), "no response provided");
    // v1beta1 answers are not checked for their uid or kind.
    let beta =
        json!({"response": {"uid": "x", "result": {"status": "Success"}, "convertedObjects": []}});
    assert!(review::converted_objects("v1beta1", "u", &beta).is_ok());
}

#[test]
fn converted_objects_keep_the_stored_metadata_but_labels_and_annotations() {
    let sent = [stored("a")];
    let mut back = converted("a");
    back["metadata"]["labels"] = json!({"b": "2"});
    back["metadata"]["annotations"] = json!({"note": "converted"});
    back["metadata"]["generation"] = json!(99);
    let out = review::accept(&batch(&sent, false), vec![back]).unwrap();
    let meta = &out[0]["metadata"];
    assert_eq!(meta["resourceVersion"], "7");
    assert_eq!(meta["creationTimestamp"], "2026-01-01T00:00:00Z");
    assert!(meta["generation"].is_null());
    assert_eq!(meta["labels"], json!({"b": "2"}));
    assert_eq!(meta["annotations"]["note"], "converted");
    assert_eq!(out[0]["host"], "localhost");
}

#[test]
fn bad_converted_objects_read_as_upstreams_errors() {
    let sent = [stored("a")];
    let one = |o: Value| review::accept(&batch(&sent, false), vec![o]).unwrap_err();
    let mut wrong = converted("a");
    wrong["apiVersion"] = json!("stable.example.com/v3");
    assert_eq!(
        one(wrong),
        "conversion webhook for stable.example.com/v1, Kind=Test returned invalid object at index 0: invalid groupVersion (expected stable.example.com/v2, received stable.example.com/v3)"
    );
    let mut kind = converted("a");
    kind["kind"] = json!("Other");
    assert_eq!(
        one(kind),
        "conversion webhook for stable.example.com/v1, Kind=Test returned invalid object at index 0: invalid kind (expected Test, received Other)"
    );
    let mut name = converted("a");
    name["metadata"]["name"] = json!("b");
    assert_eq!(
        one(name),
        "conversion webhook for stable.example.com/v1, Kind=Test returned invalid object: must have the same name: a != b"
    );
    let mut label = converted("a");
    label["metadata"]["labels"] = json!({"bad key!": "x"});
    assert!(
        one(label).starts_with("conversion webhook for stable.example.com/v1, Kind=Test returned invalid metadata: metadata.labels: Invalid value: \"bad key!\": "),
    );
    let mut number = converted("a");
    number["metadata"]["annotations"] = json!({"n": 1});
    assert_eq!(
        one(number),
        "conversion webhook for stable.example.com/v1, Kind=Test returned invalid metadata: metadata.annotations[n] must be a string, but is int64 in converted object"
    );
    assert_eq!(
        review::accept(&batch(&sent, false), vec![]).unwrap_err(),
        "conversion webhook for stable.example.com/v1, Kind=Test returned 0 objects, expected 1"
    );
    // A list names the list and counts as upstream's loop does.
    let two = [stored("a"), stored("b")];
    let mut second = converted("b");
    second["apiVersion"] = json!("stable.example.com/v1");
    assert_eq!(
        review::accept(&batch(&two, true), vec![converted("a"), second]).unwrap_err(),
        "conversion webhook for stable.example.com/v2, Kind=TestList returned invalid converted object at index 2: invalid groupVersion (expected stable.example.com/v2, received stable.example.com/v1)"
    );
}

/// A conversion webhook on 127.0.0.1 with a certificate of its own CA: v1 `hostPort` ↔ v2
/// `host`+`port`; `wrong` answers a wrong apiVersion. Counts the reviews it gets.
async fn webhook(
    wrong: bool,
) -> (
    SocketAddr,
    String,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let ca = crate::identity::Ca::generate().unwrap();
    let pair = ca.serving_cert(&["127.0.0.1".to_string()]).unwrap();
    let tls = crate::tls::server_config(&ca.cert_pem, crate::tls::ServingCert::new(&pair).unwrap())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = calls.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, counter) = (acceptor.clone(), counter.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let counter = counter.clone();
                        async move {
                            use http_body_util::BodyExt;
                            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let review: Value = serde_json::from_slice(&body).unwrap();
                            let out = answer(&review["request"], wrong);
                            Ok::<_, std::convert::Infallible>(http::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from(
                                    serde_json::to_vec(&out).unwrap(),
                                )),
                            ))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, ca.cert_pem, calls)
}

fn answer(request: &Value, wrong: bool) -> Value {
    let desired = request["desiredAPIVersion"].as_str().unwrap();
    let objects: Vec<Value> = request["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let mut o = o.clone();
            let m = o.as_object_mut().unwrap();
            if desired.ends_with("/v2") {
                if let Some(hp) = m.remove("hostPort") {
                    let (h, p) = hp.as_str().unwrap().split_once(':').unwrap();
                    m.insert("host".into(), json!(h));
                    m.insert("port".into(), json!(p));
                }
            } else if let (Some(h), Some(p)) = (m.remove("host"), m.remove("port")) {
                m.insert(
                    "hostPort".into(),
                    json!(format!("{}:{}", h.as_str().unwrap(), p.as_str().unwrap())),
                );
            }
            m.insert(
                "apiVersion".into(),
                json!(if wrong {
                    "stable.example.com/v9"
                } else {
                    desired
                }),
            );
            o
        })
        .collect();
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview",
        "response": {"uid": request["uid"], "result": {"status": "Success"}, "convertedObjects": objects}})
}

/// Installs a CRD of `group` with v1 (storage) and v2 converted by a webhook at `url`.
fn install(group: &str, port: u16, ca_pem: &str) -> &'static vkube_api::Resource {
    let url = format!("https://127.0.0.1:{port}/convert");
    let version = |name: &str, storage: bool| {
        json!({"name": name, "served": true, "storage": storage,
            "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}})
    };
    vkube_api::registry::custom::install(&json!({
        "metadata": {"name": format!("tests.{group}")},
        "spec": {"group": group, "scope": "Namespaced",
            "names": {"plural": "tests", "singular": "test", "kind": "Test", "listKind": "TestList"},
            "versions": [version("v1", true), version("v2", false)],
            "conversion": {"strategy": "Webhook", "webhook": {"conversionReviewVersions": ["v1"],
                "clientConfig": {"url": url, "caBundle": base64::engine::general_purpose::STANDARD.encode(ca_pem)}}}},
        "status": {"conditions": [{"type": "Established", "status": "True"}]},
    }));
    vkube_api::registry::custom::find(group, "v2", "tests").unwrap()
}

fn in_group(mut o: Value, group: &str) -> Value {
    let av = o["apiVersion"]
        .as_str()
        .unwrap()
        .replace("stable.example.com", group);
    o["apiVersion"] = json!(av);
    o
}

#[tokio::test]
async fn a_list_converts_in_one_review_and_only_what_needs_it() {
    let group = "list.conv.example.com";
    let (addr, ca, calls) = webhook(false).await;
    let v2 = install(group, addr.port(), &ca);
    assert!(super::by_webhook(v2));
    let store = vkube_store::MemoryStore::new();
    let already = in_group(converted("c"), group);
    let objs = vec![
        in_group(stored("a"), group),
        already.clone(),
        in_group(stored("b"), group),
    ];
    let out = super::served(store.as_ref(), v2, objs, true).await.unwrap();
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(out[0]["host"], "localhost");
    assert_eq!(out[0]["metadata"]["resourceVersion"], "7");
    assert_eq!(out[1], already);
    assert_eq!(out[2]["apiVersion"], format!("{group}/v2"));
    // To the storage version and back.
    let back = super::stored(store.as_ref(), v2, &out[0]).await.unwrap();
    assert_eq!(back["hostPort"], "localhost:8080");
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    // Nothing to convert: no call.
    super::served(store.as_ref(), v2, vec![already], true)
        .await
        .unwrap();
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// Why reading a stored v1 object of `group` in `v2` fails.
async fn read_fails(v2: &vkube_api::Resource, group: &str) -> vkube_api::Status {
    let store = vkube_store::MemoryStore::new();
    let obj = in_group(stored("a"), group);
    super::served(store.as_ref(), v2, vec![obj], false)
        .await
        .unwrap_err()
}

#[tokio::test]
async fn a_wrong_version_and_a_dead_webhook_are_upstreams_500s() {
    let group = "bad.conv.example.com";
    let (addr, ca, _) = webhook(true).await;
    let v2 = install(group, addr.port(), &ca);
    let err = read_fails(v2, group).await;
    assert_eq!((err.code, err.reason), (500, ""));
    assert_eq!(
        err.message,
        format!(
            "conversion webhook for {group}/v1, Kind=Test returned invalid object at index 0: invalid groupVersion (expected {group}/v2, received stable.example.com/v9)"
        )
    );
    // A port nothing listens on.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let group = "dead.conv.example.com";
    let v2 = install(group, port, &ca);
    let err = read_fails(v2, group).await;
    assert_eq!(
        err.message,
        format!(
            "conversion webhook for {group}/v1, Kind=Test failed: Post \"https://127.0.0.1:{port}/convert?timeout=30s\": dial tcp 127.0.0.1:{port}: connect: connection refused"
        )
    );
}
