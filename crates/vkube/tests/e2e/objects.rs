//! Object lifecycles through kubectl: create, read in every format, label, delete, conflicts, versions, pages.

use crate::harness::*;

#[test]
fn create_from_multi_document_yaml_and_read_in_every_format() {
    let server = Server::start();
    for &k in KUBECTLS {
        let ns = ns_name(k, "formats");
        let created = apply_file(&server, k, &MANIFEST.replace("NS", &ns), "create");
        assert_eq!(
            created.lines().collect::<Vec<_>>(),
            [
                format!("namespace/{ns} created"),
                "configmap/app-config created".into(),
                "configmap/other created".into(),
                "deployment.apps/web created".into()
            ],
            "{k}"
        );
        let table = lines(&run(&server, k, &["get", "configmaps", "-n", &ns]));
        assert_eq!(table[0], ["NAME", "DATA", "AGE"], "{k}");
        let rows: Vec<_> = table[1..]
            .iter()
            .map(|r| (r[0].clone(), r[1].clone()))
            .collect();
        assert_eq!(
            rows,
            [
                ("app-config".into(), "2".into()),
                ("kube-root-ca.crt".into(), "1".into()),
                ("other".into(), "1".into())
            ],
            "{k}"
        );
        assert_eq!(
            run(
                &server,
                k,
                &["get", "cm", "-n", &ns, "-l", "app=web", "-o", "name"]
            ),
            "configmap/app-config",
            "{k}"
        );
        assert_eq!(
            run(
                &server,
                k,
                &[
                    "get",
                    "cm",
                    "-n",
                    &ns,
                    "-l",
                    "app in (web,db),tier!=front",
                    "-o",
                    "name"
                ]
            ),
            "configmap/other",
            "{k}"
        );
        assert_eq!(
            run(
                &server,
                k,
                &[
                    "get",
                    "cm",
                    "-n",
                    &ns,
                    "--field-selector",
                    "metadata.name=other",
                    "-o",
                    "name"
                ]
            ),
            "configmap/other"
        );
        let json: serde_json::Value = serde_json::from_str(&run(
            &server,
            k,
            &["get", "cm", "app-config", "-n", &ns, "-o", "json"],
        ))
        .unwrap();
        assert_eq!(
            (json["kind"].as_str(), json["data"]["b"].as_str()),
            (Some("ConfigMap"), Some("2")),
            "{k}"
        );
        assert_eq!(
            json["metadata"]["uid"].as_str().map(str::len),
            Some(36),
            "{k}"
        );
        let yaml = run(
            &server,
            k,
            &["get", "cm", "app-config", "-n", &ns, "-o", "yaml"],
        );
        assert!(
            yaml.contains("kind: ConfigMap") && yaml.contains(&format!("namespace: {ns}")),
            "{k}: {yaml}"
        );
        assert_eq!(
            run(
                &server,
                k,
                &[
                    "get",
                    "cm",
                    "app-config",
                    "-n",
                    &ns,
                    "-o",
                    "jsonpath={.data.a}"
                ]
            ),
            "1",
            "{k}"
        );
        let custom = lines(&run(
            &server,
            k,
            &[
                "get",
                "cm",
                "-n",
                &ns,
                "-l",
                "app",
                "-o",
                "custom-columns=NAME:.metadata.name,A:.data.a",
            ],
        ));
        assert_eq!(
            custom,
            [
                vec!["NAME", "A"],
                vec!["app-config", "1"],
                vec!["other", "x"]
            ],
            "{k}"
        );
        let wide = lines(&run(&server, k, &["get", "ns", &ns, "-o", "wide"]));
        assert_eq!(
            (wide[0][..2].to_vec(), wide[1][..2].to_vec()),
            (
                vec!["NAME".to_string(), "STATUS".into()],
                vec![ns.clone(), "Active".into()]
            ),
            "{k}"
        );
        assert_eq!(
            run(
                &server,
                k,
                &["scale", "deployment", "web", "-n", &ns, "--replicas=3"]
            ),
            "deployment.apps/web scaled",
            "{k}"
        );
        assert_eq!(
            run(
                &server,
                k,
                &[
                    "get",
                    "deploy",
                    "web",
                    "-n",
                    &ns,
                    "-o",
                    "jsonpath={.spec.replicas}"
                ]
            ),
            "3",
            "{k}"
        );
        let all = run(&server, k, &["get", "all", "-n", &ns]);
        assert!(all.contains("deployment.apps/web"), "{k}: {all}");
        let sa = run(
            &server,
            k,
            &["get", "serviceaccounts", "-n", &ns, "-o", "name"],
        );
        assert_eq!(sa, "serviceaccount/default", "{k}");
        let missing = server.kubectl(k, &["get", "cm", "nope", "-n", &ns]);
        assert!(
            !missing.ok
                && missing
                    .stderr
                    .contains("Error from server (NotFound): configmaps \"nope\" not found"),
            "{k}: {}",
            missing.stderr
        );
        let dup = apply_file_result(&server, k, &MANIFEST.replace("NS", &ns));
        assert!(
            dup.contains("Error from server (AlreadyExists): error when creating")
                && dup.contains("configmaps \"app-config\" already exists"),
            "{k}: {dup}"
        );

        // Deletes: by name, by label, with -f, and --all.
        assert_eq!(
            run(&server, k, &["delete", "cm", "other", "-n", &ns]),
            "configmap \"other\" deleted",
            "{k}"
        );
        assert_eq!(
            run(&server, k, &["delete", "cm", "-n", &ns, "-l", "app=web"]),
            "configmap \"app-config\" deleted",
            "{k}"
        );
        let file = server.dir.path().join(format!("{ns}.yaml"));
        std::fs::write(
            &file,
            MANIFEST.replace("NS", &ns).split("---").last().unwrap(),
        )
        .unwrap();
        let file = file.display().to_string();
        assert_eq!(
            run(&server, k, &["delete", "-f", file.as_str()]),
            "deployment.apps \"web\" deleted",
            "{k}"
        );
        let all = run(&server, k, &["delete", "cm", "--all", "-n", &ns]);
        assert_eq!(all, "configmap \"kube-root-ca.crt\" deleted", "{k}");
    }
}

