//! Several etcd endpoints, the first preferred. etcd-client balances a request over all of its
//! endpoints and keeps sending some to a member that is down, so each endpoint gets a client of
//! its own here: requests go to the active endpoint and move on to the next one when it cannot be
//! reached, and a probe moves them back to the first once it answers again. With embedded etcd
//! the first endpoint is the replica's own member, so traffic stays local while it is healthy.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use etcd_client::{Client, GetOptions};

/// How often a store that moved away from its first endpoint checks whether it is back.
const PROBE_EVERY: Duration = Duration::from_secs(1);

pub(super) struct Endpoints {
    clients: Vec<(String, Client)>,
    active: AtomicUsize,
}

/// Whether a request is a write: a write is sent again elsewhere only when it surely never
/// reached a member, since a write that did may have been applied.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Read,
    Write,
}

impl Endpoints {
    pub(super) fn new(clients: Vec<(String, Client)>) -> Arc<Self> {
        let endpoints = Arc::new(Endpoints {
            clients,
            active: AtomicUsize::new(0),
        });
        if endpoints.clients.len() > 1 {
            tokio::spawn(prefer_first(Arc::downgrade(&endpoints)));
        }
        endpoints
    }

    /// The active endpoint's index and client.
    pub(super) fn current(&self) -> (usize, Client) {
        let at = self.active.load(Ordering::Relaxed) % self.clients.len();
        (at, self.clients[at].1.clone())
    }

    /// Moves on from endpoint `at` after it failed (unless another request already did).
    pub(super) fn failed(&self, at: usize) {
        let next = (at + 1) % self.clients.len();
        if self
            .active
            .compare_exchange(at, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
            && next != at
        {
            tracing::warn!(
                from = %self.clients[at].0,
                to = %self.clients[next].0,
                "etcd endpoint unreachable; using the next one"
            );
        }
    }

    /// Runs `op` on the active endpoint, then on each other one while the error says the
    /// endpoint could not serve it.
    pub(super) async fn call<T, F, Fut>(&self, kind: Kind, op: F) -> Result<T, etcd_client::Error>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut tries = 0;
        loop {
            let (at, client) = self.current();
            match op(client).await {
                Err(err) if tries + 1 < self.clients.len() && retryable(&err, kind) => {
                    tracing::debug!(endpoint = %self.clients[at].0, %err, "etcd request failed");
                    self.failed(at);
                    tries += 1;
                }
                other => return other,
            }
        }
    }
}

/// While another endpoint is active, probes the first one and returns to it once it serves a
/// linearizable read (which a member does only with a leader and caught up).
async fn prefer_first(endpoints: Weak<Endpoints>) {
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        let Some(endpoints) = endpoints.upgrade() else {
            return;
        };
        if endpoints.active.load(Ordering::Relaxed) == 0 {
            continue;
        }
        let (name, client) = &endpoints.clients[0];
        let mut kv = client.kv_client();
        let probe = kv.get(
            "\u{1}failover-probe",
            Some(GetOptions::new().with_count_only()),
        );
        if let Ok(Ok(_)) = tokio::time::timeout(PROBE_EVERY, probe).await {
            tracing::info!(endpoint = %name, "etcd endpoint answers again; using it");
            endpoints.active.store(0, Ordering::Relaxed);
        }
    }
}

// gRPC status codes (tonic's `Code`, which this crate does not name).
const CANCELLED: i32 = 1;
const UNKNOWN: i32 = 2;
const DEADLINE_EXCEEDED: i32 = 4;
const INTERNAL: i32 = 13;
const UNAVAILABLE: i32 = 14;

/// Whether `err` means this endpoint could not serve the request, so another may.
pub(super) fn retryable(err: &etcd_client::Error, kind: Kind) -> bool {
    use etcd_client::Error;
    let status = match err {
        Error::TransportError(_) | Error::IoError(_) => return true,
        Error::GRpcStatus(status) => status,
        _ => return false,
    };
    let text = format!("{} {:?}", status.message(), status).to_lowercase();
    // Refused before any byte of the request left: safe to send again, even a write. A member
    // rejects requests at once when it has no leader, because every request asks for one.
    let never_sent = [
        "tcp connect error",
        "error trying to connect",
        "connection refused",
        "no leader",
        "dns error",
    ]
    .iter()
    .any(|s| text.contains(s));
    if never_sent {
        return true;
    }
    kind == Kind::Read
        && match i32::from(status.code()) {
            CANCELLED | DEADLINE_EXCEEDED | UNAVAILABLE => true,
            UNKNOWN | INTERNAL => ["transport", "h2 protocol", "broken pipe", "reset", "closed"]
                .iter()
                .any(|s| text.contains(s)),
            _ => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A refused connection is the one error after which even a write may go elsewhere.
    #[tokio::test]
    async fn a_refused_connection_is_retryable_even_for_writes() {
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let client = Client::connect([format!("http://{dead}")], None)
            .await
            .unwrap();
        let err = client
            .kv_client()
            .txn(etcd_client::Txn::new())
            .await
            .unwrap_err();
        assert!(retryable(&err, Kind::Write), "{err:?}");
    }
}
