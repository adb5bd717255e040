//! The `audit.k8s.io/v1` Event as kube-apiserver's log backend writes it: one JSON document a
//! line, fields in the order of upstream's Go struct, empty optional fields left out as its
//! `omitempty` tags leave them out, times as `MicroTime` (RFC 3339, microseconds, UTC).

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::policy::{Level, Stage};

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub kind: &'static str,
    pub api_version: &'static str,
    pub level: Level,
    #[serde(rename = "auditID")]
    pub audit_id: String,
    pub stage: Stage,
    #[serde(rename = "requestURI")]
    pub request_uri: String,
    pub verb: String,
    pub user: User,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub impersonated_user: Option<User>,
    #[serde(rename = "sourceIPs", skip_serializing_if = "Vec::is_empty")]
    pub source_ips: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub user_agent: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_ref: Option<ObjectReference>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_status: Option<ResponseStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_object: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_object: Option<Box<RawValue>>,
    #[serde(serialize_with = "micro_time")]
    pub request_received_timestamp: SystemTime,
    #[serde(serialize_with = "micro_time")]
    pub stage_timestamp: SystemTime,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// authentication/v1 `UserInfo`: every field `omitempty`, so a request that failed
/// authentication has `"user":{}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct User {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub username: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Vec<String>>,
}

impl From<&vkube_auth::UserInfo> for User {
    fn from(u: &vkube_auth::UserInfo) -> User {
        User {
            username: u.username.clone(),
            uid: u.uid.clone(),
            groups: u.groups.clone(),
            extra: u.extra.clone(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub resource: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub api_group: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub resource_version: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub subresource: String,
}

/// The bounded fields of a `metav1.Status` upstream copies into an event: `metadata` is always
/// there (an empty `ListMeta`), the rest only when set.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ResponseStatus {
    pub metadata: BTreeMap<String, Value>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub status: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
    #[serde(skip_serializing_if = "is_zero")]
    pub code: u16,
}

fn is_zero(n: &u16) -> bool {
    *n == 0
}

impl ResponseStatus {
    /// The fields of a `Status` response body.
    pub fn from_status(status: &Value) -> ResponseStatus {
        let text = |k: &str| status[k].as_str().unwrap_or_default().to_string();
        ResponseStatus {
            status: text("status"),
            message: text("message"),
            reason: text("reason"),
            details: status.get("details").filter(|d| !d.is_null()).cloned(),
            ..ResponseStatus::default()
        }
    }
}

/// `metav1.MicroTime`: `2006-01-02T15:04:05.000000Z07:00`, in UTC.
pub fn format_micro(t: SystemTime) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    time::OffsetDateTime::from(t)
        .format(format)
        .unwrap_or_default()
}

fn micro_time<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_micro(*t))
}

impl Event {
    /// The event as one line of the log, newline included. Go's encoder escapes `<`, `>`, `&`,
    /// U+2028 and U+2029 in strings; so does this, so lines compare equal to upstream's. (In
    /// JSON text those characters can only occur inside strings, so replacing them anywhere is
    /// safe.)
    pub fn to_line(&self) -> String {
        let json = serde_json::to_string(self).unwrap_or_default();
        let mut out = String::with_capacity(json.len() + 1);
        for c in json.chars() {
            match c {
                '<' => out.push_str("\\u003c"),
                '>' => out.push_str("\\u003e"),
                '&' => out.push_str("\\u0026"),
                '\u{2028}' => out.push_str("\\u2028"),
                '\u{2029}' => out.push_str("\\u2029"),
                c => out.push(c),
            }
        }
        out.push('\n');
        out
    }
}

/// A JSON body as an event's `requestObject`/`responseObject`: compact, its keys in the order
/// the body has them; `None` when the body is not JSON (upstream records decoded objects only).
/// With `omit_managed_fields`, `metadata.managedFields` goes from the object, from each item of
/// a list and from each row object of a Table, as upstream's `omitManagedFields` does.
pub fn object(body: &[u8], omit_managed_fields: bool) -> Option<Box<RawValue>> {
    if omit_managed_fields {
        let mut v: Value = serde_json::from_slice(body).ok()?;
        strip_managed_fields(&mut v);
        return RawValue::from_string(v.to_string()).ok();
    }
    let raw: &RawValue = serde_json::from_slice(body).ok()?;
    RawValue::from_string(compact(raw.get())).ok()
}

fn strip_managed_fields(v: &mut Value) {
    let strip = |o: &mut Value| {
        if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("managedFields");
        }
    };
    strip(v);
    if let Some(items) = v.get_mut("items").and_then(Value::as_array_mut) {
        items.iter_mut().for_each(strip);
    }
    if let Some(rows) = v.get_mut("rows").and_then(Value::as_array_mut) {
        for row in rows {
            if let Some(obj) = row.get_mut("object") {
                strip(obj);
            }
        }
    }
}

