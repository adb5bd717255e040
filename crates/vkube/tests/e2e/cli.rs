//! kubectl commands about the cluster itself: version, discovery, explain, authentication, validation.

use crate::harness::*;

#[test]
fn version_cluster_info_and_discovery() {
    let server = Server::start();
    for &k in KUBECTLS {
        let version: serde_json::Value =
            serde_json::from_str(&run(&server, k, &["version", "-o", "json"])).unwrap();
        assert_eq!(version["serverVersion"]["major"], "1", "{k}");
        assert!(
            version["serverVersion"]["gitVersion"]
                .as_str()
                .unwrap()
                .starts_with("v1.33.0"),
            "{k}"
        );
        let info = strip_ansi(&run(&server, k, &["cluster-info"]));
        assert!(
            info.contains(&format!("is running at https://127.0.0.1:{}", server.port)),
            "{k}: {info}"
        );
        let resources = run(&server, k, &["api-resources"]);
        let deploy = lines(&resources)
            .into_iter()
            .find(|l| l.first().is_some_and(|n| n == "deployments"))
            .unwrap();
        assert_eq!(
            deploy,
            ["deployments", "deploy", "apps/v1", "true", "Deployment"],
            "{k}"
        );
        let pods = lines(&resources)
            .into_iter()
            .find(|l| l.first().is_some_and(|n| n == "pods"))
            .unwrap();
        assert_eq!(pods, ["pods", "po", "v1", "true", "Pod"], "{k}");
        let namespaced = run(
            &server,
            k,
            &["api-resources", "--namespaced=false", "-o", "name"],
        );
        assert!(
            namespaced.lines().any(|l| l == "namespaces")
                && !namespaced.lines().any(|l| l == "pods"),
            "{k}"
        );
        let versions = run(&server, k, &["api-versions"]);
        for gv in [
            "v1",
            "apps/v1",
            "autoscaling/v2",
            "autoscaling/v1",
            "rbac.authorization.k8s.io/v1",
            "admissionregistration.k8s.io/v1",
        ] {
            assert!(
                versions.lines().any(|l| l == gv),
                "{k}: {gv} missing from {versions}"
            );
        }
    }
}

#[test]
fn explain_and_field_validation() {
    let server = Server::start();
    for &k in KUBECTLS {
        // kubectl 1.27 explains from /openapi/v2 (protobuf), later ones from /openapi/v3.
        let explained = run(&server, k, &["explain", "deployment.spec.replicas"]);
        assert!(
            explained.contains("FIELD: replicas <integer>")
                && explained.contains("Number of desired pods"),
            "{k}: {explained}"
        );
        let ns = ns_name(k, "validation");
        apply_file(
            &server,
            k,
            &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"),
            "create",
        );
        let bad = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: typo\n  namespace: {ns}\ndata: {{a: b}}\ndatta: {{c: d}}\n"
        );
        let file = server.dir.path().join(format!("{ns}-bad.yaml"));
        std::fs::write(&file, bad).unwrap();
        let file = file.display().to_string();
        let strict = server.kubectl(k, &["create", "-f", &file]);
        assert!(
            !strict.ok && strict.stderr.contains("ConfigMap in version \"v1\" cannot be handled as a ConfigMap: strict decoding error: unknown field \"datta\""),
            "{k}: {}",
            strict.stderr
        );
        let warned = server.kubectl(k, &["create", "-f", &file, "--validate=warn"]);
        assert!(
            warned.ok && warned.stderr.contains("Warning: unknown field \"datta\""),
            "{k}: {}",
            warned.stderr
        );
        // A value of the wrong type is a decoding error, in every validation mode.
        let typo = format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: t\n  namespace: {ns}\nspec:\n  replicas: three\n  selector: {{matchLabels: {{a: b}}}}\n  template:\n    metadata: {{labels: {{a: b}}}}\n    spec:\n      containers: [{{name: c, image: nginx}}]\n"
        );
        let typo_file = server.dir.path().join(format!("{ns}-type.yaml"));
        std::fs::write(&typo_file, typo).unwrap();
        let wrong = server.kubectl(
            k,
            &[
                "create",
                "-f",
                &typo_file.display().to_string(),
                "--validate=false",
            ],
        );
        assert!(
            !wrong.ok && wrong.stderr.contains("json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32"),
            "{k}: {}",
            wrong.stderr
        );
        let dup = server.dir.path().join(format!("{ns}-dup.json"));
        std::fs::write(&dup, r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"dup"},"data":{"a":"1","a":"2"}}"#).unwrap();
        let dup = dup.display().to_string();
        let strict_dup = server.kubectl(
            k,
            &[
                "create",
                "--raw",
                &format!("/api/v1/namespaces/{ns}/configmaps?fieldValidation=Strict"),
                "-f",
                &dup,
            ],
        );
        assert!(
            !strict_dup.ok
                && strict_dup
                    .stderr
                    .contains("strict decoding error: duplicate field \"data.a\""),
            "{k}: {}",
            strict_dup.stderr
        );
        assert_eq!(
            run(
                &server,
                k,
                &[
                    "get",
                    "cm",
                    "typo",
                    "-n",
                    &ns,
                    "-o",
                    "jsonpath={.datta}{.data.a}"
                ]
            ),
            "b",
            "{k}: unknown fields are dropped"
        );
    }
}
