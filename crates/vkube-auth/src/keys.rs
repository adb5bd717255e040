//! The service-account signing key: ECDSA P-256 (ES256), made once by the first replica and kept
//! in the store with the rest of the cluster identity (DESIGN rule 5), so every replica signs
//! and verifies with the same key. Its key id is upstream's: base64url(SHA-256(SPKI DER)).

use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use crate::jwt::{self, Jwk};

/// The DER prefix of a P-256 SubjectPublicKeyInfo, before the 65-byte uncompressed point.
const P256_SPKI_PREFIX: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

#[derive(Debug, thiserror::Error)]
#[error("service-account key: {0}")]
pub struct KeyError(String);

pub struct SigningKey {
    pair: EcdsaKeyPair,
    pkcs8: Vec<u8>,
    kid: String,
}

impl SigningKey {
    pub fn generate() -> Result<SigningKey, KeyError> {
        let doc =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|e| KeyError(e.to_string()))?;
        SigningKey::from_pkcs8(doc.as_ref())
    }

    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<SigningKey, KeyError> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
            .map_err(|e| KeyError(e.to_string()))?;
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(pair.public_key().as_ref());
        let kid = URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, &spki));
        Ok(SigningKey {
            pair,
            pkcs8: pkcs8.to_vec(),
            kid,
        })
    }

    /// The stored form: the PKCS#8 document in base64.
    pub fn to_stored(&self) -> String {
        STANDARD.encode(&self.pkcs8)
    }

    pub fn from_stored(text: &str) -> Result<SigningKey, KeyError> {
        let der = STANDARD
            .decode(text.trim())
            .map_err(|e| KeyError(e.to_string()))?;
        SigningKey::from_pkcs8(&der)
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": "ES256", "kid": self.kid});
        jwt::encode(&header, claims, |input| {
            self.pair
                .sign(&SystemRandom::new(), input)
                .map(|s| s.as_ref().to_vec())
                .unwrap_or_default()
        })
    }

    pub fn public_jwk(&self) -> Jwk {
        let point = self.pair.public_key().as_ref();
        Jwk {
            kty: "EC".into(),
            kid: Some(self.kid.clone()),
            alg: Some("ES256".into()),
            use_: Some("sig".into()),
            n: None,
            e: None,
            crv: Some("P-256".into()),
            x: Some(URL_SAFE_NO_PAD.encode(&point[1..33])),
            y: Some(URL_SAFE_NO_PAD.encode(&point[33..65])),
        }
    }

    /// `/openid/v1/jwks`: the public key as upstream publishes it.
    pub fn jwks_document(&self) -> Value {
        let k = self.public_jwk();
        json!({"keys": [{"use": "sig", "kty": "EC", "kid": k.kid, "crv": "P-256", "alg": "ES256", "x": k.x, "y": k.y}]})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_key_comes_back_with_the_same_id() {
        let key = SigningKey::generate().unwrap();
        let again = SigningKey::from_stored(&key.to_stored()).unwrap();
        assert_eq!(key.kid(), again.kid());
        assert_eq!(key.kid().len(), 43);
        assert!(SigningKey::from_stored("bm90IGEga2V5").is_err());
    }
}
