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
use crate::rest::{Ctx, parse_body};

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
    let mut review = parse_body(body)?;
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
    let mut request = parse_body(body)?;
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
