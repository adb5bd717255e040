//! Policy matching rule field by rule field, and validation in upstream's words.

use super::*;

fn policy(rules: &str) -> Policy {
    Policy::parse(&format!(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n{rules}"
    ))
    .unwrap_or_else(|e| panic!("{e}"))
}

fn user(name: &str, groups: &[&str]) -> UserInfo {
    UserInfo {
        username: name.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        ..UserInfo::default()
    }
}

fn res(verb: &str, group: &str, resource: &str, sub: &str, ns: &str, name: &str) -> Attributes {
    Attributes {
        verb: verb.into(),
        resource_request: true,
        group: group.into(),
        resource: resource.into(),
        subresource: sub.into(),
        name: name.into(),
        namespace: ns.into(),
        path: String::new(),
    }
}

fn path(verb: &str, p: &str) -> Attributes {
    Attributes {
        verb: verb.into(),
        path: p.into(),
        ..Attributes::default()
    }
}

fn level(p: &Policy, u: Option<&UserInfo>, a: &Attributes) -> Level {
    p.evaluate(u, a).level
}

#[test]
fn the_first_matching_rule_wins_and_no_match_is_none() {
    let p = policy(
        "- level: RequestResponse\n  resources: [{group: \"\", resources: [configmaps]}]\n\
         - level: None\n  resources: [{group: \"\", resources: [configmaps, secrets]}]\n\
         - level: Metadata\n  verbs: [get]\n",
    );
    let alice = user("alice", &[]);
    let cm = res("list", "", "configmaps", "", "default", "");
    assert_eq!(level(&p, Some(&alice), &cm), Level::RequestResponse);
    let secret = res("get", "", "secrets", "", "default", "s");
    assert_eq!(level(&p, Some(&alice), &secret), Level::None);
    let pod = res("get", "", "pods", "", "default", "p");
    assert_eq!(level(&p, Some(&alice), &pod), Level::Metadata);
    let list_pods = res("list", "", "pods", "", "default", "");
    assert_eq!(level(&p, Some(&alice), &list_pods), Level::None);
}

#[test]
fn users_and_groups_match_the_authenticated_user() {
    let p = policy(
        "- level: None\n  users: [\"system:kube-proxy\"]\n\
         - level: Request\n  userGroups: [\"system:serviceaccounts\"]\n\
         - level: Metadata\n",
    );
    let a = res("watch", "", "endpoints", "", "", "");
    assert_eq!(
        level(&p, Some(&user("system:kube-proxy", &[])), &a),
        Level::None
    );
    let sa = user("system:serviceaccount:ns:x", &["system:serviceaccounts"]);
    assert_eq!(level(&p, Some(&sa), &a), Level::Request);
    assert_eq!(
        level(&p, Some(&user("bob", &["devs"])), &a),
        Level::Metadata
    );
    // A request that failed authentication has no user: user and group rules pass it by.
    assert_eq!(level(&p, None, &a), Level::Metadata);
}

#[test]
fn resources_match_groups_subresources_wildcards_and_names() {
    let p = policy(
        "- level: Request\n  resources: [{group: \"\", resources: [\"pods/log\"]}]\n\
         - level: RequestResponse\n  resources: [{group: apps, resources: [\"deployments/*\"]}]\n\
         - level: Metadata\n  resources: [{group: \"\", resources: [\"*/status\"]}]\n\
         - level: Request\n  resources: [{group: \"\", resources: [configmaps], resourceNames: [controller-leader]}]\n\
         - level: RequestResponse\n  resources: [{group: batch}]\n\
         - level: Metadata\n  resources: [{group: \"rbac.authorization.k8s.io\", resources: [\"*\"]}]\n",
    );
    let u = user("u", &[]);
    let cases = [
        (
            res("get", "", "pods", "log", "ns", "p"),
            Level::Request,
            "pods/log",
        ),
        (
            res("get", "", "pods", "", "ns", "p"),
            Level::None,
            "pods/log is not pods",
        ),
        (
            res("get", "apps", "deployments", "scale", "ns", "d"),
            Level::RequestResponse,
            "deployments/*",
        ),
        (
            res("get", "apps", "deployments", "", "ns", "d"),
            Level::RequestResponse,
            "resource/* covers the resource itself",
        ),
        (
            res("update", "", "pods", "status", "ns", "p"),
            Level::Metadata,
            "*/status",
        ),
        (
            res("update", "apps", "deployments", "status", "ns", "d"),
            Level::RequestResponse,
            "*/status is for the core group only here",
        ),
        (
            res("get", "", "configmaps", "", "ns", "controller-leader"),
            Level::Request,
            "a resourceName",
        ),
        (
            res("get", "", "configmaps", "", "ns", "other"),
            Level::None,
            "another name",
        ),
        (
            res("create", "batch", "jobs", "", "ns", ""),
            Level::RequestResponse,
            "a group without resources covers all of them",
        ),
        (
            res("list", "rbac.authorization.k8s.io", "roles", "", "ns", ""),
            Level::Metadata,
            "*",
        ),
        (
            path("get", "/healthz"),
            Level::None,
            "resource rules never match a path",
        ),
    ];
    for (a, want, why) in cases {
        assert_eq!(level(&p, Some(&u), &a), want, "{why}: {a:?}");
    }
}

#[test]
fn namespaces_with_the_empty_one_meaning_cluster_scope() {
    let p = policy(
        "- level: Request\n  namespaces: [kube-system]\n\
         - level: Metadata\n  namespaces: [\"\"]\n",
    );
    let u = user("u", &[]);
    assert_eq!(
        level(
            &p,
            Some(&u),
            &res("get", "", "pods", "", "kube-system", "p")
        ),
        Level::Request
    );
    assert_eq!(
        level(&p, Some(&u), &res("get", "", "nodes", "", "", "n")),
        Level::Metadata
    );
    assert_eq!(
        level(&p, Some(&u), &res("get", "", "pods", "", "default", "p")),
        Level::None
    );
    assert_eq!(
        level(&p, Some(&u), &path("get", "/version")),
        Level::None,
        "a namespace rule never matches a non-resource request"
    );
}

