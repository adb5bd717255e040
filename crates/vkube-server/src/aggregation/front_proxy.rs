//! The front-proxy (requestheader) identity: a CA of its own and the one client certificate it
//! signs, which vkube presents to aggregated API servers. Both are created once, by the first
//! replica, and kept sealed in the store like the cluster CA (DESIGN rule 5): every replica must
//! present a certificate that the CA published in `kube-system/extension-apiserver-authentication`
//! verifies.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use vkube_store::{Store, StoreError};

use crate::cluster_secret::ClusterSecret;
use crate::identity::{Ca, CertKey, IdentityError};

/// Where the front-proxy identity lives in the store (sealed with the cluster secret).
pub const RECORD: &str = "/vkube/identity/front-proxy";
/// The client certificate's common name: upstream's `requestheader-allowed-names`.
pub const CLIENT_NAME: &str = "front-proxy-client";
pub const USER_HEADER: &str = "X-Remote-User";
pub const GROUP_HEADER: &str = "X-Remote-Group";
pub const EXTRA_PREFIX: &str = "X-Remote-Extra-";

#[derive(Clone, Serialize, Deserialize)]
pub struct FrontProxy {
    pub ca: Ca,
    pub client_cert_pem: String,
    pub client_key_pem: String,
}

impl FrontProxy {
    /// Reads the identity from the store, or creates it there (a racing loser adopts the
    /// winner's).
    pub async fn load_or_create(
        store: &dyn Store,
        secret: &ClusterSecret,
    ) -> Result<FrontProxy, IdentityError> {
        if let Some(kv) = store.get(RECORD, None).await? {
            let plain = secret
                .open(RECORD, &kv.value)?
                .ok_or_else(|| IdentityError::Corrupt(format!("{RECORD}: not sealed")))?;
            return serde_json::from_slice(&plain)
                .map_err(|e| IdentityError::Corrupt(format!("{RECORD}: {e}")));
        }
        let ca = Ca::generate_named("front-proxy-ca")?;
        // As long-lived as the CA: the record is never renewed per replica.
        let now = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
        let CertKey { cert_pem, key_pem } =
            ca.client_cert_for(CLIENT_NAME, &[], (now, now + time::Duration::days(3650)))?;
        let proxy = FrontProxy {
            ca,
            client_cert_pem: cert_pem,
            client_key_pem: key_pem,
        };
        let plain =
            serde_json::to_vec(&proxy).map_err(|e| IdentityError::Corrupt(e.to_string()))?;
        match store
            .create(RECORD, secret.seal(RECORD, &plain), None)
            .await
        {
            Ok(_) => Ok(proxy),
            Err(StoreError::AlreadyExists { .. }) => {
                Box::pin(FrontProxy::load_or_create(store, secret)).await
            }
            Err(err) => Err(err.into()),
        }
    }

    /// The data of `kube-system/extension-apiserver-authentication`, with upstream's keys.
    /// `client-ca-file` is the cluster CA (client certificates vkube accepts).
    pub fn configmap_data(&self, cluster_ca_pem: &str) -> Value {
        json!({
            "client-ca-file": cluster_ca_pem,
            "requestheader-client-ca-file": self.ca.cert_pem,
            "requestheader-allowed-names": json!([CLIENT_NAME]).to_string(),
            "requestheader-extra-headers-prefix": json!([EXTRA_PREFIX]).to_string(),
            "requestheader-group-headers": json!([GROUP_HEADER]).to_string(),
            "requestheader-username-headers": json!([USER_HEADER]).to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vkube_store::MemoryStore;

    fn secret() -> ClusterSecret {
        ClusterSecret::derive(
            b"0123456789abcdef0123456789abcdef",
            crate::cluster_secret::Source::CaKey,
        )
    }

    #[tokio::test]
    async fn created_once_sealed_and_shared_by_every_replica() {
        let store = MemoryStore::new();
        let first = FrontProxy::load_or_create(store.as_ref(), &secret())
            .await
            .unwrap();
        let second = FrontProxy::load_or_create(store.as_ref(), &secret())
            .await
            .unwrap();
        assert_eq!(first.client_cert_pem, second.client_cert_pem);
        assert_eq!(first.ca.cert_pem, second.ca.cert_pem);
        let stored = store.get(RECORD, None).await.unwrap().unwrap();
        assert!(crate::cluster_secret::is_sealed(&stored.value));
        assert!(!String::from_utf8_lossy(&stored.value).contains("PRIVATE KEY"));
        let data = first.configmap_data("CLUSTER CA");
        assert_eq!(data["client-ca-file"], "CLUSTER CA");
        assert_eq!(
            data["requestheader-allowed-names"],
            "[\"front-proxy-client\"]"
        );
        assert_eq!(
            data["requestheader-extra-headers-prefix"],
            "[\"X-Remote-Extra-\"]"
        );
        assert_eq!(data["requestheader-group-headers"], "[\"X-Remote-Group\"]");
        assert_eq!(
            data["requestheader-username-headers"],
            "[\"X-Remote-User\"]"
        );
    }
}
