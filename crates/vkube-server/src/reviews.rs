//! The identity APIs: SelfSubjectReview (`kubectl auth whoami`), TokenReview, and TokenRequest
//! (`serviceaccounts/NAME/token`, what `kubectl create token` and kubelets use). Reviews are
//! answered and never stored.

use bytes::Bytes;
use http::Response;
use serde_json::{Value, json};
use vkube_api::object::cause;
use vkube_api::{Status, registry};
use vkube_auth::UserInfo;
use vkube_auth::service_account::{BoundObject, DEFAULT_EXPIRATION, MIN_EXPIRATION};

use crate::response::Body;
use crate::rest::{Ctx, parse_object};

fn user_json(user: &UserInfo) -> Value {
    serde_json::to_value(user).unwrap_or_default()
}

/// POST `selfsubjectreviews`: the caller as the server sees it.
pub(crate) fn self_subject_review(ctx: &Ctx<'_>) -> Result<Response<Body>, Status> {
    let review = json!({
        "kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "status": {"userInfo": user_json(ctx.user)},
    });
    Ok(ctx.respond(201, &review))
}

/// POST `tokenreviews`: whether a token authenticates, and as whom.
pub(crate) async fn token_review(ctx: &Ctx<'_>, body: &Bytes) -> Result<Response<Body>, Status> {
    let mut review = parse_object(body)?;
    let token = review["spec"]["token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let audiences: Option<Vec<String>> = review["spec"]["audiences"]
        .as_array()
        .filter(|a| !a.is_empty())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        });
    let status = match ctx
        .api
        .auth
        .authenticate(&token, audiences.as_deref())
        .await
    {
        Ok(user) => {
            let audiences =
                audiences.unwrap_or_else(|| ctx.api.auth.service_accounts.api_audiences.clone());
            json!({"authenticated": true, "user": user_json(&user), "audiences": audiences})
        }
        Err(refusal) => {
            tracing::info!(authenticator = refusal.authenticator, reason = %refusal.reason, "token review: not authenticated");
            json!({"user": {}, "error": "[invalid bearer token, token lookup failed]"})
        }
    };
    review["status"] = status;
    review["metadata"]["creationTimestamp"] = Value::Null;
    if let Some(spec) = review["spec"].as_object_mut() {
        spec.remove("token");
    }
    Ok(ctx.respond(201, &review))
}

