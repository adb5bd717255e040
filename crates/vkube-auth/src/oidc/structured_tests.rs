//! The AuthenticationConfiguration rows of `shared/conformance/oidc-scenarios.md`: init errors
//! for invalid files, and the verdicts of CEL rules and mappings against the test provider.

use serde_json::{Value, json};

use super::file::{Anonymous, parse};
use super::*;
use crate::jwt::Token;
use crate::testing::TestIdp;

fn file(issuers: &str) -> String {
    format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: AuthenticationConfiguration\njwt:\n{issuers}"
    )
}

fn issuer(url: &str, ca: &str, body: &str) -> String {
    let ca: String = ca.lines().map(|l| format!("        {l}\n")).collect();
    format!(
        "- issuer:\n    url: {url}\n    audiences: [vkube]\n    certificateAuthority: |\n{ca}{body}"
    )
}

fn init_error(text: &str) -> String {
    parse(text).unwrap_err().0
}

async fn start(idp: &TestIdp, body: &str) -> std::sync::Arc<JwtAuthenticator> {
    let cfg = parse(&file(&issuer(&idp.issuer, &idp.ca_pem, body))).unwrap();
    super::tests::ready(cfg.jwt[0].clone()).await
}

async fn verdict(a: &JwtAuthenticator, token: &str) -> Outcome {
    a.authenticate(&Token::parse(token).unwrap()).await
}

