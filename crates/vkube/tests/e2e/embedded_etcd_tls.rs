//! Embedded etcd with TLS: three replicas given one cluster CA in files (`--ca-cert-file`,
//! `--ca-key-file`, as a StatefulSet mounts one Secret in every replica) run their members with
//! certificates from it. A write through one replica is read through another; etcd's client port
//! refuses plain HTTP and TLS without a client certificate of that CA; and a replica given
//! another CA refuses to start, naming both.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use crate::harness::*;

/// Hands out 127.0.2.10 …: loopback addresses apart from the plain embedded etcd tests'.
static NEXT_HOST: AtomicU8 = AtomicU8::new(0);

/// A CA's certificate and key in `dir`, as a Secret mounted in every replica holds them.
pub(crate) fn ca_files(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    let (cert_file, key_file) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    (cert_file, key_file)
}

struct TlsMembers {
    peers: Vec<String>,
    clients: Vec<String>,
    ca: (PathBuf, PathBuf),
    _secret: tempfile::TempDir,
}

impl TlsMembers {
    fn new() -> TlsMembers {
        let (mut peers, mut clients) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            let host = format!(
                "127.0.2.{}",
                10 + NEXT_HOST.fetch_add(1, Ordering::Relaxed) % 240
            );
            let (a, b) = (
                TcpListener::bind((host.as_str(), 0)).unwrap(),
                TcpListener::bind((host.as_str(), 0)).unwrap(),
            );
            peers.push(format!("https://{host}:{}", a.local_addr().unwrap().port()));
            clients.push(format!("https://{host}:{}", b.local_addr().unwrap().port()));
        }
        let secret = tempfile::tempdir().unwrap();
        let ca = ca_files(secret.path(), "cluster-ca");
        TlsMembers {
            peers,
            clients,
            ca,
            _secret: secret,
        }
    }

    fn flags(&self, i: usize) -> Vec<String> {
        [
            "--etcd-embedded",
            "--replicas",
            "3",
            "--replica-id",
            &i.to_string(),
            "--etcd-peers",
            &self.peers.join(","),
            "--etcd-clients",
            &self.clients.join(","),
            "--ca-cert-file",
            &self.ca.0.display().to_string(),
            "--ca-key-file",
            &self.ca.1.display().to_string(),
        ]
        .map(str::to_string)
        .to_vec()
    }
}

/// A count-only read through `tls` (None: plain HTTP) at `endpoint`, within 5 s.
async fn read(endpoint: &str, tls: Option<etcd_client::TlsOptions>) -> Result<(), String> {
    let mut options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_timeout(Duration::from_secs(3));
    if let Some(tls) = tls {
        options = options.with_tls(tls);
    }
    let ask = async {
        let mut client = etcd_client::Client::connect([endpoint], Some(options)).await?;
        let count = etcd_client::GetOptions::new().with_count_only();
        client.get("/", Some(count)).await.map(drop)
    };
    match tokio::time::timeout(Duration::from_secs(5), ask).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

#[test]
fn embedded_etcd_with_tls_from_a_ca_in_files() {
    let members = TlsMembers::new();
    let replicas: Vec<Server> = (0..3)
        .map(|i| Server::start_with(&strs(&members.flags(i))))
        .collect();

    // A write through replica 0 is read through replica 2.
    run(
        &replicas[0],
        "kubectl",
        &["create", "configmap", "over-tls", "--from-literal=a=1"],
    );
    let value = run(
        &replicas[2],
        "kubectl",
        &["get", "configmap", "over-tls", "-o", "jsonpath={.data.a}"],
    );
    assert_eq!(value, "1");

    // Each replica's etcd PKI: the files are its owner's only; etcd listens on its own address,
    // never on every address.
    use std::os::unix::fs::PermissionsExt;
    let pki = replicas[1].dir.path().join("etcd/pki");
    for file in [
        "ca.crt",
        "member.crt",
        "member.key",
        "client.crt",
        "client.key",
    ] {
        let mode = std::fs::metadata(pki.join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    let pid = std::fs::read_to_string(replicas[1].dir.path().join("etcd/etcd.pid")).unwrap();
    let cmdline = std::fs::read_to_string(format!("/proc/{}/cmdline", pid.trim())).unwrap();
    assert!(!cmdline.contains("0.0.0.0"), "{cmdline:?}");
    for flag in [
        "--client-cert-auth",
        "--peer-client-cert-auth",
        "--trusted-ca-file=",
    ] {
        assert!(
            cmdline.contains(flag),
            "etcd runs without {flag}: {cmdline:?}"
        );
    }

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let endpoint = &members.clients[1];
        let ca_pem = std::fs::read(&members.ca.0).unwrap();
        let ca_only = etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(&ca_pem));
        // With vkube's client certificate: served (so the refusals below are about the
        // credentials, nothing else).
        let identity = etcd_client::Identity::from_pem(
            std::fs::read(pki.join("client.crt")).unwrap(),
            std::fs::read(pki.join("client.key")).unwrap(),
        );
        read(endpoint, Some(ca_only.clone().identity(identity)))
            .await
            .expect("a client certificate of the cluster CA is served");
        // TLS without a client certificate: refused.
        let err = read(endpoint, Some(ca_only)).await.unwrap_err();
        eprintln!("embedded etcd over TLS without a client certificate: {err}");
        // A client certificate of another CA: refused.
        let other_dir = tempfile::tempdir().unwrap();
        let (other_cert, other_key) = ca_files(other_dir.path(), "other-ca");
        let other = rcgen::Issuer::from_ca_cert_pem(
            &std::fs::read_to_string(&other_cert).unwrap(),
            rcgen::KeyPair::from_pem(&std::fs::read_to_string(&other_key).unwrap()).unwrap(),
        )
        .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let stranger = params.signed_by(&key, &other).unwrap();
        let stranger = etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(&ca_pem))
            .identity(etcd_client::Identity::from_pem(
                stranger.pem(),
                key.serialize_pem(),
            ));
        read(endpoint, Some(stranger))
            .await
            .expect_err("a client certificate of another CA is refused");
        // Plain HTTP, by gRPC: refused.
        let plain = endpoint.replace("https://", "http://");
        read(&plain, None)
            .await
            .expect_err("plain HTTP to the client port is refused");
    });
    // Plain HTTP by hand: no etcd answer.
    let address = members.clients[1].trim_start_matches("https://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"GET /version HTTP/1.1\r\nHost: etcd\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(
        !answer.contains("etcdserver") && !answer.starts_with("HTTP/1.1 200"),
        "plain HTTP got an answer: {answer:?}"
    );

    // A replica given another CA than the cluster's refuses to start, naming both.
    let other_dir = tempfile::tempdir().unwrap();
    let (other_cert, other_key) = ca_files(other_dir.path(), "another-ca");
    let data = tempfile::tempdir().unwrap();
    let store = format!(
        "etcd://{}?ca={}&cert={}&key={}",
        members.clients[0].trim_start_matches("https://"),
        pki.join("ca.crt").display(),
        pki.join("client.crt").display(),
        pki.join("client.key").display()
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_vkube"))
        .args(["serve", "--data-dir"])
        .arg(data.path())
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--store", &store, "--ca-cert-file"])
        .arg(&other_cert)
        .arg("--ca-key-file")
        .arg(&other_key)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    watch_parent(child.id());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("a replica given another CA is still running after 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("another-ca")
            && stderr.contains("cluster-ca")
            && stderr.contains(&other_cert.display().to_string()),
        "the refusal names both CAs and the file: {stderr}"
    );
    drop(replicas);
}
