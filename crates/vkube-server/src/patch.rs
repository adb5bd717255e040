//! The patch formats: JSON patch (RFC 6902), merge patch (RFC 7386) and strategic merge patch
//! (`vkube_api::strategic`, built-in kinds). Server-side apply is `crate::apply`'s.

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
            let api_version = old["apiVersion"].as_str().unwrap_or_default();
            let kind = old["kind"].as_str().unwrap_or_default();
            doc = vkube_api::strategic::apply(old, &patch, api_version, kind).map_err(
                |e| match e {
                    // Upstream accepts no strategic merge patch for custom resources.
                    vkube_api::strategic::PatchError::UnknownKind(_) => {
                        Status::unsupported_patch(media)
                    }
                    vkube_api::strategic::PatchError::Invalid(why) => {
                        Status::unprocessable(format!(
                            "the server rejected our request due to an error in our request: {why}"
                        ))
                    }
                },
            )?;
        }
        other => return Err(Status::unsupported_media_type(other)),
    }
    Ok(doc)
}