/// POST `serviceaccounts/NAME/token`.
pub(crate) async fn token_request(ctx: &Ctx<'_>, body: &Bytes) -> Result<Response<Body>, Status> {
    let mut request = parse_object(body)?;
    let (namespace, name) = (ctx.info.namespace.clone(), ctx.info.name.clone());
    let (_, sa) = ctx.current(&name).await?;
    let sa_uid = sa["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let spec = &request["spec"];
    let expiration = spec["expirationSeconds"]
        .as_i64()
        .unwrap_or(DEFAULT_EXPIRATION);
    let invalid = |field: &str, message: String| {
        Status::invalid(
            "TokenRequest",
            "authentication.k8s.io",
            &name,
            vec![cause("FieldValueInvalid", field, message)],
        )
    };
    if expiration < MIN_EXPIRATION {
        return Err(invalid(
            "spec.expirationSeconds",
            format!("Invalid value: {expiration}: may not specify a duration less than 10 minutes"),
        ));
    }
    if expiration > 1 << 32 {
        return Err(invalid(
            "spec.expirationSeconds",
            format!(
                "Invalid value: {expiration}: may not specify a duration larger than 2^32 seconds"
            ),
        ));
    }
    let audiences: Vec<String> = spec["audiences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    let bound = match spec["boundObjectRef"].as_object() {
        Some(r) => Some(bound_object(ctx, &namespace, r).await?),
        None => None,
    };
    let issuer = &ctx.api.auth.service_accounts;
    let (token, exp) = issuer.issue(
        &namespace,
        &name,
        &sa_uid,
        &audiences,
        expiration,
        bound.as_ref(),
    );
    let audiences = if audiences.is_empty() {
        issuer.api_audiences.clone()
    } else {
        audiences
    };
    request["metadata"] = json!({"name": name, "namespace": namespace, "creationTimestamp": null});
    request["spec"]["audiences"] = json!(audiences);
    request["spec"]["expirationSeconds"] = json!(expiration);
    let expires = time::OffsetDateTime::from_unix_timestamp(exp)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    request["status"] = json!({"token": token, "expirationTimestamp": expires});
    request["apiVersion"] = json!("authentication.k8s.io/v1");
    request["kind"] = json!("TokenRequest");
    Ok(ctx.respond(201, &request))
}

/// The Pod or Secret a token is bound to: it must exist, with the uid the request names.
async fn bound_object(
    ctx: &Ctx<'_>,
    namespace: &str,
    r: &serde_json::Map<String, Value>,
) -> Result<BoundObject, Status> {
    let kind = r.get("kind").and_then(Value::as_str).unwrap_or_default();
    let name = r.get("name").and_then(Value::as_str).unwrap_or_default();
    let plural = match kind {
        "Pod" => "pods",
        "Secret" => "secrets",
        other => {
            return Err(Status::bad_request(format!(
                "cannot bind token to object of type {other:?}: only Pod and Secret are supported"
            )));
        }
    };
    let resource = registry::find("", "v1", plural).expect("core resources are registered");
    let kv = ctx
        .api
        .store
        .get(&resource.key(namespace, name), None)
        .await
        .map_err(crate::rest::store_status)?
        .ok_or_else(|| Status::not_found(plural, "", name))?;
    let obj: Value =
        serde_json::from_slice(&kv.value).map_err(|e| Status::internal(e.to_string()))?;
    let uid = obj["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if let Some(want) = r
        .get("uid")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
    {
        if want != uid {
            return Err(Status::conflict(
                plural,
                "",
                name,
                &format!(
                    "the UID in the bound object reference ({want}) does not match the UID in record. The object might have been deleted and then recreated"
                ),
            ));
        }
    }
    Ok(BoundObject {
        kind: kind.to_string(),
        name: name.to_string(),
        uid,
    })
}

/// A 422 for an access review's spec.
fn invalid_review(kind: &str, field: &str, message: String) -> Status {
    Status::invalid(
        kind,
        "authorization.k8s.io",
        "",
        vec![cause("FieldValueInvalid", field, message)],
    )
}

/// The attributes a SubjectAccessReview spec asks about: exactly one of resource and
/// non-resource attributes.
fn review_attributes(spec: &Value, kind: &str) -> Result<vkube_auth::rbac::Attributes, Status> {
    let (res, non) = (&spec["resourceAttributes"], &spec["nonResourceAttributes"]);
    let invalid = |field: &str, message: &str| invalid_review(kind, field, message.to_string());
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    match (res.is_object(), non.is_object()) {
        (true, true) => Err(invalid(
            "spec.resourceAttributes",
            "Invalid value: \"\": cannot be specified in combination with nonResourceAttributes",
        )),
        (false, false) => Err(invalid(
            "spec",
            "Invalid value: \"\": exactly one of nonResourceAttributes or resourceAttributes must be specified",
        )),
        (true, false) => Ok(vkube_auth::rbac::Attributes {
            verb: s(&res["verb"]),
            resource_request: true,
            group: s(&res["group"]),
            resource: s(&res["resource"]),
            subresource: s(&res["subresource"]),
            name: s(&res["name"]),
            namespace: s(&res["namespace"]),
            path: String::new(),
        }),
        (false, true) => Ok(vkube_auth::rbac::Attributes {
            verb: s(&non["verb"]),
            path: s(&non["path"]),
            ..Default::default()
        }),
    }
}

async fn access_status(ctx: &Ctx<'_>, user: &UserInfo, a: &vkube_auth::rbac::Attributes) -> Value {
    match ctx.api.authorizer.decide(user, a).await {
        vkube_auth::rbac::Decision::Allow(reason) if reason == "system:masters" => {
            json!({"allowed": true})
        }
        vkube_auth::rbac::Decision::Allow(reason) => json!({"allowed": true, "reason": reason}),
        vkube_auth::rbac::Decision::Deny => json!({"allowed": false}),
    }
}

/// POST `selfsubjectaccessreviews`, `subjectaccessreviews` and `localsubjectaccessreviews`.
pub(crate) async fn access_review(ctx: &Ctx<'_>, body: &Bytes) -> Result<Response<Body>, Status> {
    let mut review = parse_object(body)?;
    let kind = ctx.resource.kind;
    let spec = review["spec"].clone();
    let mut a = review_attributes(&spec, kind)?;
    let user = match kind {
        "SelfSubjectAccessReview" => ctx.user.clone(),
        _ => {
            let strings = |v: &Value| -> Vec<String> {
                v.as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            };
            let user = UserInfo {
                username: spec["user"].as_str().unwrap_or_default().to_string(),
                uid: spec["uid"].as_str().unwrap_or_default().to_string(),
                groups: strings(&spec["groups"]),
                extra: spec["extra"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), strings(v)))
                    .collect(),
            };
            if user.username.is_empty() && user.groups.is_empty() {
                return Err(invalid_review(
                    kind,
                    "spec.user",
                    "Invalid value: \"\": at least one of user or group must be specified".into(),
                ));
            }
            user
        }
    };
    if kind == "LocalSubjectAccessReview" {
        let ns = &ctx.info.namespace;
        if !a.namespace.is_empty() && a.namespace != *ns {
            return Err(invalid_review(
                kind,
                "spec.resourceAttributes.namespace",
                format!(
                    "Invalid value: {:?}: must match metadata.namespace",
                    a.namespace
                ),
            ));
        }
        a.namespace = ns.clone();
    }
    review["status"] = access_status(ctx, &user, &a).await;
    review["metadata"]["creationTimestamp"] = Value::Null;
    Ok(ctx.respond(201, &review))
}

/// POST `selfsubjectrulesreviews`: what the caller may do in a namespace.
pub(crate) fn rules_review(ctx: &Ctx<'_>, body: &Bytes) -> Result<Response<Body>, Status> {
    let mut review = parse_object(body)?;
    let namespace = review["spec"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let rules = ctx.api.authorizer.rbac.rules_for(ctx.user, &namespace);
    let (mut resource_rules, mut non_resource_rules) = (Vec::new(), Vec::new());
    for r in rules {
        if !r.non_resource_urls.is_empty() {
            non_resource_rules
                .push(json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}));
        }
        if !r.resources.is_empty() {
            let mut rule =
                json!({"verbs": r.verbs, "apiGroups": r.api_groups, "resources": r.resources});
            if !r.resource_names.is_empty() {
                rule["resourceNames"] = json!(r.resource_names);
            }
            resource_rules.push(rule);
        }
    }
    review["status"] = json!({"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": false});
    review["metadata"]["creationTimestamp"] = Value::Null;
    Ok(ctx.respond(201, &review))
}
