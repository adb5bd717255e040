//! The decorator: which chain of providers a key goes through, and every `Store` call with its
//! values transformed.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::cipher::{Chain, identity_read};
use super::config::{EncryptionConfig, GroupResource};
use crate::{
    Compaction, Event, KeyValue, ListOptions, ListResult, Result, Revision, Store, StoreError,
    Watch,
};

/// Where resources live; keys outside it (vkube's own records) are never touched.
const REGISTRY: &str = "/registry/";

struct Rule {
    prefix: String,
    /// 0: names the resource, 1: `*.group`, 2: `*.*` (upstream's lookup order).
    rank: u8,
    chain: Arc<Chain>,
}

/// A [`Store`] that encrypts and decrypts the values of the configured resources.
pub struct EncryptedStore {
    inner: Arc<dyn Store>,
    rules: Arc<Rules>,
}

/// The rules, shared with the watches.
struct Rules(Vec<Rule>);

impl EncryptedStore {
    /// Wraps `inner`. `prefixes` gives the store key prefixes of a group-resource of the
    /// config, wildcards included (`*.apps`: every apps resource's; `*.*`: `/registry/`).
    pub fn wrap(
        inner: Arc<dyn Store>,
        config: &EncryptionConfig,
        prefixes: impl Fn(&GroupResource) -> Vec<String>,
    ) -> Arc<dyn Store> {
        let mut rules = Vec::new();
        for (gr, chain) in &config.rules {
            let rank = match (gr.group.as_str(), gr.resource.as_str()) {
                ("*", _) => 2,
                (_, "*") => 1,
                _ => 0,
            };
            let chain = Arc::new(chain.clone());
            for prefix in prefixes(gr) {
                rules.push(Rule {
                    prefix,
                    rank,
                    chain: chain.clone(),
                });
            }
        }
        Arc::new(EncryptedStore {
            inner,
            rules: Arc::new(Rules(rules)),
        })
    }
}

impl Rules {
    /// The providers for `key`, if a rule covers it: the most specific rule, then the longest
    /// prefix.
    fn chain(&self, key: &str) -> Option<&Chain> {
        self.0
            .iter()
            .filter(|r| key.starts_with(&r.prefix))
            .min_by_key(|r| (r.rank, std::cmp::Reverse(r.prefix.len())))
            .map(|r| r.chain.as_ref())
    }

    fn seal(&self, key: &str, value: Vec<u8>) -> Result<Vec<u8>> {
        match self.chain(key) {
            Some(chain) => chain
                .encrypt(key, &value)
                .map_err(|message| StoreError::Transform {
                    key: key.to_string(),
                    message,
                }),
            None => Ok(value),
        }
    }

    /// The plain value of what is stored under `key`. Resources no rule names read as
    /// upstream's default `identity` reads them: encrypted data there is an error too.
    fn plain(&self, key: &str, stored: &[u8]) -> std::result::Result<Vec<u8>, String> {
        match self.chain(key) {
            Some(chain) => chain.decrypt(key, stored),
            None if key.starts_with(REGISTRY) => identity_read(stored),
            None => Ok(stored.to_vec()),
        }
    }

    fn open(&self, mut kv: KeyValue) -> Result<KeyValue> {
        kv.value = self
            .plain(&kv.key, &kv.value)
            .map_err(|message| StoreError::Transform {
                key: kv.key.clone(),
                message,
            })?;
        Ok(kv)
    }

    /// A value read by a list: upstream names the key in its message.
    fn open_listed(&self, mut kv: KeyValue) -> Result<KeyValue> {
        kv.value = self
            .plain(&kv.key, &kv.value)
            .map_err(|e| StoreError::Transform {
                message: format!("unable to transform key {:?}: {e}", kv.key),
                key: kv.key.clone(),
            })?;
        Ok(kv)
    }

    /// Passes through the errors it does not carry a value in; opens the one a conflict carries.
    fn open_error(&self, err: StoreError) -> StoreError {
        match err {
            StoreError::Conflict {
                key,
                expected,
                current,
            } => match self.open(*current) {
                Ok(current) => StoreError::Conflict {
                    key,
                    expected,
                    current: Box::new(current),
                },
                Err(err) => err,
            },
            other => other,
        }
    }
}

