//! The resourcequota controller (upstream's pkg/controller/resourcequota), as the
//! `resourcequota-controller` service account: every quota's `status.hard` is kept equal to
//! `spec.hard` and its `status.used` recomputed from its namespace's objects, listed through the
//! API, and written through `resourcequotas/{name}/status`. The arithmetic is
//! `vkube_api::quota`'s, which kube-apiserver's quota admission (in the server) shares.
//!
//! A namespace's quotas are recomputed when a quota is added or its `spec.hard` changes, when an
//! object a quota measures is deleted or changes what it costs (a pod that finishes, a Service
//! whose type changes: upstream's replenishment), and every [`RESYNC`]. As upstream's, the
//! controller ignores quota writes that change only `status.used` (admission's charges) and the
//! creation of measured objects (admission charged them before they were stored): recounting
//! then could miss a create that is charged but not stored yet and undo its charge, letting one
//! more object through.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use k8s_openapi::api::core::v1::ResourceQuota;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use vkube_api::quota::{self, Evaluator, ResourceList};

use crate::resources::Resources;
use crate::runner::Backoff;
use crate::{Context, Result};

#[cfg(test)]
mod tests;

/// How often every quota is recomputed, events or not. Upstream's default
/// (`--resource-quota-sync-period`) is 5 minutes, which spares the API a full list of every
/// namespace's content in large clusters; here the lists are in-process calls, and a usage left
/// too high by a missed event refuses creates until the next resync, so it stays short.
pub(crate) const RESYNC: Duration = Duration::from_secs(30);
/// Status writes retried after a conflict (a charge by admission meanwhile).
const ATTEMPTS: usize = 5;

/// A measured resource: (group, plural).
type Measured = (String, String);

enum Event {
    Quota(watcher::Event<ResourceQuota>),
    Object(Measured, watcher::Event<DynamicObject>),
}

/// Quotas by namespace, then name.
type Quotas = BTreeMap<String, BTreeMap<String, Value>>;

/// What the controller has seen through its watches.
#[derive(Default)]
struct State {
    quotas: Quotas,
    /// The quotas a re-list has shown so far (it replaces `quotas` when done).
    relisting: Option<Quotas>,
    /// What each measured object costs, as last seen: (resource, namespace, name) → usage.
    usage: HashMap<(Measured, String, String), ResourceList>,
}

fn names(obj: &Value) -> (String, String) {
    let meta = &obj["metadata"];
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    (s(&meta["namespace"]), s(&meta["name"]))
}

/// Whether a quota asks for a recomputation (upstream's `addQuota` and `updateQuota`): it is
/// new, its `spec.hard` changed, or its status does not reflect its spec yet.
fn needs_sync(prev: Option<&Value>, q: &Value) -> bool {
    let hard = quota::parse_list(&q["spec"]["hard"]);
    let used = quota::parse_list(&q["status"]["used"]);
    prev.is_none_or(|p| quota::parse_list(&p["spec"]["hard"]) != hard)
        || quota::parse_list(&q["status"]["hard"]) != hard
        || hard
            .keys()
            .any(|k| !used.contains_key(k) && Evaluator::for_quota_name(k).is_some())
}

impl State {
    /// Takes one quota event; returns the namespace to recompute, if any.
    fn on_quota(&mut self, event: watcher::Event<ResourceQuota>) -> Option<String> {
        let value = |q: ResourceQuota| serde_json::to_value(q).unwrap_or_default();
        match event {
            watcher::Event::Init => {
                self.relisting = Some(Quotas::new());
                None
            }
            watcher::Event::InitDone => {
                if let Some(listed) = self.relisting.take() {
                    self.quotas = listed;
                }
                None
            }
            watcher::Event::InitApply(q) | watcher::Event::Apply(q) => {
                let q = value(q);
                let (ns, name) = names(&q);
                let prev = self.quotas.get(&ns).and_then(|n| n.get(&name)).cloned();
                let sync = needs_sync(prev.as_ref(), &q);
                if let Some(listed) = &mut self.relisting {
                    listed
                        .entry(ns.clone())
                        .or_default()
                        .insert(name.clone(), q.clone());
                }
                self.quotas.entry(ns.clone()).or_default().insert(name, q);
                sync.then_some(ns)
            }
            watcher::Event::Delete(q) => {
                let (ns, name) = names(&value(q));
                if let Some(n) = self.quotas.get_mut(&ns) {
                    n.remove(&name);
                    if n.is_empty() {
                        self.quotas.remove(&ns);
                    }
                }
                None
            }
        }
    }

