//! Discovery documents: the legacy per-group ones (`/api`, `/apis`, `/apis/G/V`) and aggregated
//! discovery (`apidiscovery.k8s.io` v2 and v2beta1), which kubectl 1.27+ asks for first.

use serde_json::{Value, json};

use crate::registry::{self, Resource};

fn scope(r: &Resource) -> &'static str {
    if r.namespaced {
        "Namespaced"
    } else {
        "Cluster"
    }
}

/// `/api`.
pub fn api_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    })
}

fn group_doc(name: &str, versions: &[&str]) -> Value {
    let gv = |v: &str| json!({"groupVersion": format!("{name}/{v}"), "version": v});
    json!({
        "name": name,
        "versions": versions.iter().map(|v| gv(v)).collect::<Vec<_>>(),
        "preferredVersion": gv(versions[0]),
    })
}

/// `/apis`.
pub fn api_group_list() -> Value {
    let groups: Vec<Value> = registry::groups()
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, versions)| group_doc(g, &versions))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/G`, if the group is served.
pub fn api_group(group: &str) -> Option<Value> {
    let (name, versions) = registry::groups()
        .into_iter()
        .find(|(g, _)| *g == group && !g.is_empty())?;
    let mut doc = group_doc(name, &versions);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Some(doc)
}

/// `/api/v1` or `/apis/G/V`, if served.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for r in registry::in_group_version(group, version) {
        let mut doc = json!({
            "name": r.plural,
            "singularName": r.singular(),
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs,
        });
        if !r.short_names.is_empty() {
            doc["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            doc["categories"] = json!(r.categories);
        }
        resources.push(doc);
        for s in r.subresources {
            let mut doc = json!({
                "name": format!("{}/{}", r.plural, s.name),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": s.kind.map_or(r.kind, |(_, _, k)| k),
                "verbs": s.verbs,
            });
            if let Some((g, v, _)) = s.kind.filter(|(g, v, _)| (*g, *v) != (r.group, r.version)) {
                doc["group"] = json!(g);
                doc["version"] = json!(v);
            }
            resources.push(doc);
        }
    }
    if resources.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}

/// Aggregated discovery for `/api` (`core`) or `/apis`, in `apidiscovery.k8s.io/<version>`.
pub fn aggregated(core: bool, version: &str) -> Value {
    let items: Vec<Value> = registry::groups()
        .into_iter()
        .filter(|(g, _)| g.is_empty() == core)
        .map(|(group, versions)| {
            let versions: Vec<Value> = versions
                .iter()
                .map(|v| {
                    let resources: Vec<Value> = registry::in_group_version(group, v)
                        .into_iter()
                        .map(|r| {
                            let subresources: Vec<Value> = r
                                .subresources
                                .iter()
                                .map(|s| {
                                    let (g, ver, k) = s.kind.unwrap_or(("", "", r.kind));
                                    json!({
                                        "subresource": s.name,
                                        "responseKind": {"group": g, "version": ver, "kind": k},
                                        "verbs": s.verbs,
                                    })
                                })
                                .collect();
                            let mut doc = json!({
                                "resource": r.plural,
                                "responseKind": {"group": "", "version": "", "kind": r.kind},
                                "scope": scope(r),
                                "singularResource": r.singular(),
                                "verbs": r.verbs,
                            });
                            if !r.short_names.is_empty() {
                                doc["shortNames"] = json!(r.short_names);
                            }
                            if !r.categories.is_empty() {
                                doc["categories"] = json!(r.categories);
                            }
                            if !subresources.is_empty() {
                                doc["subresources"] = json!(subresources);
                            }
                            doc
                        })
                        .collect();
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            json!({"metadata": {"name": group, "creationTimestamp": null}, "versions": versions})
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": items,
    })
}

/// A stable hash of a document's identity, for `?hash=` cache keys (FNV-1a over the registry
/// version and the path: the documents change only when the binary does).
pub fn hash(path: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in env!("CARGO_PKG_VERSION").bytes().chain(path.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016X}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_documents() {
        let core = resource_list("", "v1").unwrap();
        let pods = core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "pods")
            .unwrap();
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert_eq!(pods["categories"], json!(["all"]));
        let scale = resource_list("apps", "v1").unwrap()["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "deployments/scale")
            .cloned()
            .unwrap();
        assert_eq!(
            (scale["group"].clone(), scale["kind"].clone()),
            (json!("autoscaling"), json!("Scale"))
        );
        assert!(resource_list("apps", "v9").is_none());
        let groups = api_group_list();
        assert!(
            groups["groups"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g["name"] == "autoscaling" && g["preferredVersion"]["version"] == "v2")
        );
    }

    #[test]
    fn aggregated_documents() {
        let apis = aggregated(false, "v2");
        assert_eq!(apis["apiVersion"], "apidiscovery.k8s.io/v2");
        let apps = apis["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["metadata"]["name"] == "apps")
            .unwrap();
        let deploy = &apps["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "deployments")
            .unwrap();
        assert_eq!(deploy["scope"], "Namespaced");
        assert_eq!(aggregated(true, "v2")["items"].as_array().unwrap().len(), 1);
    }
}
