//! Aggregated group/versions in discovery, as kube-aggregator's `apisHandler`,
//! `apiGroupHandler` and its aggregated discovery manager: the legacy `/apis` list and
//! `/apis/GROUP` come from the APIServices themselves; aggregated discovery
//! (`apidiscovery.k8s.io/v2`) carries each available backend's resources, read from its
//! `/apis/GROUP/VERSION` (kept for [`FRESH_FOR`]; a backend that does not answer is left out).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vkube_store::Store;

use super::{Aggregation, Registration};

const FRESH_FOR: Duration = Duration::from_secs(10);

/// Backend discovery documents by APIService name: (fetched at, its resourceVersion, the
/// APIResourceList).
#[derive(Default)]
pub struct Cache(Mutex<HashMap<String, (Instant, String, Value)>>);

/// The aggregated groups vkube does not serve itself, each with its registrations, in
/// upstream's order: groups by `groupPriorityMinimum` (highest first) then name, versions by
/// `versionPriority` (highest first) then Kubernetes version order.
fn remote_groups(regs: &[Arc<Registration>]) -> Vec<(String, Vec<Arc<Registration>>)> {
    let served: Vec<&str> = vkube_api::registry::groups()
        .into_iter()
        .map(|(g, _)| g)
        .collect();
    let mut groups: Vec<(String, Vec<Arc<Registration>>)> = Vec::new();
    for r in regs.iter().filter(|r| r.backend.is_some()) {
        if served.contains(&r.group.as_str()) {
            continue;
        }
        match groups.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, v)) => v.push(r.clone()),
            None => groups.push((r.group.clone(), vec![r.clone()])),
        }
    }
    for (_, versions) in &mut groups {
        versions.sort_by(|a, b| {
            b.version_priority
                .cmp(&a.version_priority)
                .then_with(|| vkube_api::registry::custom::version_order(&a.version, &b.version))
        });
    }
    let top = |v: &[Arc<Registration>]| v.iter().map(|r| r.group_priority).max().unwrap_or(0);
    groups.sort_by(|(ga, a), (gb, b)| top(b).cmp(&top(a)).then_with(|| ga.cmp(gb)));
    groups
}

fn group_doc(group: &str, versions: &[Arc<Registration>]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|r| json!({"groupVersion": format!("{group}/{}", r.version), "version": r.version}))
        .collect();
    json!({"name": group, "versions": versions, "preferredVersion": versions[0]})
}

/// Adds the aggregated groups to the legacy `/apis` APIGroupList.
pub fn extend_group_list(doc: &mut Value, regs: &[Arc<Registration>]) {
    if let Some(groups) = doc["groups"].as_array_mut() {
        groups.extend(
            remote_groups(regs)
                .iter()
                .map(|(g, versions)| group_doc(g, versions)),
        );
    }
}

/// `/apis/GROUP` of an aggregated group.
pub fn api_group(group: &str, regs: &[Arc<Registration>]) -> Option<Value> {
    let (name, versions) = remote_groups(regs).into_iter().find(|(g, _)| g == group)?;
    let mut doc = group_doc(&name, &versions);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Some(doc)
}

/// An APIResourceList's resources as aggregated discovery's APIResourceDiscovery entries
/// (subresources under their resource).
pub fn resources_of(list: &Value) -> Vec<Value> {
    let all = list["resources"].as_array().cloned().unwrap_or_default();
    let kind = |r: &Value| {
        json!({
            "group": r["group"].as_str().unwrap_or_default(),
            "version": r["version"].as_str().unwrap_or_default(),
            "kind": r["kind"],
        })
    };
    all.iter()
        .filter(|r| !r["name"].as_str().unwrap_or_default().contains('/'))
        .map(|r| {
            let name = r["name"].as_str().unwrap_or_default();
            let subresources: Vec<Value> = all
                .iter()
                .filter_map(|s| {
                    let sub = s["name"].as_str()?.strip_prefix(&format!("{name}/"))?;
                    Some(json!({"subresource": sub, "responseKind": kind(s), "verbs": s["verbs"]}))
                })
                .collect();
            let mut doc = json!({
                "resource": name,
                "responseKind": kind(r),
                "scope": if r["namespaced"] == true { "Namespaced" } else { "Cluster" },
                "singularResource": r["singularName"].as_str().unwrap_or_default(),
                "verbs": r["verbs"],
            });
            for field in ["shortNames", "categories"] {
                if r[field].as_array().is_some_and(|a| !a.is_empty()) {
                    doc[field] = r[field].clone();
                }
            }
            if !subresources.is_empty() {
                doc["subresources"] = json!(subresources);
            }
            doc
        })
        .collect()
}

