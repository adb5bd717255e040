//! The cluster's identity: one CA, created by the first process and kept in the store, so every
//! replica on the same store serves with the same identity and trusts the same client
//! certificates (DESIGN.md, rule 5). Each process's serving certificate and the admin client
//! certificate are signed by that CA.

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

    pub(crate) fn generate() -> Result<Ca, IdentityError> {
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

    fn leaf(common_name: &str, lifetime: Lifetime) -> Result<CertificateParams, IdentityError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        (params.not_before, params.not_after) = lifetime;
        Ok(params)
    }

    /// A serving certificate for `names` (DNS names or IP addresses), valid for a year.
    pub fn serving_cert(&self, names: &[String]) -> Result<CertKey, IdentityError> {
        self.serving_cert_for(names, leaf_lifetime())
    }

    /// A client certificate: CN is the user, each O a group; valid for a year.
    pub fn client_cert(&self, user: &str, groups: &[&str]) -> Result<CertKey, IdentityError> {
        self.client_cert_for(user, groups, leaf_lifetime())
    }

    pub(crate) fn serving_cert_for(
        &self,
        names: &[String],
        lifetime: Lifetime,
    ) -> Result<CertKey, IdentityError> {
        let mut params = Ca::leaf("vkube-apiserver", lifetime)?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        for name in names {
            params.subject_alt_names.push(match name.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(name.clone().try_into()?),
            });
        }
        self.issue(params)
    }

    pub(crate) fn client_cert_for(
        &self,
        user: &str,
        groups: &[&str],
        lifetime: Lifetime,
    ) -> Result<CertKey, IdentityError> {
        let mut params = Ca::leaf(user, lifetime)?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        for group in groups {
            params
                .distinguished_name
                .push(DnType::OrganizationName, *group);
        }
        self.issue(params)
    }
}

/// A leaf certificate's (notBefore, notAfter).
pub(crate) type Lifetime = (time::OffsetDateTime, time::OffsetDateTime);

/// A year from an hour ago (the hour absorbs clocks a little behind ours), as kubeadm's leaves.
fn leaf_lifetime() -> Lifetime {
    let not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    (not_before, not_before + time::Duration::days(365))
}

/// `vkube check` warns about certificates that expire within this.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);

/// When a certificate is valid, read from the certificate itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Validity {
    /// The validity of the first certificate in `pem`.
    pub fn of_pem(pem: &str) -> Option<Validity> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let der = CertificateDer::pem_slice_iter(pem.as_bytes())
            .next()?
            .ok()?;
        Validity::of_der(&der)
    }

    pub fn of_der(der: &[u8]) -> Option<Validity> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let at = |t: x509_parser::time::ASN1Time| {
            let secs = t.timestamp();
            if secs >= 0 {
                UNIX_EPOCH.checked_add(Duration::from_secs(secs.unsigned_abs()))
            } else {
                UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
            }
        };
        Some(Validity {
            not_before: at(cert.validity().not_before)?,
            not_after: at(cert.validity().not_after)?,
        })
    }

    /// When vkube replaces a certificate it issued: once less than a third of its validity is
    /// left, or less than [`EXPIRY_WARNING`] (so a renewed certificate never shows up in
    /// `vkube check`'s warnings), but never in the first half of its life, so that a short
    /// certificate is not reissued on every look.
    pub fn renew_at(&self) -> SystemTime {
        let total = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        let ahead = (total / 3).max(EXPIRY_WARNING).min(total / 2);
        self.not_after.checked_sub(ahead).unwrap_or(self.not_before)
    }

    /// Whether a certificate vkube issued is due for renewal at `now`. A certificate that is
    /// not valid yet counts as due too: it was issued by a clock far ahead of ours.
    pub fn due(&self, now: SystemTime) -> bool {
        now >= self.renew_at() || now < self.not_before
    }

    /// How long the certificate is still valid at `now` (zero once expired).
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.not_after.duration_since(now).unwrap_or_default()
    }
}

/// Whether `pem` holds a certificate vkube should keep using at `now`: parsable and not due.
pub(crate) fn fresh(pem: &str, now: SystemTime) -> bool {
    Validity::of_pem(pem).is_some_and(|v| !v.due(now))
}

/// `t` as RFC 3339 (UTC, seconds), for messages.
pub fn rfc3339(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
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

/// Writes a file only its owner can read. The file is replaced whole (written beside it, then
/// renamed over it), so a reader such as kubectl never sees half of a renewed kubeconfig.
pub fn write_private(path: &Path, contents: &str) -> Result<(), IdentityError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |err| IdentityError::Io {
        path: path.display().to_string(),
        err,
    };
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn lasting(days: u32) -> Validity {
        let not_before = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        Validity {
            not_before,
            not_after: not_before + DAY * days,
        }
    }

    #[test]
    fn renewal_falls_due_with_a_third_left_or_thirty_days_but_not_in_the_first_half() {
        let year = lasting(365);
        assert_eq!(
            year.not_after.duration_since(year.renew_at()).unwrap(),
            DAY * 365 / 3
        );
        let sixty = lasting(60);
        assert_eq!(
            sixty.not_after.duration_since(sixty.renew_at()).unwrap(),
            DAY * 30
        );
        let ten = lasting(10);
        assert_eq!(
            ten.not_after.duration_since(ten.renew_at()).unwrap(),
            DAY * 5
        );
        assert!(!year.due(year.not_before + DAY));
        assert!(year.due(year.renew_at()));
        assert!(year.due(year.not_after + DAY), "expired");
        assert!(year.due(year.not_before - DAY), "not valid yet");
    }

    #[test]
    fn the_validity_is_read_from_the_certificate() {
        let ca = Ca::generate().unwrap();
        let from = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let pair = ca
            .client_cert_for("u", &[], (from, from + time::Duration::days(2)))
            .unwrap();
        assert_eq!(Validity::of_pem(&pair.cert_pem), Some(lasting(2)));
        assert_eq!(rfc3339(lasting(2).not_after), "2027-01-17T08:00:00Z");
        assert_eq!(Validity::of_pem("not a certificate"), None);
    }
}
