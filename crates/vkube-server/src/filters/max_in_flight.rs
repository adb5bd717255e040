//! In-flight limits, as kube-apiserver's `WithMaxInFlightLimit`: two pools, one for read-only
//! requests (`--max-requests-inflight`, 400) and one for mutating ones
//! (`--max-mutating-requests-inflight`, 200). A request that finds its pool full is answered at
//! once with upstream's 429 — plain text, `Retry-After: 1`, which client-go retries on — never
//! queued. Long-running requests (watches, and the kubelet subresources: exec, attach, log,
//! portforward, proxy) hold no slot, since each would hold it for its whole life. A full pool
//! still serves `system:masters`, as upstream: an administrator must always get an answer.
//!
//! Upstream runs this after impersonation, so the limit and the `system:masters` exception
//! apply to the impersonated user.

use std::sync::Arc;

use http::{HeaderValue, Response, header};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use vkube_auth::UserInfo;

use crate::request::RequestInfo;
use crate::response::{self, Body};

/// The limits; 0 means no limit, as upstream's flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_requests_inflight: usize,
    pub max_mutating_requests_inflight: usize,
    /// `--enable-priority-and-fairness`: API Priority and Fairness
    /// ([`crate::flowcontrol`]) over the sum of the two, instead of these two pools.
    pub priority_and_fairness: bool,
}

impl Default for Limits {
    /// kube-apiserver's defaults.
    fn default() -> Self {
        Limits {
            max_requests_inflight: 400,
            max_mutating_requests_inflight: 200,
            priority_and_fairness: true,
        }
    }
}

/// Upstream's body and `Retry-After` for a refused request.
pub const TOO_MANY: &str = "Too many requests, please try again later.";
const RETRY_AFTER: &str = "1";

/// Verbs that do not change anything (upstream's `nonMutatingRequestVerbs`).
const READ_ONLY_VERBS: &[&str] = &["get", "list", "watch"];
/// Upstream's long-running check (`BasicLongRunningRequestCheck`): these verbs ...
const LONG_RUNNING_VERBS: &[&str] = &["watch", "proxy"];
/// ... and these subresources.
const LONG_RUNNING_SUBRESOURCES: &[&str] = &["attach", "exec", "proxy", "log", "portforward"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    request_kind: &'static str,
}

struct Pool {
    slots: Arc<Semaphore>,
    kind: &'static str,
}

pub struct MaxInFlight {
    read_only: Option<Pool>,
    mutating: Option<Pool>,
    /// Upstream's `apiserver_current_inflight_requests`.
    current: Family<KindLabels, Gauge>,
    /// Upstream's `apiserver_dropped_requests_total`.
    dropped: Family<KindLabels, Counter>,
}

/// A request's slot in its pool, freed when dropped (when the handler has answered).
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    gauge: Gauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Whether upstream would let `info` skip the limits: a request that stays open.
pub fn long_running(info: &RequestInfo) -> bool {
    LONG_RUNNING_VERBS.contains(&info.verb.as_str())
        || LONG_RUNNING_SUBRESOURCES.contains(&info.subresource.as_str())
}

impl MaxInFlight {
    pub fn new(limits: Limits) -> MaxInFlight {
        let pool = |size: usize, kind| {
            (size > 0).then(|| Pool {
                slots: Arc::new(Semaphore::new(size)),
                kind,
            })
        };
        MaxInFlight {
            read_only: pool(limits.max_requests_inflight, "readOnly"),
            mutating: pool(limits.max_mutating_requests_inflight, "mutating"),
            current: Family::default(),
            dropped: Family::default(),
        }
    }

    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "apiserver_current_inflight_requests",
            "Requests holding an in-flight slot now, per request kind (upstream reports the maximum of the last second)",
            self.current.clone(),
        );
        registry.register(
            "apiserver_dropped_requests",
            "Number of requests dropped with 'Try again later' response",
            self.dropped.clone(),
        );
    }

    /// Requests holding a slot now: (read-only, mutating).
    pub fn current(&self) -> (i64, i64) {
        let of = |kind| {
            self.current
                .get_or_create(&KindLabels { request_kind: kind })
                .get()
        };
        (of("readOnly"), of("mutating"))
    }

    /// A slot for the request, `None` when it needs none, or [`TooManyRequests`] when its pool
    /// is full.
    pub fn admit(
        &self,
        info: &RequestInfo,
        user: &UserInfo,
    ) -> Result<Option<Slot>, TooManyRequests> {
        if long_running(info) {
            return Ok(None);
        }
        let pool = if READ_ONLY_VERBS.contains(&info.verb.as_str()) {
            &self.read_only
        } else {
            &self.mutating
        };
        let Some(pool) = pool else {
            return Ok(None);
        };
        let labels = KindLabels {
            request_kind: pool.kind,
        };
        if let Ok(permit) = pool.slots.clone().try_acquire_owned() {
            let gauge = self.current.get_or_create(&labels).clone();
            gauge.inc();
            return Ok(Some(Slot {
                _permit: permit,
                gauge,
            }));
        }
        if user.groups.iter().any(|g| g == vkube_auth::MASTERS) {
            return Ok(None);
        }
        self.dropped.get_or_create(&labels).inc();
        Err(TooManyRequests)
    }
}

