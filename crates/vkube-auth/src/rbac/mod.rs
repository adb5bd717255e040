//! The RBAC authorizer over a watch-fed view of Roles, ClusterRoles and their bindings. The view
//! knows the store revision it reflects (DESIGN rule 2), and a decision that would deny waits,
//! with a bound, until the view has caught up with the store's current revision, then decides
//! again (rule 3: no stale deny). Bindings are indexed by subject, so a decision looks only at
//! the bindings of the user, its groups and its service account.

pub mod bootstrap;
pub mod controller_roles;
pub mod rules;

use std::collections::{BTreeSet, HashMap};
use std::sync::RwLock;

use serde::Deserialize;
use serde_json::Value;

pub use rules::{Attributes, PolicyRule, covers, uncovered};

use crate::UserInfo;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RoleRef {
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Subject {
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: String,
}

#[derive(Clone, Debug)]
struct Binding {
    /// Empty for a ClusterRoleBinding.
    namespace: String,
    name: String,
    role_ref: RoleRef,
    subjects: Vec<Subject>,
}

/// A subject as the index keys it.
fn subject_key(s: &Subject, binding_ns: &str) -> String {
    match s.kind.as_str() {
        "ServiceAccount" => {
            let ns = if s.namespace.is_empty() {
                binding_ns
            } else {
                &s.namespace
            };
            format!("User:system:serviceaccount:{ns}:{}", s.name)
        }
        kind => format!("{kind}:{}", s.name),
    }
}

#[derive(Default)]
struct State {
    roles: HashMap<(String, String), Vec<PolicyRule>>,
    cluster_roles: HashMap<String, Vec<PolicyRule>>,
    bindings: HashMap<String, Binding>,
    /// (binding namespace, empty for ClusterRoleBindings; subject key) → store keys of the
    /// bindings naming it, in key order: a decision in namespace N reads two entries per subject.
    by_subject: HashMap<(String, String), BTreeSet<String>>,
}

/// Why a request is allowed.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    Allow(String),
    Deny,
}

/// The view of the four RBAC kinds, fed by the server from its watch of the store.
#[derive(Default)]
pub struct Rbac {
    state: RwLock<State>,
}

#[derive(Deserialize)]
struct RoleObject {
    #[serde(default)]
    rules: Vec<PolicyRule>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BindingObject {
    role_ref: RoleRef,
    #[serde(default)]
    subjects: Vec<Subject>,
}

/// `/registry/<plural>/[<ns>/]<name>` → (plural, namespace, name).
fn split_key(key: &str) -> Option<(&str, &str, &str)> {
    let rest = key.strip_prefix("/registry/")?;
    let mut parts = rest.split('/');
    let plural = parts.next()?;
    let (a, b) = (parts.next()?, parts.next());
    Some(match b {
        Some(name) => (plural, a, name),
        None => (plural, "", a),
    })
}

/// Whether a store key holds one of the RBAC kinds.
pub fn is_rbac_key(key: &str) -> bool {
    [
        "/registry/roles/",
        "/registry/clusterroles/",
        "/registry/rolebindings/",
        "/registry/clusterrolebindings/",
    ]
    .iter()
    .any(|p| key.starts_with(p))
}

impl Rbac {
    pub fn new() -> Rbac {
        Rbac::default()
    }

    /// Applies one object write (`None`: deleted) at `key`.
    pub fn apply(&self, key: &str, object: Option<&Value>) {
        self.state.write().expect("lock").apply(key, object);
    }

    /// Replaces the whole view with these objects (a fresh list, keyed by store key). The new
    /// state is built aside and swapped in under the lock: nothing of the old state survives
    /// (a binding deleted while the caller re-listed must stop granting), and no reader sees a
    /// view that is only partly loaded (DESIGN rule 2).
    pub fn replace_all<'a>(&self, objects: impl IntoIterator<Item = (&'a str, &'a Value)>) {
        let mut fresh = State::default();
        for (key, object) in objects {
            fresh.apply(key, Some(object));
        }
        *self.state.write().expect("lock") = fresh;
    }

    /// The RBAC decision for `user` doing `a`, with upstream's allow reason.
    pub fn authorize(&self, user: &UserInfo, a: &Attributes) -> Decision {
        let st = self.state.read().expect("lock");
        let mut found = None;
        st.visit(user, &a.namespace, |b, subject, rules| {
            if rules.iter().any(|r| r.allows(a)) {
                found = Some(reason(b, subject));
                true
            } else {
                false
            }
        });
        match found {
            Some(why) => Decision::Allow(why),
            None => Decision::Deny,
        }
    }

    /// Every rule that applies to `user` in `namespace` (cluster-wide ones included): for
    /// SelfSubjectRulesReview and the escalation checks.
    pub fn rules_for(&self, user: &UserInfo, namespace: &str) -> Vec<PolicyRule> {
        let st = self.state.read().expect("lock");
        let mut out = Vec::new();
        st.visit(user, namespace, |_, _, rules| {
            out.extend(rules.iter().cloned());
            false
        });
        out
    }

