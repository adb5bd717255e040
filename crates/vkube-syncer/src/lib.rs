//! The syncer: a virtual cluster's pods run on a host cluster (DESIGN rules 7–10).
//!
//! It is a client of both clusters through the `kube` crate: of the virtual cluster through
//! vkube's own API (so what it writes passes the same request path as any client's), and of the
//! host cluster with the credentials it was given, inside one host namespace. It runs on the
//! leader only. Its state lives in the two clusters: every decision is recomputed from the
//! virtual pod, the host pod and the labels and annotations that tie them, so a restart, a
//! failover or a missed event converges on the next reconcile or resync.
#![forbid(unsafe_code)]

mod access;
mod configs;
pub mod dns;
mod events;
#[cfg(test)]
mod mock;
pub mod names;
mod nodes;
mod pods;
pub mod services;
mod tokens;
pub mod translate;
mod volumes;

use std::time::Duration;

pub use kube::Client;

/// What the syncer syncs: vcluster.yaml's `sync` keys that vkube honours, with vcluster's
/// defaults. (`toHost.endpoints` is not among them: the virtual cluster's Endpoints and
/// EndpointSlices are written by the endpoint controllers of `vkube-controllers`, from the pod
/// IPs and readiness that the syncer copies into the virtual pods' status.)
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub pods: bool,
    pub services: bool,
    pub persistent_volume_claims: bool,
    /// `fromHost.events`: host events about synced pods are copied.
    pub events: bool,
    /// `fromHost.nodes.enabled`: every host node (matching `node_labels`) is mirrored, not only
    /// those that run virtual pods.
    pub all_nodes: bool,
    pub node_labels: std::collections::BTreeMap<String, String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            pods: true,
            services: true,
            persistent_volume_claims: true,
            events: true,
            all_nodes: false,
            node_labels: Default::default(),
        }
    }
}

/// What the syncer needs to run.
#[derive(Clone)]
pub struct Config {
    /// The virtual cluster (vkube's own API).
    pub virtual_client: Client,
    /// The host cluster.
    pub host_client: Client,
    /// The host namespace every host object lives in.
    pub host_namespace: String,
    /// The virtual cluster's name (`--name`), in every host object's ownership label.
    pub cluster: String,
    /// How often everything is compared again, events or not.
    pub resync: Duration,
    /// The address at which host pods reach vkube's API (443) and DNS (53): the ClusterIP of a
    /// host Service in the host namespace. `None`: pods cannot reach the virtual API.
    pub vkube_ip: Option<String>,
    /// What to sync.
    pub settings: Settings,
}

impl Config {
    /// What a host pod needs to know beside its virtual pod.
    pub fn environment(&self) -> translate::Environment {
        translate::Environment {
            cluster: self.cluster.clone(),
            host_namespace: self.host_namespace.clone(),
            vkube_ip: self.vkube_ip.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Invalid(String),
}

/// Replaces an object's status in the virtual cluster. `Ok(false)`: the object changed or went
/// meanwhile (a conflict is no error; the caller retries soon rather than at the next resync).
async fn write_status<K>(api: &kube::Api<K>, next: &K) -> Result<bool, Error>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = kube::ResourceExt::name_any(next);
    match api
        .replace_status(&name, &kube::api::PostParams::default(), next)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Deletes exactly the object that was read (its uid as precondition): one that is gone, or was
/// replaced by another of the same name meanwhile, counts as done.
async fn delete_exact<K>(api: &kube::Api<K>, obj: &K) -> Result<(), Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let params = kube::api::DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: obj.meta().uid.clone(),
            resource_version: None,
        }),
        ..kube::api::DeleteParams::default()
    };
    let name = obj.meta().name.clone().unwrap_or_default();
    match api.delete(&name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes the host object `host_name` if it is the copy of the virtual object with `uid` (its
/// annotations say so; another object's copy is never touched).
async fn delete_copy_of<K>(
    api: &kube::Api<K>,
    host_name: &str,
    uid: Option<&str>,
) -> Result<(), Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let Some(host) = api.get_opt(host_name).await? else {
        return Ok(());
    };
    match names::virtual_of(host.meta().annotations.as_ref()) {
        Some((_, _, u)) if Some(u.as_str()) == uid => delete_exact(api, &host).await,
        _ => Ok(()),
    }
}

/// A controller of the virtual objects of kind `K` (all namespaces) that also reconciles a
/// virtual object when its host copy in the host namespace changes (found by the ownership labels
/// of `kind`, mapped back by the ownership annotations).
fn paired_controller<K>(config: &Config, kind: &str) -> kube::runtime::Controller<K>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let virt: kube::Api<K> = kube::Api::all(config.virtual_client.clone());
    let host: kube::Api<K> =
        kube::Api::namespaced(config.host_client.clone(), &config.host_namespace);
    let selector = names::selector(kind, &config.cluster);
    kube::runtime::Controller::new(virt, kube::runtime::watcher::Config::default()).watches(
        host,
        kube::runtime::watcher::Config::default().labels(&selector),
        |h: K| {
            let (ns, name, _) = names::virtual_of(h.meta().annotations.as_ref())?;
            Some(kube::runtime::reflector::ObjectRef::new(&name).within(&ns))
        },
    )
}

/// Runs the syncer until the task is aborted (the replica stops leading) or a watch cannot be
/// set up at all.
pub async fn run(config: Config) -> Result<(), Error> {
    if config.cluster.is_empty() || config.cluster.len() > 63 {
        return Err(Error::Invalid(format!(
            "the virtual cluster name {:?} must be 1 to 63 characters (it is a label value)",
            config.cluster
        )));
    }
    tracing::info!(
        host_namespace = %config.host_namespace,
        cluster = %config.cluster,
        "syncer started"
    );
    // What the host refuses is found out afresh in each run (access.rs).
    access::start(&config);
    // Each part runs while it is enabled; one that is off waits forever (never ends the select).
    let on = |enabled: bool, part: futures_util::future::BoxFuture<'static, Result<(), Error>>| async move {
        if enabled {
            part.await
        } else {
            std::future::pending().await
        }
    };
    let s = config.settings.clone();
    use futures_util::FutureExt;
    tokio::select! {
        r = on(s.pods, pods::run(config.clone()).boxed()) => r,
        r = nodes::run(config.clone()) => r,
        r = on(s.events, events::run(config.clone()).boxed()) => r,
        r = configs::run::<k8s_openapi::api::core::v1::ConfigMap>(config.clone()) => r,
        r = configs::run::<k8s_openapi::api::core::v1::Secret>(config.clone()) => r,
        r = on(s.services, services::run(config.clone()).boxed()) => r,
        r = on(s.services, services::follow_deletes(config.clone()).boxed()) => r,
        r = on(s.persistent_volume_claims, volumes::run(config.clone()).boxed()) => r,
    }
}
