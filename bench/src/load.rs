//! Saturating load for `peer-bench`: N client tasks, each a closed loop (send, wait for the
//! answer, send again) for a fixed time, so the figure is what the server sustains rather than
//! what a schedule asks of it. The same requests go to every target; objects are small
//! ConfigMaps in namespaces of the benchmark's own.
#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use http_body_util::BodyExt;

use crate::common::{Client, pct};

/// One cell: the answered operations of a closed loop and their latencies (sorted).
#[derive(Default)]
pub struct Cell {
    pub secs: f64,
    pub lat: Vec<Duration>,
    /// 409s answered to updates, each followed by a refetch and a retry.
    pub conflicts: u64,
    pub errors: u64,
}

impl Cell {
    pub fn rate(&self) -> f64 {
        self.lat.len() as f64 / self.secs.max(1e-9)
    }
    pub fn p(&self, q: f64) -> f64 {
        pct(&self.lat, q)
    }
}

/// A watch cell: `watchers` watches on one namespace while one writer creates in a closed loop.
#[derive(Default)]
pub struct WatchCell {
    pub created: u64,
    pub delivered: u64,
    /// Events delivered per second, over all watchers.
    pub events_per_sec: f64,
    /// From the writer sending the create to a watcher reading its event, sorted.
    pub lat: Vec<Duration>,
}

/// The string value of the first `"key":"…"` in a JSON text: enough for the metadata fields the
/// loops need (an object's first resourceVersion is its own), without parsing whole answers on
/// the client, which shares the server's two cores.
pub fn json_str<'a>(body: &'a str, key: &str) -> Option<&'a str> {
    let start = body.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let len = body[start..].find('"')?;
    Some(&body[start..start + len])
}