fn claims(idp: &TestIdp, extra: Value) -> Value {
    let mut c = idp.claims("vkube");
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

const SUB: &str = "  claimMappings:\n    username: {claim: sub, prefix: \"\"}\n";

#[test]
fn invalid_files_are_init_errors() {
    let ca = "x";
    let url = "https://idp.example";
    let two = file(&format!("{}{}", issuer(url, ca, SUB), issuer(url, ca, SUB)));
    assert!(
        init_error(&two).contains("jwt[1].issuer.url: Duplicate value: \"https://idp.example\"")
    );
    let same_discovery = file(&issuer(url, ca, SUB).replace(
        "    audiences:",
        &format!("    discoveryURL: {url}\n    audiences:"),
    ));
    assert!(init_error(&same_discovery).contains("discoveryURL must be different from URL"));
    let no_aud = file(&issuer(url, ca, SUB).replace("    audiences: [vkube]\n", ""));
    assert!(init_error(&no_aud).contains("jwt[0].issuer.audiences: Required value"));
    let many = file(&issuer(url, ca, SUB).replace("[vkube]", "[a, b]"));
    assert!(
        init_error(&many).contains("audienceMatchPolicy must be MatchAny for multiple audiences")
    );
    let no_prefix = file(&issuer(
        url,
        ca,
        "  claimMappings:\n    username: {claim: sub}\n",
    ));
    assert!(
        init_error(&no_prefix).contains("jwt[0].claimMappings.username.prefix: Required value")
    );
    let both = file(&issuer(
        url,
        ca,
        "  claimMappings:\n    username: {claim: sub, prefix: \"\", expression: claims.sub}\n",
    ));
    assert!(init_error(&both).contains("claim and expression can't both be set"));
    let dup_extra = file(&issuer(
        url,
        ca,
        &format!(
            "{SUB}    extra:\n    - {{key: example.com/a, valueExpression: claims.sub}}\n    - {{key: example.com/a, valueExpression: claims.sub}}\n"
        ),
    ));
    assert!(init_error(&dup_extra).contains("jwt[0].claimMappings.extra[1].key: Duplicate value"));
    let upper = file(&issuer(
        url,
        ca,
        &format!("{SUB}    extra:\n    - {{key: example.com/A, valueExpression: claims.sub}}\n"),
    ));
    assert!(init_error(&upper).contains("key must be lowercase"));
    let bare = file(&issuer(
        url,
        ca,
        &format!("{SUB}    extra:\n    - {{key: team, valueExpression: claims.sub}}\n"),
    ));
    assert!(init_error(&bare).contains("must be a domain-prefixed path"));
    let email = file(&issuer(
        url,
        ca,
        "  claimMappings:\n    username: {expression: claims.email}\n",
    ));
    assert!(init_error(&email).contains("claims.email_verified must be used"));
    let email_ok = file(&issuer(
        url,
        ca,
        "  claimMappings:\n    username: {expression: \"claims.?email_verified.orValue(true) == true ? claims.email : ''\"}\n",
    ));
    if let Err(e) = parse(&email_ok) {
        panic!("{e}");
    }
    let bad_cel = file(&issuer(
        url,
        ca,
        "  claimMappings:\n    username: {expression: \"claims.(\"}\n",
    ));
    assert!(
        init_error(&bad_cel).contains("jwt[0].claimMappings.username.expression: Invalid value")
    );
    let http = file(&issuer("http://idp.example", ca, SUB));
    assert!(init_error(&http).contains("URL scheme must be https"));
    let unknown = file(&issuer(url, ca, SUB)).replace("kind:", "bogus: 1\nkind:");
    assert!(init_error(&unknown).contains("bogus"));
    let anon = format!(
        "{}anonymous:\n  enabled: true\n  conditions:\n  - path: /livez\n",
        file(&issuer(url, ca, SUB))
    );
    assert_eq!(
        parse(&anon).unwrap().anonymous,
        Some(Anonymous::Paths(vec!["/livez".into()]))
    );
}

#[tokio::test]
async fn claim_validation_rules() {
    let idp = TestIdp::start("").await;
    let body = format!(
        "  claimValidationRules:\n  - expression: \"claims.hd == 'example.com'\"\n    message: the hd claim must be example.com\n  - {{claim: tier, requiredValue: gold}}\n{SUB}"
    );
    let a = start(&idp, &body).await;
    let good = claims(&idp, json!({"hd": "example.com", "tier": "gold"}));
    assert!(matches!(
        verdict(&a, &idp.mint("RS256", &good)).await,
        Outcome::User(_)
    ));
    let wrong = claims(&idp, json!({"hd": "evil.com", "tier": "gold"}));
    let Outcome::Rejected(why) = verdict(&a, &idp.mint("RS256", &wrong)).await else {
        panic!()
    };
    assert!(why.contains("the hd claim must be example.com"), "{why}");
    // A claim the expression reads is missing: no such key.
    let missing = claims(&idp, json!({"tier": "gold"}));
    assert!(matches!(
        verdict(&a, &idp.mint("RS256", &missing)).await,
        Outcome::Rejected(_)
    ));
}

#[tokio::test]
async fn claim_mappings_by_expression() {
    let idp = TestIdp::start("").await;
    let body = "  claimMappings:\n    username: {expression: \"'ext:' + claims.sub\"}\n    groups: {expression: \"has(claims.roles) ? claims.roles.map(r, 'r:' + r) : null\"}\n    uid: {expression: claims.oid}\n    extra:\n    - {key: example.com/team, valueExpression: claims.org.team}\n    - {key: example.com/empty, valueExpression: \"''\"}\n";
    let a = start(&idp, body).await;
    let c = claims(
        &idp,
        json!({"oid": "0000-1", "roles": ["admin"], "org": {"team": "blue"}}),
    );
    let Outcome::User(u) = verdict(&a, &idp.mint("RS256", &c)).await else {
        panic!()
    };
    assert_eq!(u.username, "ext:alice");
    assert_eq!(u.uid, "0000-1");
    assert_eq!(u.groups, ["r:admin", "system:authenticated"]);
    assert_eq!(u.extra["example.com/team"], ["blue"]);
    assert!(
        !u.extra.contains_key("example.com/empty"),
        "an empty extra value is omitted"
    );
    // A groups expression returning null gives no groups; a missing nested claim is an error.
    let c = claims(&idp, json!({"oid": "0000-2", "org": {"team": "red"}}));
    let Outcome::User(u) = verdict(&a, &idp.mint("RS256", &c)).await else {
        panic!()
    };
    assert_eq!(u.groups, ["system:authenticated"]);
    let c = claims(&idp, json!({"oid": "0000-3"}));
    assert!(matches!(
        verdict(&a, &idp.mint("RS256", &c)).await,
        Outcome::Rejected(_)
    ));
}

#[tokio::test]
async fn user_validation_rules() {
    let idp = TestIdp::start("").await;
    let body = "  claimMappings:\n    username: {claim: sub, prefix: \"\"}\n  userValidationRules:\n  - expression: \"!user.username.startsWith('system:')\"\n    message: 'username cannot use reserved system: prefix'\n";
    let a = start(&idp, body).await;
    assert!(matches!(
        verdict(&a, &idp.mint("RS256", &idp.claims("vkube"))).await,
        Outcome::User(_)
    ));
    let c = claims(&idp, json!({"sub": "system:admin"}));
    let Outcome::Rejected(why) = verdict(&a, &idp.mint("RS256", &c)).await else {
        panic!()
    };
    assert!(
        why.contains("username cannot use reserved system: prefix"),
        "{why}"
    );
}

#[tokio::test]
async fn minimal_valid_token_and_credential_id() {
    let idp = TestIdp::start("").await;
    let a = start(&idp, SUB).await;
    let now = crate::unix_now();
    let minimal = json!({"iss": idp.issuer, "aud": "vkube", "exp": now + 60, "sub": "m"});
    let Outcome::User(u) = verdict(&a, &idp.mint("ES256", &minimal)).await else {
        panic!()
    };
    assert_eq!(u.username, "m");
    assert!(u.extra.is_empty(), "no jti, no credential id");
}

#[tokio::test]
async fn discovery_url_differs_from_the_issuer() {
    let idp = TestIdp::start("/tenant").await;
    let body = SUB.to_string();
    let text = file(&issuer(&idp.issuer, &idp.ca_pem, &body)).replace(
        "    audiences:",
        &format!(
            "    discoveryURL: {}/.well-known/openid-configuration\n    audiences:",
            idp.issuer
        ),
    );
    let cfg = parse(&text).unwrap();
    let a = super::tests::ready(cfg.jwt[0].clone()).await;
    assert!(matches!(
        verdict(&a, &idp.mint("RS256", &idp.claims("vkube"))).await,
        Outcome::User(_)
    ));
}
