//! Namespaces through kubectl: a deletion held by a finalizer shows upstream's conditions, and
//! each namespace's `default` ServiceAccount and `kube-root-ca.crt` are repaired by their
//! controllers.

use crate::gc::eventually;
use crate::harness::*;

#[test]
fn a_finalizer_in_a_deleted_namespace_shows_in_its_conditions_until_removed() {
    let server = Server::start();
    let k = "kubectl";
    let ns = ns_name(k, "held");
    let manifest = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: held, namespace: {ns}, finalizers: [example.com/x]}}\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: free, namespace: {ns}}}\n"
    );
    apply_file(&server, k, &manifest, "create");
    run(&server, k, &["delete", "ns", &ns, "--wait=false"]);
    // The namespace controller's first pass: the free ConfigMap goes, the held one stays.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let namespace = loop {
        let out = run(&server, k, &["get", "ns", &ns, "-o", "json"]);
        let ns: serde_json::Value = serde_json::from_str(&out).unwrap();
        let conditions = ns["status"]["conditions"].as_array().cloned();
        if conditions.is_some_and(|c| c.len() == 5) {
            break ns;
        }
        assert!(std::time::Instant::now() < deadline, "no conditions: {out}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(namespace["status"]["phase"], "Terminating");
    assert_eq!(
        namespace["spec"]["finalizers"],
        serde_json::json!(["kubernetes"])
    );
    let condition = |kind: &str| {
        let c = namespace["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == kind)
            .unwrap_or_else(|| panic!("{kind} in {namespace}"));
        assert!(c["lastTransitionTime"].is_string(), "{c}");
        [&c["status"], &c["reason"], &c["message"]].map(|v| v.as_str().unwrap().to_string())
    };
    for (kind, status, reason, message) in [
        (
            "NamespaceDeletionDiscoveryFailure",
            "False",
            "ResourcesDiscovered",
            "All resources successfully discovered",
        ),
        (
            "NamespaceDeletionGroupVersionParsingFailure",
            "False",
            "ParsedGroupVersions",
            "All legacy kube types successfully parsed",
        ),
        (
            "NamespaceDeletionContentFailure",
            "False",
            "ContentDeleted",
            "All content successfully deleted, may be waiting on finalization",
        ),
        (
            "NamespaceContentRemaining",
            "True",
            "SomeResourcesRemain",
            "Some resources are remaining: configmaps. has 1 resource instances",
        ),
        (
            "NamespaceFinalizersRemaining",
            "True",
            "SomeFinalizersRemain",
            "Some content in the namespace has finalizers remaining: example.com/x in 1 resource instances",
        ),
    ] {
        assert_eq!(condition(kind), [status, reason, message], "{kind}");
    }
    assert_eq!(
        run(&server, k, &["get", "cm", "-n", &ns, "-o", "name"]),
        "configmap/held"
    );
    let held = run(
        &server,
        k,
        &[
            "get",
            "cm",
            "held",
            "-n",
            &ns,
            "-o",
            "jsonpath={.metadata.deletionTimestamp}",
        ],
    );
    assert!(!held.is_empty(), "the held ConfigMap is marked deleted");
    // Its owner lets go: the ConfigMap goes, then the namespace.
    run(
        &server,
        k,
        &[
            "patch",
            "cm",
            "held",
            "-n",
            &ns,
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ],
    );
    run(
        &server,
        k,
        &[
            "wait",
            "--for=delete",
            &format!("namespace/{ns}"),
            "--timeout=30s",
        ],
    );
}

/// Each namespace's `default` ServiceAccount and `kube-root-ca.crt` come back when deleted, and
/// the ConfigMap's certificate is put back when edited (upstream's serviceaccount and
/// root-ca-cert-publisher controllers, through the API as their own service accounts).
#[test]
fn namespace_defaults_are_repaired() {
    let server = Server::start();
    let ns = ns_name("kubectl", "defaults");
    run(&server, "kubectl", &["create", "namespace", &ns]);
    let ca = std::fs::read_to_string(server.dir.path().join("ca.crt")).unwrap();
    let root_ca = |server: &Server| {
        server
            .kubectl(
                "kubectl",
                &[
                    "get",
                    "configmap",
                    "kube-root-ca.crt",
                    "-n",
                    &ns,
                    "-o",
                    "jsonpath={.data.ca\\.crt}",
                ],
            )
            .stdout
    };
    let has_account = || {
        server
            .kubectl("kubectl", &["get", "serviceaccount", "default", "-n", &ns])
            .ok
    };
    eventually("the default ServiceAccount", &has_account);
    eventually("the root CA", || root_ca(&server).trim() == ca.trim());

    run(
        &server,
        "kubectl",
        &["delete", "serviceaccount", "default", "-n", &ns],
    );
    eventually("the default ServiceAccount again", &has_account);
    run(
        &server,
        "kubectl",
        &[
            "patch",
            "configmap",
            "kube-root-ca.crt",
            "-n",
            &ns,
            "-p",
            r#"{"data":{"ca.crt":"forged"}}"#,
        ],
    );
    eventually("the root CA put back", || {
        root_ca(&server).trim() == ca.trim()
    });
    run(
        &server,
        "kubectl",
        &["delete", "configmap", "kube-root-ca.crt", "-n", &ns],
    );
    eventually("the root CA again", || root_ca(&server).trim() == ca.trim());
    let managers = run(
        &server,
        "kubectl",
        &[
            "get",
            "configmap",
            "kube-root-ca.crt",
            "-n",
            &ns,
            "-o",
            "jsonpath={.metadata.managedFields[*].manager}",
        ],
    );
    assert_eq!(managers, "kube-controller-manager");
}
