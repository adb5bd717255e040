//! Replica membership and configuration agreement (DESIGN rule 4). Every replica publishes a
//! record in the store — its address, whether it leads, the store revision its view reflects and
//! the fingerprint of its effective authentication configuration — refreshed every second with a
//! 5 s TTL, so a dead replica drops out by itself. A replica whose fingerprint differs from the
//! one most replicas share reports NotReady, with the reason in `/readyz?verbose` and the
//! `vkube_replica_config_divergent` metric. `/vkube/replicas` lists the records for `vkube check`.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vkube_store::{ListOptions, StoreError};

use crate::router::Api;

/// Under `/registry/` so the watch that tracks the store revision sees the heartbeats.
pub const PREFIX: &str = "/registry/vkubereplicas/";
const TTL: Duration = Duration::from_secs(5);
const PERIOD: Duration = Duration::from_secs(1);

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Replica {
    pub id: String,
    pub address: String,
    pub version: String,
    pub leader: bool,
    /// The store revision this replica's view had reached.
    pub revision: i64,
    pub fingerprint: String,
}

/// Why this replica disagrees with the others, if it does.
pub fn divergence(me: &Replica, all: &[Replica]) -> Option<String> {
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for r in all {
        *counts.entry(r.fingerprint.as_str()).or_default() += 1;
    }
    let mine = counts.get(me.fingerprint.as_str()).copied().unwrap_or(1);
    let (top, n) = counts
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(f, n)| (*f, *n))?;
    (n > mine).then(|| {
        format!(
            "authentication configuration {} differs from {} held by {n} of {} replicas",
            me.fingerprint,
            top,
            all.len()
        )
    })
}

async fn beat(api: &Api, me: &Replica) -> Result<Vec<Replica>, StoreError> {
    let key = format!("{PREFIX}{}", me.id);
    let value = serde_json::to_vec(me).unwrap_or_default();
    match api.store.get(&key, None).await? {
        Some(kv) => match api
            .store
            .update(&key, value, kv.mod_revision, Some(TTL))
            .await
        {
            Ok(_) | Err(StoreError::Conflict { .. }) | Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        },
        None => match api.store.create(&key, value, Some(TTL)).await {
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        },
    }
    list(api).await
}

/// A replica that shuts down leaves the membership at once, rather than being listed (as the
/// leader, perhaps) until its record's TTL runs out. Best effort: bounded, and the TTL remains.
pub async fn leave(api: &Api, id: &str) {
    let key = format!("{PREFIX}{id}");
    let _ = tokio::time::timeout(Duration::from_secs(2), api.store.delete(&key, None)).await;
}

/// The live replicas' records, read from the store.
pub async fn list(api: &Api) -> Result<Vec<Replica>, StoreError> {
    let list = api.store.list(PREFIX, ListOptions::default()).await?;
    Ok(list
        .items
        .iter()
        .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
        .collect())
}

/// Publishes this replica every second and keeps the divergence verdict current.
pub fn start(api: Arc<Api>, id: String, address: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let me = Replica {
                id: id.clone(),
                address: address.clone(),
                version: crate::router::version()["gitVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                leader: api.leader.get().is_some_and(|l| l.is_leader()),
                revision: api.authorizer.revision(),
                fingerprint: api.auth.fingerprint(),
            };
            match beat(&api, &me).await {
                Ok(all) => {
                    let verdict = divergence(&me, &all);
                    if verdict.is_some() != api.divergent.read().expect("lock").is_some() {
                        tracing::warn!(reason = ?verdict, "replica configuration agreement changed");
                    }
                    api.metrics.set_divergent(verdict.is_some());
                    *api.divergent.write().expect("lock") = verdict;
                }
                Err(err) => tracing::warn!(%err, "replica heartbeat failed"),
            }
            tokio::time::sleep(PERIOD).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(id: &str, fp: &str) -> Replica {
        Replica {
            id: id.into(),
            address: String::new(),
            version: String::new(),
            leader: false,
            revision: 0,
            fingerprint: fp.into(),
        }
    }

    #[test]
    fn the_odd_one_out_diverges() {
        let all = [r("0", "a"), r("1", "a"), r("2", "b")];
        assert!(divergence(&all[0], &all).is_none());
        let why = divergence(&all[2], &all).unwrap();
        assert!(why.contains("held by 2 of 3 replicas"), "{why}");
        assert!(
            divergence(&r("0", "a"), &[r("0", "a")]).is_none(),
            "one replica agrees with itself"
        );
        let tie = [r("0", "a"), r("1", "b")];
        assert!(
            divergence(&tie[0], &tie).is_none() && divergence(&tie[1], &tie).is_none(),
            "a tie names nobody"
        );
    }
}
