//! kube-apiserver's `--encryption-provider-config` file: an `EncryptionConfiguration`
//! (apiserver.config.k8s.io/v1), in YAML or JSON, read and checked as upstream reads it
//! (`k8s.io/apiserver/pkg/server/options/encryptionconfig` and the validation beside it): strict
//! fields, the same validation rules, and the same messages, so an operator's file is refused by
//! vkube exactly when kube-apiserver would refuse it. KMS providers are the exception: vkube has
//! no KMS plugin client, and says so.

use std::path::Path;

use base64::Engine;
use serde::Deserialize;
use serde::de::IgnoredAny;

use super::cipher::{Chain, Key, Kind, Provider};

const API_VERSION: &str = "apiserver.config.k8s.io/v1";
const KIND: &str = "EncryptionConfiguration";

/// Why a configuration was refused, worded as kube-apiserver words it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// A group and resource as a config names them (`secrets`, `deployments.apps`, `*.apps`, `*.`
/// for the core group, `*.*` for everything): upstream's `schema.ParseGroupResource`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GroupResource {
    /// `""` for the core group, `"*"` for any group.
    pub group: String,
    /// The plural resource, or `"*"` for every resource of the group.
    pub resource: String,
}

impl GroupResource {
    pub fn parse(s: &str) -> GroupResource {
        match s.split_once('.') {
            Some((resource, group)) => GroupResource {
                group: group.to_string(),
                resource: resource.to_string(),
            },
            None => GroupResource {
                group: String::new(),
                resource: s.to_string(),
            },
        }
    }

    /// How it is written in a config file (upstream's `grYAMLString`).
    pub fn display(&self) -> String {
        if self.group.is_empty() && self.resource == "*" {
            "*.".to_string()
        } else if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }

    fn any() -> GroupResource {
        GroupResource {
            group: "*".into(),
            resource: "*".into(),
        }
    }
}

/// A checked configuration: for each group-resource it names, the providers to use, in order.
#[derive(Clone, Debug)]
pub struct EncryptionConfig {
    pub(crate) rules: Vec<(GroupResource, Chain)>,
}

