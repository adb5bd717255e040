//! The patch formats: JSON patch (RFC 6902), merge patch (RFC 7386), and strategic merge patch
//! where it means what a merge patch means (no lists, no directives). The rest of strategic merge
//! and server-side apply are refused with 415 until they are built.

use bytes::Bytes;
use serde_json::Value;
use vkube_api::Status;

use crate::rest::parse_body;

/// The object a patch makes of `old`.
pub(crate) fn apply(old: &Value, body: &Bytes, content_type: &str) -> Result<Value, Status> {
    let media = content_type.split(';').next().unwrap_or("").trim();
    let patch = parse_body(body)?;
    let mut doc = old.clone();
    match media {
        "application/merge-patch+json" => json_patch::merge(&mut doc, &patch),
        "application/json-patch+json" => {
            let ops: json_patch::Patch = serde_json::from_value(patch)
                .map_err(|e| Status::bad_request(format!("the JSON patch is invalid: {e}")))?;
            json_patch::patch(&mut doc, &ops).map_err(|e| {
                Status::unprocessable(format!(
                    "the server rejected our request due to an error in our request: {e}"
                ))
            })?;
        }
        "application/strategic-merge-patch+json" => {
            // Without lists or directives a strategic merge patch means what a merge patch means.
            if has_list_or_directive(&patch) {
                return Err(Status::unsupported(
                    "strategic merge patches with lists or $-directives are not supported yet; use a merge patch (kubectl --type=merge) or a JSON patch (--type=json)",
                ));
            }
            json_patch::merge(&mut doc, &patch);
        }
        "application/apply-patch+yaml" => {
            return Err(Status::unsupported(
                "server-side apply is not supported yet; use client-side kubectl apply",
            ));
        }
        other => return Err(Status::unsupported_media_type(other)),
    }
    Ok(doc)
}

fn has_list_or_directive(v: &Value) -> bool {
    match v {
        Value::Array(_) => true,
        Value::Object(m) => m
            .iter()
            .any(|(k, v)| k.starts_with('$') || has_list_or_directive(v)),
        _ => false,
    }
}
