//! Rule matching and coverage, one test per row of `shared/conformance/rbac-scenarios.md`.

use super::*;

fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> PolicyRule {
    let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
    PolicyRule {
        verbs: v(verbs),
        api_groups: v(groups),
        resources: v(resources),
        ..Default::default()
    }
}

fn named(mut r: PolicyRule, names: &[&str]) -> PolicyRule {
    r.resource_names = names.iter().map(|s| s.to_string()).collect();
    r
}

fn urls(verbs: &[&str], paths: &[&str]) -> PolicyRule {
    PolicyRule {
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        non_resource_urls: paths.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn req(verb: &str, group: &str, resource: &str, sub: &str, name: &str) -> Attributes {
    Attributes {
        verb: verb.into(),
        resource_request: true,
        group: group.into(),
        resource: resource.into(),
        subresource: sub.into(),
        name: name.into(),
        namespace: "ns1".into(),
        path: String::new(),
    }
}

fn path(verb: &str, p: &str) -> Attributes {
    Attributes {
        verb: verb.into(),
        path: p.into(),
        ..Default::default()
    }
}

#[test]
fn star_verb_matches_any_verb() {
    assert!(rule(&["*"], &[""], &["pods"]).allows(&req("deletecollection", "", "pods", "", "")));
}

#[test]
fn star_group_matches_any_api_group() {
    assert!(rule(&["get"], &["*"], &["deployments"]).allows(&req(
        "get",
        "apps",
        "deployments",
        "",
        ""
    )));
}

#[test]
fn star_resource_matches_any_resource() {
    // Upstream's ResourceMatches: `*` also matches subresources (cluster-admin's `*` must allow
    // `pods/log` and `pods/exec`). The scenario table's "not pods/log" does not hold upstream.
    let r = rule(&["get"], &[""], &["*"]);
    assert!(r.allows(&req("get", "", "pods", "", "")));
    assert!(r.allows(&req("get", "", "pods", "log", "")));
}

#[test]
fn tuple_expansion_every_combination() {
    let r = rule(&["get", "list"], &["", "apps"], &["pods", "deployments"]);
    for verb in ["get", "list"] {
        for group in ["", "apps"] {
            for res in ["pods", "deployments"] {
                assert!(
                    r.allows(&req(verb, group, res, "", "")),
                    "{verb} {group} {res}"
                );
            }
        }
    }
}

#[test]
fn subresources_are_distinct() {
    assert!(!rule(&["get"], &[""], &["pods"]).allows(&req("get", "", "pods", "status", "")));
    assert!(!rule(&["get"], &[""], &["pods/status"]).allows(&req("get", "", "pods", "", "")));
    assert!(rule(&["get"], &[""], &["pods/status"]).allows(&req("get", "", "pods", "status", "")));
}

#[test]
fn star_slash_subresource() {
    let r = rule(&["update"], &["*"], &["*/scale"]);
    for res in ["pods", "deployments", "anything"] {
        assert!(r.allows(&req("update", "apps", res, "scale", "")), "{res}");
    }
    assert!(!r.allows(&req("update", "apps", "deployments", "", "")));
}

#[test]
fn resource_names() {
    let r = named(
        rule(&["get", "list", "create"], &[""], &["configmaps"]),
        &["a"],
    );
    assert!(r.allows(&req("get", "", "configmaps", "", "a")));
    assert!(!r.allows(&req("get", "", "configmaps", "", "b")));
    assert!(!r.allows(&req("list", "", "configmaps", "", "")));
    assert!(!r.allows(&req("create", "", "configmaps", "", "")));
}

#[test]
fn non_resource_urls() {
    assert!(urls(&["get"], &["*"]).allows(&path("get", "/anything/at/all")));
    let apis = urls(&["get"], &["/apis/*"]);
    assert!(apis.allows(&path("get", "/apis/v1/foobar")));
    assert!(!apis.allows(&path("get", "/apis")));
    assert!(!apis.allows(&path("get", "/api/v1")));
    // non-resource rule with wrong verb
    assert!(!urls(&["get"], &["/healthz"]).allows(&path("post", "/healthz")));
    // a resource rule never allows a path, nor a path rule a resource
    assert!(!rule(&["*"], &["*"], &["*"]).allows(&path("get", "/healthz")));
    assert!(!urls(&["*"], &["*"]).allows(&req("get", "", "pods", "", "")));
}

#[test]
fn coverage() {
    let c = |owned: &[PolicyRule], wanted: PolicyRule| covers(owned, &wanted);
    // exact match
    assert!(c(
        &[rule(&["get"], &[""], &["pods"])],
        rule(&["get"], &[""], &["pods"])
    ));
    // a subresource wildcard covers subresources
    assert!(c(
        &[rule(&["get"], &[""], &["*/status"])],
        rule(&["get"], &[""], &["pods/status"])
    ));
    assert!(c(
        &[rule(&["get"], &[""], &["pods/*"])],
        rule(&["get"], &[""], &["pods/log"])
    ));
    // several rules together cover one rule
    let owned = [
        rule(&["get"], &[""], &["pods"]),
        rule(&["list"], &[""], &["pods"]),
    ];
    assert!(c(&owned, rule(&["get", "list"], &[""], &["pods"])));
    // several API groups together cover one rule
    let owned = [
        rule(&["get"], &[""], &["pods"]),
        rule(&["get"], &["apps"], &["pods"]),
    ];
    assert!(c(&owned, rule(&["get"], &["", "apps"], &["pods"])));
    // a missing verb/resource combination is not covered
    assert!(!c(
        &[
            rule(&["get"], &[""], &["pods"]),
            rule(&["list"], &[""], &["secrets"])
        ],
        rule(&["get", "list"], &[""], &["pods"])
    ));
    // * in a group covers every group; a list does not cover *
    assert!(c(
        &[rule(&["get"], &["*"], &["pods"])],
        rule(&["get"], &["apps", "batch"], &["pods"])
    ));
    assert!(!c(
        &[rule(&["get"], &["apps", "batch"], &["pods"])],
        rule(&["get"], &["*"], &["pods"])
    ));
    // verbs * and resources * likewise
    assert!(c(
        &[rule(&["*"], &[""], &["*"])],
        rule(&["get", "delete"], &[""], &["pods", "secrets"])
    ));
    assert!(!c(
        &[rule(&["get", "list"], &[""], &["pods"])],
        rule(&["*"], &[""], &["pods"])
    ));
    assert!(!c(
        &[rule(&["get"], &[""], &["pods", "secrets"])],
        rule(&["get"], &[""], &["*"])
    ));
    // resourceNames: an empty list covers named ones, names do not cover all
    assert!(c(
        &[rule(&["get"], &[""], &["pods"])],
        named(rule(&["get"], &[""], &["pods"]), &["a"])
    ));
    assert!(!c(
        &[named(rule(&["get"], &[""], &["pods"]), &["a"])],
        rule(&["get"], &[""], &["pods"])
    ));
    assert!(c(
        &[named(rule(&["get"], &[""], &["pods"]), &["a", "b"])],
        named(rule(&["get"], &[""], &["pods"]), &["a"])
    ));
    // nonResourceURLs
    assert!(c(
        &[urls(&["get"], &["*"])],
        urls(&["get"], &["/api", "/metrics"])
    ));
    assert!(c(
        &[urls(&["get"], &["/api/*"])],
        urls(&["get"], &["/api/v1"])
    ));
    assert!(!c(
        &[urls(&["get"], &["/api/*"])],
        urls(&["get"], &["/api"])
    ));
    assert!(!c(&[urls(&["get"], &["/*"])], urls(&["get"], &[""])));
}
