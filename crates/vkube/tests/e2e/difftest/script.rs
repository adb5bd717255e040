//! The request script: `difftest/requests/*.yaml`, one file per area, each step one request, run in
//! order against one server. Files are independent (each works in namespaces of its own), so one
//! server runs them all.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};

use super::client::{Answer, Target};
use super::compare::glob;
use super::normalize::Normalizer;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileYaml {
    steps: Vec<Step>,
}

/// One request. `${var}` in `path`, header values and `body` is replaced by a value an earlier
/// step captured (the server's own, before normalization).
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct Step {
    pub(crate) name: String,
    #[serde(default = "get")]
    pub(crate) method: String,
    pub(crate) path: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// Sent as JSON; a string is sent as it is (patches, malformed bodies, YAML).
    body: Option<Value>,
    /// Content type of a PATCH: json, merge, strategic or apply.
    patch: Option<String>,
    /// Impersonated user (`Impersonate-User`) and groups, for RBAC: the admin credentials of
    /// both servers may impersonate anyone.
    user: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
    /// The answer is a watch stream; the path must carry `timeoutSeconds` so the server ends it.
    #[serde(default)]
    watch: bool,
    /// Variables to set from the answer: name → dotted path (`metadata.resourceVersion`,
    /// `items.0.metadata.name`).
    #[serde(default)]
    capture: BTreeMap<String, String>,
    /// Repeat (up to 10 s) until this status code: kube-apiserver's RBAC authorizer reads an
    /// informer, so a grant takes a moment to apply there.
    retry_until: Option<u16>,
    /// Fields (glob patterns, as in the allow-list) replaced by `<masked>` on both sides: what
    /// neither normalization nor the server can make equal, such as a Table's age column.
    #[serde(default)]
    mask: Vec<String>,
}

fn get() -> String {
    "GET".to_string()
}

/// A script file: its name (the file stem) and steps.
pub(crate) struct Script {
    pub(crate) name: String,
    pub(crate) steps: Vec<Step>,
}

/// One step's normalized answer: `{code, warnings?, body}`.
pub(crate) struct Recorded {
    pub(crate) step: String,
    pub(crate) request: String,
    pub(crate) answer: Value,
}

pub(crate) fn load(dir: &Path) -> Vec<Script> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            let file: FileYaml =
                serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            let mut seen = std::collections::BTreeSet::new();
            for s in &file.steps {
                assert!(seen.insert(&s.name), "{name}: step {} twice", s.name);
                assert!(
                    !s.watch || s.path.contains("timeoutSeconds="),
                    "{name}/{}: a watch step needs timeoutSeconds",
                    s.name
                );
            }
            Script {
                name,
                steps: file.steps,
            }
        })
        .collect()
}

fn substitute(text: &str, vars: &BTreeMap<String, String>, step: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let end = rest[i..]
            .find('}')
            .unwrap_or_else(|| panic!("{step}: unclosed ${{ in {text}"));
        let name = &rest[i + 2..i + end];
        let value = vars
            .get(name)
            .unwrap_or_else(|| panic!("{step}: ${{{name}}} is not captured by an earlier step"));
        out.push_str(value);
        rest = &rest[i + end + 1..];
    }
    out.push_str(rest);
    out
}

fn lookup<'a>(mut v: &'a Value, path: &str) -> Option<&'a Value> {
    for seg in path.split('.') {
        v = match seg.parse::<usize>() {
            Ok(i) if v.is_array() => v.get(i)?,
            _ => v.get(seg)?,
        };
    }
    Some(v)
}

impl Step {
    fn headers(&self, vars: &BTreeMap<String, String>) -> Vec<(String, String)> {
        let mut h: Vec<(String, String)> = vec![
            ("user-agent".into(), "difftest/v0".into()),
            ("accept".into(), "application/json".into()),
        ];
        if self.body.is_some() {
            let ct = match self.patch.as_deref() {
                None => "application/json",
                Some("json") => "application/json-patch+json",
                Some("merge") => "application/merge-patch+json",
                Some("strategic") => "application/strategic-merge-patch+json",
                Some("apply") => "application/apply-patch+yaml",
                Some(other) => panic!("{}: unknown patch type {other}", self.name),
            };
            h.push(("content-type".into(), ct.into()));
        }
        for (k, v) in &self.headers {
            let k = k.to_ascii_lowercase();
            h.retain(|(n, _)| *n != k);
            h.push((k, substitute(v, vars, &self.name)));
        }
        if let Some(u) = &self.user {
            h.push(("impersonate-user".into(), u.clone()));
        }
        for g in &self.groups {
            h.push(("impersonate-group".into(), g.clone()));
        }
        h
    }

