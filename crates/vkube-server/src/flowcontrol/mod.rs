//! API Priority and Fairness (flowcontrol.apiserver.k8s.io/v1), kube-apiserver 1.33's
//! replacement for the in-flight limits. Each authenticated request is classified by the first
//! FlowSchema (lowest `matchingPrecedence`, then name) whose rules match it into a priority
//! level and a flow (the schema's distinguisher: the user or the namespace); the answer carries
//! `X-Kubernetes-PF-FlowSchema-UID` and `X-Kubernetes-PF-PriorityLevel-UID`. Exempt levels are
//! not limited. A limited level gets `ceil(total * shares / sum of shares)` seats of the server's
//! total (`--max-requests-inflight` + `--max-mutating-requests-inflight`), with fair queuing
//! ([`queueset`]) or rejection; a refused request gets upstream's 429.
//!
//! The configuration comes from a watch-fed view of the objects ([`view`]), so every replica
//! classifies by the same objects, and the leader keeps the bootstrap objects and the
//! `Dangling` conditions ([`ensurer`]).
//!
//! Not done (upstream has it): borrowing between levels (`lendablePercent`,
//! `borrowingLimitPercent` are validated and stored, each level gets its nominal limit), seat
//! estimation (a list or a watch's start takes one seat, as any request), a growing
//! `Retry-After` (always 1), and the debug endpoints.

