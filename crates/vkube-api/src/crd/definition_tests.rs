//! CRD validation: upstream's paths and messages for the mistakes people make.

use serde_json::{Value, json};

use super::validate;

fn crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {"replicas": {"type": "integer"}}},
                    "status": {"type": "object", "properties": {"replicas": {"type": "integer"}}}
                }}},
                "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}},
                "additionalPrinterColumns": [{"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"}]
            }]
        }
    })
}

fn errs(c: &Value, old: Option<&Value>) -> Vec<(String, String, String)> {
    validate(c, old)
        .0
        .into_iter()
        .map(|e| (e.reason.to_string(), e.field, e.message))
        .collect()
}

fn t(r: &str, f: &str, m: &str) -> (String, String, String) {
    (r.into(), f.into(), m.into())
}

#[test]
fn a_well_formed_crd_passes() {
    assert_eq!(errs(&crd(), None), []);
}

#[test]
fn name_group_scope_and_names() {
    let mut c = crd();
    c["metadata"]["name"] = json!("gadgets.example.com");
    c["spec"]["group"] = json!("example");
    c["spec"]["scope"] = json!("Global");
    c["spec"]["names"]["kind"] = json!("WidgetList");
    c["spec"]["names"]["singular"] = json!("Widget");
    assert_eq!(
        errs(&c, None),
        [
            t(
                "FieldValueInvalid",
                "metadata.name",
                "Invalid value: \"gadgets.example.com\": must be spec.names.plural+\".\"+spec.group"
            ),
            t(
                "FieldValueInvalid",
                "spec.group",
                "Invalid value: \"example\": should be a domain with at least one dot"
            ),
            t(
                "FieldValueNotSupported",
                "spec.scope",
                "Unsupported value: \"Global\": supported values: \"Cluster\", \"Namespaced\""
            ),
            t(
                "FieldValueInvalid",
                "spec.names.singular",
                "Invalid value: \"Widget\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
            ),
            t(
                "FieldValueInvalid",
                "spec.names.listKind",
                "Invalid value: \"WidgetList\": kind and listKind may not be the same"
            ),
        ]
    );
}

#[test]
fn versions_need_exactly_one_storage_version_and_unique_names() {
    let mut c = crd();
    let mut v2 = c["spec"]["versions"][0].clone();
    v2["schema"]["openAPIV3Schema"]["description"] = json!("v2");
    c["spec"]["versions"].as_array_mut().unwrap().push(v2);
    let e = errs(&c, None);
    assert_eq!(
        e,
        [
            t(
                "FieldValueInvalid",
                "spec.versions",
                "Invalid value: []apiextensions.CustomResourceDefinitionVersion{{Name:\"v1\"}, {Name:\"v1\"}}: must contain unique version names"
            ),
            t(
                "FieldValueInvalid",
                "spec.versions",
                "Invalid value: []apiextensions.CustomResourceDefinitionVersion{{Name:\"v1\"}, {Name:\"v1\"}}: must have exactly one version marked as storage version"
            ),
        ]
    );
    let mut c = crd();
    c["spec"]["versions"][0]["name"] = json!("1beta");
    c["spec"]["versions"][0]["storage"] = json!(false);
    let e = errs(&c, None);
    assert_eq!(e[0].1, "spec.versions[0].name");
    assert!(
        e[1].2
            .ends_with("must have exactly one version marked as storage version")
    );
}

#[test]
fn schemas_must_be_structural_with_lifted_paths() {
    let mut c = crd();
    c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["loose"] =
        json!({});
    c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["list"] =
        json!({"type": "array"});
    assert_eq!(
        errs(&c, None),
        [
            t(
                "FieldValueRequired",
                "spec.validation.openAPIV3Schema.properties[spec].properties[list].items",
                "Required value: must be specified"
            ),
            t(
                "FieldValueRequired",
                "spec.validation.openAPIV3Schema.properties[spec].properties[loose].type",
                "Required value: must not be empty for specified object fields"
            ),
        ]
    );
    // Without a schema at all.
    let mut c = crd();
    c["spec"]["versions"][0]["schema"] = Value::Null;
    assert_eq!(
        errs(&c, None),
        [t(
            "FieldValueRequired",
            "spec.versions[0].schema.openAPIV3Schema",
            "Required value: schemas are required"
        )]
    );
}

