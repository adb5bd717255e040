//! kube-apiserver's value transformers, byte for byte: what `k8s.io/apiserver/pkg/storage/value`
//! writes for the `aescbc`, `aesgcm`, `secretbox` and `identity` providers, so a store written
//! by one reads in the other.
//!
//! A stored value is `<provider prefix><key name>:<payload>`:
//! - `k8s:enc:aescbc:v1:NAME:` + 16-byte random IV + AES-CBC ciphertext with PKCS#7 padding
//!   (no authentication, as upstream);
//! - `k8s:enc:aesgcm:v1:NAME:` + 12-byte random nonce + AES-GCM ciphertext and tag, the store
//!   key being the authenticated data (a value copied under another key does not open);
//! - `k8s:enc:secretbox:v1:NAME:` + 24-byte random nonce + NaCl secretbox (tag, ciphertext);
//! - `identity`: the value as it is; on read it refuses anything starting `k8s:enc:`.
//!
//! Error texts are upstream's, since the API hands them to clients in a 500's message.

use aes::{Aes128, Aes192, Aes256};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{AesGcm, Nonce};
use cbc::cipher::block_padding::{NoPadding, Pkcs7};
use cbc::cipher::{
    BlockCipher, BlockDecrypt, BlockDecryptMut, BlockEncrypt, BlockEncryptMut, KeyIvInit,
};
use crypto_secretbox::XSalsa20Poly1305;

pub(crate) const AESCBC_PREFIX: &str = "k8s:enc:aescbc:v1:";
pub(crate) const AESGCM_PREFIX: &str = "k8s:enc:aesgcm:v1:";
pub(crate) const SECRETBOX_PREFIX: &str = "k8s:enc:secretbox:v1:";
/// What every encrypted value starts with; `identity` refuses to read such values.
const ENCRYPTED_PREFIX: &[u8] = b"k8s:enc:";

const SHORT: &str = "the stored data was shorter than the required size";
/// Go's crypto/cipher wording for a GCM open that fails (wrong key, tampered data, other key).
const GCM_AUTH: &str = "cipher: message authentication failed";
/// Upstream's (odd) wording for a secretbox open that fails.
const SECRETBOX_OPEN: &str = "output array was not large enough for encryption";
const IDENTITY_ENCRYPTED: &str = "identity transformer tried to read encrypted data";

/// One named key of a provider.
#[derive(Clone)]
pub(crate) struct Key {
    pub(crate) name: String,
    /// 16, 24 or 32 bytes for AES, 32 for secretbox (checked when the config is read).
    pub(crate) secret: Vec<u8>,
}

impl std::fmt::Debug for Key {
    // Never the secret: configs end up in debug logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({:?}, {} bytes)", self.name, self.secret.len())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    AesCbc,
    AesGcm,
    Secretbox,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::AesCbc => AESCBC_PREFIX,
            Kind::AesGcm => AESGCM_PREFIX,
            Kind::Secretbox => SECRETBOX_PREFIX,
        }
    }

    /// Upstream's error when the value names none of the provider's keys.
    fn no_key(self) -> &'static str {
        match self {
            Kind::AesCbc | Kind::AesGcm => {
                "no matching key was found for the provided AES transformer"
            }
            Kind::Secretbox => "no matching key was found for the provided Secretbox transformer",
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) enum Provider {
    Identity,
    Keyed(Kind, Vec<Key>),
}

/// The providers of one resource, in the order the config lists them: the first encrypts what
/// is written; reads pick by prefix (upstream's `prefixTransformers`).
#[derive(Clone, Debug)]
pub(crate) struct Chain(pub(crate) Vec<Provider>);

impl Chain {
    /// The stored form of `plain`, written under `key`.
    pub(crate) fn encrypt(&self, key: &str, plain: &[u8]) -> Result<Vec<u8>, String> {
        match self.0.first() {
            None | Some(Provider::Identity) => Ok(plain.to_vec()),
            Some(Provider::Keyed(kind, keys)) => {
                let first = keys.first().ok_or("aes provider has no valid keys")?;
                let mut out = format!("{}{}:", kind.prefix(), first.name).into_bytes();
                out.extend(seal(*kind, &first.secret, key, plain)?);
                Ok(out)
            }
        }
    }

    /// Whether `stored` is in the form a write makes now: encrypted by the first provider
    /// with its first key (or plain, when `identity` is first). A value that is not is what
    /// upstream calls stale: rewriting it, even unchanged, re-encrypts it.
    pub(crate) fn is_current(&self, stored: &[u8]) -> bool {
        match self.0.first() {
            None | Some(Provider::Identity) => !stored.starts_with(ENCRYPTED_PREFIX),
            Some(Provider::Keyed(kind, keys)) => keys.first().is_some_and(|k| {
                stored
                    .strip_prefix(kind.prefix().as_bytes())
                    .and_then(|r| r.strip_prefix(k.name.as_bytes()))
                    .is_some_and(|r| r.starts_with(b":"))
            }),
        }
    }

