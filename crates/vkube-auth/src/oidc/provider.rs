//! One issuer at run time: discovery and JWKS (fetched in the background until they succeed, so
//! an unreachable issuer never stops the server), and the verification of its tokens.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::config::{ClaimRule, Mapping};
use super::{JwtConfig, Outcome};
use crate::fetch::Client;
use crate::jwt::{Jwk, Jwks, JwtError, Token};
use crate::{CREDENTIAL_ID, UserInfo, unix_now};

/// go-oidc's allowance for clocks when checking `nbf`.
const NBF_LEEWAY: i64 = 300;
/// At most one JWKS refetch per this interval, whatever the unknown key ids.
const REFETCH_INTERVAL: Duration = Duration::from_secs(10);

struct Keys {
    jwks_uri: String,
    keys: Vec<Jwk>,
}

pub struct JwtAuthenticator {
    pub config: JwtConfig,
    client: Client,
    keys: RwLock<Option<Keys>>,
    /// Why the issuer is not usable yet (shown by `/readyz?verbose`).
    health: RwLock<Result<(), String>>,
    last_refetch: Mutex<Option<Instant>>,
    refetching: tokio::sync::Mutex<()>,
}

fn reject(why: impl Into<String>) -> Outcome {
    Outcome::Rejected(why.into())
}

/// A string, or a list of strings, as a list; `null`, `""` and `[]` are empty. `None`: neither.
fn strings(v: Value) -> Option<Vec<String>> {
    match v {
        Value::Null => Some(vec![]),
        Value::String(s) if s.is_empty() => Some(vec![]),
        Value::String(s) => Some(vec![s]),
        Value::Array(items) => items
            .into_iter()
            .map(|i| i.as_str().map(str::to_string))
            .collect(),
        _ => None,
    }
}

/// A single string attribute (uid) from a claim or an expression; `None` when absent or empty.
fn string_of(
    mapping: &Mapping,
    claims: &Map<String, Value>,
    claims_json: &Value,
    what: &str,
) -> Result<Option<String>, String> {
    let value = match mapping {
        Mapping::Claim { claim, .. } => claims.get(claim).cloned().unwrap_or(Value::Null),
        Mapping::Expression(expr) => expr
            .eval("claims", claims_json)
            .map_err(|e| format!("oidc: {what} expression: {e}"))?,
    };
    match value {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) => Ok(Some(s)),
        _ => Err(format!("oidc: {what} must be a string")),
    }
}

fn check_claim_rule(
    rule: &ClaimRule,
    claims: &Map<String, Value>,
    claims_json: &Value,
) -> Result<(), String> {
    match rule {
        ClaimRule::Required { claim, value } => match claims.get(claim) {
            None => Err(format!(
                "oidc: required claim {claim} not present in ID token"
            )),
            Some(Value::String(v)) if v == value => Ok(()),
            Some(_) => Err(format!("oidc: required claim {claim} value does not match")),
        },
        ClaimRule::Expression { expr, message } => match expr.eval("claims", claims_json) {
            Ok(Value::Bool(true)) => Ok(()),
            Ok(_) => Err(format!(
                "oidc: error evaluating claim validation expression: {message}"
            )),
            Err(e) => Err(format!(
                "oidc: error evaluating claim validation expression: {e}"
            )),
        },
    }
}

impl JwtAuthenticator {
    pub fn new(config: JwtConfig) -> Result<Arc<JwtAuthenticator>, super::ConfigError> {
        let client = Client::new(config.ca_pem.as_deref()).map_err(|e| super::ConfigError(e.0))?;
        Ok(Arc::new(JwtAuthenticator {
            config,
            client,
            keys: RwLock::new(None),
            health: RwLock::new(Err("oidc: authenticator not initialized".into())),
            last_refetch: Mutex::new(None),
            refetching: tokio::sync::Mutex::new(()),
        }))
    }

