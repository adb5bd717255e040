//! The audit policy (`audit.k8s.io/v1` kind `Policy`, kube-apiserver's `--audit-policy-file`):
//! rules evaluated in order, the first that matches decides the level; no match means `None`.
//! Matching and validation follow upstream's `pkg/audit/policy` and `apis/audit/validation`,
//! wording included, so a policy file kube-apiserver accepts or refuses is accepted or refused
//! here with the same message.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use vkube_api::validation::Errors;
use vkube_auth::UserInfo;
use vkube_auth::rbac::Attributes;

/// How much of a request is recorded, least first (upstream's `Level`, ordered as its `Less`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Level {
    None,
    Metadata,
    Request,
    RequestResponse,
}

/// When in a request's life an event is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stage {
    RequestReceived,
    ResponseStarted,
    ResponseComplete,
    Panic,
}

const LEVELS: &[&str] = &["None", "Metadata", "Request", "RequestResponse"];
const STAGES: &[&str] = &[
    "RequestReceived",
    "ResponseStarted",
    "ResponseComplete",
    "Panic",
];

/// One `resources` entry of a rule.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GroupResources {
    #[serde(default)]
    group: String,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    resource_names: Vec<String>,
}

/// A rule as the file spells it; levels and stages stay strings until validated.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRule {
    #[serde(default)]
    level: String,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    user_groups: Vec<String>,
    #[serde(default)]
    verbs: Vec<String>,
    #[serde(default)]
    resources: Vec<GroupResources>,
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default, rename = "nonResourceURLs")]
    non_resource_urls: Vec<String>,
    #[serde(default)]
    omit_stages: Vec<String>,
    omit_managed_fields: Option<bool>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPolicy {
    #[serde(default)]
    rules: Vec<RawRule>,
    #[serde(default)]
    omit_stages: Vec<String>,
    #[serde(default)]
    omit_managed_fields: bool,
}

#[derive(Clone, Debug)]
struct Rule {
    level: Level,
    users: Vec<String>,
    user_groups: Vec<String>,
    verbs: Vec<String>,
    resources: Vec<GroupResources>,
    namespaces: Vec<String>,
    non_resource_urls: Vec<String>,
    /// The rule's stages joined with the policy's, as upstream's evaluator joins them.
    omit_stages: Vec<Stage>,
    omit_managed_fields: Option<bool>,
}

/// A loaded, validated policy.
#[derive(Clone, Debug)]
pub struct Policy {
    rules: Vec<Rule>,
    omit_stages: Vec<Stage>,
    omit_managed_fields: bool,
}

/// What the policy decides for one request (upstream's `RequestAuditConfig`).
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub level: Level,
    pub omit_stages: Vec<Stage>,
    pub omit_managed_fields: bool,
}

impl Decision {
    pub fn omits(&self, stage: Stage) -> bool {
        self.omit_stages.contains(&stage)
    }
}

/// A policy file that could not be loaded, in upstream's words.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(pub String);