    /// The plain value of `stored`, read from `key`. Every provider whose prefix matches is
    /// tried, so the same provider listed twice (rotating between key sets) works; `identity`
    /// steps aside for encrypted data.
    pub(crate) fn decrypt(&self, key: &str, stored: &[u8]) -> Result<Vec<u8>, String> {
        let mut errors = Vec::new();
        for provider in &self.0 {
            match provider {
                Provider::Identity => match identity_read(stored) {
                    Ok(plain) => return Ok(plain),
                    Err(_) => continue,
                },
                Provider::Keyed(kind, keys) => {
                    let Some(rest) = stored.strip_prefix(kind.prefix().as_bytes()) else {
                        continue;
                    };
                    match open_with(*kind, keys, key, rest) {
                        Ok(plain) => return Ok(plain),
                        Err(e) => errors.push(e),
                    }
                }
            }
        }
        Err(match errors.len() {
            0 => "no matching prefix found".to_string(),
            1 => errors.remove(0),
            // An aggregate, as Go's utilerrors prints one.
            _ => format!("[{}]", errors.join(", ")),
        })
    }
}

/// What a resource no rule names reads through: upstream's default `identity` transformer.
pub(crate) fn identity_read(stored: &[u8]) -> Result<Vec<u8>, String> {
    if stored.starts_with(ENCRYPTED_PREFIX) {
        return Err(IDENTITY_ENCRYPTED.to_string());
    }
    Ok(stored.to_vec())
}

fn open_with(kind: Kind, keys: &[Key], key: &str, rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut errors = Vec::new();
    for k in keys {
        let Some(payload) = rest
            .strip_prefix(k.name.as_bytes())
            .and_then(|r| r.strip_prefix(b":"))
        else {
            continue;
        };
        match open(kind, &k.secret, key, payload) {
            Ok(plain) => return Ok(plain),
            Err(e) => errors.push(e),
        }
    }
    Err(match errors.len() {
        0 => kind.no_key().to_string(),
        1 => errors.remove(0),
        _ => format!("[{}]", errors.join(", ")),
    })
}

fn random<const N: usize>() -> Result<[u8; N], String> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)
        .map_err(|_| "unable to read sufficient random bytes".to_string())?;
    Ok(bytes)
}

fn seal(kind: Kind, secret: &[u8], key: &str, plain: &[u8]) -> Result<Vec<u8>, String> {
    match kind {
        Kind::AesCbc => Ok(cbc_seal(secret, &random()?, plain)?),
        Kind::AesGcm => gcm_seal(secret, &random()?, key, plain),
        Kind::Secretbox => secretbox_seal(secret, &random()?, plain),
    }
}

fn open(kind: Kind, secret: &[u8], key: &str, payload: &[u8]) -> Result<Vec<u8>, String> {
    match kind {
        Kind::AesCbc => cbc_open(secret, payload),
        Kind::AesGcm => gcm_open(secret, key, payload),
        Kind::Secretbox => secretbox_open(secret, payload),
    }
}

fn bad_key(len: usize) -> String {
    format!("crypto/aes: invalid key size {len}")
}

/// IV, then the padded ciphertext.
fn cbc_seal(secret: &[u8], iv: &[u8; 16], plain: &[u8]) -> Result<Vec<u8>, String> {
    fn run<C>(secret: &[u8], iv: &[u8; 16], plain: &[u8]) -> Result<Vec<u8>, String>
    where
        C: BlockCipher + BlockEncrypt + aes::cipher::KeyInit,
    {
        let enc =
            cbc::Encryptor::<C>::new_from_slices(secret, iv).map_err(|_| bad_key(secret.len()))?;
        Ok(enc.encrypt_padded_vec_mut::<Pkcs7>(plain))
    }
    let body = match secret.len() {
        16 => run::<Aes128>(secret, iv, plain)?,
        24 => run::<Aes192>(secret, iv, plain)?,
        _ => run::<Aes256>(secret, iv, plain)?,
    };
    let mut out = iv.to_vec();
    out.extend(body);
    Ok(out)
}

