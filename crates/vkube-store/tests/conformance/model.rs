//! A property test: random operation sequences against a reference model of etcd's semantics,
//! written here from the specification alone (snapshots of a map per revision), independent of
//! every backend including the in-memory one.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use vkube_store::{
    Event, EventKind, KeyValue, ListOptions, ListResult, Revision, Store, StoreError,
};

use crate::common::{Fixture, events_until};

#[derive(Clone, Copy, Debug)]
enum Cond {
    None,
    Current,
    Stale,
}

#[derive(Clone, Debug)]
enum Op {
    Create { key: u8, value: u8 },
    Update { key: u8, value: u8, stale: bool },
    Delete { key: u8, cond: Cond },
    Get { key: u8, back: u8 },
    GetFuture { key: u8 },
    List { limit: u8, back: u8 },
    Compact { back: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0u8..5;
    prop_oneof![
        4 => (key.clone(), any::<u8>()).prop_map(|(key, value)| Op::Create { key, value }),
        4 => (key.clone(), any::<u8>(), any::<bool>()).prop_map(|(key, value, stale)| Op::Update { key, value, stale }),
        2 => (key.clone(), prop_oneof![Just(Cond::None), Just(Cond::Current), Just(Cond::Stale)])
            .prop_map(|(key, cond)| Op::Delete { key, cond }),
        3 => (key.clone(), 0u8..8).prop_map(|(key, back)| Op::Get { key, back }),
        1 => key.prop_map(|key| Op::GetFuture { key }),
        2 => (0u8..4, 0u8..8).prop_map(|(limit, back)| Op::List { limit, back }),
        1 => (0u8..6).prop_map(|back| Op::Compact { back }),
    ]
}

/// The specification: the map at every revision since the case began.
struct Model {
    prefix: String,
    base: Revision,
    rev: Revision,
    compacted: Option<Revision>,
    snapshots: Vec<(Revision, BTreeMap<String, KeyValue>)>,
    events: Vec<Event>,
}

impl Model {
    fn now(&self) -> &BTreeMap<String, KeyValue> {
        &self.snapshots.last().expect("a snapshot").1
    }

    fn at(&self, rev: Revision) -> &BTreeMap<String, KeyValue> {
        let i = self.snapshots.partition_point(|(r, _)| *r <= rev);
        &self.snapshots[i - 1].1
    }

    fn key(&self, k: u8) -> String {
        format!("{}k{k}", self.prefix)
    }

    /// Records a write at the next revision; `value` None deletes.
    fn write(&mut self, key: &str, value: Option<KeyValue>) -> Revision {
        self.rev += 1;
        let mut map = self.now().clone();
        let prev = map.get(key).cloned();
        let kind = match (&prev, &value) {
            (_, None) => EventKind::Delete,
            (None, Some(_)) => EventKind::Create,
            (Some(_), Some(_)) => EventKind::Update,
        };
        match &value {
            Some(kv) => map.insert(key.to_string(), kv.clone()),
            None => map.remove(key),
        };
        self.events.push(Event {
            kind,
            revision: self.rev,
            key: key.to_string(),
            value,
            prev: if kind == EventKind::Create {
                None
            } else {
                prev
            },
        });
        self.snapshots.push((self.rev, map));
        self.rev
    }

