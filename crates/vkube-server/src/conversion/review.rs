//! The ConversionReview exchange without the network: the request a batch of objects makes, and
//! upstream's checks on the answer (webhook_converter.go), with its messages word for word.

use serde_json::{Map, Value, json};

/// What the converted objects are checked against and how errors name the conversion.
pub struct Batch<'a> {
    /// The objects sent, as stored (with their resourceVersion).
    pub objects: &'a [Value],
    /// The apiVersion asked for.
    pub desired: &'a str,
    /// `group/version, Kind=…` as upstream's `%v` of the converted thing's GroupVersionKind.
    pub gvk: String,
    /// One object (a get, a write) or a list: upstream's messages differ.
    pub list: bool,
}

/// Go's `GroupVersionKind.String()` of an apiVersion and a kind.
pub fn gvk(api_version: &str, kind: &str) -> String {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    format!("{group}/{version}, Kind={kind}")
}

/// The ConversionReview sent, in `version` (`v1` or `v1beta1`). Objects go without their
/// resourceVersion, as upstream converts what it decodes from (or encodes for) the store.
pub fn request(version: &str, uid: &str, desired: &str, objects: &[Value]) -> Value {
    let objects: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut o = o.clone();
            if let Some(meta) = o["metadata"].as_object_mut() {
                meta.remove("resourceVersion");
            }
            o
        })
        .collect();
    json!({
        "kind": "ConversionReview",
        "apiVersion": format!("apiextensions.k8s.io/{version}"),
        "request": {"uid": uid, "desiredAPIVersion": desired, "objects": objects},
        "response": {"uid": "", "convertedObjects": null, "result": {"metadata": {}}},
    })
}

