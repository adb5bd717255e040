//! `/metrics` in Prometheus text format: upstream's request metrics (`apiserver_request_total`,
//! `apiserver_request_duration_seconds`) and the authentication metrics of vkube-auth.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::request::RequestInfo;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    verb: String,
    dry_run: String,
    group: String,
    version: String,
    resource: String,
    subresource: String,
    scope: String,
    component: String,
}

/// The duration labels and the response code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    #[prometheus(flatten)]
    base: DurationLabels,
    code: String,
}

fn histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

pub struct Metrics {
    registry: Mutex<Registry>,
    leader: prometheus_client::metrics::gauge::Gauge,
    divergent: prometheus_client::metrics::gauge::Gauge,
    lag: prometheus_client::metrics::gauge::Gauge,
    requests: Family<RequestLabels, Counter>,
    durations: Family<DurationLabels, Histogram, fn() -> Histogram>,
}

/// Upstream's metric verb: LIST and WATCH apart from GET, and the HTTP method otherwise.
fn metric_verb(info: &RequestInfo, method: &http::Method) -> String {
    match info.verb.as_str() {
        "list" => "LIST".into(),
        "watch" => "WATCH".into(),
        _ if info.is_resource && !info.resource.is_empty() && *method == http::Method::POST => {
            "POST".into()
        }
        _ => method.as_str().to_uppercase(),
    }
}

impl Metrics {
    pub fn new(mut registry: Registry) -> Metrics {
        let requests = Family::<RequestLabels, Counter>::default();
        let durations =
            Family::<DurationLabels, Histogram, fn() -> Histogram>::new_with_constructor(histogram);
        registry.register(
            "apiserver_request",
            "Counter of apiserver requests broken out for each verb, dry run value, group, version, resource, scope, component, and HTTP response code.",
            requests.clone(),
        );
        registry.register(
            "apiserver_request_duration_seconds",
            "Response latency distribution in seconds for each verb, dry run value, group, version, resource, subresource, scope and component.",
            durations.clone(),
        );
        let leader = prometheus_client::metrics::gauge::Gauge::default();
        registry.register(
            "vkube_leader",
            "1 while this replica holds the controllers' lease.",
            leader.clone(),
        );
        let divergent = prometheus_client::metrics::gauge::Gauge::default();
        registry.register(
            "vkube_replica_config_divergent",
            "1 while this replica's authentication configuration differs from the one most replicas share.",
            divergent.clone(),
        );
        let lag = prometheus_client::metrics::gauge::Gauge::default();
        registry.register(
            "vkube_cache_revision_lag",
            "Store revisions this replica's watch-fed view (RBAC, hub) is behind the store, read at scrape time.",
            lag.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            leader,
            divergent,
            lag,
            requests,
            durations,
        }
    }

    pub fn observe(
        &self,
        info: &RequestInfo,
        method: &http::Method,
        dry_run: bool,
        code: u16,
        took: Duration,
    ) {
        let resource = info.is_resource && !info.resource.is_empty();
        let scope = match (resource, info.namespace.is_empty(), info.name.is_empty()) {
            (false, _, _) => "",
            (true, _, false) => "resource",
            (true, false, true) => "namespace",
            (true, true, true) => "cluster",
        };
        let d = DurationLabels {
            verb: metric_verb(info, method),
            dry_run: if dry_run { "All".into() } else { String::new() },
            group: info.group.clone(),
            version: info.version.clone(),
            resource: info.resource.clone(),
            subresource: info.subresource.clone(),
            scope: scope.into(),
            component: "apiserver".into(),
        };
        self.durations.get_or_create(&d).observe(took.as_secs_f64());
        let r = RequestLabels {
            base: d,
            code: code.to_string(),
        };
        self.requests.get_or_create(&r).inc();
    }

    pub fn set_lag(&self, revisions: i64) {
        self.lag.set(revisions.max(0));
    }

    pub fn set_divergent(&self, divergent: bool) {
        self.divergent.set(i64::from(divergent));
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().expect("lock");
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}
