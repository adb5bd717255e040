//! Authorization until RBAC lands (issue 6): `system:masters` may do anything; everyone gets what
//! upstream's bootstrap policy grants to all — health and version (system:public-info-viewer),
//! discovery and OpenAPI to authenticated users (system:discovery), `kubectl auth whoami`
//! (system:basic-user) — and service accounts the issuer discovery documents. Everything else is
//! Forbidden, in upstream's words, so a non-admin user is refused rather than silently allowed.

use http::Method;
use vkube_api::Status;
use vkube_auth::UserInfo;

use crate::request::RequestInfo;

fn public_info(path: &str) -> bool {
    ["/healthz", "/livez", "/readyz", "/version"]
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")))
}

fn discovery(path: &str) -> bool {
    path == "/api"
        || path == "/apis"
        || path.starts_with("/api/")
        || path.starts_with("/apis/")
        || path == "/openapi/v2"
        || path == "/openapi/v3"
        || path.starts_with("/openapi/v3/")
}

fn in_group(user: &UserInfo, group: &str) -> bool {
    user.groups.iter().any(|g| g == group)
}

pub fn authorize(
    user: &UserInfo,
    info: &RequestInfo,
    method: &Method,
    path: &str,
) -> Result<(), Status> {
    if user.is_master() {
        return Ok(());
    }
    let authenticated = in_group(user, vkube_auth::AUTHENTICATED);
    if !info.is_resource || info.resource.is_empty() {
        let read = *method == Method::GET || *method == Method::HEAD;
        let allowed = read
            && (public_info(path)
                || (authenticated && discovery(path))
                || (in_group(user, "system:monitoring") && path == "/metrics")
                || (in_group(user, "system:serviceaccounts")
                    && matches!(
                        path,
                        "/.well-known/openid-configuration" | "/openid/v1/jwks"
                    )));
        if allowed {
            return Ok(());
        }
        let verb = method.as_str().to_lowercase();
        return Err(Status::forbidden_path(&user.username, &verb, path));
    }
    let allowed = authenticated
        && info.verb == "create"
        && info.group == "authentication.k8s.io"
        && info.resource == "selfsubjectreviews";
    if allowed {
        return Ok(());
    }
    Err(forbidden(user, info))
}

/// `pods "x" is forbidden: User "u" cannot get resource "pods" in API group "" in the namespace "ns"`
pub fn forbidden(user: &UserInfo, info: &RequestInfo) -> Status {
    let resource = if info.subresource.is_empty() {
        info.resource.clone()
    } else {
        format!("{}/{}", info.resource, info.subresource)
    };
    let scope = if info.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace {:?}", info.namespace)
    };
    let why = format!(
        "User {:?} cannot {} resource {resource:?} in API group {:?} {scope}",
        user.username, info.verb, info.group
    );
    Status::forbidden(&info.resource, &info.group, &info.name, &why)
}
