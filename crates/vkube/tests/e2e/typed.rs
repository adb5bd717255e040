//! kubectl's typed create commands. kubectl ≥ 1.32 sends these bodies as protobuf, older ones as
//! JSON; either way the stored object must be what upstream stores.

use crate::harness::*;

#[test]
fn typed_create_commands_store_what_they_say() {
    let server = Server::start();
    for &k in KUBECTLS {
        let ns = ns_name(k, "typed");
        let created = [
            run(&server, k, &["create", "namespace", &ns]),
            run(
                &server,
                k,
                &[
                    "create",
                    "configmap",
                    "cfg",
                    "-n",
                    &ns,
                    "--from-literal=a=1",
                    "--from-literal=empty=",
                ],
            ),
            run(
                &server,
                k,
                &[
                    "create",
                    "secret",
                    "generic",
                    "sec",
                    "-n",
                    &ns,
                    "--from-literal=password=s3cr3t",
                ],
            ),
            run(
                &server,
                k,
                &["create", "serviceaccount", "robot", "-n", &ns],
            ),
            run(
                &server,
                k,
                &[
                    "create",
                    "deployment",
                    "web",
                    "-n",
                    &ns,
                    "--image=nginx:1.27",
                    "--replicas=0",
                    "--port=80",
                ],
            ),
            run(
                &server,
                k,
                &[
                    "create",
                    "job",
                    "once",
                    "-n",
                    &ns,
                    "--image=busybox",
                    "--",
                    "echo",
                    "hi",
                ],
            ),
            run(
                &server,
                k,
                &[
                    "create",
                    "service",
                    "clusterip",
                    "front",
                    "-n",
                    &ns,
                    "--tcp=80:8080",
                ],
            ),
            run(
                &server,
                k,
                &[
                    "create",
                    "role",
                    "reader",
                    "-n",
                    &ns,
                    "--verb=get,list",
                    "--resource=pods",
                ],
            ),
        ];
        assert_eq!(
            created,
            [
                format!("namespace/{ns} created"),
                "configmap/cfg created".into(),
                "secret/sec created".into(),
                "serviceaccount/robot created".into(),
                "deployment.apps/web created".into(),
                "job.batch/once created".into(),
                "service/front created".into(),
                "role.rbac.authorization.k8s.io/reader created".into(),
            ],
            "{k}"
        );
        let get = |what: &str, path: &str| {
            run(
                &server,
                k,
                &["get", what, "-n", &ns, "-o", &format!("jsonpath={path}")],
            )
        };
        assert_eq!(get("cm/cfg", "{.data}"), r#"{"a":"1","empty":""}"#, "{k}");
        assert_eq!(
            get("secret/sec", "{.type} {.data.password}"),
            "Opaque czNjcjN0",
            "{k}"
        );
        assert_eq!(
            get(
                "deploy/web",
                "{.spec.replicas} {.spec.selector.matchLabels.app} {.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].ports[0].containerPort}"
            ),
            "0 web nginx:1.27 80",
            "{k}"
        );
        assert_eq!(
            get("job/once", "{.spec.template.spec.containers[0].command}"),
            r#"["echo","hi"]"#,
            "{k}"
        );
        assert_eq!(
            get(
                "svc/front",
                "{.spec.ports[0].port} {.spec.ports[0].targetPort}"
            ),
            "80 8080",
            "{k}"
        );
        assert_eq!(
            get("role/reader", "{.rules[0].verbs}"),
            r#"["get","list"]"#,
            "{k}"
        );
        // The stored metadata carries no empty strings a Go client never meant to send.
        let meta = get("cm/cfg", "{.metadata}");
        assert!(!meta.contains("\"\""), "{k}: {meta}");
    }
}

#[test]
fn invalid_objects_are_refused_as_kubectl_shows_upstreams_422() {
    let server = Server::start();
    for &k in KUBECTLS {
        let ns = ns_name(k, "invalid");
        run(&server, k, &["create", "namespace", &ns]);
        let yaml = format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: bad, namespace: {ns}}}\n\
             spec:\n  replicas: -1\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    \
             metadata: {{labels: {{app: db}}}}\n    spec: {{containers: [{{name: web, image: nginx}}]}}\n"
        );
        let stderr = apply_file_result(&server, k, &yaml);
        assert_eq!(
            stderr,
            "The Deployment \"bad\" is invalid: \n\
             * spec.replicas: Invalid value: -1: must be greater than or equal to 0\n\
             * spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"db\"}: `selector` does not match template `labels`",
            "{k}"
        );
        let out = server.kubectl(k, &["get", "deploy", "bad", "-n", &ns]);
        assert!(!out.ok, "{k}: nothing was stored");
    }
}

