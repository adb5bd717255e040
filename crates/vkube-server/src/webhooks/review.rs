//! The AdmissionReview round trip: the request vkube sends (v1, or v1beta1 to a webhook that only
//! speaks that), the checks upstream's `VerifyAdmissionResponse` makes on the answer, and the
//! Status a denial becomes (upstream's `ToStatusErr`).

use base64::Engine as _;
use serde_json::{Value, json};
use vkube_api::Status;
use vkube_api::status::{Cause, Details};

use super::hook::Operation;

/// What the request is about, as the webhook sees it.
pub struct Attributes<'a> {
    pub operation: Operation,
    /// The (equivalent) resource the webhook matched: group, version, plural, kind.
    pub group: &'a str,
    pub version: &'a str,
    pub resource: &'a str,
    pub kind: &'a str,
    pub subresource: &'a str,
    /// The resource the request addressed.
    pub request_group: &'a str,
    pub request_version: &'a str,
    pub request_resource: &'a str,
    pub request_kind: &'a str,
    pub name: &'a str,
    pub namespace: &'a str,
    pub user: &'a vkube_auth::UserInfo,
    pub dry_run: bool,
    pub options: &'a Value,
}

/// The `request` of an AdmissionReview; `object`/`oldObject` already in the webhook's version.
pub fn request(uid: &str, a: &Attributes, object: Option<&Value>, old: Option<&Value>) -> Value {
    let mut user = json!({"username": a.user.username});
    if !a.user.uid.is_empty() {
        user["uid"] = json!(a.user.uid);
    }
    if !a.user.groups.is_empty() {
        user["groups"] = json!(a.user.groups);
    }
    if !a.user.extra.is_empty() {
        user["extra"] = json!(a.user.extra);
    }
    let mut req = json!({
        "uid": uid,
        "kind": {"group": a.group, "version": a.version, "kind": a.kind},
        "resource": {"group": a.group, "version": a.version, "resource": a.resource},
        "requestKind": {"group": a.request_group, "version": a.request_version, "kind": a.request_kind},
        "requestResource": {"group": a.request_group, "version": a.request_version, "resource": a.request_resource},
        "operation": a.operation.as_str(),
        "userInfo": user,
        "object": object.cloned().unwrap_or(Value::Null),
        "oldObject": old.cloned().unwrap_or(Value::Null),
        "dryRun": a.dry_run,
        "options": a.options,
    });
    if !a.subresource.is_empty() {
        req["subResource"] = json!(a.subresource);
        req["requestSubResource"] = json!(a.subresource);
    }
    if !a.name.is_empty() {
        req["name"] = json!(a.name);
    }
    if !a.namespace.is_empty() {
        req["namespace"] = json!(a.namespace);
    }
    req
}

/// The whole AdmissionReview body.
pub fn review(version: &str, request: Value) -> Value {
    json!({
        "kind": "AdmissionReview",
        "apiVersion": format!("admission.k8s.io/{version}"),
        "request": request,
    })
}

/// A verified answer.
#[derive(Debug, Default)]
pub struct Answer {
    pub allowed: bool,
    pub result: Option<Value>,
    /// The decoded JSONPatch, if any.
    pub patch: Option<Vec<u8>>,
    pub warnings: Vec<String>,
}

