//! ConfigMaps and Secrets that pods use (vcluster's `sync.toHost.configMaps/secrets` with
//! `all: false`): copied to the host under their host names before the pod that uses them, kept
//! in step when they change, and deleted with the virtual object.

use crate::{Config, Error, names};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

/// A kind whose objects the syncer copies: what the copy holds of the original.
pub trait Copied:
    kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + Serialize
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
    const KIND: &'static str;
    /// The host copy: the payload under `meta`.
    fn copy_with(&self, meta: ObjectMeta) -> Self;
    /// Whether two objects hold the same payload.
    fn same_payload(&self, other: &Self) -> bool;
    /// Immutable objects cannot take a new payload: their copy is replaced.
    fn immutable(&self) -> bool;
}

impl Copied for ConfigMap {
    const KIND: &'static str = "ConfigMap";
    fn copy_with(&self, meta: ObjectMeta) -> Self {
        ConfigMap {
            metadata: meta,
            data: self.data.clone(),
            binary_data: self.binary_data.clone(),
            immutable: self.immutable,
        }
    }
    fn same_payload(&self, other: &Self) -> bool {
        self.data == other.data
            && self.binary_data == other.binary_data
            && self.immutable == other.immutable
    }
    fn immutable(&self) -> bool {
        self.immutable == Some(true)
    }
}

impl Copied for Secret {
    const KIND: &'static str = "Secret";
    fn copy_with(&self, meta: ObjectMeta) -> Self {
        Secret {
            metadata: meta,
            data: self.data.clone(),
            string_data: None,
            type_: self.type_.clone(),
            immutable: self.immutable,
        }
    }
    fn same_payload(&self, other: &Self) -> bool {
        self.data == other.data && self.type_ == other.type_ && self.immutable == other.immutable
    }
    fn immutable(&self) -> bool {
        self.immutable == Some(true)
    }
}

/// The host copy of a virtual object.
fn host_copy<K: Copied>(obj: &K, config: &Config) -> K {
    let meta = obj.meta();
    let (ns, name) = (
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
    );
    let mut labels = names::tenant_only(meta.labels.as_ref());
    labels.extend(names::ownership_labels(K::KIND, &config.cluster));
    let mut annotations =
        names::ownership_annotations(ns, name, meta.uid.as_deref().unwrap_or_default());
    annotations.extend(names::tenant_only(meta.annotations.as_ref()));
    obj.copy_with(ObjectMeta {
        name: Some(names::host_name(K::KIND, ns, name, &config.cluster)),
        namespace: Some(config.host_namespace.clone()),
        labels: Some(labels),
        annotations: Some(annotations),
        ..Default::default()
    })
}

/// Makes the host copy of `namespace`/`name` current. `Ok(false)`: the virtual object does not
/// exist (the pod waits for it, as a kubelet would).
pub async fn ensure<K: Copied>(
    config: &Config,
    namespace: &str,
    name: &str,
) -> Result<bool, Error> {
    let virtual_api: Api<K> = Api::namespaced(config.virtual_client.clone(), namespace);
    let Some(obj) = virtual_api.get_opt(name).await? else {
        return Ok(false);
    };
    refresh(config, &obj).await?;
    Ok(true)
}

/// Writes the host copy of `obj` if it is missing or stale.
async fn refresh<K: Copied>(config: &Config, obj: &K) -> Result<(), Error> {
    let host_api: Api<K> = Api::namespaced(config.host_client.clone(), &config.host_namespace);
    let wanted = host_copy(obj, config);
    let host_name = wanted.meta().name.clone().unwrap_or_default();
    match host_api.get_opt(&host_name).await? {
        None => match host_api.create(&PostParams::default(), &wanted).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        },
        Some(current) => {
            let (have, want) = (
                names::virtual_of(current.meta().annotations.as_ref()),
                names::virtual_of(wanted.meta().annotations.as_ref()),
            );
            // The copy of an earlier object of the same name (deleted and made again while no
            // syncer ran): it goes, and the next reconcile makes the new copy.
            if let (Some((hns, hname, _)), Some((wns, wname, _))) = (&have, &want)
                && (hns, hname) == (wns, wname)
                && have != want
            {
                crate::delete_exact(&host_api, &current).await?;
                return Err(Error::Invalid(format!(
                    "host {} {host_name} was an earlier object's copy; replacing it",
                    K::KIND
                )));
            }
            let ours = have == want;
            if !ours {
                // Another object's copy (or none of ours): left alone (DESIGN rule 8).
                return Err(Error::Invalid(format!(
                    "host {} {host_name} belongs to another object",
                    K::KIND
                )));
            }
            if current.same_payload(&wanted) {
                return Ok(());
            }
            if current.immutable() {
                crate::delete_exact(&host_api, &current).await?;
                host_api.create(&PostParams::default(), &wanted).await?;
                return Ok(());
            }
            let mut next = wanted;
            next.meta_mut().resource_version = current.meta().resource_version.clone();
            host_api
                .replace(&host_name, &PostParams::default(), &next)
                .await?;
            Ok(())
        }
    }
}

