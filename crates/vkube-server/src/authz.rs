//! Authorization: `system:masters` may do anything (no RBAC lookup, as upstream); everyone else is
//! decided by RBAC over a view of the RBAC objects fed by the server's one store watch. The view
//! knows the revision it reflects, and a deny first waits (at most `STALE_DENY_WAIT`) until the
//! view has reached the store's current revision, then decides again: a grant written through any
//! replica is honoured by every replica on the next request (DESIGN rule 3).

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use vkube_api::Status;
use vkube_auth::UserInfo;
use vkube_auth::rbac::{Attributes, Decision, Rbac, is_rbac_key};
use vkube_store::{ListOptions, Revision, Store, StoreError};

use crate::hub::Hub;
use crate::request::RequestInfo;

/// How long a deny may wait for the view to catch up with the store.
pub const STALE_DENY_WAIT: Duration = Duration::from_secs(2);

pub struct Authorizer {
    pub rbac: Rbac,
    /// The store revision the view reflects.
    revision: tokio::sync::watch::Sender<Revision>,
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
}

const PREFIXES: &[&str] = &[
    "/registry/clusterroles/",
    "/registry/clusterrolebindings/",
    "/registry/roles/",
    "/registry/rolebindings/",
];

impl Authorizer {
    /// Loads the RBAC objects at the store's current revision, then follows the hub.
    pub async fn start(
        store: Arc<dyn Store>,
        hub: Arc<Hub>,
    ) -> Result<Arc<Authorizer>, StoreError> {
        let authorizer = Arc::new(Authorizer {
            rbac: Rbac::new(),
            revision: tokio::sync::watch::channel(0).0,
            store: store.clone(),
            hub: hub.clone(),
        });
        let at = crate::hub::retrying_compacted(|| authorizer.load()).await?;
        let this = authorizer.clone();
        tokio::spawn(async move {
            let reload = || this.load();
            hub.follow(at, "authorizer", |c| this.take(c), reload).await
        });
        Ok(authorizer)
    }

    /// Lists the four kinds at one revision and replaces the view with them whole: this runs at
    /// start and whenever the hub's window no longer reaches back to the view, so whatever was
    /// deleted meanwhile must go with the old state rather than be merged into the new one.
    async fn load(&self) -> Result<Revision, StoreError> {
        let at = self.store.current_revision().await?;
        let mut objects = Vec::new();
        for prefix in PREFIXES {
            let options = ListOptions {
                revision: Some(at),
                ..ListOptions::default()
            };
            for kv in self.store.list(prefix, options).await?.items {
                if let Ok(obj) = serde_json::from_slice::<serde_json::Value>(&kv.value) {
                    objects.push((kv.key, obj));
                }
            }
        }
        self.rbac
            .replace_all(objects.iter().map(|(key, obj)| (key.as_str(), obj)));
        self.revision.send_replace(at);
        Ok(at)
    }

    fn take(&self, change: &crate::hub::Change) {
        if is_rbac_key(&change.key) {
            self.rbac.apply(&change.key, change.object.as_ref());
        }
        self.revision.send_replace(change.revision);
    }

    /// The revision the view reflects.
    pub fn revision(&self) -> Revision {
        *self.revision.borrow()
    }

    /// Decides, waiting for the view to catch up before a deny.
    pub async fn decide(&self, user: &UserInfo, a: &Attributes) -> Decision {
        if user.is_master() {
            return Decision::Allow("system:masters".into());
        }
        let first = self.rbac.authorize(user, a);
        if first != Decision::Deny {
            return first;
        }
        if !self.catch_up().await {
            return first;
        }
        // Decide again even when the view is already there: it may have caught up while the
        // store was asked, after the first decision read it.
        self.rbac.authorize(user, a)
    }

    /// Waits (at most `STALE_DENY_WAIT`) until the view reflects the store's current revision:
    /// the hub has fed everything up to it (its watch reports progress there, so writes the view
    /// never sees, such as another cluster's on a shared etcd, are not waited for), and the view
    /// has taken the last change at or below it. `false` when the store could not be asked or
    /// the hub did not get there: the view is then as current as it gets.
    pub(crate) async fn catch_up(&self) -> bool {
        let deadline = tokio::time::Instant::now() + STALE_DENY_WAIT;
        let Some(target) = self.hub.sync(STALE_DENY_WAIT).await else {
            return false;
        };
        if self.revision() < target {
            let mut rx = self.revision.subscribe();
            let _ = tokio::time::timeout_at(deadline, rx.wait_for(|r| *r >= target)).await;
        }
        true
    }