#[test]
fn schema_nodes_extensions_and_rules() {
    let mut c = crd();
    c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"] = json!({
        "a": {"type": "string", "x-kubernetes-preserve-unknown-fields": false},
        "b": {"type": "object", "x-kubernetes-list-type": "set"},
        "c": {"type": "array", "x-kubernetes-list-type": "map", "items": {"type": "object", "properties": {"k": {"type": "string"}}}},
        "d": {"type": "array", "uniqueItems": true, "items": {"type": "string"}},
        "e": {"type": "string", "x-kubernetes-validations": [{"rule": ""}]},
        "f": {"type": "integer", "x-kubernetes-validations": [{"rule": "self >", "message": "m"}]}
    });
    let e = errs(&c, None);
    let fields: Vec<&str> = e.iter().map(|x| x.1.as_str()).collect();
    let p = "spec.validation.openAPIV3Schema.properties[spec].properties";
    assert!(
        fields.contains(&format!("{p}[a].x-kubernetes-preserve-unknown-fields").as_str()),
        "{e:?}"
    );
    assert!(e.contains(&t(
        "FieldValueInvalid",
        &format!("{p}[b].type"),
        "Invalid value: \"object\": must be array if x-kubernetes-list-type is specified"
    )));
    assert!(e.contains(&t(
        "FieldValueRequired",
        &format!("{p}[c].x-kubernetes-list-map-keys"),
        "Required value: must not be empty if x-kubernetes-list-type is map"
    )));
    assert!(e.contains(&t("FieldValueForbidden", &format!("{p}[d].uniqueItems"), "Forbidden: uniqueItems cannot be set to true since the runtime complexity becomes quadratic")));
    assert!(e.contains(&t(
        "FieldValueRequired",
        &format!("{p}[e].x-kubernetes-validations[0].rule"),
        "Required value: rule is not specified"
    )));
    // CEL compilation is only attempted once the schema itself is sound.
    assert!(!fields.contains(&format!("{p}[f].x-kubernetes-validations[0].rule").as_str()));

    let mut c = crd();
    c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["x-kubernetes-validations"] =
        json!([{"rule": "self.replicas >", "message": "m"}]);
    let e = errs(&c, None);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(
        e[0].1,
        "spec.validation.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule"
    );
    assert!(
        e[0].2.starts_with(
            "Invalid value: apiextensions.ValidationRule{Rule:\"self.replicas >\", Message:\"m\""
        ),
        "{}",
        e[0].2
    );
    assert!(e[0].2.contains(": compilation failed: "));
}

#[test]
fn subresources_columns_and_conversion() {
    let mut c = crd();
    let v = &mut c["spec"]["versions"][0];
    v["subresources"]["scale"] =
        json!({"specReplicasPath": ".status.replicas", "statusReplicasPath": "status.replicas"});
    v["additionalPrinterColumns"] = json!([{"name": "", "type": "float", "jsonPath": ""}]);
    c["spec"]["conversion"] = json!({"strategy": "Webhook"});
    assert_eq!(
        errs(&c, None),
        [
            t(
                "FieldValueInvalid",
                "spec.subresources.scale.specReplicasPath",
                "Invalid value: \".status.replicas\": should be a json path under .spec"
            ),
            t(
                "FieldValueInvalid",
                "spec.subresources.scale.statusReplicasPath",
                "Invalid value: \"status.replicas\": must be a simple json path starting with ."
            ),
            t(
                "FieldValueRequired",
                "spec.additionalPrinterColumns[0].name",
                "Required value"
            ),
            t(
                "FieldValueInvalid",
                "spec.additionalPrinterColumns[0].type",
                "Invalid value: \"float\": must be one of boolean,date,integer,number,string"
            ),
            t(
                "FieldValueRequired",
                "spec.additionalPrinterColumns[0].JSONPath",
                "Required value"
            ),
            t(
                "FieldValueRequired",
                "spec.conversion.webhookClientConfig",
                "Required value: required when strategy is set to Webhook"
            ),
            t(
                "FieldValueRequired",
                "spec.conversion.conversionReviewVersions",
                "Required value"
            ),
        ]
    );
}