#[test]
fn label_and_annotate_with_overwrite_and_removal() {
    let server = Server::start();
    for &k in KUBECTLS {
        let ns = ns_name(k, "labels");
        apply_file(&server, k, &MANIFEST.replace("NS", &ns), "create");
        // `kubectl VERB cm app-config -n NS EXTRA…`
        let cmd = |verb: &str, extra: &[&str]| -> Vec<String> {
            [verb, "cm", "app-config", "-n", ns.as_str()]
                .iter()
                .chain(extra)
                .map(|s| s.to_string())
                .collect()
        };
        let go = |args: Vec<String>| {
            server.kubectl(k, &args.iter().map(String::as_str).collect::<Vec<_>>())
        };
        let ok = |args: Vec<String>| {
            let out = go(args);
            assert!(out.ok, "{k}: {}", out.stderr);
            out.stdout
        };
        assert_eq!(
            ok(cmd("label", &["env=prod"])),
            "configmap/app-config labeled",
            "{k}"
        );
        let clash = go(cmd("label", &["env=dev"]));
        assert!(
            !clash.ok
                && clash
                    .stderr
                    .contains("'env' already has a value (prod), and --overwrite is false"),
            "{k}: {}",
            clash.stderr
        );
        ok(cmd("label", &["env=dev", "--overwrite"]));
        assert_eq!(
            ok(cmd("get", &["-o", "jsonpath={.metadata.labels.env}"])),
            "dev",
            "{k}"
        );
        assert_eq!(
            ok(cmd("label", &["env-"])),
            "configmap/app-config unlabeled",
            "{k}"
        );
        let labels = ok(cmd("get", &["-o", "jsonpath={.metadata.labels}"]));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&labels).unwrap(),
            serde_json::json!({"app": "web", "tier": "front"}),
            "{k}"
        );
        // kubectl 1.27 prints "annotate", later ones "annotated".
        let annotated = ok(cmd("annotate", &["note=hello"]));
        assert!(
            annotated.starts_with("configmap/app-config annotate"),
            "{k}: {annotated}"
        );
        ok(cmd("annotate", &["note=bye", "--overwrite"]));
        assert_eq!(
            ok(cmd("get", &["-o", "jsonpath={.metadata.annotations.note}"])),
            "bye",
            "{k}"
        );
        ok(cmd("annotate", &["note-"]));
        assert_eq!(
            ok(cmd("get", &["-o", "jsonpath={.metadata.annotations.note}"])),
            "",
            "{k}"
        );
    }
}

