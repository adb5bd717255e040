//! The events one request produces, read back from a real log file.

use super::*;
use crate::audit::{AuditOptions, LogOptions, Mode, Policy};
use crate::request::query;
use std::path::PathBuf;
use std::time::Duration;

struct Log {
    dir: PathBuf,
    auditor: Arc<Auditor>,
}

impl Log {
    fn new(policy: &str) -> Log {
        let dir = std::env::temp_dir().join(format!("vkube-audit-req-{}", uuid::Uuid::new_v4()));
        let options = AuditOptions {
            policy: Policy::parse(&format!(
                "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n{policy}"
            ))
            .unwrap(),
            log: LogOptions {
                path: dir.join("audit.log"),
                max_age_days: 0,
                max_backups: 0,
                max_size_mb: 0,
                mode: Mode::Blocking,
            },
        };
        Log {
            auditor: Arc::new(Auditor::start(&options).unwrap()),
            dir,
        }
    }

    /// Waits for `n` lines in the log.
    async fn events(&self, n: usize) -> Vec<Value> {
        for _ in 0..200 {
            let text = std::fs::read_to_string(self.dir.join("audit.log")).unwrap_or_default();
            if text.lines().count() >= n {
                return text
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("fewer than {n} events in the log");
    }

    fn tracker(&self, method: &str, uri: &str, headers: &[(&str, &str)]) -> Tracker {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut req = req.body(()).unwrap();
        req.extensions_mut()
            .insert(Peer("10.0.0.7".parse().unwrap()));
        let info = RequestInfo::parse(req.method(), req.uri().path(), &query(req.uri().query()));
        Tracker::new(Some(&self.auditor), &req, &info, SystemTime::now())
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn admin() -> UserInfo {
    UserInfo {
        username: "admin".into(),
        groups: vec!["system:masters".into(), "system:authenticated".into()],
        ..UserInfo::default()
    }
}

#[tokio::test]
async fn a_metadata_get_is_received_then_complete() {
    let log = Log::new("- level: Metadata\n");
    let t = log.tracker(
        "GET",
        "/api/v1/namespaces/default/configmaps/x",
        &[("user-agent", "kubectl/v1.33.0 (linux/amd64) kubernetes/abc")],
    );
    t.begin(&admin()).await;
    t.authorized(true, "");
    let resp = t
        .finish(crate::response::json(
            200,
            &serde_json::json!({"kind": "ConfigMap"}),
        ))
        .await;
    let id = resp.headers()[AUDIT_ID].to_str().unwrap().to_string();
    let events = log.events(2).await;
    let stages: Vec<&str> = events
        .iter()
        .map(|e| e["stage"].as_str().unwrap())
        .collect();
    assert_eq!(stages, ["RequestReceived", "ResponseComplete"]);
    for e in &events {
        assert_eq!(e["auditID"], id.as_str());
        assert_eq!(e["kind"], "Event");
        assert_eq!(e["apiVersion"], "audit.k8s.io/v1");
        assert_eq!(e["level"], "Metadata");
        assert_eq!(e["verb"], "get");
        assert_eq!(e["requestURI"], "/api/v1/namespaces/default/configmaps/x");
        assert_eq!(e["sourceIPs"], serde_json::json!(["10.0.0.7"]));
        assert_eq!(
            e["userAgent"],
            "kubectl/v1.33.0 (linux/amd64) kubernetes/abc"
        );
        assert_eq!(
            e["user"],
            serde_json::json!({"username": "admin", "groups": ["system:masters", "system:authenticated"]})
        );
        assert_eq!(
            e["objectRef"],
            serde_json::json!({"resource": "configmaps", "namespace": "default", "name": "x", "apiVersion": "v1"})
        );
        assert!(e.get("requestObject").is_none() && e.get("responseObject").is_none());
    }
    assert_eq!(
        events[0]["stageTimestamp"],
        events[0]["requestReceivedTimestamp"]
    );
    assert!(events[0].get("responseStatus").is_none());
    assert!(
        events[0].get("annotations").is_none(),
        "authorization runs after RequestReceived"
    );
    assert_eq!(
        events[1]["responseStatus"],
        serde_json::json!({"metadata": {}, "code": 200})
    );
    assert_eq!(
        events[1]["annotations"],
        serde_json::json!({"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": ""})
    );
    let stamp = events[1]["stageTimestamp"].as_str().unwrap();
    assert_eq!(stamp.len(), "2006-01-02T15:04:05.000000Z".len(), "{stamp}");
}

#[tokio::test]
async fn request_response_records_both_bodies_and_completes_the_object_ref() {
    let log = Log::new(
        "- level: RequestResponse\n  resources: [{group: \"\", resources: [configmaps]}]\n",
    );
    let t = log.tracker(
        "POST",
        "/api/v1/namespaces/default/configmaps?fieldManager=kubectl-create",
        &[],
    );
    t.begin(&admin()).await;
    t.request_body(
        &Method::POST,
        br#"{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"cfg"},"data":{"a":"1"}}"#,
    );
    let created = serde_json::json!({"kind": "ConfigMap", "apiVersion": "v1",
        "metadata": {"name": "cfg", "namespace": "default", "uid": "u-1", "resourceVersion": "7"}, "data": {"a": "1"}});
    t.finish(crate::response::json(201, &created)).await;
    let events = log.events(2).await;
    let done = &events[1];
    assert_eq!(done["objectRef"]["name"], "cfg");
    assert_eq!(done["objectRef"]["namespace"], "default");
    assert_eq!(
        done["requestObject"],
        serde_json::json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "cfg"}, "data": {"a": "1"}})
    );
    assert_eq!(done["responseObject"], created);
    assert_eq!(done["responseStatus"]["code"], 201);
    assert!(
        events[0].get("requestObject").is_none(),
        "the body is read after RequestReceived"
    );
}

#[tokio::test]
async fn a_failure_keeps_the_status_and_request_level_has_no_response_object() {
    let log = Log::new("- level: Request\n");
    let t = log.tracker("DELETE", "/api/v1/namespaces/default/configmaps/gone", &[]);
    t.begin(&admin()).await;
    t.request_body(&Method::DELETE, br#"{"propagationPolicy":"Background"}"#);
    let status = vkube_api::Status::not_found("configmaps", "", "gone");
    t.finish(crate::response::status(&status)).await;
    let events = log.events(2).await;
    let done = &events[1];
    assert_eq!(
        done["responseStatus"],
        serde_json::json!({"metadata": {}, "status": "Failure", "message": "configmaps \"gone\" not found",
            "reason": "NotFound", "details": {"name": "gone", "kind": "configmaps"}, "code": 404})
    );
    assert_eq!(
        done["requestObject"],
        serde_json::json!({"propagationPolicy": "Background"})
    );
    assert!(done.get("responseObject").is_none());
}

#[tokio::test]
async fn failed_authentication_is_one_response_started_event_without_a_user() {
    let log = Log::new("- level: None\n  users: [admin]\n- level: Metadata\n");
    let t = log.tracker(
        "GET",
        "/api/v1/namespaces",
        &[("x-forwarded-for", "192.0.2.1, bogus, 192.0.2.2")],
    );
    t.unauthenticated();
    t.finish(crate::response::status(&vkube_api::Status::unauthorized()))
        .await;
    let events = log.events(1).await;
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e["stage"], "ResponseStarted");
    assert_eq!(e["user"], serde_json::json!({}));
    assert_eq!(e["verb"], "list");
    assert_eq!(
        e["sourceIPs"],
        serde_json::json!(["192.0.2.1", "192.0.2.2", "10.0.0.7"])
    );
    assert_eq!(
        e["responseStatus"],
        serde_json::json!({"metadata": {}, "status": "Failure", "message": "Unauthorized", "reason": "Unauthorized", "code": 401})
    );
}

#[tokio::test]
async fn a_watch_completes_when_its_body_goes() {
    let log = Log::new("- level: Metadata\n  omitStages: [RequestReceived]\n");
    let t = log.tracker(
        "GET",
        "/api/v1/namespaces/default/configmaps?watch=true",
        &[],
    );
    t.begin(&admin()).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::convert::Infallible>>(1);
    let stream = http_body_util::StreamBody::new(tokio_stream_from(rx));
    let resp = t.finish(Response::new(stream.boxed())).await;
    let started = log.events(1).await;
    assert_eq!(started[0]["stage"], "ResponseStarted");
    assert_eq!(started[0]["responseStatus"]["code"], 200);
    tx.send(Ok(Frame::data(Bytes::from_static(b"{}\n"))))
        .await
        .unwrap();
    drop(resp);
    let events = log.events(2).await;
    assert_eq!(events[1]["stage"], "ResponseComplete");
    assert_eq!(events[1]["auditID"], events[0]["auditID"]);
}

/// A stream of a channel's items.
fn tokio_stream_from<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
}

