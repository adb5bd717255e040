//! The built-in resources vkube serves: Kubernetes 1.33's, in the groups the API offers, with
//! upstream's scope, verbs, short names, categories and subresources (as `kubectl api-resources`
//! lists them) and upstream's storage key segment (`/registry/<storage>/…`).
//!
//! One row per served group-version. Rows of one resource in several versions (autoscaling v1/v2)
//! or groups (core and events.k8s.io events) share their `storage`, as upstream stores them once.

#[derive(Debug, PartialEq, Eq)]
pub struct Resource {
    pub group: &'static str,
    pub version: &'static str,
    /// The plural, lowercase name used in paths.
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub verbs: &'static [&'static str],
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub subresources: &'static [Subresource],
    /// Where objects live: `/registry/<storage>/[<namespace>/]<name>`.
    pub storage: &'static str,
    /// Defined by a CustomResourceDefinition: [`custom::definition`] has the rest.
    pub custom: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Subresource {
    pub name: &'static str,
    /// The kind it reads and writes; `None` for the parent's kind.
    pub kind: Option<(&'static str, &'static str, &'static str)>,
    pub verbs: &'static [&'static str],
    /// Served by a kubelet, which vkube does not have until the syncer exists.
    pub kubelet: bool,
}

impl Resource {
    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn singular(&self) -> String {
        match custom::definition(self) {
            Some(d) => d.singular.clone(),
            None => self.kind.to_ascii_lowercase(),
        }
    }

    pub fn subresource(&self, name: &str) -> Option<&'static Subresource> {
        self.subresources.iter().find(|s| s.name == name)
    }

    pub fn allows(&self, verb: &str) -> bool {
        self.verbs.contains(&verb)
    }

    /// The store key of one object, or (with `name` empty) the prefix of a list.
    pub fn key(&self, namespace: &str, name: &str) -> String {
        let mut key = format!("/registry/{}/", self.storage);
        if self.namespaced && !namespace.is_empty() {
            key.push_str(namespace);
            key.push('/');
        }
        key.push_str(name);
        key
    }
}

mod builtin;
pub mod custom;
pub use builtin::RESOURCES;

/// Looks a resource up by its path coordinates: built-in, else defined by a CRD.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
        .or_else(|| custom::find(group, version, plural))
}

/// Every served resource: the built-in ones, then those of the established CRDs.
pub fn all() -> Vec<&'static Resource> {
    let mut all: Vec<&'static Resource> = RESOURCES.iter().collect();
    all.extend(custom::resources());
    all
}

/// The served groups, each with its versions, preferred first, in discovery order (built-in
/// groups, then CRD groups by name with their versions in Kubernetes version priority).
pub fn groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut groups: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for r in all() {
        match groups.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, versions)) if !versions.contains(&r.version) => versions.push(r.version),
            Some(_) => {}
            None => groups.push((r.group, vec![r.version])),
        }
    }
    groups
}

/// The resources of one group-version.
pub fn in_group_version(group: &str, version: &str) -> Vec<&'static Resource> {
    all()
        .into_iter()
        .filter(|r| r.group == group && r.version == version)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_upstream_layout() {
        assert_eq!(
            find("", "v1", "pods").unwrap().key("default", "web"),
            "/registry/pods/default/web"
        );
        assert_eq!(
            find("", "v1", "nodes").unwrap().key("", "n1"),
            "/registry/minions/n1"
        );
        assert_eq!(
            find("", "v1", "services").unwrap().key("ns", ""),
            "/registry/services/specs/ns/"
        );
        assert_eq!(
            find("apps", "v1", "deployments").unwrap().key("a", "b"),
            "/registry/deployments/a/b"
        );
    }

    #[test]
    fn every_row_is_unique_and_storage_is_shared_only_by_one_kind() {
        for (i, a) in RESOURCES.iter().enumerate() {
            for b in &RESOURCES[i + 1..] {
                assert!(
                    (a.group, a.version, a.plural) != (b.group, b.version, b.plural),
                    "duplicate {}/{}",
                    a.api_version(),
                    a.plural
                );
                if a.storage == b.storage {
                    assert_eq!(
                        (a.kind, a.namespaced),
                        (b.kind, b.namespaced),
                        "{}",
                        a.storage
                    );
                }
            }
        }
    }

    #[test]
    fn groups_list_preferred_version_first() {
        let groups = groups();
        assert_eq!(groups[0], ("", vec!["v1"]));
        assert!(groups.contains(&("autoscaling", vec!["v2", "v1"])));
        // Other tests install CRDs into the shared table: count the built-in groups.
        let builtin = groups
            .iter()
            .filter(|(g, _)| RESOURCES.iter().any(|r| r.group == *g))
            .count();
        assert_eq!(builtin, 20);
    }
}