/// A request refused because its pool is full.
#[derive(Debug)]
pub struct TooManyRequests;

impl TooManyRequests {
    /// Upstream's answer (`http.Error`): text, a newline, `nosniff`, and `Retry-After: 1`.
    pub fn response(self) -> Response<Body> {
        let mut resp = response::text(429, format!("{TOO_MANY}\n"));
        let headers = resp.headers_mut();
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER));
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::query;

    fn info(method: &str, path: &str) -> RequestInfo {
        let (path, q) = path.split_once('?').unwrap_or((path, ""));
        RequestInfo::parse(&method.parse().unwrap(), path, &query(Some(q)))
    }

    fn user(groups: &[&str]) -> UserInfo {
        UserInfo {
            username: "u".into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..UserInfo::default()
        }
    }

    #[test]
    fn each_pool_refuses_past_its_limit_and_long_running_requests_hold_no_slot() {
        let limits = MaxInFlight::new(Limits {
            max_requests_inflight: 2,
            max_mutating_requests_inflight: 1,
            priority_and_fairness: false,
        });
        let alice = user(&["system:authenticated"]);
        let get = info("GET", "/api/v1/namespaces/default/pods/p");
        let list = info("GET", "/api/v1/pods");
        let create = info("POST", "/api/v1/namespaces/default/pods");
        let a = limits.admit(&get, &alice).unwrap();
        let b = limits.admit(&list, &alice).unwrap();
        assert!(a.is_some() && b.is_some());
        assert_eq!(limits.current(), (2, 0));
        let refused = limits
            .admit(&get, &alice)
            .err()
            .expect("the read-only pool is full")
            .response();
        assert_eq!(refused.status(), 429);
        assert_eq!(refused.headers()["retry-after"], "1");
        assert_eq!(
            refused.headers()["content-type"],
            "text/plain; charset=utf-8"
        );
        // The mutating pool is apart.
        let c = limits.admit(&create, &alice).unwrap();
        assert!(c.is_some());
        assert!(
            limits
                .admit(&info("DELETE", "/api/v1/namespaces/default/pods/p"), &alice)
                .is_err()
        );
        // Long-running requests pass whatever the pools hold.
        for exempt in [
            "/api/v1/pods?watch=true",
            "/api/v1/watch/namespaces/default/pods",
            "/api/v1/namespaces/default/pods/p/log",
            "/api/v1/namespaces/default/pods/p/exec?command=sh",
            "/api/v1/namespaces/default/pods/p/portforward",
        ] {
            let method = if exempt.contains("exec") {
                "POST"
            } else {
                "GET"
            };
            assert!(
                matches!(limits.admit(&info(method, exempt), &alice), Ok(None)),
                "{exempt}"
            );
        }
        // system:masters is served when the pool is full.
        assert!(matches!(
            limits.admit(&get, &user(&["system:masters"])),
            Ok(None)
        ));
        drop(a);
        assert_eq!(limits.current(), (1, 1));
        assert!(
            limits.admit(&get, &alice).unwrap().is_some(),
            "a freed slot is reused"
        );
        let dropped = |kind| {
            limits
                .dropped
                .get_or_create(&KindLabels { request_kind: kind })
                .get()
        };
        assert_eq!((dropped("readOnly"), dropped("mutating")), (1, 1));
    }

    #[test]
    fn zero_means_no_limit() {
        let limits = MaxInFlight::new(Limits {
            max_requests_inflight: 0,
            max_mutating_requests_inflight: 0,
            priority_and_fairness: false,
        });
        let alice = user(&[]);
        for _ in 0..1000 {
            assert!(matches!(
                limits.admit(&info("GET", "/api/v1/pods"), &alice),
                Ok(None)
            ));
        }
    }
}