impl Policy {
    /// Reads and validates `--audit-policy-file` (YAML or JSON).
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            PolicyError(format!(
                "failed to read file path {:?}: {e}",
                path.display().to_string()
            ))
        })?;
        Policy::parse(&text)
            .map_err(|e| PolicyError(format!("{}: from file {}", e.0, path.display())))
    }

    /// Parses and validates a policy document.
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        let doc =
            crate::yaml::to_json(text).map_err(|e| PolicyError(format!("failed decoding: {e}")))?;
        let (kind, api_version) = (doc["kind"].as_str(), doc["apiVersion"].as_str());
        let compact = || doc.to_string();
        let Some(kind) = kind.filter(|k| !k.is_empty()) else {
            return Err(PolicyError(format!(
                "failed decoding: Object 'Kind' is missing in '{}'",
                compact()
            )));
        };
        if api_version != Some("audit.k8s.io/v1") || kind != "Policy" {
            return Err(PolicyError(format!(
                "failed decoding: no kind {kind:?} is registered for version {:?} in scheme \"k8s.io/apiserver/pkg/audit/scheme.go:30\"",
                api_version.unwrap_or_default()
            )));
        }
        let raw: RawPolicy = serde_json::from_value(doc)
            .map_err(|e| PolicyError(format!("failed lenient decoding: {e}")))?;
        let errs = validate(&raw);
        if !errs.0.is_empty() {
            let messages: Vec<String> = errs
                .0
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect();
            // Upstream's aggregate: one error alone, several in brackets.
            return Err(PolicyError(if messages.len() == 1 {
                messages[0].clone()
            } else {
                format!("[{}]", messages.join(", "))
            }));
        }
        if raw.rules.is_empty() {
            return Err(PolicyError("loaded illegal policy with 0 rules".into()));
        }
        let policy_stages = stages(&raw.omit_stages);
        let rules = raw
            .rules
            .into_iter()
            .map(|r| {
                let mut omit = policy_stages.clone();
                for s in stages(&r.omit_stages) {
                    if !omit.contains(&s) {
                        omit.push(s);
                    }
                }
                Rule {
                    level: level(&r.level),
                    users: r.users,
                    user_groups: r.user_groups,
                    verbs: r.verbs,
                    resources: r.resources,
                    namespaces: r.namespaces,
                    non_resource_urls: r.non_resource_urls,
                    omit_stages: omit,
                    omit_managed_fields: r.omit_managed_fields,
                }
            })
            .collect();
        Ok(Policy {
            rules,
            omit_stages: policy_stages,
            omit_managed_fields: raw.omit_managed_fields,
        })
    }

    /// The first matching rule's level and stages; `None` when no rule matches. `user` is the
    /// authenticated user (before impersonation), or `None` when authentication failed.
    pub fn evaluate(&self, user: Option<&UserInfo>, a: &Attributes) -> Decision {
        match self.rules.iter().find(|r| r.matches(user, a)) {
            Some(rule) => Decision {
                level: rule.level,
                omit_stages: rule.omit_stages.clone(),
                omit_managed_fields: rule.omit_managed_fields.unwrap_or(self.omit_managed_fields),
            },
            None => Decision {
                level: Level::None,
                omit_stages: self.omit_stages.clone(),
                omit_managed_fields: self.omit_managed_fields,
            },
        }
    }
}

fn level(s: &str) -> Level {
    match s {
        "Metadata" => Level::Metadata,
        "Request" => Level::Request,
        "RequestResponse" => Level::RequestResponse,
        _ => Level::None,
    }
}

fn stages(list: &[String]) -> Vec<Stage> {
    list.iter()
        .filter_map(|s| serde_json::from_value(json!(s)).ok())
        .collect()
}

impl Rule {
    fn matches(&self, user: Option<&UserInfo>, a: &Attributes) -> bool {
        if !self.users.is_empty() && !user.is_some_and(|u| self.users.contains(&u.username)) {
            return false;
        }
        if !self.user_groups.is_empty()
            && !user.is_some_and(|u| u.groups.iter().any(|g| self.user_groups.contains(g)))
        {
            return false;
        }
        if !self.verbs.is_empty() && !self.verbs.contains(&a.verb) {
            return false;
        }
        if !self.namespaces.is_empty() || !self.resources.is_empty() {
            return self.matches_resource(a);
        }
        if !self.non_resource_urls.is_empty() {
            return !a.resource_request
                && self
                    .non_resource_urls
                    .iter()
                    .any(|spec| path_matches(&a.path, spec));
        }
        true
    }

