//! API aggregation end to end: an "extension API server" in this test process (HTTPS on
//! 127.0.0.1, a certificate for `api.<ns>.svc` from a CA of its own) that accepts only clients
//! whose certificate the requestheader CA vkube publishes in
//! `kube-system/extension-apiserver-authentication` verifies, and echoes the `X-Remote-*`
//! headers. It is registered by an APIService pointing at a selector-less Service whose
//! Endpoints name 127.0.0.1:PORT. Then: the APIService is Available, the built-in ones are
//! Local, requests are proxied with the user's name, kubectl api-resources lists the backend's
//! resource, and with the backend stopped the APIService turns False (FailedDiscoveryCheck) and
//! requests get 503.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};

use crate::harness::*;

const GROUP: &str = "wardle.example.com";

struct Backend {
    port: u16,
    ca_pem: String,
    _rt: tokio::runtime::Runtime,
}

/// What the backend answers: its discovery document, or a list naming the caller.
fn answer(path: &str, headers: &http::HeaderMap) -> (u16, Value) {
    let all = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or_default().to_string())
            .collect()
    };
    if path == format!("/apis/{GROUP}/v1alpha1") {
        return (
            200,
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{GROUP}/v1alpha1"),
                "resources": [{"name": "flunders", "singularName": "flunder", "namespaced": true,
                               "kind": "Flunder", "verbs": ["get", "list"], "shortNames": ["fl"]}]}),
        );
    }
    if path == format!("/openapi/v3/apis/{GROUP}/v1alpha1") {
        let gvk = json!([{"group": GROUP, "version": "v1alpha1", "kind": "Flunder"}]);
        return (
            200,
            json!({"openapi": "3.0.0", "info": {"title": "wardle", "version": "v1alpha1"},
                "paths": {format!("/apis/{GROUP}/v1alpha1/namespaces/{{namespace}}/flunders"):
                    {"get": {"x-kubernetes-group-version-kind": gvk[0]}}},
                "components": {"schemas": {"com.example.wardle.v1alpha1.Flunder": {
                    "type": "object", "description": "A flunder of the test backend.",
                    "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                        "spec": {"type": "object", "description": "What the flunder wants."}},
                    "x-kubernetes-group-version-kind": gvk}}}}),
        );
    }
    if path.ends_with("/flunders") {
        let user = all("x-remote-user").join(",");
        return (
            200,
            json!({"kind": "FlunderList", "apiVersion": format!("{GROUP}/v1alpha1"), "metadata": {},
                "items": [{"metadata": {"name": format!("seen-by-{user}")},
                           "groups": all("x-remote-group"),
                           "authorization": all("authorization")}]}),
        );
    }
    (
        404,
        json!({"kind": "Status", "status": "Failure", "code": 404}),
    )
}

