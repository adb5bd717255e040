//! The cache against a store written behind its back: every consistent read sees every write
//! acknowledged before it, deletes do not survive, and a compaction gap rebuilds it.

use std::sync::Arc;
use std::time::Duration;

use vkube_store::{ListOptions, MemoryStore, Store};

use super::*;

async fn hub() -> (Arc<dyn Store>, Arc<Hub>) {
    let store: Arc<dyn Store> = MemoryStore::new();
    store
        .create("/registry/pods/a/before", b"{\"v\":0}".to_vec(), None)
        .await
        .unwrap();
    let hub = Hub::start(store.clone()).await.unwrap();
    (store, hub)
}

/// The keys and revisions a store list returns, for comparison with the cache's.
async fn stored(store: &dyn Store, prefix: &str) -> Vec<(String, Revision, Vec<u8>)> {
    let page = store.list(prefix, ListOptions::default()).await.unwrap();
    page.items
        .into_iter()
        .map(|kv| (kv.key, kv.mod_revision, kv.value))
        .collect()
}

fn cached(entries: &[Arc<Entry>]) -> Vec<(String, Revision, Vec<u8>)> {
    entries
        .iter()
        .map(|e| (e.kv.key.clone(), e.kv.mod_revision, e.kv.value.clone()))
        .collect()
}

#[tokio::test]
async fn reads_after_writes_see_them() {
    let (store, hub) = hub().await;
    assert!(hub.cache.valid());
    for i in 0..50 {
        let key = format!("/registry/pods/a/p{i}");
        let kv = store
            .create(&key, format!("{{\"i\":{i}}}").into_bytes(), None)
            .await
            .unwrap();
        // Read at once, with no wait for the watch: the read waits for the cache.
        assert_eq!(get(&hub, &key).await.unwrap(), Some(kv.clone()));
        if i % 3 == 0 {
            store.delete(&key, None).await.unwrap();
            assert_eq!(get(&hub, &key).await.unwrap(), None);
        } else {
            store
                .update(&key, b"{\"u\":1}".to_vec(), kv.mod_revision, None)
                .await
                .unwrap();
        }
        let (entries, at) = list(&hub, "/registry/pods/a/").await.expect("cached");
        assert_eq!(
            cached(&entries),
            stored(store.as_ref(), "/registry/pods/a/").await
        );
        assert!(at >= store.current_revision().await.unwrap() - 1);
    }
    // Another prefix sharing the first letters is not listed.
    store
        .create("/registry/pods/ab/x", b"{}".to_vec(), None)
        .await
        .unwrap();
    let (entries, _) = list(&hub, "/registry/pods/a/").await.unwrap();
    assert!(
        entries
            .iter()
            .all(|e| e.kv.key.starts_with("/registry/pods/a/"))
    );
}

/// A value the encryption providers could not read (it reaches the watch as stored) is left
/// to the store, which answers it with its own error.
#[tokio::test]
async fn unreadable_values_are_left_to_the_store() {
    let (store, hub) = hub().await;
    store
        .create(
            "/registry/secrets/a/s",
            b"k8s:enc:aescbc:v1:key:xx".to_vec(),
            None,
        )
        .await
        .unwrap();
    let now = store.current_revision().await.unwrap();
    assert!(hub.wait_for(now, Duration::from_secs(2)).await);
    assert!(matches!(
        hub.cache.get("/registry/secrets/a/s", now),
        Lookup::Unknown
    ));
    assert!(hub.cache.list("/registry/secrets/", now).is_none());
    assert!(hub.cache.list("/registry/pods/", now).is_some());
}

/// After a gap the cache is off until rebuilt from a list, and then matches the store: a key
/// deleted during the gap does not survive.
#[tokio::test]
async fn a_gap_rebuilds_the_cache() {
    let (store, hub) = hub().await;
    hub.reset(store.current_revision().await.unwrap());
    assert!(!hub.cache.valid());
    assert!(hub.cache.list("/registry/", 0).is_none());
    store.delete("/registry/pods/a/before", None).await.unwrap();
    // The feed lists afresh on its next turn; no read meanwhile sees the deleted key.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match list(&hub, "/registry/").await {
            Some((entries, _)) => {
                assert!(entries.is_empty());
                break;
            }
            None => assert!(tokio::time::Instant::now() < deadline, "never rebuilt"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(get(&hub, "/registry/pods/a/before").await.unwrap(), None);
    assert_eq!(hub.cache.len(), 0);
}

/// Changes a fresh list already holds are skipped when the watch delivers them.
#[test]
fn changes_at_or_below_the_listed_revision_are_skipped() {
    let cache = Cache::default();
    let kv = |key: &str, rev| KeyValue {
        key: key.into(),
        value: b"{}".to_vec(),
        create_revision: rev,
        mod_revision: rev,
        version: 1,
    };
    cache.replace(vec![kv("/registry/x/b", 5)], 5);
    cache.apply("/registry/x/b", None, 5);
    cache.apply("/registry/x/a", Some(kv("/registry/x/a", 4)), 4);
    assert!(matches!(cache.get("/registry/x/b", 5), Lookup::Found(_)));
    assert!(matches!(cache.get("/registry/x/a", 5), Lookup::Absent));
    assert!(matches!(cache.get("/registry/x/a", 6), Lookup::Unknown));
    cache.apply("/registry/x/b", None, 6);
    assert!(matches!(cache.get("/registry/x/b", 6), Lookup::Absent));
}
