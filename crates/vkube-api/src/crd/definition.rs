//! Validation of a CustomResourceDefinition itself on create and update, as apiextensions'
//! `ValidateCustomResourceDefinition(Update)`, with upstream's paths and messages. Upstream
//! validates the internal version, into which a v1 CRD whose versions all carry the same schema
//! (subresources, printer columns) is converted with that schema lifted to the top level: the
//! paths then read `spec.validation.openAPIV3Schema…` (`spec.subresources…`,
//! `spec.additionalPrinterColumns…`), as kubectl shows them, else `spec.versions[i].schema…`.
//!
//! The caller applies the v1 defaults first (singular, listKind, conversion strategy) and, on
//! update, [`prepare_for_update`] (status.storedVersions as upstream's strategy sets it). Not covered: default values'
//! validation against their schema, CEL cost estimates, deprecationWarning's character classes,
//! and the DER of a conversion webhook's caBundle (its PEM blocks are checked).

use serde_json::{Value, json};

use super::definition_schema::{self as sch, Ctx};
use super::gofmt;
use super::schema::Schema;
use crate::object::{NameRule, invalid_name};
use crate::validation::Errors;

/// Validates `crd` (with `old`, the stored object, on an update).
pub fn validate(crd: &Value, old: Option<&Value>) -> Errors {
    let mut e = Errors::default();
    let spec = &crd["spec"];
    let group = s(spec, "group");
    let plural = s(&spec["names"], "plural");
    if old.is_none() {
        metadata_name(crd, plural, group, &mut e);
    }
    spec_checks(spec, old, &mut e);
    names(&spec["names"], "spec.names", &mut e);
    names(
        &crd["status"]["acceptedNames"],
        "status.acceptedNames",
        &mut e,
    );
    api_approval(crd, group, &mut e);
    if let Some(old) = old {
        let old_spec = &old["spec"];
        let established = old["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Established" && c["status"] == "True");
        if established {
            immutable(&spec["scope"], &old_spec["scope"], "spec.scope", &mut e);
            let (k, ok) = (&spec["names"]["kind"], &old_spec["names"]["kind"]);
            immutable(k, ok, "spec.names.kind", &mut e);
        }
        immutable(&spec["group"], &old_spec["group"], "spec.group", &mut e);
        let (p, op) = (&spec["names"]["plural"], &old_spec["names"]["plural"]);
        immutable(p, op, "spec.names.plural", &mut e);
        stored_versions(crd, &mut e);
    }
    e
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_default()
}

fn dns1035(v: &str) -> Option<String> {
    invalid_name(NameRule::Dns1035, v)
}

fn metadata_name(crd: &Value, plural: &str, group: &str, e: &mut Errors) {
    let name = &crd["metadata"]["name"];
    let text = name.as_str().unwrap_or_default();
    if text.is_empty() {
        e.required("metadata.name", "name or generateName is required");
        return;
    }
    if let Some(why) = invalid_name(NameRule::Subdomain, text) {
        e.invalid("metadata.name", name, &why);
    }
    if text != format!("{plural}.{group}") {
        e.invalid(
            "metadata.name",
            name,
            "must be spec.names.plural+\".\"+spec.group",
        );
    }
}

fn immutable(new: &Value, old: &Value, path: &str, e: &mut Errors) {
    if new != old {
        e.invalid(path, new, "field is immutable");
    }
}

/// A Go slice of versions as `%#v` would start printing it (the struct dump itself is elided).
fn versions_value(versions: &[Value]) -> String {
    let names: Vec<String> = versions
        .iter()
        .map(|v| format!("{{Name:{}}}", gofmt::quote(s(v, "name"))))
        .collect();
    format!(
        "[]apiextensions.CustomResourceDefinitionVersion{{{}}}",
        names.join(", ")
    )
}

/// Whether every version sets `key` to the same non-empty value (then upstream lifts it).
fn lifted<'a>(versions: &'a [Value], key: &str) -> Option<&'a Value> {
    let first = versions.first()?.get(key)?;
    let empty = first.is_null() || first.as_array().is_some_and(Vec::is_empty);
    (!empty && versions.iter().all(|v| v.get(key) == Some(first))).then_some(first)
}

