//! Events as client-go's recorder writes them (core/v1, one per occurrence here: no
//! aggregation), best effort: a failed write is logged, never an error of the sync.

use std::sync::atomic::{AtomicU64, Ordering};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::Resource;
use kube::api::{Api, PostParams};

use crate::Context;

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// Records an event about `obj` from `component` (e.g. `cronjob-controller`).
pub(crate) async fn record_as<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    component: &str,
    obj: &K,
    type_: &str,
    reason: &str,
    message: &str,
) {
    let meta = obj.meta();
    let ns = meta.namespace.clone().unwrap_or_else(|| "default".into());
    let name = meta.name.clone().unwrap_or_default();
    let now = ctx.clock.now();
    let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let event = Event {
        metadata: ObjectMeta {
            name: Some(format!("{name}.{:x}", now.as_nanosecond() as u64 + n)),
            namespace: Some(ns.clone()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some(K::api_version(&()).into_owned()),
            kind: Some(K::kind(&()).into_owned()),
            name: Some(name),
            namespace: meta.namespace.clone(),
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
            ..ObjectReference::default()
        },
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some(type_.into()),
        source: Some(EventSource {
            component: Some(component.into()),
            host: None,
        }),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        event_time: None::<MicroTime>,
        count: Some(1),
        reporting_component: Some(component.into()),
        reporting_instance: Some(component.into()),
        ..Event::default()
    };
    let api: Api<Event> = Api::namespaced(ctx.client.clone(), &ns);
    if let Err(err) = api.create(&PostParams::default(), &event).await {
        tracing::debug!(%reason, %err, "recording an event");
    }
}
