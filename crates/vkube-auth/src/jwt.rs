//! Compact JWS tokens: parsing, the signature-algorithm allow-list and verification against JWKs,
//! with aws-lc-rs (the tree's one crypto provider). jsonwebtoken is not used: it has no ES512,
//! which upstream accepts, and the part vkube needs is small — split, decode, pick the key by
//! `kid`, verify. `jku`, `x5u` and other key-locating headers are ignored, never fetched.

use aws_lc_rs::signature::{
    self, RsaPublicKeyComponents, UnparsedPublicKey, VerificationAlgorithm,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Map, Value};

/// Upstream's limit on a bearer token it will even parse.
pub const MAX_TOKEN_BYTES: usize = 64 * 1024;

/// The algorithms a JWT issuer may use; HS* and `none` are never accepted.
pub const ASYMMETRIC: &[&str] = &[
    "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512",
];

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JwtError {
    #[error("token is too large")]
    TooLarge,
    #[error("malformed jwt: {0}")]
    Malformed(&'static str),
    #[error("unsupported signing algorithm {0:?}")]
    Algorithm(String),
    #[error("no key matches the token's key id")]
    UnknownKey,
    #[error("failed to verify signature")]
    Signature,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Header {
    pub alg: String,
    #[serde(default)]
    pub kid: Option<String>,
}

/// A parsed, not yet verified, token.
#[derive(Debug, Clone)]
pub struct Token {
    pub header: Header,
    pub claims: Map<String, Value>,
    signing_input: String,
    signature: Vec<u8>,
}

impl Token {
    pub fn parse(raw: &str) -> Result<Token, JwtError> {
        if raw.len() > MAX_TOKEN_BYTES {
            return Err(JwtError::TooLarge);
        }
        let mut parts = raw.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed("a JWT has three dot-separated parts"));
        };
        let decode = |part: &str, what| {
            URL_SAFE_NO_PAD
                .decode(part)
                .map_err(|_| JwtError::Malformed(what))
        };
        let header: Header = serde_json::from_slice(&decode(h, "header is not base64url")?)
            .map_err(|_| JwtError::Malformed("header is not a JSON object with alg"))?;
        let claims: Map<String, Value> =
            serde_json::from_slice(&decode(p, "payload is not base64url")?)
                .map_err(|_| JwtError::Malformed("payload is not a JSON object"))?;
        Ok(Token {
            header,
            claims,
            signing_input: format!("{h}.{p}"),
            signature: decode(s, "signature is not base64url")?,
        })
    }

    /// The unverified issuer, to pick the authenticator that owns the token.
    pub fn issuer(&self) -> Option<&str> {
        self.claims.get("iss").and_then(Value::as_str)
    }

    /// Verifies the signature with the key of the token's `kid` (or any key when it has none),
    /// for an algorithm in `allowed`.
    pub fn verify(&self, keys: &[Jwk], allowed: &[String]) -> Result<(), JwtError> {
        let alg = self.header.alg.as_str();
        if !ASYMMETRIC.contains(&alg) || !allowed.iter().any(|a| a == alg) {
            return Err(JwtError::Algorithm(alg.to_string()));
        }
        let candidates: Vec<&Jwk> = keys
            .iter()
            .filter(|k| match (&self.header.kid, &k.kid) {
                (Some(want), Some(have)) => want == have,
                _ => true,
            })
            .filter(|k| k.alg.as_deref().is_none_or(|a| a == alg))
            .collect();
        if candidates.is_empty() {
            return Err(JwtError::UnknownKey);
        }
        for key in candidates {
            if key.verify(alg, self.signing_input.as_bytes(), &self.signature) {
                return Ok(());
            }
        }
        Err(JwtError::Signature)
    }
}

/// One public key of a JWKS.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Jwk {
    pub kty: String,
    #[serde(default)]
    pub kid: Option<String>,
    #[serde(default)]
    pub alg: Option<String>,
    #[serde(default, rename = "use")]
    pub use_: Option<String>,
    #[serde(default)]
    pub n: Option<String>,
    #[serde(default)]
    pub e: Option<String>,
    #[serde(default)]
    pub crv: Option<String>,
    #[serde(default)]
    pub x: Option<String>,
    #[serde(default)]
    pub y: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Jwks {
    pub keys: Vec<Value>,
}

impl Jwks {
    /// The keys vkube can use (RSA and EC signing keys); others are skipped, as go-jose does.
    pub fn usable(&self) -> Vec<Jwk> {
        self.keys
            .iter()
            .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
            .filter(|k| k.use_.as_deref().is_none_or(|u| u == "sig"))
            .filter(|k| k.kty == "RSA" || k.kty == "EC")
            .collect()
    }
}