fn spec_checks(spec: &Value, old: Option<&Value>, e: &mut Errors) {
    let group = s(spec, "group");
    if group.is_empty() {
        e.required("spec.group", "");
    } else if let Some(why) = invalid_name(NameRule::Subdomain, group) {
        e.invalid("spec.group", &spec["group"], &why);
    } else if !group.contains('.') {
        e.invalid(
            "spec.group",
            &spec["group"],
            "should be a domain with at least one dot",
        );
    }
    match s(spec, "scope") {
        "" => e.required("spec.scope", ""),
        "Cluster" | "Namespaced" => {}
        _ => e.not_supported("spec.scope", &spec["scope"], &["Cluster", "Namespaced"]),
    }
    if spec["preserveUnknownFields"] == Value::Bool(true) {
        e.invalid(
            "spec.preserveUnknownFields",
            &Value::Bool(true),
            "cannot set to true, set x-kubernetes-preserve-unknown-fields to true in spec.versions[*].schema instead",
        );
    }
    let versions: Vec<Value> = spec["versions"].as_array().cloned().unwrap_or_default();
    let top_schema = lifted(&versions, "schema");
    let top_sub = lifted(&versions, "subresources");
    let top_cols = lifted(&versions, "additionalPrinterColumns");
    if top_schema.is_none() {
        for (i, v) in versions.iter().enumerate() {
            if v["schema"]["openAPIV3Schema"].is_null() {
                e.required(
                    &format!("spec.versions[{i}].schema.openAPIV3Schema"),
                    "schemas are required",
                );
            }
        }
    }
    let mut storage = 0;
    let mut seen: Vec<&str> = Vec::new();
    let mut unique = true;
    for (i, v) in versions.iter().enumerate() {
        let path = format!("spec.versions[{i}]");
        if v["storage"] == Value::Bool(true) {
            storage += 1;
        }
        let name = s(v, "name");
        if seen.contains(&name) {
            unique = false;
        }
        seen.push(name);
        if let Some(why) = dns1035(name) {
            e.invalid(&format!("{path}.name"), &v["name"], &why);
        }
        deprecation(v, &path, e);
        let sub = if top_sub.is_some() {
            top_sub
        } else {
            v.get("subresources")
        };
        let status = sub.is_some_and(|x| !x["status"].is_null());
        if top_schema.is_none() {
            schema(&v["schema"], &format!("{path}.schema"), status, e);
        }
        if top_sub.is_none() {
            subresources(&v["subresources"], &format!("{path}.subresources"), e);
        }
        if top_cols.is_none() {
            columns(
                &v["additionalPrinterColumns"],
                &format!("{path}.additionalPrinterColumns"),
                e,
            );
        }
        selectable_fields(v, &path, e);
    }
    let list = versions_value(&versions);
    if !unique {
        e.push_raw_invalid("spec.versions", &list, "must contain unique version names");
    }
    if storage != 1 {
        e.push_raw_invalid(
            "spec.versions",
            &list,
            "must have exactly one version marked as storage version",
        );
    }
    let names = &spec["names"];
    for (key, path) in [
        ("plural", "spec.names.plural"),
        ("singular", "spec.names.singular"),
        ("kind", "spec.names.kind"),
        ("listKind", "spec.names.listKind"),
    ] {
        if s(names, key).is_empty() {
            e.required(path, "");
        }
    }
    if let Some(top) = top_schema {
        let status = top_sub.is_some_and(|x| !x["status"].is_null())
            || versions
                .iter()
                .any(|v| !v["subresources"]["status"].is_null());
        schema(top, "spec.validation", status, e);
    }
    if let Some(sub) = top_sub {
        subresources(sub, "spec.subresources", e);
    }
    if let Some(cols) = top_cols {
        columns(cols, "spec.additionalPrinterColumns", e);
    }
    conversion(spec, old, e);
}

fn deprecation(v: &Value, path: &str, e: &mut Errors) {
    let Some(w) = v["deprecationWarning"].as_str() else {
        return;
    };
    let at = format!("{path}.deprecationWarning");
    let value = &v["deprecationWarning"];
    if v["deprecated"] != Value::Bool(true) {
        e.invalid(&at, value, "can only be set for deprecated versions");
        return;
    }
    if w.len() > 256 {
        e.invalid(&at, value, "must be <= 256 characters long");
    }
    if w.is_empty() {
        e.invalid(&at, value, "must not be an empty string");
    }
    if let Some((i, _)) = w.char_indices().find(|(_, c)| c.is_control()) {
        e.invalid(
            &at,
            value,
            &format!(
                "must only contain printable UTF-8 characters; control character found at index {i}"
            ),
        );
    }
}

