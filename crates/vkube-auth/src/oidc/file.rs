//! `--authentication-config FILE`: kube-apiserver's AuthenticationConfiguration
//! (`apiserver.config.k8s.io/v1` or `v1beta1`) — several JWT issuers with audiences, discovery
//! URLs, CA bundles, claim validation rules, claim mappings by claim or CEL, user validation
//! rules — and the `anonymous` section. Checked as upstream checks it, with its field paths; an
//! invalid file is refused whole.

use std::collections::HashSet;

use serde::Deserialize;

use super::Expr;
use super::config::{ClaimRule, ConfigError, JwtConfig, Mapping, check_issuer};
use crate::jwt::ASYMMETRIC;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct File {
    api_version: String,
    kind: String,
    #[serde(default)]
    jwt: Vec<Jwt>,
    anonymous: Option<AnonymousSection>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Jwt {
    issuer: IssuerSection,
    #[serde(default)]
    claim_validation_rules: Vec<ClaimValidationRule>,
    claim_mappings: ClaimMappings,
    #[serde(default)]
    user_validation_rules: Vec<UserValidationRule>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct IssuerSection {
    #[serde(default)]
    url: String,
    #[serde(rename = "discoveryURL")]
    discovery_url: Option<String>,
    certificate_authority: Option<String>,
    #[serde(default)]
    audiences: Vec<String>,
    audience_match_policy: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ClaimValidationRule {
    claim: Option<String>,
    required_value: Option<String>,
    expression: Option<String>,
    message: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ClaimMappings {
    username: ClaimOrExpression,
    groups: Option<ClaimOrExpression>,
    uid: Option<ClaimOrExpression>,
    #[serde(default)]
    extra: Vec<ExtraMapping>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ClaimOrExpression {
    claim: Option<String>,
    prefix: Option<String>,
    expression: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ExtraMapping {
    key: String,
    value_expression: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UserValidationRule {
    expression: String,
    message: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AnonymousSection {
    enabled: bool,
    #[serde(default)]
    conditions: Vec<AnonymousCondition>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AnonymousCondition {
    path: String,
}

/// Whether requests without credentials are `system:anonymous`, and for which paths.
#[derive(Debug, Clone, PartialEq)]
pub enum Anonymous {
    Disabled,
    Enabled,
    /// Only for these paths (the file's `anonymous.conditions`).
    Paths(Vec<String>),
}

impl Anonymous {
    pub fn allows(&self, path: &str) -> bool {
        match self {
            Anonymous::Disabled => false,
            Anonymous::Enabled => true,
            Anonymous::Paths(paths) => paths.iter().any(|p| p == path),
        }
    }
}

/// A parsed and checked AuthenticationConfiguration.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthenticationConfig {
    pub jwt: Vec<JwtConfig>,
    /// `None` when the file has no `anonymous` section (the flag decides).
    pub anonymous: Option<Anonymous>,
}

/// Field errors, collected and reported together as upstream does.
#[derive(Default)]
struct Errors(Vec<String>);

impl Errors {
    fn required(&mut self, field: &str, detail: &str) {
        self.0.push(if detail.is_empty() {
            format!("{field}: Required value")
        } else {
            format!("{field}: Required value: {detail}")
        });
    }

    fn invalid(&mut self, field: &str, value: &str, detail: &str) {
        self.0
            .push(format!("{field}: Invalid value: {value:?}: {detail}"));
    }

    fn compile(&mut self, field: &str, source: &str) -> Option<Expr> {
        match Expr::compile(source) {
            Ok(e) => Some(e),
            Err(why) => {
                self.invalid(field, source, &why);
                None
            }
        }
    }
}

/// Parses `text` (YAML or JSON).
pub fn parse(text: &str) -> Result<AuthenticationConfig, ConfigError> {
    let file: File = serde_saphyr::from_str(text)
        .map_err(|e| ConfigError(format!("decoding the authentication configuration: {e}")))?;
    let mut errs = Errors::default();
    if !matches!(
        file.api_version.as_str(),
        "apiserver.config.k8s.io/v1"
            | "apiserver.config.k8s.io/v1beta1"
            | "apiserver.config.k8s.io/v1alpha1"
    ) {
        errs.invalid(
            "apiVersion",
            &file.api_version,
            "supported: apiserver.config.k8s.io/v1, apiserver.config.k8s.io/v1beta1",
        );
    }
    if file.kind != "AuthenticationConfiguration" {
        errs.invalid("kind", &file.kind, "must be AuthenticationConfiguration");
    }
    let mut urls = HashSet::new();
    let mut jwt = Vec::new();
    for (i, j) in file.jwt.iter().enumerate() {
        if let Some(cfg) = issuer(i, j, &mut urls, &mut errs) {
            jwt.push(cfg);
        }
    }
    let anonymous = file
        .anonymous
        .map(|a| match (a.enabled, a.conditions.is_empty()) {
            (false, true) => Anonymous::Disabled,
            (false, false) => {
                errs.invalid(
                    "anonymous.conditions",
                    "",
                    "enabled should be set to true when conditions are defined",
                );
                Anonymous::Disabled
            }
            (true, true) => Anonymous::Enabled,
            (true, false) => Anonymous::Paths(a.conditions.into_iter().map(|c| c.path).collect()),
        });
    if !errs.0.is_empty() {
        return Err(ConfigError(errs.0.join(", ")));
    }
    Ok(AuthenticationConfig { jwt, anonymous })
}

fn issuer(i: usize, j: &Jwt, urls: &mut HashSet<String>, errs: &mut Errors) -> Option<JwtConfig> {
    let at = format!("jwt[{i}]");
    let before = errs.0.len();
    let iss = &j.issuer;
    if iss.url.is_empty() {
        errs.required(&format!("{at}.issuer.url"), "");
    } else if let Err(e) = check_issuer(&iss.url) {
        errs.invalid(
            &format!("{at}.issuer.url"),
            &iss.url,
            e.0.rsplit(": ").next().unwrap_or("invalid"),
        );
    } else if !urls.insert(iss.url.clone()) {
        errs.0
            .push(format!("{at}.issuer.url: Duplicate value: {:?}", iss.url));
    }
    if let Some(d) = &iss.discovery_url {
        if d.trim_end_matches('/') == iss.url.trim_end_matches('/') {
            errs.invalid(
                &format!("{at}.issuer.discoveryURL"),
                d,
                "discoveryURL must be different from URL",
            );
        } else if check_issuer(d).is_err() {
            errs.invalid(
                &format!("{at}.issuer.discoveryURL"),
                d,
                "URL scheme must be https",
            );
        }
    }
    if iss.audiences.is_empty() {
        errs.required(
            &format!("{at}.issuer.audiences"),
            &format!("at least one {at}.issuer.audiences is required"),
        );
    } else if iss.audiences.len() > 1 && iss.audience_match_policy.as_deref() != Some("MatchAny") {
        errs.invalid(
            &format!("{at}.issuer.audienceMatchPolicy"),
            iss.audience_match_policy.as_deref().unwrap_or(""),
            "audienceMatchPolicy must be MatchAny for multiple audiences",
        );
    }
    let mut claim_rules = Vec::new();
    for (n, r) in j.claim_validation_rules.iter().enumerate() {
        let field = format!("{at}.claimValidationRules[{n}]");
        match (&r.claim, &r.expression) {
            (Some(_), Some(_)) => {
                errs.invalid(&field, "", "claim and expression can't both be set")
            }
            (None, None) => errs.required(&field, "claim or expression is required"),
            (Some(claim), None) => claim_rules.push(ClaimRule::Required {
                claim: claim.clone(),
                value: r.required_value.clone().unwrap_or_default(),
            }),
            (None, Some(source)) => {
                if r.required_value.is_some() {
                    errs.invalid(
                        &format!("{field}.requiredValue"),
                        "",
                        "requiredValue can't be set when expression is set",
                    );
                }
                if let Some(expr) = errs.compile(&format!("{field}.expression"), source) {
                    let message = r
                        .message
                        .clone()
                        .unwrap_or_else(|| format!("expression {source:?} failed"));
                    claim_rules.push(ClaimRule::Expression { expr, message });
                }
            }
        }
    }
    let m = &j.claim_mappings;
    let username = mapping(
        &format!("{at}.claimMappings.username"),
        &m.username,
        true,
        errs,
    );
    let groups = m
        .groups
        .as_ref()
        .and_then(|g| mapping(&format!("{at}.claimMappings.groups"), g, true, errs));
    let uid = m
        .uid
        .as_ref()
        .and_then(|u| mapping(&format!("{at}.claimMappings.uid"), u, false, errs));
    let mut keys = HashSet::new();
    let mut extra = Vec::new();
    for (n, e) in m.extra.iter().enumerate() {
        let field = format!("{at}.claimMappings.extra[{n}]");
        if !e.key.contains('/') {
            errs.invalid(
                &format!("{field}.key"),
                &e.key,
                "must be a domain-prefixed path (such as \"acme.io/foo\")",
            );
        } else if e.key != e.key.to_lowercase() {
            errs.invalid(&format!("{field}.key"), &e.key, "key must be lowercase");
        } else if !keys.insert(e.key.clone()) {
            errs.0
                .push(format!("{field}.key: Duplicate value: {:?}", e.key));
        }
        if let Some(expr) = errs.compile(&format!("{field}.valueExpression"), &e.value_expression) {
            extra.push((e.key.clone(), expr));
        }
    }
    if let Some(Mapping::Expression(u)) = &username {
        let verified = |e: &Expr| e.mentions("claims.email_verified");
        let checked = verified(u)
            || extra.iter().any(|(_, e)| verified(e))
            || claim_rules
                .iter()
                .any(|r| matches!(r, ClaimRule::Expression { expr, .. } if verified(expr)));
        if u.mentions("claims.email") && !checked {
            errs.invalid(
                &format!("{at}.claimMappings.username.expression"),
                "claims.email",
                "claims.email_verified must be used in claimMappings.username.expression or claimMappings.extra[*].valueExpression or claimValidationRules[*].expression when claims.email is used in claimMappings.username.expression",
            );
        }
    }
    let mut user_rules = Vec::new();
    for (n, r) in j.user_validation_rules.iter().enumerate() {
        if let Some(expr) = errs.compile(
            &format!("{at}.userValidationRules[{n}].expression"),
            &r.expression,
        ) {
            let message = r
                .message
                .clone()
                .unwrap_or_else(|| format!("expression {:?} failed", r.expression));
            user_rules.push((expr, message));
        }
    }
    if errs.0.len() > before {
        return None;
    }
    Some(JwtConfig {
        issuer: iss.url.clone(),
        discovery_url: iss.discovery_url.clone(),
        audiences: iss.audiences.clone(),
        ca_pem: iss.certificate_authority.clone(),
        username: username?,
        groups,
        uid,
        extra,
        claim_rules,
        user_rules,
        signing_algs: ASYMMETRIC.iter().map(|a| a.to_string()).collect(),
    })
}

/// A claim (with its prefix, where the field has one) or an expression, never both.
fn mapping(
    field: &str,
    m: &ClaimOrExpression,
    prefixed: bool,
    errs: &mut Errors,
) -> Option<Mapping> {
    match (&m.claim, &m.expression) {
        (Some(_), Some(_)) => {
            errs.invalid(field, "", "claim and expression can't both be set");
            None
        }
        (None, None) => {
            errs.required(field, "claim or expression is required");
            None
        }
        (Some(claim), None) => {
            if prefixed && m.prefix.is_none() {
                errs.required(
                    &format!("{field}.prefix"),
                    "prefix is required when claim is set. It can be set to an empty string to disable prefixing",
                );
                return None;
            }
            Some(Mapping::Claim {
                claim: claim.clone(),
                prefix: m.prefix.clone().unwrap_or_default(),
            })
        }
        (None, Some(source)) => {
            if m.prefix.is_some() {
                errs.invalid(
                    &format!("{field}.prefix"),
                    "",
                    "may not be specified when expression is set",
                );
                return None;
            }
            errs.compile(&format!("{field}.expression"), source)
                .map(Mapping::Expression)
        }
    }
}