    /// The revision a read `back` revisions ago targets, or the error the model expects there.
    fn read_revision(&self, back: u8) -> Result<Revision, StoreError> {
        let r = (self.rev - Revision::from(back)).max(self.base);
        match self.compacted {
            Some(c) if r < c => Err(StoreError::Compacted {
                requested: r,
                compact_revision: c,
            }),
            _ => Ok(r),
        }
    }
}

/// Outcomes are compared through their Debug/Display text, which names every field.
fn outcome<T: Debug>(r: Result<T, StoreError>) -> String {
    match r {
        Ok(v) => format!("ok {v:?}"),
        Err(e) => format!("err {e}"),
    }
}

async fn apply(store: &dyn Store, m: &mut Model, op: &Op) -> Option<(String, String)> {
    let stale_of = |kv: Option<&KeyValue>, stale: bool| {
        kv.map_or(m.rev, |kv| kv.mod_revision - i64::from(stale))
    };
    Some(match op.clone() {
        Op::Create { key, value } => {
            let key = m.key(key);
            let got = outcome(store.create(&key, vec![value], None).await);
            let want = if m.now().contains_key(&key) {
                outcome::<()>(Err(StoreError::AlreadyExists { key }))
            } else {
                let rev = m.rev + 1;
                let kv = KeyValue {
                    key: key.clone(),
                    value: vec![value],
                    create_revision: rev,
                    mod_revision: rev,
                    version: 1,
                };
                m.write(&key, Some(kv.clone()));
                outcome::<KeyValue>(Ok(kv))
            };
            (got, want)
        }
        Op::Update { key, value, stale } => {
            let key = m.key(key);
            let current = m.now().get(&key).cloned();
            let expected = stale_of(current.as_ref(), stale);
            let got = outcome(store.update(&key, vec![value], expected, None).await);
            let want = match current {
                None => outcome::<()>(Err(StoreError::NotFound { key })),
                Some(cur) if stale => outcome::<()>(Err(StoreError::Conflict {
                    key,
                    expected,
                    current: Box::new(cur),
                })),
                Some(cur) => {
                    let kv = KeyValue {
                        key: key.clone(),
                        value: vec![value],
                        create_revision: cur.create_revision,
                        mod_revision: m.rev + 1,
                        version: cur.version + 1,
                    };
                    m.write(&key, Some(kv.clone()));
                    outcome::<KeyValue>(Ok(kv))
                }
            };
            (got, want)
        }
        Op::Delete { key, cond } => {
            let key = m.key(key);
            let current = m.now().get(&key).cloned();
            let expected = match cond {
                Cond::None => None,
                Cond::Current => Some(stale_of(current.as_ref(), false)),
                Cond::Stale => Some(stale_of(current.as_ref(), true)),
            };
            let got = outcome(store.delete(&key, expected).await);
            let want = match (current, cond) {
                (None, _) => outcome::<()>(Err(StoreError::NotFound { key })),
                (Some(cur), Cond::Stale) => outcome::<()>(Err(StoreError::Conflict {
                    key,
                    expected: expected.unwrap_or_default(),
                    current: Box::new(cur),
                })),
                (Some(cur), _) => {
                    let rev = m.write(&key, None);
                    outcome::<(KeyValue, Revision)>(Ok((cur, rev)))
                }
            };
            (got, want)
        }
        Op::Get { key, back } => {
            let key = m.key(key);
            let (r, want) = match m.read_revision(back) {
                Ok(r) => (
                    r,
                    outcome::<Option<KeyValue>>(Ok(m.at(r).get(&key).cloned())),
                ),
                Err(e) => (m.rev - Revision::from(back), outcome::<()>(Err(e))),
            };
            (outcome(store.get(&key, Some(r.max(m.base))).await), want)
        }
        Op::GetFuture { key } => {
            let key = m.key(key);
            let requested = m.rev + 2;
            let got = outcome::<Option<KeyValue>>(store.get(&key, Some(requested)).await);
            (
                got,
                outcome::<()>(Err(StoreError::FutureRevision {
                    requested,
                    current: m.rev,
                })),
            )
        }
        Op::List { limit, back } => {
            let limit = (limit > 0).then_some(usize::from(limit));
            let (r, want) = match m.read_revision(back) {
                Ok(r) => {
                    let all: Vec<_> = m.at(r).values().cloned().collect();
                    let n = limit.unwrap_or(all.len()).min(all.len());
                    let result = ListResult {
                        items: all[..n].to_vec(),
                        revision: r,
                        more: n < all.len(),
                    };
                    (r, outcome::<ListResult>(Ok(result)))
                }
                Err(e) => (m.rev - Revision::from(back), outcome::<()>(Err(e))),
            };
            let options = ListOptions {
                revision: Some(r.max(m.base)),
                limit,
                start_after: None,
            };
            (outcome(store.list(&m.prefix, options).await), want)
        }
        Op::Compact { back } => {
            let target = m.rev - Revision::from(back);
            // Below the case's start the store's compaction state is not the model's to know.
            if target <= m.base {
                return None;
            }
            let got = outcome(store.compact(target).await);
            let want = match m.compacted {
                Some(c) if target <= c => outcome::<()>(Err(StoreError::Compacted {
                    requested: target,
                    compact_revision: c,
                })),
                _ => {
                    m.compacted = Some(target);
                    outcome::<()>(Ok(()))
                }
            };
            (got, want)
        }
    })
}

static CASE: AtomicU64 = AtomicU64::new(0);

async fn check(store: &dyn Store, ops: &[Op]) -> Result<(), TestCaseError> {
    let base = store.current_revision().await.unwrap();
    let prefix = format!("/model/{}/", CASE.fetch_add(1, Ordering::Relaxed));
    let mut m = Model {
        prefix,
        base,
        rev: base,
        compacted: None,
        snapshots: vec![(base, BTreeMap::new())],
        events: vec![],
    };
    for (i, op) in ops.iter().enumerate() {
        if let Some((got, want)) = apply(store, &mut m, op).await {
            prop_assert_eq!(got, want, "op {} {:?}", i, op);
        }
        prop_assert_eq!(
            store.current_revision().await.unwrap(),
            m.rev,
            "revision after op {} {:?}",
            i,
            op
        );
    }
    // The watch replays exactly the model's events after the oldest revision still readable.
    let from = m.compacted.unwrap_or(base);
    let want: Vec<_> = m
        .events
        .iter()
        .filter(|e| e.revision > from)
        .cloned()
        .collect();
    if let Some(last) = want.last() {
        let mut watch = store
            .watch(&m.prefix, from)
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let got = events_until(&mut watch, last.revision).await;
        prop_assert_eq!(got, want);
    }
    Ok(())
}

pub async fn random_operations_match_the_reference_model(f: Fixture) {
    let handle = tokio::runtime::Handle::current();
    let config = Config {
        cases: 48,
        max_shrink_iters: 300,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let store = f.store.clone();
    let result = runner.run(&proptest::collection::vec(op(), 1..40), |ops| {
        tokio::task::block_in_place(|| handle.block_on(check(store.as_ref(), &ops)))
    });
    if let Err(err) = result {
        panic!("{:?}: {err}", f.backend);
    }
}