const ROOT_FIELDS_WITH_STATUS: [&str; 22] = [
    "description",
    "type",
    "format",
    "title",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "uniqueItems",
    "multipleOf",
    "required",
    "items",
    "properties",
    "externalDocs",
    "example",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-validations",
];

const ROOT_FIELD_NAMES: &str = "[Description Type Format Title Maximum ExclusiveMaximum Minimum ExclusiveMinimum MaxLength MinLength Pattern MaxItems MinItems UniqueItems MultipleOf Required Items Properties ExternalDocs Example XPreserveUnknownFields XValidations]";

/// `schema` is a version's `schema` (`{openAPIV3Schema: …}`), `path` its field path.
fn schema(validation: &Value, path: &str, status: bool, e: &mut Errors) {
    let Some(root) = validation.get("openAPIV3Schema").filter(|r| !r.is_null()) else {
        return;
    };
    let at = format!("{path}.openAPIV3Schema");
    let before = e.0.len();
    if status {
        if let Some(map) = root.as_object() {
            let typ = root["type"].as_str().unwrap_or_default();
            if !typ.is_empty() && typ != "object" {
                e.invalid(
                    &format!("{at}.type"),
                    &root["type"],
                    "only \"object\" is allowed as the type at the root of the schema if the status subresource is enabled",
                );
            } else if map
                .keys()
                .any(|k| !ROOT_FIELDS_WITH_STATUS.contains(&k.as_str()))
            {
                e.push_raw_invalid(
                    &at,
                    "apiextensions.JSONSchemaProps{…}",
                    &format!("only {ROOT_FIELD_NAMES} fields are allowed at the root of the schema if the status subresource is enabled"),
                );
            }
        }
    }
    if root["nullable"] == Value::Bool(true) {
        e.forbidden(
            &format!("{at}.nullable"),
            "nullable cannot be true at the root",
        );
    }
    let structural = sch::structural(root, &at);
    let structural_ok = structural.is_empty();
    for x in structural {
        e.push(x.reason, &x.field, x.message);
    }
    let mut node_errs = Errors::default();
    sch::openapi(root, &at, true, &Ctx::default(), &mut node_errs);
    let schema_ok = node_errs.0.is_empty();
    for x in node_errs.0 {
        e.push(x.reason, &x.field, x.message);
    }
    match Schema::parse(root) {
        Ok(parsed) if structural_ok && schema_ok => sch::cel_errors(&parsed, &at, e),
        Ok(_) => {}
        Err(why) if e.0.len() == before => e.push_raw_invalid(&at, "\"\"", &why),
        Err(_) => {}
    }
}

/// validateSimpleJSONPath.
fn simple_json_path(p: &str, path: &str, value: &Value, e: &mut Errors) -> bool {
    if p.is_empty() {
        e.invalid(path, value, "must not be empty");
        false
    } else if !p.starts_with('.') {
        e.invalid(path, value, "must be a simple json path starting with .");
        false
    } else {
        true
    }
}

fn subresources(sub: &Value, path: &str, e: &mut Errors) {
    let Some(scale) = sub.get("scale").filter(|x| !x.is_null()) else {
        return;
    };
    for (key, prefix, under) in [
        (
            "specReplicasPath",
            ".spec.",
            "should be a json path under .spec",
        ),
        (
            "statusReplicasPath",
            ".status.",
            "should be a json path under .status",
        ),
    ] {
        let at = format!("{path}.scale.{key}");
        let p = s(scale, key);
        if p.is_empty() {
            e.required(&at, "");
        } else if simple_json_path(p, &at, &scale[key], e) && !p.starts_with(prefix) {
            e.invalid(&at, &scale[key], under);
        }
    }
    let p = s(scale, "labelSelectorPath");
    if !p.is_empty() {
        let at = format!("{path}.scale.labelSelectorPath");
        if simple_json_path(p, &at, &scale["labelSelectorPath"], e)
            && !p.starts_with(".spec.")
            && !p.starts_with(".status.")
        {
            e.invalid(
                &at,
                &scale["labelSelectorPath"],
                "should be a json path under either .spec or .status",
            );
        }
    }
}