    /// Takes one event of a measured resource; returns the namespace whose quotas it releases
    /// usage of, if any holds quotas (upstream's replenishment).
    fn on_object(
        &mut self,
        resource: Measured,
        event: watcher::Event<DynamicObject>,
        now: time::OffsetDateTime,
    ) -> Option<String> {
        let evaluator = Evaluator::for_resource(&resource.0, &resource.1)?;
        let (obj, deleted, initial) = match event {
            watcher::Event::InitApply(o) => (o, false, true),
            watcher::Event::Apply(o) => (o, false, false),
            watcher::Event::Delete(o) => (o, true, false),
            watcher::Event::Init | watcher::Event::InitDone => return None,
        };
        let obj = serde_json::to_value(obj).unwrap_or_default();
        let (ns, name) = names(&obj);
        let key = (resource, ns.clone(), name);
        let changed = if deleted {
            self.usage.remove(&key);
            true
        } else {
            let cost = evaluator.usage(&obj, now);
            // An object not seen before is a create (admission charged it) or a re-list.
            let prev = self.usage.insert(key, cost.clone());
            !initial && prev.is_some_and(|p| p != cost)
        };
        (changed && self.quotas.contains_key(&ns)).then_some(ns)
    }

    /// The resources some quota measures.
    fn measured(&self) -> BTreeSet<Measured> {
        self.quotas
            .values()
            .flat_map(|n| n.values())
            .flat_map(quota::evaluators)
            .map(|ev| {
                let (g, p) = ev.resource();
                (g.to_string(), p.to_string())
            })
            .collect()
    }
}

fn to_time(t: jiff::Timestamp) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(t.as_nanosecond())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// Upstream's `syncResourceQuota` for every quota of `namespace`: the status it should have,
/// written where it differs. A resource discovery does not list (yet) is not measured, and its
/// quota names keep their usage.
async fn sync_namespace(ctx: &Context, resources: &Resources, namespace: &str) -> Result<()> {
    let api: Api<ResourceQuota> = Api::namespaced(ctx.client.clone(), namespace);
    for _ in 0..ATTEMPTS {
        let listed = api.list(&ListParams::default()).await?.items;
        if listed.is_empty() {
            return Ok(());
        }
        let values: Vec<Value> = listed
            .iter()
            .map(|q| serde_json::to_value(q).unwrap_or_default())
            .collect();
        let mut needed: Vec<Evaluator> = values.iter().flat_map(quota::evaluators).collect();
        needed.sort();
        needed.dedup();
        let mut objects = BTreeMap::new();
        for ev in needed {
            let (group, plural) = ev.resource();
            let Some(served) = resources.by_resource(group, plural) else {
                continue;
            };
            let objs: Api<DynamicObject> =
                Api::namespaced_with(ctx.client.clone(), namespace, &served.api);
            let items = objs.list(&ListParams::default()).await?.items;
            let items = items
                .into_iter()
                .filter_map(|o| serde_json::to_value(o).ok())
                .collect();
            objects.insert(ev, items);
        }
        let now = to_time(ctx.clock.now());
        let mut raced = false;
        for (mut q, v) in listed.into_iter().zip(values) {
            let status = quota::status(&v, &objects, now);
            if v["status"] == status {
                continue;
            }
            q.status = serde_json::from_value(status).ok();
            let name = q.metadata.name.clone().unwrap_or_default();
            match api.replace_status(&name, &PostParams::default(), &q).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(kube::Error::Api(s)) if s.code == 409 => raced = true,
                Err(err) => return Err(err.into()),
            }
        }
        if !raced {
            return Ok(());
        }
    }
    Ok(())
}