/// Valid JSON text without the whitespace between tokens.
fn compact(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !c.is_ascii_whitespace() {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn micro_time_has_six_digits_and_z() {
        let t = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        assert_eq!(format_micro(t), "2023-11-14T22:13:20.123456Z");
        assert_eq!(format_micro(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn objects_keep_their_key_order_and_lose_whitespace() {
        let body = br#"{"kind": "ConfigMap", "apiVersion":"v1",
            "metadata": {"name":"a b", "managedFields":[{"manager":"x"}]}, "data":{"k":"v \" } "}}"#;
        assert_eq!(
            object(body, false).unwrap().get(),
            r#"{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"a b","managedFields":[{"manager":"x"}]},"data":{"k":"v \" } "}}"#
        );
        let stripped: Value = serde_json::from_str(object(body, true).unwrap().get()).unwrap();
        assert_eq!(stripped["metadata"], serde_json::json!({"name": "a b"}));
        assert!(
            object(b"kind: ConfigMap", false).is_none(),
            "YAML is not logged"
        );
        let list = br#"{"items":[{"metadata":{"name":"a","managedFields":[]}}],"rows":[{"object":{"metadata":{"managedFields":[]}}}]}"#;
        assert_eq!(
            object(list, true).unwrap().get(),
            r#"{"items":[{"metadata":{"name":"a"}}],"rows":[{"object":{"metadata":{}}}]}"#
        );
    }

    #[test]
    fn a_line_is_upstreams_shape() {
        let t = UNIX_EPOCH + Duration::from_micros(1_700_000_000_000_001);
        let ev = Event {
            kind: "Event",
            api_version: "audit.k8s.io/v1",
            level: Level::Metadata,
            audit_id: "0b7e3c1a-1111-4222-8333-444455556666".into(),
            stage: Stage::ResponseComplete,
            request_uri: "/api/v1/namespaces/default/configmaps?fieldSelector=a<b&limit=500".into(),
            verb: "list".into(),
            user: User {
                username: "admin".into(),
                groups: vec!["system:masters".into(), "system:authenticated".into()],
                ..User::default()
            },
            impersonated_user: None,
            source_ips: vec!["127.0.0.1".into()],
            user_agent: "kubectl/v1.33.0 (linux/amd64) kubernetes/abc".into(),
            object_ref: Some(ObjectReference {
                resource: "configmaps".into(),
                namespace: "default".into(),
                api_version: "v1".into(),
                ..ObjectReference::default()
            }),
            response_status: Some(ResponseStatus {
                code: 200,
                ..ResponseStatus::default()
            }),
            request_object: None,
            response_object: None,
            request_received_timestamp: t,
            stage_timestamp: t,
            annotations: [
                (
                    "authorization.k8s.io/decision".to_string(),
                    "allow".to_string(),
                ),
                ("authorization.k8s.io/reason".to_string(), String::new()),
            ]
            .into(),
        };
        assert_eq!(
            ev.to_line(),
            concat!(
                r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"0b7e3c1a-1111-4222-8333-444455556666","stage":"ResponseComplete","#,
                r#""requestURI":"/api/v1/namespaces/default/configmaps?fieldSelector=a\u003cb\u0026limit=500","verb":"list","#,
                r#""user":{"username":"admin","groups":["system:masters","system:authenticated"]},"sourceIPs":["127.0.0.1"],"#,
                r#""userAgent":"kubectl/v1.33.0 (linux/amd64) kubernetes/abc","objectRef":{"resource":"configmaps","namespace":"default","apiVersion":"v1"},"#,
                r#""responseStatus":{"metadata":{},"code":200},"requestReceivedTimestamp":"2023-11-14T22:13:20.000001Z","stageTimestamp":"2023-11-14T22:13:20.000001Z","#,
                r#""annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":""}}"#,
                "\n"
            )
        );
    }

    #[test]
    fn a_failure_status_keeps_its_bounded_fields() {
        let body = serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "configmaps \"x\" not found", "reason": "NotFound",
            "details": {"name": "x", "kind": "configmaps"}, "code": 404});
        let mut status = ResponseStatus::from_status(&body);
        status.code = 404;
        assert_eq!(
            serde_json::to_string(&status).unwrap(),
            r#"{"metadata":{},"status":"Failure","message":"configmaps \"x\" not found","reason":"NotFound","details":{"kind":"configmaps","name":"x"},"code":404}"#
        );
    }
}
