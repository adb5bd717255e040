//! One test per row of `shared/conformance/oidc-scenarios.md` (flags and verification), named
//! after the row, against the test provider over real HTTPS.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::jwt::Token;
use crate::testing::TestIdp;

const CLIENT: &str = "vkube";

fn flags(idp: &TestIdp, extra: &[&str]) -> JwtConfig {
    let mut f = Flags::default();
    f.set(&format!("--oidc-issuer-url={}", idp.issuer)).unwrap();
    f.set(&format!("--oidc-client-id={CLIENT}")).unwrap();
    for arg in extra {
        f.set(arg).unwrap();
    }
    let mut cfg = f.to_config().unwrap().unwrap();
    cfg.ca_pem = Some(idp.ca_pem.clone());
    cfg
}

/// Starts an authenticator and waits until its issuer is reachable.
pub(crate) async fn ready(cfg: JwtConfig) -> Arc<JwtAuthenticator> {
    let a = JwtAuthenticator::new(cfg).unwrap();
    a.start();
    for _ in 0..200 {
        if a.health().is_ok() {
            return a;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("issuer never became healthy: {:?}", a.health());
}

async fn verdict(a: &JwtAuthenticator, token: &str) -> Outcome {
    a.authenticate(&Token::parse(token).unwrap()).await
}

fn user(o: &Outcome) -> (&str, Vec<&str>) {
    match o {
        Outcome::User(u) => (
            u.username.as_str(),
            u.groups
                .iter()
                .map(String::as_str)
                .filter(|g| *g != "system:authenticated")
                .collect(),
        ),
        other => panic!("expected a user, got {other:?}"),
    }
}

fn rejected(o: &Outcome, why: &str) {
    match o {
        Outcome::Rejected(r) => assert!(r.contains(why), "{r:?} does not say {why:?}"),
        other => panic!("expected a rejection ({why}), got {other:?}"),
    }
}

fn with(mut claims: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    claims
}

#[test]
fn flags_to_config() {
    let mut f = Flags::default();
    f.set("--oidc-issuer-url=https://idp.example").unwrap();
    assert_eq!(
        f.to_config().unwrap_err().0,
        "oidc-issuer-url and oidc-client-id must be specified together when using oidc flags"
    );
    f.set("--oidc-client-id=k").unwrap();
    let cfg = f.to_config().unwrap().unwrap();
    assert_eq!(
        cfg.username,
        config::Mapping::Claim {
            claim: "sub".into(),
            prefix: "https://idp.example#".into()
        }
    );
    assert_eq!(cfg.signing_algs, ["RS256"]);
    let mut email = f.clone();
    email.set("--oidc-username-claim=email").unwrap();
    assert_eq!(
        email.to_config().unwrap().unwrap().username,
        config::Mapping::Claim {
            claim: "email".into(),
            prefix: "".into()
        }
    );
    let mut dash = f.clone();
    dash.set("--oidc-username-prefix=-").unwrap();
    assert_eq!(
        dash.to_config().unwrap().unwrap().username,
        config::Mapping::Claim {
            claim: "sub".into(),
            prefix: "".into()
        }
    );
    let mut hs = f.clone();
    hs.set("--oidc-signing-algs=HS256").unwrap();
    assert_eq!(
        hs.to_config().unwrap_err().0,
        "oidc: unsupported signing alg: \"HS256\""
    );
    let mut http = Flags::default();
    http.set("--oidc-issuer-url=http://idp.example").unwrap();
    http.set("--oidc-client-id=k").unwrap();
    assert!(
        http.to_config()
            .unwrap_err()
            .0
            .contains("URL scheme must be https")
    );
    assert!(Flags::default().to_config().unwrap().is_none());
}

#[tokio::test]
async fn token_valid_username_from_sub() {
    let idp = TestIdp::start("").await;
    let a = ready(flags(&idp, &[])).await;
    let o = verdict(&a, &idp.mint("RS256", &idp.claims(CLIENT))).await;
    assert_eq!(user(&o).0, format!("{}#alice", idp.issuer));
}

#[tokio::test]
async fn no_username_claim_missing() {
    let idp = TestIdp::start("").await;
    let a = ready(flags(&idp, &[])).await;
    let t = idp.mint("RS256", &with(idp.claims(CLIENT), json!({"sub": null})));
    rejected(&verdict(&a, &t).await, "claim not present");
}

#[tokio::test]
async fn email_claims() {
    let idp = TestIdp::start("").await;
    let a = ready(flags(&idp, &["--oidc-username-claim=email"])).await;
    let base = with(idp.claims(CLIENT), json!({"email": "jane@example.com"}));
    // email — email_verified true: accept, no prefix.
    let o = verdict(
        &a,
        &idp.mint(
            "RS256",
            &with(base.clone(), json!({"email_verified": true})),
        ),
    )
    .await;
    assert_eq!(user(&o).0, "jane@example.com");
    // email-not-verified
    let o = verdict(
        &a,
        &idp.mint(
            "RS256",
            &with(base.clone(), json!({"email_verified": false})),
        ),
    )
    .await;
    rejected(&o, "email not verified");
    // no-email-verified-claim
    assert_eq!(
        user(&verdict(&a, &idp.mint("RS256", &base)).await).0,
        "jane@example.com"
    );
    // invalid-email-verified-claim
    let o = verdict(
        &a,
        &idp.mint("RS256", &with(base, json!({"email_verified": "true"}))),
    )
    .await;
    rejected(&o, "email_verified");
}

#[tokio::test]
async fn groups_claims_and_prefixes() {
    let idp = TestIdp::start("").await;
    let a = ready(flags(
        &idp,
        &[
            "--oidc-groups-claim=groups",
            "--oidc-groups-prefix=oidc:",
            "--oidc-username-prefix=u:",
        ],
    ))
    .await;
    let c = idp.claims(CLIENT);
    // groups (list), groups-prefix, username-prefix
    let o = verdict(
        &a,
        &idp.mint("RS256", &with(c.clone(), json!({"groups": ["a", "b"]}))),
    )
    .await;
    assert_eq!(user(&o), ("u:alice", vec!["oidc:a", "oidc:b"]));
    // group-string-claim
    let o = verdict(
        &a,
        &idp.mint("RS256", &with(c.clone(), json!({"groups": "a"}))),
    )
    .await;
    assert_eq!(user(&o).1, ["oidc:a"]);
    // no-groups-claim
    assert!(
        user(&verdict(&a, &idp.mint("RS256", &c)).await)
            .1
            .is_empty()
    );
    // invalid-groups-claim
    rejected(
        &verdict(&a, &idp.mint("RS256", &with(c, json!({"groups": 42})))).await,
        "groups claim",
    );
}

#[tokio::test]
async fn groups_distributed() {
    let idp = TestIdp::start("").await;
    let a = ready(flags(&idp, &["--oidc-groups-claim=groups"])).await;
    let c = idp.claims(CLIENT);
    let good = idp.serve_claim(
        "good",
        idp.mint("RS256", &with(c.clone(), json!({"groups": ["team"]}))),
    );
    let distributed = |names: Value, sources: Value| {
        with(
            c.clone(),
            json!({"_claim_names": names, "_claim_sources": sources}),
        )
    };
    // groups-distributed
    let t = idp.mint(
        "RS256",
        &distributed(
            json!({"groups": "src1"}),
            json!({"src1": {"endpoint": good, "access_token": "t"}}),
        ),
    );
    assert_eq!(user(&verdict(&a, &t).await).1, ["team"]);
    // groups-distributed-malformed-claim-names
    let t = idp.mint(
        "RS256",
        &distributed(
            json!({"groups": "nope"}),
            json!({"src1": {"endpoint": good}}),
        ),
    );
    rejected(&verdict(&a, &t).await, "source does not exist");
    // groups-distributed-malformed-names-and-sources
    let t = idp.mint("RS256", &distributed(json!({"groups": "src1"}), json!({})));
    rejected(&verdict(&a, &t).await, "source does not exist");
    // groups-distributed-malformed-distributed-claim
    let junk = idp.serve_claim("junk", "{\"groups\": [\"x\"]}".into());
    let t = idp.mint(
        "RS256",
        &distributed(json!({"groups": "s"}), json!({"s": {"endpoint": junk}})),
    );
    rejected(&verdict(&a, &t).await, "distributed claim");
    // groups-distributed-wrong-audience
    let wrong = idp.serve_claim(
        "wrong",
        idp.mint(
            "RS256",
            &with(c.clone(), json!({"aud": "other", "groups": ["x"]})),
        ),
    );
    let t = idp.mint(
        "RS256",
        &distributed(json!({"groups": "s"}), json!({"s": {"endpoint": wrong}})),
    );
    rejected(&verdict(&a, &t).await, "audience");
    // groups-distributed-expired-token
    let old = idp.serve_claim(
        "old",
        idp.mint(
            "RS256",
            &with(c.clone(), json!({"exp": 1000, "groups": ["x"]})),
        ),
    );
    let t = idp.mint(
        "RS256",
        &distributed(json!({"groups": "s"}), json!({"s": {"endpoint": old}})),
    );
    rejected(&verdict(&a, &t).await, "expired");
    // groups-distributed-normal-claim-wins (the endpoint would fail; it is not fetched)
    let t = idp.mint(
        "RS256",
        &with(
            distributed(json!({"groups": "s"}), json!({"s": {"endpoint": junk}})),
            json!({"groups": ["own"]}),
        ),
    );
    assert_eq!(user(&verdict(&a, &t).await).1, ["own"]);
    // group-string-claim-distributed
    let one = idp.serve_claim(
        "one",
        idp.mint("RS256", &with(c.clone(), json!({"groups": "solo"}))),
    );
    let t = idp.mint(
        "RS256",
        &distributed(json!({"groups": "s"}), json!({"s": {"endpoint": one}})),
    );
    assert_eq!(user(&verdict(&a, &t).await).1, ["solo"]);
    // group-string-claim-aggregated-not-supported
    let t = idp.mint(
        "RS256",
        &distributed(json!({"groups": "s"}), json!({"s": {"JWT": "a.b.c"}})),
    );
    assert!(user(&verdict(&a, &t).await).1.is_empty());
    // Azure AD overage: authenticated with the claims present.
    let graph = "https://graph.microsoft.com/v1.0/users/x/getMemberObjects";
    let t = idp.mint(
        "RS256",
        &distributed(
            json!({"groups": "src1"}),
            json!({"src1": {"endpoint": graph}}),
        ),
    );
    assert_eq!(
        user(&verdict(&a, &t).await),
        (format!("{}#alice", idp.issuer).as_str(), vec![])
    );
}

#[tokio::test]
async fn groups_distributed_unusual_name() {
    let idp = TestIdp::start("").await;
    let a = ready(flags(&idp, &["--oidc-groups-claim=rabbits"])).await;
    let c = idp.claims(CLIENT);
    let src = idp.serve_claim(
        "r",
        idp.mint("RS256", &with(c.clone(), json!({"rabbits": ["white"]}))),
    );
    let t = idp.mint(
        "RS256",
        &with(
            c,
            json!({"_claim_names": {"rabbits": "s"}, "_claim_sources": {"s": {"endpoint": src}}}),
        ),
    );
    assert_eq!(user(&verdict(&a, &t).await).1, ["white"]);
}

#[tokio::test]
async fn required_claims() {
    let idp = TestIdp::start("").await;
    let a = ready(flags(&idp, &["--oidc-required-claim=hd=example.com"])).await;
    let c = idp.claims(CLIENT);
    assert!(matches!(
        verdict(
            &a,
            &idp.mint("RS256", &with(c.clone(), json!({"hd": "example.com"})))
        )
        .await,
        Outcome::User(_)
    ));
    rejected(&verdict(&a, &idp.mint("RS256", &c)).await, "not present");
    rejected(
        &verdict(&a, &idp.mint("RS256", &with(c, json!({"hd": "evil.com"})))).await,
        "does not match",
    );
}

#[tokio::test]
async fn signatures_times_audiences_and_issuers() {
    let idp = TestIdp::start("").await;
    let a = ready(flags(&idp, &[])).await;
    let c = idp.claims(CLIENT);
    // invalid-signature: a key the issuer never published.
    rejected(
        &verdict(&a, &idp.mint_unpublished("RS256", &c)).await,
        "signature",
    );
    // expired
    rejected(
        &verdict(
            &a,
            &idp.mint(
                "RS256",
                &with(c.clone(), json!({"exp": crate::unix_now() - 1})),
            ),
        )
        .await,
        "expired",
    );
    // not yet valid
    let later = crate::unix_now() + 3600;
    rejected(
        &verdict(
            &a,
            &idp.mint(
                "RS256",
                &with(c.clone(), json!({"nbf": later, "exp": later + 60})),
            ),
        )
        .await,
        "nbf",
    );
    // invalid-aud and good token with bad client id
    rejected(
        &verdict(
            &a,
            &idp.mint("RS256", &with(c.clone(), json!({"aud": "other"}))),
        )
        .await,
        "audience",
    );
    // multiple-audiences (azp ignored)
    let multi = with(c.clone(), json!({"aud": ["other", CLIENT], "azp": "other"}));
    assert!(matches!(
        verdict(&a, &idp.mint("RS256", &multi)).await,
        Outcome::User(_)
    ));
    // invalid-issuer: not this authenticator's token.
    assert_eq!(
        verdict(
            &a,
            &idp.mint("RS256", &with(c.clone(), json!({"iss": "https://other"})))
        )
        .await,
        Outcome::NotMine
    );
    // invalid-signing-alg: PS256 while only RS256 is allowed.
    rejected(
        &verdict(&a, &idp.mint("PS256", &c)).await,
        "unsupported signing algorithm",
    );
}

#[tokio::test]
async fn ps256_and_es512_with_several_keys() {
    let idp = TestIdp::start("").await;
    let a = ready(flags(&idp, &["--oidc-signing-algs=PS256,ES512,ES256"])).await;
    let c = idp.claims(CLIENT);
    for alg in ["PS256", "ES512", "ES256"] {
        assert!(
            matches!(verdict(&a, &idp.mint(alg, &c)).await, Outcome::User(_)),
            "{alg}"
        );
    }
}

#[tokio::test]
async fn multiple_audiences_match_any() {
    let idp = TestIdp::start("").await;
    let mut cfg = flags(&idp, &[]);
    cfg.audiences = vec!["a".into(), "b".into()];
    let a = ready(cfg).await;
    let c = idp.claims("a");
    assert!(matches!(
        verdict(&a, &idp.mint("RS256", &c)).await,
        Outcome::User(_)
    ));
    assert!(matches!(
        verdict(
            &a,
            &idp.mint("RS256", &with(c.clone(), json!({"aud": ["a", "b"]})))
        )
        .await,
        Outcome::User(_)
    ));
    rejected(
        &verdict(&a, &idp.mint("RS256", &with(c, json!({"aud": ["c"]})))).await,
        "audience",
    );
}

#[tokio::test]
async fn health_check_failure_then_recovery() {
    let idp = TestIdp::start("").await;
    idp.set_down(true);
    let a = JwtAuthenticator::new(flags(&idp, &[])).unwrap();
    a.start();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(a.health().is_err());
    let t = idp.mint("RS256", &idp.claims(CLIENT));
    rejected(&verdict(&a, &t).await, "oidc:");
    idp.set_down(false);
    let a2 = a.clone();
    let recovered = tokio::time::timeout(Duration::from_secs(15), async move {
        while a2.health().is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        recovered.is_ok(),
        "discovery retried until the issuer came back"
    );
    assert!(matches!(verdict(&a, &t).await, Outcome::User(_)));
}

#[tokio::test]
async fn issuer_url_with_path_and_exact_match() {
    let idp = TestIdp::start("/tenant/v2.0").await;
    let a = ready(flags(&idp, &[])).await;
    assert!(matches!(
        verdict(&a, &idp.mint("RS256", &idp.claims(CLIENT))).await,
        Outcome::User(_)
    ));
    // A trailing slash is another issuer.
    let other = with(
        idp.claims(CLIENT),
        json!({"iss": format!("{}/", idp.issuer)}),
    );
    assert_eq!(
        verdict(&a, &idp.mint("RS256", &other)).await,
        Outcome::NotMine
    );
}

#[tokio::test]
async fn key_rotation_is_picked_up_and_refetches_are_rate_limited() {
    let idp = TestIdp::start("").await;
    let a = ready(flags(&idp, &[])).await;
    let before = idp.jwks_fetches();
    // A token signed with a key the issuer publishes only later (rotation).
    let t = idp.mint_unpublished("RS256", &idp.claims(CLIENT));
    idp.publish_hidden();
    assert!(matches!(verdict(&a, &t).await, Outcome::User(_)));
    assert_eq!(idp.jwks_fetches(), before + 1);
    // Unknown kids right after do not hammer the issuer.
    for _ in 0..5 {
        let _ = verdict(&a, &idp.mint_unpublished("RS256", &idp.claims(CLIENT))).await;
    }
    assert_eq!(idp.jwks_fetches(), before + 1);
}

#[tokio::test]
async fn jti_becomes_the_credential_id() {
    let idp = TestIdp::start("").await;
    let a = ready(flags(&idp, &[])).await;
    let o = verdict(
        &a,
        &idp.mint("RS256", &with(idp.claims(CLIENT), json!({"jti": "abc"}))),
    )
    .await;
    let Outcome::User(u) = o else { panic!() };
    assert_eq!(u.extra[crate::CREDENTIAL_ID], ["JTI=abc"]);
    let o = verdict(
        &a,
        &idp.mint("RS256", &with(idp.claims(CLIENT), json!({"jti": 7}))),
    )
    .await;
    let Outcome::User(u) = o else { panic!() };
    assert!(u.extra.is_empty());
}

#[tokio::test]
async fn accounts_google_com_without_a_scheme() {
    let mut cfg = flags(&TestIdp::start("").await, &[]);
    cfg.issuer = "https://accounts.google.com".into();
    let a = JwtAuthenticator::new(cfg).unwrap();
    let idp = TestIdp::start("").await;
    let t = idp.mint(
        "RS256",
        &with(idp.claims(CLIENT), json!({"iss": "accounts.google.com"})),
    );
    // Claimed by the https://accounts.google.com issuer (then refused here: never initialized).
    assert_ne!(verdict(&a, &t).await, Outcome::NotMine);
}

#[tokio::test]
async fn azure_ad_v1_and_v2_shapes() {
    // v1: https://sts.windows.net/TENANT/ (trailing slash), upn; v2: …/v2.0, preferred_username.
    for (path, claim) in [
        ("/tenant-id/", "upn"),
        ("/tenant-id/v2.0", "preferred_username"),
    ] {
        let idp = TestIdp::start(path).await;
        let a = ready(flags(
            &idp,
            &[
                &format!("--oidc-username-claim={claim}"),
                "--oidc-username-prefix=azure:",
                "--oidc-groups-claim=groups",
            ],
        ))
        .await;
        let guid = "3f2a1c5e-0000-4000-8000-000000000001";
        let c = with(
            idp.claims(CLIENT),
            json!({claim: "jane@contoso.com", "oid": "oid-1", "groups": [guid]}),
        );
        let o = verdict(&a, &idp.mint("RS256", &c)).await;
        assert_eq!(user(&o), ("azure:jane@contoso.com", vec![guid]), "{path}");
    }
}
