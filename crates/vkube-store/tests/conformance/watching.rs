//! Watches: order, previous values, resumption, compaction, and concurrent writers.

use std::collections::HashSet;

use vkube_store::{EventKind, ListOptions, StoreError};

use crate::common::{Fixture, assert_quiet, events_until, next_event};

fn v(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

pub async fn watch_delivers_events_in_order_with_previous_values(f: Fixture) {
    let s = &f.store;
    let base = s.current_revision().await.unwrap();
    let mut all = s.watch("/w/", base).await.unwrap();
    let mut only_a = s.watch("/w/a", base).await.unwrap();

    let a = s.create("/w/a", v("1"), None).await.unwrap();
    s.create("/other", v("x"), None).await.unwrap();
    let b = s.create("/w/b", v("1"), None).await.unwrap();
    let a2 = s
        .update("/w/a", v("2"), a.mod_revision, None)
        .await
        .unwrap();
    let (_, deleted) = s.delete("/w/a", None).await.unwrap();

    let events = events_until(&mut all, deleted).await;
    let summary: Vec<_> = events
        .iter()
        .map(|e| (e.kind, e.key.as_str(), e.revision))
        .collect();
    assert_eq!(
        summary,
        [
            (EventKind::Create, "/w/a", a.mod_revision),
            (EventKind::Create, "/w/b", b.mod_revision),
            (EventKind::Update, "/w/a", a2.mod_revision),
            (EventKind::Delete, "/w/a", deleted),
        ]
    );
    assert_eq!(
        (events[0].value.as_ref(), events[0].prev.as_ref()),
        (Some(&a), None)
    );
    assert_eq!(
        (events[2].value.as_ref(), events[2].prev.as_ref()),
        (Some(&a2), Some(&a))
    );
    assert_eq!(
        (events[3].value.as_ref(), events[3].prev.as_ref()),
        (None, Some(&a2))
    );
    assert_quiet(&mut all).await;

    let a_events = events_until(&mut only_a, deleted).await;
    assert_eq!(
        a_events.len(),
        3,
        "a prefix watch sees only its keys: {a_events:?}"
    );

    // A watch from a past revision replays history after it.
    let mut replay = s.watch("/w/", a.mod_revision).await.unwrap();
    let replayed = events_until(&mut replay, deleted).await;
    assert_eq!(replayed, events[1..]);
}

pub async fn watch_resumes_after_restart(f: Fixture) {
    let base = f.store.current_revision().await.unwrap();
    for i in 0..10 {
        f.store
            .create(&format!("/rs/{i}"), v("1"), None)
            .await
            .unwrap();
    }
    let mut watch = f.store.watch("/rs/", base).await.unwrap();
    let mut last = base;
    for _ in 0..4 {
        last = next_event(&mut watch).await.revision;
    }
    drop(watch);

    // A new process (a new handle) resumes from the last revision it saw.
    let store = f.reopen().await;
    for i in 10..15 {
        store
            .create(&format!("/rs/{i}"), v("1"), None)
            .await
            .unwrap();
    }
    let end = store.current_revision().await.unwrap();
    let mut resumed = store.watch("/rs/", last).await.unwrap();
    let rest = events_until(&mut resumed, end).await;
    let keys: Vec<_> = rest.iter().map(|e| e.key.clone()).collect();
    let expected: Vec<_> = (4..15).map(|i| format!("/rs/{i}")).collect();
    assert_eq!(
        keys, expected,
        "resumed right after the last event seen, no gap, no repeat"
    );
    assert_quiet(&mut resumed).await;
}

pub async fn compaction_errors(f: Fixture) {
    let s = &f.store;
    let base = s.current_revision().await.unwrap();
    let a = s.create("/cp/a", v("1"), None).await.unwrap();
    let b = s.create("/cp/b", v("1"), None).await.unwrap();
    let a2 = s
        .update("/cp/a", v("2"), a.mod_revision, None)
        .await
        .unwrap();
    s.delete("/cp/b", None).await.unwrap();
    let at = s.current_revision().await.unwrap();
    s.compact(at).await.unwrap();

    let compacted = |r: Result<_, StoreError>| match r {
        Err(StoreError::Compacted {
            compact_revision, ..
        }) => assert_eq!(compact_revision, at),
        Err(other) => panic!("expected Compacted, got {other}"),
        Ok(_) => panic!("expected Compacted, got a value"),
    };
    compacted(s.get("/cp/a", Some(at - 1)).await.map(drop));
    let old = ListOptions {
        revision: Some(b.mod_revision),
        ..Default::default()
    };
    compacted(s.list("/cp/", old).await.map(drop));
    compacted(s.watch("/cp/", base).await.map(drop));
    compacted(s.compact(at).await);

    // At the compaction revision and after, everything still reads.
    assert_eq!(s.get("/cp/a", Some(at)).await.unwrap(), Some(a2.clone()));
    assert_eq!(s.get("/cp/b", Some(at)).await.unwrap(), None);
    let mut watch = s.watch("/cp/", at).await.unwrap();
    let a3 = s
        .update("/cp/a", v("3"), a2.mod_revision, None)
        .await
        .unwrap();
    let event = next_event(&mut watch).await;
    assert_eq!(
        (event.kind, event.prev.as_ref(), event.value.as_ref()),
        (EventKind::Update, Some(&a2), Some(&a3))
    );
}

pub async fn watcher_sees_10k_concurrent_writes_exactly_once_in_order(f: Fixture) {
    const WRITERS: usize = 8;
    const EACH: usize = 1250;
    let base = f.store.current_revision().await.unwrap();
    let mut watch = f.store.watch("/tenk/", base).await.unwrap();
    let reader = tokio::spawn(async move {
        let mut events = Vec::with_capacity(WRITERS * EACH);
        while events.len() < WRITERS * EACH {
            events.push(next_event(&mut watch).await);
        }
        assert_quiet(&mut watch).await;
        events
    });
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let s = f.store.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..EACH {
                s.create(&format!("/tenk/{w}/{i}"), v("x"), None)
                    .await
                    .unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let events = reader.await.unwrap();
    let revisions: Vec<_> = events.iter().map(|e| e.revision).collect();
    let expected: Vec<_> = (base + 1..=base + (WRITERS * EACH) as i64).collect();
    assert!(
        revisions == expected,
        "revisions are not base+1..=base+10000 in order"
    );
    let keys: HashSet<_> = events.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys.len(), WRITERS * EACH, "every write seen exactly once");
}
