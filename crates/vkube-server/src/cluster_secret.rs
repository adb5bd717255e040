//! The cluster secret: what keeps the cluster's identity (the CA key, the service-account signing
//! key) sealed in the store (DESIGN rule 5). Whoever can read the store (an etcd shared with other
//! clusters, a PostgreSQL database, a backup) sees only ciphertext; minting a `system:masters`
//! certificate also needs this secret, which lives outside the store and is the same for every
//! replica.
//!
//! Where the secret comes from, first match wins:
//! 1. `--identity-secret-file`: any file of at least 32 bytes (in a StatefulSet, one Secret
//!    mounted in every replica);
//! 2. the CA key given with `--ca-key-file`: already a secret every replica shares (the chart's
//!    `NAME-certs` Secret), and the one thing the sealing exists to protect;
//! 3. `DATA-DIR/identity-secret`, created on the first start of a cluster whose store holds no
//!    sealed identity yet. That suits the default single replica; a second replica on the same
//!    store without the secret is refused, naming the flag.
//!
//! A record is sealed with AES-256-GCM under a key derived from the secret by HKDF-SHA256. The
//! record's store key is the additional authenticated data, so a sealed CA cannot be moved to
//! the service-account key's place. A store written by an older vkube holds the records in plain
//! text; they are read once and sealed in place.

use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use vkube_store::Store;

use crate::identity::IdentityError;

/// What a sealed record starts with; a record without it is a plain one from an older vkube.
const SEALED: &[u8] = b"vkube:enc:aesgcm:v1:";
/// HKDF's salt and info: a new scheme gets new ones, so keys never carry over between schemes.
const SALT: &[u8] = b"vkube cluster secret";
const INFO: &[u8] = b"identity sealing v1";
/// The shortest secret a file may hold: 256 bits.
pub const MIN_LEN: usize = 32;
/// The file a replica creates in its data dir when given no secret.
pub const DATA_DIR_FILE: &str = "identity-secret";

/// Where a secret came from, for messages (never the secret itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// `--identity-secret-file`.
    Flag(PathBuf),
    /// The CA key of `--ca-key-file`.
    CaKey,
    /// `DATA-DIR/identity-secret`.
    DataDir(PathBuf),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Flag(path) => write!(f, "--identity-secret-file {}", path.display()),
            Source::CaKey => f.write_str("the CA key of --ca-key-file"),
            Source::DataDir(path) => write!(f, "{} (created by this replica)", path.display()),
        }
    }
}

/// The key that seals the identity, and where its secret came from. Its `Debug` shows only
/// the source.
pub struct ClusterSecret {
    key: LessSafeKey,
    pub source: Source,
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSecret")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl ClusterSecret {
    /// The sealing key for `material` (the secret's bytes).
    pub fn derive(material: &[u8], source: Source) -> ClusterSecret {
        let prk = Salt::new(HKDF_SHA256, SALT).extract(material);
        let mut key = [0u8; 32];
        prk.expand(&[INFO], HKDF_SHA256)
            .and_then(|okm| okm.fill(&mut key))
            .expect("32 bytes is HKDF-SHA256's own output length");
        let key = UnboundKey::new(&AES_256_GCM, &key).expect("a 32-byte AES-256 key");
        ClusterSecret {
            key: LessSafeKey::new(key),
            source,
        }
    }

    /// Reads a secret file: at least [`MIN_LEN`] bytes, used as they are (a trailing newline
    /// included, so `echo`'d files and Secret keys agree only if written alike).
    pub fn from_file(path: &Path, source: Source) -> Result<ClusterSecret, IdentityError> {
        let material = std::fs::read(path).map_err(|err| IdentityError::Io {
            path: path.display().to_string(),
            err,
        })?;
        if material.len() < MIN_LEN {
            return Err(IdentityError::Secret(format!(
                "{}: an identity secret needs at least {MIN_LEN} bytes, this file has {}; make one with `head -c 32 /dev/urandom | base64 > FILE`",
                path.display(),
                material.len()
            )));
        }
        Ok(ClusterSecret::derive(&material, source))
    }

    /// `plain` sealed for the store key `record`.
    pub fn seal(&self, record: &str, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .expect("the system's random source");
        let mut data = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(record.as_bytes()),
                &mut data,
            )
            .expect("AES-GCM seals any length the store holds");
        [SEALED, &nonce, &data].concat()
    }

    /// The plain record: `Ok(None)` when `stored` is not sealed (a plain record from an older
    /// vkube), an error when it is sealed under another secret or damaged.
    pub fn open(&self, record: &str, stored: &[u8]) -> Result<Option<Vec<u8>>, IdentityError> {
        let Some(rest) = stored.strip_prefix(SEALED) else {
            return Ok(None);
        };
        if rest.len() < NONCE_LEN {
            return Err(IdentityError::Corrupt(format!(
                "{record}: a sealed record shorter than its nonce"
            )));
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).expect("NONCE_LEN bytes");
        let mut data = sealed.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(record.as_bytes()), &mut data)
            .map_err(|_| IdentityError::WrongSecret {
                record: record.to_string(),
                from: self.source.to_string(),
            })?;
        Ok(Some(plain.to_vec()))
    }
}

/// Whether `stored` is a sealed record.
pub fn is_sealed(stored: &[u8]) -> bool {
    stored.starts_with(SEALED)
}

