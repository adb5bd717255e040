//! Upstream's admission webhook metrics (`k8s.io/apiserver/pkg/admission/metrics`): the call
//! latency, the calls by answer, the rejections by cause and the calls that failed open.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use super::hook::{Hook, Operation};

/// How one call ended.
#[derive(Clone, Copy)]
pub enum Outcome {
    Allowed,
    /// Refused by the webhook, with the status code the client gets.
    Denied(u16),
    /// The call failed; failurePolicy Ignore let the request through.
    FailedOpen,
    /// The call failed; failurePolicy Fail refused the request.
    FailedClosed,
    /// Refused by vkube before the call (a dry run the webhook cannot take).
    Internal,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    name: String,
    operation: &'static str,
    rejected: &'static str,
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    name: String,
    operation: &'static str,
    rejected: &'static str,
    r#type: &'static str,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectionLabels {
    name: String,
    operation: &'static str,
    r#type: &'static str,
    error_type: &'static str,
    rejection_code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailOpenLabels {
    name: String,
    r#type: &'static str,
}

fn latency() -> Histogram {
    // Upstream's buckets for webhook admission latency.
    Histogram::new([0.005, 0.025, 0.1, 0.5, 1.0, 2.5, 10.0, 25.0])
}

pub struct Metrics {
    duration: Family<CallLabels, Histogram, fn() -> Histogram>,
    requests: Family<RequestLabels, Counter>,
    /// Upstream's names carry no `_total`, which prometheus-client adds to every counter; these
    /// two are gauges that only go up, so scrapers find them under upstream's names.
    rejections: Family<RejectionLabels, Gauge>,
    fail_open: Family<FailOpenLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            duration: Family::new_with_constructor(latency),
            requests: Family::default(),
            rejections: Family::default(),
            fail_open: Family::default(),
        }
    }
}

impl Metrics {
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "apiserver_admission_webhook_admission_duration_seconds",
            "Admission webhook latency in seconds, identified by name and broken out for each operation and API resource and type (validate or admit)",
            self.duration.clone(),
        );
        registry.register(
            "apiserver_admission_webhook_request",
            "Admission webhook request total, identified by name and broken out for each admission type (validating or mutating) and operation",
            self.requests.clone(),
        );
        registry.register(
            "apiserver_admission_webhook_rejection_count",
            "Admission webhook rejection count, identified by name and broken out for each admission type (validating or admit) and operation",
            self.rejections.clone(),
        );
        registry.register(
            "apiserver_admission_webhook_fail_open_count",
            "Admission webhook fail open count, identified by name and broken out for each admission type (validating or admit)",
            self.fail_open.clone(),
        );
    }

    pub fn observe(&self, hook: &Hook, op: Operation, outcome: Outcome, took: Duration) {
        let kind = if hook.mutating { "admit" } else { "validating" };
        let (rejected, code, rejection) = match outcome {
            Outcome::Allowed | Outcome::FailedOpen => (false, 200, None),
            Outcome::Denied(code) => (true, code, Some(("no_error", code))),
            // Upstream counts a failed call with the status of its error: 503 unless the webhook
            // answered with an error Status.
            Outcome::FailedClosed => (true, 503, Some(("calling_webhook_error", 503))),
            Outcome::Internal => (true, 0, Some(("apiserver_internal_error", 0))),
        };
        let rejected_label = if rejected { "true" } else { "false" };
        self.duration
            .get_or_create(&CallLabels {
                name: hook.name.clone(),
                operation: op.as_str(),
                rejected: rejected_label,
                r#type: kind,
            })
            .observe(took.as_secs_f64());
        self.requests
            .get_or_create(&RequestLabels {
                name: hook.name.clone(),
                operation: op.as_str(),
                rejected: rejected_label,
                r#type: kind,
                code,
            })
            .inc();
        if let Some((error_type, rejection_code)) = rejection {
            self.rejections
                .get_or_create(&RejectionLabels {
                    name: hook.name.clone(),
                    operation: op.as_str(),
                    r#type: kind,
                    error_type,
                    rejection_code,
                })
                .inc();
        }
        if let Outcome::FailedOpen = outcome {
            self.fail_open
                .get_or_create(&FailOpenLabels {
                    name: hook.name.clone(),
                    r#type: kind,
                })
                .inc();
        }
    }
}