    /// The rules of the role a binding refers to. A role missing from the view may only not
    /// have reached it yet (written through another replica a moment ago), so the view first
    /// catches up with the store: "not found" is as much a decision as a deny (DESIGN rule 3).
    async fn role_rules(
        &self,
        namespace: &str,
        role_ref: &vkube_auth::rbac::RoleRef,
    ) -> Option<Vec<vkube_auth::rbac::PolicyRule>> {
        if let Some(rules) = self.rbac.role_rules(namespace, role_ref) {
            return Some(rules);
        }
        if !self.catch_up().await {
            return None;
        }
        self.rbac.role_rules(namespace, role_ref)
    }
}

/// What a request asks, in the authorizer's terms.
pub fn attributes(info: &RequestInfo, method: &Method, path: &str) -> Attributes {
    if info.is_resource && !info.resource.is_empty() {
        Attributes {
            verb: info.verb.clone(),
            resource_request: true,
            group: info.group.clone(),
            resource: info.resource.clone(),
            subresource: info.subresource.clone(),
            name: if info.name.is_empty() {
                info.selected_name.clone()
            } else {
                info.name.clone()
            },
            namespace: info.namespace.clone(),
            path: path.to_string(),
        }
    } else {
        Attributes {
            verb: method.as_str().to_lowercase(),
            path: path.to_string(),
            ..Attributes::default()
        }
    }
}

/// Authorizes a request: its allow reason, or the 403 to answer.
pub async fn authorize(
    authorizer: &Authorizer,
    user: &UserInfo,
    info: &RequestInfo,
    method: &Method,
    path: &str,
) -> Result<String, Status> {
    let a = attributes(info, method, path);
    match authorizer.decide(user, &a).await {
        // The allow reason, as the audit log records it; `system:masters` is allowed by
        // upstream's privileged-group authorizer, which gives no reason.
        Decision::Allow(_) if user.is_master() => Ok(String::new()),
        Decision::Allow(why) => Ok(why),
        Decision::Deny if a.resource_request => Err(forbidden(user, &a)),
        Decision::Deny => Err(Status::forbidden_path(&user.username, &a.verb, path)),
    }
}

/// `pods "x" is forbidden: User "u" cannot get resource "pods" in API group "" in the namespace "ns"`
pub fn forbidden(user: &UserInfo, a: &Attributes) -> Status {
    let resource = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let scope = if a.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace {:?}", a.namespace)
    };
    let why = format!(
        "User {:?} cannot {} resource {resource:?} in API group {:?} {scope}",
        user.username, a.verb, a.group
    );
    Status::forbidden(&a.resource, &a.group, &a.name, &why)
}

/// A rule as upstream prints it in escalation errors: `{APIGroups:["apps"], Resources:["deployments"], Verbs:["get"]}`.
fn describe(r: &vkube_auth::rbac::PolicyRule) -> String {
    let list = |v: &[String]| {
        format!(
            "[{}]",
            v.iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(" ")
        )
    };
    let mut parts = Vec::new();
    if !r.api_groups.is_empty() {
        parts.push(format!("APIGroups:{}", list(&r.api_groups)));
    }
    if !r.resources.is_empty() {
        parts.push(format!("Resources:{}", list(&r.resources)));
    }
    if !r.resource_names.is_empty() {
        parts.push(format!("ResourceNames:{}", list(&r.resource_names)));
    }
    if !r.non_resource_urls.is_empty() {
        parts.push(format!("NonResourceURLs:{}", list(&r.non_resource_urls)));
    }
    parts.push(format!("Verbs:{}", list(&r.verbs)));
    format!("{{{}}}", parts.join(", "))
}

