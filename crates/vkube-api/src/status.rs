//! `Status` errors with kube-apiserver's `reason`, `code` and wording. Clients parse these
//! (kubectl prints `Error from server (NotFound): …`, client-go branches on `reason`), so each
//! constructor follows upstream's `k8s.io/apimachinery/pkg/api/errors` to the letter.

use serde::Serialize;
use serde_json::{Value, json};

/// A failed request, as the `Status` object the API answers with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct Status {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Box<Details>>,
    /// `metadata.continue`: the inconsistent continue token of an expired list continuation.
    pub continue_token: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Details {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub group: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<Cause>,
    #[serde(rename = "retryAfterSeconds", skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Cause {
    pub reason: String,
    pub message: String,
    pub field: String,
}

/// `resource` or `resource.group`, as upstream names a resource in messages.
pub fn qualified(resource: &str, group: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

impl Status {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Status {
        Status {
            code,
            reason,
            message: message.into(),
            details: None,
            continue_token: None,
        }
    }

    fn about(mut self, name: &str, group: &str, kind: &str) -> Status {
        self.details = Some(Box::new(Details {
            name: name.to_string(),
            group: group.to_string(),
            kind: kind.to_string(),
            ..Details::default()
        }));
        self
    }

    pub fn not_found(resource: &str, group: &str, name: &str) -> Status {
        let message = format!("{} \"{name}\" not found", qualified(resource, group));
        Status::new(404, "NotFound", message).about(name, group, resource)
    }

    pub fn already_exists(resource: &str, group: &str, name: &str) -> Status {
        let message = format!("{} \"{name}\" already exists", qualified(resource, group));
        Status::new(409, "AlreadyExists", message).about(name, group, resource)
    }

    /// A write whose resourceVersion is stale.
    pub fn conflict(resource: &str, group: &str, name: &str, why: &str) -> Status {
        let message = format!(
            "Operation cannot be fulfilled on {} \"{name}\": {why}",
            qualified(resource, group)
        );
        Status::new(409, "Conflict", message).about(name, group, resource)
    }

    /// 429 from the eviction subresource: the pod's disruption budget does not allow it now.
    pub fn disruption_budget(why: String) -> Status {
        let mut status = Status::new(
            429,
            "TooManyRequests",
            "Cannot evict pod as it would violate the pod's disruption budget.",
        );
        status.details = Some(Box::new(Details {
            causes: vec![Cause {
                reason: "DisruptionBudget".into(),
                message: why,
                field: String::new(),
            }],
            ..Details::default()
        }));
        status
    }

    /// 409 of a server-side apply that would change fields other managers own.
    pub fn apply_conflict(message: String, causes: Vec<Cause>) -> Status {
        let mut status = Status::new(409, "Conflict", message);
        status.details = Some(Box::new(Details {
            causes,
            ..Details::default()
        }));
        status
    }

    pub const MODIFIED: &'static str = "the object has been modified; please apply your changes to the latest version and try again";

    /// An object that fails validation; `causes` are (field, reason, message).
    pub fn invalid(kind: &str, group: &str, name: &str, causes: Vec<Cause>) -> Status {
        let summary: Vec<String> = causes
            .iter()
            .map(|c| {
                if c.field.is_empty() {
                    c.message.clone()
                } else {
                    format!("{}: {}", c.field, c.message)
                }
            })
            .collect();
        let listed = match summary.len() {
            0 => String::new(),
            1 => summary[0].clone(),
            _ => format!("[{}]", summary.join(", ")),
        };
        let qualified_kind = qualified(kind, group);
        let message = format!("{qualified_kind} \"{name}\" is invalid: {listed}");
        let mut status = Status::new(422, "Invalid", message).about(name, group, kind);
        if let Some(details) = &mut status.details {
            details.causes = causes;
        }
        status
    }

    pub fn bad_request(message: impl Into<String>) -> Status {
        Status::new(400, "BadRequest", message)
    }

    pub fn forbidden(resource: &str, group: &str, name: &str, why: &str) -> Status {
        let target = if name.is_empty() {
            qualified(resource, group)
        } else {
            format!("{} \"{name}\"", qualified(resource, group))
        };
        Status::new(403, "Forbidden", format!("{target} is forbidden: {why}"))
            .about(name, group, resource)
    }

    /// A non-resource path the user may not use: `forbidden: User "u" cannot get path "/x"`.
    pub fn forbidden_path(user: &str, verb: &str, path: &str) -> Status {
        Status::new(
            403,
            "Forbidden",
            format!("forbidden: User {user:?} cannot {verb} path {path:?}"),
        )
    }

    pub fn unauthorized() -> Status {
        Status::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn method_not_allowed() -> Status {
        Status::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    /// 404 for a path that names no resource.
    /// 405 with a reason of the server's, e.g. a create while a CRD is terminating.
    pub fn method_not_allowed_because(message: impl Into<String>) -> Status {
        Status::new(405, "MethodNotAllowed", message)
    }

    pub fn path_not_found() -> Status {
        Status::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    pub fn not_acceptable() -> Status {
        Status::new(
            406,
            "NotAcceptable",
            "only the following media types are accepted: application/json, application/yaml",
        )
    }

    pub fn unsupported_media_type(content_type: &str) -> Status {
        Status::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {content_type:?})"
            ),
        )
    }

    /// A patch type the resource does not take (strategic merge patch on a custom resource).
    pub fn unsupported_patch(content_type: &str) -> Status {
        Status::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {content_type:?})"
            ),
        )
    }

    /// A request whose content the server understood but cannot apply (422 without causes).
    pub fn unprocessable(message: impl Into<String>) -> Status {
        Status::new(422, "Invalid", message)
    }

    /// A request in a format the server does not handle (yet), with the reason.
    pub fn unsupported(message: impl Into<String>) -> Status {
        Status::new(415, "UnsupportedMediaType", message)
    }

    pub fn too_large(limit: usize) -> Status {
        Status::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {limit}"),
        )
    }

    /// 410 for a resourceVersion older than the store keeps (watch and list).
    /// A read at a revision the store has not reached: upstream's watch cache answers this 504
    /// (after waiting 3 s for it), asking for a retry in a second.
    pub fn too_large_resource_version(requested: u64, current: u64) -> Status {
        let mut status = Status::new(
            504,
            "Timeout",
            format!("Timeout: Too large resource version: {requested}, current: {current}"),
        );
        status.details = Some(Box::new(Details {
            causes: vec![Cause {
                reason: "ResourceVersionTooLarge".into(),
                message: "Too large resource version".into(),
                field: String::new(),
            }],
            retry_after_seconds: Some(1),
            ..Details::default()
        }));
        status
    }

    pub fn expired(message: impl Into<String>) -> Status {
        Status::new(410, "Expired", message)
    }

    /// A kubelet subresource (log, exec, …) asked for before there is a kubelet behind the API.
    pub fn service_unavailable(message: impl Into<String>) -> Status {
        Status::new(503, "ServiceUnavailable", message)
    }

    pub fn internal(err: impl std::fmt::Display) -> Status {
        let mut status = Status::new(
            500,
            "InternalError",
            format!("Internal error occurred: {err}"),
        );
        status.details = Some(Box::new(Details {
            causes: vec![Cause {
                reason: String::new(),
                message: err.to_string(),
                field: String::new(),
            }],
            ..Details::default()
        }));
        status
    }

    /// The JSON body.
    pub fn to_json(&self) -> Value {
        let mut body = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            body["details"] = serde_json::to_value(details).unwrap_or(Value::Null);
        }
        if let Some(token) = &self.continue_token {
            body["metadata"]["continue"] = json!(token);
        }
        body
    }
}

