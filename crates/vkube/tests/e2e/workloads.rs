//! Deployments, ReplicaSets and ReplicationControllers through kubectl: a Deployment creates its
//! ReplicaSet and pods (Pending: there is no kubelet), `kubectl scale` changes the pod count,
//! and deleting in the background, orphaning or in the foreground does what kubectl promises.

use crate::gc::{eventually, exists};
use crate::harness::*;

fn count(server: &Server, ns: &str, what: &str) -> usize {
    let out = run(server, "kubectl", &["get", what, "-n", ns, "-o", "name"]);
    out.lines().filter(|l| !l.is_empty()).count()
}

fn field(server: &Server, ns: &str, what: &str, path: &str) -> String {
    let path = format!("jsonpath={path}");
    run(server, "kubectl", &["get", what, "-n", ns, "-o", &path])
}

#[test]
fn deployments_scale_and_cascade() {
    let server = Server::start();
    let k = "kubectl";
    let ns = "workloads";
    run(&server, k, &["create", "namespace", ns]);
    run(
        &server,
        k,
        &[
            "create",
            "deployment",
            "web",
            "--image=nginx",
            "--replicas=2",
            "-n",
            ns,
        ],
    );
    eventually("the Deployment has its ReplicaSet and 2 pods", || {
        count(&server, ns, "replicasets") == 1 && count(&server, ns, "pods") == 2
    });
    let rs = field(&server, ns, "replicasets", "{.items[0].metadata.name}");
    let hash = field(
        &server,
        ns,
        "replicasets",
        "{.items[0].metadata.labels.pod-template-hash}",
    );
    assert_eq!(rs, format!("web-{hash}"));
    let pod = field(&server, ns, "pods", "{.items[0].metadata.name}");
    assert!(pod.starts_with(&format!("{rs}-")), "{pod}");
    eventually("the Deployment reports its replicas", || {
        field(
            &server,
            ns,
            "deployment/web",
            "{.status.replicas}/{.status.updatedReplicas}",
        ) == "2/2"
    });

    run(
        &server,
        k,
        &["scale", "deployment", "web", "--replicas=3", "-n", ns],
    );
    eventually("3 pods", || count(&server, ns, "pods") == 3);
    run(
        &server,
        k,
        &["scale", "deployment", "web", "--replicas=1", "-n", ns],
    );
    eventually("1 pod", || count(&server, ns, "pods") == 1);

    // Background (the default): the ReplicaSet and its pods follow the Deployment.
    run(&server, k, &["delete", "deployment", "web", "-n", ns]);
    eventually("ReplicaSet and pods are deleted", || {
        count(&server, ns, "replicasets") == 0 && count(&server, ns, "pods") == 0
    });
}

#[test]
fn orphaned_and_foreground_deletion() {
    let server = Server::start();
    let k = "kubectl";
    let ns = "workloads-cascade";
    run(&server, k, &["create", "namespace", ns]);
    let rs = format!(
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {{name: keep, namespace: {ns}}}\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: keep}}}}\n  template:\n    metadata: {{labels: {{app: keep}}}}\n    spec: {{containers: [{{name: c, image: nginx}}]}}\n"
    );
    apply_file(&server, k, &rs, "create");
    eventually("2 pods", || count(&server, ns, "pods") == 2);
    run(
        &server,
        k,
        &["delete", "rs", "keep", "-n", ns, "--cascade=orphan"],
    );
    assert!(!exists(&server, ns, "rs/keep"));
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(count(&server, ns, "pods"), 2, "orphans stay");
    let refs = field(&server, ns, "pods", "{.items[*].metadata.ownerReferences}");
    assert_eq!(refs, "", "orphans keep no reference");
    run(&server, k, &["delete", "pods", "--all", "-n", ns]);

    let rc = format!(
        "apiVersion: v1\nkind: ReplicationController\nmetadata: {{name: fg, namespace: {ns}}}\nspec:\n  replicas: 3\n  selector: {{app: fg}}\n  template:\n    metadata: {{labels: {{app: fg}}}}\n    spec: {{containers: [{{name: c, image: nginx}}]}}\n"
    );
    apply_file(&server, k, &rc, "create");
    eventually("3 pods", || count(&server, ns, "pods") == 3);
    // kubectl waits for the owner, which goes only after its pods.
    run(
        &server,
        k,
        &["delete", "rc", "fg", "-n", ns, "--cascade=foreground"],
    );
    assert!(!exists(&server, ns, "rc/fg"));
    assert_eq!(count(&server, ns, "pods"), 0);
}
