//! Client watches: chunked JSON events (`{"type":…,"object":…}` per line) served from the shared
//! hub. Objects that leave the selector are sent as DELETED and objects that enter it as ADDED,
//! as upstream's watch cache does.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use vkube_api::{Resource, Status, table};
use vkube_store::{ListOptions, Revision};

use crate::list::selected;
use crate::request::{RequestInfo, is_true};
use crate::response::{self, Body};
use crate::rest::{decode, store_status};
use crate::router::Api;
use vkube_api::custom_objects::served;

fn line(kind: &str, object: &Value) -> Bytes {
    let mut bytes =
        serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

fn streaming(rx: mpsc::Receiver<Bytes>) -> Response<Body> {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(Frame::data(b)), rx))
    });
    let mut resp = Response::new(StreamBody::new(stream).boxed());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    resp
}

fn bookmark(resource: &Resource, revision: Revision, initial_end: bool) -> Value {
    let mut meta = json!({"resourceVersion": revision.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": resource.kind, "apiVersion": resource.api_version(), "metadata": meta})
}

pub async fn watch(
    api: &Api,
    resource: &'static Resource,
    info: &RequestInfo,
    q: &HashMap<String, String>,
    accept: &str,
) -> Response<Body> {
    // `kubectl get -w` asks for Tables: each event then carries a one-row Table.
    let as_table = table::wanted(accept)
        .then(|| table::Include::parse(q.get("includeObject").map(String::as_str)));
    let render = move |obj: &Value| -> Value {
        match as_table {
            Some(include) => {
                let meta = json!({"resourceVersion": obj["metadata"]["resourceVersion"]});
                table::table(resource, std::slice::from_ref(obj), meta, include)
            }
            None => obj.clone(),
        }
    };
    if let Err(status) = crate::list::validate_options(q, true) {
        return response::status(&status);
    }
    let (labels, mut fields) = match (
        vkube_api::selector::parse_labels(q.get("labelSelector").map_or("", String::as_str)),
        vkube_api::selector::parse_fields_for(
            resource,
            q.get("fieldSelector").map_or("", String::as_str),
        ),
    ) {
        (Ok(l), Ok(f)) => (l, f),
        (Err(s), _) | (_, Err(s)) => return response::status(&s),
    };
    // The legacy `/watch/…/NAME` path watches that one object.
    if !info.name.is_empty() {
        fields
            .0
            .push(("metadata.name".into(), true, info.name.clone()));
    }
    let prefix = resource.key(&info.namespace, "");
    // A single-object watch (fieldSelector=metadata.name=x) is an ordinary selector here.
    let rv = q.get("resourceVersion").cloned().unwrap_or_default();
    let send_initial = match q.get("sendInitialEvents") {
        Some(v) => is_true(Some(v)),
        None => rv.is_empty() || rv == "0",
    };
    let bookmarks = is_true(q.get("allowWatchBookmarks"));
    // `timeoutSeconds`, else a random time in [--min-request-timeout, twice that).
    let timeout = api
        .filters
        .timeouts
        .watch(q.get("timeoutSeconds").map(String::as_str));

    // Initial state: the current objects as ADDED, then changes after the list's revision.
    let (initial, from) = if send_initial {
        match api.store.list(&prefix, ListOptions::default()).await {
            Ok(page) => {
                let stored = page.items.iter().filter_map(|kv| decode(kv).ok());
                // A CRD's conversion webhook converts them all in one review (conversion/).
                let objects: Vec<Value> = if crate::conversion::by_webhook(resource) {
                    let all = stored.collect();
                    match crate::conversion::served(api.store.as_ref(), resource, all, true).await {
                        Ok(objects) => objects,
                        Err(status) => return response::status(&status),
                    }
                } else {
                    stored.filter_map(|o| served(resource, o).ok()).collect()
                };
                let objects = objects
                    .into_iter()
                    .filter(|o| selected(&labels, &fields, o))
                    .collect();
                (objects, page.revision)
            }
            Err(err) => return response::status(&store_status(err)),
        }
    } else {
        match rv.parse::<Revision>() {
            Ok(r) => (Vec::new(), r),
            Err(_) => {
                return response::status(&Status::bad_request(format!(
                    "invalid resource version: {rv}"
                )));
            }
        }
    };
    let (past, mut live) = match api.hub.subscribe(from) {
        Ok(s) => s,
        Err(too_old) => {
            let (tx, rx) = mpsc::channel(1);
            let status = Status::expired(format!(
                "too old resource version: {} ({})",
                too_old.requested, too_old.oldest
            ));
            let _ = tx.try_send(line("ERROR", &status.to_json()));
            return streaming(rx);
        }
    };
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let store = api.store.clone();
    tokio::spawn(async move {
        let deadline = async {
            match timeout {
                Some(limit) => tokio::time::sleep(limit).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(deadline);
        for obj in &initial {
            if tx.send(line("ADDED", &render(obj))).await.is_err() {
                return;
            }
        }
        if send_initial && bookmarks {
            let _ = tx
                .send(line("BOOKMARK", &bookmark(resource, from, true)))
                .await;
        }
        let mut last = from;
        let mut pending: std::collections::VecDeque<_> = past.into();
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        tick.tick().await;
        loop {
            let change = match pending.pop_front() {
                Some(c) => c,
                None => tokio::select! {
                    _ = &mut deadline => return,
                    _ = tick.tick(), if bookmarks => {
                        if tx.send(line("BOOKMARK", &bookmark(resource, last, false))).await.is_err() { return; }
                        continue;
                    }
                    _ = tx.closed() => return,
                    c = live.recv() => match c {
                        Ok(c) => c,
                        Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => {
                            let status = Status::expired("the watch fell behind the store; list again and watch from the new resourceVersion");
                            let _ = tx.send(line("ERROR", &status.to_json())).await;
                            return;
                        }
                    },
                },
            };
            if change.revision <= last || !change.key.starts_with(&prefix) {
                continue;
            }
            last = change.revision;
            // Stored objects, in the version this watch addresses.
            let read = |o: &Option<Value>| o.clone().and_then(|o| served(resource, o).ok());
            let (object, prev) = if crate::conversion::by_webhook(resource) {
                let (object, prev) = (change.object.clone(), change.prev.clone());
                let every = labels.0.is_empty() && fields.0.is_empty();
                let converted =
                    crate::conversion::event(store.as_ref(), resource, object, prev, every);
                match converted.await {
                    Ok(pair) => pair,
                    Err(status) => {
                        // The client lists again and resumes; upstream's watch also reports it.
                        let _ = tx.send(line("ERROR", &status.to_json())).await;
                        return;
                    }
                }
            } else {
                (read(&change.object), read(&change.prev))
            };
            let now = object.as_ref().filter(|o| selected(&labels, &fields, o));
            let before = prev.as_ref().filter(|o| selected(&labels, &fields, o));
            let event = match (before, now) {
                (None, Some(o)) => Some(("ADDED", o.clone())),
                (Some(_), Some(o)) => Some(("MODIFIED", o.clone())),
                (Some(p), None) => {
                    // Deleted, or no longer selected: either way gone from this watch, shown
                    // as it was last selected, at the change's revision (as upstream's cacher).
                    let mut gone = p.clone();
                    gone["metadata"]["resourceVersion"] = json!(change.revision.to_string());
                    Some(("DELETED", gone))
                }
                (None, None) => None,
            };
            if let Some((kind, obj)) = event {
                if tx.send(line(kind, &render(&obj))).await.is_err() {
                    return;
                }
            }
        }
    });
    streaming(rx)
}
