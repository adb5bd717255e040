//! A migration copies an offline store: a replica writing to it meanwhile would leave the copy
//! behind. Two signs say a store is served: the lock `vkube serve` holds on an embedded SQLite
//! database (`<database>.lock`), and the membership records every replica refreshes each second
//! with a 5 s TTL (`/registry/vkubereplicas/`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use vkube_store::{ListOptions, Revision, Store, StoreUrl};

/// A replica's record outlives the replica by its TTL (5 s), and on the log backends until a
/// sweeper (every 250 ms) deletes it; one that is still refreshed after this long is served.
const SETTLE: Duration = Duration::from_millis(6500);

/// Takes the lock `vkube serve` takes on an SQLite database, so no replica starts on it during
/// the copy; refuses when a running `vkube serve` holds it. Held until the returned file drops.
pub fn lock(url: &StoreUrl) -> Result<Option<std::fs::File>> {
    let StoreUrl::Sqlite { path, .. } = url else {
        return Ok(None);
    };
    match crate::try_lock_sqlite(path)? {
        (Some(file), _) => Ok(Some(file)),
        (None, lock) => bail!(
            "a vkube serve is serving {} (it holds {}): stop it first; a migration copies an offline store",
            path.display(),
            lock.display()
        ),
    }
}

/// The live replica records: key → (mod_revision, "id at address").
async fn records(store: &dyn Store) -> Result<BTreeMap<String, (Revision, String)>> {
    let list = store
        .list(vkube_server::replicas::PREFIX, ListOptions::default())
        .await
        .context("reading the replica records")?;
    Ok(list
        .items
        .into_iter()
        .map(|kv| {
            let name = match serde_json::from_slice::<vkube_server::replicas::Replica>(&kv.value) {
                Ok(r) => format!("{} at {}", r.id, r.address),
                Err(_) => kv.key.rsplit('/').next().unwrap_or_default().to_string(),
            };
            (kv.key, (kv.mod_revision, name))
        })
        .collect())
}

/// Refuses while a replica serves `store`, naming it. A record left by a replica that stopped
/// (killed, so it did not remove it) expires within its TTL; it is waited out, and only a
/// record refreshed meanwhile counts as a serving replica.
pub async fn refuse_served(store: &dyn Store, shown: &str) -> Result<()> {
    let first = records(store).await?;
    if first.is_empty() {
        return Ok(());
    }
    eprintln!(
        "vkube: {shown} has replica records ({}); waiting up to {}s to see whether they are refreshed",
        first
            .values()
            .map(|(_, n)| n.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        SETTLE.as_secs()
    );
    let deadline = Instant::now() + SETTLE;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = records(store).await?;
        let live: Vec<&str> = now
            .iter()
            .filter(|(key, (rev, _))| first.get(*key).is_none_or(|(then, _)| then != rev))
            .map(|(_, (_, name))| name.as_str())
            .collect();
        if !live.is_empty() {
            bail!(
                "{shown} is being served by replica {}: stop every replica first; a migration copies an offline store",
                live.join(", replica ")
            );
        }
        if now.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{shown} still holds replica records after their TTL ({}): a replica may be serving it",
                now.values()
                    .map(|(_, n)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
}
