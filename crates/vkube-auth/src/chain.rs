//! The token authenticator chain run on every request that carries a bearer token: the
//! service-account issuer, then each JWT issuer (the first that claims the token decides), with
//! successful results cached for a short time keyed by the token's SHA-256 — never the token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lc_rs::digest;

use crate::UserInfo;
use crate::jwt::Token;
use crate::oidc::{JwtAuthenticator, Outcome};
use crate::service_account::{Issuer, TokenError};

/// Upstream caches successful token authentications for 10 s.
const CACHE_TTL: Duration = Duration::from_secs(10);
const CACHE_MAX: usize = 10_000;

pub struct Chain {
    pub service_accounts: Arc<Issuer>,
    pub jwt: Vec<Arc<JwtAuthenticator>>,
    /// Whether a request without credentials is `system:anonymous` (upstream's default) or 401.
    pub anonymous: bool,
    cache: Mutex<HashMap<Vec<u8>, (UserInfo, Instant)>>,
}

/// Why a token was refused: for logs and metrics, never for the client.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub authenticator: &'static str,
    pub reason: String,
}

impl Chain {
    pub fn new(
        service_accounts: Arc<Issuer>,
        jwt: Vec<Arc<JwtAuthenticator>>,
        anonymous: bool,
    ) -> Chain {
        Chain {
            service_accounts,
            jwt,
            anonymous,
            cache: Mutex::new(HashMap::new()),
        }
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
        if let Some((user, at)) = self.cache.lock().expect("lock").get(&key) {
            if at.elapsed() < CACHE_TTL {
                return Ok(user.clone());
            }
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
        for issuer in &self.jwt {
            match issuer.authenticate(&parsed).await {
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
        self.jwt
            .iter()
            .map(|j| (j.config.issuer.clone(), j.health()))
            .collect()
    }
}
