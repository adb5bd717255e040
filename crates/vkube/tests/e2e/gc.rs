//! The garbage collector through kubectl: `kubectl delete` of an owner in the background (the
//! default), with `--cascade=orphan` and with `--cascade=foreground`, and a custom resource
//! owning a ConfigMap.

use std::time::{Duration, Instant};

use crate::harness::*;

/// Polls until `check` holds (the collector works asynchronously).
pub(crate) fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) fn exists(server: &Server, ns: &str, what: &str) -> bool {
    let out = server.kubectl("kubectl", &["get", "-n", ns, what, "-o", "name"]);
    out.ok
}

pub(crate) fn uid(server: &Server, ns: &str, what: &str) -> String {
    run(
        server,
        "kubectl",
        &["get", "-n", ns, what, "-o", "jsonpath={.metadata.uid}"],
    )
}

/// A ConfigMap owned by `owner` (apiVersion, kind, name, uid), blocking its owner's deletion.
fn dependent(ns: &str, name: &str, owner: (&str, &str, &str, &str)) -> String {
    let (api_version, kind, owner_name, uid) = owner;
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {ns}\n  ownerReferences:\n  - {{apiVersion: {api_version}, kind: {kind}, name: {owner_name}, uid: {uid}, blockOwnerDeletion: true}}\n"
    )
}

fn set_finalizers(server: &Server, ns: &str, name: &str, patch: &str) {
    let args = [
        "patch",
        "configmap",
        name,
        "-n",
        ns,
        "--type=merge",
        "-p",
        patch,
    ];
    run(server, "kubectl", &args);
}

fn owner_cm(server: &Server, ns: &str, name: &str) -> String {
    run(server, "kubectl", &["create", "configmap", name, "-n", ns]);
    uid(server, ns, &format!("configmap/{name}"))
}

#[test]
fn owners_deleted_in_the_background_in_the_foreground_and_orphaning() {
    let server = Server::start();
    let k = "kubectl";
    let ns = "gc";
    run(&server, k, &["create", "namespace", ns]);

    // Background (kubectl's default): the dependent goes after its owner.
    let u = owner_cm(&server, ns, "bg");
    apply_file(
        &server,
        k,
        &dependent(ns, "bg-dep", ("v1", "ConfigMap", "bg", &u)),
        "create",
    );
    run(&server, k, &["delete", "configmap", "bg", "-n", ns]);
    eventually("the background dependent is deleted", || {
        !exists(&server, ns, "configmap/bg-dep")
    });

    // Orphan: the dependent stays, without the reference.
    let u = owner_cm(&server, ns, "orphan");
    apply_file(
        &server,
        k,
        &dependent(ns, "orphan-dep", ("v1", "ConfigMap", "orphan", &u)),
        "create",
    );
    run(
        &server,
        k,
        &[
            "delete",
            "configmap",
            "orphan",
            "-n",
            ns,
            "--cascade=orphan",
        ],
    );
    assert!(!exists(&server, ns, "configmap/orphan"));
    let refs = run(
        &server,
        k,
        &[
            "get",
            "configmap",
            "orphan-dep",
            "-n",
            ns,
            "-o",
            "jsonpath={.metadata.ownerReferences}",
        ],
    );
    assert_eq!(refs, "", "the orphan keeps no reference");

    // Foreground: the owner is marked and waits until its dependent is gone.
    let u = owner_cm(&server, ns, "fg");
    apply_file(
        &server,
        k,
        &dependent(ns, "fg-dep", ("v1", "ConfigMap", "fg", &u)),
        "create",
    );
    // A finalizer of our own holds the dependent, so the owner is seen waiting.
    set_finalizers(
        &server,
        ns,
        "fg-dep",
        r#"{"metadata":{"finalizers":["example.com/hold"]}}"#,
    );
    run(
        &server,
        k,
        &[
            "delete",
            "configmap",
            "fg",
            "-n",
            ns,
            "--cascade=foreground",
            "--wait=false",
        ],
    );
    let finalizers = run(
        &server,
        k,
        &[
            "get",
            "configmap",
            "fg",
            "-n",
            ns,
            "-o",
            "jsonpath={.metadata.finalizers}",
        ],
    );
    assert!(finalizers.contains("foregroundDeletion"), "{finalizers}");
    eventually("the dependent is marked deleted", || {
        let ts = run(
            &server,
            k,
            &[
                "get",
                "configmap",
                "fg-dep",
                "-n",
                ns,
                "-o",
                "jsonpath={.metadata.deletionTimestamp}",
            ],
        );
        !ts.is_empty()
    });
    assert!(
        exists(&server, ns, "configmap/fg"),
        "the owner waits for its dependent"
    );
    set_finalizers(&server, ns, "fg-dep", r#"{"metadata":{"finalizers":null}}"#);
    eventually(
        "the foreground owner is deleted after its dependent",
        || !exists(&server, ns, "configmap/fg") && !exists(&server, ns, "configmap/fg-dep"),
    );
}

#[test]
fn a_custom_resource_owns_a_configmap() {
    let server = Server::start();
    let k = "kubectl";
    let ns = "gc-cr";
    run(&server, k, &["create", "namespace", ns]);
    let crd = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: apps.gc.example.com}
spec:
  group: gc.example.com
  scope: Namespaced
  names: {plural: apps, singular: app, kind: App}
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
"#;
    apply_file(&server, k, crd, "create");
    run(
        &server,
        k,
        &[
            "wait",
            "--for=condition=Established",
            "crd/apps.gc.example.com",
        ],
    );
    let app = format!(
        "apiVersion: gc.example.com/v1\nkind: App\nmetadata: {{name: web, namespace: {ns}}}\n"
    );
    apply_file(&server, k, &app, "create");
    let u = uid(&server, ns, "apps.gc.example.com/web");
    let dep = dependent(ns, "web-config", ("gc.example.com/v1", "App", "web", &u));
    apply_file(&server, k, &dep, "create");
    run(
        &server,
        k,
        &["delete", "apps.gc.example.com", "web", "-n", ns],
    );
    eventually("the ConfigMap of the deleted App is deleted", || {
        !exists(&server, ns, "configmap/web-config")
    });
}

/// The pod garbage collector: a pod bound to a node that does not exist is force-deleted once
/// the node has been missing for upstream's 40 s quarantine (checked every 20 s); a pod on a
/// node that exists stays.
#[test]
fn pods_of_a_node_that_does_not_exist_are_collected() {
    let server = Server::start();
    let ns = ns_name("kubectl", "podgc");
    run(&server, "kubectl", &["create", "namespace", &ns]);
    apply_file(
        &server,
        "kubectl",
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: podgc-here\n",
        "create",
    );
    for (pod, node) in [("orphan", "podgc-ghost"), ("kept", "podgc-here")] {
        apply_file(
            &server,
            "kubectl",
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {pod}\n  namespace: {ns}\nspec:\n  nodeName: {node}\n  containers:\n  - {{name: c, image: busybox}}\n"
            ),
            "create",
        );
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(120);
    while exists(&server, &ns, "pod/orphan") {
        assert!(Instant::now() < deadline, "the orphan is still there");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        started.elapsed() >= Duration::from_secs(35),
        "collected inside the quarantine, after {:?}",
        started.elapsed()
    );
    assert!(exists(&server, &ns, "pod/kept"), "a pod on a live node");
}