#[test]
fn deleting_a_namespace_removes_its_contents_and_wait_sees_it() {
    let server = Server::start();
    for &k in KUBECTLS {
        let ns = ns_name(k, "doomed");
        apply_file(&server, k, &MANIFEST.replace("NS", &ns), "create");
        assert_eq!(
            run(&server, k, &["delete", "ns", &ns, "--wait=false"]),
            format!("namespace \"{ns}\" deleted")
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
        let gone = server.kubectl(k, &["get", "ns", &ns]);
        assert!(
            gone.stderr
                .contains(&format!("namespaces \"{ns}\" not found")),
            "{k}: {}",
            gone.stderr
        );
        // Recreating the namespace shows none of the old contents.
        apply_file(
            &server,
            k,
            MANIFEST.replace("NS", &ns).split("---").next().unwrap(),
            "create",
        );
        assert_eq!(
            run(&server, k, &["get", "cm,deploy", "-n", &ns, "-o", "name"]),
            "configmap/kube-root-ca.crt",
            "{k}"
        );
        let refused = server.kubectl(k, &["get", "cm", "-n", "no-such-namespace", "x"]);
        assert!(refused.stderr.contains("NotFound"), "{k}");
    }
}

#[test]
fn a_stale_update_gets_upstreams_conflict() {
    let server = Server::start();
    for &k in KUBECTLS {
        let ns = ns_name(k, "conflict");
        apply_file(&server, k, &MANIFEST.replace("NS", &ns), "create");
        let stale = run(
            &server,
            k,
            &["get", "cm", "app-config", "-n", &ns, "-o", "json"],
        );
        run(
            &server,
            k,
            &[
                "patch",
                "cm",
                "app-config",
                "-n",
                &ns,
                "--type=merge",
                "-p",
                r#"{"data":{"a":"changed"}}"#,
            ],
        );
        let file = server.dir.path().join(format!("stale-{ns}.json"));
        std::fs::write(&file, stale.replace("\"b\": \"2\"", "\"b\": \"3\"")).unwrap();
        let file = file.display().to_string();
        let args: Vec<&str> = ["replace", "-f", file.as_str()].into_iter().collect();
        let out = server.kubectl(k, &args);
        assert!(!out.ok, "{k}: a stale replace succeeded");
        assert!(
            out.stderr.contains("Error from server (Conflict): error when replacing")
                && out.stderr.contains("Operation cannot be fulfilled on configmaps \"app-config\": the object has been modified; please apply your changes to the latest version and try again"),
            "{k}: {}",
            out.stderr
        );
    }
}

#[test]
fn versions_that_share_storage_are_converted() {
    let server = Server::start();
    for &k in KUBECTLS {
        let ns = ns_name(k, "versions");
        let objects = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n---\n\
             apiVersion: v1\nkind: Event\nmetadata:\n  name: started\n  namespace: {ns}\n\
             involvedObject: {{kind: Pod, name: web-1, namespace: {ns}}}\nreason: Started\nmessage: container started\ntype: Normal\n---\n\
             apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata:\n  name: web\n  namespace: {ns}\n\
             spec:\n  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: web}}\n  minReplicas: 1\n  maxReplicas: 4\n  metrics:\n  - type: Resource\n    resource: {{name: cpu, target: {{type: Utilization, averageUtilization: 60}}}}\n"
        );
        apply_file(&server, k, &objects, "create");
        let note = run(
            &server,
            k,
            &[
                "get",
                "events.v1.events.k8s.io",
                "started",
                "-n",
                &ns,
                "-o",
                "jsonpath={.note}/{.regarding.name}",
            ],
        );
        assert_eq!(note, "container started/web-1", "{k}");
        let v1 = run(
            &server,
            k,
            &[
                "get",
                "horizontalpodautoscalers.v1.autoscaling",
                "web",
                "-n",
                &ns,
                "-o",
                "jsonpath={.apiVersion}/{.spec.targetCPUUtilizationPercentage}",
            ],
        );
        assert_eq!(v1, "autoscaling/v1/60", "{k}");
        let v2 = run(
            &server,
            k,
            &[
                "get",
                "hpa",
                "web",
                "-n",
                &ns,
                "-o",
                "jsonpath={.apiVersion}/{.spec.metrics[0].resource.target.averageUtilization}",
            ],
        );
        assert_eq!(v2, "autoscaling/v2/60", "{k}");
    }
}

