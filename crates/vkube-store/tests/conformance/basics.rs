//! Reads and writes: revisions, compare-and-swap, lists and TTLs.

use std::time::{Duration, Instant};

use vkube_store::{EventKind, ListOptions, StoreError};

use crate::common::{Fixture, next_event};

fn v(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

pub async fn writes_raise_the_revision_by_exactly_one(f: Fixture) {
    let s = &f.store;
    let base = s.current_revision().await.unwrap();
    let a = s.create("/r/a", v("1"), None).await.unwrap();
    assert_eq!(a.mod_revision, base + 1);
    assert_eq!(s.current_revision().await.unwrap(), base + 1);
    // Failed writes leave the revision alone.
    assert!(s.create("/r/a", v("x"), None).await.is_err());
    assert!(s.update("/r/a", v("x"), base, None).await.is_err());
    assert!(
        s.update("/r/missing", v("x"), base + 1, None)
            .await
            .is_err()
    );
    assert!(s.delete("/r/missing", None).await.is_err());
    assert!(s.delete("/r/a", Some(base)).await.is_err());
    assert_eq!(s.current_revision().await.unwrap(), base + 1);
    let a2 = s
        .update("/r/a", v("2"), a.mod_revision, None)
        .await
        .unwrap();
    assert_eq!(a2.mod_revision, base + 2);
    let (_, deleted_at) = s.delete("/r/a", None).await.unwrap();
    assert_eq!(deleted_at, base + 3);
    let b = s
        .create("/r/b", v("1"), Some(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(b.mod_revision, base + 4);
    assert_eq!(s.current_revision().await.unwrap(), base + 4);
    // Not left to expire while a later test on a shared server counts revisions.
    s.delete("/r/b", None).await.unwrap();
}

pub async fn create_update_delete_semantics(f: Fixture) {
    let s = &f.store;
    let a = s.create("/c/a", v("one"), None).await.unwrap();
    assert_eq!(
        (a.key.as_str(), a.value.as_slice(), a.version),
        ("/c/a", &b"one"[..], 1)
    );
    assert_eq!(a.create_revision, a.mod_revision);
    assert_eq!(s.get("/c/a", None).await.unwrap(), Some(a.clone()));

    match s.create("/c/a", v("again"), None).await {
        Err(StoreError::AlreadyExists { key }) => assert_eq!(key, "/c/a"),
        other => panic!("create of an existing key: {other:?}"),
    }

    let a2 = s
        .update("/c/a", v("two"), a.mod_revision, None)
        .await
        .unwrap();
    assert_eq!((a2.version, a2.create_revision), (2, a.create_revision));
    assert!(a2.mod_revision > a.mod_revision);

    // A stale compare-and-swap fails and carries what is stored now.
    match s.update("/c/a", v("stale"), a.mod_revision, None).await {
        Err(StoreError::Conflict {
            key,
            expected,
            current,
        }) => {
            assert_eq!((key.as_str(), expected), ("/c/a", a.mod_revision));
            assert_eq!(*current, a2);
        }
        other => panic!("stale update: {other:?}"),
    }
    match s.update("/c/none", v("x"), a.mod_revision, None).await {
        Err(StoreError::NotFound { key }) => assert_eq!(key, "/c/none"),
        other => panic!("update of a missing key: {other:?}"),
    }

    match s.delete("/c/a", Some(a.mod_revision)).await {
        Err(StoreError::Conflict { current, .. }) => assert_eq!(*current, a2),
        other => panic!("stale delete: {other:?}"),
    }
    let (deleted, at) = s.delete("/c/a", Some(a2.mod_revision)).await.unwrap();
    assert_eq!(deleted, a2);
    assert!(at > a2.mod_revision);
    assert_eq!(s.get("/c/a", None).await.unwrap(), None);
    assert!(matches!(
        s.delete("/c/a", None).await,
        Err(StoreError::NotFound { .. })
    ));

    // A re-created key starts a new life: version 1, a new create_revision.
    let again = s.create("/c/a", v("three"), None).await.unwrap();
    assert_eq!(again.version, 1);
    assert!(again.create_revision > at);

    // An unconditional delete returns the value it removed.
    let (gone, _) = s.delete("/c/a", None).await.unwrap();
    assert_eq!(gone, again);
}

pub async fn reads_at_past_and_future_revisions(f: Fixture) {
    let s = &f.store;
    let a1 = s.create("/p/a", v("1"), None).await.unwrap();
    let a2 = s
        .update("/p/a", v("2"), a1.mod_revision, None)
        .await
        .unwrap();
    let (_, deleted) = s.delete("/p/a", None).await.unwrap();
    assert_eq!(
        s.get("/p/a", Some(a1.mod_revision)).await.unwrap(),
        Some(a1.clone())
    );
    assert_eq!(
        s.get("/p/a", Some(a2.mod_revision)).await.unwrap(),
        Some(a2.clone())
    );
    assert_eq!(s.get("/p/a", Some(deleted)).await.unwrap(), None);
    assert_eq!(
        s.get("/p/a", Some(a1.mod_revision - 1)).await.unwrap(),
        None
    );
    let past = s
        .list(
            "/p/",
            ListOptions {
                revision: Some(a2.mod_revision),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((past.items, past.revision), (vec![a2], a1.mod_revision + 1));

    let current = s.current_revision().await.unwrap();
    match s.get("/p/a", Some(current + 5)).await {
        Err(StoreError::FutureRevision {
            requested,
            current: c,
        }) => {
            assert_eq!((requested, c), (current + 5, current));
        }
        other => panic!("read in the future: {other:?}"),
    }
    let future = ListOptions {
        revision: Some(current + 5),
        ..Default::default()
    };
    assert!(matches!(
        s.list("/p/", future).await,
        Err(StoreError::FutureRevision { .. })
    ));
}

pub async fn list_by_prefix_with_pages(f: Fixture) {
    let s = &f.store;
    for key in ["/l/a/1", "/l/a/2", "/l/a/3", "/l/ab", "/l/b", "/l/a"] {
        s.create(key, v(key), None).await.unwrap();
    }
    s.delete("/l/a/2", None).await.unwrap();
    let all = s.list("/l/a/", ListOptions::default()).await.unwrap();
    let keys: Vec<_> = all.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/l/a/1", "/l/a/3"]);
    assert!(!all.more);
    assert_eq!(all.revision, s.current_revision().await.unwrap());

    let everything = s.list("/l/", ListOptions::default()).await.unwrap();
    let keys: Vec<_> = everything.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/l/a", "/l/a/1", "/l/a/3", "/l/ab", "/l/b"]);

    let page = |limit, start_after: Option<&str>| ListOptions {
        revision: Some(all.revision),
        limit: Some(limit),
        start_after: start_after.map(str::to_string),
    };
    let first = s.list("/l/", page(2, None)).await.unwrap();
    assert_eq!(
        first
            .items
            .iter()
            .map(|kv| kv.key.as_str())
            .collect::<Vec<_>>(),
        ["/l/a", "/l/a/1"]
    );
    assert!(first.more);
    let second = s.list("/l/", page(2, Some("/l/a/1"))).await.unwrap();
    assert_eq!(
        second
            .items
            .iter()
            .map(|kv| kv.key.as_str())
            .collect::<Vec<_>>(),
        ["/l/a/3", "/l/ab"]
    );
    assert!(second.more);
    let last = s.list("/l/", page(2, Some("/l/ab"))).await.unwrap();
    assert_eq!(
        last.items
            .iter()
            .map(|kv| kv.key.as_str())
            .collect::<Vec<_>>(),
        ["/l/b"]
    );
    assert!(!last.more);
    let exact = s.list("/l/", page(5, None)).await.unwrap();
    assert!(
        !exact.more,
        "a page that ends exactly at the last key has no more"
    );
    let none = s.list("/l/", page(0, None)).await.unwrap();
    assert!(none.items.is_empty() && none.more);
    let empty = s.list("/nothing/", ListOptions::default()).await.unwrap();
    assert!(empty.items.is_empty() && !empty.more);
}

pub async fn list_pagination_at_a_fixed_revision_while_writes_continue(f: Fixture) {
    let s = f.store.clone();
    for i in 0..120 {
        s.create(&format!("/pg/{i:04}"), v(&format!("v{i}")), None)
            .await
            .unwrap();
    }
    let at = s.current_revision().await.unwrap();
    let snapshot = s.list("/pg/", ListOptions::default()).await.unwrap().items;
    let writer = {
        let s = s.clone();
        tokio::spawn(async move {
            for i in 0..120 {
                let key = format!("/pg/{i:04}");
                match i % 3 {
                    0 => drop(s.delete(&key, None).await.unwrap()),
                    1 => {
                        let kv = s.get(&key, None).await.unwrap().unwrap();
                        s.update(&key, v("changed"), kv.mod_revision, None)
                            .await
                            .unwrap();
                    }
                    _ => drop(
                        s.create(&format!("/pg/{i:04}x"), v("new"), None)
                            .await
                            .unwrap(),
                    ),
                }
            }
        })
    };
    let mut paged = Vec::new();
    let mut start_after = None;
    loop {
        let options = ListOptions {
            revision: Some(at),
            limit: Some(7),
            start_after,
        };
        let page = s.list("/pg/", options).await.unwrap();
        assert_eq!(page.revision, at);
        start_after = page.items.last().map(|kv| kv.key.clone());
        paged.extend(page.items);
        // What remains after this page, counted at the same revision (`remainingItemCount`).
        let rest = ListOptions {
            revision: Some(at),
            limit: None,
            start_after: start_after.clone(),
        };
        assert_eq!(
            s.count("/pg/", rest).await.unwrap(),
            snapshot.len() - paged.len(),
            "count after {start_after:?}"
        );
        if !page.more {
            break;
        }
        tokio::task::yield_now().await;
    }
    writer.await.unwrap();
    assert_eq!(
        paged, snapshot,
        "pages read at one revision join into that revision's list"
    );
    // After deletes, updates and creates, a count still agrees with a list, now and at `at`.
    for rev in [s.current_revision().await.unwrap(), at] {
        let options = ListOptions {
            revision: Some(rev),
            ..ListOptions::default()
        };
        let listed = s.list("/pg/", options.clone()).await.unwrap().items.len();
        assert_eq!(
            s.count("/pg/", options).await.unwrap(),
            listed,
            "count at {rev}"
        );
    }
}

pub async fn keys_with_a_ttl_expire(f: Fixture) {
    let s = &f.store;
    let base = s.current_revision().await.unwrap();
    let mut watch = s.watch("/ttl/", base).await.unwrap();
    let short = s
        .create("/ttl/short", v("1"), Some(Duration::from_secs(1)))
        .await
        .unwrap();
    let kept = s
        .create("/ttl/kept", v("1"), Some(Duration::from_secs(1)))
        .await
        .unwrap();
    // Rewriting without a TTL removes the TTL.
    s.update("/ttl/kept", v("2"), kept.mod_revision, None)
        .await
        .unwrap();
    s.create("/ttl/plain", v("1"), None).await.unwrap();
    let long = s
        .create("/ttl/long", v("1"), Some(Duration::from_secs(600)))
        .await
        .unwrap();

    let started = Instant::now();
    while s.get("/ttl/short", None).await.unwrap().is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "a 1 s TTL did not expire in 15 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Expiry is an ordinary delete: watchers see it, with the value that expired.
    loop {
        let e = next_event(&mut watch).await;
        if e.kind == EventKind::Delete {
            assert_eq!(
                (e.key.as_str(), e.prev.as_ref()),
                ("/ttl/short", Some(&short))
            );
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(s.get("/ttl/kept", None).await.unwrap().is_some());
    assert!(s.get("/ttl/plain", None).await.unwrap().is_some());
    assert_eq!(s.get("/ttl/long", None).await.unwrap(), Some(long));
    s.delete("/ttl/long", None).await.unwrap();
}

pub async fn invalid_keys_are_refused(f: Fixture) {
    let s = &f.store;
    for key in ["", "a\0b"] {
        match s.create(key, v("x"), None).await {
            Err(StoreError::InvalidKey { .. }) => {}
            other => panic!("create {key:?}: {other:?}"),
        }
    }
}

/// Lists larger than one backend round trip (etcd reads 1000 keys per Range) come back whole.
pub async fn large_lists_are_complete(f: Fixture) {
    const KEYS: usize = 2500;
    let mut writers = Vec::new();
    for w in 0..8 {
        let s = f.store.clone();
        writers.push(tokio::spawn(async move {
            for i in (w..KEYS).step_by(8) {
                s.create(&format!("/big/{i:05}"), vec![b'v'; 100], None)
                    .await
                    .unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let at = f.store.current_revision().await.unwrap();
    f.store.create("/big/later", v("x"), None).await.unwrap();
    let all = f
        .store
        .list(
            "/big/",
            ListOptions {
                revision: Some(at),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let keys: Vec<_> = all.items.iter().map(|kv| kv.key.clone()).collect();
    let expected: Vec<_> = (0..KEYS).map(|i| format!("/big/{i:05}")).collect();
    assert!(keys == expected && !all.more, "listed {} keys", keys.len());
    let options = ListOptions {
        revision: Some(at),
        limit: Some(1500),
        start_after: None,
    };
    let page = f.store.list("/big/", options).await.unwrap();
    assert_eq!((page.items.len(), page.more), (1500, true));
    assert_eq!(page.items[..], all.items[..1500]);
}