/// Upstream's checks of a webhook's answer; an error is "received invalid webhook response: …".
pub fn verify(version: &str, uid: &str, mutating: bool, body: &Value) -> Result<Answer, String> {
    let resp = &body["response"];
    if !resp.is_object() {
        return Err("webhook response was absent".into());
    }
    if version == "v1" {
        let got_uid = resp["uid"].as_str().unwrap_or_default();
        if got_uid != uid {
            return Err(format!("expected response.uid={uid:?}, got {got_uid:?}"));
        }
        let api_version = body["apiVersion"].as_str().unwrap_or_default();
        let kind = body["kind"].as_str().unwrap_or_default();
        if api_version != "admission.k8s.io/v1" || kind != "AdmissionReview" {
            let got = match api_version.split_once('/') {
                Some((g, v)) => format!("{g}/{v}, Kind={kind}"),
                None => format!("{api_version}, Kind={kind}"),
            };
            return Err(format!(
                "expected webhook response of admission.k8s.io/v1, Kind=AdmissionReview, got {got}"
            ));
        }
    }
    let patch_type = resp["patchType"].as_str().unwrap_or_default();
    let patch = match resp["patch"].as_str().filter(|p| !p.is_empty()) {
        Some(p) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(p)
                .map_err(|e| format!("illegal base64 data in response.patch: {e}"))?,
        ),
        None => None,
    };
    if version == "v1" {
        if patch.is_some() && patch_type.is_empty() {
            return Err("webhook returned response.patch but not response.patchType".into());
        }
        if patch.is_none() && !patch_type.is_empty() {
            return Err("webhook returned response.patchType but not response.patch".into());
        }
    }
    if !mutating && patch.is_some() {
        return Err("validating webhook may not return response.patch".into());
    }
    if patch.is_some() && !patch_type.is_empty() && patch_type != "JSONPatch" {
        return Err(format!(
            "webhook returned invalid response.patchType of {patch_type:?}"
        ));
    }
    Ok(Answer {
        allowed: resp["allowed"].as_bool().unwrap_or(false),
        result: resp.get("status").filter(|s| s.is_object()).cloned(),
        patch,
        warnings: resp["warnings"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|w| w.as_str().map(str::to_string))
            .collect(),
    })
}

/// A reason from the webhook's status, as one of upstream's constants (the Status type has a
/// fixed set; an unknown one is kept in the message only).
fn known_reason(reason: &str) -> &'static str {
    const REASONS: &[&str] = &[
        "Unauthorized",
        "Forbidden",
        "NotFound",
        "AlreadyExists",
        "Conflict",
        "Gone",
        "Invalid",
        "ServerTimeout",
        "Timeout",
        "TooManyRequests",
        "BadRequest",
        "MethodNotAllowed",
        "NotAcceptable",
        "RequestEntityTooLarge",
        "UnsupportedMediaType",
        "InternalError",
        "Expired",
        "ServiceUnavailable",
    ];
    REASONS
        .iter()
        .find(|r| **r == reason)
        .copied()
        .unwrap_or("")
}

/// A denial as the request's error: upstream's `ToStatusErr` (a code below 400 becomes 400; the
/// message gets `admission webhook "NAME" denied the request` in front).
pub fn denied(webhook: &str, result: Option<&Value>) -> Status {
    let empty = json!({});
    let result = result.unwrap_or(&empty);
    let by = format!("admission webhook {webhook:?} denied the request");
    let message = result["message"].as_str().unwrap_or_default();
    let reason = result["reason"].as_str().unwrap_or_default();
    let message = if !message.is_empty() {
        format!("{by}: {message}")
    } else if !reason.is_empty() {
        format!("{by}: {reason}")
    } else {
        format!("{by} without explanation")
    };
    let code = result["code"]
        .as_u64()
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| *c >= 400 && *c < 600)
        .unwrap_or(400);
    let details = result.get("details").filter(|d| d.is_object()).map(|d| {
        let text = |k: &str| d[k].as_str().unwrap_or_default().to_string();
        Box::new(Details {
            name: text("name"),
            group: text("group"),
            kind: text("kind"),
            causes: d["causes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| Cause {
                    reason: c["reason"].as_str().unwrap_or_default().to_string(),
                    message: c["message"].as_str().unwrap_or_default().to_string(),
                    field: c["field"].as_str().unwrap_or_default().to_string(),
                })
                .collect(),
            retry_after_seconds: d["retryAfterSeconds"].as_u64().map(|s| s as u32),
        })
    });
    Status {
        code,
        reason: known_reason(reason),
        message,
        details,
        continue_token: None,
    }
}

/// A webhook that could not be called (or answered nonsense): `failed calling webhook "NAME": …`,
/// a 500 when the failure policy is Fail.
pub fn call_failed(webhook: &str, why: &str) -> Status {
    Status::internal(format!("failed calling webhook {webhook:?}: {why}"))
}

/// An error status a webhook server answered with, in client-go's words.
pub fn http_error(code: u16, body: &[u8]) -> String {
    if let Ok(status) = serde_json::from_slice::<Value>(body) {
        if status["kind"] == "Status" {
            if let Some(m) = status["message"].as_str().filter(|m| !m.is_empty()) {
                return m.to_string();
            }
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        format!(
            "the server responded with the status code {code} but did not return more information"
        )
    } else {
        format!("an error on the server ({text:?}) has prevented the request from succeeding")
    }
}
