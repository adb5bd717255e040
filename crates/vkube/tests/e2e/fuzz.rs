//! A live `vkube serve` under tens of thousands of generated requests (issue 17, hostile input):
//! real and garbled paths, query strings, methods, media types, bodies and credentials
//! ([`generate`]), over HTTPS, on HTTP/1.1 and HTTP/2 connections, with the admin client
//! certificate and without one. The invariants:
//!
//! - no 5xx but the documented ones: 503 for the kubelet's subresources (log, exec, attach,
//!   portforward, proxy), which need a host cluster this server has not got, and 504 for a
//!   request past `--request-timeout`;
//! - no handler panics (`vkube_request_panics_total` stays 0), and the process stays alive and
//!   ready;
//! - the store is unchanged by a phase of requests that are each refused or dry runs: every
//!   object of every listable resource has the same resourceVersion after it as before.
//!
//! `VKUBE_FUZZ_REQUESTS` sets how many requests (default 12 000: 35 to 50 s on two cores),
//! `VKUBE_FUZZ_SEED` replays a run (the seed is printed), `VKUBE_FUZZ_ONLY=N` sends request N
//! alone, as the failure message names it.

mod generate;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;

use crate::difftest::client::{Target, b64};
use crate::harness::Server;
use generate::{Request, Sender};

