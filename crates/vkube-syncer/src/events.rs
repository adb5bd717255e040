//! Host events about the syncer's pods appear in the virtual cluster (vcluster's
//! `sync.fromHost.events`): the scheduler's, the kubelet's (pulled, started, back-off, a bad
//! image), naming the virtual pod, so `kubectl describe pod` and `kubectl events` tell the
//! tenant what happened to it.

use crate::{Config, Error, names};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Event, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::watcher;

pub async fn run(config: Config) -> Result<(), Error> {
    let host_events: Api<Event> =
        Api::namespaced(config.host_client.clone(), &config.host_namespace);
    let host_pods: Api<Pod> = Api::namespaced(config.host_client.clone(), &config.host_namespace);
    let mut events = std::pin::pin!(watcher(host_events, watcher::Config::default()));
    while let Some(event) = events.next().await {
        let host_event = match event {
            Ok(watcher::Event::Apply(e) | watcher::Event::InitApply(e)) => e,
            Ok(_) => continue,
            Err(err) => {
                tracing::debug!(%err, "watching host events");
                continue;
            }
        };
        if let Err(err) = copy(&config, &host_pods, &host_event).await {
            tracing::debug!(%err, "copying a host event");
        }
    }
    Ok(())
}

async fn copy(config: &Config, host_pods: &Api<Pod>, host: &Event) -> Result<(), Error> {
    let involved = &host.involved_object;
    if involved.kind.as_deref() != Some("Pod") {
        return Ok(());
    }
    let Some(host_name) = involved.name.as_deref() else {
        return Ok(());
    };
    // Only events of this cluster's own pods, which their annotations name (rule 8).
    let Some(pod) = host_pods.get_opt(host_name).await? else {
        return Ok(());
    };
    let labels = pod.metadata.labels.as_ref();
    if labels.and_then(|l| l.get(names::CLUSTER_LABEL)) != Some(&config.cluster) {
        return Ok(());
    }
    let Some((ns, name, uid)) = names::virtual_of(pod.metadata.annotations.as_ref()) else {
        return Ok(());
    };
    let suffix = host
        .metadata
        .name
        .as_deref()
        .and_then(|n| n.rsplit_once('.'))
        .map(|(_, s)| s)
        .unwrap_or_default();
    let event_name = format!("{name}.{suffix}");
    let wanted = Event {
        metadata: ObjectMeta {
            name: Some(event_name.clone()),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            kind: Some("Pod".into()),
            api_version: Some("v1".into()),
            namespace: Some(ns.clone()),
            name: Some(name.clone()),
            uid: Some(uid),
            field_path: involved.field_path.clone(),
            ..Default::default()
        },
        // The tenant reads its pod's name where the host wrote the host pod's.
        message: host.message.as_ref().map(|m| {
            m.replace(
                &format!("{}/{host_name}", config.host_namespace),
                &format!("{ns}/{name}"),
            )
            .replace(host_name, &name)
        }),
        reason: host.reason.clone(),
        type_: host.type_.clone(),
        count: host.count,
        first_timestamp: host.first_timestamp.clone(),
        last_timestamp: host.last_timestamp.clone(),
        event_time: host.event_time.clone(),
        source: host.source.clone(),
        reporting_component: host.reporting_component.clone(),
        reporting_instance: host.reporting_instance.clone(),
        action: host.action.clone(),
        ..Default::default()
    };
    let virtual_events: Api<Event> = Api::namespaced(config.virtual_client.clone(), &ns);
    match virtual_events.get_opt(&event_name).await? {
        None => match virtual_events.create(&PostParams::default(), &wanted).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        },
        Some(current) if current.count != wanted.count || current.message != wanted.message => {
            let mut next = wanted;
            next.metadata.resource_version = current.metadata.resource_version;
            virtual_events
                .replace(&event_name, &PostParams::default(), &next)
                .await?;
            Ok(())
        }
        Some(_) => Ok(()),
    }
}

/// An event of the syncer's own about a virtual pod (a host refusal, say), as a controller records
/// one; failing to record it is only logged.
pub async fn emit(config: &Config, vpod: &Pod, type_: &str, reason: &str, message: &str) {
    let ns = vpod.metadata.namespace.clone().unwrap_or_default();
    let name = vpod.metadata.name.clone().unwrap_or_default();
    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    let event = Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}.")),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            kind: Some("Pod".into()),
            api_version: Some("v1".into()),
            namespace: Some(ns.clone()),
            name: Some(name),
            uid: vpod.metadata.uid.clone(),
            ..Default::default()
        },
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some(type_.into()),
        count: Some(1),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        source: Some(k8s_openapi::api::core::v1::EventSource {
            component: Some("vkube-syncer".into()),
            host: None,
        }),
        ..Default::default()
    };
    let api: Api<Event> = Api::namespaced(config.virtual_client.clone(), &ns);
    if let Err(err) = api.create(&PostParams::default(), &event).await {
        tracing::debug!(%err, "recording an event");
    }
}