fn cbc_open(secret: &[u8], payload: &[u8]) -> Result<Vec<u8>, String> {
    fn run<C>(secret: &[u8], iv: &[u8], body: &[u8]) -> Result<Vec<u8>, String>
    where
        C: BlockCipher + BlockDecrypt + aes::cipher::KeyInit,
    {
        let dec =
            cbc::Decryptor::<C>::new_from_slices(secret, iv).map_err(|_| bad_key(secret.len()))?;
        dec.decrypt_padded_vec_mut::<NoPadding>(body)
            .map_err(|_| "the stored data is not a multiple of the block size".to_string())
    }
    if payload.len() < 16 {
        return Err(SHORT.into());
    }
    let (iv, body) = payload.split_at(16);
    if body.len() % 16 != 0 {
        return Err("the stored data is not a multiple of the block size".into());
    }
    let mut plain = match secret.len() {
        16 => run::<Aes128>(secret, iv, body)?,
        24 => run::<Aes192>(secret, iv, body)?,
        _ => run::<Aes256>(secret, iv, body)?,
    };
    // PKCS#7 checked as upstream checks it (so a wrong key fails with its messages).
    let pad = plain.last().copied().unwrap_or(0) as usize;
    if pad == 0 || pad > plain.len() {
        return Err("invalid PKCS7 data (empty or not padded)".into());
    }
    let size = plain.len() - pad;
    if plain[size..].iter().any(|&b| b as usize != pad) {
        return Err("invalid padding on input".into());
    }
    plain.truncate(size);
    Ok(plain)
}

type Aes192Gcm = AesGcm<Aes192, aes_gcm::aead::consts::U12>;

/// Nonce, then ciphertext and tag; the store key is the authenticated data.
fn gcm_seal(secret: &[u8], nonce: &[u8; 12], key: &str, plain: &[u8]) -> Result<Vec<u8>, String> {
    let payload = Payload {
        msg: plain,
        aad: key.as_bytes(),
    };
    let nonce_ga = Nonce::from_slice(nonce);
    let sealed = match secret.len() {
        16 => aes_gcm::Aes128Gcm::new_from_slice(secret).map(|c| c.encrypt(nonce_ga, payload)),
        24 => Aes192Gcm::new_from_slice(secret).map(|c| c.encrypt(nonce_ga, payload)),
        _ => aes_gcm::Aes256Gcm::new_from_slice(secret).map(|c| c.encrypt(nonce_ga, payload)),
    }
    .map_err(|_| bad_key(secret.len()))?
    .map_err(|_| "failed to encrypt with AES-GCM".to_string())?;
    let mut out = nonce.to_vec();
    out.extend(sealed);
    Ok(out)
}

fn gcm_open(secret: &[u8], key: &str, data: &[u8]) -> Result<Vec<u8>, String> {
    if data.len() < 12 {
        return Err(SHORT.into());
    }
    let (nonce, body) = data.split_at(12);
    let payload = Payload {
        msg: body,
        aad: key.as_bytes(),
    };
    let nonce = Nonce::from_slice(nonce);
    match secret.len() {
        16 => aes_gcm::Aes128Gcm::new_from_slice(secret).map(|c| c.decrypt(nonce, payload)),
        24 => Aes192Gcm::new_from_slice(secret).map(|c| c.decrypt(nonce, payload)),
        _ => aes_gcm::Aes256Gcm::new_from_slice(secret).map(|c| c.decrypt(nonce, payload)),
    }
    .map_err(|_| bad_key(secret.len()))?
    .map_err(|_| GCM_AUTH.to_string())
}

/// Nonce, then the sealed box (tag first, as NaCl lays it out).
fn secretbox_seal(secret: &[u8], nonce: &[u8; 24], plain: &[u8]) -> Result<Vec<u8>, String> {
    let cipher = XSalsa20Poly1305::new_from_slice(secret).map_err(|_| {
        format!(
            "expected key size 32 for secretbox provider, got {}",
            secret.len()
        )
    })?;
    let sealed = cipher
        .encrypt(crypto_secretbox::Nonce::from_slice(nonce), plain)
        .map_err(|_| "failed to encrypt with secretbox".to_string())?;
    let mut out = nonce.to_vec();
    out.extend(sealed);
    Ok(out)
}