/// A `Status` of success, as DELETE of a collection answers.
pub fn success() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_match_upstream() {
        assert_eq!(
            Status::not_found("pods", "", "x").message,
            r#"pods "x" not found"#
        );
        assert_eq!(
            Status::not_found("deployments", "apps", "web").message,
            r#"deployments.apps "web" not found"#
        );
        assert_eq!(
            Status::already_exists("configmaps", "", "c").message,
            r#"configmaps "c" already exists"#
        );
        assert_eq!(
            Status::conflict("configmaps", "", "c", Status::MODIFIED).message,
            "Operation cannot be fulfilled on configmaps \"c\": the object has been modified; \
             please apply your changes to the latest version and try again"
        );
        let cause = |f: &str, m: &str| Cause {
            reason: "FieldValueInvalid".into(),
            message: m.into(),
            field: f.into(),
        };
        assert_eq!(
            Status::invalid(
                "ConfigMap",
                "",
                "Bad_",
                vec![cause("metadata.name", "Invalid value: \"Bad_\": x")]
            )
            .message,
            "ConfigMap \"Bad_\" is invalid: metadata.name: Invalid value: \"Bad_\": x"
        );
    }

    #[test]
    fn json_has_the_status_shape() {
        let body = Status::not_found("pods", "", "x").to_json();
        assert_eq!(body["kind"], "Status");
        assert_eq!(body["reason"], "NotFound");
        assert_eq!(body["code"], 404);
        assert_eq!(body["details"], json!({"name": "x", "kind": "pods"}));
    }
}
