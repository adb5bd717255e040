//! Service-account tokens of pods that run on the host (issue item 3).
//!
//! A kubelet of the virtual cluster would ask the virtual API for a token bound to the pod
//! (TokenRequest), write it into the projected volume and ask again when 80 % of its lifetime has
//! passed. The host kubelet cannot: it knows only the host. So the syncer does the kubelet's part.
//! It asks vkube for each of the pod's token sources, bound to the virtual pod, with the
//! lifetime and audience the pod asks for, and keeps them in one host Secret per pod. The host pod's
//! projected volume reads that Secret, and the host kubelet refreshes the files when the Secret
//! changes. No token is written into an annotation or a log: the Secret's only annotation is
//! when the next refresh is due. The Secret is owned by the host pod, so the host's garbage
//! collector removes it with the pod.

use crate::translate::{self, TokenSource};
use crate::{Config, Error, names};
use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use std::collections::BTreeMap;
use std::time::Duration;

/// When the tokens in a token Secret are due for renewal (RFC 3339), so a restarted syncer knows
/// without reading the tokens.
pub const REFRESH_ANNOTATION: &str = "vkube.dev/refresh-at";

/// Makes sure the host Secret of `vpod`'s tokens exists, holds a token for each source, is fresh,
/// and is owned by `host_pod` once there is one; `new_pod`: the pod was never seen before.
/// Returns how long until the next refresh, or
/// `None` when the pod asks for no token.
pub async fn ensure(
    config: &Config,
    vpod: &Pod,
    host_pod: Option<&Pod>,
    new_pod: bool,
) -> Result<Option<Duration>, Error> {
    let sources = translate::token_sources(vpod);
    if sources.is_empty() {
        return Ok(None);
    }
    let m = &vpod.metadata;
    let (ns, name) = (
        m.namespace.clone().unwrap_or_default(),
        m.name.clone().unwrap_or_default(),
    );
    let uid = m.uid.clone().unwrap_or_default();
    // What this process last wrote or checked: no host read until the refresh is due (every
    // status change of a pod reconciles it).
    let owner_uid = host_pod.and_then(|p| p.metadata.uid.clone());
    if let Some(at) = known(&uid, owner_uid.as_deref()) {
        return Ok(Some(until(at)));
    }
    let secret_name = translate::token_secret_name(&ns, &name, &config.cluster);
    let secrets: Api<Secret> = Api::namespaced(config.host_client.clone(), &config.host_namespace);
    // A new pod's Secret is written without reading first (one that exists answers 409, and the
    // next reconcile reads it).
    let current = if new_pod {
        None
    } else {
        secrets.get_opt(&secret_name).await?
    };
    let owner = host_pod.map(owner_reference);
    if let Some(current) = &current {
        // A Secret of this name that no virtual pod owns is not the syncer's to overwrite.
        if names::virtual_of(current.metadata.annotations.as_ref()).is_none() {
            return Err(Error::Invalid(format!(
                "host secret {secret_name} exists and is not the syncer's"
            )));
        }
        let fresh = refresh_at(current).filter(|at| *at > Timestamp::now());
        let same_pod = names::virtual_of(current.metadata.annotations.as_ref())
            .is_some_and(|(_, _, u)| u == uid);
        let complete = current
            .data
            .as_ref()
            .is_some_and(|d| sources.iter().all(|s| d.contains_key(&s.key)));
        let owned = owner.is_none()
            || current.metadata.owner_references.as_ref().is_some_and(|o| {
                o.iter()
                    .any(|o| Some(&o.uid) == owner.as_ref().map(|w| &w.uid))
            });
        if let Some(at) = fresh
            && same_pod
            && complete
        {
            if !owned {
                let mut next = current.clone();
                next.metadata.owner_references = owner.clone().map(|o| vec![o]);
                secrets
                    .replace(&secret_name, &PostParams::default(), &next)
                    .await?;
            }
            remember(&uid, at, owner_uid.as_deref());
            return Ok(Some(until(at)));
        }
    }
    let account = vpod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let accounts: Api<ServiceAccount> = Api::namespaced(config.virtual_client.clone(), &ns);
    let mut data = BTreeMap::new();
    let mut next_refresh: Option<Timestamp> = None;
    for source in &sources {
        let (token, at) = issue(&accounts, &account, &name, &uid, source).await?;
        data.insert(source.key.clone(), ByteString(token.into_bytes()));
        next_refresh = Some(next_refresh.map_or(at, |n| n.min(at)));
    }
    let at = next_refresh.unwrap_or_else(Timestamp::now);
    let mut annotations = names::ownership_annotations(&ns, &name, &uid);
    annotations.insert(REFRESH_ANNOTATION.into(), at.to_string());
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(secret_name.clone()),
            namespace: Some(config.host_namespace.clone()),
            labels: Some(names::ownership_labels("PodToken", &config.cluster)),
            annotations: Some(annotations),
            owner_references: owner.map(|o| vec![o]),
            resource_version: current
                .as_ref()
                .and_then(|c| c.metadata.resource_version.clone()),
            ..Default::default()
        },
        data: Some(data),
        type_: Some("Opaque".into()),
        ..Default::default()
    };
    let written = match current {
        Some(_) => {
            secrets
                .replace(&secret_name, &PostParams::default(), &secret)
                .await
        }
        None => secrets.create(&PostParams::default(), &secret).await,
    };
    match written {
        Ok(_) => {
            tracing::debug!(namespace = %ns, pod = %name, refresh_at = %at, "pod tokens issued");
            remember(&uid, at, owner_uid.as_deref());
            Ok(Some(until(at)))
        }
        // Written meanwhile by an earlier reconcile: look again soon.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(Some(Duration::from_millis(200))),
        Err(e) => Err(e.into()),
    }
}