    /// Resolves discovery and keys in the background, retrying with backoff until they load.
    pub fn start(self: &Arc<Self>) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut wait = Duration::from_millis(250);
            loop {
                match this.discover().await {
                    Ok(()) => return,
                    Err(why) => {
                        tracing::warn!(issuer = %this.config.issuer, %why, "oidc issuer not reachable yet");
                        *this.health.write().expect("lock") = Err(why);
                    }
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(10));
            }
        });
    }

    pub fn health(&self) -> Result<(), String> {
        self.health.read().expect("lock").clone()
    }

    async fn discover(&self) -> Result<(), String> {
        let base = self.config.discovery_url.clone().unwrap_or_else(|| {
            format!(
                "{}/.well-known/openid-configuration",
                self.config.issuer.trim_end_matches('/')
            )
        });
        let body = self
            .client
            .get(&base, None)
            .await
            .map_err(|e| format!("oidc: fetching discovery: {e}"))?;
        let doc: Value = serde_json::from_slice(&body)
            .map_err(|e| format!("oidc: discovery is not JSON: {e}"))?;
        let issuer = doc["issuer"].as_str().unwrap_or_default();
        if issuer != self.config.issuer {
            return Err(format!(
                "oidc: issuer did not match the issuer returned by provider, expected {:?} got {issuer:?}",
                self.config.issuer
            ));
        }
        let jwks_uri = doc["jwks_uri"]
            .as_str()
            .ok_or("oidc: discovery has no jwks_uri")?
            .to_string();
        let keys = self.fetch_keys(&jwks_uri).await?;
        *self.keys.write().expect("lock") = Some(Keys { jwks_uri, keys });
        *self.health.write().expect("lock") = Ok(());
        Ok(())
    }

    async fn fetch_keys(&self, jwks_uri: &str) -> Result<Vec<Jwk>, String> {
        let body = self
            .client
            .get(jwks_uri, None)
            .await
            .map_err(|e| format!("oidc: fetching keys: {e}"))?;
        let jwks: Jwks =
            serde_json::from_slice(&body).map_err(|e| format!("oidc: keys are not a JWKS: {e}"))?;
        Ok(jwks.usable())
    }

    /// Refetches the JWKS for an unknown key id: concurrent callers share one fetch, and fetches
    /// are at least REFETCH_INTERVAL apart.
    async fn refetch(&self) {
        let _one = self.refetching.lock().await;
        {
            let mut last = self.last_refetch.lock().expect("lock");
            if last.is_some_and(|t| t.elapsed() < REFETCH_INTERVAL) {
                return;
            }
            *last = Some(Instant::now());
        }
        let uri = self
            .keys
            .read()
            .expect("lock")
            .as_ref()
            .map(|k| k.jwks_uri.clone());
        if let Some(uri) = uri {
            match self.fetch_keys(&uri).await {
                Ok(keys) => {
                    if let Some(k) = self.keys.write().expect("lock").as_mut() {
                        k.keys = keys;
                    }
                }
                Err(why) => {
                    tracing::warn!(issuer = %self.config.issuer, %why, "oidc: key refetch failed")
                }
            }
        }
    }

    async fn verify_signature(&self, token: &Token) -> Result<(), String> {
        for attempt in 0..2 {
            let keys = match self.keys.read().expect("lock").as_ref() {
                Some(k) => k.keys.clone(),
                None => {
                    return Err(self
                        .health()
                        .err()
                        .unwrap_or_else(|| "oidc: authenticator not initialized".into()));
                }
            };
            match token.verify(&keys, &self.config.signing_algs) {
                Ok(()) => return Ok(()),
                Err(JwtError::UnknownKey | JwtError::Signature) if attempt == 0 => {
                    self.refetch().await
                }
                Err(e) => return Err(format!("oidc: verify signature: {e}")),
            }
        }
        Err("oidc: verify signature: failed to verify signature".into())
    }

    /// The issuer a token names, as go-oidc reads it (`accounts.google.com` has no scheme).
    fn token_issuer(token: &Token) -> Option<String> {
        token.issuer().map(|iss| match iss {
            "accounts.google.com" => "https://accounts.google.com".to_string(),
            other => other.to_string(),
        })
    }

    pub async fn authenticate(&self, token: &Token) -> Outcome {
        if Self::token_issuer(token).as_deref() != Some(self.config.issuer.as_str()) {
            return Outcome::NotMine;
        }
        if let Err(why) = self.verify_signature(token).await {
            return reject(why);
        }
        let claims = &token.claims;
        if let Err(why) = self.check_time_and_audience(claims) {
            return reject(why);
        }
        let claims_json = Value::Object(claims.clone());
        for rule in &self.config.claim_rules {
            if let Err(why) = check_claim_rule(rule, claims, &claims_json) {
                return reject(why);
            }
        }
        let username = match self.username(claims, &claims_json) {
            Ok(u) => u,
            Err(why) => return reject(why),
        };
        let groups = match self.groups(claims, &claims_json).await {
            Ok(g) => g,
            Err(why) => return reject(why),
        };
        let mut user = UserInfo {
            username,
            groups,
            ..UserInfo::default()
        };
        match &self.config.uid {
            None => {}
            Some(mapping) => match string_of(mapping, claims, &claims_json, "uid") {
                Ok(Some(uid)) => user.uid = uid,
                Ok(None) => {}
                Err(why) => return reject(why),
            },
        }
        for (key, expr) in &self.config.extra {
            match expr
                .eval("claims", &claims_json)
                .map_err(|e| format!("oidc: extra {key}: {e}"))
            {
                Ok(v) => match strings(v) {
                    Some(values) if !values.is_empty() => {
                        drop(user.extra.insert(key.clone(), values))
                    }
                    Some(_) => {}
                    None => {
                        return reject(format!(
                            "oidc: extra {key}: not a string or a list of strings"
                        ));
                    }
                },
                Err(why) => return reject(why),
            }
        }
        if let Some(jti) = claims.get("jti").and_then(Value::as_str) {
            user.extra
                .insert(CREDENTIAL_ID.into(), vec![format!("JTI={jti}")]);
        }
        if !self.config.user_rules.is_empty() {
            let user_json = serde_json::to_value(&user).unwrap_or_default();
            let user_json = serde_json::json!({
                "username": user_json["username"], "uid": user.uid,
                "groups": user.groups, "extra": user.extra,
            });
            for (expr, message) in &self.config.user_rules {
                match expr.eval("user", &user_json) {
                    Ok(Value::Bool(true)) => {}
                    Ok(_) => {
                        return reject(format!("oidc: user validation rule failed: {message}"));
                    }
                    Err(e) => return reject(format!("oidc: user validation rule: {e}")),
                }
            }
        }
        Outcome::User(user.authenticated())
    }

    pub(super) fn check_time_and_audience(
        &self,
        claims: &Map<String, Value>,
    ) -> Result<(), String> {
        let now = unix_now();
        match claims.get("exp").and_then(Value::as_f64) {
            Some(exp) if (now as f64) < exp => {}
            Some(_) => return Err("oidc: token is expired".into()),
            None => return Err("oidc: token has no expiry".into()),
        }
        if claims
            .get("nbf")
            .and_then(Value::as_f64)
            .is_some_and(|nbf| nbf > (now + NBF_LEEWAY) as f64)
        {
            return Err("oidc: current time is before the nbf (not before) time".into());
        }
        let aud: Vec<&str> = match claims.get("aud") {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        if !self
            .config
            .audiences
            .iter()
            .any(|want| aud.contains(&want.as_str()))
        {
            return Err("oidc: expected audience not found in the token's aud claim".into());
        }
        Ok(())
    }

    fn username(&self, claims: &Map<String, Value>, claims_json: &Value) -> Result<String, String> {
        match &self.config.username {
            Mapping::Claim { claim, prefix } => {
                let value = match claims.get(claim) {
                    Some(Value::String(s)) => s.clone(),
                    Some(_) => {
                        return Err(format!("oidc: parse username claim {claim}: not a string"));
                    }
                    None => return Err(format!("oidc: claim not present: {claim}")),
                };
                if claim == "email" {
                    match claims.get("email_verified") {
                        None | Some(Value::Bool(true)) => {}
                        Some(Value::Bool(false)) => return Err("oidc: email not verified".into()),
                        Some(_) => {
                            return Err("oidc: parse 'email_verified' claim: not a boolean".into());
                        }
                    }
                }
                Ok(format!("{prefix}{value}"))
            }
            Mapping::Expression(expr) => match expr.eval("claims", claims_json) {
                Ok(Value::String(s)) if !s.is_empty() => Ok(s),
                Ok(Value::String(_)) | Ok(Value::Null) => {
                    Err("oidc: empty username via CEL expression is not allowed".into())
                }
                Ok(_) => Err("oidc: username expression must return a string".into()),
                Err(e) => Err(format!("oidc: username expression: {e}")),
            },
        }
    }

    async fn groups(
        &self,
        claims: &Map<String, Value>,
        claims_json: &Value,
    ) -> Result<Vec<String>, String> {
        let (claim, prefix) = match &self.config.groups {
            None => return Ok(vec![]),
            Some(Mapping::Expression(expr)) => {
                let v = expr
                    .eval("claims", claims_json)
                    .map_err(|e| format!("oidc: groups expression: {e}"))?;
                return strings(v).ok_or_else(|| {
                    "oidc: groups expression must return a string or a list of strings".into()
                });
            }
            Some(Mapping::Claim { claim, prefix }) => (claim, prefix),
        };
        let value = match claims.get(claim) {
            Some(v) => v.clone(),
            None => match self.distributed(claims, claim).await? {
                Some(v) => v,
                None => return Ok(vec![]),
            },
        };
        let raw = match value {
            Value::String(_) | Value::Array(_) => strings(value).ok_or_else(|| {
                format!("oidc: parse groups claim {claim}: not a list of strings")
            })?,
            _ => {
                return Err(format!(
                    "oidc: parse groups claim {claim}: not a string or a list"
                ));
            }
        };
        Ok(raw.into_iter().map(|g| format!("{prefix}{g}")).collect())
    }

    /// A claim held elsewhere (`_claim_names` / `_claim_sources`): the endpoint answers with a JWT
    /// of the same issuer. Azure AD's groups overage points at Microsoft Graph, which answers JSON,
    /// not a JWT: the user then authenticates with the claims present, and one warning says so.
    async fn distributed(
        &self,
        claims: &Map<String, Value>,
        claim: &str,
    ) -> Result<Option<Value>, String> {
        let Some(names) = claims.get("_claim_names") else {
            return Ok(None);
        };
        let Some(source_name) = names.get(claim) else {
            return Ok(None);
        };
        let source_name = source_name.as_str().ok_or("oidc: malformed _claim_names")?;
        let source = claims
            .get("_claim_sources")
            .and_then(|s| s.get(source_name))
            .ok_or_else(|| format!("oidc: source does not exist: {source_name}"))?;
        let Some(endpoint) = source.get("endpoint").and_then(Value::as_str) else {
            // Aggregated claims (a `JWT` in the source) are not supported upstream: no error.
            return Ok(None);
        };
        let host = url::Url::parse(endpoint)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        if host == "graph.microsoft.com" || host == "graph.windows.net" {
            tracing::warn!(
                issuer = %self.config.issuer,
                "oidc: the token's {claim} claim overflowed (Azure AD groups overage: the groups are behind Microsoft Graph); \
                 authenticating without them. Configure the app registration to emit groups assigned to the application, or use group filtering"
            );
            return Ok(None);
        }
        let bearer = source.get("access_token").and_then(Value::as_str);
        let body = self
            .client
            .get(endpoint, bearer)
            .await
            .map_err(|e| format!("oidc: distributed claim: {e}"))?;
        let text = std::str::from_utf8(&body)
            .map_err(|_| "oidc: distributed claim: response is not a JWT")?;
        let inner =
            Token::parse(text.trim()).map_err(|e| format!("oidc: distributed claim: {e}"))?;
        if Self::token_issuer(&inner).as_deref() != Some(self.config.issuer.as_str()) {
            return Err("oidc: distributed claim: issuer does not match".into());
        }
        self.verify_signature(&inner).await?;
        self.check_time_and_audience(&inner.claims)
            .map_err(|e| format!("oidc: distributed claim: {e}"))?;
        inner
            .claims
            .get(claim)
            .cloned()
            .map(Some)
            .ok_or_else(|| format!("oidc: distributed claim: {claim} not present"))
    }
}