#[tokio::test]
async fn a_panic_is_recorded_then_unwinds_on() {
    let log = Log::new("- level: Metadata\n");
    let t = log.tracker("GET", "/api/v1/pods", &[]);
    t.begin(&admin()).await;
    let caught = AssertUnwindSafe(t.guard(async { panic!("index out of bounds") }))
        .catch_unwind()
        .await;
    assert!(caught.is_err(), "the panic goes on to the recovery filter");
    let resp = t.finish(crate::response::text(500, "x")).await;
    assert!(resp.headers().contains_key(AUDIT_ID));
    let events = log.events(2).await;
    assert_eq!(events[1]["stage"], "Panic");
    assert_eq!(
        events[1]["responseStatus"],
        serde_json::json!({"metadata": {}, "status": "Failure", "message": "APIServer panic'd: index out of bounds", "reason": "InternalError", "code": 500})
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        log.events(2).await.len(),
        2,
        "no ResponseComplete after a panic"
    );
}

#[tokio::test]
async fn level_none_writes_nothing_but_the_header_is_always_there() {
    let log = Log::new("- level: None\n  nonResourceURLs: [\"/healthz*\"]\n- level: Metadata\n");
    let t = log.tracker("GET", "/healthz", &[("audit-id", "client-chosen")]);
    t.begin(&admin()).await;
    let resp = t.finish(crate::response::text(200, "ok")).await;
    assert_eq!(resp.headers()[AUDIT_ID], "client-chosen");
    let unaudited = Tracker::new(
        None,
        &Request::get("/version").body(()).unwrap(),
        &RequestInfo::parse(&Method::GET, "/version", &query(None)),
        SystemTime::now(),
    );
    let resp = unaudited.finish(crate::response::text(200, "{}")).await;
    assert_eq!(resp.headers()[AUDIT_ID].len(), 36, "a UUID");
    // A later audited request is the first line: /healthz wrote nothing.
    let t = log.tracker("GET", "/version", &[]);
    t.begin(&admin()).await;
    let events = log.events(1).await;
    assert_eq!(events[0]["requestURI"], "/version");
    assert!(events[0].get("objectRef").is_none());
}

