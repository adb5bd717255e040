//! What the API serves, from aggregated discovery (`/api`, `/apis`), for the controllers that
//! act on any resource (the garbage collector, the resourcequota controller): each group's
//! resources in its preferred version (client-go's `ServerPreferredResources`), looked up by
//! resource or by kind. Custom resources appear once discovery lists them, so a miss is worth a
//! [`Resources::refresh`].

use kube::core::ApiResource;
use kube::discovery::{ApiCapabilities, Discovery, Scope};

/// One served resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Served {
    pub api: ApiResource,
    pub namespaced: bool,
    pub verbs: Vec<String>,
}

impl Served {
    pub fn supports(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }
}

/// The served resources as of the last [`Resources::refresh`].
#[derive(Debug, Default)]
pub(crate) struct Resources {
    all: Vec<Served>,
    /// Every served (group, version, kind), for owner references naming a version other than
    /// the preferred one.
    versions: Vec<(String, String, String)>,
}

fn served(api: ApiResource, caps: &ApiCapabilities) -> Served {
    Served {
        api,
        namespaced: caps.scope == Scope::Namespaced,
        verbs: caps.operations.clone(),
    }
}

impl Resources {
    /// Reads discovery again.
    pub async fn refresh(&mut self, client: &kube::Client) -> kube::Result<()> {
        let discovery = Discovery::new(client.clone()).run_aggregated().await?;
        let mut all = Vec::new();
        let mut versions = Vec::new();
        for group in discovery.groups() {
            // Subresources are within their resource's capabilities, not listed here.
            for (api, caps) in group.recommended_resources() {
                all.push(served(api, &caps));
            }
            for version in group.versions() {
                for (api, _) in group.versioned_resources(version) {
                    versions.push((api.group, api.version, api.kind));
                }
            }
        }
        self.all = all;
        self.versions = versions;
        Ok(())
    }

    pub fn all(&self) -> &[Served] {
        &self.all
    }

    /// The resource `plural` of `group`.
    pub fn by_resource(&self, group: &str, plural: &str) -> Option<&Served> {
        self.all
            .iter()
            .find(|s| s.api.group == group && s.api.plural == plural)
    }

    /// The resource of an `apiVersion` and `kind` (an owner reference's), in that version when
    /// it is served (upstream's RESTMapping); `None` when the API serves no such kind.
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<Served> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let preferred = self
            .all
            .iter()
            .find(|s| s.api.group == group && s.api.kind == kind)?;
        let mut found = preferred.clone();
        if self
            .versions
            .iter()
            .any(|(g, v, k)| g == group && v == version && k == kind)
        {
            found.api.version = version.to_string();
            found.api.api_version = api_version.to_string();
        }
        Some(found)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::testing::FakeApi;

    fn resource(name: &str, kind: &str, scope: &str) -> Value {
        let verbs = [
            "create",
            "get",
            "list",
            "watch",
            "update",
            "patch",
            "delete",
            "deletecollection",
        ];
        json!({"resource": name, "responseKind": {"group": "", "version": "", "kind": kind},
               "scope": scope, "verbs": verbs})
    }

    /// Serves a discovery of core pods, configmaps, services, persistentvolumeclaims,
    /// resourcequotas, replicationcontrollers, secrets and namespaces; apps/v1 replicasets and
    /// deployments; example.com/v1 widgets (and a cluster-scoped gizmo).
    pub(crate) fn serve_discovery(fake: &FakeApi) {
        fake.serve(
            "/api",
            json!({"kind": "APIGroupDiscoveryList", "items": [{"metadata": {"name": ""}, "versions": [
                {"version": "v1", "freshness": "Current", "resources": [
                    resource("pods", "Pod", "Namespaced"),
                    resource("configmaps", "ConfigMap", "Namespaced"),
                    resource("secrets", "Secret", "Namespaced"),
                    resource("services", "Service", "Namespaced"),
                    resource("persistentvolumeclaims", "PersistentVolumeClaim", "Namespaced"),
                    resource("resourcequotas", "ResourceQuota", "Namespaced"),
                    resource("replicationcontrollers", "ReplicationController", "Namespaced"),
                    resource("namespaces", "Namespace", "Cluster"),
                ]}]}]}),
        );
        fake.serve(
            "/apis",
            json!({"kind": "APIGroupDiscoveryList", "items": [
                {"metadata": {"name": "apps"}, "versions": [{"version": "v1", "freshness": "Current", "resources": [
                    resource("replicasets", "ReplicaSet", "Namespaced"),
                    resource("deployments", "Deployment", "Namespaced"),
                ]}]},
                {"metadata": {"name": "example.com"}, "versions": [
                    {"version": "v2", "freshness": "Current", "resources": [
                        resource("widgets", "Widget", "Namespaced"),
                        resource("gizmos", "Gizmo", "Cluster"),
                    ]},
                    {"version": "v1", "freshness": "Current", "resources": [
                        resource("widgets", "Widget", "Namespaced"),
                    ]},
                ]},
            ]}),
        );
    }

    #[tokio::test]
    async fn resources_by_name_and_by_kind_in_the_version_asked_for() {
        let fake = FakeApi::default();
        serve_discovery(&fake);
        let mut r = Resources::default();
        r.refresh(&fake.client()).await.unwrap();
        let pods = r.by_resource("", "pods").unwrap();
        assert!(pods.namespaced && pods.supports("watch"));
        assert_eq!(
            r.by_resource("example.com", "widgets").unwrap().api.version,
            "v2"
        );
        let v1 = r.by_kind("example.com/v1", "Widget").unwrap();
        assert_eq!(
            (v1.api.version.as_str(), v1.api.plural.as_str()),
            ("v1", "widgets")
        );
        // A version no longer served: the kind's preferred one.
        let old = r.by_kind("apps/v1beta2", "ReplicaSet").unwrap();
        assert_eq!(old.api.api_version, "apps/v1");
        assert!(!r.by_kind("example.com/v2", "Gizmo").unwrap().namespaced);
        assert!(r.by_kind("v1", "Nothing").is_none());
    }
}