fn columns(cols: &Value, path: &str, e: &mut Errors) {
    const TYPES: &str = "boolean,date,integer,number,string";
    const FORMATS: &str = "byte,date,date-time,double,float,int32,int64,password";
    for (i, col) in cols.as_array().into_iter().flatten().enumerate() {
        let at = format!("{path}[{i}]");
        if s(col, "name").is_empty() {
            e.required(&format!("{at}.name"), "");
        }
        let typ = s(col, "type");
        if typ.is_empty() {
            e.required(&format!("{at}.type"), &format!("must be one of {TYPES}"));
        } else if !TYPES.split(',').any(|t| t == typ) {
            e.invalid(
                &format!("{at}.type"),
                &col["type"],
                &format!("must be one of {TYPES}"),
            );
        }
        let format = s(col, "format");
        if !format.is_empty() && !FORMATS.split(',').any(|f| f == format) {
            e.invalid(
                &format!("{at}.format"),
                &col["format"],
                &format!("must be one of {FORMATS}"),
            );
        }
        let jp = s(col, "jsonPath");
        let jp_path = format!("{at}.JSONPath");
        if jp.is_empty() {
            e.required(&jp_path, "");
        } else {
            simple_json_path(jp, &jp_path, &col["jsonPath"], e);
        }
    }
}

fn selectable_fields(version: &Value, path: &str, e: &mut Errors) {
    let Some(fields) = version["selectableFields"]
        .as_array()
        .filter(|f| !f.is_empty())
    else {
        return;
    };
    let at = format!("{path}.selectableFields");
    let Some(root) = version["schema"]
        .get("openAPIV3Schema")
        .filter(|r| !r.is_null())
    else {
        e.push_raw_invalid(
            &at,
            "\"\"",
            "selectableFields may only be set when version.schema.openAPIV3Schema is not included",
        );
        return;
    };
    let Ok(parsed) = Schema::parse(root) else {
        return;
    };
    let mut unique: Vec<String> = Vec::new();
    for (i, f) in fields.iter().enumerate() {
        let fp = format!("{at}[{i}].jsonPath");
        let jp = s(f, "jsonPath");
        if jp.is_empty() {
            e.required(&fp, "");
            continue;
        }
        let value = &f["jsonPath"];
        if jp.contains('[') {
            e.invalid(
                &fp,
                value,
                "is an invalid path: array notation is not allowed",
            );
            continue;
        }
        let (path_str, found) = match super::rules::field_path(&parsed, jp) {
            Ok(p) => {
                let mut node = &parsed;
                for part in p.split('.') {
                    node = &node.properties[part];
                }
                (p, node)
            }
            Err(why) => {
                e.invalid(&fp, value, &format!("is an invalid path: {why}"));
                continue;
            }
        };
        if path_str.split('.').next() == Some("metadata") {
            e.invalid(&fp, value, "must not point to fields in metadata");
        }
        if !["string", "boolean", "integer"].contains(&found.type_.as_str()) {
            e.invalid(
                &fp,
                value,
                "must point to a field of type string, boolean or integer. Enum string fields and strings with formats are allowed.",
            );
        }
        if unique.contains(&path_str) {
            e.duplicate(&fp, value);
        } else {
            unique.push(path_str);
        }
    }
    if unique.len() > 8 {
        e.push(
            "FieldValueTooMany",
            &at,
            format!("Too many: {}: must have at most 8 items", unique.len()),
        );
    }
}

