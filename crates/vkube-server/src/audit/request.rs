//! One request's audit record, as upstream's audit filters build it: `Audit-ID` first (every
//! response carries it, audited or not), then, once the user is known, the policy's level and
//! the `RequestReceived` event; impersonation, the authorization decision and the request body
//! fill the event in; the response ends it with `ResponseComplete`, or `ResponseStarted` then
//! `ResponseComplete` (when its body ends or the client goes) for watches and other long-running
//! requests. A request that failed authentication gets one `ResponseStarted` event with the
//! empty user; a handler that panics, one `Panic` event.

use std::future::Future;
use std::net::IpAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::SystemTime;

use futures_util::FutureExt;
use http::{HeaderMap, HeaderValue, Method, Request, Response, header};
use http_body_util::BodyExt;
use hyper::body::{Bytes, Frame};
use serde_json::Value;
use vkube_auth::UserInfo;
use vkube_auth::rbac::Attributes;

use super::Auditor;
use super::event::{self, Event, ObjectReference, ResponseStatus, User};
use super::policy::{Decision, Level, Stage};
use crate::request::RequestInfo;
use crate::response::Body;

/// The request and response header of the audit ID.
pub const AUDIT_ID: &str = "audit-id";
const MAX_USER_AGENT: usize = 1024;
/// Responses up to this size are read for a `Status` at every level (Status bodies are small;
/// a large list at `Metadata` is not parsed just to learn that it is no Status).
const STATUS_PROBE: usize = 64 * 1024;

/// The client's address, put in a request's extensions by the listener.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub IpAddr);

/// What is known of a request before the handler runs.
struct Facts {
    request_uri: String,
    user_agent: String,
    source_ips: Vec<String>,
    received: SystemTime,
    attributes: Attributes,
    version: String,
    long_running: bool,
    /// `/api…` paths answer with API objects, which upstream records as `responseObject`.
    api_path: bool,
}

struct Active {
    event: Event,
    decision: Decision,
    /// Authentication failed: the one event is `ResponseStarted`.
    unauthenticated: bool,
    /// The `Panic` event was written.
    panicked: bool,
}

pub struct Tracker {
    audit_id: String,
    audit: Option<(Arc<Auditor>, Facts)>,
    active: Mutex<Option<Active>>,
}