/// Forwards a watch's events into the controller's channel until it closes.
async fn forward<K, S>(
    stream: S,
    tx: mpsc::UnboundedSender<Event>,
    wrap: impl Fn(watcher::Event<K>) -> Event,
) where
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(e) => {
                if tx.send(wrap(e)).is_err() {
                    return;
                }
            }
            Err(err) => tracing::debug!(%err, "resourcequota controller: watch"),
        }
    }
}

/// The `resourcequota` controller.
pub(crate) async fn run(ctx: Arc<Context>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    // Dropped with this future: every watch stops with the controller.
    let mut watches = JoinSet::new();
    let quotas = watcher(
        Api::<ResourceQuota>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .default_backoff();
    watches.spawn(forward(quotas, tx.clone(), Event::Quota));
    let mut monitored = BTreeSet::new();
    let mut resources = Resources::default();
    let mut state = State::default();
    let mut pending: BTreeSet<String> = BTreeSet::new();
    let backoff = Backoff::default();
    let mut retry_at: BTreeMap<String, tokio::time::Instant> = BTreeMap::new();
    let mut resync = tokio::time::Instant::now() + RESYNC;
    // The resources discovery was read again for since the last resync.
    let mut looked_for: BTreeSet<Measured> = BTreeSet::new();
    loop {
        // A quota measuring a resource not watched yet: watched from now on (discovery read
        // again when it does not know the resource, as a custom resource may be new).
        let missing: Vec<Measured> = state.measured().difference(&monitored).cloned().collect();
        // Discovery is read again for a resource it lacked once per resync, not at every event.
        let unknown: Vec<&Measured> = missing
            .iter()
            .filter(|(g, p)| resources.by_resource(g, p).is_none())
            .collect();
        if unknown.iter().any(|m| !looked_for.contains(*m)) {
            looked_for.extend(unknown.into_iter().cloned());
            if let Err(err) = resources.refresh(&ctx.client).await {
                tracing::debug!(%err, "resourcequota controller: discovery");
            }
        }
        for m in missing {
            let Some(served) = resources.by_resource(&m.0, &m.1) else {
                continue;
            };
            let api: Api<DynamicObject> = Api::all_with(ctx.client.clone(), &served.api);
            let stream = watcher(api, watcher::Config::default()).default_backoff();
            let key = m.clone();
            watches.spawn(forward(stream, tx.clone(), move |e| {
                Event::Object(key.clone(), e)
            }));
            monitored.insert(m);
        }
        for ns in std::mem::take(&mut pending) {
            match sync_namespace(&ctx, &resources, &ns).await {
                Ok(()) => {
                    backoff.succeeded(&ns);
                    retry_at.remove(&ns);
                }
                Err(err) => {
                    let delay = backoff.failed(&ns);
                    tracing::info!(namespace = %ns, %err, ?delay, "resourcequota controller: retrying");
                    retry_at.insert(ns, tokio::time::Instant::now() + delay);
                }
            }
        }
        let wake = retry_at
            .values()
            .copied()
            .min()
            .unwrap_or(resync)
            .min(resync);
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {
                let now = tokio::time::Instant::now();
                let due: Vec<String> = retry_at.iter().filter(|(_, at)| **at <= now).map(|(ns, _)| ns.clone()).collect();
                for ns in due {
                    retry_at.remove(&ns);
                    pending.insert(ns);
                }
                if now >= resync {
                    looked_for.clear();
                    pending.extend(state.quotas.keys().cloned());
                    resync = now + RESYNC;
                }
            }
            event = rx.recv() => {
                let mut next = event;
                // What else arrived meanwhile: a burst costs one pass.
                while let Some(event) = next {
                    let ns = match event {
                        Event::Quota(e) => state.on_quota(e),
                        Event::Object(r, e) => state.on_object(r, e, to_time(ctx.clock.now())),
                    };
                    pending.extend(ns);
                    next = rx.try_recv().ok();
                }
            }
        }
    }
}
