//! The garbage collector (upstream's pkg/controller/garbagecollector), as the
//! `generic-garbage-collector` service account: a graph of every object, fed by metadata
//! watches over every resource discovery lists with `list`, `watch` and `delete` (events
//! excepted, as upstream's default), re-read every [`DISCOVERY_PERIOD`] so that custom
//! resources join as they appear. Objects whose owners are all gone (a live GET of each owner,
//! uid compared) are deleted through the API; an owner deleted with the `orphan` finalizer has
//! its dependents' references removed, then the finalizer; one deleted in the foreground keeps
//! `foregroundDeletion` until no dependent blocks it. The DELETE handler that sets those
//! finalizers is the API server's.
//!
//! Items are looked at once every watch has listed, or after [`SYNC_TIMEOUT`] (upstream waits
//! for its caches to sync as long), by `ctx.workers` at once (kube-controller-manager's
//! `--concurrent-gc-syncs`), each item by one worker at a time; failures are retried with the
//! runner's backoff.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use crate::resources::{Resources, Served};
use crate::runner::Backoff;
use crate::{Context, Result};

mod attempt;
mod graph;
#[cfg(test)]
mod tests;

pub(crate) use graph::{Graph, Node, Work};

/// How often discovery is read again for new or removed resources (upstream's 30 s).
const DISCOVERY_PERIOD: Duration = Duration::from_secs(30);
/// How long items wait for every watch's first list.
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// How soon discovery is read again when an owner's kind is unknown: a custom resource just
/// defined (upstream waits for the next period; a tenant deleting a custom owner right after
/// creating its CRD should not wait 30 s for its dependents to go).
const DISCOVERY_SOON: Duration = Duration::from_secs(1);

/// A watched resource: (group, plural).
type Monitored = (String, String);

type Event = (
    Arc<Served>,
    watcher::Event<PartialObjectMeta<DynamicObject>>,
);

/// Whether upstream's collector watches `r`: deletable and listable, and not an event.
fn collectable(r: &Served) -> bool {
    let event = r.api.plural == "events" && matches!(r.api.group.as_str(), "" | "events.k8s.io");
    !event && ["list", "watch", "delete"].iter().all(|v| r.supports(v))
}

/// Work to do, each item once.
#[derive(Default)]
pub(crate) struct Queue {
    order: VecDeque<Work>,
    queued: HashSet<Work>,
}

impl Queue {
    pub(crate) fn extend(&mut self, work: impl IntoIterator<Item = Work>) {
        for w in work {
            if self.queued.insert(w.clone()) {
                self.order.push_back(w);
            }
        }
    }

    /// The first item not in `busy`.
    fn pop(&mut self, busy: &HashSet<Work>) -> Option<Work> {
        let i = self.order.iter().position(|w| !busy.contains(w))?;
        let w = self.order.remove(i)?;
        self.queued.remove(&w);
        Some(w)
    }
}

/// Feeds one watch event to the graph; returns the work it asks for.
pub(crate) struct Feeder {
    /// Per resource in a re-list: the uids listed so far.
    relisting: HashMap<Monitored, HashSet<String>>,
    /// Resources whose first list is not complete.
    pub unsynced: HashSet<Monitored>,
}

fn key(r: &Served) -> Monitored {
    (r.api.group.clone(), r.api.plural.clone())
}

impl Feeder {
    pub(crate) fn new() -> Self {
        Feeder {
            relisting: HashMap::new(),
            unsynced: HashSet::new(),
        }
    }

    pub(crate) fn feed(
        &mut self,
        graph: &Mutex<Graph>,
        served: Arc<Served>,
        event: watcher::Event<PartialObjectMeta<DynamicObject>>,
    ) -> Vec<Work> {
        let mut graph = graph.lock().expect("graph lock");
        let k = key(&served);
        match event {
            watcher::Event::Init => {
                self.relisting.insert(k, HashSet::new());
                Vec::new()
            }
            watcher::Event::InitApply(obj) | watcher::Event::Apply(obj) => {
                let Some(uid) = obj.metadata.uid.clone() else {
                    return Vec::new();
                };
                if let Some(seen) = self.relisting.get_mut(&k) {
                    seen.insert(uid.clone());
                }
                graph.apply(&uid, Node::of(served, &obj.metadata))
            }
            watcher::Event::Delete(obj) => match &obj.metadata.uid {
                Some(uid) => graph.remove(uid),
                None => Vec::new(),
            },
            watcher::Event::InitDone => {
                self.unsynced.remove(&k);
                // What the re-list no longer shows was deleted meanwhile.
                let mut work = Vec::new();
                if let Some(seen) = self.relisting.remove(&k) {
                    for uid in graph.of_resource(&k.0, &k.1) {
                        if !seen.contains(&uid) {
                            work.extend(graph.remove(&uid));
                        }
                    }
                }
                // An owner of this resource deleted before it was watched left no event.
                work.extend(graph.with_unseen_owners());
                work
            }
        }
    }
}

