//! Reading a store's whole keyspace at one revision, and writing it into another store in
//! revision order, restart-safely, with a verification of every key and value at the end.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use vkube_store::{KeyValue, ListOptions, Revision, Store};

use super::carried;
use super::progress::Progress;

/// Written first and deleted last: a destination holding it is a copy in progress (or one that
/// was killed), which a rerun of the same copy resumes and `vkube serve` refuses.
pub const MARKER: &str = "/vkube/migration";

/// Keys per list page: one page is one store round trip, all read at the copy's revision.
const PAGE: usize = 1000;
/// Writes in flight at once on the log backends (SQLite, PostgreSQL). Their one writer commits
/// the queued writes in queue order, each with its own revision, so the order holds; etcd
/// orders concurrent requests as they arrive, so it gets one at a time.
const IN_FLIGHT: usize = 256;

/// Where a copy comes from: the destination's marker records it, so that only a rerun of the
/// same copy resumes it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Origin {
    pub source: String,
    pub revision: Revision,
}

/// What was written and verified.
#[derive(Debug)]
pub struct Report {
    pub keys: usize,
    pub bytes: usize,
    pub resumed: usize,
    pub left_behind: usize,
}

impl Report {
    pub fn print(&self, verb: &str, took: Duration) {
        let secs = took.as_secs_f64();
        println!(
            "{verb} and verified {} keys ({} value bytes) in {secs:.2}s: {:.0} keys/s{}{}",
            self.keys,
            self.bytes,
            self.keys as f64 / secs.max(1e-6),
            match self.resumed {
                0 => String::new(),
                n => format!("; {n} were already there from an interrupted run"),
            },
            match self.left_behind {
                0 => String::new(),
                n => format!("; {n} replica heartbeat/leader lease records left behind"),
            },
        );
    }
}

/// Every key under `/` at `revision` (the current one when `None`), in key order, read in pages
/// at that one revision, and the revision.
pub async fn read_all(
    store: &dyn Store,
    revision: Option<Revision>,
) -> Result<(Vec<KeyValue>, Revision)> {
    let mut items = Vec::new();
    let mut options = ListOptions {
        revision,
        limit: Some(PAGE),
        start_after: None,
    };
    loop {
        let page = store
            .list("/", options.clone())
            .await
            .context("reading the store")?;
        options.revision = Some(page.revision);
        options.start_after = page.items.last().map(|kv| kv.key.clone());
        items.extend(page.items);
        if !page.more {
            return Ok((items, page.revision));
        }
    }
}

/// Writes `entries` (a source's keys) into `dest` in the order of their source `mod_revision`,
/// then compares the destination with them key by key. `dest` must be empty, hold an unfinished
/// copy of the same `origin` (resumed where it stopped), or be emptied first (`force`).
pub async fn write(
    dest: &dyn Store,
    origin: &Origin,
    entries: Vec<KeyValue>,
    force: bool,
) -> Result<Report> {
    let total = entries.len();
    let mut entries: Vec<KeyValue> = entries.into_iter().filter(|kv| carried(&kv.key)).collect();
    let left_behind = total - entries.len();
    entries.sort_by_key(|kv| kv.mod_revision);
    let marker = serde_json::to_vec(origin)?;
    let (present, _) = read_all(dest, None).await?;
    if force && !present.is_empty() {
        eprintln!(
            "vkube: --force: deleting the {} keys the destination holds",
            present.len()
        );
        for kv in &present {
            dest.delete(&kv.key, None)
                .await
                .with_context(|| format!("deleting {}", kv.key))?;
        }
    }
    let present = if force { Vec::new() } else { present };
    let resumed = match present.iter().find(|kv| kv.key == MARKER) {
        Some(found) => {
            let theirs: Origin = serde_json::from_slice(&found.value).unwrap_or(Origin {
                source: String::from_utf8_lossy(&found.value).into_owned(),
                revision: 0,
            });
            if &theirs != origin {
                bail!(
                    "the destination holds an unfinished copy of {} at revision {}, not of {} at revision {}: finish that one, or start over with --force",
                    theirs.source,
                    theirs.revision,
                    origin.source,
                    origin.revision
                );
            }
            present.len() - 1
        }
        None if present.is_empty() => {
            dest.create(MARKER, marker, None)
                .await
                .context("writing the copy's marker")?;
            0
        }
        None => bail!(
            "the destination is not empty: it holds {} keys (the first {}); give --force to delete them first",
            present.len(),
            present[0].key
        ),
    };
    if resumed > 0 {
        eprintln!("vkube: resuming an interrupted copy: {resumed} keys are there already");
    }
    let there: HashSet<&str> = present.iter().map(|kv| kv.key.as_str()).collect();
    let todo: Vec<&KeyValue> = entries
        .iter()
        .filter(|kv| !there.contains(kv.key.as_str()))
        .collect();
    copy(dest, &todo, entries.len(), resumed).await?;
    let bytes = verify(dest, &entries).await?;
    dest.delete(MARKER, None)
        .await
        .context("deleting the copy's marker")?;
    // History before the copy is not the source's: a watch or a list continuation from an older
    // resourceVersion must get 410 Gone and relist, as after an etcd restore.
    let now = dest.current_revision().await?;
    match dest.compact(now).await {
        Ok(()) | Err(vkube_store::StoreError::Compacted { .. }) => {}
        Err(err) => return Err(err).context("compacting the destination"),
    }
    Ok(Report {
        keys: entries.len(),
        bytes,
        resumed,
        left_behind,
    })
}

