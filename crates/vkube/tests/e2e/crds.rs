//! CustomResourceDefinitions through kubectl: a cert-manager-like `Certificate` CRD written for
//! the test (two served versions, a status and a scale subresource, printer columns, a CEL rule,
//! defaults, short names and a category), then its objects through every kubectl command a user
//! reaches for, and the CRD's deletion taking its objects along.

use crate::harness::*;

/// The CRD in group `group`: v1 (stored) and v1beta1 (served, `None` conversion).
fn certificate_crd(group: &str) -> String {
    format!(
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: certificates.{group}
spec:
  group: {group}
  scope: Namespaced
  names:
    plural: certificates
    singular: certificate
    kind: Certificate
    shortNames: [vcert]
    categories: [vkube-test]
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {{}}
      scale:
        specReplicasPath: .spec.replicas
        statusReplicasPath: .status.replicas
    additionalPrinterColumns:
    - name: Ready
      type: string
      jsonPath: .status.conditions[?(@.type=="Ready")].status
    - name: Secret
      type: string
      jsonPath: .spec.secretName
    - name: Age
      type: date
      jsonPath: .metadata.creationTimestamp
    schema:
      openAPIV3Schema:
        type: object
        description: A certificate the test issues.
        properties:
          spec:
            type: object
            description: What to issue.
            required: [secretName]
            x-kubernetes-validations:
            - rule: "self.duration >= 3600"
              message: duration must be at least an hour
            properties:
              secretName:
                type: string
                description: The Secret that receives the key pair.
              duration:
                type: integer
                default: 7776000
              replicas:
                type: integer
                minimum: 0
              dnsNames:
                type: array
                items: {{type: string}}
              issuer:
                type: string
                enum: [letsencrypt, selfsigned]
          status:
            type: object
            properties:
              replicas: {{type: integer}}
              conditions:
                type: array
                items:
                  type: object
                  properties:
                    type: {{type: string}}
                    status: {{type: string}}
  - name: v1beta1
    served: true
    storage: false
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"#
    )
}

fn certificate(group: &str, ns: &str, secret: &str, extra: &str) -> String {
    format!(
        "apiVersion: {group}/v1\nkind: Certificate\nmetadata:\n  name: web\n  namespace: {ns}\nspec:\n  secretName: {secret}\n  replicas: 1\n{extra}"
    )
}