impl EncryptionConfig {
    /// The group-resources the file names (wildcards included), in the order it names them.
    pub fn resources(&self) -> impl Iterator<Item = &GroupResource> {
        self.rules.iter().map(|(gr, _)| gr)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct File {
    api_version: Option<String>,
    kind: Option<String>,
    #[serde(default)]
    resources: Vec<ResourceConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourceConfig {
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    providers: Vec<ProviderConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderConfig {
    aesgcm: Option<KeysConfig>,
    aescbc: Option<KeysConfig>,
    secretbox: Option<KeysConfig>,
    identity: Option<Empty>,
    kms: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysConfig {
    #[serde(default)]
    keys: Vec<KeyConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyConfig {
    #[serde(default)]
    name: String,
    #[serde(default)]
    secret: String,
}

/// Reads and checks the file at `path`.
pub fn load(path: &Path) -> Result<EncryptionConfig, ConfigError> {
    let shown = path.display();
    let data = std::fs::read(path).map_err(|e| {
        ConfigError(format!(
            "error while parsing file: error while loading file: error reading encryption provider configuration file {:?}: {e}",
            shown.to_string()
        ))
    })?;
    if data.is_empty() {
        return Err(ConfigError(format!(
            "error while parsing file: error while loading file: encryption provider configuration file {:?} is empty",
            shown.to_string()
        )));
    }
    let text = String::from_utf8_lossy(&data);
    parse(&text, &shown.to_string())
}

/// Checks a configuration given as text; `name` is the file it came from, for messages.
pub fn parse(text: &str, name: &str) -> Result<EncryptionConfig, ConfigError> {
    let decoding = |e: String| {
        ConfigError(format!(
            "error while parsing file: error decoding encryption provider configuration file {name:?}: {e}"
        ))
    };
    // JSON is YAML, but serde_json's messages for JSON files are the clearer ones.
    let file: File = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| decoding(format!("strict decoding error: {e}")))?
    } else {
        serde_saphyr::from_str(text).map_err(|e| decoding(format!("strict decoding error: {e}")))?
    };
    let (api_version, kind) = (
        file.api_version.as_deref().unwrap_or(""),
        file.kind.as_deref().unwrap_or(""),
    );
    if kind.is_empty() {
        return Err(decoding("Object 'Kind' is missing".into()));
    }
    if api_version != API_VERSION || kind != KIND {
        return Err(decoding(format!(
            "no kind {kind:?} is registered for version {api_version:?}; expected kind {KIND:?} in {API_VERSION:?}"
        )));
    }
    let errors = validate(&file);
    if !errors.is_empty() {
        return Err(ConfigError(format!(
            "error while parsing file: {}",
            aggregate(errors)
        )));
    }
    build(file).map_err(|e| ConfigError(format!("error while building transformers: {e}")))
}

/// Go's `utilerrors.Aggregate` text: one message alone, several in brackets, each once.
fn aggregate(errors: Vec<String>) -> String {
    let mut unique: Vec<String> = Vec::new();
    for e in errors {
        if !unique.contains(&e) {
            unique.push(e);
        }
    }
    if unique.len() == 1 {
        unique.remove(0)
    } else {
        format!("[{}]", unique.join(", "))
    }
}

fn required(field: &str, detail: &str) -> String {
    format!("{field}: Required value: {detail}")
}

fn invalid(field: &str, value: &str, detail: &str) -> String {
    format!("{field}: Invalid value: {value}: {detail}")
}

const STAR_RESOURCE: &str =
    "use '*.' to encrypt all the resources from core API group or *.* to encrypt all resources";
const OVERLAP: &str = "using overlapping resources such as 'secrets' and '*.' in the same resource list is not allowed as they will be masked";
const DUPLICATE: &str = "the same resource cannot be specified multiple times";
const NO_PROVIDER: &str = "provider does not contain any of the expected providers: KMS, AESGCM, AESCBC, Secretbox, Identity";
const MORE_THAN_ONE: &str = "more than one provider specified in a single element, should split into different list elements";

/// Upstream's `ValidateEncryptionConfiguration`, rule for rule.
fn validate(file: &File) -> Vec<String> {
    let mut errors = Vec::new();
    if file.resources.is_empty() {
        errors.push(required("resources", "at least one resources is required"));
        return errors;
    }
    for (i, conf) in file.resources.iter().enumerate() {
        let r = format!("resources[{i}].resources");
        let p = format!("resources[{i}].providers");
        if conf.resources.is_empty() {
            errors.push(required(&r, &format!("at least one {r} is required")));
        }
        errors.extend(validate_overlap(&conf.resources, &r));
        errors.extend(validate_names(&conf.resources, &r));
        if conf.providers.is_empty() {
            errors.push(required(&p, &format!("at least one {p} is required")));
        }
        for (j, provider) in conf.providers.iter().enumerate() {
            let path = format!("{p}[{j}]");
            let found = [
                provider.kms.is_some(),
                provider.aesgcm.is_some(),
                provider.aescbc.is_some(),
                provider.secretbox.is_some(),
                provider.identity.is_some(),
            ]
            .iter()
            .filter(|f| **f)
            .count();
            match found {
                0 => errors.push(invalid(&path, "{}", NO_PROVIDER)),
                1 => {}
                _ => errors.push(invalid(&path, "{…}", MORE_THAN_ONE)),
            }
            if provider.kms.is_some() {
                errors.push(invalid(
                    &format!("{path}.kms"),
                    "{…}",
                    "vkube does not support KMS providers (it has no KMS plugin client); use aescbc, aesgcm or secretbox",
                ));
            } else if let Some(c) = &provider.aesgcm {
                errors.extend(validate_keys(
                    &c.keys,
                    &format!("{path}.aesgcm.keys"),
                    &[16, 24, 32],
                ));
            } else if let Some(c) = &provider.aescbc {
                errors.extend(validate_keys(
                    &c.keys,
                    &format!("{path}.aescbc.keys"),
                    &[16, 24, 32],
                ));
            } else if let Some(c) = &provider.secretbox {
                errors.extend(validate_keys(
                    &c.keys,
                    &format!("{path}.secretbox.keys"),
                    &[32],
                ));
            }
        }
    }
    errors
}

fn go_strings(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[]string{{{}}}", quoted.join(", "))
}

fn validate_overlap(resources: &[String], field: &str) -> Vec<String> {
    if resources.len() < 2 {
        return Vec::new();
    }
    let parsed: Vec<GroupResource> = resources.iter().map(|r| GroupResource::parse(r)).collect();
    let (mut duplicate, mut overlap) = (false, false);
    for (i, a) in parsed.iter().enumerate() {
        for (j, b) in parsed.iter().enumerate() {
            if i == j {
                continue;
            }
            if a == b && !duplicate {
                duplicate = true;
                continue;
            }
            if overlap {
                continue;
            }
            if *a == GroupResource::any()
                || (a.group == b.group && (a.resource == "*" || b.resource == "*"))
            {
                overlap = true;
            }
        }
    }
    let mut errors = Vec::new();
    if duplicate {
        errors.push(invalid(field, &go_strings(resources), DUPLICATE));
    }
    if overlap {
        errors.push(invalid(field, &go_strings(resources), OVERLAP));
    }
    errors
}

fn validate_names(resources: &[String], field: &str) -> Vec<String> {
    let mut errors = Vec::new();
    for (j, res) in resources.iter().enumerate() {
        let path = format!("{field}[{j}]");
        let gr = GroupResource::parse(res);
        let detail = if res.to_lowercase() != *res {
            "resource name should not contain capital letters"
        } else if res == "*" {
            STAR_RESOURCE
        } else if [
            "apiserveripinfo",
            "serviceipallocations",
            "servicenodeportallocations",
        ]
        .contains(&res.as_str())
        {
            "resources which do not have REST API/s cannot be encrypted"
        } else if gr.group == "events.k8s.io" {
            "'*.events.k8s.io' objects are stored using the 'events' API group in etcd. Use 'events' instead in the config file"
        } else if gr.group == "extensions" {
            "'extensions' group has been removed and cannot be used for encryption"
        } else if gr.group == "*" && gr.resource != "*" {
            "encrypting the same resource across groups is not supported"
        } else {
            continue;
        };
        errors.push(invalid(&path, &format!("{res:?}"), detail));
    }
    errors
}

fn validate_keys(keys: &[KeyConfig], field: &str, sizes: &[usize]) -> Vec<String> {
    if keys.is_empty() {
        return vec![required(field, "at least one keys is required")];
    }
    let mut errors = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let path = format!("{field}[{i}]");
        if key.name.is_empty() {
            errors.push(required(
                &format!("{path}.name"),
                "name is a mandatory field for a key",
            ));
        }
        if key.secret.is_empty() {
            errors.push(required(
                &format!("{path}.secret"),
                "secret is a mandatory field for a key",
            ));
            continue;
        }
        // The secret itself never appears in a message.
        match base64::engine::general_purpose::STANDARD.decode(&key.secret) {
            Err(_) => errors.push(invalid(
                &format!("{path}.secret"),
                "\"REDACTED\"",
                "secrets must be base64 encoded",
            )),
            Ok(secret) if !sizes.contains(&secret.len()) => {
                let expected: Vec<String> = sizes.iter().map(usize::to_string).collect();
                errors.push(invalid(
                    &format!("{path}.secret"),
                    "\"REDACTED\"",
                    &format!(
                        "secret is not of the expected length, got {}, expected one of [{}]",
                        secret.len(),
                        expected.join(" ")
                    ),
                ));
            }
            Ok(_) => {}
        }
    }
    errors
}

/// The rules in file order. A resource named again in a later entry gets that entry's
/// providers after its earlier ones; one named after a wildcard that covers it is refused, as
/// it would never be used (upstream's "masked by earlier rule").
fn build(file: File) -> Result<EncryptionConfig, String> {
    let mut rules: Vec<(GroupResource, Chain)> = Vec::new();
    for conf in file.resources {
        let providers: Vec<Provider> = conf.providers.into_iter().map(provider).collect();
        for name in &conf.resources {
            let gr = GroupResource::parse(name);
            let in_group = GroupResource {
                group: gr.group.clone(),
                resource: "*".into(),
            };
            for wider in [in_group, GroupResource::any()] {
                if rules.iter().any(|(r, _)| *r == wider) {
                    return Err(format!(
                        "resource {:?} is masked by earlier rule {:?}",
                        gr.display(),
                        wider.display()
                    ));
                }
            }
            match rules.iter_mut().find(|(r, _)| *r == gr) {
                Some((_, chain)) => chain.0.extend(providers.iter().cloned()),
                None => rules.push((gr, Chain(providers.clone()))),
            }
        }
    }
    Ok(EncryptionConfig { rules })
}

/// A validated provider (its keys decode and have the right length).
fn provider(p: ProviderConfig) -> Provider {
    let keyed = |kind, c: KeysConfig| {
        let keys = c
            .keys
            .into_iter()
            .map(|k| Key {
                secret: base64::engine::general_purpose::STANDARD
                    .decode(&k.secret)
                    .unwrap_or_default(),
                name: k.name,
            })
            .collect();
        Provider::Keyed(kind, keys)
    };
    // Upstream's precedence when an element names several (already refused by validation).
    if let Some(c) = p.aesgcm {
        keyed(Kind::AesGcm, c)
    } else if let Some(c) = p.aescbc {
        keyed(Kind::AesCbc, c)
    } else if let Some(c) = p.secretbox {
        keyed(Kind::Secretbox, c)
    } else {
        Provider::Identity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K32: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const K16: &str = "AAECAwQFBgcICQoLDA0ODw==";

    fn yaml(resources: &str) -> String {
        format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n{resources}"
        )
    }

    fn err(text: &str) -> String {
        parse(text, "/etc/enc.yaml").unwrap_err().0
    }

    #[test]
    fn reads_yaml_and_json_with_providers_in_order() {
        let config = parse(
            &yaml(&format!(
                "- resources: [secrets, configmaps]\n  providers:\n  - aescbc:\n      keys:\n      - {{name: key1, secret: {K32}}}\n  - identity: {{}}\n- resources: ['*.apps']\n  providers:\n  - secretbox:\n      keys: [{{name: s, secret: {K32}}}]\n"
            )),
            "f",
        )
        .unwrap();
        let names: Vec<String> = config.resources().map(GroupResource::display).collect();
        assert_eq!(names, ["secrets", "configmaps", "*.apps"]);
        let chain = &config.rules[0].1;
        assert!(
            matches!(&chain.0[0], Provider::Keyed(Kind::AesCbc, k) if k[0].name == "key1" && k[0].secret.len() == 32)
        );
        assert!(matches!(chain.0[1], Provider::Identity));

        let json = format!(
            r#"{{"apiVersion":"apiserver.config.k8s.io/v1","kind":"EncryptionConfiguration","resources":[{{"resources":["widgets.example.com"],"providers":[{{"aesgcm":{{"keys":[{{"name":"g","secret":"{K16}"}}]}}}}]}}]}}"#
        );
        let config = parse(&json, "f").unwrap();
        assert_eq!(
            config.rules[0].0,
            GroupResource {
                group: "example.com".into(),
                resource: "widgets".into()
            }
        );
    }

    #[test]
    fn group_resources_parse_as_upstream() {
        let gr = |s: &str| {
            let g = GroupResource::parse(s);
            (g.group, g.resource)
        };
        assert_eq!(gr("secrets"), ("".into(), "secrets".into()));
        assert_eq!(gr("*."), ("".into(), "*".into()));
        assert_eq!(gr("*.*"), ("*".into(), "*".into()));
        assert_eq!(
            gr("deployments.apps"),
            ("apps".into(), "deployments".into())
        );
        assert_eq!(gr("*.example.com"), ("example.com".into(), "*".into()));
    }

    #[test]
    fn bad_keys_are_refused_with_upstreams_messages_and_never_echoed() {
        let e = err(&yaml(
            "- resources: [secrets]\n  providers:\n  - aescbc:\n      keys: [{name: k, secret: c2hvcnQ=}]\n",
        ));
        assert_eq!(
            e,
            "error while parsing file: resources[0].providers[0].aescbc.keys[0].secret: Invalid value: \"REDACTED\": secret is not of the expected length, got 5, expected one of [16 24 32]"
        );
        let e = err(&yaml(&format!(
            "- resources: [secrets]\n  providers:\n  - secretbox:\n      keys: [{{name: k, secret: {K16}}}]\n  - aesgcm:\n      keys: [{{secret: 'not base64!'}}]\n  - aescbc: {{keys: []}}\n"
        )));
        assert_eq!(
            e,
            "error while parsing file: [resources[0].providers[0].secretbox.keys[0].secret: Invalid value: \"REDACTED\": secret is not of the expected length, got 16, expected one of [32], resources[0].providers[1].aesgcm.keys[0].name: Required value: name is a mandatory field for a key, resources[0].providers[1].aesgcm.keys[0].secret: Invalid value: \"REDACTED\": secrets must be base64 encoded, resources[0].providers[2].aescbc.keys: Required value: at least one keys is required]"
        );
        assert!(!e.contains("not base64!"));
    }

    #[test]
    fn resource_rules_are_upstreams() {
        let one = |resources: &str| {
            err(&yaml(&format!(
                "- resources: {resources}\n  providers: [{{identity: {{}}}}]\n"
            )))
        };
        assert_eq!(
            one("['*']"),
            format!(
                "error while parsing file: resources[0].resources[0]: Invalid value: \"*\": {STAR_RESOURCE}"
            )
        );
        assert!(one("[Secrets]").ends_with("resource name should not contain capital letters"));
        assert!(one("['*.events.k8s.io']").contains("Use 'events' instead"));
        assert!(one("['*.extensions']").contains("'extensions' group has been removed"));
        assert!(one("['secrets.*']").contains("encrypting the same resource across groups"));
        assert!(one("[servicenodeportallocations]").contains("do not have REST API/s"));
        assert_eq!(
            one("[secrets, '*.']"),
            format!(
                "error while parsing file: resources[0].resources: Invalid value: []string{{\"secrets\", \"*.\"}}: {OVERLAP}"
            )
        );
        assert!(one("[secrets, secrets]").ends_with(DUPLICATE));
        assert_eq!(
            err(&yaml("- resources: [secrets]\n  providers: []\n")),
            "error while parsing file: resources[0].providers: Required value: at least one resources[0].providers is required"
        );
        assert_eq!(
            err(
                "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources: []\n"
            ),
            "error while parsing file: resources: Required value: at least one resources is required"
        );
    }

    #[test]
    fn a_rule_after_a_wildcard_covering_it_is_masked() {
        let e = err(&yaml(
            "- resources: ['*.']\n  providers: [{identity: {}}]\n- resources: [secrets]\n  providers: [{identity: {}}]\n",
        ));
        assert_eq!(
            e,
            "error while building transformers: resource \"secrets\" is masked by earlier rule \"*.\""
        );
        let e = err(&yaml(
            "- resources: ['*.*']\n  providers: [{identity: {}}]\n- resources: [deployments.apps]\n  providers: [{identity: {}}]\n",
        ));
        assert!(
            e.ends_with("resource \"deployments.apps\" is masked by earlier rule \"*.*\""),
            "{e}"
        );
        // Before the wildcard it is fine, and a resource named twice gets both lists.
        let config = parse(
            &yaml(&format!(
                "- resources: [secrets]\n  providers: [{{aescbc: {{keys: [{{name: a, secret: {K32}}}]}}}}]\n- resources: [secrets]\n  providers: [{{identity: {{}}}}]\n- resources: ['*.']\n  providers: [{{identity: {{}}}}]\n"
            )),
            "f",
        )
        .unwrap();
        assert_eq!(config.rules.len(), 2);
        assert_eq!(config.rules[0].1.0.len(), 2);
    }

    #[test]
    fn kms_unknown_fields_and_wrong_kinds_are_refused_clearly() {
        let e = err(&yaml(
            "- resources: [secrets]\n  providers:\n  - kms: {apiVersion: v2, name: p, endpoint: unix:///k.sock}\n",
        ));
        assert!(
            e.contains("resources[0].providers[0].kms")
                && e.contains("vkube does not support KMS providers"),
            "{e}"
        );
        let e = err(&yaml(
            "- resources: [secrets]\n  providers:\n  - aescbc: {keyz: []}\n",
        ));
        assert!(
            e.contains("strict decoding error")
                && e.contains("keyz")
                && e.contains("/etc/enc.yaml"),
            "{e}"
        );
        let e = err("apiVersion: v1\nkind: Config\nresources: []\n");
        assert!(e.contains("no kind \"Config\" is registered"), "{e}");
        let e = err(&yaml("- resources: [secrets]\n  providers: [{}]\n"));
        assert!(e.ends_with(NO_PROVIDER), "{e}");
    }

    #[test]
    fn files_that_are_missing_or_empty_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.yaml");
        let e = load(&missing).unwrap_err().0;
        assert!(
            e.contains("error reading encryption provider configuration file")
                && e.contains("nope.yaml"),
            "{e}"
        );
        let empty = dir.path().join("empty.yaml");
        std::fs::write(&empty, "").unwrap();
        assert!(
            load(&empty)
                .unwrap_err()
                .0
                .ends_with("empty.yaml\" is empty")
        );
    }
}
