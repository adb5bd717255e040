//! One JWT issuer's configuration, and how kube-apiserver's `--oidc-*` flags map onto it.

use std::path::PathBuf;

use super::Expr;
use crate::jwt::ASYMMETRIC;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Where a user attribute comes from: a claim (with a prefix), or a CEL expression over `claims`.
#[derive(Debug, Clone, PartialEq)]
pub enum Mapping {
    Claim { claim: String, prefix: String },
    Expression(Expr),
}

/// A rule every token of the issuer must pass.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimRule {
    /// The claim must be a string equal to `value` (`--oidc-required-claim`, `requiredValue`).
    Required { claim: String, value: String },
    /// A CEL expression over `claims` that must be true; `message` says why not.
    Expression { expr: Expr, message: String },
}

/// The effective configuration of one issuer.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtConfig {
    pub issuer: String,
    /// Where discovery is read when it is not under the issuer URL.
    pub discovery_url: Option<String>,
    /// The token's `aud` must hold one of these.
    pub audiences: Vec<String>,
    pub ca_pem: Option<String>,
    pub username: Mapping,
    pub groups: Option<Mapping>,
    pub uid: Option<Mapping>,
    /// `extra` keys and their CEL value expressions.
    pub extra: Vec<(String, Expr)>,
    pub claim_rules: Vec<ClaimRule>,
    /// CEL expressions over `user` that must be true, with their messages.
    pub user_rules: Vec<(Expr, String)>,
    pub signing_algs: Vec<String>,
}

/// kube-apiserver's `--oidc-*` flags, as given (on the command line or in vcluster.yaml's
/// `controlPlane.distro.k8s.apiServer.extraArgs`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Flags {
    pub issuer_url: Option<String>,
    pub client_id: Option<String>,
    pub username_claim: Option<String>,
    pub username_prefix: Option<String>,
    pub groups_claim: Option<String>,
    pub groups_prefix: Option<String>,
    pub required_claims: Vec<String>,
    pub ca_file: Option<PathBuf>,
    pub signing_algs: Vec<String>,
}

impl Flags {
    /// Reads one `--oidc-NAME=VALUE` argument; false when it is not an OIDC flag.
    pub fn set(&mut self, arg: &str) -> Result<bool, ConfigError> {
        let Some(rest) = arg.strip_prefix("--oidc-") else {
            return Ok(false);
        };
        let (name, value) = rest
            .split_once('=')
            .ok_or_else(|| ConfigError(format!("{arg}: expected --oidc-NAME=VALUE")))?;
        let value = value.to_string();
        match name {
            "issuer-url" => self.issuer_url = Some(value),
            "client-id" => self.client_id = Some(value),
            "username-claim" => self.username_claim = Some(value),
            "username-prefix" => self.username_prefix = Some(value),
            "groups-claim" => self.groups_claim = Some(value),
            "groups-prefix" => self.groups_prefix = Some(value),
            "required-claim" => self.required_claims.push(value),
            "ca-file" => self.ca_file = Some(PathBuf::from(value)),
            "signing-algs" => self
                .signing_algs
                .extend(value.split(',').map(|s| s.trim().to_string())),
            _ => return Err(ConfigError(format!("unknown flag: --oidc-{name}"))),
        }
        Ok(true)
    }

    pub fn is_empty(&self) -> bool {
        *self == Flags::default()
    }

    /// The issuer these flags configure, checked as upstream checks them; `None` without flags.
    pub fn to_config(&self) -> Result<Option<JwtConfig>, ConfigError> {
        let (issuer, client_id) = match (&self.issuer_url, &self.client_id) {
            (None, None) if self.is_empty() => return Ok(None),
            (Some(i), Some(c)) if !i.is_empty() && !c.is_empty() => (i.clone(), c.clone()),
            _ => {
                return Err(ConfigError(
                    "oidc-issuer-url and oidc-client-id must be specified together when using oidc flags".into(),
                ));
            }
        };
        check_issuer(&issuer)?;
        let username_claim = self.username_claim.clone().unwrap_or_else(|| "sub".into());
        let username_prefix = match self.username_prefix.as_deref() {
            Some("-") => String::new(),
            Some(p) if !p.is_empty() => p.to_string(),
            _ if username_claim == "email" => String::new(),
            _ => format!("{issuer}#"),
        };
        let mut claim_rules = Vec::new();
        for pair in &self.required_claims {
            let (k, v) = pair.split_once('=').ok_or_else(|| {
                ConfigError(format!(
                    "--oidc-required-claim {pair:?}: expected key=value"
                ))
            })?;
            claim_rules.push(ClaimRule::Required {
                claim: k.to_string(),
                value: v.to_string(),
            });
        }
        let signing_algs = if self.signing_algs.is_empty() {
            vec!["RS256".to_string()]
        } else {
            self.signing_algs.clone()
        };
        check_algs(&signing_algs)?;
        let ca_pem = match &self.ca_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| ConfigError(format!("--oidc-ca-file {}: {e}", path.display())))?,
            ),
            None => None,
        };
        let groups = self
            .groups_claim
            .clone()
            .filter(|g| !g.is_empty())
            .map(|claim| Mapping::Claim {
                claim,
                prefix: self.groups_prefix.clone().unwrap_or_default(),
            });
        Ok(Some(JwtConfig {
            issuer,
            discovery_url: None,
            audiences: vec![client_id],
            ca_pem,
            username: Mapping::Claim {
                claim: username_claim,
                prefix: username_prefix,
            },
            groups,
            uid: None,
            extra: vec![],
            claim_rules,
            user_rules: vec![],
            signing_algs,
        }))
    }
}

pub fn check_issuer(issuer: &str) -> Result<(), ConfigError> {
    let url =
        url::Url::parse(issuer).map_err(|e| ConfigError(format!("issuer url {issuer:?}: {e}")))?;
    if url.scheme() != "https" {
        return Err(ConfigError(format!(
            "issuer url {issuer:?}: URL scheme must be https"
        )));
    }
    Ok(())
}

pub fn check_algs(algs: &[String]) -> Result<(), ConfigError> {
    for alg in algs {
        if !ASYMMETRIC.contains(&alg.as_str()) {
            return Err(ConfigError(format!(
                "oidc: unsupported signing alg: {alg:?}"
            )));
        }
    }
    Ok(())
}