#[test]
fn services_get_cluster_ips_and_node_ports_that_are_released_on_delete() {
    let server = Server::start();
    for (n, &k) in KUBECTLS.iter().enumerate() {
        let node_port = (30111 + n).to_string();
        let port_flag = format!("--node-port={node_port}");
        let ns = ns_name(k, "svc");
        run(&server, k, &["create", "namespace", &ns]);
        let table = lines(&run(
            &server,
            k,
            &["get", "svc", "kubernetes", "-n", "default"],
        ));
        assert_eq!(
            table[0],
            [
                "NAME",
                "TYPE",
                "CLUSTER-IP",
                "EXTERNAL-IP",
                "PORT(S)",
                "AGE"
            ],
            "{k}"
        );
        assert_eq!(
            table[1][..5],
            ["kubernetes", "ClusterIP", "10.96.0.1", "<none>", "443/TCP"],
            "{k}"
        );
        run(
            &server,
            k,
            &[
                "create",
                "service",
                "nodeport",
                "np",
                "-n",
                &ns,
                "--tcp=80:8080",
                &port_flag,
            ],
        );
        let ip = run(
            &server,
            k,
            &[
                "get",
                "svc",
                "np",
                "-n",
                &ns,
                "-o",
                "jsonpath={.spec.clusterIP}",
            ],
        );
        assert!(ip.starts_with("10.") && ip != "10.96.0.1", "{k}: {ip}");
        assert_eq!(
            run(
                &server,
                k,
                &[
                    "get",
                    "ipaddress",
                    &ip,
                    "-o",
                    "jsonpath={.spec.parentRef.namespace}/{.spec.parentRef.name}"
                ]
            ),
            format!("{ns}/np"),
            "{k}"
        );
        let taken = server.kubectl(
            k,
            &[
                "create",
                "service",
                "nodeport",
                "np2",
                "-n",
                &ns,
                "--tcp=81:8080",
                &port_flag,
            ],
        );
        assert!(
            taken.stderr.contains(
                &format!("spec.ports[0].nodePort: Invalid value: {node_port}: provided port is already allocated")
            ),
            "{k}: {}",
            taken.stderr
        );
        run(&server, k, &["delete", "svc", "np", "-n", &ns]);
        // The controller frees the address and the port once it sees the delete.
        let mut freed = false;
        for _ in 0..50 {
            if !server.kubectl(k, &["get", "ipaddress", &ip]).ok {
                freed = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert!(freed, "{k}: {ip} still allocated");
        run(
            &server,
            k,
            &[
                "create",
                "service",
                "nodeport",
                "np2",
                "-n",
                &ns,
                "--tcp=81:8080",
                &port_flag,
            ],
        );
    }
}

/// Client-side apply through strategic merge patches: a change inside a list (an image, an env
/// entry removed, a container dropped) and `kubectl set`, `diff` and `patch` with directives.
#[test]
fn apply_set_diff_and_strategic_patches() {
    let server = Server::start();
    for &k in KUBECTLS {
        let ns = ns_name(k, "apply");
        run(&server, k, &["create", "namespace", &ns]);
        let v1 = format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: {ns}}}\nspec:\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers:\n      - {{name: web, image: 'nginx:1.25', env: [{{name: A, value: '1'}}, {{name: B, value: '2'}}]}}\n      - {{name: side, image: busybox}}\n"
        );
        assert_eq!(
            apply_file(&server, k, &v1, "apply"),
            "deployment.apps/web created",
            "{k}"
        );
        assert_eq!(
            apply_file(&server, k, &v1, "apply"),
            "deployment.apps/web unchanged",
            "{k}"
        );
        let v2 = v1
            .replace("nginx:1.25", "nginx:1.27")
            .replace(", {name: B, value: '2'}", "")
            .replace("      - {name: side, image: busybox}\n", "");
        assert_eq!(
            apply_file(&server, k, &v2, "apply"),
            "deployment.apps/web configured",
            "{k}"
        );
        let get = |path: &str| {
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
                    &format!("jsonpath={path}"),
                ],
            )
        };
        assert_eq!(
            get(
                "{.spec.template.spec.containers[*].name} {.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].env}"
            ),
            r#"web nginx:1.27 [{"name":"A","value":"1"}]"#,
            "{k}"
        );
        run(
            &server,
            k,
            &["set", "image", "deploy/web", "web=nginx:1.28", "-n", &ns],
        );
        run(&server, k, &["set", "env", "deploy/web", "C=3", "-n", &ns]);
        assert_eq!(
            get(
                "{.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].env[*].name}"
            ),
            "nginx:1.28 A C",
            "{k}"
        );
        run(
            &server,
            k,
            &[
                "set",
                "resources",
                "deploy/web",
                "-c=web",
                "-n",
                &ns,
                "--limits=cpu=200m,memory=256Mi",
                "--requests=cpu=100m",
            ],
        );
        assert_eq!(
            get(
                "{.spec.template.spec.containers[0].resources.limits.cpu} {.spec.template.spec.containers[0].resources.limits.memory} {.spec.template.spec.containers[0].resources.requests.cpu}"
            ),
            "200m 256Mi 100m",
            "{k}"
        );
        let patch = r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","env":[{"name":"A","$patch":"delete"}]}]}}}}"#;
        run(
            &server,
            k,
            &["patch", "deploy", "web", "-n", &ns, "-p", patch],
        );
        assert_eq!(
            get("{.spec.template.spec.containers[0].env[*].name}"),
            "C",
            "{k}"
        );
        // kubectl diff against the server's dry run: the file's image differs from the live one.
        let file = server.dir.path().join(format!("{ns}-v2.yaml"));
        std::fs::write(&file, &v2).unwrap();
        let diff = server.kubectl(k, &["diff", "-f", &file.display().to_string()]);
        assert!(
            diff.stdout.contains("-        image: nginx:1.28")
                && diff.stdout.contains("+        image: nginx:1.27"),
            "{k}: {}{}",
            diff.stdout,
            diff.stderr
        );
    }
}
