//! The cluster's identity: one CA, created by the first process and kept in the store, so every
//! replica on the same store serves with the same identity and trusts the same client
//! certificates (DESIGN.md, rule 5). Each process's serving certificate and the admin client
//! certificate are signed by that CA.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use serde::{Deserialize, Serialize};
use vkube_store::{Store, StoreError};

use base64::Engine;

use crate::cluster_secret::ClusterSecret;

/// Where the CA lives in the store.
pub const CA_KEY: &str = "/vkube/identity/ca";
/// The service-account signing key (PKCS#8, base64), shared by every replica.
pub const SA_KEY: &str = "/vkube/identity/service-account-key";

/// The service-account signing key: read from the store, or created there by the first process
/// (a racing loser adopts the winner's). Sealed with the cluster secret either way.
pub async fn service_account_key(
    store: &dyn Store,
    secret: &ClusterSecret,
) -> Result<vkube_auth::keys::SigningKey, IdentityError> {
    use vkube_auth::keys::SigningKey;
    if let Some(value) = read_record(store, secret, SA_KEY).await? {
        let text = String::from_utf8_lossy(&value);
        return SigningKey::from_stored(&text).map_err(|e| IdentityError::Corrupt(e.to_string()));
    }
    let key = SigningKey::generate().map_err(|e| IdentityError::Corrupt(e.to_string()))?;
    match store
        .create(
            SA_KEY,
            secret.seal(SA_KEY, key.to_stored().as_bytes()),
            None,
        )
        .await
    {
        Ok(_) => Ok(key),
        Err(StoreError::AlreadyExists { .. }) => Box::pin(service_account_key(store, secret)).await,
        Err(err) => Err(err.into()),
    }
}

/// An identity record's plain value, `None` if the store has none. A plain record (written by a
/// vkube before the sealing) is sealed in place; a replica that loses that race to another
/// one doing the same finds the record sealed and reads it again.
async fn read_record(
    store: &dyn Store,
    secret: &ClusterSecret,
    record: &str,
) -> Result<Option<Vec<u8>>, IdentityError> {
    let Some(kv) = store.get(record, None).await? else {
        return Ok(None);
    };
    if let Some(plain) = secret.open(record, &kv.value)? {
        return Ok(Some(plain));
    }
    let sealed = secret.seal(record, &kv.value);
    match store.update(record, sealed, kv.mod_revision, None).await {
        Ok(_) | Err(StoreError::Conflict { .. }) => {
            Box::pin(read_record(store, secret, record)).await
        }
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
    #[error("{0}")]
    GivenCa(String),
    #[error("{0}")]
    Secret(String),
    #[error(
        "the cluster secret ({from}) does not open this cluster's identity in the store ({record}): the cluster was created with another secret, or the record is damaged. Give every replica the secret the cluster was created with (--identity-secret-file, or the --ca-key-file it was created with); vkube never replaces a sealed identity"
    )]
    WrongSecret { record: String, from: String },
    #[error(
        "the cluster CA given in {given_file} is {given}, but this cluster's store already holds another CA ({stored}, at {CA_KEY}): every replica must serve with the one CA the cluster was created with, so this one refuses to start. Mount that CA's certificate and key in every replica (its certificate is each running replica's DATA-DIR/ca.crt), or start the replicas on a new, empty store"
    )]
    CaMismatch {
        given_file: String,
        given: String,
        stored: String,
    },
}

#[derive(Clone, Serialize, Deserialize)]
pub struct Ca {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The CA's record in the store: the certificate plain (it is public), the key sealed with the
/// cluster secret. Older vkubes stored `key_pem` plain; such a record is sealed on first read.
#[derive(Serialize, Deserialize)]
struct StoredCa {
    cert_pem: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_pem: Option<String>,
    /// base64 of [`ClusterSecret::seal`] of the key's PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_sealed: Option<String>,
}

impl StoredCa {
    /// The record for `ca`, its key sealed.
    fn sealing(ca: &Ca, secret: &ClusterSecret) -> Result<Vec<u8>, IdentityError> {
        let sealed = secret.seal(CA_KEY, ca.key_pem.as_bytes());
        let record = StoredCa {
            cert_pem: ca.cert_pem.clone(),
            key_pem: None,
            key_sealed: Some(base64::engine::general_purpose::STANDARD.encode(sealed)),
        };
        serde_json::to_vec(&record).map_err(|e| IdentityError::Corrupt(e.to_string()))
    }
}

/// A certificate and its private key, PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertKey {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A cluster CA handed to the process in files (`--ca-cert-file`, `--ca-key-file`: in a
/// StatefulSet, one Secret mounted in every replica) instead of created by the first one.
#[derive(Clone)]
pub struct GivenCa {
    pub ca: Ca,
    /// The certificate's file, for messages.
    pub cert_file: PathBuf,
}

/// Names the file and the CA, never the key.
impl std::fmt::Debug for GivenCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GivenCa")
            .field("cert_file", &self.cert_file)
            .field("ca", &describe_ca(&self.ca.cert_pem))
            .finish()
    }
}