impl Tracker {
    pub fn new<B>(
        auditor: Option<&Arc<Auditor>>,
        req: &Request<B>,
        info: &RequestInfo,
        received: SystemTime,
    ) -> Tracker {
        let audit_id = req
            .headers()
            .get(AUDIT_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let audit = auditor.map(|auditor| {
            let path = req.uri().path();
            let mut user_agent = req
                .headers()
                .get(header::USER_AGENT)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default();
            if user_agent.len() > MAX_USER_AGENT {
                let mut cut = MAX_USER_AGENT;
                while !user_agent.is_char_boundary(cut) {
                    cut -= 1;
                }
                user_agent.truncate(cut);
                user_agent.push_str("...TRUNCATED");
            }
            let peer = req.extensions().get::<Peer>().map(|p| p.0);
            let facts = Facts {
                request_uri: req
                    .uri()
                    .path_and_query()
                    .map(|p| p.as_str().to_string())
                    .unwrap_or_else(|| path.to_string()),
                user_agent,
                source_ips: source_ips(req.headers(), peer),
                received,
                attributes: crate::authz::attributes(info, req.method(), path),
                version: info.version.clone(),
                long_running: crate::filters::max_in_flight::long_running(info),
                api_path: path == "/api" || path.starts_with("/api/") || path.starts_with("/apis"),
            };
            (auditor.clone(), facts)
        });
        Tracker {
            audit_id,
            audit,
            active: Mutex::new(None),
        }
    }

    /// Evaluates the policy for `user` (authenticated, before impersonation) and writes the
    /// `RequestReceived` event.
    pub async fn begin(&self, user: &UserInfo) {
        let Some(event) = self.start(Some(user)) else {
            return;
        };
        if let Some((auditor, _)) = &self.audit {
            auditor.sink.process(event).await;
        }
    }

    /// Authentication failed: the request is audited with no user, as upstream's
    /// `WithFailedAuthenticationAudit`, in one `ResponseStarted` event when it is answered.
    pub fn unauthenticated(&self) {
        self.start(None);
        if let Some(active) = self.active.lock().expect("lock").as_mut() {
            active.unauthenticated = true;
        }
    }

    /// Starts the event when the policy records the request; returns the `RequestReceived`
    /// event to write, unless the policy omits that stage.
    fn start(&self, user: Option<&UserInfo>) -> Option<Event> {
        let (auditor, facts) = self.audit.as_ref()?;
        let decision = auditor.policy.evaluate(user, &facts.attributes);
        if decision.level == Level::None {
            return None;
        }
        let a = &facts.attributes;
        let event = Event {
            kind: "Event",
            api_version: "audit.k8s.io/v1",
            level: decision.level,
            audit_id: self.audit_id.clone(),
            stage: Stage::RequestReceived,
            request_uri: facts.request_uri.clone(),
            verb: a.verb.clone(),
            user: user.map(User::from).unwrap_or_default(),
            impersonated_user: None,
            source_ips: facts.source_ips.clone(),
            user_agent: facts.user_agent.clone(),
            object_ref: a.resource_request.then(|| ObjectReference {
                resource: a.resource.clone(),
                namespace: a.namespace.clone(),
                name: a.name.clone(),
                api_group: a.group.clone(),
                api_version: facts.version.clone(),
                subresource: a.subresource.clone(),
                ..ObjectReference::default()
            }),
            response_status: None,
            request_object: None,
            response_object: None,
            request_received_timestamp: facts.received,
            stage_timestamp: facts.received,
            annotations: Default::default(),
        };
        let received = (!decision.omits(Stage::RequestReceived)).then(|| event.clone());
        *self.active.lock().expect("lock") = Some(Active {
            event,
            decision,
            unauthenticated: false,
            panicked: false,
        });
        received
    }

    fn with_event(&self, f: impl FnOnce(&mut Event, &Decision)) {
        if let Some(active) = self.active.lock().expect("lock").as_mut() {
            f(&mut active.event, &active.decision);
        }
    }

    /// The user the request acts as (`Impersonate-*` headers).
    pub fn impersonated(&self, user: &UserInfo) {
        self.with_event(|ev, _| ev.impersonated_user = Some(User::from(user)));
    }

    /// The authorizer's answer, as upstream's `authorization.k8s.io/*` annotations.
    pub fn authorized(&self, allowed: bool, reason: &str) {
        self.with_event(|ev, _| {
            let decision = if allowed { "allow" } else { "forbid" };
            ev.annotations
                .insert("authorization.k8s.io/decision".into(), decision.into());
            ev.annotations
                .insert("authorization.k8s.io/reason".into(), reason.into());
        });
    }

    /// The decoded (JSON) request body. A created or replaced object completes `objectRef`
    /// (name, namespace, uid, resourceVersion where the path had none); at `Request` and above
    /// the body is `requestObject`, as upstream records created and updated objects, delete
    /// options and patches.
    pub fn request_body(&self, method: &Method, body: &[u8]) {
        if body.is_empty() {
            return;
        }
        self.with_event(|ev, decision| {
            if (*method == Method::POST || *method == Method::PUT)
                && let Some(r) = ev.object_ref.as_mut()
                && let Ok(obj) = serde_json::from_slice::<MetaOnly>(body)
            {
                let fill = |field: &mut String, value: Option<String>| {
                    if field.is_empty() {
                        *field = value.unwrap_or_default();
                    }
                };
                fill(&mut r.namespace, obj.metadata.namespace);
                fill(&mut r.name, obj.metadata.name);
                fill(&mut r.uid, obj.metadata.uid);
                fill(&mut r.resource_version, obj.metadata.resource_version);
            }
            if decision.level >= Level::Request {
                ev.request_object = event::object(body, decision.omit_managed_fields);
            }
        });
    }

    /// Runs the handler; a panic in it writes the `Panic` event, then goes on unwinding to the
    /// panic-recovery filter, as upstream's audit filter re-panics.
    pub async fn guard(&self, handler: impl Future<Output = Response<Body>>) -> Response<Body> {
        match AssertUnwindSafe(handler).catch_unwind().await {
            Ok(resp) => resp,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                let event = self
                    .active
                    .lock()
                    .expect("lock")
                    .as_mut()
                    .and_then(|active| {
                        active.panicked = true;
                        active.event.response_status = Some(ResponseStatus {
                            status: "Failure".into(),
                            message: format!("APIServer panic'd: {what}"),
                            reason: "InternalError".into(),
                            code: 500,
                            ..ResponseStatus::default()
                        });
                        stage(&active.event, &active.decision, Stage::Panic)
                    });
                if let (Some(event), Some((auditor, _))) = (event, &self.audit) {
                    auditor.sink.process(event).await;
                }
                std::panic::resume_unwind(panic)
            }
        }
    }

