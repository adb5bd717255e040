//! Server-side apply, field ownership, `kubectl apply --prune` and `kubectl edit`, as kubectl
//! users meet them.

use std::process::Command;

use crate::harness::*;

fn configmap(ns: &str, data: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\n  namespace: {ns}\n  labels: {{app: ssa}}\ndata:\n{data}"
    )
}

fn write(server: &Server, name: &str, text: &str) -> String {
    let path = server.dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn rv(server: &Server, k: &str, what: &[&str]) -> String {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    args.extend_from_slice(&["-o", "jsonpath={.metadata.resourceVersion}"]);
    run(server, k, &args)
}

#[test]
fn server_side_apply_owns_fields_and_reports_conflicts() {
    let server = Server::start();
    for &k in KUBECTLS {
        let ns = ns_name(k, "ssa");
        run(&server, k, &["create", "namespace", &ns]);
        let file = write(
            &server,
            &format!("{ns}.yaml"),
            &configmap(&ns, "  a: \"1\"\n  b: \"2\"\n  c: \"3\"\n"),
        );
        let out = run(&server, k, &["apply", "--server-side", "-f", &file]);
        assert_eq!(out, "configmap/cfg serverside-applied", "{k}");
        let cm: serde_json::Value = serde_json::from_str(&run(
            &server,
            k,
            &[
                "get",
                "cm",
                "cfg",
                "-n",
                &ns,
                "-o",
                "json",
                "--show-managed-fields",
            ],
        ))
        .unwrap();
        let entry = &cm["metadata"]["managedFields"][0];
        assert_eq!(entry["manager"], "kubectl", "{k}: {cm}");
        assert_eq!(entry["operation"], "Apply", "{k}");
        assert_eq!(
            entry["fieldsV1"],
            serde_json::json!({"f:data": {"f:a": {}, "f:b": {}, "f:c": {}}, "f:metadata": {"f:labels": {"f:app": {}}}}),
            "{k}"
        );
        // The same configuration again changes nothing.
        let before = rv(&server, k, &["cm", "cfg", "-n", &ns]);
        run(&server, k, &["apply", "--server-side", "-f", &file]);
        assert_eq!(before, rv(&server, k, &["cm", "cfg", "-n", &ns]), "{k}");

        // Another manager takes b; applying a different b conflicts with it.
        run(
            &server,
            k,
            &[
                "patch",
                "cm",
                "cfg",
                "-n",
                &ns,
                "--type=merge",
                "-p",
                r#"{"data":{"b":"7"}}"#,
            ],
        );
        let changed = write(
            &server,
            &format!("{ns}-2.yaml"),
            &configmap(&ns, "  a: \"1\"\n  b: \"8\"\n"),
        );
        let out = server.kubectl(k, &["apply", "--server-side", "-f", &changed]);
        assert!(!out.ok, "{k}: {}", out.stdout);
        assert!(
            out.stderr
                .contains("Apply failed with 1 conflict: conflict with \"kubectl-patch\" using v1")
                && out.stderr.contains(": .data.b"),
            "{k}: {}",
            out.stderr
        );
        // Forced, the apply takes b, and drops c, which only it owned.
        run(
            &server,
            k,
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "-f",
                &changed,
            ],
        );
        let data = run(
            &server,
            k,
            &["get", "cm", "cfg", "-n", &ns, "-o", "jsonpath={.data}"],
        );
        let data: serde_json::Value = serde_json::from_str(&data).unwrap();
        assert_eq!(data, serde_json::json!({"a": "1", "b": "8"}), "{k}");
        let managers = run(
            &server,
            k,
            &[
                "get",
                "cm",
                "cfg",
                "-n",
                &ns,
                "--show-managed-fields",
                "-o",
                "jsonpath={.metadata.managedFields[*].manager}",
            ],
        );
        assert_eq!(
            managers, "kubectl",
            "{k}: kubectl-patch owns nothing any more"
        );

        // Two appliers share a Deployment: each owns its container of the keyed list.
        let deploy = |manager: &str, container: &str, image: &str| {
            let yaml = format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: {ns}\nspec:\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      containers:\n      - name: {container}\n        image: {image}\n"
            );
            let f = write(&server, &format!("{ns}-{manager}.yaml"), &yaml);
            run(
                &server,
                k,
                &[
                    "apply",
                    "--server-side",
                    &format!("--field-manager={manager}"),
                    "-f",
                    &f,
                ],
            )
        };
        deploy("team-a", "web", "nginx:1.27");
        deploy("team-b", "sidecar", "busybox:1.36");
        let names = run(
            &server,
            k,
            &[
                "get",
                "deploy",
                "web",
                "-n",
                &ns,
                "-o",
                "jsonpath={.spec.template.spec.containers[*].name}",
            ],
        );
        assert_eq!(names, "web sidecar", "{k}");
    }
}

#[test]
fn apply_prune_and_edit() {
    let server = Server::start();
    for &k in KUBECTLS {
        let ns = ns_name(k, "prune");
        run(&server, k, &["create", "namespace", &ns]);
        let cm = |name: &str| {
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {{set: prune}}\ndata:\n  k: v\n"
            )
        };
        let both = write(
            &server,
            &format!("{ns}-both.yaml"),
            &format!("{}---\n{}", cm("a"), cm("b")),
        );
        run(&server, k, &["apply", "-f", &both]);
        let only_a = write(&server, &format!("{ns}-a.yaml"), &cm("a"));
        let mut args = vec!["apply", "-f", only_a.as_str(), "--prune", "-l", "set=prune"];
        if k == "kubectl.1.27" {
            // 1.27 has no default allowlist… it takes core/v1 ConfigMaps by default too, but
            // says so explicitly to stay independent of the default.
            args.extend_from_slice(&["--prune-allowlist=core/v1/ConfigMap"]);
        }
        let out = run(&server, k, &args);
        assert!(out.contains("configmap/b pruned"), "{k}: {out}");
        let left = run(
            &server,
            k,
            &["get", "cm", "-n", &ns, "-l", "set=prune", "-o", "name"],
        );
        assert_eq!(left, "configmap/a", "{k}");

        // kubectl edit, with an editor that rewrites the value.
        let out = Command::new(kubectl_path(k))
            .args(["edit", "cm", "a", "-n", &ns])
            .env("KUBECONFIG", server.kubeconfig())
            .env("KUBE_EDITOR", "sed -i -e s/k:\\ v/k:\\ edited/")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("configmap/a edited"),
            "{k}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let value = run(
            &server,
            k,
            &["get", "cm", "a", "-n", &ns, "-o", "jsonpath={.data.k}"],
        );
        assert_eq!(value, "edited", "{k}");
        let managers = run(
            &server,
            k,
            &[
                "get",
                "cm",
                "a",
                "-n",
                &ns,
                "--show-managed-fields",
                "-o",
                "jsonpath={.metadata.managedFields[*].manager}",
            ],
        );
        assert!(managers.contains("kubectl-edit"), "{k}: {managers}");
    }
}
