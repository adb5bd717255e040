//! Authentication metrics, with upstream's names and labels, plus the fingerprint of the
//! effective configuration that the HA checks compare across replicas.

use std::time::Duration;

use aws_lc_rs::digest;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JwtLabels {
    pub result: String,
    pub jwt_issuer_hash: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub status: String,
    pub apiserver_id_hash: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FingerprintLabel {
    pub fingerprint: String,
}

fn histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

pub struct AuthMetrics {
    pub attempts: Family<ResultLabel, Counter>,
    pub duration: Family<ResultLabel, Histogram, fn() -> Histogram>,
    pub jwt_latency: Family<JwtLabels, Histogram, fn() -> Histogram>,
    pub reloads: Family<ReloadLabels, Counter>,
    pub reload_last: Family<ReloadLabels, Gauge>,
    pub config_info: Family<FingerprintLabel, Gauge>,
    /// `sha256:<hex>` of this replica's id, upstream's `apiserver_id_hash`.
    pub apiserver_id_hash: String,
}

/// `sha256:<hex>`, how upstream labels issuers and servers without naming them.
pub fn hash_label(text: &str) -> String {
    let d = digest::digest(&digest::SHA256, text.as_bytes());
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

impl AuthMetrics {
    pub fn new(replica_id: &str) -> AuthMetrics {
        AuthMetrics {
            attempts: Family::default(),
            duration: Family::new_with_constructor(histogram),
            jwt_latency: Family::new_with_constructor(histogram),
            reloads: Family::default(),
            reload_last: Family::default(),
            config_info: Family::default(),
            apiserver_id_hash: hash_label(replica_id),
        }
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "authentication_attempts",
            "Counter of authenticated attempts.",
            self.attempts.clone(),
        );
        registry.register(
            "authentication_duration_seconds",
            "Authentication duration in seconds broken out by result.",
            self.duration.clone(),
        );
        registry.register(
            "apiserver_authentication_jwt_authenticator_latency_seconds",
            "Latency of jwt authentication operations in seconds, by result and issuer hash.",
            self.jwt_latency.clone(),
        );
        registry.register(
            "apiserver_authentication_config_controller_automatic_reloads",
            "Total number of automatic reloads of authentication configuration split by status and apiserver identity.",
            self.reloads.clone(),
        );
        registry.register(
            "apiserver_authentication_config_controller_automatic_reload_last_timestamp_seconds",
            "Timestamp of the last automatic reload of authentication configuration split by status and apiserver identity.",
            self.reload_last.clone(),
        );
        registry.register(
            "vkube_authentication_config_info",
            "The fingerprint of this replica's effective authentication configuration (value 1).",
            self.config_info.clone(),
        );
    }

    pub fn attempt(&self, result: &str, took: Duration) {
        let label = ResultLabel {
            result: result.into(),
        };
        self.attempts.get_or_create(&label).inc();
        self.duration
            .get_or_create(&label)
            .observe(took.as_secs_f64());
    }

    pub fn jwt(&self, issuer: &str, ok: bool, took: Duration) {
        let labels = JwtLabels {
            result: if ok { "success" } else { "failure" }.into(),
            jwt_issuer_hash: hash_label(issuer),
        };
        self.jwt_latency
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    pub fn reload(&self, ok: bool) {
        let labels = ReloadLabels {
            status: if ok { "success" } else { "failure" }.into(),
            apiserver_id_hash: self.apiserver_id_hash.clone(),
        };
        self.reloads.get_or_create(&labels).inc();
        self.reload_last
            .get_or_create(&labels)
            .set(crate::unix_now());
    }

    /// Publishes the current fingerprint (and only it).
    pub fn set_fingerprint(&self, fingerprint: &str) {
        self.config_info.clear();
        self.config_info
            .get_or_create(&FingerprintLabel {
                fingerprint: fingerprint.into(),
            })
            .set(1);
    }
}
