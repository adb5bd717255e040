//! The subresources that act: binding, eviction, finalize, approval (`kubectl certificate approve`)
//! and ephemeral containers.

use base64::Engine;

use crate::harness::*;

fn post_raw(server: &Server, k: &str, path: &str, body: &str, verb: &str) -> Output {
    let file = server
        .dir
        .path()
        .join(format!("raw-{}.json", rand_suffix()));
    std::fs::write(&file, body).unwrap();
    server.kubectl(k, &[verb, "--raw", path, "-f", &file.display().to_string()])
}

#[test]
fn binding_eviction_finalize_and_approval() {
    let server = Server::start();
    for &k in KUBECTLS {
        let ns = ns_name(k, "subres");
        run(&server, k, &["create", "namespace", &ns]);
        run(
            &server,
            k,
            &["run", "p", "-n", &ns, "--image=nginx", "--restart=Never"],
        );
        let pods = format!("/api/v1/namespaces/{ns}/pods");
        let binding = r#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"p"},"target":{"kind":"Node","name":"node-a"}}"#;
        let out = post_raw(&server, k, &format!("{pods}/p/binding"), binding, "create");
        assert!(out.ok, "{k}: {}", out.stderr);
        assert!(
            out.stdout.contains(r#""status":"Success""#),
            "{k}: {}",
            out.stdout
        );
        let get = |what: &str, path: &str| {
            run(
                &server,
                k,
                &["get", what, "-n", &ns, "-o", &format!("jsonpath={path}")],
            )
        };
        assert_eq!(
            get(
                "pod/p",
                "{.spec.nodeName} {.status.conditions[0].type}={.status.conditions[0].status}"
            ),
            "node-a PodScheduled=True",
            "{k}"
        );
        let again = post_raw(&server, k, &format!("{pods}/p/binding"), binding, "create");
        assert!(
            again.stderr.contains(r#"Operation cannot be fulfilled on pods/binding "p": pod p is already assigned to node "node-a""#),
            "{k}: {}",
            again.stderr
        );

        let eviction = r#"{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":"p"}}"#;
        let out = post_raw(
            &server,
            k,
            &format!("{pods}/p/eviction"),
            eviction,
            "create",
        );
        assert!(out.ok, "{k}: {}", out.stderr);
        assert!(
            !server.kubectl(k, &["get", "pod", "p", "-n", &ns]).ok,
            "{k}: the evicted pod is gone"
        );

        // A namespace with an extra finalizer stays Terminating until finalize removes it.
        let fin = ns_name(k, "fin");
        let manifest = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {fin}}}\nspec: {{finalizers: [kubernetes, example.com/hold]}}\n"
        );
        apply_file(&server, k, &manifest, "create");
        run(&server, k, &["delete", "namespace", &fin, "--wait=false"]);
        let finalize = format!(
            r#"{{"apiVersion":"v1","kind":"Namespace","metadata":{{"name":"{fin}"}},"spec":{{"finalizers":[]}}}}"#
        );
        let out = post_raw(
            &server,
            k,
            &format!("/api/v1/namespaces/{fin}/finalize"),
            &finalize,
            "replace",
        );
        assert!(out.ok, "{k}: {}", out.stderr);
        run(
            &server,
            k,
            &[
                "wait",
                "--for=delete",
                &format!("namespace/{fin}"),
                "--timeout=20s",
            ],
        );

        // kubectl certificate approve writes the approval subresource.
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec![]).unwrap();
        let mut params = params;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "bob");
        let pem = params.serialize_request(&key).unwrap().pem().unwrap();
        let request = base64::engine::general_purpose::STANDARD.encode(pem);
        let csr = format!(
            "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata: {{name: bob-{ns}}}\n\
             spec: {{request: {request}, signerName: kubernetes.io/kube-apiserver-client, usages: [client auth]}}\n"
        );
        apply_file(&server, k, &csr, "create");
        let out = run(
            &server,
            k,
            &["certificate", "approve", &format!("bob-{ns}")],
        );
        assert_eq!(
            out,
            format!("certificatesigningrequest.certificates.k8s.io/bob-{ns} approved"),
            "{k}"
        );
        let conditions = run(
            &server,
            k,
            &[
                "get",
                "csr",
                &format!("bob-{ns}"),
                "-o",
                "jsonpath={.status.conditions[0].type}",
            ],
        );
        assert_eq!(conditions, "Approved", "{k}");
    }
}