/// getConvertedObjectsFromResponse: the converted objects, or why the answer is unusable.
pub fn converted_objects(version: &str, uid: &str, answer: &Value) -> Result<Vec<Value>, String> {
    if version == "v1" {
        let (av, kind) = (
            answer["apiVersion"].as_str().unwrap_or_default(),
            answer["kind"].as_str().unwrap_or_default(),
        );
        if av != "apiextensions.k8s.io/v1" || kind != "ConversionReview" {
            return Err(format!(
                "expected webhook response of apiextensions.k8s.io/v1, Kind=ConversionReview, got {}",
                gvk(av, kind)
            ));
        }
    }
    let response = &answer["response"];
    if !response.is_object() {
        return Err("no response provided".into());
    }
    // v1beta1 answers were never checked for their uid; upstream keeps it so.
    let got = response["uid"].as_str().unwrap_or_default();
    if version == "v1" && got != uid {
        return Err(format!("expected response.uid={uid:?}, got {got:?}"));
    }
    let status = response["result"]["status"].as_str().unwrap_or_default();
    if status != "Success" {
        return Err(match response["result"]["message"].as_str() {
            Some(m) if !m.is_empty() => m.to_string(),
            _ => format!("response.result.status was '{status}', not 'Success'"),
        });
    }
    Ok(response["convertedObjects"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

/// Checks each converted object against the one sent and gives it the sent object's metadata
/// but for labels and annotations (validateConvertedObject, restoreObjectMeta).
pub fn accept(batch: &Batch<'_>, converted: Vec<Value>) -> Result<Vec<Value>, String> {
    let gvk = &batch.gvk;
    if converted.len() != batch.objects.len() {
        return Err(format!(
            "conversion webhook for {gvk} returned {} objects, expected {}",
            converted.len(),
            batch.objects.len()
        ));
    }
    let mut out = Vec::with_capacity(converted.len());
    for (i, (original, mut object)) in batch.objects.iter().zip(converted).enumerate() {
        // Upstream's list loop names the index before it counts the object, then after.
        let (at, at_next) = if batch.list {
            (
                format!("returned invalid converted object at index {i}: "),
                format!("returned invalid converted object at index {}: ", i + 1),
            )
        } else {
            (String::new(), "returned invalid object at index 0: ".into())
        };
        let kind = object["kind"].as_str().unwrap_or_default();
        if kind.is_empty() {
            let why = format!("Object 'Kind' is missing in '{object}'");
            // A single object's undecodable answer is returned bare.
            return Err(if batch.list {
                format!("conversion webhook for {gvk} {at}{why}")
            } else {
                why
            });
        }
        let got = object["apiVersion"].as_str().unwrap_or_default();
        if got != batch.desired {
            return Err(format!(
                "conversion webhook for {gvk} {at_next}invalid groupVersion (expected {}, received {got})",
                batch.desired
            ));
        }
        let want_kind = original["kind"].as_str().unwrap_or_default();
        if kind != want_kind {
            return Err(format!(
                "conversion webhook for {gvk} {at_next}invalid kind (expected {want_kind}, received {kind})"
            ));
        }
        let invalid = if batch.list {
            format!("returned invalid converted object at index {}", i + 1)
        } else {
            "returned invalid object".into()
        };
        same_identity(original, &object)
            .map_err(|e| format!("conversion webhook for {gvk} {invalid}: {e}"))?;
        let where_ = if batch.list {
            format!("returned invalid metadata in object at index {}", i + 1)
        } else {
            "returned invalid metadata".into()
        };
        restore_meta(original, &mut object)
            .map_err(|e| format!("conversion webhook for {gvk} {where_}: {e}"))?;
        out.push(object);
    }
    Ok(out)
}

/// validateConvertedObject: kind, name, namespace and uid stay.
fn same_identity(sent: &Value, got: &Value) -> Result<(), String> {
    let field = |o: &Value, path: &str| -> String {
        o.pointer(path)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    for (what, path) in [
        ("kind", "/kind"),
        ("name", "/metadata/name"),
        ("namespace", "/metadata/namespace"),
        ("UID", "/metadata/uid"),
    ] {
        let (e, a) = (field(sent, path), field(got, path));
        if e != a {
            return Err(format!("must have the same {what}: {e} != {a}"));
        }
    }
    Ok(())
}

/// The Go type name an unstructured value has, as `%T` prints it.
fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_i64() || n.is_u64() => "int64",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

/// restoreObjectMeta: the sent metadata, with the labels and annotations the webhook returned
/// (validated when they changed).
fn restore_meta(original: &Value, converted: &mut Value) -> Result<(), String> {
    let Some(returned) = converted.get("metadata") else {
        return Err("missing metadata in converted object".into());
    };
    let Some(returned) = returned.as_object().cloned() else {
        return Err(format!(
            "invalid metadata of type {} in converted object",
            go_type(returned)
        ));
    };
    let mut meta: Map<String, Value> = original["metadata"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for field in ["labels", "annotations"] {
        let Some(value) = returned.get(field).filter(|v| !v.is_null()) else {
            meta.remove(field);
            continue;
        };
        let Some(map) = value.as_object() else {
            return Err(format!(
                "invalid metadata.{field} of type {} in converted object",
                go_type(value)
            ));
        };
        if let Some((k, v)) = map.iter().find(|(_, v)| !v.is_string()) {
            return Err(format!(
                "metadata.{field}[{k}] must be a string, but is {} in converted object",
                go_type(v)
            ));
        }
        if meta.get(field) != Some(value) {
            check_strings(field, value)?;
        }
        meta.insert(field.into(), value.clone());
    }
    converted["metadata"] = Value::Object(meta);
    Ok(())
}

/// ValidateLabels / ValidateAnnotations as an aggregate error (upstream's annotation path is
/// `metadata.annotation`).
fn check_strings(field: &str, value: &Value) -> Result<(), String> {
    let mut errs = vkube_api::validation::Errors::default();
    vkube_api::validation::metadata(&json!({ field: value }), "metadata", &mut errs);
    let shown: Vec<String> = errs
        .0
        .iter()
        .map(|e| {
            let at = if e.field == "metadata.annotations" {
                "metadata.annotation"
            } else {
                &e.field
            };
            format!("{at}: {}", e.message)
        })
        .collect();
    match shown.len() {
        0 => Ok(()),
        1 => Err(shown[0].clone()),
        _ => Err(format!("[{}]", shown.join(", "))),
    }
}
