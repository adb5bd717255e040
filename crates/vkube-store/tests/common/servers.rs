//! The etcd and PostgreSQL servers the tests use: the ones the environment names, or ones started
//! here on loopback, once per test process, in temp dirs. A watchdog shell stops them when the test
//! process exits (the Rust test harness runs no destructors at exit).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn require(tool: &str, hint: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(found, "`{tool}` is not on PATH: {hint}");
}

/// Runs `script` in the background under a watchdog that kills it, and removes `dir`, once this
/// test process is gone.
fn supervise(script: &str, dir: &Path) {
    // The outer shell backgrounds the watchdog and exits at once; it is waited for here, and the
    // watchdog outlives it.
    let watchdog = format!(
        "( ({script}) & child=$!; while kill -0 {parent} 2>/dev/null && kill -0 $child 2>/dev/null; \
         do sleep 1; done; kill $child 2>/dev/null; wait $child; rm -rf '{dir}' ) &",
        parent = std::process::id(),
        dir = dir.display()
    );
    let status = Command::new("sh")
        .args(["-c", &watchdog])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("start watchdog shell");
    assert!(status.success(), "watchdog shell failed");
}

fn wait_for_port(port: u16, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{what} did not start on 127.0.0.1:{port}:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `host:port[,host:port]` of the etcd the tests use.
pub fn etcd_endpoints() -> String {
    static ENDPOINTS: OnceLock<String> = OnceLock::new();
    ENDPOINTS
        .get_or_init(|| {
            if let Ok(endpoints) = std::env::var("VKUBE_TEST_ETCD_ENDPOINTS") {
                return endpoints
                    .split(',')
                    .map(|e| e.trim().trim_start_matches("http://").to_string())
                    .collect::<Vec<_>>()
                    .join(",");
            }
            require("etcd", "install it (apt-get install -y etcd-server) or set VKUBE_TEST_ETCD_ENDPOINTS");
            let dir = tempfile::Builder::new().prefix("vkube-etcd").tempdir().expect("temp dir").keep();
            let (client, peer) = (free_port(), free_port());
            let log = dir.join("etcd.log");
            supervise(
                &format!(
                    "exec etcd --name t --data-dir '{data}' \
                     --listen-client-urls http://127.0.0.1:{client} --advertise-client-urls http://127.0.0.1:{client} \
                     --listen-peer-urls http://127.0.0.1:{peer} --initial-advertise-peer-urls http://127.0.0.1:{peer} \
                     --initial-cluster t=http://127.0.0.1:{peer} >'{log}' 2>&1",
                    data = dir.join("data").display(),
                    log = log.display(),
                ),
                &dir,
            );
            wait_for_port(client, "etcd", &log);
            format!("127.0.0.1:{client}")
        })
        .clone()
}

/// The server URL (no database) of the PostgreSQL the tests use.
fn postgres_server() -> String {
    static SERVER: OnceLock<String> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            if let Ok(url) = std::env::var("VKUBE_TEST_POSTGRES_URL") {
                return url;
            }
            require("initdb", "install PostgreSQL (apt-get install -y postgresql) or set VKUBE_TEST_POSTGRES_URL");
            let dir = tempfile::Builder::new().prefix("vkube-pg").tempdir().expect("temp dir").keep();
            let port = free_port();
            let log = dir.join("postgres.log");
            let data = dir.join("data");
            // PostgreSQL refuses to run as root; run it as the `postgres` user then.
            let as_user = if is_root() {
                Command::new("chown").args(["-R", "postgres", &dir.display().to_string()]).status().expect("chown");
                "runuser -u postgres --"
            } else {
                ""
            };
            let init = Command::new("sh")
                .args(["-c", &format!("{as_user} initdb -D '{}' -U postgres --auth=trust >'{}' 2>&1", data.display(), log.display())])
                .status()
                .expect("run initdb");
            assert!(init.success(), "initdb failed: {}", std::fs::read_to_string(&log).unwrap_or_default());
            supervise(
                &format!(
                    "exec {as_user} postgres -D '{data}' -h 127.0.0.1 -p {port} -k '{dir}' -c max_connections=300 >>'{log}' 2>&1",
                    data = data.display(),
                    dir = dir.display(),
                    log = log.display(),
                ),
                &dir,
            );
            wait_for_port(port, "postgres", &log);
            format!("postgres://postgres@127.0.0.1:{port}/postgres")
        })
        .clone()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Creates database `name` on the test server and returns its URL.
pub async fn postgres_database(name: &str) -> String {
    let server = postgres_server();
    let config: tokio_postgres::Config = server
        .parse()
        .expect("VKUBE_TEST_POSTGRES_URL is a postgres URL");
    let deadline = Instant::now() + Duration::from_secs(30);
    let (client, connection) = loop {
        match config.connect(tokio_postgres::NoTls).await {
            Ok(c) => break c,
            Err(e) if Instant::now() > deadline => panic!("PostgreSQL at {server}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|e| panic!("create database {name} at {server}: {e}"));
    let mut url = url::Url::parse(&server).expect("a postgres URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}