    fn matches_resource(&self, a: &Attributes) -> bool {
        if !a.resource_request {
            return false;
        }
        // Cluster-scoped requests have the empty namespace, which a rule may list.
        if !self.namespaces.is_empty() && !self.namespaces.contains(&a.namespace) {
            return false;
        }
        if self.resources.is_empty() {
            return true;
        }
        let combined = if a.subresource.is_empty() {
            a.resource.clone()
        } else {
            format!("{}/{}", a.resource, a.subresource)
        };
        self.resources
            .iter()
            .filter(|gr| gr.group == a.group)
            .any(|gr| {
                gr.resources.is_empty()
                    || gr.resources.iter().any(|res| {
                        (gr.resource_names.is_empty() || gr.resource_names.contains(&a.name))
                            && (*res == combined
                                || res == "*"
                                || (!a.subresource.is_empty()
                                    && res.strip_prefix("*/") == Some(a.subresource.as_str()))
                                || res.strip_suffix("/*") == Some(a.resource.as_str()))
                    })
            })
    }
}

/// A `nonResourceURLs` entry: `*`, an exact path, or a prefix ending in `*`.
fn path_matches(path: &str, spec: &str) -> bool {
    spec == "*"
        || spec == path
        || (spec.ends_with('*') && path.starts_with(spec.trim_end_matches('*')))
}

/// Upstream's `ValidatePolicy`, in its order.
fn validate(p: &RawPolicy) -> Errors {
    let mut errs = Errors::default();
    omit_stages(&p.omit_stages, "omitStages", &mut errs);
    for (i, rule) in p.rules.iter().enumerate() {
        let at = format!("rules[{i}]");
        match rule.level.as_str() {
            "" => errs.required(&format!("{at}.level"), ""),
            l if LEVELS.contains(&l) => {}
            l => errs.not_supported(&format!("{at}.level"), &json!(l), LEVELS),
        }
        for (j, url) in rule.non_resource_urls.iter().enumerate() {
            if url == "*" {
                continue;
            }
            let field = format!("{at}.nonResourceURLs[{j}]");
            if !url.starts_with('/') {
                errs.invalid(
                    &field,
                    &json!(url),
                    "non-resource URL rules must begin with a '/' character",
                );
            }
            if url.len() > 1 && url[..url.len() - 1].contains('*') {
                errs.invalid(
                    &field,
                    &json!(url),
                    "non-resource URL wildcards '*' must be the final character of the rule",
                );
            }
        }
        for gr in &rule.resources {
            if !gr.group.is_empty()
                && let Some(why) = vkube_api::object::invalid_name(
                    vkube_api::object::NameRule::Subdomain,
                    &gr.group,
                )
            {
                errs.invalid(&format!("{at}.resources.group"), &json!(gr.group), &why);
            }
            if !gr.resource_names.is_empty() && gr.resources.is_empty() {
                errs.push_raw_invalid(
                    &format!("{at}.resources.resourceNames"),
                    &go_strings(&gr.resource_names),
                    "using resourceNames requires at least one resource",
                );
            }
        }
        omit_stages(&rule.omit_stages, &format!("{at}.omitStages"), &mut errs);
        if !rule.non_resource_urls.is_empty()
            && (!rule.resources.is_empty() || !rule.namespaces.is_empty())
        {
            errs.push_raw_invalid(
                &format!("{at}.nonResourceURLs"),
                &go_strings(&rule.non_resource_urls),
                "rules cannot apply to both regular resources and non-resource URLs",
            );
        }
    }
    errs
}

fn omit_stages(list: &[String], field: &str, errs: &mut Errors) {
    for (i, stage) in list.iter().enumerate() {
        if !STAGES.contains(&stage.as_str()) {
            errs.invalid(
                &format!("{field}[{i}]"),
                &Value::String(stage.clone()),
                &format!("allowed stages are {}", STAGES.join(",")),
            );
        }
    }
}

/// A `[]string` as Go's `%#v` prints it in a field error.
fn go_strings(list: &[String]) -> String {
    let quoted: Vec<String> = list.iter().map(|s| format!("{s:?}")).collect();
    format!("[]string{{{}}}", quoted.join(", "))
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
