//! The filter chain, in the order a request meets it: kube-apiserver's
//! `DefaultBuildHandlerChain`, read from the outside in. [`crate::router::Api`] calls each step
//! in this order; the steps that are filters of their own live in this folder.
//!
//! 0. [`limits`]: header sizes, set on the connection (hyper answers 431); JSON depth, where
//!    bodies are parsed.
//! 1. [`panic_recovery`]: a handler that panics answers 500 and the process carries on.
//! 2. Request info: [`crate::request::RequestInfo::parse`]; then [`timeout`]:
//!    `--request-timeout` (504), applied where connections are served, around the rest of the
//!    chain (in-process calls have none); watches get `--min-request-timeout`.
//! 3. Authentication: [`crate::authn::authenticate`]; a failure is audited with no user.
//! 4. Audit ([`crate::audit`]): the policy's level for the authenticated user and the
//!    `RequestReceived` event; the later steps add to the event, and the answer writes
//!    `ResponseStarted`/`ResponseComplete` (or `Panic`). The `Audit-Id` response header is
//!    set outside everything, as upstream's `WithAuditInit`.
//! 5. Impersonation: [`crate::authn::impersonate`].
//! 6. API Priority and Fairness ([`crate::flowcontrol`]) over the server's total of
//!    `--max-requests-inflight` + `--max-mutating-requests-inflight`; with
//!    `--enable-priority-and-fairness=false`, [`max_in_flight`]'s two pools instead.
//! 7. Authorization: [`crate::authz::authorize`].

pub mod limits;
pub mod max_in_flight;
pub mod panic_recovery;
pub mod timeout;

#[cfg(test)]
mod decode_properties;

pub use max_in_flight::{Limits, MaxInFlight};
pub use panic_recovery::PanicRecovery;
pub use timeout::Timeouts;

/// The state of the filters that keep some: the in-flight counts and the counters they report.
pub struct Filters {
    pub panics: PanicRecovery,
    pub in_flight: MaxInFlight,
    /// `None` with `--enable-priority-and-fairness=false`.
    pub flow_control: Option<std::sync::Arc<crate::flowcontrol::FlowControl>>,
    pub timeouts: Timeouts,
}

impl Filters {
    pub fn new(limits: Limits, timeouts: Timeouts) -> Filters {
        let total = limits.max_requests_inflight + limits.max_mutating_requests_inflight;
        let flow_control = limits.priority_and_fairness.then(|| {
            std::sync::Arc::new(crate::flowcontrol::FlowControl::new(
                total,
                Some(timeouts.request_timeout).filter(|t| !t.is_zero()),
            ))
        });
        Filters {
            panics: PanicRecovery::default(),
            in_flight: MaxInFlight::new(limits),
            flow_control,
            timeouts,
        }
    }

