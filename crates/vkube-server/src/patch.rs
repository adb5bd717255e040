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
            // Without the crate's rollback: `doc` is a copy thrown away on failure, and undoing
            // can itself fail (a `move` of the root), which the crate answers with a panic.
            json_patch::patch_unsafe(&mut doc, &ops).map_err(|e| {
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

#[cfg(test)]
mod tests {
    //! Property tests (issue 17, hostile input): whatever the body and media type, a patch is
    //! answered with an object or a Status, never a panic; a merge patch is RFC 7386's, so
    //! applying it twice is applying it once. Cases: `PROPTEST_CASES` (default 256).

    use proptest::prelude::*;
    use serde_json::{Map, json};

    use super::*;

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(|n| json!(n)),
            "[a-z/~0-9-]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 40, 5, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(
                    prop_oneof![
                        "[a-c]{1,2}",
                        Just("op".to_string()),
                        Just("path".to_string()),
                        Just("value".to_string()),
                        Just("from".to_string()),
                        Just("$patch".to_string()),
                        Just("spec".to_string()),
                        Just("containers".to_string()),
                    ],
                    inner,
                    0..4
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// JSON patch operations that point into the document often enough to apply.
    fn json_patch_ops() -> impl Strategy<Value = Value> {
        let path = "(/(a|b|c|spec|containers|0|1|-|~0|~1)){0,3}";
        let op = (
            prop_oneof![
                Just("add"),
                Just("remove"),
                Just("replace"),
                Just("move"),
                Just("copy"),
                Just("test"),
                Just("bogus"),
            ],
            path,
            path,
            json_value(),
        )
            .prop_map(|(op, path, from, value)| {
                json!({"op": op, "path": path, "from": from, "value": value})
            });
        proptest::collection::vec(op, 0..4).prop_map(Value::Array)
    }

    fn media() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("application/merge-patch+json".to_string()),
            Just("application/json-patch+json".to_string()),
            Just("application/strategic-merge-patch+json; charset=utf-8".to_string()),
            Just("application/apply-patch+yaml".to_string()),
            any::<String>(),
        ]
    }

    fn object() -> impl Strategy<Value = Value> {
        (
            prop_oneof![Just("Pod"), Just("ConfigMap"), Just("Widget")],
            json_value(),
        )
            .prop_map(|(kind, spec)| {
                json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": "x"},
                       "spec": spec})
            })
    }

    /// RFC 7386.
    fn merge_patch(target: &Value, patch: &Value) -> Value {
        let Value::Object(patch) = patch else {
            return patch.clone();
        };
        let mut out = match target {
            Value::Object(t) => t.clone(),
            _ => Map::new(),
        };
        for (k, v) in patch {
            if v.is_null() {
                out.remove(k);
            } else {
                let merged = merge_patch(out.get(k).unwrap_or(&Value::Null), v);
                out.insert(k.clone(), merged);
            }
        }
        Value::Object(out)
    }

    /// Found by the property tests: a patch whose later operation fails after a `move` of the
    /// root panicked in json-patch's rollback (a 500 from panic recovery); upstream answers 422.
    #[test]
    fn a_failing_json_patch_after_a_move_of_the_root_is_refused() {
        let old = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
                         "spec": null});
        let ops = json!([{"op": "move", "from": "/spec", "path": ""},
                         {"op": "add", "path": "/a", "value": null}]);
        let body = Bytes::from(ops.to_string());
        let status = apply(&old, &body, "application/json-patch+json").unwrap_err();
        assert_eq!(status.code, 422, "{}", status.message);
    }

    proptest! {
        #[test]
        fn any_body_and_media_type_is_answered(
            old in object(),
            body in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..64),
                json_value().prop_map(|v| v.to_string().into_bytes()),
                json_patch_ops().prop_map(|v| v.to_string().into_bytes()),
            ],
            media in media(),
        ) {
            let _ = apply(&old, &Bytes::from(body), &media);
        }

        #[test]
        fn json_patches_apply_or_are_refused(old in object(), ops in json_patch_ops()) {
            let body = Bytes::from(ops.to_string());
            if let Err(status) = apply(&old, &body, "application/json-patch+json") {
                prop_assert!(matches!(status.code, 400 | 422), "{}", status.message);
            }
        }

        #[test]
        fn a_merge_patch_is_rfc_7386_and_applied_twice_is_applied_once(
            old in object(),
            patch in json_value(),
        ) {
            let body = Bytes::from(patch.to_string());
            let media = "application/merge-patch+json";
            let once = apply(&old, &body, media).unwrap();
            prop_assert_eq!(&once, &merge_patch(&old, &patch));
            let twice = apply(&once, &body, media).unwrap();
            prop_assert_eq!(twice, once);
        }
    }
}