impl Aggregation {
    /// The backend's APIResourceList for `reg`, from the cache while fresh.
    async fn backend_resources(&self, store: &dyn Store, reg: &Registration) -> Option<Value> {
        {
            let cache = self.discovery.0.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, rv, doc)) = cache.get(&reg.name)
                && *rv == reg.resource_version
                && at.elapsed() < FRESH_FOR
            {
                return Some(doc.clone());
            }
        }
        let doc = self
            .backend_json(store, reg, &format!("/apis/{}/{}", reg.group, reg.version))
            .await?;
        self.discovery
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                reg.name.clone(),
                (Instant::now(), reg.resource_version.clone(), doc.clone()),
            );
        Some(doc)
    }

    /// Adds the available aggregated group/versions, with their backends' resources, to an
    /// aggregated discovery document of `/apis`.
    pub async fn extend_aggregated(&self, store: &dyn Store, doc: &mut Value) {
        self.view.catch_up().await;
        let regs = self.view.all();
        let mut items = Vec::new();
        for (group, versions) in remote_groups(&regs) {
            let mut found = Vec::new();
            for reg in versions.iter().filter(|r| r.available) {
                if let Some(list) = self.backend_resources(store, reg).await {
                    found.push(json!({
                        "version": reg.version,
                        "resources": resources_of(&list),
                        "freshness": "Current",
                    }));
                }
            }
            if !found.is_empty() {
                items.push(json!({
                    "metadata": {"name": group, "creationTimestamp": null},
                    "versions": found,
                }));
            }
        }
        if let Some(list) = doc["items"].as_array_mut() {
            list.extend(items);
        }
    }
}

impl Aggregation {
    /// Adds the available aggregated group/versions to the OpenAPI v3 index; the hash follows
    /// the APIService's resourceVersion.
    pub async fn extend_openapi_index(&self, doc: &mut Value) {
        self.view.catch_up().await;
        for (group, versions) in remote_groups(&self.view.all()) {
            for reg in versions.iter().filter(|r| r.available) {
                let path = format!("apis/{group}/{}", reg.version);
                let hash = vkube_api::discovery::hash(&format!("{path}{}", reg.resource_version));
                doc["paths"][&path] =
                    json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")});
            }
        }
    }

    /// `/openapi/v3/apis/GROUP/VERSION` of an available aggregated group/version: the
    /// backend's document, fetched as the aggregator; `None` when it is none or the backend
    /// does not give it.
    pub async fn openapi_v3(&self, store: &dyn Store, path: &str) -> Option<Value> {
        let mut parts = path.split('/');
        let (Some("apis"), Some(group), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let reg = self.view.remote(group, version).filter(|r| r.available)?;
        self.backend_json(store, &reg, &format!("/openapi/v3/{path}"))
            .await
    }

    /// A JSON document the backend of `reg` answers 200 with at `path`, asked as
    /// system:kube-aggregator over the APIService's TLS client.
    async fn backend_json(
        &self,
        store: &dyn Store,
        reg: &Registration,
        path: &str,
    ) -> Option<Value> {
        let backend = reg.backend.as_ref()?;
        let connect =
            crate::webhooks::resolve(store, &backend.namespace, &backend.name, backend.port)
                .await
                .ok()?;
        let tls = self.client(reg.ca_bundle.as_deref(), reg.insecure).ok()?;
        let (code, body) = super::proxy::get(
            &tls,
            (&connect.0, connect.1),
            &format!("{}.{}.svc", backend.name, backend.namespace),
            path,
            &super::available::aggregator_user(),
            Duration::from_secs(5),
        )
        .await
        .ok()?;
        (code == 200).then(|| serde_json::from_slice(&body).ok())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(name: &str, group: &str, version: &str, gp: i64, vp: i64) -> Arc<Registration> {
        Arc::new(Registration::parse(&json!({
            "metadata": {"name": name},
            "spec": {"group": group, "version": version, "service": {"namespace": "n", "name": "s"},
                     "groupPriorityMinimum": gp, "versionPriority": vp},
        })))
    }

    #[test]
    fn aggregated_groups_join_the_group_list_by_priority() {
        let regs = vec![
            reg("v1.b.example.com", "b.example.com", "v1", 100, 10),
            reg("v1beta1.a.example.com", "a.example.com", "v1beta1", 1000, 5),
            reg("v1.a.example.com", "a.example.com", "v1", 1000, 20),
            // A group vkube serves is not taken over.
            reg("v1.apps", "apps", "v1", 1, 1),
        ];
        let mut doc = json!({"groups": []});
        extend_group_list(&mut doc, &regs);
        let names: Vec<&str> = doc["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a.example.com", "b.example.com"]);
        assert_eq!(doc["groups"][0]["preferredVersion"]["version"], "v1");
        assert_eq!(
            doc["groups"][0]["versions"][1]["groupVersion"],
            "a.example.com/v1beta1"
        );
        let group = api_group("b.example.com", &regs).unwrap();
        assert_eq!(group["kind"], "APIGroup");
        assert!(api_group("apps", &regs).is_none());
    }

    #[test]
    fn a_resource_list_becomes_aggregated_discovery() {
        let list = json!({"kind": "APIResourceList", "groupVersion": "w.example.com/v1", "resources": [
            {"name": "flunders", "singularName": "flunder", "namespaced": true, "kind": "Flunder",
             "verbs": ["get", "list"], "shortNames": ["fl"]},
            {"name": "flunders/status", "singularName": "", "namespaced": true, "kind": "Flunder",
             "verbs": ["get"]},
        ]});
        let out = resources_of(&list);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0]["resource"], "flunders");
        assert_eq!(out[0]["scope"], "Namespaced");
        assert_eq!(out[0]["shortNames"], json!(["fl"]));
        assert_eq!(out[0]["responseKind"]["kind"], "Flunder");
        assert_eq!(out[0]["subresources"][0]["subresource"], "status");
    }
}