/// Creates each of `todo`, in order, showing progress over `total` keys of which `done` exist.
async fn copy(dest: &dyn Store, todo: &[&KeyValue], total: usize, done: usize) -> Result<()> {
    let in_flight = if dest.backend() == "etcd" {
        1
    } else {
        IN_FLIGHT
    };
    // For tests of an interrupted copy: a pause after each key.
    let pause = std::env::var("VKUBE_COPY_PAUSE_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map(Duration::from_millis);
    let progress = Progress::new(total as u64, done as u64);
    let mut writes = futures_util::stream::iter(todo.iter().map(|kv| async move {
        if let Some(pause) = pause {
            tokio::time::sleep(pause).await;
        }
        dest.create(&kv.key, kv.value.clone(), None)
            .await
            .with_context(|| format!("writing {}", kv.key))
    }))
    .buffered(if pause.is_some() { 1 } else { in_flight });
    while let Some(written) = writes.next().await {
        written?;
        progress.inc();
    }
    progress.finish();
    Ok(())
}

/// Compares the whole destination with `entries` (in source revision order): the same keys, the
/// same bytes, and the same relative order of revisions. Returns the value bytes compared.
async fn verify(dest: &dyn Store, entries: &[KeyValue]) -> Result<usize> {
    let (mut written, _) = read_all(dest, None).await?;
    written.retain(|kv| kv.key != MARKER);
    let want: BTreeMap<&str, &[u8]> = entries
        .iter()
        .map(|kv| (kv.key.as_str(), kv.value.as_slice()))
        .collect();
    let got: BTreeMap<&str, &[u8]> = written
        .iter()
        .map(|kv| (kv.key.as_str(), kv.value.as_slice()))
        .collect();
    let mut wrong = Vec::new();
    for (key, value) in &want {
        match got.get(key) {
            None => wrong.push(format!("{key} is missing")),
            Some(v) if v != value => wrong.push(format!("{key} differs")),
            Some(_) => {}
        }
    }
    wrong.extend(
        got.keys()
            .filter(|k| !want.contains_key(*k))
            .map(|k| format!("{k} is not in the source")),
    );
    if !wrong.is_empty() {
        bail!(
            "verification failed: {} of {} keys do not match ({}); the marker stays, so the destination is not served",
            wrong.len(),
            want.len(),
            wrong.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
        );
    }
    written.sort_by_key(|kv| kv.mod_revision);
    if let Some((w, e)) = written.iter().zip(entries).find(|(w, e)| w.key != e.key) {
        bail!(
            "verification failed: revisions are out of the source's order ({} where the source has {})",
            w.key,
            e.key
        );
    }
    Ok(want.values().map(|v| v.len()).sum())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vkube_store::MemoryStore;

    async fn fill(store: &dyn Store) {
        store
            .create("/registry/a/x", b"1".to_vec(), None)
            .await
            .unwrap();
        store
            .create("/registry/b/y", b"2".to_vec(), None)
            .await
            .unwrap();
        let a = store.get("/registry/a/x", None).await.unwrap().unwrap();
        store
            .update("/registry/a/x", b"3".to_vec(), a.mod_revision, None)
            .await
            .unwrap();
        store
            .create("/vkube/identity/ca", b"sealed".to_vec(), None)
            .await
            .unwrap();
        store
            .create("/registry/vkubereplicas/vkube-0", b"{}".to_vec(), None)
            .await
            .unwrap();
        for i in 0..2500 {
            let key = format!("/registry/configmaps/ns/c{i:05}");
            store.create(&key, vec![b'v'; i % 7], None).await.unwrap();
        }
    }

    fn origin(revision: Revision) -> Origin {
        Origin {
            source: "memory://".into(),
            revision,
        }
    }

    #[tokio::test]
    async fn a_copy_keeps_every_value_and_the_order_of_revisions() {
        let source = MemoryStore::new();
        fill(source.as_ref()).await;
        let (entries, revision) = read_all(source.as_ref(), None).await.unwrap();
        assert_eq!(entries.len(), 2504, "pages at one revision miss nothing");
        let dest = MemoryStore::new();
        let report = write(dest.as_ref(), &origin(revision), entries, false)
            .await
            .unwrap();
        assert_eq!((report.keys, report.left_behind), (2503, 1));
        let (copied, _) = read_all(dest.as_ref(), None).await.unwrap();
        assert!(copied.iter().all(|kv| kv.key != MARKER));
        let x = copied.iter().find(|kv| kv.key == "/registry/a/x").unwrap();
        let y = copied.iter().find(|kv| kv.key == "/registry/b/y").unwrap();
        // x was last written after y in the source, so it is here too.
        assert!(x.value == b"3" && x.mod_revision > y.mod_revision);
        let err = write(dest.as_ref(), &origin(revision), copied.clone(), false)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not empty") && err.contains("--force"),
            "{err}"
        );
        write(dest.as_ref(), &origin(revision), copied, true)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn an_interrupted_copy_resumes_only_for_the_same_origin() {
        let source = MemoryStore::new();
        fill(source.as_ref()).await;
        let (mut entries, revision) = read_all(source.as_ref(), None).await.unwrap();
        entries.retain(|kv| carried(&kv.key));
        entries.sort_by_key(|kv| kv.mod_revision);
        // What a copy killed after 100 keys leaves.
        let dest = MemoryStore::new();
        let marker = serde_json::to_vec(&origin(revision)).unwrap();
        dest.create(MARKER, marker, None).await.unwrap();
        for kv in &entries[..100] {
            dest.create(&kv.key, kv.value.clone(), None).await.unwrap();
        }
        let err = write(dest.as_ref(), &origin(revision + 1), entries.clone(), false)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("unfinished copy"), "{err}");
        let report = write(dest.as_ref(), &origin(revision), entries, false)
            .await
            .unwrap();
        assert_eq!((report.keys, report.resumed), (2503, 100));
        assert!(dest.get(MARKER, None).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn verification_names_what_differs() {
        let dest = MemoryStore::new();
        dest.create("/registry/a", b"1".to_vec(), None)
            .await
            .unwrap();
        dest.create("/registry/extra", b"1".to_vec(), None)
            .await
            .unwrap();
        let (mut entries, _) = read_all(dest.as_ref(), None).await.unwrap();
        entries[0].value = b"2".to_vec();
        entries.pop();
        let err = verify(dest.as_ref(), &entries)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/registry/a differs")
                && err.contains("/registry/extra is not in the source"),
            "{err}"
        );
    }
}