/// validateCustomResourceConversion, on the internal form v1's `webhook` converts into
/// (`webhookClientConfig`, `conversionReviewVersions`), whose paths upstream's messages carry.
fn conversion(spec: &Value, old: Option<&Value>, e: &mut Errors) {
    let conv = &spec["conversion"];
    if conv.is_null() {
        return;
    }
    let strategy = s(conv, "strategy");
    if !strategy.is_empty() && strategy != "None" && spec["preserveUnknownFields"] == true {
        e.invalid(
            "spec.conversion.strategy",
            &conv["strategy"],
            "must be None if spec.preserveUnknownFields is true",
        );
    }
    let client = match &conv["webhook"]["clientConfig"] {
        Value::Null => &conv["webhookClientConfig"],
        c => c,
    };
    let versions = match &conv["webhook"]["conversionReviewVersions"] {
        Value::Null => &conv["conversionReviewVersions"],
        v => v,
    };
    match strategy {
        "" => e.required("spec.conversion.strategy", ""),
        "None" | "Webhook" => {}
        _ => e.not_supported(
            "spec.conversion.strategy",
            &conv["strategy"],
            &["None", "Webhook"],
        ),
    }
    if strategy != "Webhook" {
        if !client.is_null() {
            e.forbidden(
                "spec.conversion.webhookClientConfig",
                "should not be set when strategy is not set to Webhook",
            );
        }
        if versions.as_array().is_some_and(|v| !v.is_empty()) {
            e.forbidden(
                "spec.conversion.conversionReviewVersions",
                "should not be set when strategy is not set to Webhook",
            );
        }
        return;
    }
    let at = "spec.conversion.webhookClientConfig";
    if client.is_null() {
        e.required(at, "required when strategy is set to Webhook");
    } else {
        crate::validation::webhook_client_config(client, at, e);
        let bundle = s(client, "caBundle");
        if !bundle.is_empty() && !allow_invalid_ca_bundle(old) {
            if let Some(why) = ca_bundle_problem(bundle) {
                e.push_raw_invalid(&format!("{at}.caBundle"), &go_bytes(bundle), why);
            }
        }
    }
    // On an update, a CRD whose stored list already lacks a known version may keep it so.
    let require_known = old.is_none_or(|o| {
        let old_versions = match &o["spec"]["conversion"]["webhook"]["conversionReviewVersions"] {
            Value::Null => &o["spec"]["conversion"]["conversionReviewVersions"],
            v => v,
        };
        let list = old_versions.as_array().cloned().unwrap_or_default();
        list.is_empty() || list.iter().any(|v| v == "v1" || v == "v1beta1")
    });
    review_versions(versions, require_known, e);
}

/// validateConversionReviewVersions.
fn review_versions(versions: &Value, require_known: bool, e: &mut Errors) {
    let path = "spec.conversion.conversionReviewVersions";
    let list: Vec<&str> = versions
        .as_array()
        .map(|l| l.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if list.is_empty() {
        e.required(path, "");
        return;
    }
    let mut seen: Vec<&str> = Vec::new();
    for (i, v) in list.iter().enumerate() {
        let at = format!("{path}[{i}]");
        if seen.contains(v) {
            e.invalid(&at, &Value::from(*v), "duplicate version");
            continue;
        }
        seen.push(v);
        if let Some(why) = dns1035(v) {
            e.invalid(&at, &Value::from(*v), &why);
        }
    }
    if require_known && !list.iter().any(|v| matches!(*v, "v1" | "v1beta1")) {
        let raw = format!(
            "[]string{{{}}}",
            list.iter()
                .map(|v| gofmt::quote(v))
                .collect::<Vec<_>>()
                .join(", ")
        );
        e.push_raw_invalid(path, &raw, "must include at least one of v1, v1beta1");
    }
}

/// An invalid caBundle is let through while the CRD is not established, and when the stored one
/// is invalid already (upstream's allowInvalidCABundle; a create is never established).
fn allow_invalid_ca_bundle(old: Option<&Value>) -> bool {
    let Some(old) = old else {
        return true;
    };
    if !crate::registry::custom::condition(old, "Established") {
        return true;
    }
    let conv = &old["spec"]["conversion"];
    let client = match &conv["webhook"]["clientConfig"] {
        Value::Null => &conv["webhookClientConfig"],
        c => c,
    };
    let bundle = s(client, "caBundle");
    !bundle.is_empty() && ca_bundle_problem(bundle).is_some()
}

/// What client-go's ParseCertsPEM finds wrong with a caBundle (base64 of PEM): no CERTIFICATE
/// block at all. The certificates' DER is not parsed here.
fn ca_bundle_problem(b64: &str) -> Option<&'static str> {
    use base64::Engine as _;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&pem);
    let has_cert = text
        .split("-----BEGIN CERTIFICATE-----")
        .skip(1)
        .any(|rest| rest.contains("-----END CERTIFICATE-----"));
    (!has_cert).then_some("data does not contain any valid RSA or ECDSA certificates")
}

/// A caBundle as Go's `%#v` prints a `[]byte`.
fn go_bytes(b64: &str) -> String {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap_or_default();
    let items: Vec<String> = bytes.iter().map(|b| format!("0x{b:x}")).collect();
    format!("[]byte{{{}}}", items.join(", "))
}

