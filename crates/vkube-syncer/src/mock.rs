//! A scripted Kubernetes API for unit tests: plain HTTP on loopback, each request answered by a
//! function of its method, path (with query) and JSON body, and recorded.

use serde_json::Value;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// One request: method, path with query, body (Null if none).
pub type Request = (String, String, Value);

pub struct Api {
    pub client: kube::Client,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Api {
    /// The requests so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

/// A `Status` answer.
pub fn status(code: u16, reason: &str) -> (u16, Value) {
    (
        code,
        serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                           "message": format!("{reason} (mock)"), "reason": reason, "code": code}),
    )
}

/// Serves `answer` until the test ends.
pub async fn serve<F>(answer: F) -> Api
where
    F: Fn(&str, &str, &Value) -> (u16, Value) + Send + Sync + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let (log, answer) = (requests.clone(), Arc::new(answer));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (log, answer) = (log.clone(), answer.clone());
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut read = BufReader::new(read);
                loop {
                    let mut line = String::new();
                    if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let mut parts = line.split_whitespace();
                    let method = parts.next().unwrap_or_default().to_string();
                    let path = parts.next().unwrap_or_default().to_string();
                    let mut length = 0;
                    loop {
                        let mut header = String::new();
                        read.read_line(&mut header).await.unwrap();
                        let header = header.trim_end();
                        if header.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = header.split_once(':')
                            && k.eq_ignore_ascii_case("content-length")
                        {
                            length = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; length];
                    read.read_exact(&mut body).await.unwrap();
                    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let (code, out) = answer(&method, &path, &body);
                    log.lock().unwrap().push((method, path, body));
                    let out = out.to_string();
                    let head = format!(
                        "HTTP/1.1 {code} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                        out.len()
                    );
                    if write.write_all(head.as_bytes()).await.is_err()
                        || write.write_all(out.as_bytes()).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    Api {
        client: kube::Client::try_from(config).unwrap(),
        requests,
    }
}

/// A syncer configuration of the two scripted APIs; `namespace` keeps tests' runs apart.
pub fn config(virt: &Api, host: &Api, namespace: &str) -> crate::Config {
    crate::Config {
        virtual_client: virt.client.clone(),
        host_client: host.client.clone(),
        host_namespace: namespace.to_string(),
        cluster: "vc".into(),
        resync: std::time::Duration::from_secs(60),
        vkube_ip: None,
        settings: crate::Settings::default(),
    }
}

/// vkube's `/version`.
pub fn version() -> (u16, Value) {
    (
        200,
        serde_json::json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-vkube.9",
            "gitCommit": "", "gitTreeState": "", "buildDate": "", "goVersion": "",
            "compiler": "", "platform": "linux/amd64"}),
    )
}
