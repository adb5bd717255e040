//! Service-account tokens, issued through TokenRequest (`serviceaccounts/NAME/token`) and checked
//! as upstream checks bound tokens: our issuer, an API audience, not expired, and the
//! ServiceAccount (and the Pod or Secret it is bound to) still there with the same uid, so a
//! token dies with what it names. The objects are read from the store, which every replica
//! shares: no replica can disagree about a token another one issued.

use std::sync::Arc;

use serde_json::{Value, json};
use vkube_store::Store;

use crate::jwt::Token;
use crate::keys::SigningKey;
use crate::{CREDENTIAL_ID, UserInfo, unix_now};

/// kube-apiserver's usual `--service-account-issuer` (kubeadm, kind, vcluster).
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// Upstream's default and minimum token lifetimes, in seconds.
pub const DEFAULT_EXPIRATION: i64 = 3600;
pub const MIN_EXPIRATION: i64 = 600;
/// Leeway for `nbf`/`iat` between replicas' clocks.
const LEEWAY: i64 = 60;

/// What a token is bound to besides its ServiceAccount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoundObject {
    /// `Pod` or `Secret`.
    pub kind: String,
    pub name: String,
    pub uid: String,
}

pub struct Issuer {
    pub issuer: String,
    /// The audiences the API accepts (upstream `--api-audiences`, default the issuer).
    pub api_audiences: Vec<String>,
    pub key: SigningKey,
    store: Arc<dyn Store>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TokenError {
    #[error("not a service account token")]
    NotMine,
    #[error("{0}")]
    Invalid(String),
}

fn invalid(why: impl Into<String>) -> TokenError {
    TokenError::Invalid(why.into())
}

impl Issuer {
    pub fn new(
        issuer: String,
        api_audiences: Vec<String>,
        key: SigningKey,
        store: Arc<dyn Store>,
    ) -> Issuer {
        let api_audiences = if api_audiences.is_empty() {
            vec![issuer.clone()]
        } else {
            api_audiences
        };
        Issuer {
            issuer,
            api_audiences,
            key,
            store,
        }
    }

    /// A token for `namespace/name` (uid `sa_uid`), as TokenRequest issues it. Returns the token
    /// and its expiry (unix seconds).
    pub fn issue(
        &self,
        namespace: &str,
        name: &str,
        sa_uid: &str,
        audiences: &[String],
        expiration_seconds: i64,
        bound: Option<&BoundObject>,
    ) -> (String, i64) {
        let now = unix_now();
        let exp = now + expiration_seconds;
        let audiences = if audiences.is_empty() {
            &self.api_audiences
        } else {
            audiences
        };
        let mut private = json!({
            "namespace": namespace,
            "serviceaccount": {"name": name, "uid": sa_uid},
        });
        if let Some(b) = bound {
            private[b.kind.to_lowercase()] = json!({"name": b.name, "uid": b.uid});
        }
        let claims = json!({
            "aud": audiences, "exp": exp, "iat": now, "nbf": now, "iss": self.issuer,
            "jti": uuid::Uuid::new_v4().to_string(),
            "kubernetes.io": private,
            "sub": format!("system:serviceaccount:{namespace}:{name}"),
        });
        (self.key.sign(&claims), exp)
    }

    /// `/.well-known/openid-configuration` for this issuer.
    pub fn discovery_document(&self) -> Value {
        json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{}/openid/v1/jwks", self.issuer.trim_end_matches('/')),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        })
    }

    /// Authenticates a token of this issuer for `audiences` (the API's, or a TokenReview's).
    pub async fn authenticate(
        &self,
        token: &Token,
        audiences: Option<&[String]>,
    ) -> Result<UserInfo, TokenError> {
        if token.issuer() != Some(self.issuer.as_str()) {
            return Err(TokenError::NotMine);
        }
        token
            .verify(&[self.key.public_jwk()], &["ES256".to_string()])
            .map_err(|e| invalid(e.to_string()))?;
        let c = &token.claims;
        let now = unix_now();
        match c.get("exp").and_then(Value::as_i64) {
            Some(exp) if now < exp => {}
            Some(_) => return Err(invalid("service account token has expired")),
            None => return Err(invalid("service account token has no expiry")),
        }
        if c.get("nbf")
            .and_then(Value::as_i64)
            .is_some_and(|nbf| nbf > now + LEEWAY)
        {
            return Err(invalid("service account token is not valid yet"));
        }
        let wanted = audiences.unwrap_or(&self.api_audiences);
        let aud: Vec<&str> = match c.get("aud") {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        if !aud.iter().any(|a| wanted.iter().any(|w| w == a)) {
            return Err(invalid(
                "token audiences is invalid for the target audiences",
            ));
        }
        let private = &c.get("kubernetes.io").cloned().unwrap_or(Value::Null);
        let namespace = private["namespace"].as_str().unwrap_or_default();
        let sa = &private["serviceaccount"];
        let (name, uid) = (
            sa["name"].as_str().unwrap_or_default(),
            sa["uid"].as_str().unwrap_or_default(),
        );
        if namespace.is_empty() || name.is_empty() {
            return Err(invalid("service account token names no service account"));
        }
        let current = self.uid_of("serviceaccounts", namespace, name).await?;
        if current.as_deref() != Some(uid) {
            return Err(invalid(match current {
                None => format!("service account {namespace}/{name} has been deleted"),
                Some(_) => format!("service account UID ({uid}) does not match claim"),
            }));
        }
        let mut user = UserInfo {
            username: format!("system:serviceaccount:{namespace}:{name}"),
            uid: uid.to_string(),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
            ],
            ..UserInfo::default()
        };
        for (kind, plural) in [("pod", "pods"), ("secret", "secrets")] {
            let bound = &private[kind];
            if bound.is_null() {
                continue;
            }
            let (bname, buid) = (
                bound["name"].as_str().unwrap_or_default(),
                bound["uid"].as_str().unwrap_or_default(),
            );
            if self.uid_of(plural, namespace, bname).await?.as_deref() != Some(buid) {
                return Err(invalid(format!(
                    "the {kind} {namespace}/{bname} this token is bound to no longer exists"
                )));
            }
            if kind == "pod" {
                user.extra.insert(
                    "authentication.kubernetes.io/pod-name".into(),
                    vec![bname.into()],
                );
                user.extra.insert(
                    "authentication.kubernetes.io/pod-uid".into(),
                    vec![buid.into()],
                );
            }
        }
        if let Some(jti) = c.get("jti").and_then(Value::as_str) {
            user.extra
                .insert(CREDENTIAL_ID.into(), vec![format!("JTI={jti}")]);
        }
        Ok(user.authenticated())
    }

    async fn uid_of(
        &self,
        plural: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<String>, TokenError> {
        let key = format!("/registry/{plural}/{namespace}/{name}");
        let kv = self
            .store
            .get(&key, None)
            .await
            .map_err(|e| invalid(format!("reading {plural}: {e}")))?;
        Ok(kv.and_then(|kv| {
            let obj: Value = serde_json::from_slice(&kv.value).ok()?;
            Some(obj["metadata"]["uid"].as_str()?.to_string())
        }))
    }
}