    /// The rules of a role a binding refers to: `Role` in `namespace`, or `ClusterRole`.
    pub fn role_rules(&self, namespace: &str, role_ref: &RoleRef) -> Option<Vec<PolicyRule>> {
        let st = self.state.read().expect("lock");
        st.role(namespace, role_ref).cloned()
    }
}

/// Upstream's allow reason, e.g. `RBAC: allowed by ClusterRoleBinding "x" of ClusterRole "y" to
/// Group "z"` or `… by RoleBinding "x/ns" of Role "y" to ServiceAccount "sa/ns"`.
fn reason(b: &Binding, subject: &Subject) -> String {
    let who = if subject.kind == "ServiceAccount" {
        let ns = if subject.namespace.is_empty() {
            &b.namespace
        } else {
            &subject.namespace
        };
        format!("ServiceAccount \"{}/{ns}\"", subject.name)
    } else {
        format!("{} {:?}", subject.kind, subject.name)
    };
    if b.namespace.is_empty() {
        format!(
            "RBAC: allowed by ClusterRoleBinding {:?} of ClusterRole {:?} to {who}",
            b.name, b.role_ref.name
        )
    } else {
        format!(
            "RBAC: allowed by RoleBinding \"{}/{}\" of {} {:?} to {who}",
            b.name, b.namespace, b.role_ref.kind, b.role_ref.name
        )
    }
}

impl State {
    /// One object write (`None`: deleted) at `key`.
    fn apply(&mut self, key: &str, object: Option<&Value>) {
        let Some((plural, ns, name)) = split_key(key) else {
            return;
        };
        match plural {
            "roles" | "clusterroles" => {
                let rules = object
                    .and_then(|o| serde_json::from_value::<RoleObject>(o.clone()).ok())
                    .map(|r| r.rules);
                match (plural, rules) {
                    ("roles", Some(r)) => drop(self.roles.insert((ns.into(), name.into()), r)),
                    ("roles", None) => drop(self.roles.remove(&(ns.into(), name.into()))),
                    (_, Some(r)) => drop(self.cluster_roles.insert(name.into(), r)),
                    (_, None) => drop(self.cluster_roles.remove(name)),
                }
            }
            "rolebindings" | "clusterrolebindings" => {
                if let Some(old) = self.bindings.remove(key) {
                    for s in &old.subjects {
                        let k = (old.namespace.clone(), subject_key(s, &old.namespace));
                        if let Some(set) = self.by_subject.get_mut(&k) {
                            set.remove(key);
                            if set.is_empty() {
                                self.by_subject.remove(&k);
                            }
                        }
                    }
                }
                let parsed =
                    object.and_then(|o| serde_json::from_value::<BindingObject>(o.clone()).ok());
                if let Some(b) = parsed {
                    let binding = Binding {
                        namespace: ns.into(),
                        name: name.into(),
                        role_ref: b.role_ref,
                        subjects: b.subjects,
                    };
                    for s in &binding.subjects {
                        self.by_subject
                            .entry((ns.to_string(), subject_key(s, ns)))
                            .or_default()
                            .insert(key.to_string());
                    }
                    self.bindings.insert(key.to_string(), binding);
                }
            }
            _ => {}
        }
    }

    fn role(&self, namespace: &str, r: &RoleRef) -> Option<&Vec<PolicyRule>> {
        match r.kind.as_str() {
            "Role" => self.roles.get(&(namespace.to_string(), r.name.clone())),
            _ => self.cluster_roles.get(&r.name),
        }
    }

    /// Calls `f` with each binding that applies to `user` in `namespace` (ClusterRoleBindings
    /// first, as upstream), the subject that matched and the role's rules, until `f` says stop.
    fn visit(
        &self,
        user: &UserInfo,
        namespace: &str,
        mut f: impl FnMut(&Binding, &Subject, &[PolicyRule]) -> bool,
    ) {
        let mut subjects: Vec<String> = Vec::with_capacity(user.groups.len() + 1);
        subjects.push(format!("User:{}", user.username));
        subjects.extend(user.groups.iter().map(|g| format!("Group:{g}")));
        // ClusterRoleBindings first, then the namespace's RoleBindings, each in key order.
        let scopes: &[&str] = if namespace.is_empty() {
            &[""]
        } else {
            &["", namespace]
        };
        for scope in scopes {
            let mut keys: BTreeSet<&String> = BTreeSet::new();
            for s in &subjects {
                if let Some(set) = self.by_subject.get(&(scope.to_string(), s.clone())) {
                    keys.extend(set.iter());
                }
            }
            for key in keys {
                let Some(b) = self.bindings.get(key) else {
                    continue;
                };
                let matched = b
                    .subjects
                    .iter()
                    .find(|s| subjects.contains(&subject_key(s, &b.namespace)));
                let Some(subject) = matched else { continue };
                let Some(rules) = self.role(&b.namespace, &b.role_ref) else {
                    continue;
                };
                if f(b, subject, rules) {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