impl GivenCa {
    /// Reads and checks the pair: a CA certificate (PEM) and the private key (PEM: PKCS#8,
    /// SEC1 or PKCS#1) that belongs to it.
    pub fn from_files(cert_file: &Path, key_file: &Path) -> Result<GivenCa, IdentityError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|err| IdentityError::Io {
                path: path.display().to_string(),
                err,
            })
        };
        let (cert_pem, key_pem) = (read(cert_file)?, read(key_file)?);
        let bad = |what: String| IdentityError::GivenCa(what);
        let der = first_cert_der(&cert_pem)
            .ok_or_else(|| bad(format!("{}: no PEM certificate", cert_file.display())))?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| bad(format!("{}: {e}", cert_file.display())))?;
        if !cert.is_ca() {
            return Err(bad(format!(
                "{} is not a CA certificate (its basicConstraints do not say CA:TRUE)",
                cert_file.display()
            )));
        }
        let key = KeyPair::from_pem(&key_pem).map_err(|e| {
            bad(format!(
                "{}: not a private key rcgen can use (PEM: PKCS#8, SEC1 or PKCS#1): {e}",
                key_file.display()
            ))
        })?;
        use rcgen::PublicKeyData;
        if key.der_bytes() != &cert.public_key().subject_public_key.data[..] {
            return Err(bad(format!(
                "the key in {} does not belong to the certificate in {}",
                key_file.display(),
                cert_file.display()
            )));
        }
        Ok(GivenCa {
            ca: Ca { cert_pem, key_pem },
            cert_file: cert_file.to_path_buf(),
        })
    }
}

/// The DER of the first certificate in `pem`.
fn first_cert_der(pem: &str) -> Option<Vec<u8>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let der = CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()?
        .ok()?;
    Some(der.to_vec())
}

/// A CA as a person can tell it from another: its subject and SHA-256 fingerprint (what
/// `openssl x509 -noout -subject -fingerprint -sha256` prints).
fn describe_ca(pem: &str) -> String {
    let Some(der) = first_cert_der(pem) else {
        return "an unreadable certificate".into();
    };
    let subject = x509_parser::parse_x509_certificate(&der)
        .map(|(_, c)| c.subject().to_string())
        .unwrap_or_default();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der);
    let fingerprint: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    format!(
        "\"{subject}\" with SHA-256 fingerprint {}",
        fingerprint.join(":")
    )
}

impl Ca {
    /// The cluster CA: read from the store, or created there if this is the first process. Two
    /// processes racing both create one; the store keeps the first, and the loser adopts it.
    ///
    /// With a `given` CA (from files), the first process stores that one instead of creating
    /// one; a process given another CA than the store holds refuses to start
    /// ([`IdentityError::CaMismatch`], naming both), since replicas with different CAs would
    /// reject each other's clients (DESIGN rule 5).
    pub async fn load_or_create(
        store: &dyn Store,
        given: Option<&GivenCa>,
        secret: &ClusterSecret,
    ) -> Result<Ca, IdentityError> {
        if let Some(kv) = store.get(CA_KEY, None).await? {
            let stored: StoredCa = serde_json::from_slice(&kv.value)
                .map_err(|e| IdentityError::Corrupt(e.to_string()))?;
            // The certificate is public and stored plain, so a replica given another CA is told
            // which two differ before any secret is tried.
            if let Some(given) = given
                && first_cert_der(&given.ca.cert_pem) != first_cert_der(&stored.cert_pem)
            {
                return Err(IdentityError::CaMismatch {
                    given_file: given.cert_file.display().to_string(),
                    given: describe_ca(&given.ca.cert_pem),
                    stored: describe_ca(&stored.cert_pem),
                });
            }
            let key_pem = match (&stored.key_sealed, &stored.key_pem) {
                (Some(sealed), _) => {
                    let sealed = base64::engine::general_purpose::STANDARD
                        .decode(sealed)
                        .map_err(|e| IdentityError::Corrupt(format!("{CA_KEY}: {e}")))?;
                    let plain = secret.open(CA_KEY, &sealed)?.ok_or_else(|| {
                        IdentityError::Corrupt(format!("{CA_KEY}: the sealed key is not sealed"))
                    })?;
                    String::from_utf8(plain)
                        .map_err(|e| IdentityError::Corrupt(format!("{CA_KEY}: {e}")))?
                }
                // A CA stored plain by an older vkube: sealed in place. A replica that loses the
                // race to another one doing the same reads the record again.
                (None, Some(key_pem)) => {
                    let ca = Ca {
                        cert_pem: stored.cert_pem.clone(),
                        key_pem: key_pem.clone(),
                    };
                    let sealed = StoredCa::sealing(&ca, secret)?;
                    match store.update(CA_KEY, sealed, kv.mod_revision, None).await {
                        Ok(_) => return Ok(ca),
                        Err(StoreError::Conflict { .. }) => {
                            return Box::pin(Ca::load_or_create(store, given, secret)).await;
                        }
                        Err(err) => return Err(err.into()),
                    }
                }
                (None, None) => {
                    return Err(IdentityError::Corrupt(format!("{CA_KEY}: no key")));
                }
            };
            return Ok(Ca {
                cert_pem: stored.cert_pem,
                key_pem,
            });
        }
        let ca = match given {
            Some(given) => given.ca.clone(),
            None => Ca::generate()?,
        };
        match store
            .create(CA_KEY, StoredCa::sealing(&ca, secret)?, None)
            .await
        {
            Ok(_) => Ok(ca),
            Err(StoreError::AlreadyExists { .. }) => {
                Box::pin(Ca::load_or_create(store, given, secret)).await
            }
            Err(err) => Err(err.into()),
        }
    }

