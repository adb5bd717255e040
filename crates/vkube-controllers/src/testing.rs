#![allow(dead_code)] // helpers for the controllers' tests; each uses some
//! An in-memory API for unit tests: enough of kube-apiserver's REST semantics for a
//! `kube::Client` (get, list with label selectors, create with `generateName`, update with
//! resourceVersion conflicts, `/status`, JSON merge patch, delete), with every write recorded.
//! No watches: tests call a controller's reconcile directly.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Request, Response};
use http_body_util::BodyExt;
use serde_json::{Value, json};

#[derive(Default)]
struct Inner {
    /// `{collection path}/{name}` → object.
    objects: BTreeMap<String, Value>,
    revision: u64,
    writes: Vec<String>,
    /// `(method, path prefix, code, reason, message)`: requests refused, as admission would.
    refusals: Vec<(String, String, u16, String, String)>,
    /// Fixed answers to GETs of these paths (discovery documents).
    served: BTreeMap<String, Value>,
    /// Deletes mark objects with finalizers instead of removing them, as the API does, and
    /// a `propagationPolicy` of Foreground or Orphan adds its finalizer.
    hold_finalizers: bool,
}

/// The fake API; clones share it.
#[derive(Clone, Default)]
pub struct FakeApi(Arc<Mutex<Inner>>);

fn status(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
               "reason": reason, "code": code}),
    )
}

/// `a=b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`, comma-separated.
fn matches(selector: &str, labels: &Value) -> bool {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&selector[start..]);
    terms
        .iter()
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .all(|t| {
            let get = |k: &str| labels.get(k.trim()).and_then(Value::as_str);
            let set = |rest: &str| -> Vec<String> {
                rest.trim()
                    .trim_start_matches('(')
                    .trim_end_matches(')')
                    .split(',')
                    .map(|v| v.trim().to_string())
                    .collect()
            };
            if let Some((k, rest)) = t.split_once(" notin ") {
                get(k).is_none_or(|v| !set(rest).iter().any(|x| x == v))
            } else if let Some((k, rest)) = t.split_once(" in ") {
                get(k).is_some_and(|v| set(rest).iter().any(|x| x == v))
            } else if let Some((k, v)) = t.split_once("!=") {
                get(k) != Some(v.trim())
            } else if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
                get(k) == Some(v.trim())
            } else if let Some(k) = t.strip_prefix('!') {
                get(k).is_none()
            } else {
                get(t).is_some()
            }
        })
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