    /// Adds the filters' metrics to `/metrics`.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        self.panics.register(registry);
        self.in_flight.register(registry);
        if let Some(flow_control) = &self.flow_control {
            flow_control.register(registry);
        }
    }

    /// Step 6: flow control (its classification goes to `ticket`, for the answer's headers),
    /// or the in-flight pools. Holds the request's seat or slot until dropped; the 429 when
    /// there is none.
    pub async fn admit(
        &self,
        info: &crate::request::RequestInfo,
        user: &vkube_auth::UserInfo,
        path: &str,
        ticket: &mut Option<crate::flowcontrol::Ticket>,
    ) -> Result<Option<max_in_flight::Slot>, http::Response<crate::response::Body>> {
        let Some(flow_control) = &self.flow_control else {
            return self.in_flight.admit(info, user).map_err(|e| e.response());
        };
        *ticket = flow_control
            .admit(info, user, path)
            .await
            .map_err(|refused| refused.response())?;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    //! The two filters around a real HTTP/1.1 connection, as the router runs them.

    use super::*;
    use std::sync::Arc;

    use http::{Request, Response};
    use http_body_util::{BodyExt, Empty};
    use hyper::body::{Bytes, Incoming};
    use vkube_auth::UserInfo;

    use crate::request::{RequestInfo, query};
    use crate::response::{self, Body};

    /// Serves one connection: `/panic` panics, `/slow` holds its in-flight slot until `release`
    /// is notified, anything else answers 200.
    async fn handle(
        filters: Arc<Filters>,
        release: Arc<tokio::sync::Notify>,
        req: Request<Incoming>,
    ) -> Response<Body> {
        let path = req.uri().path().to_string();
        let info = RequestInfo::parse(req.method(), &path, &query(req.uri().query()));
        let method = req.method().clone();
        let f = filters.clone();
        let logged = path.clone();
        filters
            .panics
            .recover(&method, &logged, async move {
                let user = UserInfo {
                    username: "alice".into(),
                    ..UserInfo::default()
                };
                let _slot = match f.in_flight.admit(&info, &user) {
                    Ok(slot) => slot,
                    Err(refused) => return refused.response(),
                };
                if path.ends_with("/panic") {
                    panic!("a handler bug");
                }
                if path.ends_with("/slow") {
                    release.notified().await;
                }
                response::text(200, "ok")
            })
            .await
    }

    async fn server(filters: Arc<Filters>, release: Arc<tokio::sync::Notify>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let (filters, release) = (filters.clone(), release.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let (filters, release) = (filters.clone(), release.clone());
                        async move {
                            Ok::<_, std::convert::Infallible>(handle(filters, release, req).await)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        addr
    }

    type Client = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

    async fn connect(addr: &str) -> Client {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(conn);
        sender
    }

    async fn get(client: &mut Client, path: &str) -> (u16, http::HeaderMap, String) {
        client.ready().await.unwrap();
        let resp = client
            .send_request(
                Request::get(path)
                    .header("host", "vkube")
                    .body(Empty::new())
                    .unwrap(),
            )
            .await
            .expect("the server answers");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (
            parts.status.as_u16(),
            parts.headers,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    #[tokio::test]
    async fn a_panic_is_a_500_and_the_connection_carries_on() {
        let filters = Arc::new(Filters::new(Limits::default(), Timeouts::default()));
        let addr = server(filters.clone(), Arc::default()).await;
        let mut client = connect(&addr).await;
        let (code, _, body) = get(&mut client, "/api/v1/namespaces/default/pods/panic").await;
        assert_eq!(code, 500);
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["reason"], "InternalError");
        assert_eq!(
            status["message"],
            "an error on the server (\"This request caused apiserver to panic. Look in the logs for details.\") has prevented the request from succeeding"
        );
        assert_eq!(filters.panics.count(), 1);
        // The same keep-alive connection serves the next request.
        let (code, _, _) = get(&mut client, "/api/v1/namespaces").await;
        assert_eq!(code, 200);
    }

    #[tokio::test]
    async fn a_full_pool_answers_429_and_watches_pass() {
        let filters = Arc::new(Filters::new(
            Limits {
                max_requests_inflight: 1,
                max_mutating_requests_inflight: 1,
                priority_and_fairness: false,
            },
            Timeouts::default(),
        ));
        let release = Arc::new(tokio::sync::Notify::new());
        let addr = server(filters.clone(), release.clone()).await;
        let mut slow = connect(&addr).await;
        let held =
            tokio::spawn(
                async move { get(&mut slow, "/api/v1/namespaces/default/pods/slow").await },
            );
        // Wait until the slow request holds the one read-only slot.
        while filters.in_flight.current().0 == 0 {
            tokio::task::yield_now().await;
        }
        let mut client = connect(&addr).await;
        let (code, headers, body) = get(&mut client, "/api/v1/namespaces/default/pods").await;
        assert_eq!(code, 429);
        assert_eq!(headers["retry-after"], "1");
        assert_eq!(body, "Too many requests, please try again later.\n");
        let (code, _, _) = get(&mut client, "/api/v1/namespaces/default/pods?watch=true").await;
        assert_eq!(code, 200, "a watch is not counted");
        release.notify_one();
        assert_eq!(held.await.unwrap().0, 200);
        let (code, _, _) = get(&mut client, "/api/v1/namespaces/default/pods").await;
        assert_eq!(code, 200, "the slot is free again");
    }
}
