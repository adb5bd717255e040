//! CONNECT admission: a pod's `exec`, `attach` and `portforward` pass the mutating and validating
//! admission (webhooks and policies) before the stream is opened, as upstream's
//! `ConnectResource` handler does, with the connect options decoded from the query as the object
//! (`PodExecOptions`, `PodAttachOptions`, `PodPortForwardOptions`). A webhook can so refuse
//! `kubectl attach` or `kubectl exec` into some pods.

use serde_json::{Map, Value, json};
use vkube_api::Status;

use super::{Admission, Operation};
use crate::request::RequestInfo;
use crate::rest::Ctx;
use crate::router::Api;

/// The kind of the connect options of a pod subresource, `None` for what is not a connect.
fn kind_of(subresource: &str) -> Option<&'static str> {
    match subresource {
        "exec" => Some("PodExecOptions"),
        "attach" => Some("PodAttachOptions"),
        "portforward" => Some("PodPortForwardOptions"),
        _ => None,
    }
}

/// The connect options' kind when `admission` is a CONNECT of a pod subresource.
pub(crate) fn options_kind(admission: &Admission<'_>) -> Option<&'static str> {
    (admission.operation == Operation::Connect)
        .then(|| kind_of(&admission.ctx.info.subresource))
        .flatten()
}

/// The options object as upstream decodes it from the query: booleans and the container as
/// given (false and empty left out, as their `omitempty` tags do), `command` and `ports` as
/// lists in query order.
fn options(kind: &str, raw_query: &str) -> Value {
    let mut object = Map::new();
    object.insert("kind".into(), json!(kind));
    object.insert("apiVersion".into(), json!("v1"));
    let mut command = Vec::new();
    let mut ports = Vec::new();
    for (key, value) in url::form_urlencoded::parse(raw_query.as_bytes()) {
        match (kind, key.as_ref()) {
            (_, "stdin" | "stdout" | "stderr" | "tty")
                if kind != "PodPortForwardOptions" && (value == "true" || value == "1") =>
            {
                object.insert(key.into_owned(), json!(true));
            }
            (_, "container") if kind != "PodPortForwardOptions" && !value.is_empty() => {
                object.insert("container".into(), json!(value));
            }
            ("PodExecOptions", "command") => command.push(json!(value)),
            ("PodPortForwardOptions", "ports") => {
                for port in value
                    .split(',')
                    .filter_map(|p| p.trim().parse::<i32>().ok())
                {
                    ports.push(json!(port));
                }
            }
            _ => {}
        }
    }
    if !command.is_empty() {
        object.insert("command".into(), Value::Array(command));
    }
    if !ports.is_empty() {
        object.insert("ports".into(), Value::Array(ports));
    }
    Value::Object(object)
}

/// Runs the admission chain for a CONNECT of pod `info.name`; `Ok` lets the stream open.
pub(crate) async fn admit(
    api: &Api,
    user: &vkube_auth::UserInfo,
    info: &RequestInfo,
    q: &std::collections::HashMap<String, String>,
    raw_query: &str,
) -> Result<(), Status> {
    let Some(kind) = kind_of(&info.subresource) else {
        return Ok(());
    };
    let Some(pods) = vkube_api::registry::find("", "v1", "pods") else {
        return Ok(());
    };
    let ctx = Ctx::new(api, user, info, pods, q, "");
    let admission = Admission::new(&ctx, Operation::Connect, false);
    let mut object = options(kind, raw_query);
    admission.mutate(Some(&mut object), None).await?;
    admission.validate(Some(&object), None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_options_are_read_from_the_query_as_upstream_decodes_them() {
        assert_eq!(
            options(
                "PodExecOptions",
                "command=sh&command=-c&command=echo+hi&container=c1&stdin=true&stdout=true&tty=false"
            ),
            json!({"kind": "PodExecOptions", "apiVersion": "v1", "stdin": true, "stdout": true,
                   "container": "c1", "command": ["sh", "-c", "echo hi"]})
        );
        assert_eq!(
            options(
                "PodAttachOptions",
                "container=container1&stdin=true&stdout=true&stderr=true"
            ),
            json!({"kind": "PodAttachOptions", "apiVersion": "v1", "stdin": true, "stdout": true,
                   "stderr": true, "container": "container1"})
        );
        assert_eq!(
            options("PodPortForwardOptions", "ports=8080,9090&ports=53"),
            json!({"kind": "PodPortForwardOptions", "apiVersion": "v1", "ports": [8080, 9090, 53]})
        );
        assert_eq!(kind_of("log"), None);
    }
}