/// The cluster secret for this process (see the module's doc for the order). `flag` is
/// `--identity-secret-file`, `ca_key` the PEM of `--ca-key-file`. A replica given none finds or
/// creates `DATA-DIR/identity-secret`, but never creates one for a store that already holds a
/// sealed identity: that cluster's secret is elsewhere, and a new one could not open it.
pub async fn resolve(
    store: &dyn Store,
    flag: Option<&Path>,
    ca_key: Option<&str>,
    data_dir: &Path,
) -> Result<ClusterSecret, IdentityError> {
    if let Some(path) = flag {
        return ClusterSecret::from_file(path, Source::Flag(path.to_path_buf()));
    }
    if let Some(pem) = ca_key {
        return Ok(ClusterSecret::derive(pem.as_bytes(), Source::CaKey));
    }
    let path = data_dir.join(DATA_DIR_FILE);
    if path.exists() {
        return ClusterSecret::from_file(&path, Source::DataDir(path.clone()));
    }
    // The service-account key's record is sealed whole; the CA's keeps its certificate plain
    // and its key sealed. Either tells a sealed store.
    for record in [crate::identity::CA_KEY, crate::identity::SA_KEY] {
        if let Some(kv) = store.get(record, None).await?
            && (is_sealed(&kv.value)
                || String::from_utf8_lossy(&kv.value).contains("\"key_sealed\""))
        {
            return Err(IdentityError::Secret(format!(
                "this cluster's identity in the store is sealed with a cluster secret, and this replica has none: give it the secret the cluster was created with, with --identity-secret-file FILE (the first replica wrote it to its DATA-DIR/{DATA_DIR_FILE}; every replica needs the same one), or --ca-key-file if the cluster was created with one"
            )));
        }
    }
    let mut secret = [0u8; MIN_LEN];
    SystemRandom::new()
        .fill(&mut secret)
        .expect("the system's random source");
    use base64::Engine;
    let text = base64::engine::general_purpose::STANDARD.encode(secret) + "\n";
    crate::identity::write_private(&path, &text)?;
    ClusterSecret::from_file(&path, Source::DataDir(path.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(material: &[u8]) -> ClusterSecret {
        ClusterSecret::derive(material, Source::CaKey)
    }

    #[test]
    fn a_sealed_record_opens_with_its_secret_and_key_only() {
        let s = secret(b"0123456789abcdef0123456789abcdef");
        let sealed = s.seal("/vkube/identity/ca", b"-----BEGIN PRIVATE KEY-----");
        assert!(is_sealed(&sealed));
        assert!(
            !sealed.windows(b"PRIVATE".len()).any(|w| w == b"PRIVATE"),
            "the plain text shows through"
        );
        assert_eq!(
            s.open("/vkube/identity/ca", &sealed).unwrap().unwrap(),
            b"-----BEGIN PRIVATE KEY-----"
        );
        // Another record's place: refused, as another secret is.
        assert!(matches!(
            s.open("/vkube/identity/service-account-key", &sealed),
            Err(IdentityError::WrongSecret { .. })
        ));
        let other = secret(b"another secret, also 32 bytes long");
        let err = other.open("/vkube/identity/ca", &sealed).unwrap_err();
        assert!(
            err.to_string().contains("the CA key of --ca-key-file"),
            "{err}"
        );
        // A damaged byte is refused too.
        let mut damaged = sealed.clone();
        *damaged.last_mut().unwrap() ^= 1;
        assert!(s.open("/vkube/identity/ca", &damaged).is_err());
        assert!(s.open("/vkube/identity/ca", SEALED).is_err());
    }

    #[test]
    fn plain_records_are_told_apart_and_each_seal_is_fresh() {
        let s = secret(b"0123456789abcdef0123456789abcdef");
        assert_eq!(s.open("k", br#"{"cert_pem":"x"}"#).unwrap(), None);
        assert_ne!(s.seal("k", b"same"), s.seal("k", b"same"), "nonces repeat");
        assert_eq!(format!("{s:?}"), "ClusterSecret { source: CaKey, .. }");
    }

    #[test]
    fn a_short_secret_file_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, b"short").unwrap();
        let err = ClusterSecret::from_file(&path, Source::Flag(path.clone())).unwrap_err();
        assert!(err.to_string().contains("at least 32 bytes"), "{err}");
        assert!(err.to_string().contains("/dev/urandom"), "{err}");
    }

    #[tokio::test]
    async fn a_replica_without_the_secret_of_a_sealed_store_is_refused() {
        let store = vkube_store::MemoryStore::new();
        let first = tempfile::tempdir().unwrap();
        let created = resolve(store.as_ref(), None, None, first.path())
            .await
            .unwrap();
        assert!(matches!(created.source, Source::DataDir(_)));
        let stored = std::fs::read(first.path().join(DATA_DIR_FILE)).unwrap();
        assert!(stored.len() >= MIN_LEN);
        // The same data dir finds the same secret.
        let again = resolve(store.as_ref(), None, None, first.path())
            .await
            .unwrap();
        let sealed = created.seal(crate::identity::SA_KEY, b"ca");
        assert_eq!(
            again
                .open(crate::identity::SA_KEY, &sealed)
                .unwrap()
                .unwrap(),
            b"ca"
        );
        store
            .create(crate::identity::SA_KEY, sealed, None)
            .await
            .unwrap();
        let second = tempfile::tempdir().unwrap();
        let err = resolve(store.as_ref(), None, None, second.path())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("--identity-secret-file"), "{err}");
        assert!(!second.path().join(DATA_DIR_FILE).exists());
        // Given the first replica's file, it opens the identity.
        let path = first.path().join(DATA_DIR_FILE);
        let given = resolve(store.as_ref(), Some(&path), None, second.path())
            .await
            .unwrap();
        let kv = store
            .get(crate::identity::SA_KEY, None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            given
                .open(crate::identity::SA_KEY, &kv.value)
                .unwrap()
                .unwrap(),
            b"ca"
        );
    }
}