/// A watch event with its values opened; one that cannot be is passed on as stored (see the
/// module docs) and logged by key.
fn open_event(rules: &Rules, mut event: Event) -> Event {
    for kv in [&mut event.value, &mut event.prev].into_iter().flatten() {
        match rules.plain(&kv.key, &kv.value) {
            Ok(plain) => kv.value = plain,
            Err(err) => tracing::warn!(key = %kv.key, %err, "watch: cannot decrypt a stored value"),
        }
    }
    event
}

#[async_trait]
impl Store for EncryptedStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn get(&self, key: &str, revision: Option<Revision>) -> Result<Option<KeyValue>> {
        match self.inner.get(key, revision).await? {
            Some(kv) => Ok(Some(self.rules.open(kv)?)),
            None => Ok(None),
        }
    }

    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListResult> {
        let mut result = self.inner.list(prefix, options).await?;
        result.items = std::mem::take(&mut result.items)
            .into_iter()
            .map(|kv| self.rules.open_listed(kv))
            .collect::<Result<_>>()?;
        Ok(result)
    }

    async fn count(&self, prefix: &str, options: ListOptions) -> Result<usize> {
        self.inner.count(prefix, options).await
    }

    async fn create(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> Result<KeyValue> {
        let plain = value.clone();
        let mut kv = self
            .inner
            .create(key, self.rules.seal(key, value)?, ttl)
            .await?;
        kv.value = plain;
        Ok(kv)
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
        ttl: Option<Duration>,
    ) -> Result<KeyValue> {
        let plain = value.clone();
        match self
            .inner
            .update(key, self.rules.seal(key, value)?, expected, ttl)
            .await
        {
            Ok(mut kv) => {
                kv.value = plain;
                Ok(kv)
            }
            Err(err) => Err(self.rules.open_error(err)),
        }
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(KeyValue, Revision)> {
        match self.inner.delete(key, expected).await {
            Ok((kv, revision)) => Ok((self.rules.open(kv)?, revision)),
            Err(err) => Err(self.rules.open_error(err)),
        }
    }

    async fn current_revision(&self) -> Result<Revision> {
        self.inner.current_revision().await
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.inner.compact(revision).await
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<Watch> {
        let watch = self.inner.watch(prefix, from).await?;
        let rules = self.rules.clone();
        Ok(watch.map(move |event| open_event(&rules, event)))
    }

    async fn stale(&self, key: &str, revision: Revision) -> Result<bool> {
        let Some(chain) = self.rules.chain(key) else {
            return Ok(false);
        };
        Ok(match self.inner.get(key, None).await? {
            Some(kv) if kv.mod_revision == revision => !chain.is_current(&kv.value),
            // Changed since: the write will meet a conflict and read again.
            _ => false,
        })
    }

    // The backend's own round: etcd's coordinates compactors through `compact_rev_key`.
    async fn compact_round(&self, last: Compaction) -> Result<Compaction> {
        self.inner.compact_round(last).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::parse;
    use crate::{EventKind, MemoryStore};

    const K1: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
    const K2: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";

    fn config(rules: &str) -> EncryptionConfig {
        parse(
            &format!("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n{rules}"),
            "test",
        )
        .unwrap()
    }

    /// vkube's layout for the few resources these tests name.
    fn prefixes(gr: &GroupResource) -> Vec<String> {
        match (gr.group.as_str(), gr.resource.as_str()) {
            ("*", "*") => vec!["/registry/".into()],
            ("", "*") => vec!["/registry/secrets/".into(), "/registry/configmaps/".into()],
            ("apps", "*") => vec!["/registry/deployments/".into()],
            (g, r) if g.contains('.') => vec![format!("/registry/{g}/{r}/")],
            (_, r) => vec![format!("/registry/{r}/")],
        }
    }

    /// aescbc with key1, then identity, for secrets.
    fn cbc(key: &str) -> String {
        format!(
            "- resources: [secrets]\n  providers:\n  - aescbc: {{keys: [{{name: key1, secret: {key}}}]}}\n  - identity: {{}}\n"
        )
    }

    #[tokio::test]
    async fn configured_values_are_encrypted_in_the_backend_and_plain_above_it() {
        let raw = MemoryStore::new();
        let store = EncryptedStore::wrap(raw.clone(), &config(&cbc(K1)), prefixes);
        let key = "/registry/secrets/ns/s";
        let mut watch = store.watch("/registry/", 0).await.unwrap();
        let created = store
            .create(key, b"{\"v\":1}".to_vec(), None)
            .await
            .unwrap();
        assert_eq!(created.value, b"{\"v\":1}");
        let stored = raw.get(key, None).await.unwrap().unwrap().value;
        assert!(stored.starts_with(b"k8s:enc:aescbc:v1:key1:"));
        assert_eq!(
            store.get(key, None).await.unwrap().unwrap().value,
            b"{\"v\":1}"
        );
        // Not configured: plain in the backend.
        store
            .create("/registry/configmaps/ns/c", b"{}".to_vec(), None)
            .await
            .unwrap();
        assert_eq!(
            raw.get("/registry/configmaps/ns/c", None)
                .await
                .unwrap()
                .unwrap()
                .value,
            b"{}"
        );

        let updated = store
            .update(key, b"{\"v\":2}".to_vec(), created.mod_revision, None)
            .await
            .unwrap();
        // A conflict carries the current value, plain.
        match store
            .update(key, b"x".to_vec(), created.mod_revision, None)
            .await
        {
            Err(StoreError::Conflict { current, .. }) => assert_eq!(current.value, b"{\"v\":2}"),
            other => panic!("{other:?}"),
        }
        let list = store
            .list("/registry/secrets/", ListOptions::default())
            .await
            .unwrap();
        assert_eq!(list.items[0].value, b"{\"v\":2}");
        let (deleted, _) = store.delete(key, Some(updated.mod_revision)).await.unwrap();
        assert_eq!(deleted.value, b"{\"v\":2}");

        let mut seen = Vec::new();
        while seen.len() < 4 {
            let e = watch.next().await.unwrap().unwrap();
            seen.push((e.kind, e.value.map(|v| v.value), e.prev.map(|p| p.value)));
        }
        let v1 = Some(b"{\"v\":1}".to_vec());
        let v2 = Some(b"{\"v\":2}".to_vec());
        assert_eq!(seen[0], (EventKind::Create, v1.clone(), None));
        assert_eq!(seen[2], (EventKind::Update, v2.clone(), v1));
        assert_eq!(seen[3], (EventKind::Delete, None, v2));
    }

    #[tokio::test]
    async fn rotation_and_turning_encryption_on_keep_every_value_readable() {
        let raw = MemoryStore::new();
        // Before any config: plain.
        raw.create("/registry/secrets/ns/old", b"{\"old\":1}".to_vec(), None)
            .await
            .unwrap();
        let on = EncryptedStore::wrap(raw.clone(), &config(&cbc(K1)), prefixes);
        assert_eq!(
            on.get("/registry/secrets/ns/old", None)
                .await
                .unwrap()
                .unwrap()
                .value,
            b"{\"old\":1}"
        );
        on.create("/registry/secrets/ns/k1", b"{\"k1\":1}".to_vec(), None)
            .await
            .unwrap();
        // key2 first, key1 kept for reading.
        let rotated = EncryptedStore::wrap(
            raw.clone(),
            &config(&format!(
                "- resources: [secrets]\n  providers:\n  - aescbc: {{keys: [{{name: key2, secret: {K2}}}, {{name: key1, secret: {K1}}}]}}\n  - identity: {{}}\n"
            )),
            prefixes,
        );
        assert_eq!(
            rotated
                .get("/registry/secrets/ns/k1", None)
                .await
                .unwrap()
                .unwrap()
                .value,
            b"{\"k1\":1}"
        );
        let kv = rotated
            .get("/registry/secrets/ns/old", None)
            .await
            .unwrap()
            .unwrap();
        // Plain under a config that encrypts: an unchanged rewrite must still write it.
        assert!(rotated.stale(&kv.key, kv.mod_revision).await.unwrap());
        let k1 = rotated
            .get("/registry/secrets/ns/k1", None)
            .await
            .unwrap()
            .unwrap();
        assert!(rotated.stale(&k1.key, k1.mod_revision).await.unwrap());
        assert!(!on.stale(&k1.key, k1.mod_revision).await.unwrap());
        rotated
            .update(&kv.key, kv.value, kv.mod_revision, None)
            .await
            .unwrap();
        let stored = raw
            .get("/registry/secrets/ns/old", None)
            .await
            .unwrap()
            .unwrap()
            .value;
        assert!(stored.starts_with(b"k8s:enc:aescbc:v1:key2:"));
    }

    #[tokio::test]
    async fn unreadable_values_are_errors_with_upstreams_words() {
        let raw = MemoryStore::new();
        let on = EncryptedStore::wrap(raw.clone(), &config(&cbc(K1)), prefixes);
        on.create("/registry/secrets/ns/s", b"{}".to_vec(), None)
            .await
            .unwrap();
        // key1 is gone (a key2 of the same provider is there).
        let lost = EncryptedStore::wrap(
            raw.clone(),
            &config(&format!(
                "- resources: [secrets]\n  providers:\n  - aescbc: {{keys: [{{name: key2, secret: {K2}}}]}}\n  - identity: {{}}\n"
            )),
            prefixes,
        );
        let err = lost.get("/registry/secrets/ns/s", None).await.unwrap_err();
        assert!(matches!(err, StoreError::Transform { .. }));
        assert_eq!(
            err.to_string(),
            "no matching key was found for the provided AES transformer"
        );
        let err = lost
            .list("/registry/secrets/", ListOptions::default())
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unable to transform key \"/registry/secrets/ns/s\": no matching key was found for the provided AES transformer"
        );
        // Encryption turned off altogether for secrets: identity refuses encrypted data.
        let off = EncryptedStore::wrap(
            raw.clone(),
            &config("- resources: [configmaps]\n  providers: [{identity: {}}]\n"),
            prefixes,
        );
        assert_eq!(
            off.get("/registry/secrets/ns/s", None)
                .await
                .unwrap_err()
                .to_string(),
            "identity transformer tried to read encrypted data"
        );
        // A watch passes the event on (as stored) instead of ending.
        let mut watch = lost.watch("/registry/", 0).await.unwrap();
        let event = watch.next().await.unwrap().unwrap();
        assert!(
            event
                .value
                .unwrap()
                .value
                .starts_with(b"k8s:enc:aescbc:v1:key1:")
        );
        // The data is still there for the right key.
        assert_eq!(
            on.get("/registry/secrets/ns/s", None)
                .await
                .unwrap()
                .unwrap()
                .value,
            b"{}"
        );
    }

    #[tokio::test]
    async fn the_most_specific_rule_wins() {
        let raw = MemoryStore::new();
        let store = EncryptedStore::wrap(
            raw.clone(),
            &config(&format!(
                "- resources: [secrets]\n  providers: [{{secretbox: {{keys: [{{name: s, secret: {K1}}}]}}}}]\n- resources: ['*.apps']\n  providers: [{{aesgcm: {{keys: [{{name: g, secret: {K1}}}]}}}}]\n- resources: ['*.*']\n  providers: [{{aescbc: {{keys: [{{name: c, secret: {K1}}}]}}}}]\n"
            )),
            prefixes,
        );
        for (key, prefix) in [
            ("/registry/secrets/a/b", "k8s:enc:secretbox:v1:s:"),
            ("/registry/deployments/a/b", "k8s:enc:aesgcm:v1:g:"),
            ("/registry/pods/a/b", "k8s:enc:aescbc:v1:c:"),
        ] {
            store.create(key, b"{}".to_vec(), None).await.unwrap();
            let stored = raw.get(key, None).await.unwrap().unwrap().value;
            assert!(stored.starts_with(prefix.as_bytes()), "{key}");
            assert_eq!(store.get(key, None).await.unwrap().unwrap().value, b"{}");
        }
        // vkube's own records outside /registry/ are never touched.
        store
            .create("/vkube/x", b"raw".to_vec(), None)
            .await
            .unwrap();
        assert_eq!(
            raw.get("/vkube/x", None).await.unwrap().unwrap().value,
            b"raw"
        );
    }
}