mod config;
pub mod ensurer;
mod queueset;
pub mod view;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http::{HeaderValue, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use vkube_auth::UserInfo;

pub use config::Config;
use queueset::{QueueSet, Seat};

use crate::filters::max_in_flight::{TooManyRequests, long_running};
use crate::request::RequestInfo;
use crate::response::Body;

pub const FLOW_SCHEMA_UID: &str = "x-kubernetes-pf-flowschema-uid";
pub const PRIORITY_LEVEL_UID: &str = "x-kubernetes-pf-prioritylevel-uid";

/// How long a request may wait in a queue when it has no deadline of its own (upstream waits a
/// quarter of the request's deadline: 15 s of the default minute).
const DEFAULT_WAIT: Duration = Duration::from_secs(15);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    priority_level: String,
    flow_schema: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectLabels {
    priority_level: String,
    flow_schema: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LevelLabels {
    priority_level: String,
}

#[derive(Default)]
struct Metrics {
    executing: Family<Labels, Gauge>,
    dispatched: Family<Labels, Counter>,
    rejected: Family<RejectLabels, Counter>,
    nominal: Family<LevelLabels, Gauge>,
}

/// The classification in force and each limited level's queue set.
struct State {
    config: Arc<Config>,
    sets: BTreeMap<String, Arc<QueueSet>>,
}

pub struct FlowControl {
    /// `--max-requests-inflight` + `--max-mutating-requests-inflight`; 0: no limit.
    total: usize,
    wait: Duration,
    state: RwLock<State>,
    metrics: Metrics,
}

/// What a request was classified as; holds its seat until the answer is written.
pub struct Ticket {
    schema_uid: String,
    level_uid: String,
    _seat: Option<Seat>,
    _executing: Option<ExecutingGuard>,
}

struct ExecutingGuard(Gauge);

impl Drop for ExecutingGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A refused request: upstream's 429, with the classification headers.
#[derive(Debug)]
pub struct Refused {
    schema_uid: String,
    level_uid: String,
}

fn set_headers(resp: &mut Response<Body>, schema_uid: &str, level_uid: &str) {
    let headers = resp.headers_mut();
    for (name, uid) in [
        (FLOW_SCHEMA_UID, schema_uid),
        (PRIORITY_LEVEL_UID, level_uid),
    ] {
        if let Ok(v) = HeaderValue::from_str(uid) {
            headers.insert(name, v);
        }
    }
}

impl Ticket {
    /// Adds the classification headers to the answer.
    pub fn decorate(&self, mut resp: Response<Body>) -> Response<Body> {
        set_headers(&mut resp, &self.schema_uid, &self.level_uid);
        resp
    }
}

impl Refused {
    pub fn response(self) -> Response<Body> {
        let mut resp = TooManyRequests.response();
        set_headers(&mut resp, &self.schema_uid, &self.level_uid);
        resp
    }
}

/// The flow's hash: the schema's name and the distinguisher, as upstream's `hashFlowID`.
fn flow_hash(schema: &str, distinguisher: &str) -> u64 {
    let mut h = DefaultHasher::new();
    schema.hash(&mut h);
    0u8.hash(&mut h);
    distinguisher.hash(&mut h);
    h.finish()
}

impl FlowControl {
    pub fn new(total: usize, request_timeout: Option<Duration>) -> FlowControl {
        let fc = FlowControl {
            total,
            wait: request_timeout.map_or(DEFAULT_WAIT, |t| t / 4),
            state: RwLock::new(State {
                config: Arc::default(),
                sets: BTreeMap::new(),
            }),
            metrics: Metrics::default(),
        };
        fc.configure(Config::build(&[], &[]));
        fc
    }

    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        let m = &self.metrics;
        registry.register(
            "apiserver_flowcontrol_current_executing_requests",
            "Number of requests in initial (for a WATCH) or any (for a non-WATCH) execution stage in the API Priority and Fairness subsystem",
            m.executing.clone(),
        );
        registry.register(
            "apiserver_flowcontrol_dispatched_requests",
            "Number of requests executed by API Priority and Fairness subsystem",
            m.dispatched.clone(),
        );
        registry.register(
            "apiserver_flowcontrol_rejected_requests",
            "Number of requests rejected by API Priority and Fairness subsystem",
            m.rejected.clone(),
        );
        registry.register(
            "apiserver_flowcontrol_nominal_limit_seats",
            "Nominal number of execution seats configured for each priority level",
            m.nominal.clone(),
        );
    }

    /// Puts a new configuration in force. A level whose queuing changed gets a new queue set
    /// (requests in the old one finish there); one whose limit changed keeps its queues.
    pub fn configure(&self, config: Config) {
        let limits = config.limits(self.total);
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let mut sets = BTreeMap::new();
        for (name, level) in &config.levels {
            let Some(response) = &level.limited else {
                continue;
            };
            // Without borrowing, a level of 0 shares would never run anything.
            let limit = limits.get(name).copied().unwrap_or(0).max(1);
            self.metrics
                .nominal
                .get_or_create(&LevelLabels {
                    priority_level: name.clone(),
                })
                .set(limit as i64);
            let set = match state.sets.get(name) {
                Some(old) if old.response() == response => {
                    old.set_limit(limit);
                    old.clone()
                }
                _ => QueueSet::new(response.clone(), limit),
            };
            sets.insert(name.clone(), set);
        }
        *state = State {
            config: Arc::new(config),
            sets,
        };
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .config
            .clone()
    }

    /// Classifies the request and waits for a seat when its level is limited. Long-running
    /// requests other than watches are not classified (upstream serves them untracked);
    /// watches are classified but hold no seat.
    pub async fn admit(
        &self,
        info: &RequestInfo,
        user: &UserInfo,
        path: &str,
    ) -> Result<Option<Ticket>, Refused> {
        let watch = info.verb == "watch";
        if long_running(info) && !watch {
            return Ok(None);
        }
        let (schema, level, set) = {
            let state = self.state.read().unwrap_or_else(|e| e.into_inner());
            let Some((schema, level)) = state.config.classify(user, info, path) else {
                return Ok(None);
            };
            let set = state.sets.get(&level.name).cloned();
            (schema, level, set)
        };
        let labels = Labels {
            priority_level: level.name.clone(),
            flow_schema: schema.name.clone(),
        };
        let mut ticket = Ticket {
            schema_uid: schema.uid.clone(),
            level_uid: level.uid.clone(),
            _seat: None,
            _executing: None,
        };
        let limited = set.filter(|_| self.total > 0 && !watch && level.limited.is_some());
        if let Some(set) = limited {
            let flow = flow_hash(&schema.name, &schema.distinguish(user, info));
            match set.acquire(flow, self.wait).await {
                Ok(seat) => ticket._seat = Some(seat),
                Err(why) => {
                    self.metrics
                        .rejected
                        .get_or_create(&RejectLabels {
                            priority_level: labels.priority_level,
                            flow_schema: labels.flow_schema,
                            reason: why.reason().into(),
                        })
                        .inc();
                    return Err(Refused {
                        schema_uid: ticket.schema_uid,
                        level_uid: ticket.level_uid,
                    });
                }
            }
        }
        self.metrics.dispatched.get_or_create(&labels).inc();
        let gauge = self.metrics.executing.get_or_create(&labels).clone();
        gauge.inc();
        ticket._executing = Some(ExecutingGuard(gauge));
        Ok(Some(ticket))
    }

    /// (executing, waiting) of a limited level, for tests and debugging.
    #[cfg(test)]
    fn counts(&self, level: &str) -> (usize, usize) {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state.sets.get(level).map_or((0, 0), |s| s.counts())
    }
}
