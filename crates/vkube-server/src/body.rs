//! A request's body and write options as upstream decodes and validates them before any
//! handler: JSON within the depth limit ([`crate::filters::limits`]), objects where a Go type is
//! a struct, and `dryRun`.

use bytes::Bytes;
use serde_json::Value;
use vkube_api::Status;

/// A JSON body: 400 for bad JSON or JSON nested too deeply.
pub(crate) fn parse_body(body: &Bytes) -> Result<Value, Status> {
    let bad = |e: &dyn std::fmt::Display| {
        Status::bad_request(format!(
            "the body of the request could not be decoded as JSON: {e}"
        ))
    };
    crate::filters::limits::check_json_depth(body).map_err(|e| bad(&e))?;
    serde_json::from_slice(body).map_err(|e| bad(&e))
}

/// A body that must be one object with object (or absent) `metadata`, `spec` and `status` (a
/// review, a TokenRequest, a Binding, an Eviction, a Scale), as their Go types are: anything
/// else is a 400, where the handlers' writes into it would have panicked.
pub(crate) fn parse_object(body: &Bytes) -> Result<Value, Status> {
    let value = parse_body(body)?;
    let kind_of = |v: &Value| match v {
        Value::Object(_) => None,
        Value::Array(_) => Some("array"),
        Value::String(_) => Some("string"),
        Value::Number(_) => Some("number"),
        Value::Bool(_) => Some("bool"),
        Value::Null => Some("null"),
    };
    let refuse = |what: &str, into: &str| {
        Err(Status::bad_request(format!(
            "the body of the request could not be decoded as JSON: cannot unmarshal {what} into {into}"
        )))
    };
    if let Some(what) = kind_of(&value) {
        return refuse(what, "an object");
    }
    for field in ["metadata", "spec", "status"] {
        if let Some(what) = value.get(field).filter(|v| !v.is_null()).and_then(kind_of) {
            return refuse(what, &format!("the object's {field}"));
        }
    }
    Ok(value)
}

/// `dryRun` as upstream validates a write's options: `All`, or absent. Anything else (`Some`, an
/// empty value) is refused with upstream's 422, never taken for a real write.
pub(crate) fn check_dry_run(verb: &str, dry_run: Option<&str>) -> Result<(), Status> {
    let kind = match verb {
        "create" => "CreateOptions",
        "update" => "UpdateOptions",
        "patch" => "PatchOptions",
        "delete" | "deletecollection" => "DeleteOptions",
        _ => return Ok(()),
    };
    match dry_run {
        None | Some("All") => Ok(()),
        Some(other) => Err(Status::invalid(
            kind,
            "meta.k8s.io",
            "",
            vec![vkube_api::status::Cause {
                reason: "FieldValueNotSupported".into(),
                message: format!(
                    "Unsupported value: []string{{{other:?}}}: supported values: \"All\""
                ),
                field: "dryRun".into(),
            }],
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dry_run_other_than_all_is_upstreams_422() {
        assert!(check_dry_run("create", None).is_ok());
        assert!(check_dry_run("patch", Some("All")).is_ok());
        assert!(
            check_dry_run("get", Some("x")).is_ok(),
            "reads have no options to check"
        );
        for (verb, kind) in [
            ("create", "CreateOptions"),
            ("update", "UpdateOptions"),
            ("patch", "PatchOptions"),
            ("delete", "DeleteOptions"),
            ("deletecollection", "DeleteOptions"),
        ] {
            let err = check_dry_run(verb, Some("Some")).unwrap_err();
            assert_eq!((err.code, err.reason), (422, "Invalid"));
            assert_eq!(
                err.message,
                format!(
                    "{kind}.meta.k8s.io \"\" is invalid: dryRun: Unsupported value: []string{{\"Some\"}}: supported values: \"All\""
                )
            );
        }
        assert!(
            check_dry_run("delete", Some("")).is_err(),
            "an empty dryRun is no real write"
        );
    }

    #[test]
    fn an_object_body_must_be_an_object_all_the_way_to_its_spec() {
        let parse = |s: &str| parse_object(&Bytes::copy_from_slice(s.as_bytes()));
        assert!(parse(r#"{"spec": {"token": "x"}, "metadata": null}"#).is_ok());
        for bad in [
            "[]",
            "\"x\"",
            "1",
            "true",
            "null",
            r#"{"metadata": []}"#,
            r#"{"spec": "x"}"#,
            r#"{"status": 1}"#,
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err.code, 400, "{bad}");
            assert!(
                err.message.starts_with(
                    "the body of the request could not be decoded as JSON: cannot unmarshal"
                ),
                "{}",
                err.message
            );
        }
    }
}
