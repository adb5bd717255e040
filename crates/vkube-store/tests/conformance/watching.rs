//! Watches: order, previous values, resumption, compaction, and concurrent writers.

use std::collections::HashSet;

use std::sync::Arc;
use std::time::Duration;

use vkube_store::{
    Compaction, EventKind, ListOptions, Revision, Store, StoreError, Watch, WatchItem,
};

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

/// Asks `watch` for progress until a report reaches `revision`; the events it meets meanwhile.
async fn progress_to(watch: &mut Watch, revision: Revision) -> Vec<vkube_store::Event> {
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        watch.request_progress();
        let item = tokio::time::timeout_at(deadline, watch.next_item())
            .await
            .unwrap_or_else(|_| panic!("no progress to {revision} within 5 s: {events:?}"));
        match item {
            Some(Ok(WatchItem::Progress(at))) if at >= revision => return events,
            Some(Ok(WatchItem::Progress(_))) => {}
            Some(Ok(WatchItem::Event(event))) => events.push(event),
            other => panic!("watch ended: {other:?}"),
        }
    }
}

/// A progress report covers writes outside the watch's prefix, which raise the revision but send
/// the watch no event, and comes after every event of the prefix up to its revision.
pub async fn progress_covers_writes_outside_the_prefix(f: Fixture) {
    let s = &f.store;
    let base = s.current_revision().await.unwrap();
    let mut watch = s.watch("/p/", base).await.unwrap();
    let mine = s.create("/p/a", v("1"), None).await.unwrap();
    let mut other = s.create("/q/a", v("1"), None).await.unwrap();
    for i in 0..5 {
        other = s
            .update("/q/a", v(&i.to_string()), other.mod_revision, None)
            .await
            .unwrap();
    }
    let events = progress_to(&mut watch, other.mod_revision).await;
    let keys: Vec<_> = events
        .iter()
        .map(|e| (e.key.as_str(), e.revision))
        .collect();
    assert_eq!(keys, [("/p/a", mine.mod_revision)]);
    // Progress reports do not disturb the events that follow.
    let later = s.create("/p/b", v("1"), None).await.unwrap();
    assert_eq!(next_event(&mut watch).await.revision, later.mod_revision);
}

/// Two clusters on one etcd: a watch of one reports progress past the other's writes (so a
/// wait for the current revision does not wait for a write of its own).
pub async fn progress_covers_another_clusters_writes(f: Fixture) {
    let neighbour = f.neighbour().await;
    let s = &f.store;
    let base = s.current_revision().await.unwrap();
    let mut watch = s.watch("/registry/", base).await.unwrap();
    let mut theirs = neighbour
        .create("/registry/pods/x/y", v("1"), None)
        .await
        .unwrap();
    for i in 0..5 {
        theirs = neighbour
            .update(
                "/registry/pods/x/y",
                v(&i.to_string()),
                theirs.mod_revision,
                None,
            )
            .await
            .unwrap();
    }
    assert_eq!(s.current_revision().await.unwrap(), theirs.mod_revision);
    let events = progress_to(&mut watch, theirs.mod_revision).await;
    assert!(events.is_empty(), "another cluster's writes: {events:?}");
    // The neighbour's own watch sees none of the progress machinery as events.
    let mut their_watch = neighbour.watch("/registry/", base).await.unwrap();
    let seen = events_until(&mut their_watch, theirs.mod_revision).await;
    assert_eq!(seen.len(), 6, "{seen:?}");
    assert!(
        seen.iter().all(|e| e.key == "/registry/pods/x/y"),
        "{seen:?}"
    );
}

/// Each replica of each cluster on one etcd runs a compactor; per interval exactly one of them
/// compacts (kube-apiserver's compact_rev_key), at a revision at least an interval old.
pub async fn compaction_is_coordinated_across_clusters(f: Fixture) {
    let neighbour = f.neighbour().await;
    let replica = f.reopen().await;
    let stores: Vec<Arc<dyn Store>> = vec![f.store.clone(), replica, neighbour];
    let mut states = vec![Compaction::default(); stores.len()];
    let mut compactions = Vec::new();
    for interval in 0..4 {
        let mut this_round = Vec::new();
        for (i, store) in stores.iter().enumerate() {
            // Every cluster writes between the rounds, so each replica reads another revision.
            store
                .create(&format!("/c/{interval}/{i}"), v("1"), None)
                .await
                .unwrap();
            let before = store.current_revision().await.unwrap();
            states[i] = store.compact_round(states[i]).await.unwrap();
            if let Some(at) = states[i].compacted {
                assert!(at < before, "compacted at {at}, not below {before}");
                this_round.push((i, at));
            }
        }
        compactions.push(this_round);
    }
    // The first interval only records revisions (the key may already hold another run's); after
    // it, one compaction per interval, whoever runs first.
    for (interval, round) in compactions.iter().enumerate().skip(2) {
        assert_eq!(round.len(), 1, "interval {interval}: {compactions:?}");
    }
    // And the history below the last compaction is gone, for every cluster.
    let (_, at) = compactions.last().unwrap()[0];
    let err = f
        .store
        .get("/c/0/0", Some(at - 1))
        .await
        .expect_err("compacted");
    assert!(matches!(err, StoreError::Compacted { .. }), "{err}");
}