impl Jwk {
    fn verify(&self, alg: &str, message: &[u8], sig: &[u8]) -> bool {
        let b64 = |v: &Option<String>| v.as_deref().and_then(|s| URL_SAFE_NO_PAD.decode(s).ok());
        match self.kty.as_str() {
            "RSA" => {
                let (Some(n), Some(e)) = (b64(&self.n), b64(&self.e)) else {
                    return false;
                };
                let params: &signature::RsaParameters = match alg {
                    "RS256" => &signature::RSA_PKCS1_2048_8192_SHA256,
                    "RS384" => &signature::RSA_PKCS1_2048_8192_SHA384,
                    "RS512" => &signature::RSA_PKCS1_2048_8192_SHA512,
                    "PS256" => &signature::RSA_PSS_2048_8192_SHA256,
                    "PS384" => &signature::RSA_PSS_2048_8192_SHA384,
                    "PS512" => &signature::RSA_PSS_2048_8192_SHA512,
                    _ => return false,
                };
                RsaPublicKeyComponents { n: &n, e: &e }
                    .verify(params, message, sig)
                    .is_ok()
            }
            "EC" => {
                let (Some(x), Some(y)) = (b64(&self.x), b64(&self.y)) else {
                    return false;
                };
                let (curve, algorithm): (&str, &'static dyn VerificationAlgorithm) = match alg {
                    "ES256" => ("P-256", &signature::ECDSA_P256_SHA256_FIXED),
                    "ES384" => ("P-384", &signature::ECDSA_P384_SHA384_FIXED),
                    "ES512" => ("P-521", &signature::ECDSA_P521_SHA512_FIXED),
                    _ => return false,
                };
                if self.crv.as_deref() != Some(curve) {
                    return false;
                }
                let mut point = vec![4u8];
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                UnparsedPublicKey::new(algorithm, &point)
                    .verify(message, sig)
                    .is_ok()
            }
            _ => false,
        }
    }
}

/// Builds a compact token: for the service-account issuer and for tests.
pub fn encode(header: &Value, claims: &Value, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let h = URL_SAFE_NO_PAD.encode(header.to_string());
    let p = URL_SAFE_NO_PAD.encode(claims.to_string());
    let input = format!("{h}.{p}");
    let sig = sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SigningKey;
    use serde_json::json;

    #[test]
    fn signed_tokens_verify_and_tampering_fails() {
        let key = SigningKey::generate().unwrap();
        let token = key.sign(&json!({"iss": "a", "sub": "b"}));
        let parsed = Token::parse(&token).unwrap();
        let allowed = vec!["ES256".to_string()];
        parsed.verify(&[key.public_jwk()], &allowed).unwrap();
        assert_eq!(
            parsed.verify(&[key.public_jwk()], &["RS256".into()]),
            Err(JwtError::Algorithm("ES256".into()))
        );

        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(json!({"iss": "a", "sub": "admin"}).to_string());
        parts[1] = &forged;
        let tampered = Token::parse(&parts.join(".")).unwrap();
        assert_eq!(
            tampered.verify(&[key.public_jwk()], &allowed),
            Err(JwtError::Signature)
        );

        let other = SigningKey::generate().unwrap();
        assert_eq!(
            parsed.verify(&[other.public_jwk()], &allowed),
            Err(JwtError::UnknownKey)
        );
    }

    #[test]
    fn none_hs256_and_garbage_are_refused() {
        let key = SigningKey::generate().unwrap();
        let none = encode(&json!({"alg": "none"}), &json!({"sub": "x"}), |_| vec![]);
        let hs = encode(
            &json!({"alg": "HS256", "kid": key.kid()}),
            &json!({"sub": "x"}),
            |_| vec![1; 32],
        );
        let allowed: Vec<String> = ASYMMETRIC.iter().map(|s| s.to_string()).collect();
        for t in [none, hs] {
            let parsed = Token::parse(&t).unwrap();
            assert!(matches!(
                parsed.verify(&[key.public_jwk()], &allowed),
                Err(JwtError::Algorithm(_))
            ));
        }
        for bad in ["", "a.b", "a.b.c.d", "!!.??.**", "e30.e30"] {
            assert!(Token::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Token::parse(&"a".repeat(MAX_TOKEN_BYTES + 1)).unwrap_err(),
            JwtError::TooLarge
        );
    }
}