#[test]
fn pages_and_body_limits() {
    let server = Server::start();
    for &k in KUBECTLS {
        let ns = ns_name(k, "pages");
        let mut yaml = format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n");
        for i in 0..5 {
            yaml.push_str(&format!("---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: s{i}\n  namespace: {ns}\nstringData: {{k: v}}\n"));
        }
        apply_file(&server, k, &yaml, "create");
        // kubectl pages with limit/continue; a small chunk size makes it follow the token.
        let names = run(
            &server,
            k,
            &["get", "secrets", "-n", &ns, "--chunk-size=2", "-o", "name"],
        );
        assert_eq!(names.lines().count(), 5, "{k}: {names}");
        let page: serde_json::Value = serde_json::from_str(&run(
            &server,
            k,
            &[
                "get",
                "--raw",
                &format!("/api/v1/namespaces/{ns}/secrets?limit=2"),
            ],
        ))
        .unwrap();
        let token = page["metadata"]["continue"]
            .as_str()
            .expect("a continue token")
            .to_string();
        assert_eq!(page["items"].as_array().unwrap().len(), 2, "{k}");
        // Upstream counts what remains when nothing is filtered out, and only then.
        assert_eq!(page["metadata"]["remainingItemCount"], 3, "{k}: {page}");
        let filtered: serde_json::Value = serde_json::from_str(&run(
            &server,
            k,
            &[
                "get",
                "--raw",
                &format!("/api/v1/namespaces/{ns}/secrets?limit=2&fieldSelector=metadata.name!=s0"),
            ],
        ))
        .unwrap();
        assert!(
            filtered["metadata"]["continue"].is_string(),
            "{k}: {filtered}"
        );
        assert!(
            filtered["metadata"].get("remainingItemCount").is_none(),
            "{k}: {filtered}"
        );
        let rest: serde_json::Value = serde_json::from_str(&run(
            &server,
            k,
            &[
                "get",
                "--raw",
                &format!("/api/v1/namespaces/{ns}/secrets?limit=10&continue={token}"),
            ],
        ))
        .unwrap();
        let rest_names: Vec<_> = rest["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(rest_names, ["s2", "s3", "s4"], "{k}");
        assert!(rest["metadata"].get("continue").is_none(), "{k}");
        assert!(rest["metadata"].get("remainingItemCount").is_none(), "{k}");
        // Bodies over 3 MiB get 413.
        let big = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big\n  namespace: {ns}\ndata:\n  blob: {}\n",
            "x".repeat(3 * 1024 * 1024 + 10)
        );
        let file = server.dir.path().join(format!("{ns}-big.yaml"));
        std::fs::write(&file, big).unwrap();
        let out = server.kubectl(k, &["create", "-f", &file.display().to_string()]);
        assert!(
            !out.ok
                && out
                    .stderr
                    .contains("Request entity too large: limit is 3145728"),
            "{k}: {}",
            out.stderr
        );
    }
}

/// A list continuation whose revision was compacted away is 410 Expired with an inconsistent
/// continue token, which lists the rest at the current revision (upstream's chunking spec).
#[test]
fn an_expired_continuation_offers_an_inconsistent_one() {
    let server = Server::start_with(&["--etcd-compaction-interval", "1s"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut api = crate::rbac::Api::connect(&server.kubeconfig(), server.port).await;
        let base = "/api/v1/namespaces/default/configmaps";
        for i in 0..5 {
            let body = format!(r#"{{"metadata":{{"name":"c{i}"}}}}"#);
            assert_eq!(api.send("POST", base, Some(body), None).await.0, 201);
        }
        let (code, first) = api
            .send("GET", &format!("{base}?limit=2"), None, None)
            .await;
        assert_eq!(code, 200, "{first}");
        let first: serde_json::Value = serde_json::from_str(&first).unwrap();
        let token = first["metadata"]["continue"].as_str().unwrap().to_string();
        // Writes move the revision on; two compactions later the token's revision is gone.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let expired = loop {
            let body = r#"{"metadata":{"generateName":"later-"}}"#.to_string();
            api.send("POST", base, Some(body), None).await;
            let (code, body) = api
                .send(
                    "GET",
                    &format!("{base}?limit=2&continue={token}"),
                    None,
                    None,
                )
                .await;
            if code == 410 {
                break body;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the token never expired"
            );
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        };
        let expired: serde_json::Value = serde_json::from_str(&expired).unwrap();
        assert_eq!(expired["reason"], "Expired", "{expired}");
        let inconsistent = expired["metadata"]["continue"]
            .as_str()
            .expect("an inconsistent continue token")
            .to_string();
        let (code, rest) = api
            .send(
                "GET",
                &format!("{base}?limit=2&continue={inconsistent}"),
                None,
                None,
            )
            .await;
        assert_eq!(code, 200, "{rest}");
        let rest: serde_json::Value = serde_json::from_str(&rest).unwrap();
        let names: Vec<&str> = rest["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| i["metadata"]["name"].as_str())
            .collect();
        assert_eq!(names, ["c2", "c3"], "the rest, from the same key on");
    });
}
