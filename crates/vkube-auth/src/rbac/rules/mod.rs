//! PolicyRules and how a request matches them, as upstream's RBAC authorizer matches: wildcards,
//! `resource/subresource` and `*/subresource`, resourceNames (never for list, watch or create
//! without a name), and nonResourceURLs with a trailing `*`. Also `covers`, the escalation check:
//! whether a set of rules grants at least everything another rule grants.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verbs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
    #[serde(
        default,
        rename = "nonResourceURLs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub non_resource_urls: Vec<String>,
}

/// What a request asks, as the authorizer sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attributes {
    pub verb: String,
    /// Resource requests: group, resource, subresource, name and namespace.
    pub resource_request: bool,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
    pub namespace: String,
    /// Non-resource requests: the path.
    pub path: String,
}

fn has(list: &[String], want: &str) -> bool {
    list.iter().any(|v| v == "*" || v == want)
}

impl PolicyRule {
    /// Whether this rule allows `a`.
    pub fn allows(&self, a: &Attributes) -> bool {
        if !has(&self.verbs, &a.verb) {
            return false;
        }
        if !a.resource_request {
            return self
                .non_resource_urls
                .iter()
                .any(|u| url_matches(u, &a.path));
        }
        if !has(&self.api_groups, &a.group) || !self.resource_matches(&a.resource, &a.subresource) {
            return false;
        }
        self.resource_names.is_empty()
            || (!a.name.is_empty() && self.resource_names.iter().any(|n| n == &a.name))
    }

    /// Upstream's ResourceMatches: `*` matches every resource and subresource (cluster-admin's
    /// `*` grants `pods/log`), `res/sub` matches exactly, `*/sub` any resource's `sub`.
    fn resource_matches(&self, resource: &str, subresource: &str) -> bool {
        let combined = if subresource.is_empty() {
            resource.to_string()
        } else {
            format!("{resource}/{subresource}")
        };
        self.resources.iter().any(|r| {
            r == "*"
                || *r == combined
                || (!subresource.is_empty() && r.strip_prefix("*/") == Some(subresource))
        })
    }
}

/// `/apis/*` covers `/apis/v1/x` but not `/apis`; `*` covers everything.
fn url_matches(rule: &str, path: &str) -> bool {
    if rule == "*" || rule == path {
        return true;
    }
    match rule.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => false,
    }
}

/// Whether `owned` (rules a user holds) grants everything `wanted` grants, as upstream's
/// `validation.Covers` decides: the wanted rule is broken into (verb, group, resource, name)
/// tuples and each must be allowed by one owned rule.
pub fn covers(owned: &[PolicyRule], wanted: &PolicyRule) -> bool {
    uncovered(owned, wanted).is_empty()
}

/// The parts of `wanted` that `owned` does not grant, one single-valued rule each.
pub fn uncovered(owned: &[PolicyRule], wanted: &PolicyRule) -> Vec<PolicyRule> {
    let mut missing = Vec::new();
    for verb in &wanted.verbs {
        for url in &wanted.non_resource_urls {
            let ok = owned.iter().any(|o| {
                has(&o.verbs, verb) && o.non_resource_urls.iter().any(|u| url_covers(u, url))
            });
            if !ok {
                missing.push(PolicyRule {
                    verbs: vec![verb.clone()],
                    non_resource_urls: vec![url.clone()],
                    ..Default::default()
                });
            }
        }
        for group in &wanted.api_groups {
            for resource in &wanted.resources {
                let names: Vec<Option<&String>> = if wanted.resource_names.is_empty() {
                    vec![None]
                } else {
                    wanted.resource_names.iter().map(Some).collect()
                };
                for name in names {
                    let ok = owned.iter().any(|o| {
                        has(&o.verbs, verb)
                            && has(&o.api_groups, group)
                            && resource_covers(&o.resources, resource)
                            && (o.resource_names.is_empty()
                                || name.is_some_and(|n| o.resource_names.contains(n)))
                    });
                    if !ok {
                        missing.push(PolicyRule {
                            verbs: vec![verb.clone()],
                            api_groups: vec![group.clone()],
                            resources: vec![resource.clone()],
                            resource_names: name.into_iter().cloned().collect(),
                            ..Default::default()
                        });
                    }
                }
            }
        }
    }
    missing
}

/// An owned resource entry covers a wanted one: equal, `*` (covers any resource, subresources
/// included, for escalation), or `*/sub` and `res/*` forms.
fn resource_covers(owned: &[String], wanted: &str) -> bool {
    owned.iter().any(|o| {
        if o == "*" || o == wanted {
            return true;
        }
        let (wr, ws) = wanted.split_once('/').unwrap_or((wanted, ""));
        match o.split_once('/') {
            Some(("*", sub)) => !ws.is_empty() && (sub == ws || sub == "*"),
            Some((res, "*")) => res == wr && !ws.is_empty(),
            _ => false,
        }
    })
}

/// `*` covers all, `/api/*` covers `/api/v1` but not `/api`, and `/*` does not cover `""`.
fn url_covers(owned: &str, wanted: &str) -> bool {
    if owned == "*" || owned == wanted {
        return true;
    }
    match owned.strip_suffix('*') {
        Some(prefix) => wanted.starts_with(prefix) && !wanted.is_empty(),
        None => false,
    }
}

#[cfg(test)]
mod tests;