/// A ConfigMap with one data entry `key: value`.
fn configmap(name: &str, rv: Option<&str>, key: &str, value: &str) -> String {
    let rv = rv.map_or(String::new(), |rv| format!(r#","resourceVersion":"{rv}""#));
    format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"{rv}}},"data":{{"{key}":"{value}"}}}}"#
    )
}

async fn create_namespace(client: &Client, name: &str) -> Result<()> {
    let body =
        format!(r#"{{"apiVersion":"v1","kind":"Namespace","metadata":{{"name":"{name}"}}}}"#);
    let (code, answer) = client
        .request("POST", "/api/v1/namespaces", Some(body))
        .await?;
    ensure!(code == 201, "create namespace {name}: {code} {answer}");
    Ok(())
}

/// Fills `ns` with `n` ConfigMaps cm-0000… and returns their resourceVersions.
async fn fill(client: &Client, ns: &str, n: usize) -> Result<Vec<String>> {
    create_namespace(client, ns).await?;
    let mut rvs = Vec::with_capacity(n);
    for i in 0..n {
        let (code, body) = client
            .request(
                "POST",
                &format!("/api/v1/namespaces/{ns}/configmaps"),
                Some(configmap(&format!("cm-{i:04}"), None, "k", "initial")),
            )
            .await?;
        ensure!(code == 201, "fill {ns}: {code} {body}");
        rvs.push(
            json_str(&body, "resourceVersion")
                .context("rv")?
                .to_string(),
        );
    }
    Ok(rvs)
}

/// What the cells read and update: `objects` ConfigMaps in bench-list (gets and lists) and as
/// many in bench-update.
pub struct Fixture {
    objects: usize,
    /// The last resourceVersion seen of each bench-update object, shared by the update tasks.
    rvs: Arc<Vec<std::sync::Mutex<String>>>,
}

impl Fixture {
    pub async fn make(client: &Client, objects: usize) -> Result<Fixture> {
        fill(client, "bench-list", objects).await?;
        let rvs = fill(client, "bench-update", objects).await?;
        Ok(Fixture {
            objects,
            rvs: Arc::new(rvs.into_iter().map(std::sync::Mutex::new).collect()),
        })
    }
}

/// `n` tasks over `clients` (task t on connection t mod len), each running `op(client, t, i)`
/// for i = 0, 1, … until `duration` is over. `op` answers the number of conflicts it retried.
async fn closed_loop<F, Fut>(clients: &[Client], n: usize, duration: Duration, op: F) -> Cell
where
    F: Fn(Client, usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<u64>> + Send,
{
    let op = Arc::new(op);
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..n {
        let (client, op) = (clients[t % clients.len()].clone(), op.clone());
        tasks.spawn(async move {
            let mut cell = Cell::default();
            let mut i = 0;
            while Instant::now() < deadline {
                let sent = Instant::now();
                match op(client.clone(), t, i).await {
                    Ok(conflicts) => {
                        cell.lat.push(sent.elapsed());
                        cell.conflicts += conflicts;
                    }
                    Err(e) => {
                        if cell.errors == 0 {
                            eprintln!("task {t}: {e:#}");
                        }
                        cell.errors += 1;
                    }
                }
                i += 1;
            }
            cell
        });
    }
    let mut all = Cell::default();
    while let Some(Ok(cell)) = tasks.join_next().await {
        all.lat.extend(cell.lat);
        all.conflicts += cell.conflicts;
        all.errors += cell.errors;
    }
    all.secs = started.elapsed().as_secs_f64();
    all.lat.sort();
    all
}

async fn expect(
    client: &Client,
    method: &str,
    path: &str,
    body: Option<String>,
    want: u16,
) -> Result<String> {
    let (code, answer) = client.request(method, path, body).await?;
    if code != want {
        bail!(
            "{method} {path}: {code} {}",
            answer.chars().take(200).collect::<String>()
        );
    }
    Ok(answer)
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Op {
    Create,
    Get,
    List,
    Update,
}

impl Op {
    pub const ALL: [Op; 4] = [Op::Create, Op::Get, Op::List, Op::Update];
    pub fn name(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Get => "get",
            Op::List => "list",
            Op::Update => "update",
        }
    }
}

/// One closed-loop cell of `op` with `n` clients.
pub async fn run(
    op: Op,
    clients: &[Client],
    n: usize,
    duration: Duration,
    fixture: &Fixture,
) -> Result<Cell> {
    let m = fixture.objects;
    Ok(match op {
        Op::Create => {
            let ns = format!("bench-create-{n}");
            create_namespace(&clients[0], &ns).await?;
            closed_loop(clients, n, duration, move |c, t, i| {
                let path = format!("/api/v1/namespaces/{ns}/configmaps");
                let body = configmap(&format!("c-{t}-{i}"), None, "k", "v");
                async move { expect(&c, "POST", &path, Some(body), 201).await.map(|_| 0) }
            })
            .await
        }
        Op::Get => {
            closed_loop(clients, n, duration, move |c, t, i| {
                let k = (t * 7 + i as usize) % m;
                let path = format!("/api/v1/namespaces/bench-list/configmaps/cm-{k:04}");
                async move { expect(&c, "GET", &path, None, 200).await.map(|_| 0) }
            })
            .await
        }
        Op::List => {
            closed_loop(clients, n, duration, |c, _, _| async move {
                let path = "/api/v1/namespaces/bench-list/configmaps";
                expect(&c, "GET", path, None, 200).await.map(|_| 0)
            })
            .await
        }
        Op::Update => {
            let rvs = fixture.rvs.clone();
            closed_loop(clients, n, duration, move |c, t, i| {
                // Tasks walk the objects n apart, so two collide only when one falls behind.
                let k = (t + i as usize * n) % m;
                let rvs = rvs.clone();
                async move { update(&c, &rvs[k], k, &format!("{t}-{i}")).await }
            })
            .await
        }
    })
}

/// PUT with the last resourceVersion seen; on 409, GET the object and retry, as client-go's
/// RetryOnConflict does. Answers the number of conflicts.
async fn update(c: &Client, rv: &std::sync::Mutex<String>, k: usize, data: &str) -> Result<u64> {
    let name = format!("cm-{k:04}");
    let path = format!("/api/v1/namespaces/bench-update/configmaps/{name}");
    for conflicts in 0..100 {
        let seen = rv.lock().unwrap().clone();
        let body = configmap(&name, Some(&seen), "k", data);
        let (code, answer) = c.request("PUT", &path, Some(body)).await?;
        let answer = match code {
            200 => answer,
            409 => expect(c, "GET", &path, None, 200).await?,
            _ => bail!(
                "PUT {path}: {code} {}",
                answer.chars().take(200).collect::<String>()
            ),
        };
        *rv.lock().unwrap() = json_str(&answer, "resourceVersion")
            .context("rv")?
            .to_string();
        if code == 200 {
            return Ok(conflicts);
        }
    }
    bail!("PUT {path}: 100 conflicts in a row")
}

/// `watchers` watches of one fresh namespace (from the resourceVersion of its empty list) while
/// one writer creates in a closed loop for `duration`; then waits up to 10 s for every event.
/// Each object carries its send time, so a watcher needs no shared state to time its events.
pub async fn watch(clients: &[Client], watchers: usize, duration: Duration) -> Result<WatchCell> {
    let ns = format!("bench-watch-{watchers}");
    create_namespace(&clients[0], &ns).await?;
    let base = format!("/api/v1/namespaces/{ns}/configmaps");
    let list = expect(&clients[0], "GET", &base, None, 200).await?;
    let rv = json_str(&list, "resourceVersion")
        .context("list rv")?
        .to_string();
    let epoch = Instant::now();
    let delivered = Arc::new(AtomicU64::new(0));
    let last = Arc::new(AtomicU64::new(0));
    let mut streams = Vec::new();
    for w in 0..watchers {
        let c = &clients[w % clients.len()];
        streams.push(
            c.stream(&format!("{base}?watch=1&resourceVersion={rv}"))
                .await?,
        );
    }
    let mut tasks = Vec::new();
    let mut lats = Vec::new();
    for mut body in streams {
        let lat = Arc::new(std::sync::Mutex::new(Vec::new()));
        lats.push(lat.clone());
        let (delivered, last) = (delivered.clone(), last.clone());
        tasks.push(tokio::spawn(async move {
            let mut buf = Vec::new();
            while let Some(Ok(frame)) = body.frame().await {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                buf.extend_from_slice(&data);
                while let Some(end) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=end).collect();
                    let line = String::from_utf8_lossy(&line);
                    let Some(sent) = json_str(&line, "t").and_then(|t| t.parse::<u64>().ok())
                    else {
                        continue;
                    };
                    let now = epoch.elapsed().as_nanos() as u64;
                    lat.lock()
                        .unwrap()
                        .push(Duration::from_nanos(now.saturating_sub(sent)));
                    last.fetch_max(now, Ordering::Relaxed);
                    delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let writer_start = epoch.elapsed();
    let mut created = 0u64;
    while epoch.elapsed() < writer_start + duration {
        let sent = epoch.elapsed().as_nanos();
        let body = configmap(&format!("w-{created:09}"), None, "t", &sent.to_string());
        match expect(&clients[0], "POST", &base, Some(body), 201).await {
            Ok(_) => created += 1,
            Err(e) => bail!("watch writer: {e:#}"),
        }
    }
    let want = created * watchers as u64;
    let drain = Instant::now();
    while delivered.load(Ordering::Relaxed) < want && drain.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tasks.iter().for_each(|t| t.abort());
    let mut lat: Vec<Duration> = lats
        .iter()
        .flat_map(|l| l.lock().unwrap().clone())
        .collect();
    lat.sort();
    let delivered = delivered.load(Ordering::Relaxed);
    let span = Duration::from_nanos(last.load(Ordering::Relaxed)).saturating_sub(writer_start);
    Ok(WatchCell {
        created,
        delivered,
        events_per_sec: delivered as f64 / span.as_secs_f64().max(1e-9),
        lat,
    })
}