/// Follows the virtual objects of kind `K`: a change reaches an existing host copy (copies are
/// made only for pods that use them), a delete deletes it.
pub async fn run<K: Copied>(config: Config) -> Result<(), Error> {
    tokio::select! {
        r = follow::<K>(config.clone()) => r,
        () = sweep::<K>(config) => Ok(()),
    }
}

async fn follow<K: Copied>(config: Config) -> Result<(), Error> {
    let virtual_api: Api<K> = Api::all(config.virtual_client.clone());
    let host_api: Api<K> = Api::namespaced(config.host_client.clone(), &config.host_namespace);
    let mut events = std::pin::pin!(watcher(virtual_api, watcher::Config::default()));
    while let Some(event) = events.next().await {
        let result = match event {
            Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) => {
                follow_change(&config, &host_api, &obj).await
            }
            Ok(watcher::Event::Delete(obj)) => follow_delete(&config, &host_api, &obj).await,
            Ok(_) => Ok(()),
            Err(err) => {
                tracing::debug!(%err, kind = K::KIND, "watching virtual objects");
                Ok(())
            }
        };
        if let Err(err) = result {
            tracing::warn!(%err, kind = K::KIND, "syncing a copy to the host");
        }
    }
    Ok(())
}

/// The host name of a virtual object's copy.
fn host_name_of<K: Copied>(obj: &K, config: &Config) -> String {
    let meta = obj.meta();
    names::host_name(
        K::KIND,
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
        &config.cluster,
    )
}

async fn follow_change<K: Copied>(
    config: &Config,
    host_api: &Api<K>,
    obj: &K,
) -> Result<(), Error> {
    let host_name = host_name_of(obj, config);
    if host_api.get_opt(&host_name).await?.is_some() {
        refresh(config, obj).await?;
    }
    Ok(())
}

async fn follow_delete<K: Copied>(
    config: &Config,
    host_api: &Api<K>,
    obj: &K,
) -> Result<(), Error> {
    let meta = obj.meta();
    let host_name = host_name_of(obj, config);
    let Some(current) = host_api.get_opt(&host_name).await? else {
        return Ok(());
    };
    match names::virtual_of(current.meta().annotations.as_ref()) {
        Some((_, _, uid)) if Some(uid.as_str()) == meta.uid.as_deref() => {
            crate::delete_exact(host_api, &current).await
        }
        _ => Ok(()),
    }
}

/// Host copies whose virtual object is gone (a delete missed while no syncer ran): deleted,
/// after asking the virtual API itself.
async fn sweep<K: Copied>(config: Config) {
    let host_api: Api<K> = Api::namespaced(config.host_client.clone(), &config.host_namespace);
    let selector = names::selector(K::KIND, &config.cluster);
    loop {
        tokio::time::sleep(config.resync.min(std::time::Duration::from_secs(10))).await;
        let Ok(list) = host_api
            .list(&kube::api::ListParams::default().labels(&selector))
            .await
        else {
            continue;
        };
        for copy in list.items {
            let Some((ns, name, uid)) = names::virtual_of(copy.meta().annotations.as_ref()) else {
                continue;
            };
            let virtual_api: Api<K> = Api::namespaced(config.virtual_client.clone(), &ns);
            match virtual_api.get_opt(&name).await {
                Ok(Some(v)) if v.meta().uid.as_deref() == Some(uid.as_str()) => {}
                Ok(_) => {
                    if let Err(err) = crate::delete_exact(&host_api, &copy).await {
                        tracing::warn!(%err, kind = K::KIND, "deleting an orphaned host copy");
                    }
                }
                Err(err) => tracing::debug!(%err, "orphan sweep"),
            }
        }
    }
}
