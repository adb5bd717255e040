//! Property tests (issue 17, hostile input) of the JWT verifier: whatever a client sends as a
//! bearer token, parsing and verification never panic, and only a token the key signed, unchanged,
//! verifies. Cases: the `cases` below, unless `PROPTEST_CASES` is set.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;
use serde_json::{Value, json};
use vkube_auth::jwt::{ASYMMETRIC, Jwk, Jwks, Token, encode};
use vkube_auth::keys::SigningKey;

fn allowed() -> Vec<String> {
    ASYMMETRIC.iter().map(|a| a.to_string()).collect()
}

fn key() -> &'static SigningKey {
    static KEY: std::sync::OnceLock<SigningKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| SigningKey::generate().unwrap())
}

fn claims() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::from),
        "\\PC{0,10}".prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
    ];
    let value = leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    prop::collection::btree_map("iss|sub|aud|exp|nbf|iat|[a-z]{1,6}", value, 0..6)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

/// A header as an attacker writes one: any algorithm (`none`, HMAC, the asymmetric ones,
/// nonsense), the key's id or another, sometimes not an object at all.
fn header() -> impl Strategy<Value = Value> {
    let alg = prop_oneof![
        prop::sample::select(vec![
            "none", "None", "HS256", "HS512", "RS256", "ES256", "ES384", "ES512", "PS256", "EdDSA",
            "",
        ])
        .prop_map(Value::from),
        "\\PC{0,8}".prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
    ];
    let kid = prop_oneof![
        Just(None),
        Just(Some(Value::from(key().kid()))),
        "\\PC{0,8}".prop_map(|k| Some(Value::from(k))),
    ];
    prop_oneof![
        4 => (alg, kid).prop_map(|(alg, kid)| {
            let mut h = json!({"alg": alg, "typ": "JWT"});
            if let Some(kid) = kid {
                h["kid"] = kid;
            }
            h
        }),
        1 => Just(json!([])),
        1 => Just(json!("ES256")),
    ]
}

/// Garbage keys beside the real one, under its key id: wrong types, bad points, short moduli,
/// missing key material.
fn keys() -> impl Strategy<Value = Vec<Jwk>> {
    let b64 = prop::collection::vec(any::<u8>(), 0..80).prop_map(|b| URL_SAFE_NO_PAD.encode(b));
    let junk = (
        prop::sample::select(vec!["RSA", "EC", "oct", "OKP", ""]),
        proptest::option::of(b64.clone()),
        proptest::option::of(b64.clone()),
        proptest::option::of(b64),
        proptest::option::of(prop::sample::select(vec!["P-256", "P-384", "P-521", "X"])),
    )
        .prop_map(|(kty, a, b, c, crv)| {
            let doc =
                json!({"kty": kty, "kid": key().kid(), "n": a, "e": b, "x": a, "y": c, "crv": crv});
            serde_json::from_value::<Jwk>(doc).unwrap()
        });
    prop::collection::vec(junk, 0..4)
}

/// `token` with a few characters changed, dropped or added.
fn mutated(token: String) -> impl Strategy<Value = String> {
    let len = token.len();
    prop::collection::vec((0..len, "[A-Za-z0-9_.=+/-]", 0u8..3), 1..4).prop_map(move |edits| {
        let mut t: Vec<char> = token.chars().collect();
        for (at, c, how) in edits {
            let at = at.min(t.len().saturating_sub(1));
            let c = c.chars().next().unwrap();
            match how {
                0 if !t.is_empty() => t[at] = c,
                1 if !t.is_empty() => {
                    t.remove(at);
                }
                _ => t.insert(at, c),
            }
        }
        t.into_iter().collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn any_text_is_refused_without_a_panic(raw in prop_oneof![
        any::<String>(),
        "[A-Za-z0-9_-]{0,40}\\.[A-Za-z0-9_-]{0,40}\\.[A-Za-z0-9_-]{0,40}",
        "(eyJ[A-Za-z0-9_-]{0,30}\\.?){0,5}",
    ]) {
        if let Ok(token) = Token::parse(&raw) {
            prop_assert!(token.verify(&[key().public_jwk()], &allowed()).is_err());
        }
    }

    #[test]
    fn forged_tokens_never_verify(
        header in header(),
        claims in claims(),
        signature in prop::collection::vec(any::<u8>(), 0..140),
        junk in keys(),
    ) {
        let raw = encode(&header, &claims, |_| signature.clone());
        if let Ok(token) = Token::parse(&raw) {
            let mut keys = junk;
            keys.push(key().public_jwk());
            prop_assert!(token.verify(&keys, &allowed()).is_err(), "{raw}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn signed_tokens_verify_and_any_change_breaks_them(
        (token, changed) in claims()
            .prop_map(|c| key().sign(&c))
            .prop_flat_map(|t| (Just(t.clone()), mutated(t))),
        junk in keys(),
    ) {
        let mut keys = junk;
        keys.push(key().public_jwk());
        let parsed = Token::parse(&token).unwrap();
        prop_assert!(parsed.verify(&keys, &allowed()).is_ok());
        prop_assert!(parsed.verify(&keys, &["RS256".to_string()]).is_err());
        if changed != token
            && let Ok(t) = Token::parse(&changed)
        {
            prop_assert!(t.verify(&keys, &allowed()).is_err(), "{changed}");
        }
    }

    #[test]
    fn any_jwks_document_is_read_without_a_panic(doc in prop_oneof![
        keys().prop_map(|k| json!({"keys": k.iter().map(|j| json!({
            "kty": j.kty, "kid": j.kid, "n": j.n, "e": j.e, "x": j.x, "y": j.y, "crv": j.crv,
            "use": "sig",
        })).collect::<Vec<_>>()})),
        claims().prop_map(|c| json!({"keys": [c]})),
    ]) {
        if let Ok(jwks) = serde_json::from_value::<Jwks>(doc) {
            let usable = jwks.usable();
            let token = Token::parse(&key().sign(&json!({"sub": "x"}))).unwrap();
            prop_assert!(token.verify(&usable, &allowed()).is_err());
        }
    }
}
