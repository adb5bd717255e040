//! Panic recovery, the outermost filter (upstream's `WithPanicRecovery`): a handler that panics
//! answers 500 and is counted, and the connection and the process carry on. Without it a panic
//! ends the connection's task, and with it every HTTP/2 stream multiplexed on the connection.
//!
//! Upstream writes the plain text "This request caused apiserver to panic. Look in the logs for
//! details.", which client-go turns into the `InternalError` error below. vkube answers with
//! that `Status` itself, as every error body of the API is a `Status` (DESIGN, API conventions):
//! kubectl prints the same line either way.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use http::{Method, Response};
use prometheus_client::metrics::counter::Counter;
use vkube_api::Status;

use crate::response::{self, Body};

/// Upstream's text for a request that made the server panic.
pub const PANIC_TEXT: &str =
    "This request caused apiserver to panic. Look in the logs for details.";

#[derive(Default)]
pub struct PanicRecovery {
    panics: Counter,
}

/// The `Status` client-go makes of upstream's answer to a panic (`NewGenericServerResponse`
/// for a 500 whose body is text).
pub fn panic_status() -> Status {
    let mut status = Status::internal(PANIC_TEXT);
    status.message = format!(
        "an error on the server ({PANIC_TEXT:?}) has prevented the request from succeeding"
    );
    if let Some(details) = status.details.as_mut() {
        for cause in &mut details.causes {
            cause.reason = "UnexpectedServerResponse".into();
        }
    }
    status
}

impl PanicRecovery {
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "vkube_request_panics",
            "Requests whose handler panicked; each was answered 500",
            self.panics.clone(),
        );
    }

    /// How many requests panicked so far.
    pub fn count(&self) -> u64 {
        self.panics.get()
    }

    /// Runs `handler`; a panic in it becomes a 500 `Status`.
    pub async fn recover(
        &self,
        method: &Method,
        path: &str,
        handler: impl Future<Output = Response<Body>>,
    ) -> Response<Body> {
        // The handler's state is dropped with the panic, never used again: unwind safety holds.
        match AssertUnwindSafe(handler).catch_unwind().await {
            Ok(resp) => resp,
            Err(panic) => {
                self.panics.inc();
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                // The path, not the query: a query may carry what a log must not.
                tracing::error!(%method, path, panic = %what, "apiserver panic'd");
                response::status(&panic_status())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_handler_answers_500_and_is_counted() {
        let recovery = PanicRecovery::default();
        let resp = recovery
            .recover(&Method::GET, "/api/v1/pods", async {
                if recovery.count() == 0 {
                    panic!("index out of bounds");
                }
                response::text(200, "ok")
            })
            .await;
        assert_eq!(resp.status(), 500);
        assert_eq!(recovery.count(), 1);
        let ok = recovery
            .recover(&Method::GET, "/api/v1/pods", async {
                response::text(200, "ok")
            })
            .await;
        assert_eq!(ok.status(), 200);
        assert_eq!(recovery.count(), 1, "only panics are counted");
    }

    #[test]
    fn the_status_is_the_one_client_go_makes_of_upstreams_answer() {
        let json = panic_status().to_json();
        assert_eq!(json["code"], 500);
        assert_eq!(json["reason"], "InternalError");
        assert_eq!(
            json["message"],
            "an error on the server (\"This request caused apiserver to panic. Look in the logs for details.\") has prevented the request from succeeding"
        );
        assert_eq!(
            json["details"]["causes"][0]["reason"],
            "UnexpectedServerResponse"
        );
        assert_eq!(json["details"]["causes"][0]["message"], PANIC_TEXT);
    }
}
