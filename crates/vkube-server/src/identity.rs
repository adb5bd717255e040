//! The cluster's identity: one CA, created by the first process and kept in the store, so every
//! replica on the same store serves with the same identity and trusts the same client
//! certificates (DESIGN.md, rule 5). Each process's serving certificate and the admin client
//! certificate are signed by that CA.

use std::net::IpAddr;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use serde::{Deserialize, Serialize};
use vkube_store::{Store, StoreError};

/// Where the CA lives in the store.
pub const CA_KEY: &str = "/vkube/identity/ca";
/// The service-account signing key (PKCS#8, base64), shared by every replica.
pub const SA_KEY: &str = "/vkube/identity/service-account-key";

/// The service-account signing key: read from the store, or created there by the first process
/// (a racing loser adopts the winner's).
pub async fn service_account_key(
    store: &dyn Store,
) -> Result<vkube_auth::keys::SigningKey, IdentityError> {
    use vkube_auth::keys::SigningKey;
    if let Some(kv) = store.get(SA_KEY, None).await? {
        let text = String::from_utf8_lossy(&kv.value);
        return SigningKey::from_stored(&text).map_err(|e| IdentityError::Corrupt(e.to_string()));
    }
    let key = SigningKey::generate().map_err(|e| IdentityError::Corrupt(e.to_string()))?;
    match store
        .create(SA_KEY, key.to_stored().into_bytes(), None)
        .await
    {
        Ok(_) => Ok(key),
        Err(StoreError::AlreadyExists { .. }) => Box::pin(service_account_key(store)).await,
        Err(err) => Err(err.into()),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("the CA record in the store is corrupt: {0}")]
    Corrupt(String),
    #[error("{path}: {err}")]
    Io { path: String, err: std::io::Error },
}

#[derive(Clone, Serialize, Deserialize)]
pub struct Ca {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A certificate and its private key, PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertKey {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Ca {
    /// The cluster CA: read from the store, or created there if this is the first process. Two
    /// processes racing both create one; the store keeps the first, and the loser adopts it.
    pub async fn load_or_create(store: &dyn Store) -> Result<Ca, IdentityError> {
        if let Some(kv) = store.get(CA_KEY, None).await? {
            return serde_json::from_slice(&kv.value)
                .map_err(|e| IdentityError::Corrupt(e.to_string()));
        }
        let ca = Ca::generate()?;
        let value = serde_json::to_vec(&ca).map_err(|e| IdentityError::Corrupt(e.to_string()))?;
        match store.create(CA_KEY, value, None).await {
            Ok(_) => Ok(ca),
            Err(StoreError::AlreadyExists { .. }) => Box::pin(Ca::load_or_create(store)).await,
            Err(err) => Err(err.into()),
        }
    }

    fn generate() -> Result<Ca, IdentityError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "vkube-ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
        params.not_after = params.not_before + time::Duration::days(3650);
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    fn issue(&self, params: CertificateParams) -> Result<CertKey, IdentityError> {
        let ca_key = KeyPair::from_pem(&self.key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, ca_key)?;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        Ok(CertKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    fn leaf(common_name: &str, days: i64) -> Result<CertificateParams, IdentityError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
        params.not_after = params.not_before + time::Duration::days(days);
        Ok(params)
    }

    /// A serving certificate for `names` (DNS names or IP addresses).
    pub fn serving_cert(&self, names: &[String]) -> Result<CertKey, IdentityError> {
        let mut params = Ca::leaf("vkube-apiserver", 365)?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        for name in names {
            params.subject_alt_names.push(match name.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(name.clone().try_into()?),
            });
        }
        self.issue(params)
    }

    /// A client certificate: CN is the user, each O a group.
    pub fn client_cert(&self, user: &str, groups: &[&str]) -> Result<CertKey, IdentityError> {
        let mut params = Ca::leaf(user, 365)?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        for group in groups {
            params
                .distinguished_name
                .push(DnType::OrganizationName, *group);
        }
        self.issue(params)
    }
}

/// Reads `DIR/NAME.crt` and `DIR/NAME.key` if both exist.
pub fn read_pair(dir: &Path, name: &str) -> Option<CertKey> {
    let cert_pem = std::fs::read_to_string(dir.join(format!("{name}.crt"))).ok()?;
    let key_pem = std::fs::read_to_string(dir.join(format!("{name}.key"))).ok()?;
    Some(CertKey { cert_pem, key_pem })
}

/// Writes `DIR/NAME.crt` and `DIR/NAME.key` (the key readable by the owner only).
pub fn write_pair(dir: &Path, name: &str, pair: &CertKey) -> Result<(), IdentityError> {
    write_private(&dir.join(format!("{name}.key")), &pair.key_pem)?;
    std::fs::write(dir.join(format!("{name}.crt")), &pair.cert_pem).map_err(|err| {
        IdentityError::Io {
            path: format!("{name}.crt"),
            err,
        }
    })
}

/// Writes a file only its owner can read.
pub fn write_private(path: &Path, contents: &str) -> Result<(), IdentityError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |err| IdentityError::Io {
        path: path.display().to_string(),
        err,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)
}