/// The `garbagecollector` controller.
pub(crate) async fn run(ctx: Arc<Context>) {
    let graph = Arc::new(Mutex::new(Graph::default()));
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    // Dropped with this future: every watch and every attempt stops with the controller.
    let mut watches = JoinSet::new();
    let mut attempts: JoinSet<(Work, Result<Vec<Work>>)> = JoinSet::new();
    let mut monitors: HashMap<Monitored, AbortHandle> = HashMap::new();
    let mut feeder = Feeder::new();
    let mut resources = Arc::new(Resources::default());
    let mut queue = Queue::default();
    let mut busy: HashSet<Work> = HashSet::new();
    let backoff = Backoff::default();
    let mut retry_at: BTreeMap<Work, Instant> = BTreeMap::new();
    let mut rediscover = Instant::now();
    let mut discovered = Instant::now();
    // Past this, items are looked at even if a watch has not listed yet (upstream gives its
    // graph's sync the same 30 s, so one resource that cannot be listed does not stop it).
    let mut sync_deadline = Instant::now();
    loop {
        if Instant::now() >= rediscover {
            discovered = Instant::now();
            rediscover = discovered + DISCOVERY_PERIOD;
            let mut fresh = Resources::default();
            match fresh.refresh(&ctx.client).await {
                Ok(()) => {
                    resources = Arc::new(fresh);
                    let wanted: HashMap<Monitored, Served> = resources
                        .all()
                        .iter()
                        .filter(|r| collectable(r))
                        .map(|r| (key(r), r.clone()))
                        .collect();
                    monitors.retain(|k, handle| {
                        let keep = wanted.contains_key(k);
                        if !keep {
                            handle.abort();
                            feeder.unsynced.remove(k);
                        }
                        keep
                    });
                    for (k, served) in wanted {
                        if monitors.contains_key(&k) {
                            continue;
                        }
                        let served = Arc::new(served);
                        // Metadata only, as upstream's metadata informers.
                        let api: Api<PartialObjectMeta<DynamicObject>> =
                            Api::all_with(ctx.client.clone(), &served.api);
                        let stream = watcher(api, watcher::Config::default()).default_backoff();
                        let tx = tx.clone();
                        feeder.unsynced.insert(k.clone());
                        sync_deadline = Instant::now() + SYNC_TIMEOUT;
                        let handle = watches.spawn(async move {
                            let mut stream = std::pin::pin!(stream);
                            while let Some(event) = stream.next().await {
                                match event {
                                    Ok(e) => {
                                        if tx.send((served.clone(), e)).is_err() {
                                            return;
                                        }
                                    }
                                    Err(err) => {
                                        tracing::debug!(%err, "garbage collector: watch")
                                    }
                                }
                            }
                        });
                        monitors.insert(k, handle);
                    }
                }
                Err(err) => tracing::info!(%err, "garbage collector: discovery"),
            }
        }
        let synced = feeder.unsynced.is_empty();
        if synced || Instant::now() >= sync_deadline {
            while attempts.len() < usize::from(ctx.workers.max(1)) {
                let Some(work) = queue.pop(&busy) else { break };
                busy.insert(work.clone());
                let (ctx, graph, resources) = (ctx.clone(), graph.clone(), resources.clone());
                attempts.spawn(async move {
                    let result = attempt::attempt(&ctx, &graph, &resources, &work).await;
                    (work, result)
                });
            }
        }
        let mut wake = retry_at
            .values()
            .copied()
            .min()
            .unwrap_or(rediscover)
            .min(rediscover);
        if !synced && Instant::now() < sync_deadline {
            wake = wake.min(sync_deadline);
        }
        tokio::select! {
            event = rx.recv() => {
                let mut next = event;
                while let Some((served, e)) = next {
                    queue.extend(feeder.feed(&graph, served, e));
                    next = rx.try_recv().ok();
                }
            }
            Some(done) = attempts.join_next(), if !attempts.is_empty() => {
                let Ok((work, result)) = done else { continue };
                busy.remove(&work);
                let name = format!("{work:?}");
                match result {
                    Ok(more) => {
                        backoff.succeeded(&name);
                        queue.extend(more);
                    }
                    Err(err) => {
                        if matches!(&err, crate::Error::Invalid(m) if m.starts_with(attempt::UNMAPPED)) {
                            rediscover = rediscover.min(discovered + DISCOVERY_SOON);
                        }
                        let delay = backoff.failed(&name);
                        tracing::info!(?work, %err, ?delay, "garbage collector: retrying");
                        retry_at.insert(work, Instant::now() + delay);
                    }
                }
            }
            _ = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                let due: Vec<Work> = retry_at.iter().filter(|(_, at)| **at <= now).map(|(w, _)| w.clone()).collect();
                for w in due {
                    retry_at.remove(&w);
                    queue.extend([w]);
                }
            }
        }
    }
}