/// Connections sending at once (`VKUBE_FUZZ_WORKERS`; 1 and `VKUBE_FUZZ_VERBOSE=1` print each
/// request before it is sent, to find the one a dead server died of).
fn workers() -> u64 {
    std::env::var("VKUBE_FUZZ_WORKERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(8)
}

/// Where the requests go, and with which TLS configurations.
struct Client {
    port: u16,
    admin: Arc<rustls::ClientConfig>,
    anonymous: Arc<rustls::ClientConfig>,
}

enum Conn {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// What one request got.
enum Outcome {
    Status(u16),
    /// The URI or a header could not even be put on the wire (the client refuses it).
    Unsendable,
    /// The connection failed or was closed under the request.
    Transport(String),
}

impl Client {
    fn new(server: &Server) -> Client {
        let target = Target::from_kubeconfig("vkube", &server.kubeconfig());
        let text = std::fs::read_to_string(server.kubeconfig()).unwrap();
        let config: Value = serde_saphyr::from_str(&text).unwrap();
        let ca = b64(
            &config["clusters"][0]["cluster"],
            &["certificate-authority-data"],
        )
        .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&ca) {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let anonymous = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Client {
            port: target.port(),
            admin: target.tls(),
            anonymous: Arc::new(anonymous),
        }
    }

    async fn connect(&self, sender: Sender, h2: bool) -> Result<Conn, String> {
        let mut tls = match sender {
            Sender::Admin => (*self.admin).clone(),
            Sender::Anonymous => (*self.anonymous).clone(),
        };
        tls.alpn_protocols = vec![if h2 {
            b"h2".to_vec()
        } else {
            b"http/1.1".to_vec()
        }];
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .map_err(|e| e.to_string())?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .map_err(|e| e.to_string())?;
        let io = TokioIo::new(stream);
        if h2 {
            let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Ok(Conn::H2(send))
        } else {
            let (send, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Ok(Conn::H1(send))
        }
    }
}

fn http_request(r: &Request, h2: bool) -> Option<http::Request<Full<Bytes>>> {
    let method = http::Method::from_bytes(r.method.as_bytes()).ok()?;
    let uri: http::Uri = r.path.parse().ok()?;
    let uri = if h2 {
        format!("https://localhost{uri}").parse().ok()?
    } else {
        uri
    };
    let mut req = http::Request::builder().method(method).uri(uri);
    if !h2 {
        req = req.header("host", "localhost");
    }
    for (k, v) in &r.headers {
        // Junk that is no header value (a newline, a NUL) stays off the wire.
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(v),
        ) {
            req = req.header(k, v);
        }
    }
    req.body(Full::new(Bytes::from(r.body.clone()))).ok()
}

/// Sends `r` on `conn` (opening one if needed); a connection that cannot carry on is dropped.
async fn send(
    client: &Client,
    conns: &mut BTreeMap<(bool, bool), Conn>,
    r: &Request,
    h2: bool,
) -> Outcome {
    let Some(req) = http_request(r, h2) else {
        return Outcome::Unsendable;
    };
    let key = (r.sender == Sender::Admin, h2);
    let usable = match conns.get_mut(&key) {
        Some(Conn::H1(s)) => s.ready().await.is_ok(),
        Some(Conn::H2(s)) => s.ready().await.is_ok(),
        None => false,
    };
    if !usable {
        match client.connect(r.sender, h2).await {
            Ok(c) => {
                conns.insert(key, c);
            }
            Err(e) => return Outcome::Transport(format!("connect: {e}")),
        }
    }
    let sent = match conns.get_mut(&key).unwrap() {
        Conn::H1(s) => tokio::time::timeout(Duration::from_secs(60), s.send_request(req)).await,
        Conn::H2(s) => tokio::time::timeout(Duration::from_secs(60), s.send_request(req)).await,
    };
    let resp = match sent {
        Err(_) => {
            conns.remove(&key);
            return Outcome::Transport("no answer within 60 s".into());
        }
        Ok(Err(e)) => {
            conns.remove(&key);
            return Outcome::Transport(e.to_string());
        }
        Ok(Ok(resp)) => resp,
    };
    let code = resp.status().as_u16();
    if r.streaming && code == 200 {
        // A watch stays open: its head is the answer. The HTTP/1.1 connection is mid-stream.
        drop(resp);
        conns.remove(&key);
        return Outcome::Status(code);
    }
    match tokio::time::timeout(Duration::from_secs(60), resp.into_body().collect()).await {
        Ok(Ok(_)) => Outcome::Status(code),
        Ok(Err(e)) => {
            conns.remove(&key);
            Outcome::Transport(format!("{code}, then the body failed: {e}"))
        }
        Err(_) => {
            conns.remove(&key);
            Outcome::Transport(format!("{code}, then no end of the body within 60 s"))
        }
    }
}

/// The 5xx the server may answer (see the module's documentation).
fn documented(code: u16, r: &Request) -> bool {
    let kubelet = ["/log", "/exec", "/attach", "/portforward", "/proxy"];
    let path = r.path.split('?').next().unwrap_or_default();
    code < 500 || code == 504 || (code == 503 && kubelet.iter().any(|s| path.ends_with(s)))
}

/// A discovery document's path (`/api/v1`, `/apis/G/V`): vkube answers every method there
/// (see the report in the commit), and changes nothing.
fn discovery(path: &str) -> bool {
    let path = path.split('?').next().unwrap_or_default();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    matches!(
        segments.as_slice(),
        ["api"] | ["api", _] | ["apis"] | ["apis", _] | ["apis", _, _]
    )
}

#[derive(Default)]
struct Tally {
    codes: BTreeMap<u16, u64>,
    unsendable: u64,
    transport: BTreeMap<String, u64>,
    violations: Vec<String>,
}

/// Sends requests `range` of the run, [`workers`] at a time.
async fn phase(
    client: &Arc<Client>,
    seed: u64,
    range: std::ops::Range<u64>,
    rejected_only: bool,
) -> Tally {
    let next = Arc::new(AtomicU64::new(range.start));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let verbose = std::env::var("VKUBE_FUZZ_VERBOSE").is_ok();
    let workers: Vec<_> = (0..workers())
        .map(|w| {
            let (client, next, tally, end) =
                (client.clone(), next.clone(), tally.clone(), range.end);
            tokio::spawn(async move {
                let h2 = w % 2 == 1;
                let mut conns = BTreeMap::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= end {
                        break;
                    }
                    let r = generate::request(seed, n, rejected_only);
                    if verbose {
                        println!("request {n}: {}", r.describe());
                    }
                    let outcome = send(&client, &mut conns, &r, h2).await;
                    let mut t = tally.lock().unwrap();
                    match outcome {
                        Outcome::Status(code) => {
                            *t.codes.entry(code).or_default() += 1;
                            if !documented(code, &r) {
                                t.violations.push(format!(
                                    "request {n} (h2: {h2}) got {code}: {}",
                                    r.describe()
                                ));
                            }
                            if rejected_only
                                && r.mutating()
                                && (200..300).contains(&code)
                                && !r.path.contains("dryRun=All")
                                && !discovery(&r.path)
                            {
                                t.violations.push(format!(
                                    "request {n} (h2: {h2}) was to be refused, got {code}: {}",
                                    r.describe()
                                ));
                            }
                        }
                        Outcome::Unsendable => t.unsendable += 1,
                        Outcome::Transport(e) => {
                            let proto = if h2 { "h2" } else { "h1" };
                            let kind = format!(
                                "{proto} {} {}",
                                r.method,
                                e.chars().take(80).collect::<String>()
                            );
                            if verbose {
                                println!("request {n}: {kind}");
                            }
                            *t.transport.entry(kind).or_default() += 1;
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    Arc::try_unwrap(tally).ok().unwrap().into_inner().unwrap()
}

/// One request as the admin, on a connection of its own: the code and the body.
async fn exchange(client: &Client, method: &str, path: &str) -> Option<(u16, Bytes)> {
    let r = Request {
        method: method.into(),
        path: path.into(),
        headers: vec![],
        body: vec![],
        sender: Sender::Admin,
        streaming: false,
    };
    let req = http_request(&r, false)?;
    let Ok(Conn::H1(mut s)) = client.connect(Sender::Admin, false).await else {
        return None;
    };
    let resp = s.send_request(req).await.ok()?;
    let code = resp.status().as_u16();
    Some((code, resp.into_body().collect().await.ok()?.to_bytes()))
}

async fn get_json(client: &Client, path: &str) -> Option<Value> {
    match exchange(client, "GET", path).await? {
        (200, body) => serde_json::from_slice(&body).ok(),
        _ => None,
    }
}

/// Every object of every listable resource, with its resourceVersion; leases and events change
/// on their own and are left out.
async fn dump(client: &Client) -> BTreeSet<String> {
    let mut versions = vec!["/api/v1".to_string()];
    let groups = get_json(client, "/apis").await.expect("/apis");
    for g in groups["groups"].as_array().unwrap() {
        for v in g["versions"].as_array().unwrap() {
            versions.push(format!("/apis/{}", v["groupVersion"].as_str().unwrap()));
        }
    }
    let mut objects = BTreeSet::new();
    for gv in versions {
        let Some(list) = get_json(client, &gv).await else {
            continue;
        };
        for r in list["resources"].as_array().unwrap() {
            let name = r["name"].as_str().unwrap();
            let listable = r["verbs"]
                .as_array()
                .is_some_and(|v| v.iter().any(|v| v == "list"));
            if name.contains('/') || !listable || name == "leases" || name == "events" {
                continue;
            }
            let items = get_json(client, &format!("{gv}/{name}"))
                .await
                .unwrap_or_default();
            for item in items["items"].as_array().into_iter().flatten() {
                let m = &item["metadata"];
                objects.insert(format!(
                    "{gv}/{name} {}/{} rv={}",
                    m["namespace"].as_str().unwrap_or(""),
                    m["name"].as_str().unwrap_or(""),
                    m["resourceVersion"].as_str().unwrap_or("")
                ));
            }
        }
    }
    objects
}

/// A dump taken once two in a row, a second apart, agree: the controllers have settled.
/// The store once it has not changed for 3 s: longer than the periods of the leader's loops
/// that write soon after setup (the APIService availability check runs every 2 s).
async fn settled(client: &Client) -> BTreeSet<String> {
    let mut last = dump(client).await;
    let mut unchanged = 0;
    for _ in 0..45 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = dump(client).await;
        if now == last {
            unchanged += 1;
            if unchanged == 3 {
                return now;
            }
        } else {
            unchanged = 0;
        }
        last = now;
    }
    panic!("the store did not settle in 45 s");
}

async fn panics(client: &Client) -> f64 {
    let (_, body) = exchange(client, "GET", "/metrics").await.expect("/metrics");
    let text = String::from_utf8_lossy(&body);
    text.lines()
        .find_map(|l| l.strip_prefix("vkube_request_panics_total "))
        .expect("vkube_request_panics_total on /metrics")
        .trim()
        .parse()
        .unwrap()
}

fn report(name: &str, t: &Tally, took: Duration) {
    let sent: u64 = t.codes.values().sum::<u64>() + t.transport.values().sum::<u64>();
    println!(
        "fuzz {name}: {sent} sent in {took:.1?} (+{} the client could not send)",
        t.unsendable
    );
    println!("  status codes: {:?}", t.codes);
    if !t.transport.is_empty() {
        println!("  transport errors: {:?}", t.transport);
    }
}

#[test]
fn hostile_requests_get_no_undocumented_5xx_and_refused_ones_change_nothing() {
    let total: u64 = std::env::var("VKUBE_FUZZ_REQUESTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(12_000);
    let seed: u64 = std::env::var("VKUBE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    let only: Option<u64> = std::env::var("VKUBE_FUZZ_ONLY")
        .ok()
        .and_then(|n| n.parse().ok());
    println!("fuzz: VKUBE_FUZZ_SEED={seed} VKUBE_FUZZ_REQUESTS={total}");
    let server = Server::start();
    let client = Arc::new(Client::new(&server));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for (collection, obj) in generate::seed_objects() {
            let out = crate::harness::kubectl_with(
                "kubectl",
                &server.kubeconfig(),
                &["create", "--raw", collection, "-f", &write_temp(&server, &obj)],
            );
            assert!(out.ok, "seeding {collection}: {}", out.stderr);
            if collection.ends_with("customresourcedefinitions") {
                wait_for_widgets(&client).await;
            }
        }
        // A dryRun other than All is refused, as upstream refuses it, never a real write (the
        // fuzzing found DELETE …?dryRun=Some deleting).
        let (code, body) = exchange(&client, "DELETE", "/api/v1/namespaces/fuzz/configmaps/cm?dryRun=Some").await.unwrap();
        let status: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!((code, status["reason"].as_str()), (422, Some("Invalid")), "{status}");
        assert_eq!(
            status["message"],
            "DeleteOptions.meta.k8s.io \"\" is invalid: dryRun: Unsupported value: []string{\"Some\"}: supported values: \"All\""
        );
        assert!(get_json(&client, "/api/v1/namespaces/fuzz/configmaps/cm").await.is_some());
        // A revision from the future is upstream's 504, not a 500 (found by the fuzzing).
        let (code, body) = exchange(&client, "GET", "/api/v1/namespaces/fuzz/configmaps?resourceVersionMatch=Exact&resourceVersion=99999999999").await.unwrap();
        let status: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!((code, status["reason"].as_str()), (504, Some("Timeout")), "{status}");
        assert!(status["message"].as_str().unwrap().starts_with("Timeout: Too large resource version: 99999999999, current: "));
        // Headers as Go's server takes them: up to 1 MiB, then 431, over HTTP/1.1 and HTTP/2
        // alike (hyper's HTTP/2 default was 16 KiB).
        for h2 in [false, true] {
            for (size, want) in [(200_000, 200), ((1 << 20) + 8192, 431)] {
                let r = Request {
                    method: "GET".into(),
                    path: "/version".into(),
                    headers: vec![("x-big".into(), "b".repeat(size))],
                    body: vec![],
                    sender: Sender::Admin,
                    streaming: false,
                };
                match send(&client, &mut BTreeMap::new(), &r, h2).await {
                    Outcome::Status(code) => assert_eq!(code, want, "{size} bytes of header, h2: {h2}"),
                    Outcome::Transport(e) => panic!("{size} bytes of header, h2: {h2}: {e}"),
                    Outcome::Unsendable => panic!("{size} bytes of header: unsendable"),
                }
            }
        }
        // Two fifths refused or dry runs, then anything.
        let split = total * 2 / 5;
        let (rejected, mixed) = match only {
            Some(n) if n < split => (n..n + 1, n..n),
            Some(n) => (n..n, n..n + 1),
            None => (0..split, split..total),
        };
        // Refused requests and dry runs first, while nothing else changes the store.
        let before = settled(&client).await;
        let started = Instant::now();
        let t = phase(&client, seed, rejected, true).await;
        report("refused or dry-run phase", &t, started.elapsed());
        let after = dump(&client).await;
        let mut failures = t.violations;
        if before != after {
            let gone: Vec<_> = before.difference(&after).take(10).collect();
            let new: Vec<_> = after.difference(&before).take(10).collect();
            failures.push(format!("refused requests changed the store: before only {gone:?}, after only {new:?}"));
        }
        let started = Instant::now();
        let t = phase(&client, seed, mixed, false).await;
        report("mixed phase", &t, started.elapsed());
        failures.extend(t.violations);
        let mut server = server;
        assert!(server.child.try_wait().unwrap().is_none(), "the server died");
        let panicked = panics(&client).await;
        if panicked != 0.0 {
            failures.push(format!("{panicked} handler panics (see the server's log)"));
        }
        let ready = crate::harness::kubectl_with("kubectl", &server.kubeconfig(), &["get", "--raw", "/readyz"]);
        assert!(ready.ok, "not ready after fuzzing: {}", ready.stderr);
        assert!(
            failures.is_empty(),
            "seed {seed} (replay one with VKUBE_FUZZ_SEED={seed} VKUBE_FUZZ_ONLY=N):\n{}",
            failures.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
        );
    });
}

fn write_temp(server: &Server, obj: &Value) -> String {
    let file = server
        .dir
        .path()
        .join(format!("seed-{}.json", crate::harness::rand_suffix()));
    std::fs::write(&file, serde_json::to_vec(obj).unwrap()).unwrap();
    file.display().to_string()
}

async fn wait_for_widgets(client: &Client) {
    for _ in 0..100 {
        if get_json(client, "/apis/example.com/v1/namespaces/fuzz/widgets")
            .await
            .is_some()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("widgets never served");
}
