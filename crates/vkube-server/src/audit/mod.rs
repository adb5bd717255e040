//! Audit logging, as kube-apiserver's: `--audit-policy-file` decides per request how much is
//! recorded ([`policy`]), each request builds `audit.k8s.io/v1` Events at its stages
//! ([`request`]), and the log backend writes them as JSON lines to `--audit-log-path` with
//! lumberjack's rotation ([`writer`]). Each replica logs the requests it served.
//!
//! Where vkube differs on purpose: `requestObject` is the request's JSON body as sent (after
//! YAML or protobuf became JSON), where upstream re-encodes the decoded object (adding defaults
//! such as `creationTimestamp: null`); the `ResponseComplete` event of a request that is not
//! long-running is written when the handler has answered, just before its body is sent.

pub mod event;
pub mod policy;
mod request;
pub mod writer;

pub use policy::{Level, Policy, PolicyError, Stage};
pub use request::{AUDIT_ID, Peer, Tracker};
pub use writer::{LogOptions, Mode};

/// Audit annotations a handler adds to its request's event (admission policies'), carried to
/// the tracker in the response's extensions.
#[derive(Clone, Debug)]
pub struct Annotations(pub Vec<(String, String)>);

/// The audit flags, read and checked: the policy is loaded when the flags are read, so a bad
/// policy file refuses startup before anything else starts.
#[derive(Clone, Debug)]
pub struct AuditOptions {
    pub policy: Policy,
    pub log: LogOptions,
}

/// The policy and the log writer of a running server.
pub struct Auditor {
    policy: Policy,
    sink: writer::Sink,
}

#[derive(Debug, thiserror::Error)]
#[error("opening the audit log {path}: {err}")]
pub struct AuditError {
    path: String,
    err: std::io::Error,
}

impl Auditor {
    /// Opens the log and starts its writer.
    pub fn start(options: &AuditOptions) -> Result<Auditor, AuditError> {
        let sink = writer::Sink::start(&options.log).map_err(|err| AuditError {
            path: options.log.path.display().to_string(),
            err,
        })?;
        Ok(Auditor {
            policy: options.policy.clone(),
            sink,
        })
    }
}