/// One token, bound to the virtual pod, and when a kubelet would renew it: after 80 % of its
/// lifetime, or after 24 h, whichever comes first.
async fn issue(
    accounts: &Api<ServiceAccount>,
    account: &str,
    pod: &str,
    uid: &str,
    source: &TokenSource,
) -> Result<(String, Timestamp), Error> {
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: source.audience.clone().into_iter().collect(),
            expiration_seconds: Some(source.expiration_seconds),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod.into()),
                uid: Some(uid.into()),
            }),
        },
        ..Default::default()
    };
    let issued = Timestamp::now();
    let answer = accounts
        .create_token_request(account, &PostParams::default(), &request)
        .await?;
    let status = answer
        .status
        .ok_or_else(|| Error::Invalid("TokenRequest answered without a token".into()))?;
    let lifetime = status
        .expiration_timestamp
        .0
        .duration_since(issued)
        .max(SignedDuration::from_secs(60));
    let renew = SignedDuration::from_secs_f64(lifetime.as_secs_f64() * 0.8)
        .min(SignedDuration::from_hours(24));
    let at = issued.checked_add(renew).unwrap_or(issued);
    Ok((status.token, at))
}

/// Per virtual pod uid: when its tokens are due, and the host pod that owns their Secret.
type Known = std::collections::HashMap<String, (Timestamp, Option<String>)>;

fn known_tokens() -> &'static std::sync::Mutex<Known> {
    static KNOWN: std::sync::OnceLock<std::sync::Mutex<Known>> = std::sync::OnceLock::new();
    KNOWN.get_or_init(Default::default)
}

/// The refresh time of a pod's tokens known fresh, owned by `owner` (when there is one).
fn known(uid: &str, owner: Option<&str>) -> Option<Timestamp> {
    let known = known_tokens().lock().unwrap_or_else(|e| e.into_inner());
    let (at, owned_by) = known.get(uid)?;
    let owned = owner.is_none() || owned_by.as_deref() == owner;
    (owned && *at > Timestamp::now()).then_some(*at)
}

fn remember(uid: &str, at: Timestamp, owner: Option<&str>) {
    let mut known = known_tokens().lock().unwrap_or_else(|e| e.into_inner());
    known.insert(uid.to_string(), (at, owner.map(str::to_string)));
}

fn forget(uid: &str) {
    known_tokens()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(uid);
}

fn refresh_at(secret: &Secret) -> Option<Timestamp> {
    secret
        .metadata
        .annotations
        .as_ref()?
        .get(REFRESH_ANNOTATION)?
        .parse()
        .ok()
}

fn until(at: Timestamp) -> Duration {
    let left = at.duration_since(Timestamp::now());
    Duration::try_from(left).unwrap_or(Duration::ZERO)
}

fn owner_reference(pod: &Pod) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        controller: None,
        block_owner_deletion: None,
    }
}

/// Deletes the token Secret of the virtual pod with `uid`, if it is that pod's (a pod deleted
/// before its host pod existed leaves no owner for the host's garbage collector).
pub async fn delete(config: &Config, secret_name: &str, uid: &str) -> Result<(), Error> {
    forget(uid);
    let secrets: Api<Secret> = Api::namespaced(config.host_client.clone(), &config.host_namespace);
    let Some(secret) = secrets.get_opt(secret_name).await? else {
        return Ok(());
    };
    if names::virtual_of(secret.metadata.annotations.as_ref()).is_none_or(|(_, _, u)| u != uid) {
        return Ok(());
    }
    crate::delete_exact(&secrets, &secret).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_tokens_need_the_same_owner_and_a_future_refresh() {
        let later = Timestamp::now()
            .checked_add(SignedDuration::from_secs(600))
            .unwrap();
        remember("u-known", later, None);
        assert_eq!(known("u-known", None), Some(later));
        // The host pod now exists: the Secret's owner must be set first.
        assert_eq!(known("u-known", Some("host-1")), None);
        remember("u-known", later, Some("host-1"));
        assert_eq!(known("u-known", Some("host-1")), Some(later));
        assert_eq!(known("u-known", Some("host-2")), None);
        let past = Timestamp::now()
            .checked_sub(SignedDuration::from_secs(1))
            .unwrap();
        remember("u-known", past, Some("host-1"));
        assert_eq!(known("u-known", Some("host-1")), None);
        forget("u-known");
        assert_eq!(known("u-known", None), None);
    }
}