#[test]
fn a_crd_and_its_objects_through_kubectl() {
    let server = Server::start();
    for (i, &k) in KUBECTLS.iter().enumerate() {
        let group = format!("c{i}.vkube-test.example.com");
        let crd = format!("certificates.{group}");
        let ns = ns_name(k, "crd");
        run(&server, k, &["create", "namespace", &ns]);
        let out = apply_file(&server, k, &certificate_crd(&group), "apply");
        assert!(out.contains(&format!("{crd} created")), "{k}: {out}");
        run(
            &server,
            k,
            &[
                "wait",
                "--for=condition=Established",
                &format!("crd/{crd}"),
                "--timeout=10s",
            ],
        );
        let names = run(
            &server,
            k,
            &[
                "get",
                &format!("crd/{crd}"),
                "-o",
                "jsonpath={.status.acceptedNames.kind} {.status.storedVersions}",
            ],
        );
        assert_eq!(names, "Certificate [\"v1\"]", "{k}");

        // Discovery: kubectl finds the resource by plural, short name and category.
        let resources = run(
            &server,
            k,
            &["api-resources", &format!("--api-group={group}")],
        );
        let rows = lines(&resources);
        assert!(
            rows.iter()
                .any(|r| r.first().map(String::as_str) == Some("certificates")
                    && r.contains(&"vcert".to_string())
                    && r.contains(&format!("{group}/v1"))),
            "{k}: {resources}"
        );

        // Create, re-apply (no change), change: the client-side apply cycle on a custom kind.
        let cert = certificate(&group, &ns, "web-tls", "  dnsNames: [a.example.com]\n");
        let out = apply_file(&server, k, &cert, "apply");
        assert!(out.contains("created"), "{k}: {out}");
        let rv = run(
            &server,
            k,
            &[
                "get",
                "vcert",
                "web",
                "-n",
                &ns,
                "-o",
                "jsonpath={.metadata.resourceVersion}",
            ],
        );
        let out = apply_file(&server, k, &cert, "apply");
        assert!(out.contains("unchanged"), "{k}: {out}");
        let again = run(
            &server,
            k,
            &[
                "get",
                "vcert",
                "web",
                "-n",
                &ns,
                "-o",
                "jsonpath={.metadata.resourceVersion}",
            ],
        );
        assert_eq!(rv, again, "{k}: an unchanged apply writes nothing");
        let cert2 = certificate(&group, &ns, "web-tls-2", "");
        let out = apply_file(&server, k, &cert2, "apply");
        assert!(out.contains("configured"), "{k}: {out}");
        let stored: serde_json::Value = serde_json::from_str(&run(
            &server,
            k,
            &[
                "get",
                &format!("certificates.{group}"),
                "web",
                "-n",
                &ns,
                "-o",
                "json",
            ],
        ))
        .unwrap();
        assert_eq!(stored["spec"]["secretName"], "web-tls-2", "{k}");
        assert!(
            stored["spec"].get("dnsNames").is_none(),
            "{k}: dropped from the file: {stored}"
        );
        assert_eq!(stored["spec"]["duration"], 7776000, "{k}: defaulted");
        assert_eq!(stored["metadata"]["generation"], 2, "{k}");

        // Invalid objects: the schema and the CEL rule answer with upstream's 422.
        let bad = certificate(&group, &ns, "x", "  duration: 60\n  issuer: acme\n");
        let file = server.dir.path().join(format!("bad-{i}.yaml"));
        std::fs::write(&file, bad.replace("name: web", "name: bad")).unwrap();
        let out = server.kubectl(k, &["create", "-f", &file.display().to_string()]);
        assert!(!out.ok, "{k}");
        assert!(
            out.stderr.contains("spec.issuer: Unsupported value: \"acme\": supported values: \"letsencrypt\", \"selfsigned\""),
            "{k}: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains("duration must be at least an hour"),
            "{k}: {}",
            out.stderr
        );
        let missing = format!(
            "apiVersion: {group}/v1\nkind: Certificate\nmetadata:\n  name: nosecret\n  namespace: {ns}\nspec:\n  replicas: 1\n"
        );
        std::fs::write(&file, missing).unwrap();
        let out = server.kubectl(k, &["create", "-f", &file.display().to_string()]);
        assert!(
            !out.ok && out.stderr.contains("spec.secretName: Required value"),
            "{k}: {}",
            out.stderr
        );
        // Unknown fields: dropped with a warning, refused with --validate=strict.
        let unknown =
            certificate(&group, &ns, "u", "  colour: blue\n").replace("name: web", "name: unknown");
        std::fs::write(&file, &unknown).unwrap();
        let out = server.kubectl(
            k,
            &[
                "create",
                "--validate=strict",
                "-f",
                &file.display().to_string(),
            ],
        );
        assert!(
            !out.ok && out.stderr.contains("colour"),
            "{k}: {}",
            out.stderr
        );
        let out = server.kubectl(
            k,
            &[
                "create",
                "--validate=false",
                "-f",
                &file.display().to_string(),
            ],
        );
        assert!(out.ok, "{k}: {}", out.stderr);
        let pruned = run(
            &server,
            k,
            &["get", "vcert", "unknown", "-n", &ns, "-o", "json"],
        );
        assert!(!pruned.contains("colour"), "{k}: pruned: {pruned}");

        // Status subresource, printer columns, scale.
        run(
            &server,
            k,
            &[
                "patch",
                "vcert",
                "web",
                "-n",
                &ns,
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"status":{"conditions":[{"type":"Ready","status":"True"}]},"spec":{"secretName":"ignored"}}"#,
            ],
        );
        let table = run(&server, k, &["get", "vcert", "web", "-n", &ns]);
        let rows = lines(&table);
        assert_eq!(rows[0], ["NAME", "READY", "SECRET", "AGE"], "{k}: {table}");
        assert_eq!(rows[1][..3], ["web", "True", "web-tls-2"], "{k}: {table}");
        let wide = run(&server, k, &["get", "vkube-test", "-n", &ns, "-o", "name"]);
        assert!(wide.contains("certificate"), "{k}: category: {wide}");
        run(
            &server,
            k,
            &["scale", "vcert", "web", "-n", &ns, "--replicas=3"],
        );
        let replicas = run(
            &server,
            k,
            &[
                "get",
                "vcert",
                "web",
                "-n",
                &ns,
                "-o",
                "jsonpath={.spec.replicas}",
            ],
        );
        assert_eq!(replicas, "3", "{k}");

        // Another served version reads the same object.
        let beta = run(
            &server,
            k,
            &[
                "get",
                &format!("certificates.v1beta1.{group}"),
                "web",
                "-n",
                &ns,
                "-o",
                "jsonpath={.apiVersion} {.spec.secretName}",
            ],
        );
        assert_eq!(beta, format!("{group}/v1beta1 web-tls-2"), "{k}");

        // kubectl explain reads the published schema.
        let explain = run(
            &server,
            k,
            &[
                "explain",
                "certificates.spec.secretName",
                &format!("--api-version={group}/v1"),
            ],
        );
        assert!(
            explain.contains("The Secret that receives the key pair."),
            "{k}: {explain}"
        );

        // JSON patch, merge patch; a strategic merge patch is refused as upstream does.
        run(
            &server,
            k,
            &[
                "patch",
                "vcert",
                "web",
                "-n",
                &ns,
                "--type=merge",
                "-p",
                r#"{"spec":{"issuer":"selfsigned"}}"#,
            ],
        );
        run(
            &server,
            k,
            &[
                "patch",
                "vcert",
                "web",
                "-n",
                &ns,
                "--type=json",
                "-p",
                r#"[{"op":"test","path":"/spec/issuer","value":"selfsigned"},{"op":"replace","path":"/spec/issuer","value":"letsencrypt"}]"#,
            ],
        );
        let out = server.kubectl(
            k,
            &[
                "patch",
                "vcert",
                "web",
                "-n",
                &ns,
                "--type=strategic",
                "-p",
                r#"{"spec":{"issuer":"selfsigned"}}"#,
            ],
        );
        assert!(
            !out.ok
                && out
                    .stderr
                    .contains("application/strategic-merge-patch+json is not supported"),
            "{k}: {}",
            out.stderr
        );

        // Deleting the CRD deletes its objects, and the resource leaves discovery.
        run(&server, k, &["delete", "crd", &crd, "--timeout=30s"]);
        let out = server.kubectl(k, &["get", &format!("certificates.{group}"), "-n", &ns]);
        assert!(!out.ok, "{k}: {}", out.stdout);
        run(
            &server,
            k,
            &["create", "-f", &{
                let f = server.dir.path().join(format!("crd-again-{i}.yaml"));
                std::fs::write(&f, certificate_crd(&group)).unwrap();
                f.display().to_string()
            }],
        );
        run(
            &server,
            k,
            &[
                "wait",
                "--for=condition=Established",
                &format!("crd/{crd}"),
                "--timeout=10s",
            ],
        );
        let empty = run(
            &server,
            k,
            &[
                "get",
                &format!("certificates.{group}"),
                "-n",
                &ns,
                "-o",
                "name",
            ],
        );
        assert_eq!(empty, "", "{k}: the objects went with the CRD");
        run(&server, k, &["delete", "crd", &crd]);
    }
}
