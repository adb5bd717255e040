//! vkube's authenticators, with kube-apiserver's semantics: x509 client certificates signed by
//! the cluster CA, service-account tokens signed by the cluster's own key (kept in the store, so
//! every replica verifies what any replica issued), and OIDC/JWT issuers that each replica
//! resolves itself (discovery, JWKS, refetch on an unknown key id). The server runs the chain on
//! every request; what a token fails on is logged without the token or its claim values.
#![forbid(unsafe_code)]

pub mod chain;
pub mod fetch;
pub mod jwt;
pub mod keys;
pub mod metrics;
pub mod oidc;
pub mod rbac;
pub mod reload;
pub mod service_account;
#[cfg(any(test, feature = "test-idp"))]
pub mod testing;
pub mod x509;

#[cfg(test)]
mod security_tests;

use std::collections::BTreeMap;

use serde::Serialize;

/// Who a request is from, as upstream's `user.Info`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct UserInfo {
    pub username: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Vec<String>>,
}

pub const ANONYMOUS: &str = "system:anonymous";
pub const UNAUTHENTICATED: &str = "system:unauthenticated";
pub const AUTHENTICATED: &str = "system:authenticated";
pub const MASTERS: &str = "system:masters";
/// The extra key upstream sets from a token's `jti`.
pub const CREDENTIAL_ID: &str = "authentication.kubernetes.io/credential-id";

impl UserInfo {
    pub fn anonymous() -> UserInfo {
        UserInfo {
            username: ANONYMOUS.into(),
            groups: vec![UNAUTHENTICATED.into()],
            ..UserInfo::default()
        }
    }

    /// Adds `system:authenticated`, as upstream's group adder does for every authenticated user.
    pub fn authenticated(mut self) -> UserInfo {
        if !self.groups.iter().any(|g| g == AUTHENTICATED) {
            self.groups.push(AUTHENTICATED.into());
        }
        self
    }

    pub fn is_master(&self) -> bool {
        self.groups.iter().any(|g| g == MASTERS)
    }
}

/// Seconds since the epoch, the unit of JWT time claims.
pub fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}
