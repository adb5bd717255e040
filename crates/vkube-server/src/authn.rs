//! Who is asking: the client certificate's user, else the bearer token's (service account or
//! OIDC issuer), else `system:anonymous` when anonymous requests are allowed — upstream's order.
//! A token that fails is 401 even where anonymous access would have been allowed. Then
//! impersonation (`Impersonate-*` headers), authorized with the `impersonate` verb.

use http::HeaderMap;
use vkube_api::Status;
use vkube_auth::UserInfo;

use crate::router::Api;

/// The bearer token of `Authorization: Bearer …`, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

pub async fn authenticate(
    api: &Api,
    cert_user: Option<UserInfo>,
    headers: &HeaderMap,
    path: &str,
) -> Result<UserInfo, Status> {
    let started = std::time::Instant::now();
    let result = identify(api, cert_user, headers, path).await;
    let label = if result.is_ok() { "success" } else { "failure" };
    api.auth.metrics.attempt(label, started.elapsed());
    result
}

async fn identify(
    api: &Api,
    cert_user: Option<UserInfo>,
    headers: &HeaderMap,
    path: &str,
) -> Result<UserInfo, Status> {
    if let Some(user) = cert_user {
        return Ok(user);
    }
    if let Some(token) = bearer(headers) {
        return match api.auth.authenticate(token, None).await {
            Ok(user) => Ok(user),
            Err(refusal) => {
                tracing::info!(authenticator = refusal.authenticator, reason = %refusal.reason, "authentication failed");
                Err(Status::unauthorized())
            }
        };
    }
    if api.auth.anonymous().allows(path) {
        Ok(UserInfo::anonymous())
    } else {
        Err(Status::unauthorized())
    }
}

/// Applies `Impersonate-User`, `-Group`, `-Uid` and `-Extra-*`. Impersonating needs the
/// `impersonate` verb; until RBAC exists only `system:masters` holds it.
pub async fn impersonate(
    api: &Api,
    user: UserInfo,
    headers: &HeaderMap,
) -> Result<UserInfo, Status> {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect()
    };
    let users = values("impersonate-user");
    let groups = values("impersonate-group");
    let uid = values("impersonate-uid");
    let extra: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(k, v)| {
            let key = k.as_str().strip_prefix("impersonate-extra-")?;
            let key = percent_decode(key);
            Some((key, v.to_str().ok()?.to_string()))
        })
        .collect();
    if users.is_empty() {
        if !groups.is_empty() || !uid.is_empty() || !extra.is_empty() {
            return Err(Status::bad_request(
                "impersonating a group, uid or extra requires impersonating a user (Impersonate-User)",
            ));
        }
        return Ok(user);
    }
    let target = &users[0];
    // Each impersonated attribute needs the `impersonate` verb on it (upstream's checks).
    let mut wanted: Vec<(&str, String, String, String)> = Vec::new();
    match target
        .strip_prefix("system:serviceaccount:")
        .and_then(|r| r.split_once(':'))
    {
        Some((ns, name)) => wanted.push(("", "serviceaccounts".into(), ns.into(), name.into())),
        None => wanted.push(("", "users".into(), String::new(), target.clone())),
    }
    for g in &groups {
        wanted.push(("", "groups".into(), String::new(), g.clone()));
    }
    for u in &uid {
        wanted.push((
            "authentication.k8s.io",
            "uids".into(),
            String::new(),
            u.clone(),
        ));
    }
    for (k, _) in &extra {
        wanted.push((
            "authentication.k8s.io",
            format!("userextras/{k}"),
            String::new(),
            String::new(),
        ));
    }
    for (group, resource, namespace, name) in wanted {
        let (resource, subresource) = match resource.split_once('/') {
            Some((r, s)) => (r.to_string(), s.to_string()),
            None => (resource, String::new()),
        };
        let a = vkube_auth::rbac::Attributes {
            verb: "impersonate".into(),
            resource_request: true,
            group: group.into(),
            resource,
            subresource,
            name,
            namespace,
            path: String::new(),
        };
        if api.authorizer.decide(&user, &a).await == vkube_auth::rbac::Decision::Deny {
            return Err(crate::authz::forbidden(&user, &a));
        }
    }
    let mut out = UserInfo {
        username: target.clone(),
        groups,
        uid: uid.first().cloned().unwrap_or_default(),
        ..UserInfo::default()
    };
    if let Some(rest) = target.strip_prefix("system:serviceaccount:") {
        if let Some((ns, _)) = rest.split_once(':') {
            out.groups.push("system:serviceaccounts".into());
            out.groups.push(format!("system:serviceaccounts:{ns}"));
        }
    }
    for (k, v) in extra {
        out.extra.entry(k).or_default().push(v);
    }
    // As upstream: an impersonated anonymous user is unauthenticated, anyone else authenticated.
    Ok(if target == vkube_auth::ANONYMOUS {
        if !out.groups.iter().any(|g| g == vkube_auth::UNAUTHENTICATED) {
            out.groups.push(vkube_auth::UNAUTHENTICATED.into());
        }
        out
    } else {
        out.authenticated()
    })
}

/// Header names carry extra keys percent-encoded (`Impersonate-Extra-example.com%2Fscopes`).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