/// A watch of two events, the second 2 s after the first: the proxy must pass the first on
/// before the second exists.
fn watch_response() -> http::Response<BoxBody<Bytes, std::convert::Infallible>> {
    let events = futures_util::stream::unfold(0, |i| async move {
        if i == 1 {
            tokio::time::sleep(WATCH_GAP).await;
        }
        (i < 2).then(|| {
            let event = json!({"type": "ADDED", "object": {"kind": "Flunder",
                "apiVersion": format!("{GROUP}/v1alpha1"), "metadata": {"name": format!("event-{i}")}}});
            let frame = hyper::body::Frame::data(Bytes::from(format!("{event}\n")));
            (Ok::<_, std::convert::Infallible>(frame), i + 1)
        })
    });
    let mut resp = http::Response::new(http_body_util::StreamBody::new(events).boxed());
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

const WATCH_GAP: Duration = Duration::from_secs(2);

impl Backend {
    /// Serves on 127.0.0.1 as `api.<ns>.svc`, trusting only clients `client_ca` signed.
    fn start(ns: &str, client_ca: &str) -> Backend {
        let (ca_pem, cert, key) =
            crate::https_server::serving_cert("extension api test CA", &format!("api.{ns}.svc"));
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(client_ca.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![cert], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let rt = tokio::runtime::Runtime::new().unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        rt.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client without a certificate the requestheader CA verifies fails here.
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(
                        |req: http::Request<hyper::body::Incoming>| async move {
                            if req.uri().query() == Some("watch=true") {
                                return Ok(watch_response());
                            }
                            let (code, body) = answer(req.uri().path(), req.headers());
                            let mut resp = http::Response::new(
                                Full::new(Bytes::from(body.to_string())).boxed(),
                            );
                            *resp.status_mut() = http::StatusCode::from_u16(code).unwrap();
                            resp.headers_mut().insert(
                                http::header::CONTENT_TYPE,
                                http::HeaderValue::from_static("application/json"),
                            );
                            Ok::<_, std::convert::Infallible>(resp)
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Backend {
            port,
            ca_pem,
            _rt: rt,
        }
    }
}

/// Polls `kubectl get apiservice NAME` until its Available condition has `status` (and
/// `reason`, if given); the condition.
fn wait_available(server: &Server, name: &str, status: &str, reason: Option<&str>) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = server.kubectl("kubectl", &["get", "apiservice", name, "-o", "json"]);
        if out.ok {
            let obj: Value = serde_json::from_str(&out.stdout).unwrap();
            if let Some(c) = obj["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "Available")
                && c["status"] == status
                && reason.is_none_or(|r| c["reason"] == r)
            {
                return c.clone();
            }
            assert!(Instant::now() < deadline, "{name} never {status}: {obj}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `kube-system/extension-apiserver-authentication`, once the leader has published it.
fn published(server: &Server) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = server.kubectl(
            "kubectl",
            &[
                "get",
                "configmap",
                "-n",
                "kube-system",
                "extension-apiserver-authentication",
                "-o",
                "json",
            ],
        );
        if out.ok {
            break serde_json::from_str::<Value>(&out.stdout).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no extension-apiserver-authentication: {}",
            out.stderr
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A Namespace, a selector-less Service with Endpoints at the backend, and its APIService.
fn register(server: &Server, ns: &str, backend: &Backend) {
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(&backend.ca_pem);
    apply_file(
        server,
        "kubectl",
        &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n---\n\
             apiVersion: v1\nkind: Service\nmetadata: {{name: api, namespace: {ns}}}\n\
             spec: {{ports: [{{name: https, port: 443, targetPort: {port}}}]}}\n---\n\
             apiVersion: v1\nkind: Endpoints\nmetadata: {{name: api, namespace: {ns}}}\n\
             subsets: [{{addresses: [{{ip: 127.0.0.1}}], ports: [{{name: https, port: {port}}}]}}]\n---\n\
             apiVersion: apiregistration.k8s.io/v1\nkind: APIService\n\
             metadata: {{name: v1alpha1.{GROUP}}}\n\
             spec: {{group: {GROUP}, version: v1alpha1, service: {{namespace: {ns}, name: api}},\n\
             caBundle: {ca_bundle}, groupPriorityMinimum: 1000, versionPriority: 15}}\n",
            port = backend.port
        ),
        "apply",
    );
}

#[test]
fn an_apiservice_is_proxied_with_the_user_and_tracked_as_kube_aggregator() {
    let server = Server::start();
    let ns = "agg-e2e";

    // The requestheader CA the leader publishes, with upstream's keys.
    let cm = published(&server);
    let data = &cm["data"];
    assert_eq!(
        data["requestheader-username-headers"],
        "[\"X-Remote-User\"]"
    );
    assert_eq!(data["requestheader-group-headers"], "[\"X-Remote-Group\"]");
    assert_eq!(
        data["requestheader-extra-headers-prefix"],
        "[\"X-Remote-Extra-\"]"
    );
    assert_eq!(
        data["requestheader-allowed-names"],
        "[\"front-proxy-client\"]"
    );
    assert!(
        data["client-ca-file"]
            .as_str()
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    let requestheader_ca = data["requestheader-client-ca-file"].as_str().unwrap();

    // The built-in group/versions have their local APIServices.
    let local = wait_available(&server, "v1.apps", "True", Some("Local"));
    assert_eq!(local["message"], "Local APIServices are always available");
    wait_available(&server, "v1.", "True", Some("Local"));

    // A CRD's group/version gets its local APIService, and loses it with the CRD.
    apply_file(
        &server,
        "kubectl",
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n\
         metadata: {name: gizmos.agg.example.com}\n\
         spec: {group: agg.example.com, scope: Namespaced,\n\
         names: {plural: gizmos, singular: gizmo, kind: Gizmo},\n\
         versions: [{name: v1, served: true, storage: true,\n\
         schema: {openAPIV3Schema: {type: object}}}]}\n",
        "apply",
    );
    let crd = wait_available(&server, "v1.agg.example.com", "True", Some("Local"));
    assert_eq!(crd["message"], "Local APIServices are always available");
    run(
        &server,
        "kubectl",
        &["delete", "crd", "gizmos.agg.example.com"],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while server
        .kubectl("kubectl", &["get", "apiservice", "v1.agg.example.com"])
        .ok
    {
        assert!(Instant::now() < deadline, "the CRD's APIService stayed");
        std::thread::sleep(Duration::from_millis(200));
    }

    let backend = Backend::start(ns, requestheader_ca);
    register(&server, ns, &backend);
    let started = Instant::now();
    let up = wait_available(&server, &format!("v1alpha1.{GROUP}"), "True", None);
    println!("Available=True after {:?}", started.elapsed());
    assert_eq!(
        (up["reason"].as_str(), up["message"].as_str()),
        (Some("Passed"), Some("all checks passed"))
    );
    let table = run(
        &server,
        "kubectl",
        &["get", "apiservice", &format!("v1alpha1.{GROUP}")],
    );
    assert!(
        table.contains(&format!("{ns}/api")) && table.contains("True"),
        "{table}"
    );

    // What an extension API server is bound to, as upstream bootstraps it.
    let reader = run(
        &server,
        "kubectl",
        &[
            "get",
            "role",
            "-n",
            "kube-system",
            "extension-apiserver-authentication-reader",
            "-o",
            "json",
        ],
    );
    assert!(
        reader.contains("\"extension-apiserver-authentication\""),
        "{reader}"
    );
    let delegator = run(
        &server,
        "kubectl",
        &["get", "clusterrole", "system:auth-delegator", "-o", "json"],
    );
    assert!(
        delegator.contains("tokenreviews") && delegator.contains("subjectaccessreviews"),
        "{delegator}"
    );

    // Proxied with the user of the client certificate, the client's own credentials dropped.
    let raw = run(
        &server,
        "kubectl",
        &[
            "get",
            "--raw",
            &format!("/apis/{GROUP}/v1alpha1/namespaces/default/flunders"),
        ],
    );
    let list: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(
        list["items"][0]["metadata"]["name"], "seen-by-kubernetes-admin",
        "{raw}"
    );
    let groups = list["items"][0]["groups"].as_array().unwrap();
    assert!(groups.contains(&json!("system:masters")), "{raw}");
    assert_eq!(list["items"][0]["authorization"], json!([]));

    // A watch streams through: its first event arrives before the backend sends the second.
    let mut child = std::process::Command::new("kubectl")
        .args([
            "get",
            "--raw",
            &format!("/apis/{GROUP}/v1alpha1/namespaces/default/flunders?watch=true"),
        ])
        .env("KUBECONFIG", server.kubeconfig())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let first = lines.next().unwrap().unwrap();
    let first_after = started.elapsed();
    let second = lines.next().unwrap().unwrap();
    let second_after = started.elapsed();
    assert!(child.wait().unwrap().success());
    assert!(
        first.contains("event-0") && second.contains("event-1"),
        "{first} {second}"
    );
    println!(
        "watch through the proxy: first event after {first_after:?}, second after {second_after:?}"
    );
    assert!(
        second_after - first_after > WATCH_GAP / 2,
        "the first event waited for the second: {first_after:?} {second_after:?}"
    );

    // Discovery: legacy and aggregated (kubectl api-resources reads the latter).
    let apis = run(&server, "kubectl", &["get", "--raw", "/apis"]);
    assert!(apis.contains(&format!("\"{GROUP}/v1alpha1\"")), "{apis}");
    let group = run(
        &server,
        "kubectl",
        &["get", "--raw", &format!("/apis/{GROUP}")],
    );
    assert!(group.contains("\"APIGroup\""), "{group}");
    let resources = run(&server, "kubectl", &["api-resources", "--api-group", GROUP]);
    assert!(
        resources.contains("flunders") && resources.contains("fl") && resources.contains("Flunder"),
        "{resources}"
    );
    let got = run(
        &server,
        "kubectl",
        &["get", "flunders", "-n", "default", "-o", "name"],
    );
    // OpenAPI: the backend's document under /openapi/v3, which kubectl explain reads.
    let index = run(&server, "kubectl", &["get", "--raw", "/openapi/v3"]);
    assert!(
        index.contains(&format!("\"apis/{GROUP}/v1alpha1\"")),
        "{index}"
    );
    let explained = run(&server, "kubectl", &["explain", "flunders"]);
    assert!(
        explained.contains("Flunder") && explained.contains("A flunder of the test backend."),
        "{explained}"
    );
    assert!(got.contains("seen-by-kubernetes-admin"), "{got}");

    // The backend stops: upstream's reason, and 503 for requests.
    let port = backend.port;
    drop(backend);
    let down = wait_available(
        &server,
        &format!("v1alpha1.{GROUP}"),
        "False",
        Some("FailedDiscoveryCheck"),
    );
    let url = format!("https://127.0.0.1:{port}/apis/{GROUP}/v1alpha1");
    assert_eq!(
        down["message"],
        format!(
            "failing or missing response from {url}: Get \"{url}\": dial tcp 127.0.0.1:{port}: connect: connection refused"
        )
    );
    let table = run(
        &server,
        "kubectl",
        &["get", "apiservice", &format!("v1alpha1.{GROUP}")],
    );
    assert!(table.contains("False (FailedDiscoveryCheck)"), "{table}");
    let out = server.kubectl(
        "kubectl",
        &[
            "get",
            "--raw",
            &format!("/apis/{GROUP}/v1alpha1/namespaces/default/flunders"),
        ],
    );
    assert!(
        !out.ok && out.stderr.contains("(ServiceUnavailable)"),
        "{}",
        out.stderr
    );

    // No endpoints: EndpointsNotFound, as upstream words it.
    run(
        &server,
        "kubectl",
        &["delete", "endpoints", "-n", ns, "api"],
    );
    let gone = wait_available(
        &server,
        &format!("v1alpha1.{GROUP}"),
        "False",
        Some("EndpointsNotFound"),
    );
    assert_eq!(
        gone["message"],
        format!("cannot find endpoints for service/api in \"{ns}\"")
    );
    run(&server, "kubectl", &["delete", "service", "-n", ns, "api"]);
    let gone = wait_available(
        &server,
        &format!("v1alpha1.{GROUP}"),
        "False",
        Some("ServiceNotFound"),
    );
    assert_eq!(
        gone["message"],
        format!("service/api in \"{ns}\" is not present")
    );
}

/// Registered through one replica, an aggregated API is served by another on the same store at
/// once: the same APIService view, the same front-proxy certificate (the backend trusts only
/// the published CA), the same discovery.
#[test]
fn an_apiservice_registered_through_one_replica_is_served_by_another_on_etcd() {
    let store = format!(
        "etcd://{}?prefix=/aggregation-{}",
        crate::servers::etcd_endpoints(),
        std::process::id()
    );
    let flags = [
        "--store",
        &store,
        "--identity-secret-file",
        &shared_secret(),
    ];
    let a = Server::start_with(&flags);
    let b = Server::start_with(&flags);
    let ns = "agg-ha";
    let ca_a = published(&a)["data"]["requestheader-client-ca-file"].clone();
    let ca_b = published(&b)["data"]["requestheader-client-ca-file"].clone();
    assert_eq!(ca_a, ca_b);
    let backend = Backend::start(ns, ca_a.as_str().unwrap());
    register(&a, ns, &backend);
    wait_available(&a, &format!("v1alpha1.{GROUP}"), "True", Some("Passed"));
    for server in [&a, &b] {
        let raw = run(
            server,
            "kubectl",
            &[
                "get",
                "--raw",
                &format!("/apis/{GROUP}/v1alpha1/namespaces/default/flunders"),
            ],
        );
        assert!(raw.contains("seen-by-kubernetes-admin"), "{raw}");
        let resources = run(server, "kubectl", &["api-resources", "--api-group", GROUP]);
        assert!(resources.contains("flunders"), "{resources}");
    }
}