/// Upstream's CRD strategy on an update (PrepareForUpdate): the status is the stored one (the
/// status subresource writes it), and a storage version not yet in `status.storedVersions` joins
/// it, so switching the storage version needs no separate status write.
pub fn prepare_for_update(crd: &mut Value, old: &Value) {
    crd["status"] = old.get("status").cloned().unwrap_or_else(|| json!({}));
    let storage = crd["spec"]["versions"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["storage"] == true))
        .and_then(|v| v["name"].as_str())
        .map(str::to_string);
    let Some(storage) = storage else {
        return;
    };
    let stored = &mut crd["status"]["storedVersions"];
    match stored.as_array_mut() {
        Some(list) if list.iter().any(|v| *v == storage.as_str()) => {}
        Some(list) => list.push(json!(storage)),
        None => *stored = json!([storage]),
    }
}

/// ValidateCustomResourceDefinitionNames (spec.names and status.acceptedNames).
fn names(n: &Value, path: &str, e: &mut Errors) {
    for key in ["plural", "singular"] {
        let v = s(n, key);
        if let Some(why) = (!v.is_empty()).then(|| dns1035(v)).flatten() {
            e.invalid(&format!("{path}.{key}"), &n[key], &why);
        }
    }
    for key in ["kind", "listKind"] {
        let v = s(n, key);
        if let Some(why) = (!v.is_empty())
            .then(|| dns1035(&v.to_lowercase()))
            .flatten()
        {
            e.invalid(
                &format!("{path}.{key}"),
                &n[key],
                &format!("may have mixed case, but should otherwise match: {why}"),
            );
        }
    }
    for key in ["shortNames", "categories"] {
        for (i, x) in n[key].as_array().into_iter().flatten().enumerate() {
            if let Some(why) = dns1035(x.as_str().unwrap_or_default()) {
                e.invalid(&format!("{path}.{key}[{i}]"), x, &why);
            }
        }
    }
    let kind = s(n, "kind");
    if !kind.is_empty() && kind == s(n, "listKind") {
        e.invalid(
            &format!("{path}.listKind"),
            &n["listKind"],
            "kind and listKind may not be the same",
        );
    }
}

/// Groups under k8s.io and kubernetes.io need the API review annotation.
fn api_approval(crd: &Value, group: &str, e: &mut Errors) {
    let protected = ["k8s.io", "kubernetes.io"]
        .iter()
        .any(|d| group == *d || group.ends_with(&format!(".{d}")));
    if !protected {
        return;
    }
    let key = "api-approved.kubernetes.io";
    let field = format!("metadata.annotations[{key}]");
    match crd["metadata"]["annotations"][key].as_str() {
        None => e.required(
            &field,
            &format!("protected groups must have approval annotation {key:?}, see https://github.com/kubernetes/enhancements/pull/1111"),
        ),
        Some(v) if v.starts_with("unapproved") || v.starts_with("http://") || v.starts_with("https://") => {}
        Some(v) => e.invalid(
            &field,
            &Value::String(v.into()),
            &format!("protected groups must have approval annotation {key:?} with either a URL or a reason starting with \"unapproved\", see https://github.com/kubernetes/enhancements/pull/1111"),
        ),
    }
}

/// ValidateCustomResourceDefinitionStoredVersions.
fn stored_versions(crd: &Value, e: &mut Errors) {
    let path = "status.storedVersions";
    let stored: Vec<&str> = crd["status"]["storedVersions"]
        .as_array()
        .map(|l| l.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let raw = format!(
        "[]string{{{}}}",
        stored
            .iter()
            .map(|v| gofmt::quote(v))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if stored.is_empty() {
        e.push_raw_invalid(path, &raw, "must have at least one stored version");
        return;
    }
    let versions = crd["spec"]["versions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for v in &versions {
        if v["storage"] == Value::Bool(true) && !stored.contains(&s(v, "name")) {
            e.push_raw_invalid(
                path,
                &raw,
                &format!("must have the storage version {}", s(v, "name")),
            );
        }
    }
    for (i, name) in stored.iter().enumerate() {
        if !versions.iter().any(|v| s(v, "name") == *name) {
            e.invalid(
                &format!("{path}[{i}]"),
                &Value::String(name.to_string()),
                &format!("missing from spec.versions; {name} was previously a storage version, and must remain in spec.versions until a storage migration ensures no data remains persisted in {name} and removes {name} from status.storedVersions"),
            );
        }
    }
}

#[cfg(test)]
#[path = "definition_tests.rs"]
mod tests;
