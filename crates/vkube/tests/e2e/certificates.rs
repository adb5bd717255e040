//! `kubectl certificate approve` gives a certificate the API accepts: the csrsigning controller
//! signs approved requests of the built-in signers with the cluster CA, and marks those its
//! signer refuses `Failed` (`SignerValidationFailure`), as kube-controller-manager does.

use base64::Engine;

use crate::harness::*;

fn csr_yaml(name: &str, cn: &str, orgs: &[&str], usages: &str) -> (rcgen::KeyPair, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    for o in orgs {
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, *o);
    }
    let pem = params.serialize_request(&key).unwrap().pem().unwrap();
    let request = base64::engine::general_purpose::STANDARD.encode(pem);
    let yaml = format!(
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata: {{name: {name}}}\n\
         spec: {{request: {request}, signerName: kubernetes.io/kube-apiserver-client, expirationSeconds: 86400, usages: [{usages}]}}\n"
    );
    (key, yaml)
}

fn create(server: &Server, yaml: &str, name: &str) {
    let file = server.dir.path().join(format!("{name}.yaml"));
    std::fs::write(&file, yaml).unwrap();
    run(
        server,
        "kubectl",
        &["create", "-f", &file.display().to_string()],
    );
}

fn field(server: &Server, name: &str, path: &str) -> String {
    let path = format!("jsonpath={path}");
    run(server, "kubectl", &["get", "csr", name, "-o", &path])
}

#[test]
fn an_approved_request_gets_a_certificate_the_api_accepts() {
    let server = Server::start();
    let (key, yaml) = csr_yaml("jane", "jane", &["devs"], "digital signature, client auth");
    create(&server, &yaml, "jane");
    run(&server, "kubectl", &["certificate", "approve", "jane"]);
    crate::gc::eventually("the request is signed", || {
        !field(&server, "jane", "{.status.certificate}").is_empty()
    });
    let cert = base64::engine::general_purpose::STANDARD
        .decode(field(&server, "jane", "{.status.certificate}"))
        .unwrap();
    let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
    let ca = std::fs::read(server.dir.path().join("ca.crt")).unwrap();
    let config = server.dir.path().join("jane.kubeconfig");
    std::fs::write(
        &config,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: https://127.0.0.1:{}, certificate-authority-data: {}}}\n\
             users:\n- name: u\n  user: {{client-certificate-data: {}, client-key-data: {}}}\n\
             contexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\n",
            server.port,
            b64(&ca),
            b64(&cert),
            b64(key.serialize_pem().as_bytes()),
        ),
    )
    .unwrap();
    let who = kubectl_with(
        "kubectl",
        &config,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username} {.status.userInfo.groups}",
        ],
    );
    assert!(who.ok, "{}", who.stderr);
    assert!(
        who.stdout.starts_with("jane ") && who.stdout.contains("devs"),
        "{}",
        who.stdout
    );

    // A client-certificate signer refuses server auth: Failed, never signed.
    let (_, yaml) = csr_yaml("srv", "srv", &[], "server auth");
    create(&server, &yaml, "srv");
    run(&server, "kubectl", &["certificate", "approve", "srv"]);
    crate::gc::eventually("the signer refuses it", || {
        field(
            &server,
            "srv",
            "{.status.conditions[?(@.type==\"Failed\")].reason}",
        ) == "SignerValidationFailure"
    });
    assert!(field(&server, "srv", "{.status.certificate}").is_empty());

    // A request nobody approved stays unsigned.
    let (_, yaml) = csr_yaml("pending", "p", &[], "client auth");
    create(&server, &yaml, "pending");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(field(&server, "pending", "{.status.certificate}").is_empty());
}