#[test]
fn status_subresource_restricts_the_root_and_metadata_is_limited() {
    let mut c = crd();
    let root = &mut c["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    root["additionalProperties"] = json!({"type": "string"});
    root["properties"]["metadata"] =
        json!({"type": "object", "properties": {"labels": {"type": "object"}}});
    let e = errs(&c, None);
    let p = "spec.validation.openAPIV3Schema";
    assert!(
        e.contains(&t(
            "FieldValueForbidden",
            &format!("{p}.additionalProperties"),
            "Forbidden: must not be used at the root"
        )),
        "{e:?}"
    );
    assert!(e.contains(&t("FieldValueForbidden", &format!("{p}.properties[metadata]"), "Forbidden: must not specify anything other than name and generateName, but metadata is implicitly specified")), "{e:?}");
    assert!(e.iter().any(|x| x.1 == p && x.2.contains("fields are allowed at the root of the schema if the status subresource is enabled")), "{e:?}");
}

#[test]
fn updates_keep_group_plural_and_stored_versions() {
    let mut old = crd();
    old["status"] = json!({"storedVersions": ["v1"], "conditions": [{"type": "Established", "status": "True"}]});
    let mut new = old.clone();
    assert_eq!(errs(&new, Some(&old)), []);
    new["spec"]["group"] = json!("other.example.com");
    new["spec"]["scope"] = json!("Cluster");
    new["spec"]["versions"][0]["name"] = json!("v2");
    let e = errs(&new, Some(&old));
    assert_eq!(
        e,
        [
            t(
                "FieldValueInvalid",
                "spec.scope",
                "Invalid value: \"Cluster\": field is immutable"
            ),
            t(
                "FieldValueInvalid",
                "spec.group",
                "Invalid value: \"other.example.com\": field is immutable"
            ),
            t(
                "FieldValueInvalid",
                "status.storedVersions",
                "Invalid value: []string{\"v1\"}: must have the storage version v2"
            ),
            t(
                "FieldValueInvalid",
                "status.storedVersions[0]",
                "Invalid value: \"v1\": missing from spec.versions; v1 was previously a storage version, and must remain in spec.versions until a storage migration ensures no data remains persisted in v1 and removes v1 from status.storedVersions"
            ),
        ]
    );
}

#[test]
fn protected_groups_need_approval() {
    let mut c = crd();
    c["metadata"]["name"] = json!("widgets.x.k8s.io");
    c["spec"]["group"] = json!("x.k8s.io");
    assert_eq!(
        errs(&c, None),
        [t(
            "FieldValueRequired",
            "metadata.annotations[api-approved.kubernetes.io]",
            "Required value: protected groups must have approval annotation \"api-approved.kubernetes.io\", see https://github.com/kubernetes/enhancements/pull/1111"
        )]
    );
    c["metadata"]["annotations"] = json!({"api-approved.kubernetes.io": "unapproved, testing"});
    assert_eq!(errs(&c, None), []);
}

fn with_conversion(conversion: Value) -> Value {
    let mut c = crd();
    c["spec"]["conversion"] = conversion;
    c
}

#[test]
fn webhook_conversion_is_checked_on_the_internal_paths() {
    let ok = json!({"strategy": "Webhook", "webhook": {
        "clientConfig": {"service": {"namespace": "default", "name": "conv", "path": "/crdconvert", "port": 9443}},
        "conversionReviewVersions": ["v1", "v1beta1"]}});
    assert_eq!(errs(&with_conversion(ok), None), []);
    let url = json!({"strategy": "Webhook", "webhook": {
        "clientConfig": {"url": "http://127.0.0.1:8443/convert?x=1"},
        "conversionReviewVersions": ["v2", "v2", "V3"]}});
    assert_eq!(
        errs(&with_conversion(url), None),
        [
            t(
                "FieldValueInvalid",
                "spec.conversion.webhookClientConfig.url",
                "Invalid value: \"http\": 'https' is the only allowed URL scheme; desired format: https://host[/path]"
            ),
            t(
                "FieldValueInvalid",
                "spec.conversion.webhookClientConfig.url",
                "Invalid value: \"x=1\": query parameters are not permitted in the URL"
            ),
            t(
                "FieldValueInvalid",
                "spec.conversion.conversionReviewVersions[1]",
                "Invalid value: \"v2\": duplicate version"
            ),
            t(
                "FieldValueInvalid",
                "spec.conversion.conversionReviewVersions[2]",
                "Invalid value: \"V3\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
            ),
            t(
                "FieldValueInvalid",
                "spec.conversion.conversionReviewVersions",
                "Invalid value: []string{\"v2\", \"v2\", \"V3\"}: must include at least one of v1, v1beta1"
            ),
        ]
    );
    let both = json!({"strategy": "Webhook", "webhook": {
        "clientConfig": {"url": "https://a.example/", "service": {"namespace": "d", "name": "n"}},
        "conversionReviewVersions": ["v1"]}});
    assert_eq!(
        errs(&with_conversion(both), None),
        [t(
            "FieldValueRequired",
            "spec.conversion.webhookClientConfig",
            "Required value: exactly one of url or service is required"
        )]
    );
    let none = json!({"strategy": "None", "webhook": {
        "clientConfig": {"url": "https://a.example/"}, "conversionReviewVersions": ["v1"]}});
    assert_eq!(
        errs(&with_conversion(none), None),
        [
            t(
                "FieldValueForbidden",
                "spec.conversion.webhookClientConfig",
                "Forbidden: should not be set when strategy is not set to Webhook"
            ),
            t(
                "FieldValueForbidden",
                "spec.conversion.conversionReviewVersions",
                "Forbidden: should not be set when strategy is not set to Webhook"
            ),
        ]
    );
    let odd = json!({"strategy": "Sometimes"});
    assert_eq!(
        errs(&with_conversion(odd), None),
        [t(
            "FieldValueNotSupported",
            "spec.conversion.strategy",
            "Unsupported value: \"Sometimes\": supported values: \"None\", \"Webhook\""
        )]
    );
}

#[test]
fn an_invalid_ca_bundle_is_refused_once_the_crd_is_established() {
    use base64::Engine as _;
    let bad = base64::engine::general_purpose::STANDARD.encode("hi");
    let conv = json!({"strategy": "Webhook", "webhook": {
        "clientConfig": {"url": "https://a.example/", "caBundle": bad},
        "conversionReviewVersions": ["v1"]}});
    let mut old = with_conversion(json!({"strategy": "None"}));
    old["status"] = json!({"storedVersions": ["v1"], "conditions": [{"type": "Established", "status": "True"}]});
    let mut new = with_conversion(conv);
    new["status"] = old["status"].clone();
    // Not established yet (a create): let through, as upstream.
    assert_eq!(errs(&new, None), []);
    assert_eq!(
        errs(&new, Some(&old)),
        [t(
            "FieldValueInvalid",
            "spec.conversion.webhookClientConfig.caBundle",
            "Invalid value: []byte{0x68, 0x69}: data does not contain any valid RSA or ECDSA certificates"
        )]
    );
}

#[test]
fn switching_the_storage_version_adds_it_to_stored_versions() {
    let mut old = crd();
    let mut v2 = old["spec"]["versions"][0].clone();
    v2["name"] = json!("v2");
    v2["storage"] = json!(false);
    old["spec"]["versions"].as_array_mut().unwrap().push(v2);
    old["status"] = json!({"storedVersions": ["v1"]});
    let mut new = old.clone();
    new["spec"]["versions"][0]["storage"] = json!(false);
    new["spec"]["versions"][1]["storage"] = json!(true);
    // Without upstream's PrepareForUpdate the update is refused.
    assert_eq!(
        errs(&new, Some(&old)),
        [t(
            "FieldValueInvalid",
            "status.storedVersions",
            "Invalid value: []string{\"v1\"}: must have the storage version v2"
        )]
    );
    // A client's status is ignored: the stored one is kept and the new storage version joins.
    new["status"] = json!({"storedVersions": []});
    super::prepare_for_update(&mut new, &old);
    assert_eq!(new["status"]["storedVersions"], json!(["v1", "v2"]));
    assert_eq!(errs(&new, Some(&old)), []);
    super::prepare_for_update(&mut new, &old);
    assert_eq!(new["status"]["storedVersions"], json!(["v1", "v2"]));
}