fn secretbox_open(secret: &[u8], data: &[u8]) -> Result<Vec<u8>, String> {
    // 16: Poly1305's tag.
    if data.len() < 16 + 24 {
        return Err(SHORT.into());
    }
    let (nonce, body) = data.split_at(24);
    let cipher = XSalsa20Poly1305::new_from_slice(secret).map_err(|_| {
        format!(
            "expected key size 32 for secretbox provider, got {}",
            secret.len()
        )
    })?;
    cipher
        .decrypt(crypto_secretbox::Nonce::from_slice(nonce), body)
        .map_err(|_| SECRETBOX_OPEN.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(start: u8, n: usize) -> Vec<u8> {
        (0..n).map(|i| start.wrapping_add(i as u8)).collect()
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    const PLAIN: &[u8] = br#"{"kind":"Secret","data":{"p":"aGVsbG8="}}"#;
    const KEY: &str = "/registry/secrets/default/s1";

    // Known answers computed independently, once: CBC with `openssl enc -aes-256-cbc -K
    // 000102…1f -iv a0a1…af` and with Go's crypto/cipher; GCM with Go's crypto/cipher (nonce
    // b0…bb, the store key as additional data); secretbox with golang.org/x/crypto/nacl/secretbox
    // (nonce c0…d7). Key: the bytes 0..32 (AES-128: the first 16).
    const CBC256: &str = "a0a1a2a3a4a5a6a7a8a9aaabacadaeafda54e881eafae68f34aa2ddb00e56b5265911146372081b72d0e0069e5e92084f0cc053455c0c06bf0cd4465071df8b7";
    const GCM256: &str = "b0b1b2b3b4b5b6b7b8b9babbe27731c282a9996565abf2c1bf38fce0a81e2db3614fad0f25ecf2d366a093515338417d5be384c5d8c155c8bc78423002caacd21317ba0444";
    const GCM128: &str = "b0b1b2b3b4b5b6b7b8b9babb25ebdbf4a9f309059c793e65a71f6bc4f5713316bd8335dcdad4779b80314380cd8c2f6c9a5fa19f0f317067260b612fc0fa2c7d4181211512";
    const SECRETBOX: &str = "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7ad80a35a62d055a874414940a218cbdde6d5e8e034d752d5197bb937e217b357b237872ef28d72730dc7991f272c292e10b869526113970ce9";

    #[test]
    fn known_answers_match_openssl_and_go() {
        let key = seq(0, 32);
        let iv: [u8; 16] = seq(0xa0, 16).try_into().unwrap();
        let nonce: [u8; 12] = seq(0xb0, 12).try_into().unwrap();
        let nonce24: [u8; 24] = seq(0xc0, 24).try_into().unwrap();
        assert_eq!(hex(&cbc_seal(&key, &iv, PLAIN).unwrap()), CBC256);
        assert_eq!(hex(&gcm_seal(&key, &nonce, KEY, PLAIN).unwrap()), GCM256);
        assert_eq!(
            hex(&gcm_seal(&key[..16], &nonce, KEY, PLAIN).unwrap()),
            GCM128
        );
        assert_eq!(
            hex(&secretbox_seal(&key, &nonce24, PLAIN).unwrap()),
            SECRETBOX
        );
        // And they open again.
        let unhex = |s: &str| -> Vec<u8> {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect()
        };
        assert_eq!(cbc_open(&key, &unhex(CBC256)).unwrap(), PLAIN);
        assert_eq!(gcm_open(&key, KEY, &unhex(GCM256)).unwrap(), PLAIN);
        assert_eq!(secretbox_open(&key, &unhex(SECRETBOX)).unwrap(), PLAIN);
        // GCM binds the value to its key: copied elsewhere, it does not open.
        assert_eq!(
            gcm_open(&key, "/registry/secrets/default/s2", &unhex(GCM256)).unwrap_err(),
            GCM_AUTH
        );
    }

    fn chain(providers: Vec<Provider>) -> Chain {
        Chain(providers)
    }

    fn keyed(kind: Kind, keys: &[(&str, Vec<u8>)]) -> Provider {
        Provider::Keyed(
            kind,
            keys.iter()
                .map(|(n, s)| Key {
                    name: n.to_string(),
                    secret: s.clone(),
                })
                .collect(),
        )
    }

    #[test]
    fn every_provider_and_key_size_round_trips_with_its_prefix() {
        for (kind, sizes) in [
            (Kind::AesCbc, &[16, 24, 32][..]),
            (Kind::AesGcm, &[16, 24, 32][..]),
            (Kind::Secretbox, &[32][..]),
        ] {
            for &size in sizes {
                let c = chain(vec![keyed(kind, &[("k1", seq(7, size))])]);
                let stored = c.encrypt(KEY, PLAIN).unwrap();
                let prefix = format!("{}k1:", kind.prefix());
                assert!(stored.starts_with(prefix.as_bytes()), "{kind:?} {size}");
                assert!(!stored.windows(PLAIN.len()).any(|w| w == PLAIN));
                assert_eq!(c.decrypt(KEY, &stored).unwrap(), PLAIN, "{kind:?} {size}");
                // Two writes of one value differ (random IV or nonce).
                assert_ne!(stored, c.encrypt(KEY, PLAIN).unwrap());
            }
        }
    }

    #[test]
    fn rotation_reads_old_keys_and_writes_with_the_first() {
        let old = chain(vec![keyed(Kind::AesCbc, &[("key1", seq(1, 32))])]);
        let written = old.encrypt(KEY, PLAIN).unwrap();
        // key2 added first: old values still read, new ones are written with key2.
        let rotated = chain(vec![keyed(
            Kind::AesCbc,
            &[("key2", seq(2, 32)), ("key1", seq(1, 32))],
        )]);
        assert_eq!(rotated.decrypt(KEY, &written).unwrap(), PLAIN);
        assert!(
            rotated
                .encrypt(KEY, PLAIN)
                .unwrap()
                .starts_with(b"k8s:enc:aescbc:v1:key2:")
        );
        // The same provider listed twice (upstream's own rotation example) reads both.
        assert!(!rotated.is_current(&written) && old.is_current(&written));
        assert!(!old.is_current(PLAIN) && chain(vec![Provider::Identity]).is_current(PLAIN));
        let twice = chain(vec![
            keyed(Kind::AesCbc, &[("key2", seq(2, 32))]),
            keyed(Kind::AesCbc, &[("key1", seq(1, 32))]),
        ]);
        assert_eq!(twice.decrypt(KEY, &written).unwrap(), PLAIN);
    }

    #[test]
    fn identity_reads_plain_values_and_steps_aside_for_encrypted_ones() {
        let c = chain(vec![
            keyed(Kind::AesGcm, &[("key1", seq(1, 32))]),
            Provider::Identity,
        ]);
        assert_eq!(c.decrypt(KEY, PLAIN).unwrap(), PLAIN);
        // identity first: writes stay plain, encrypted values still read (decryption off).
        let off = chain(vec![
            Provider::Identity,
            keyed(Kind::AesGcm, &[("key1", seq(1, 32))]),
        ]);
        let encrypted = c.encrypt(KEY, PLAIN).unwrap();
        assert_eq!(off.decrypt(KEY, &encrypted).unwrap(), PLAIN);
        assert_eq!(off.encrypt(KEY, PLAIN).unwrap(), PLAIN);
        assert_eq!(identity_read(&encrypted).unwrap_err(), IDENTITY_ENCRYPTED);
    }

    #[test]
    fn unreadable_values_fail_with_upstreams_messages() {
        let c = chain(vec![
            keyed(Kind::AesCbc, &[("key1", seq(1, 32))]),
            Provider::Identity,
        ]);
        let written = c.encrypt(KEY, PLAIN).unwrap();
        // The key is gone from the config.
        let other = chain(vec![
            keyed(Kind::AesCbc, &[("key2", seq(2, 32))]),
            Provider::Identity,
        ]);
        assert_eq!(
            other.decrypt(KEY, &written).unwrap_err(),
            "no matching key was found for the provided AES transformer"
        );
        // A key of that name with other bytes: CBC has no tag, the padding check catches it
        // (almost always; a 1-in-256 chance the garbage ends in a valid pad byte).
        let wrong = chain(vec![keyed(Kind::AesCbc, &[("key1", seq(9, 32))])]);
        let wrong_gcm = chain(vec![keyed(Kind::AesGcm, &[("key1", seq(9, 32))])]);
        let gcm = chain(vec![keyed(Kind::AesGcm, &[("key1", seq(1, 32))])]);
        assert_eq!(
            wrong_gcm
                .decrypt(KEY, &gcm.encrypt(KEY, PLAIN).unwrap())
                .unwrap_err(),
            GCM_AUTH
        );
        match wrong.decrypt(KEY, &written) {
            Ok(garbage) => assert_ne!(garbage, PLAIN),
            Err(e) => assert!(
                e.starts_with("invalid P") || e.starts_with("invalid padding"),
                "{e}"
            ),
        }
        // The provider is gone altogether.
        let identity = chain(vec![Provider::Identity]);
        assert_eq!(
            identity.decrypt(KEY, &written).unwrap_err(),
            "no matching prefix found"
        );
        // Cut short.
        assert_eq!(
            c.decrypt(KEY, b"k8s:enc:aescbc:v1:key1:abc").unwrap_err(),
            SHORT
        );
        let sb = chain(vec![keyed(Kind::Secretbox, &[("s", seq(3, 32))])]);
        let mut sealed = sb.encrypt(KEY, PLAIN).unwrap();
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert_eq!(sb.decrypt(KEY, &sealed).unwrap_err(), SECRETBOX_OPEN);
    }
}