#[tokio::test]
async fn impersonation_is_recorded_beside_the_real_user() {
    let log = Log::new("- level: Metadata\n");
    let t = log.tracker("GET", "/api/v1/namespaces/default/secrets", &[]);
    t.begin(&admin()).await;
    t.impersonated(&UserInfo {
        username: "bob".into(),
        groups: vec!["system:authenticated".into()],
        ..UserInfo::default()
    });
    t.authorized(false, "");
    let why = "User \"bob\" cannot list resource \"secrets\" in API group \"\" in the namespace \"default\"";
    let forbidden = vkube_api::Status::forbidden("secrets", "", "", why);
    t.finish(crate::response::status(&forbidden)).await;
    let events = log.events(2).await;
    let e = &events[1];
    assert_eq!(e["user"]["username"], "admin");
    assert_eq!(
        e["impersonatedUser"],
        serde_json::json!({"username": "bob", "groups": ["system:authenticated"]})
    );
    assert_eq!(e["annotations"]["authorization.k8s.io/decision"], "forbid");
    assert_eq!(e["responseStatus"]["code"], 403);
    assert_eq!(e["responseStatus"]["reason"], "Forbidden");
    assert_eq!(
        e["responseStatus"]["message"],
        format!("secrets is forbidden: {why}")
    );
}

#[test]
fn source_ips_are_upstreams() {
    let mut h = HeaderMap::new();
    let peer = Some("::ffff:10.1.2.3".parse().unwrap());
    assert_eq!(source_ips(&h, peer), ["10.1.2.3"]);
    assert_eq!(source_ips(&h, None), ["127.0.0.1"]);
    h.insert("x-real-ip", "10.1.2.3".parse().unwrap());
    assert_eq!(
        source_ips(&h, peer),
        ["10.1.2.3"],
        "the last one is not repeated"
    );
    h.insert("x-forwarded-for", "1.1.1.1,2.2.2.2".parse().unwrap());
    h.insert("x-real-ip", "2.2.2.2".parse().unwrap());
    assert_eq!(source_ips(&h, peer), ["1.1.1.1", "2.2.2.2", "10.1.2.3"]);
}
