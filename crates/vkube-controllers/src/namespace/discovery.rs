//! What a namespace can hold: every namespaced resource the API serves that can be deleted, in
//! its group's preferred version (client-go's `ServerPreferredNamespacedResources`, filtered by
//! the `delete` verb as upstream's deleter does), read from aggregated discovery (`/api` and
//! `/apis`), which client-go 1.33 uses by default.

use std::collections::BTreeMap;

use kube::core::ApiResource;
use kube::core::discovery::v2::APIGroupDiscoveryList;

use super::message;

/// One resource to empty, with what its discovery document says it allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Deletable {
    pub group: String,
    pub version: String,
    pub resource: String,
    pub kind: String,
    pub verbs: Vec<String>,
}

impl Deletable {
    pub fn supports(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }

    pub fn api_resource(&self) -> ApiResource {
        let api_version = match self.group.as_str() {
            "" => self.version.clone(),
            g => format!("{g}/{}", self.version),
        };
        ApiResource {
            group: self.group.clone(),
            version: self.version.clone(),
            api_version,
            kind: self.kind.clone(),
            plural: self.resource.clone(),
        }
    }

    /// Go's `GroupVersionResource.String()`, which upstream's messages print.
    pub fn gvr(&self) -> String {
        format!(
            "{}/{}, Resource={}",
            self.group, self.version, self.resource
        )
    }
}

/// The deletable resources, and why the list may be incomplete.
#[derive(Debug, Default)]
pub(super) struct Discovered {
    pub resources: Vec<Deletable>,
    /// The `NamespaceDeletionDiscoveryFailure` message, when discovery failed.
    pub discovery_error: Option<String>,
    /// The `NamespaceDeletionGroupVersionParsingFailure` message, when a group version was not
    /// `group/version`.
    pub parse_error: Option<String>,
}

pub(super) async fn deletable(client: &kube::Client) -> Discovered {
    let (core, groups) = tokio::join!(
        client.list_core_api_versions_aggregated(),
        client.list_api_groups_aggregated()
    );
    match (core, groups) {
        (Ok(core), Ok(groups)) => preferred(&[core, groups]),
        // Upstream's discovery gives nothing when either document fails.
        (Err(err), _) | (_, Err(err)) => Discovered {
            discovery_error: Some(message(&err)),
            ..Discovered::default()
        },
    }
}

/// Per group and resource, the preferred (first listed) version that serves it, else the first
/// version that does; namespaced ones with `delete`. Stale group versions count as failed groups,
/// as client-go reports them.
fn preferred(documents: &[APIGroupDiscoveryList]) -> Discovered {
    let mut failed: BTreeMap<String, String> = BTreeMap::new();
    let mut chosen: Vec<((String, String), Deletable, bool)> = Vec::new();
    let mut unparsable = Vec::new();
    for group in documents.iter().flat_map(|d| &d.items) {
        let name = group
            .metadata
            .as_ref()
            .and_then(|m| m.name.clone())
            .unwrap_or_default();
        for (i, version) in group.versions.iter().enumerate() {
            let v = version.version.clone().unwrap_or_default();
            let gv = if name.is_empty() {
                v.clone()
            } else {
                format!("{name}/{v}")
            };
            if version.freshness.as_deref() == Some("Stale") {
                failed.insert(gv.clone(), format!("stale GroupVersion discovery: {gv}"));
                continue;
            }
            if v.is_empty() || v.contains('/') || name.contains('/') {
                unparsable.push(format!("unexpected GroupVersion string: {gv}"));
                continue;
            }
            let preferred = i == 0;
            for r in &version.resources {
                let resource = r.resource.clone().unwrap_or_default();
                if resource.contains('/') {
                    continue;
                }
                let deletable = Deletable {
                    group: name.clone(),
                    version: v.clone(),
                    resource: resource.clone(),
                    kind: r
                        .response_kind
                        .as_ref()
                        .and_then(|k| k.kind.clone())
                        .unwrap_or_default(),
                    verbs: r.verbs.clone(),
                };
                let namespaced = r.scope.as_deref() == Some("Namespaced");
                let key = (name.clone(), resource);
                match chosen.iter_mut().find(|(k, ..)| *k == key) {
                    Some(_) if !preferred => {}
                    Some(entry) => *entry = (key, deletable, namespaced),
                    None => chosen.push((key, deletable, namespaced)),
                }
            }
        }
    }
    let discovery_error = (!failed.is_empty()).then(|| {
        let groups: Vec<String> = failed.iter().map(|(gv, e)| format!("{gv}: {e}")).collect();
        format!(
            "Discovery failed for some groups, {} failing: unable to retrieve the complete list of server APIs: {}",
            failed.len(),
            groups.join(", ")
        )
    });
    Discovered {
        resources: chosen
            .into_iter()
            .filter(|(_, d, namespaced)| *namespaced && d.supports("delete"))
            .map(|(_, d, _)| d)
            .collect(),
        discovery_error,
        parse_error: (!unparsable.is_empty()).then(|| unparsable.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn resource(name: &str, kind: &str, scope: &str, verbs: &[&str]) -> serde_json::Value {
        json!({"resource": name, "responseKind": {"group": "", "version": "", "kind": kind},
               "scope": scope, "verbs": verbs})
    }

    #[test]
    fn preferred_namespaced_deletable_resources_and_stale_groups() {
        let all = ["get", "list", "delete", "deletecollection"];
        let core: APIGroupDiscoveryList = serde_json::from_value(json!({"items": [
            {"metadata": {"name": ""}, "versions": [{"version": "v1", "freshness": "Current", "resources": [
                resource("pods", "Pod", "Namespaced", &all),
                resource("nodes", "Node", "Cluster", &all),
                resource("bindings", "Binding", "Namespaced", &["create"]),
            ]}]},
        ]}))
        .unwrap();
        let groups: APIGroupDiscoveryList = serde_json::from_value(json!({"items": [
            {"metadata": {"name": "example.com"}, "versions": [
                {"version": "v2", "resources": [resource("widgets", "Widget", "Namespaced", &all)]},
                {"version": "v1", "resources": [
                    resource("widgets", "Widget", "Namespaced", &all),
                    resource("gadgets", "Gadget", "Namespaced", &["delete", "list"]),
                ]},
            ]},
            {"metadata": {"name": "metrics.example"}, "versions": [
                {"version": "v1beta1", "freshness": "Stale", "resources": [resource("things", "Thing", "Namespaced", &all)]},
            ]},
        ]}))
        .unwrap();
        let found = preferred(&[core, groups]);
        let names: Vec<String> = found.resources.iter().map(Deletable::gvr).collect();
        assert_eq!(
            names,
            [
                "/v1, Resource=pods",
                "example.com/v2, Resource=widgets",
                "example.com/v1, Resource=gadgets"
            ]
        );
        assert_eq!(
            found.discovery_error.as_deref(),
            Some(
                "Discovery failed for some groups, 1 failing: unable to retrieve the complete list of server APIs: metrics.example/v1beta1: stale GroupVersion discovery: metrics.example/v1beta1"
            )
        );
        assert!(found.parse_error.is_none());
        assert_eq!(found.resources[0].api_resource().api_version, "v1");
        assert_eq!(
            found.resources[1].api_resource().api_version,
            "example.com/v2"
        );
    }
}
