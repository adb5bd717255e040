//! OIDC/JWT issuers (kube-apiserver's `--oidc-*` flags), with upstream's and go-oidc's verdicts:
//! issuer match first (a token of another issuer is not this authenticator's), then signature
//! with the allowed algorithms, expiry without leeway, audience, required claims, the username
//! claim (with `email_verified` when it is `email`), groups as a string or a list — or fetched
//! through distributed claims. Each replica resolves discovery and the JWKS itself and refetches
//! the JWKS when a token names an unknown key id (rate limited), so a key rotation at the issuer
//! is seen by every replica on its next token (DESIGN rule 6).

mod cel;
pub mod config;
pub mod file;
mod provider;

pub use cel::Expr;
pub use config::{ConfigError, Flags, JwtConfig};
pub use provider::JwtAuthenticator;

/// What one JWT authenticator says of a token.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Another issuer's token: the next authenticator gets it.
    NotMine,
    User(crate::UserInfo),
    /// A token of this issuer that fails; the reason is for logs, never for the client.
    Rejected(String),
}

#[cfg(test)]
mod structured_tests;
#[cfg(test)]
pub(crate) mod tests;
