//! The token authenticator chain run on every request that carries a bearer token: the
//! service-account issuer, then each JWT issuer (the first that claims the token decides), with
//! successful results cached for a short time keyed by the token's SHA-256 — never the token.
//! The JWT issuers can be replaced at run time (the configuration file was reloaded); the
//! fingerprint of the effective configuration is kept for the HA checks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use aws_lc_rs::digest;

use crate::UserInfo;
use crate::jwt::Token;
use crate::metrics::{AuthMetrics, hash_label};
use crate::oidc::file::Anonymous;
use crate::oidc::{JwtAuthenticator, JwtConfig, Outcome};
use crate::service_account::{Issuer, TokenError};

/// Upstream caches successful token authentications for 10 s.
const CACHE_TTL: Duration = Duration::from_secs(10);
const CACHE_MAX: usize = 10_000;

pub struct Chain {
    pub service_accounts: Arc<Issuer>,
    jwt: RwLock<Arc<Vec<Arc<JwtAuthenticator>>>>,
    anonymous: Anonymous,
    fingerprint: RwLock<String>,
    cache: Mutex<HashMap<Vec<u8>, (UserInfo, Instant)>>,
    pub metrics: AuthMetrics,
}

/// Why a token was refused: for logs and metrics, never for the client.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub authenticator: &'static str,
    pub reason: String,
}

impl Chain {
    pub fn new(service_accounts: Arc<Issuer>, anonymous: Anonymous, metrics: AuthMetrics) -> Chain {
        let chain = Chain {
            service_accounts,
            jwt: RwLock::new(Arc::new(Vec::new())),
            anonymous,
            fingerprint: RwLock::new(String::new()),
            cache: Mutex::new(HashMap::new()),
            metrics,
        };
        chain.set_jwt(Vec::new());
        chain
    }

    /// Replaces the JWT issuers (at start, and when the configuration file is reloaded); each is
    /// started, and cached authentications are dropped.
    pub fn set_jwt(&self, issuers: Vec<Arc<JwtAuthenticator>>) {
        let configs: Vec<&JwtConfig> = issuers.iter().map(|j| &j.config).collect();
        let fingerprint = self.fingerprint_of(&configs);
        *self.jwt.write().expect("lock") = Arc::new(issuers);
        self.cache.lock().expect("lock").clear();
        self.metrics.set_fingerprint(&fingerprint);
        *self.fingerprint.write().expect("lock") = fingerprint;
    }

    /// SHA-256 of everything that decides who a request is: the service-account issuer and
    /// audiences, the anonymous policy, and each JWT issuer's full configuration.
    fn fingerprint_of(&self, configs: &[&JwtConfig]) -> String {
        let effective = format!(
            "sa={:?} aud={:?} anonymous={:?} jwt={configs:?}",
            self.service_accounts.issuer, self.service_accounts.api_audiences, self.anonymous
        );
        hash_label(&effective)
    }

    pub fn fingerprint(&self) -> String {
        self.fingerprint.read().expect("lock").clone()
    }

    pub fn anonymous(&self) -> &Anonymous {
        &self.anonymous
    }

    /// Authenticates a bearer token for the API's audiences, or for `audiences` (TokenReview).
    pub async fn authenticate(
        &self,
        token: &str,
        audiences: Option<&[String]>,
    ) -> Result<UserInfo, Refusal> {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(token.as_bytes());
        for a in audiences.into_iter().flatten() {
            ctx.update(b"\0");
            ctx.update(a.as_bytes());
        }
        let key = ctx.finish().as_ref().to_vec();
        let cached = self.cache.lock().expect("lock").get(&key).cloned();
        if let Some((user, _)) = cached.filter(|(_, at)| at.elapsed() < CACHE_TTL) {
            return Ok(user);
        }
        let user = self.authenticate_uncached(token, audiences).await?;
        let mut cache = self.cache.lock().expect("lock");
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(key, (user.clone(), Instant::now()));
        Ok(user)
    }

    async fn authenticate_uncached(
        &self,
        token: &str,
        audiences: Option<&[String]>,
    ) -> Result<UserInfo, Refusal> {
        let refuse = |authenticator, reason: String| Refusal {
            authenticator,
            reason,
        };
        let parsed = Token::parse(token).map_err(|e| refuse("token", e.to_string()))?;
        match self.service_accounts.authenticate(&parsed, audiences).await {
            Ok(user) => return Ok(user),
            Err(TokenError::NotMine) => {}
            Err(TokenError::Invalid(why)) => return Err(refuse("serviceaccount", why)),
        }
        let issuers = self.jwt.read().expect("lock").clone();
        for issuer in issuers.iter() {
            let started = Instant::now();
            let outcome = issuer.authenticate(&parsed).await;
            if outcome != Outcome::NotMine {
                let ok = matches!(outcome, Outcome::User(_));
                self.metrics
                    .jwt(&issuer.config.issuer, ok, started.elapsed());
            }
            match outcome {
                Outcome::NotMine => continue,
                Outcome::User(user) => return Ok(user),
                Outcome::Rejected(why) => return Err(refuse("jwt", why)),
            }
        }
        Err(refuse(
            "token",
            "no authenticator claims the token's issuer".into(),
        ))
    }

    /// `/readyz` detail: each JWT issuer's state.
    pub fn issuer_health(&self) -> Vec<(String, Result<(), String>)> {
        let issuers = self.jwt.read().expect("lock").clone();
        issuers
            .iter()
            .map(|j| (j.config.issuer.clone(), j.health()))
            .collect()
    }
}