#[test]
fn non_resource_urls_exact_and_prefixed() {
    let p = policy(
        "- level: None\n  nonResourceURLs: [\"/healthz*\", /version]\n\
         - level: Metadata\n  nonResourceURLs: [\"*\"]\n\
         - level: Request\n",
    );
    let u = user("u", &[]);
    assert_eq!(level(&p, Some(&u), &path("get", "/healthz")), Level::None);
    assert_eq!(
        level(&p, Some(&u), &path("get", "/healthz/ping")),
        Level::None
    );
    assert_eq!(level(&p, Some(&u), &path("get", "/version")), Level::None);
    assert_eq!(
        level(&p, Some(&u), &path("get", "/version/x")),
        Level::Metadata
    );
    assert_eq!(
        level(&p, Some(&u), &res("get", "", "pods", "", "ns", "p")),
        Level::Request,
        "URL rules never match resource requests"
    );
}

#[test]
fn omit_stages_join_the_policys_and_the_rules() {
    let p = Policy::parse(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nomitManagedFields: true\nrules:\n\
         - level: Metadata\n  verbs: [watch]\n  omitStages: [ResponseStarted]\n  omitManagedFields: false\n\
         - level: Request\n",
    )
    .unwrap();
    let u = user("u", &[]);
    let watch = p.evaluate(Some(&u), &res("watch", "", "pods", "", "", ""));
    assert_eq!(watch.level, Level::Metadata);
    assert!(watch.omits(Stage::RequestReceived) && watch.omits(Stage::ResponseStarted));
    assert!(!watch.omits(Stage::ResponseComplete));
    assert!(!watch.omit_managed_fields, "the rule's false wins");
    let get = p.evaluate(Some(&u), &res("get", "", "pods", "", "", "p"));
    assert_eq!(get.omit_stages, vec![Stage::RequestReceived]);
    assert!(get.omit_managed_fields, "the policy's default");
}

fn refused(text: &str) -> String {
    Policy::parse(text).unwrap_err().0
}

#[test]
fn invalid_policies_are_refused_in_upstreams_words() {
    let head = "apiVersion: audit.k8s.io/v1\nkind: Policy\n";
    assert_eq!(
        refused(&format!("{head}rules: []\n")),
        "loaded illegal policy with 0 rules"
    );
    assert_eq!(
        refused(&format!("{head}rules:\n- verbs: [get]\n")),
        "rules[0].level: Required value"
    );
    assert_eq!(
        refused(&format!("{head}rules:\n- level: Everything\n")),
        r#"rules[0].level: Unsupported value: "Everything": supported values: "None", "Metadata", "Request", "RequestResponse""#
    );
    assert_eq!(
        refused(&format!(
            "{head}omitStages: [Done]\nrules:\n- level: None\n  nonResourceURLs: [healthz, \"/a*b\"]\n"
        )),
        r#"[omitStages[0]: Invalid value: "Done": allowed stages are RequestReceived,ResponseStarted,ResponseComplete,Panic, rules[0].nonResourceURLs[0]: Invalid value: "healthz": non-resource URL rules must begin with a '/' character, rules[0].nonResourceURLs[1]: Invalid value: "/a*b": non-resource URL wildcards '*' must be the final character of the rule]"#
    );
    assert_eq!(
        refused(&format!(
            "{head}rules:\n- level: None\n  nonResourceURLs: [/x]\n  namespaces: [default]\n"
        )),
        r#"rules[0].nonResourceURLs: Invalid value: []string{"/x"}: rules cannot apply to both regular resources and non-resource URLs"#
    );
    assert_eq!(
        refused(&format!(
            "{head}rules:\n- level: None\n  resources: [{{group: Apps_, resourceNames: [x]}}]\n"
        )),
        r#"[rules[0].resources.group: Invalid value: "Apps_": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*'), rules[0].resources.resourceNames: Invalid value: []string{"x"}: using resourceNames requires at least one resource]"#
    );
    assert!(
        refused("apiVersion: audit.k8s.io/v1beta1\nkind: Policy\nrules:\n- level: None\n")
            .starts_with(r#"failed decoding: no kind "Policy" is registered for version "audit.k8s.io/v1beta1""#)
    );
    assert!(
        refused("rules:\n- level: None\n")
            .starts_with("failed decoding: Object 'Kind' is missing in '")
    );
}

#[test]
fn a_file_that_fails_names_itself_and_json_is_read_too() {
    let dir = std::env::temp_dir().join(format!("vkube-audit-policy-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("policy.json");
    std::fs::write(
        &file,
        r#"{"apiVersion":"audit.k8s.io/v1","kind":"Policy","rules":[{"level":"Metadata"}]}"#,
    )
    .unwrap();
    let p = Policy::load(&file).unwrap();
    assert_eq!(level(&p, None, &path("get", "/livez")), Level::Metadata);
    std::fs::write(&file, r#"{"apiVersion":"audit.k8s.io/v1","kind":"Policy"}"#).unwrap();
    assert_eq!(
        Policy::load(&file).unwrap_err().0,
        format!(
            "loaded illegal policy with 0 rules: from file {}",
            file.display()
        )
    );
    let missing = dir.join("nope.yaml");
    assert!(Policy::load(&missing).unwrap_err().0.starts_with(&format!(
        "failed to read file path \"{}\": ",
        missing.display()
    )));
    std::fs::remove_dir_all(&dir).unwrap();
}