    fn body(&self, vars: &BTreeMap<String, String>) -> Vec<u8> {
        let text = match &self.body {
            None => return Vec::new(),
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
        };
        substitute(&text, vars, &self.name).into_bytes()
    }
}

/// The answer as JSON: the body parsed (a watch: the list of its events), else kept as text.
fn parse(answer: &Answer, watch: bool) -> Value {
    let text = String::from_utf8_lossy(&answer.body);
    let body = if watch && answer.code == 200 {
        Value::Array(
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str(l).unwrap_or_else(|_| json!(l)))
                .collect(),
        )
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| json!(text.trim_end()))
    };
    let mut out = json!({"code": answer.code, "body": body});
    if !answer.warnings.is_empty() {
        out["warnings"] = json!(answer.warnings);
    }
    out
}

fn mask(mut answer: Value, patterns: &[String]) -> Value {
    fn walk(v: &mut Value, path: &str, patterns: &[String]) {
        if !path.is_empty() && patterns.iter().any(|p| glob(p, path)) {
            *v = json!("<masked>");
            return;
        }
        match v {
            Value::Object(map) => {
                for (k, x) in map.iter_mut() {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(x, &p, patterns);
                }
            }
            Value::Array(items) => {
                for (i, x) in items.iter_mut().enumerate() {
                    walk(x, &format!("{path}[{i}]"), patterns);
                }
            }
            _ => {}
        }
    }
    if !patterns.is_empty() {
        walk(&mut answer, "", patterns);
    }
    answer
}

/// Runs a script's steps in order against `target` and returns the normalized answers.
/// Waits until vkube's controllers have put their objects into a namespace just created (its
/// `default` ServiceAccount and `kube-root-ca.crt`): the recorded kube-apiserver has no
/// controllers, so those writes must land before the script goes on, not between two of its
/// steps, where they would move a list's resourceVersion.
async fn settle_namespace(target: &Target, created: &[u8]) {
    let Some(name) = serde_json::from_slice::<Value>(created)
        .ok()
        .and_then(|v| v["metadata"]["name"].as_str().map(str::to_string))
    else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    for object in ["serviceaccounts/default", "configmaps/kube-root-ca.crt"] {
        let path = format!("/api/v1/namespaces/{name}/{object}");
        while Instant::now() < deadline {
            match target.send("GET", &path, &[], Vec::new()).await {
                Ok(answer) if answer.code == 200 => break,
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
}

pub(crate) async fn run(target: &Target, script: &Script) -> Vec<Recorded> {
    let mut vars = BTreeMap::new();
    let mut norm = Normalizer::default();
    let mut out = Vec::new();
    for step in &script.steps {
        let path = substitute(&step.path, &vars, &step.name);
        let headers = step.headers(&vars);
        let body = step.body(&vars);
        let deadline = Instant::now() + Duration::from_secs(10);
        let answer = loop {
            let answer = target
                .send(&step.method, &path, &headers, body.clone())
                .await
                .unwrap_or_else(|e| panic!("{}: {}/{}: {e}", target.label, script.name, step.name));
            match step.retry_until {
                Some(code) if answer.code != code && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                _ => break answer,
            }
        };
        if target.label == "vkube" && step.method == "POST" && path == "/api/v1/namespaces" {
            settle_namespace(target, &answer.body).await;
        }
        let raw = parse(&answer, step.watch);
        for (var, at) in &step.capture {
            let value = match lookup(&raw["body"], at) {
                Some(Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
                None => {
                    eprintln!(
                        "{}: {}/{}: nothing at {at} to capture as {var}",
                        target.label, script.name, step.name
                    );
                    "missing".to_string()
                }
            };
            vars.insert(var.clone(), value);
        }
        out.push(Recorded {
            step: step.name.clone(),
            request: format!("{} {}", step.method, step.path),
            answer: mask(norm.answer(&step.name, raw, step.watch), &step.mask),
        });
    }
    out
}