/// Escalation prevention for writes of Roles, ClusterRoles and their bindings: a user may only
/// grant what it holds, unless it has `escalate` on the role (or `bind` on the role a binding
/// names). `system:masters` skips the check. As upstream, a binding whose role does not exist
/// is refused with that role's NotFound unless the user may `bind` it: otherwise anyone who may
/// write bindings could pre-bind a role's name and gain whatever a later role of that name grants.
pub async fn check_escalation(
    authorizer: &Authorizer,
    user: &UserInfo,
    resource: &vkube_api::Resource,
    obj: &serde_json::Value,
) -> Result<(), Status> {
    if resource.group != "rbac.authorization.k8s.io" || user.is_master() {
        return Ok(());
    }
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let namespace = obj["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // What the object grants: a role's own rules, or (looked up only when the `bind` verb does
    // not settle it, as upstream) the rules of the role a binding names.
    let (verb, role_resource, role_name, role_ref) = match resource.kind {
        "Role" | "ClusterRole" => ("escalate", resource.plural, name.clone(), None),
        _ => {
            let role_ref: vkube_auth::rbac::RoleRef =
                match serde_json::from_value(obj["roleRef"].clone()) {
                    Ok(r) => r,
                    Err(_) => return Ok(()),
                };
            let plural = if role_ref.kind == "Role" {
                "roles"
            } else {
                "clusterroles"
            };
            ("bind", plural, role_ref.name.clone(), Some(role_ref))
        }
    };
    let allowed_verb = Attributes {
        verb: verb.into(),
        resource_request: true,
        group: "rbac.authorization.k8s.io".into(),
        resource: role_resource.into(),
        name: role_name,
        namespace: namespace.clone(),
        ..Attributes::default()
    };
    if authorizer.decide(user, &allowed_verb).await != Decision::Deny {
        return Ok(());
    }
    let wanted: Vec<vkube_auth::rbac::PolicyRule> = match role_ref {
        None => serde_json::from_value(obj["rules"].clone()).unwrap_or_default(),
        Some(role_ref) => match authorizer.role_rules(&namespace, &role_ref).await {
            Some(rules) => rules,
            None => {
                return Err(Status::not_found(
                    role_resource,
                    "rbac.authorization.k8s.io",
                    &role_ref.name,
                ));
            }
        },
    };
    let owned = authorizer.rbac.rules_for(user, &namespace);
    let missing: Vec<String> = wanted
        .iter()
        .flat_map(|r| vkube_auth::rbac::uncovered(&owned, r))
        .map(|r| describe(&r))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let groups = user
        .groups
        .iter()
        .map(|g| format!("{g:?}"))
        .collect::<Vec<_>>()
        .join(" ");
    let why = format!(
        "user {:?} (groups=[{groups}]) is attempting to grant RBAC permissions not currently held:\n{}",
        user.username,
        missing.join("\n")
    );
    Err(Status::forbidden(
        resource.plural,
        resource.group,
        &name,
        &why,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use vkube_store::MemoryStore;

    async fn put(store: &dyn Store, key: &str, obj: serde_json::Value) {
        store
            .create(key, serde_json::to_vec(&obj).unwrap(), None)
            .await
            .unwrap();
    }

    fn user(name: &str) -> UserInfo {
        UserInfo {
            username: name.into(),
            groups: vec!["system:authenticated".into()],
            ..UserInfo::default()
        }
    }

    fn rbac(plural: &str) -> &'static vkube_api::Resource {
        vkube_api::registry::find("rbac.authorization.k8s.io", "v1", plural).unwrap()
    }

    /// A store where "alice" may write RoleBindings in "team", and an authorizer over it.
    async fn setup(extra_rules: serde_json::Value) -> (Arc<dyn Store>, Arc<Authorizer>) {
        let store: Arc<dyn Store> = MemoryStore::new();
        let mut rules = vec![json!({"apiGroups": ["rbac.authorization.k8s.io"],
            "resources": ["rolebindings"], "verbs": ["create", "update"]})];
        rules.extend(extra_rules.as_array().cloned().unwrap_or_default());
        put(
            &*store,
            "/registry/clusterroles/binding-writer",
            json!({"metadata": {"name": "binding-writer"}, "rules": rules}),
        )
        .await;
        put(
            &*store,
            "/registry/rolebindings/team/alice",
            json!({"metadata": {"name": "alice", "namespace": "team"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                               "name": "binding-writer"},
                   "subjects": [{"kind": "User", "name": "alice"}]}),
        )
        .await;
        let hub = Hub::start(store.clone()).await.unwrap();
        let authorizer = Authorizer::start(store.clone(), hub).await.unwrap();
        (store, authorizer)
    }

    fn binding_to(kind: &str, role: &str) -> serde_json::Value {
        json!({"metadata": {"name": "b", "namespace": "team"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
               "subjects": [{"kind": "User", "name": "bob"}]})
    }

    /// Issue 17, defect 6: writes the view never sees (another cluster on a shared etcd, keys
    /// outside /registry/) raise the store's revision; a deny must not wait for a change at that
    /// revision, which never comes, but only until the hub's watch reports it has got there. A
    /// grant made before them is still honoured.
    #[tokio::test]
    async fn a_deny_does_not_wait_for_writes_the_view_never_sees() {
        let (store, authorizer) = setup(json!([])).await;
        let get_pods = Attributes {
            verb: "get".into(),
            resource_request: true,
            resource: "pods".into(),
            namespace: "team".into(),
            ..Attributes::default()
        };
        put(
            &*store,
            "/registry/clusterroles/reader",
            json!({"metadata": {"name": "reader"},
                   "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}),
        )
        .await;
        for i in 0..3 {
            put(&*store, &format!("/elsewhere/{i}"), json!({})).await;
        }
        let started = tokio::time::Instant::now();
        assert_eq!(
            authorizer.decide(&user("carol"), &get_pods).await,
            Decision::Deny
        );
        assert!(
            started.elapsed() < STALE_DENY_WAIT / 4,
            "a deny waited {:?}",
            started.elapsed()
        );
        put(
            &*store,
            "/registry/clusterrolebindings/carol",
            json!({"metadata": {"name": "carol"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                               "name": "reader"},
                   "subjects": [{"kind": "User", "name": "carol"}]}),
        )
        .await;
        put(&*store, "/elsewhere/after", json!({})).await;
        assert_ne!(
            authorizer.decide(&user("carol"), &get_pods).await,
            Decision::Deny
        );
    }

    #[tokio::test]
    async fn a_reload_forgets_what_was_deleted_meanwhile() {
        let store: Arc<dyn Store> = MemoryStore::new();
        put(
            &*store,
            "/registry/clusterroles/reader",
            json!({"metadata": {"name": "reader"},
                   "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}),
        )
        .await;
        put(
            &*store,
            "/registry/clusterrolebindings/alice",
            json!({"metadata": {"name": "alice"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                               "name": "reader"},
                   "subjects": [{"kind": "User", "name": "alice"}]}),
        )
        .await;
        // Not following the hub: the delete below reaches the view only through a re-list, as
        // after a lagged or too-old watch.
        let authorizer = Authorizer {
            rbac: Rbac::new(),
            revision: tokio::sync::watch::channel(0).0,
            store: store.clone(),
            hub: Hub::start(store.clone()).await.unwrap(),
        };
        authorizer.load().await.unwrap();
        let get_pods = Attributes {
            verb: "get".into(),
            resource_request: true,
            resource: "pods".into(),
            namespace: "default".into(),
            ..Attributes::default()
        };
        let alice = user("alice");
        assert_ne!(authorizer.rbac.authorize(&alice, &get_pods), Decision::Deny);
        store
            .delete("/registry/clusterrolebindings/alice", None)
            .await
            .unwrap();
        let at = authorizer.load().await.unwrap();
        assert_eq!(authorizer.revision(), at);
        assert_eq!(
            authorizer.rbac.authorize(&alice, &get_pods),
            Decision::Deny,
            "a binding deleted before the re-list must not keep granting"
        );
    }

    #[tokio::test]
    async fn a_binding_to_a_missing_role_is_refused_as_upstream() {
        let (_store, authorizer) = setup(json!([])).await;
        let alice = user("alice");
        for (kind, plural) in [("ClusterRole", "clusterroles"), ("Role", "roles")] {
            let err = check_escalation(
                &authorizer,
                &alice,
                rbac("rolebindings"),
                &binding_to(kind, "missing"),
            )
            .await
            .expect_err("a binding to a role that does not exist must not pass");
            assert_eq!(err.code, 404);
            assert_eq!(err.reason, "NotFound");
            assert_eq!(
                err.message,
                format!("{plural}.rbac.authorization.k8s.io \"missing\" not found")
            );
        }
    }

    #[tokio::test]
    async fn bind_on_a_missing_role_lets_the_binding_through() {
        let bind = json!([{"apiGroups": ["rbac.authorization.k8s.io"],
            "resources": ["clusterroles"], "verbs": ["bind"], "resourceNames": ["missing"]}]);
        let (_store, authorizer) = setup(bind).await;
        let ok = check_escalation(
            &authorizer,
            &user("alice"),
            rbac("rolebindings"),
            &binding_to("ClusterRole", "missing"),
        )
        .await;
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[tokio::test]
    async fn a_role_written_just_now_is_found_and_checked() {
        let (store, authorizer) = setup(json!([])).await;
        let alice = user("alice");
        // Written after the view loaded: the check must find it (not call it missing), and
        // then refuse it for the rules alice does not hold.
        put(
            &*store,
            "/registry/clusterroles/secret-reader",
            json!({"metadata": {"name": "secret-reader"},
                   "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]}),
        )
        .await;
        let err = check_escalation(
            &authorizer,
            &alice,
            rbac("rolebindings"),
            &binding_to("ClusterRole", "secret-reader"),
        )
        .await
        .expect_err("alice cannot read secrets, so she cannot grant it");
        assert_eq!(err.code, 403);
        assert!(
            err.message
                .contains("is attempting to grant RBAC permissions not currently held")
                && err.message.contains(r#"Resources:["secrets"]"#),
            "{}",
            err.message
        );
    }
}