impl FakeApi {
    pub fn client(&self) -> kube::Client {
        let api = self.clone();
        let service = tower::service_fn(move |req: Request<kube::client::Body>| {
            let api = api.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let (code, out) = api.answer(parts.method.as_str(), &parts.uri, body);
                Ok::<_, std::convert::Infallible>(
                    Response::builder()
                        .status(code)
                        .header("content-type", "application/json")
                        .body(http_body_util::Full::new(bytes::Bytes::from(
                            out.to_string(),
                        )))
                        .expect("a response"),
                )
            }
        });
        kube::Client::new(service, "default")
    }

    /// Stores `obj` as a client's create would (`path` is its collection, e.g.
    /// `/apis/apps/v1/namespaces/ns/deployments`).
    pub fn put(&self, collection: &str, obj: Value) -> Value {
        let (code, out) = self.answer("POST", &collection.parse().expect("a path"), obj);
        assert!(code < 300, "seeding {collection}: {out}");
        out
    }

    /// The object at `collection`/`name`.
    pub fn get(&self, collection: &str, name: &str) -> Option<Value> {
        let inner = self.0.lock().expect("fake lock");
        inner.objects.get(&format!("{collection}/{name}")).cloned()
    }

    /// The objects of `collection`, by name.
    pub fn list(&self, collection: &str) -> Vec<Value> {
        let inner = self.0.lock().expect("fake lock");
        let prefix = format!("{collection}/");
        inner
            .objects
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix) && !k[prefix.len()..].contains('/'))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Changes an object in place, as another client (a kubelet) would.
    pub fn edit(&self, collection: &str, name: &str, change: impl FnOnce(&mut Value)) {
        let mut inner = self.0.lock().expect("fake lock");
        inner.revision += 1;
        let rv = inner.revision.to_string();
        let obj = inner
            .objects
            .get_mut(&format!("{collection}/{name}"))
            .expect("the object to edit");
        change(obj);
        obj["metadata"]["resourceVersion"] = json!(rv);
    }

    /// From now on, `method` requests on paths starting with `path_prefix` fail with `code`
    /// (a quota's 403, …) until [`FakeApi::accept`].
    pub fn refuse(&self, method: &str, path_prefix: &str, code: u16, reason: &str, message: &str) {
        let mut inner = self.0.lock().expect("fake lock");
        inner.refusals.push((
            method.into(),
            path_prefix.into(),
            code,
            reason.into(),
            message.into(),
        ));
    }

    /// From now on, GET `path` answers `doc` (`/api`, `/apis`: discovery).
    pub fn serve(&self, path: &str, doc: Value) {
        let mut inner = self.0.lock().expect("fake lock");
        inner.served.insert(path.into(), doc);
    }

    /// From now on, a delete of an object with finalizers sets its `deletionTimestamp` and
    /// leaves it, as the API does; a delete of a collection (`DELETE` on it) deletes each.
    pub fn hold_finalizers(&self) {
        self.0.lock().expect("fake lock").hold_finalizers = true;
    }

    /// Ends every [`FakeApi::refuse`].
    pub fn accept(&self) {
        self.0.lock().expect("fake lock").refusals.clear();
    }

    /// The writes so far: `METHOD path`.
    pub fn writes(&self) -> Vec<String> {
        self.0.lock().expect("fake lock").writes.clone()
    }

    fn answer(&self, method: &str, uri: &http::Uri, body: Value) -> (u16, Value) {
        let mut inner = self.0.lock().expect("fake lock");
        let path = uri.path().trim_end_matches('/');
        let query: BTreeMap<String, String> = uri
            .query()
            .map(|q| {
                q.split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), decode(v)))
                    .collect()
            })
            .unwrap_or_default();
        if method == "GET"
            && let Some(doc) = inner.served.get(path)
        {
            return (200, doc.clone());
        }
        let segments: Vec<&str> = path.split('/').collect();
        // /api/v1/... has 3 leading segments ("", api, v1), /apis/g/v/... has 4.
        let base = if segments.get(1) == Some(&"api") {
            3
        } else {
            4
        };
        let rest = &segments[base.min(segments.len())..];
        let (collection_len, name, sub) = match rest {
            // A Namespace's own subresources, not a collection in it.
            ["namespaces", n, s @ ("status" | "finalize")] => (1, Some(*n), Some(*s)),
            ["namespaces", _, _] | [_] => (rest.len(), None, None),
            ["namespaces", _, _, n] | [_, n] => (rest.len() - 1, Some(*n), None),
            ["namespaces", _, _, n, s] | [_, n, s] => (rest.len() - 2, Some(*n), Some(*s)),
            _ => {
                return status(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                );
            }
        };
        let collection = segments[..base + collection_len].join("/");
        if method != "GET" {
            inner.writes.push(format!("{method} {path}"));
        }
        // Refused writes are recorded too: they were tried.
        if let Some((_, _, code, reason, message)) = inner
            .refusals
            .iter()
            .find(|(m, prefix, ..)| m == method && path.starts_with(prefix.as_str()))
        {
            return status(*code, reason, message);
        }
        inner.revision += 1;
        let rv = inner.revision.to_string();
        match (method, name) {
            ("GET", None) => {
                let prefix = format!("{collection}/");
                let selector = query.get("labelSelector").cloned().unwrap_or_default();
                // A namespaced resource's collection across namespaces (`/api/v1/pods`) holds
                // what `/api/v1/namespaces/*/pods` hold.
                let across = (rest.len() == 1).then(|| {
                    let root = segments[..base].join("/");
                    (format!("{root}/namespaces/"), format!("/{}/", rest[0]))
                });
                let in_collection = |k: &str| {
                    (k.starts_with(&prefix) && !k[prefix.len()..].contains('/'))
                        || across.as_ref().is_some_and(|(ns, res)| {
                            k.strip_prefix(ns.as_str())
                                .and_then(|r| r.split_once('/'))
                                .is_some_and(|(_, r)| {
                                    r.strip_prefix(&res[1..])
                                        .is_some_and(|name| !name.contains('/'))
                                })
                        })
                };
                let items: Vec<Value> = inner
                    .objects
                    .iter()
                    .filter(|(k, _)| in_collection(k))
                    .map(|(_, v)| v.clone())
                    .filter(|v| matches(&selector, &v["metadata"]["labels"]))
                    // Field selectors: `metadata.name=X` only.
                    .filter(|v| {
                        query
                            .get("fieldSelector")
                            .and_then(|f| f.strip_prefix("metadata.name="))
                            .is_none_or(|name| v["metadata"]["name"] == name)
                    })
                    .collect();
                (
                    200,
                    json!({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": rv}, "items": items}),
                )
            }
            ("GET", Some(n)) => match inner.objects.get(&format!("{collection}/{n}")) {
                Some(obj) => (200, obj.clone()),
                None => status(404, "NotFound", &format!("\"{n}\" not found")),
            },
            ("POST", None) => {
                let mut obj = body;
                let meta = &mut obj["metadata"];
                if meta["name"].as_str().is_none_or(str::is_empty) {
                    let prefix = meta["generateName"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    meta["name"] = json!(format!("{prefix}{:05x}", inner.revision));
                }
                let name = meta["name"].as_str().unwrap_or_default().to_string();
                let key = format!("{collection}/{name}");
                if inner.objects.contains_key(&key) {
                    return status(409, "AlreadyExists", &format!("\"{name}\" already exists"));
                }
                meta["uid"] = json!(format!("uid-{name}"));
                meta["resourceVersion"] = json!(rv);
                meta["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
                // `/api/v1/namespaces/NS/...`; `/api/v1/namespaces` itself makes Namespaces.
                if segments.get(base) == Some(&"namespaces") && segments.len() > base + 2 {
                    meta["namespace"] = json!(segments[base + 1]);
                }
                if meta.get("generation").is_none() {
                    meta["generation"] = json!(1);
                }
                inner.objects.insert(key, obj.clone());
                (201, obj)
            }
            ("PUT" | "PATCH", Some(n)) => {
                let key = format!("{collection}/{n}");
                let Some(old) = inner.objects.get(&key).cloned() else {
                    return status(404, "NotFound", &format!("\"{n}\" not found"));
                };
                let mut new = if method == "PUT" {
                    body.clone()
                } else {
                    let mut merged = old.clone();
                    merge(&mut merged, &body);
                    merged
                };
                let given = body["metadata"]["resourceVersion"].as_str();
                if given.is_some_and(|g| Some(g) != old["metadata"]["resourceVersion"].as_str()) {
                    return status(
                        409,
                        "Conflict",
                        &format!(
                            "Operation cannot be fulfilled on \"{n}\": the object has been modified; please apply your changes to the latest version and try again"
                        ),
                    );
                }
                // `/status` changes only the status, anything else only the rest.
                if sub == Some("status") {
                    let status = new["status"].clone();
                    new = old.clone();
                    new["status"] = status;
                } else {
                    new["status"] = old["status"].clone();
                    if new["spec"] != old["spec"] {
                        let g = old["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
                        new["metadata"]["generation"] = json!(g);
                    }
                }
                new["metadata"]["resourceVersion"] = json!(rv);
                new["metadata"]["uid"] = old["metadata"]["uid"].clone();
                // A write that takes a deleted object's last finalizer off deletes it (a
                // Namespace's end is its controller's `finalize`).
                let none = |o: &Value| {
                    o["metadata"]["finalizers"]
                        .as_array()
                        .is_none_or(Vec::is_empty)
                };
                let finished = new["metadata"]["deletionTimestamp"].is_string()
                    && !none(&old)
                    && none(&new)
                    && !collection.ends_with("/namespaces");
                if finished {
                    inner.objects.remove(&key);
                } else {
                    inner.objects.insert(key, new.clone());
                }
                (200, new)
            }
            ("DELETE", Some(n)) => {
                let key = format!("{collection}/{n}");
                let hold = inner.hold_finalizers;
                if let Some(obj) = inner.objects.get_mut(&key) {
                    // DeleteOptions' preconditions, and the finalizer its propagation asks for.
                    let pre = &body["preconditions"];
                    for (field, what) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
                        let have = obj["metadata"][field].as_str().unwrap_or_default();
                        if let Some(want) = pre[field].as_str().filter(|w| *w != have) {
                            let message = format!(
                                "Precondition failed: {what} in precondition: {want}, {what} in object meta: {have}"
                            );
                            return status(409, "Conflict", &message);
                        }
                    }
                    let finalizer = match body["propagationPolicy"].as_str() {
                        Some("Foreground") => Some("foregroundDeletion"),
                        Some("Orphan") => Some("orphan"),
                        _ => None,
                    };
                    if let Some(f) = finalizer.filter(|_| hold) {
                        let list = &mut obj["metadata"]["finalizers"];
                        if !list.as_array().is_some_and(|l| l.iter().any(|x| x == f)) {
                            let mut l = list.as_array().cloned().unwrap_or_default();
                            l.push(json!(f));
                            *list = json!(l);
                        }
                    }
                }
                match inner.delete(&key, &rv) {
                    Some(obj) => (200, obj),
                    None => status(404, "NotFound", &format!("\"{n}\" not found")),
                }
            }
            ("DELETE", None) => {
                let prefix = format!("{collection}/");
                let keys: Vec<String> = inner
                    .objects
                    .keys()
                    .filter(|k| k.starts_with(&prefix) && !k[prefix.len()..].contains('/'))
                    .cloned()
                    .collect();
                let items: Vec<Value> = keys.iter().filter_map(|k| inner.delete(k, &rv)).collect();
                (
                    200,
                    json!({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": rv}, "items": items}),
                )
            }
            _ => status(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            ),
        }
    }
}

impl Inner {
    /// Deletes the object at `key` (or marks it, see [`FakeApi::hold_finalizers`]).
    fn delete(&mut self, key: &str, rv: &str) -> Option<Value> {
        let obj = self.objects.get_mut(key)?;
        let held = obj["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if !(self.hold_finalizers && held) {
            return self.objects.remove(key);
        }
        if obj["metadata"]["deletionTimestamp"].is_null() {
            obj["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
            obj["metadata"]["resourceVersion"] = json!(rv);
        }
        Some(obj.clone())
    }
}

fn decode(v: &str) -> String {
    let v = v.replace('+', " ");
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&v[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, ListParams, PostParams};

    #[tokio::test]
    async fn creates_lists_by_selector_and_conflicts_on_stale_updates() {
        let fake = FakeApi::default();
        let pods: Api<Pod> = Api::namespaced(fake.client(), "ns");
        let mut pod: Pod = serde_json::from_value(
            json!({"metadata": {"generateName": "web-", "labels": {"app": "web"}}}),
        )
        .unwrap();
        let made = pods.create(&PostParams::default(), &pod).await.unwrap();
        assert!(made.metadata.name.unwrap().starts_with("web-"));
        pod.metadata.generate_name = None;
        pod.metadata.name = Some("db".into());
        pod.metadata.labels = Some([("app".to_string(), "db".to_string())].into());
        let db = pods.create(&PostParams::default(), &pod).await.unwrap();
        let web = pods
            .list(&ListParams::default().labels("app in (web)"))
            .await
            .unwrap();
        assert_eq!(web.items.len(), 1);
        let mut stale = db.clone();
        pods.replace("db", &PostParams::default(), &db)
            .await
            .unwrap();
        stale.metadata.labels = None;
        let err = pods
            .replace("db", &PostParams::default(), &stale)
            .await
            .unwrap_err();
        assert!(matches!(err, kube::Error::Api(e) if e.code == 409));
        assert_eq!(fake.list("/api/v1/namespaces/ns/pods").len(), 2);
    }
}