    pub fn generate() -> Result<Ca, IdentityError> {
        Ca::generate_named("vkube-ca")
    }

    /// A self-signed CA named `common_name` (the front-proxy CA is another one: aggregation/).
    pub fn generate_named(common_name: &str) -> Result<Ca, IdentityError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
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
        params.subject_alt_names = sans(names)?;
        self.issue(params)
    }

    /// A certificate for an etcd member (`common_name`): it serves clients and peers at
    /// `names` (DNS names or IP addresses) and is its peers' client, so it carries both
    /// extended key usages. Valid for a year.
    pub fn peer_cert(&self, common_name: &str, names: &[String]) -> Result<CertKey, IdentityError> {
        let mut params = Ca::leaf(common_name, leaf_lifetime())?;
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.subject_alt_names = sans(names)?;
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

/// Subject alternative names: each an IP address or a DNS name.
fn sans(names: &[String]) -> Result<Vec<SanType>, IdentityError> {
    names
        .iter()
        .map(|name| {
            Ok(match name.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(name.clone().try_into()?),
            })
        })
        .collect()
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

    /// A directory of its own under the temp dir (removed when dropped).
    struct TempDir(PathBuf);

    impl TempDir {
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A CA's two files in a fresh directory.
    fn ca_files(ca: &Ca) -> (TempDir, PathBuf, PathBuf) {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("vkube-ca-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let dir = TempDir(dir);
        let (cert, key) = (dir.path().join("ca.crt"), dir.path().join("ca.key"));
        std::fs::write(&cert, &ca.cert_pem).unwrap();
        std::fs::write(&key, &ca.key_pem).unwrap();
        (dir, cert, key)
    }

    #[tokio::test]
    async fn a_given_ca_is_stored_once_and_another_one_is_refused_naming_both() {
        let store = vkube_store::MemoryStore::new();
        let secret = &test_secret();
        let first = Ca::generate().unwrap();
        let (_dir, cert, key) = ca_files(&first);
        let given = GivenCa::from_files(&cert, &key).unwrap();
        let ca = Ca::load_or_create(store.as_ref(), Some(&given), secret)
            .await
            .unwrap();
        assert_eq!(ca.cert_pem, first.cert_pem, "the given CA is the cluster's");
        // Every replica given the same files starts; one without files adopts it.
        let again = Ca::load_or_create(store.as_ref(), Some(&given), secret)
            .await
            .unwrap();
        assert_eq!(again.key_pem, first.key_pem);
        let adopted = Ca::load_or_create(store.as_ref(), None, secret)
            .await
            .unwrap();
        assert_eq!(adopted.cert_pem, first.cert_pem);

        let other = Ca::generate().unwrap();
        let (_dir2, cert2, key2) = ca_files(&other);
        let given2 = GivenCa::from_files(&cert2, &key2).unwrap();
        let err = Ca::load_or_create(store.as_ref(), Some(&given2), secret)
            .await
            .err()
            .expect("another CA is refused")
            .to_string();
        let fingerprint = |ca: &Ca| describe_ca(&ca.cert_pem);
        assert!(
            err.contains(&cert2.display().to_string())
                && err.contains(&fingerprint(&other))
                && err.contains(&fingerprint(&first))
                && err.contains(CA_KEY),
            "{err}"
        );
        assert!(fingerprint(&first).contains("CN=vkube-ca"), "{err}");
    }

    fn test_secret() -> ClusterSecret {
        ClusterSecret::derive(
            b"a cluster secret of 32 bytes or more",
            crate::cluster_secret::Source::CaKey,
        )
    }

    #[tokio::test]
    async fn the_identity_is_sealed_in_the_store_and_plain_records_are_sealed_in_place() {
        let store = vkube_store::MemoryStore::new();
        let secret = &test_secret();
        let ca = Ca::load_or_create(store.as_ref(), None, secret)
            .await
            .unwrap();
        let sa = service_account_key(store.as_ref(), secret).await.unwrap();
        let sa_record = store.get(SA_KEY, None).await.unwrap().unwrap();
        assert!(crate::cluster_secret::is_sealed(&sa_record.value));
        let ca_record = store.get(CA_KEY, None).await.unwrap().unwrap();
        let stored: StoredCa = serde_json::from_slice(&ca_record.value).unwrap();
        assert_eq!(stored.cert_pem, ca.cert_pem, "the certificate is plain");
        assert!(stored.key_pem.is_none());
        for record in [&sa_record, &ca_record] {
            let text = String::from_utf8_lossy(&record.value);
            assert!(!text.contains("PRIVATE KEY"), "{text}");
        }
        // Read back through the secret: the same identity.
        let again = Ca::load_or_create(store.as_ref(), None, secret)
            .await
            .unwrap();
        assert_eq!(again.key_pem, ca.key_pem);
        let sa_again = service_account_key(store.as_ref(), secret).await.unwrap();
        assert_eq!(sa_again.to_stored(), sa.to_stored());
        // Another secret: refused, and the record is left as it was.
        let other = ClusterSecret::derive(
            b"some other secret of 32 bytes or more",
            crate::cluster_secret::Source::CaKey,
        );
        let before = store.get(CA_KEY, None).await.unwrap().unwrap();
        let err = Ca::load_or_create(store.as_ref(), None, &other)
            .await
            .err()
            .unwrap();
        assert!(matches!(err, IdentityError::WrongSecret { .. }), "{err}");
        assert_eq!(store.get(CA_KEY, None).await.unwrap().unwrap(), before);

        // A store from before the sealing: plain records are read, then sealed in place.
        let legacy = vkube_store::MemoryStore::new();
        let plain = Ca::generate().unwrap();
        legacy
            .create(CA_KEY, serde_json::to_vec(&plain).unwrap(), None)
            .await
            .unwrap();
        let read = Ca::load_or_create(legacy.as_ref(), None, secret)
            .await
            .unwrap();
        assert_eq!(read.key_pem, plain.key_pem);
        let kv = legacy.get(CA_KEY, None).await.unwrap().unwrap();
        let stored: StoredCa = serde_json::from_slice(&kv.value).unwrap();
        assert!(stored.key_pem.is_none() && stored.key_sealed.is_some());
    }

    #[test]
    fn given_ca_files_must_hold_a_ca_and_its_own_key() {
        let ca = Ca::generate().unwrap();
        let other = Ca::generate().unwrap();
        let (dir, cert, _) = ca_files(&ca);
        let wrong_key = dir.path().join("other.key");
        std::fs::write(&wrong_key, &other.key_pem).unwrap();
        let err = GivenCa::from_files(&cert, &wrong_key)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("does not belong"), "{err}");
        let leaf = ca.client_cert("someone", &[]).unwrap();
        let (leaf_cert, leaf_key) = (dir.path().join("leaf.crt"), dir.path().join("leaf.key"));
        std::fs::write(&leaf_cert, &leaf.cert_pem).unwrap();
        std::fs::write(&leaf_key, &leaf.key_pem).unwrap();
        let err = GivenCa::from_files(&leaf_cert, &leaf_key)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("not a CA certificate"), "{err}");
        let missing = GivenCa::from_files(&dir.path().join("nope.crt"), &wrong_key)
            .err()
            .unwrap()
            .to_string();
        assert!(missing.contains("nope.crt"), "{missing}");
    }

    #[test]
    fn a_peer_certificate_serves_and_is_a_client_for_its_names() {
        let ca = Ca::generate().unwrap();
        let names = [
            "vk-1.vk-headless.ns.svc.cluster.local".into(),
            "10.1.2.3".into(),
        ];
        let pair = ca.peer_cert("vkube-1", &names).unwrap();
        let der = first_cert_der(&pair.cert_pem).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        let san = cert.subject_alternative_name().unwrap().unwrap().value;
        let text = format!("{:?}", san.general_names);
        assert!(
            text.contains("vk-1.vk-headless.ns.svc.cluster.local"),
            "{text}"
        );
        assert!(text.contains("[10, 1, 2, 3]"), "{text}");
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
