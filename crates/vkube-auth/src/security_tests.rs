//! Tokens an attacker would send, through the whole chain: each is refused (the server answers
//! 401) and none panics. `jku`/`x5u` headers are never fetched.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

use crate::chain::Chain;
use crate::keys::SigningKey;
use crate::metrics::AuthMetrics;
use crate::oidc::Flags;
use crate::oidc::file::Anonymous;
use crate::service_account::Issuer;
use crate::testing::TestIdp;

async fn chain(idp: &TestIdp) -> Chain {
    let store: Arc<dyn vkube_store::Store> = vkube_store::MemoryStore::new();
    let issuer = Issuer::new(
        "https://kubernetes.default.svc".into(),
        vec![],
        SigningKey::generate().unwrap(),
        store,
    );
    let chain = Chain::new(
        Arc::new(issuer),
        Anonymous::Enabled,
        AuthMetrics::new("test"),
    );
    let mut f = Flags::default();
    f.set(&format!("--oidc-issuer-url={}", idp.issuer)).unwrap();
    f.set("--oidc-client-id=vkube").unwrap();
    f.set("--oidc-signing-algs=RS256,ES256").unwrap();
    let mut cfg = f.to_config().unwrap().unwrap();
    cfg.ca_pem = Some(idp.ca_pem.clone());
    let a = crate::oidc::tests::ready(cfg).await;
    chain.set_jwt(vec![a]);
    chain
}

#[tokio::test]
async fn hostile_tokens_are_refused() {
    let idp = TestIdp::start("").await;
    let chain = chain(&idp).await;
    let claims = idp.claims("vkube");
    // The valid token works, so each refusal below is about what was changed.
    chain
        .authenticate(&idp.mint("RS256", &claims), None)
        .await
        .unwrap();

    let b64 = |v: &serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let jwk = idp.public_jwk("RS256");
    let public_key_bytes = jwk.to_string().into_bytes();
    let hs256 = {
        use aws_lc_rs::hmac;
        let key = hmac::Key::new(hmac::HMAC_SHA256, &public_key_bytes);
        crate::jwt::encode(
            &json!({"alg": "HS256", "kid": idp.kid("RS256")}),
            &claims,
            |input| hmac::sign(&key, input).as_ref().to_vec(),
        )
    };
    let jku_server = idp.serve_claim("jwks", json!({"keys": [jwk]}).to_string());
    let now = crate::unix_now();
    let mut expired = claims.clone();
    expired["exp"] = json!(now - 1);
    let mut wrong_aud = claims.clone();
    wrong_aud["aud"] = json!("other");
    let mut wrong_iss = claims.clone();
    wrong_iss["iss"] = json!("https://evil.example");
    let mut huge = claims.clone();
    huge["pad"] = json!("x".repeat(70 * 1024));
    let cases: Vec<(&str, String)> = vec![
        (
            "alg none",
            format!("{}.{}.", b64(&json!({"alg": "none"})), b64(&claims)),
        ),
        ("HS256 signed with the public key", hs256),
        (
            "kid naming no key",
            idp.mint_with_header("RS256", &json!({"alg": "RS256", "kid": "nope"}), &claims),
        ),
        (
            "a key the issuer never published",
            idp.mint_unpublished("RS256", &claims),
        ),
        ("expired", idp.mint("RS256", &expired)),
        ("wrong audience", idp.mint("RS256", &wrong_aud)),
        ("wrong issuer", idp.mint("RS256", &wrong_iss)),
        ("over 64 KiB", idp.mint("RS256", &huge)),
        ("malformed base64", "!!!.???.***".into()),
        (
            "malformed JSON",
            format!(
                "{}.{}.c2ln",
                URL_SAFE_NO_PAD.encode("{not json"),
                b64(&claims)
            ),
        ),
        ("two parts", "abc.def".into()),
        ("empty", String::new()),
    ];
    for (what, token) in cases {
        assert!(
            chain.authenticate(&token, None).await.is_err(),
            "{what} was accepted"
        );
    }
    // A token whose header names a jku with the right keys there is still refused: the header
    // is ignored and the key is not the issuer's.
    let forged_key_token = idp.mint_with_header(
        "ES256",
        &json!({"alg": "ES256", "kid": "attacker", "jku": jku_server, "x5u": jku_server}),
        &claims,
    );
    assert!(chain.authenticate(&forged_key_token, None).await.is_err());
    assert_eq!(idp.hits("/claims/jwks"), 0, "jku/x5u were fetched");
}