    /// Writes the response's events and sets its `Audit-Id` header.
    pub async fn finish(mut self, resp: Response<Body>) -> Response<Body> {
        let (mut parts, mut body) = resp.into_parts();
        if let Ok(v) = HeaderValue::from_str(&self.audit_id) {
            parts.headers.insert(AUDIT_ID, v);
        }
        let Some((auditor, facts)) = self.audit.take() else {
            return Response::from_parts(parts, body);
        };
        let Some(mut active) = self.active.lock().expect("lock").take() else {
            return Response::from_parts(parts, body);
        };
        if active.panicked {
            return Response::from_parts(parts, body);
        }
        if let Some(added) = parts.extensions.get::<super::Annotations>() {
            for (key, value) in &added.0 {
                active
                    .event
                    .annotations
                    .entry(key.clone())
                    .or_insert_with(|| value.clone());
            }
        }
        let code = parts.status.as_u16();
        let json = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let size = hyper::body::Body::size_hint(&body).exact();
        let record_object = active.decision.level >= Level::RequestResponse && facts.api_path;
        let mut status = ResponseStatus::default();
        if let Some(size) = size.filter(|n| json && (*n as usize <= STATUS_PROBE || record_object))
        {
            let bytes = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(never) => match never {},
            };
            if size as usize <= STATUS_PROBE
                && let Ok(value) = serde_json::from_slice::<Value>(&bytes)
                && value["kind"] == "Status"
            {
                status = ResponseStatus::from_status(&value);
            }
            if record_object {
                active.event.response_object =
                    event::object(&bytes, active.decision.omit_managed_fields);
            }
            body = crate::response::full(bytes);
        }
        status.code = code;
        active.event.response_status = Some(status);
        let emit = |stage_: Stage| stage(&active.event, &active.decision, stage_);
        if active.unauthenticated {
            if let Some(ev) = emit(Stage::ResponseStarted) {
                auditor.sink.process(ev).await;
            }
            return Response::from_parts(parts, body);
        }
        if !facts.long_running {
            if let Some(ev) = emit(Stage::ResponseComplete) {
                auditor.sink.process(ev).await;
            }
            return Response::from_parts(parts, body);
        }
        if let Some(ev) = emit(Stage::ResponseStarted) {
            auditor.sink.process(ev).await;
        }
        let completing = Completing {
            inner: body,
            pending: Some((auditor, active)),
        };
        Response::from_parts(parts, completing.boxed())
    }
}

/// A request dropped before it was answered (its client went away, or `--request-timeout`
/// expired) ends as upstream's handler that wrote nothing: "Connection closed early".
impl Drop for Tracker {
    fn drop(&mut self) {
        let Some((auditor, facts)) = &self.audit else {
            return;
        };
        let Some(mut active) = self.active.lock().ok().and_then(|mut a| a.take()) else {
            return;
        };
        if active.panicked {
            return;
        }
        active.event.response_status = Some(ResponseStatus {
            status: "Success".into(),
            message: "Connection closed early".into(),
            code: 200,
            ..ResponseStatus::default()
        });
        let mut stages = vec![Stage::ResponseComplete];
        if facts.long_running {
            stages.insert(0, Stage::ResponseStarted);
        }
        for s in stages {
            if let Some(ev) = stage(&active.event, &active.decision, s) {
                auditor.sink.process_now(ev);
            }
        }
    }
}

/// The event at `stage`, stamped now (a `RequestReceived` event carries the time the request
/// arrived); `None` when the policy omits the stage.
fn stage(ev: &Event, decision: &Decision, stage: Stage) -> Option<Event> {
    if decision.omits(stage) {
        return None;
    }
    let mut ev = ev.clone();
    ev.stage = stage;
    ev.stage_timestamp = if stage == Stage::RequestReceived {
        ev.request_received_timestamp
    } else {
        SystemTime::now()
    };
    Some(ev)
}

#[derive(serde::Deserialize)]
struct MetaOnly {
    #[serde(default)]
    metadata: Meta,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Meta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
}

/// A long-running response's body: `ResponseComplete` is written when it ends, or when it is
/// dropped because the client went away.
struct Completing {
    inner: Body,
    pending: Option<(Arc<Auditor>, Active)>,
}

impl Completing {
    fn complete(&mut self) {
        if let Some((auditor, active)) = self.pending.take()
            && let Some(ev) = stage(&active.event, &active.decision, Stage::ResponseComplete)
        {
            auditor.sink.process_now(ev);
        }
    }
}

impl hyper::body::Body for Completing {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.complete();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Completing {
    fn drop(&mut self) {
        self.complete();
    }
}

/// upstream's `utilnet.SourceIPs`: the `X-Forwarded-For` chain, then `X-Real-Ip` if not in it,
/// then the connection's address unless it is already last. A request made in this process
/// (the controllers) reads as from the loopback address, as a kube-controller-manager beside
/// kube-apiserver would.
fn source_ips(headers: &HeaderMap, peer: Option<IpAddr>) -> Vec<String> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let parse = |s: &str| s.trim().parse::<IpAddr>().ok().map(|ip| ip.to_canonical());
    let mut ips: Vec<IpAddr> = header("x-forwarded-for")
        .map(|v| v.split(',').filter_map(parse).collect())
        .unwrap_or_default();
    if let Some(ip) = header("x-real-ip").and_then(parse)
        && !ips.contains(&ip)
    {
        ips.push(ip);
    }
    let remote = peer
        .map(|p| p.to_canonical())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    if ips.last() != Some(&remote) {
        ips.push(remote);
    }
    ips.iter().map(IpAddr::to_string).collect()
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
