//! Lists: paging through the store at one revision with `limit`/`continue`, label and field
//! selectors, and the fast path that re-encodes only each stored object's metadata.

use std::collections::HashMap;

use base64::Engine;
use http::Response;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use vkube_api::selector::{self, FieldSelector, LabelSelector};
use vkube_api::validation::Errors;
use vkube_api::{Resource, Status, convert, table};
use vkube_store::{KeyValue, ListOptions, Revision, StoreError};

use crate::cache::Entry;
use crate::response::{self, Body};
use crate::rest::{Ctx, store_status};

type Query = HashMap<String, String>;

/// The opaque `continue` token: the revision the list is pinned to and the last key returned.
#[derive(serde::Serialize, serde::Deserialize)]
struct Continue {
    v: String,
    rv: Revision,
    start: String,
}

const CONTINUE_EXPIRED: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

pub(crate) fn selectors(
    resource: &Resource,
    q: &Query,
) -> Result<(LabelSelector, FieldSelector), Status> {
    let labels = selector::parse_labels(q.get("labelSelector").map_or("", String::as_str))?;
    let fields =
        selector::parse_fields_for(resource, q.get("fieldSelector").map_or("", String::as_str))?;
    Ok((labels, fields))
}

pub fn selected(labels: &LabelSelector, fields: &FieldSelector, obj: &Value) -> bool {
    labels.matches_object(obj) && fields.matches(|f| selector::field_value(obj, f))
}

/// Lists the objects under the request's scope that match its selectors.
pub(crate) async fn select(ctx: &Ctx<'_>) -> Result<Selected<Value>, Status> {
    let (labels, fields) = selectors(ctx.resource, ctx.q)?;
    let every = labels.0.is_empty() && fields.0.is_empty();
    if crate::conversion::by_webhook(ctx.resource) {
        return select_converted(ctx, every, &labels, &fields).await;
    }
    select_with(ctx, every, |entry| {
        let obj = ctx.load(&entry.kv)?;
        Ok(selected(&labels, &fields, &obj).then_some(obj))
    })
    .await
}

/// A page of objects whose CRD converts them by webhook (conversion/): the page's objects in one
/// ConversionReview, then the selectors, which read the requested version. A page may then hold
/// fewer than `limit` items (the API allows that; its `continue` token still goes on).
async fn select_converted(
    ctx: &Ctx<'_>,
    every: bool,
    labels: &LabelSelector,
    fields: &FieldSelector,
) -> Result<Selected<Value>, Status> {
    let mut page = select_with(ctx, true, |entry| crate::rest::decode(&entry.kv).map(Some)).await?;
    let store = ctx.api.store.as_ref();
    let items = crate::conversion::served(store, ctx.resource, page.items, true).await?;
    page.items = items
        .into_iter()
        .filter(|o| selected(labels, fields, o))
        .collect();
    if !every {
        page.remaining = None;
    }
    Ok(page)
}

/// One page of a list.
pub(crate) struct Selected<T> {
    pub(crate) items: Vec<T>,
    pub(crate) revision: Revision,
    /// The `continue` token, when items remain.
    pub(crate) token: Option<String>,
    /// How many items remain after this page: known only when nothing is filtered out (no
    /// selectors), as upstream reports `remainingItemCount`.
    pub(crate) remaining: Option<usize>,
}

impl<T> Selected<T> {
    /// The list's metadata.
    fn meta(&self) -> Value {
        let mut meta = json!({"resourceVersion": self.revision.to_string()});
        if let Some(token) = &self.token {
            meta["continue"] = json!(token);
        }
        if let Some(remaining) = self.remaining {
            meta["remainingItemCount"] = json!(remaining);
        }
        meta
    }
}

/// The opaque token that continues a list at `rv` after the key `start` (relative to the prefix).
fn continue_token(rv: Revision, start: String) -> String {
    let token = Continue {
        v: "meta.k8s.io/v1".into(),
        rv,
        start,
    };
    base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&token).unwrap_or_default())
}

/// A page cut from the watch cache's objects under the prefix, as the store loop below would
/// page them: the same items, token and remainder.
fn cached_page<T>(
    entries: &[std::sync::Arc<Entry>],
    revision: Revision,
    prefix: &str,
    limit: Option<usize>,
    every: bool,
    pick: impl Fn(&Entry) -> Result<Option<T>, Status>,
) -> Result<Selected<T>, Status> {
    let mut items = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        if limit.is_some_and(|l| items.len() >= l) {
            // Full, and keys remain after the last one examined.
            let last = &entries[i - 1].kv.key;
            return Ok(Selected {
                items,
                revision,
                token: Some(continue_token(
                    revision,
                    last.trim_start_matches(prefix).to_string(),
                )),
                remaining: every.then_some(entries.len() - i),
            });
        }
        if let Some(item) = pick(entry)? {
            items.push(item);
        }
    }
    Ok(Selected {
        items,
        revision,
        token: None,
        remaining: None,
    })
}

/// The list loop: pages through the store at one revision, keeping what `pick` returns, until
/// `limit` items or the end; a `continue` token when items remain. `every`: `pick` keeps every
/// item, so the store can count the remainder. A list at the current revision (no `continue`,
/// no `Exact`) is cut from the watch cache when it has caught up with the store.
async fn select_with<T>(
    ctx: &Ctx<'_>,
    every: bool,
    pick: impl Fn(&Entry) -> Result<Option<T>, Status>,
) -> Result<Selected<T>, Status> {
    let prefix = ctx.key("");
    let limit = ctx
        .q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let (mut revision, mut start_after) = (None, None);
    if let Some(token) = ctx.q.get("continue").filter(|t| !t.is_empty()) {
        let bad = || {
            Status::bad_request(
                "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
            )
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(token)
            .map_err(|_| bad())?;
        let token: Continue = serde_json::from_slice(&raw).map_err(|_| bad())?;
        // -1: an inconsistent continuation (after compaction), read at the current revision.
        revision = Some(token.rv).filter(|rv| *rv > 0);
        start_after = Some(format!("{prefix}{}", token.start));
    } else if let Some(rv) = ctx
        .q
        .get("resourceVersion")
        .filter(|v| !v.is_empty() && *v != "0")
    {
        let rv: Revision = rv
            .parse()
            .map_err(|_| Status::bad_request(format!("invalid resource version: {rv}")))?;
        if ctx
            .q
            .get("resourceVersionMatch")
            .is_some_and(|m| m == "Exact")
        {
            revision = Some(rv);
        }
    }
    let continued = start_after.is_some();
    if !continued
        && revision.is_none()
        && let Some((entries, at)) = crate::cache::list(&ctx.api.hub, &prefix).await
    {
        return cached_page(&entries, at, &prefix, limit, every, pick);
    }
    let mut items = Vec::new();
    loop {
        let want = limit.map(|l| l - items.len());
        let options = ListOptions {
            revision,
            limit: want,
            start_after: start_after.clone(),
        };
        let page = match ctx.api.store.list(&prefix, options).await {
            Ok(page) => page,
            Err(StoreError::Compacted { .. }) if continued => {
                // Upstream hands out a token that continues from the same key at the current
                // revision, for clients that accept an inconsistent list.
                let start = start_after
                    .as_deref()
                    .unwrap_or_default()
                    .trim_start_matches(&prefix)
                    .to_string();
                let mut status = Status::expired(CONTINUE_EXPIRED);
                status.continue_token = Some(continue_token(-1, start));
                return Err(status);
            }
            Err(err) => return Err(store_status(err)),
        };
        revision = Some(page.revision);
        start_after = page.items.last().map(|kv| kv.key.clone());
        for kv in page.items {
            if let Some(item) = pick(&Entry::new(kv))? {
                items.push(item);
            }
        }
        let full = limit.is_some_and(|l| items.len() >= l);
        if !page.more {
            return Ok(Selected {
                items,
                revision: page.revision,
                token: None,
                remaining: None,
            });
        }
        if full {
            let remaining = if every {
                let rest = ListOptions {
                    revision: Some(page.revision),
                    limit: None,
                    start_after: start_after.clone(),
                };
                Some(
                    ctx.api
                        .store
                        .count(&prefix, rest)
                        .await
                        .map_err(store_status)?,
                )
            } else {
                None
            };
            let token = continue_token(
                page.revision,
                start_after
                    .unwrap_or_default()
                    .trim_start_matches(&prefix)
                    .to_string(),
            );
            return Ok(Selected {
                items,
                revision: page.revision,
                token: Some(token),
                remaining: remaining.filter(|n| *n > 0),
            });
        }
    }
}

/// A list body whose items are stored bytes with only their metadata re-encoded.
#[derive(serde::Serialize)]
struct RawList<'a> {
    #[serde(rename = "apiVersion")]
    api_version: String,
    items: Vec<Box<RawValue>>,
    kind: String,
    metadata: &'a Value,
}

/// `cell`'s value, computed by `f` the first time.
fn memo<T>(
    cell: &std::sync::OnceLock<T>,
    f: impl FnOnce() -> Result<T, Status>,
) -> Result<&T, Status> {
    if let Some(v) = cell.get() {
        return Ok(v);
    }
    let v = f()?;
    Ok(cell.get_or_init(|| v))
}

type RawMap = std::collections::BTreeMap<String, Box<RawValue>>;

fn decoding_error(key: &str) -> impl Fn(serde_json::Error) -> Status + '_ {
    move |e| Status::internal(format!("decoding {key}: {e}"))
}

/// The stored object's top level and its metadata, parsed no further.
fn raw_parts(kv: &KeyValue) -> Result<(RawMap, RawMap), Status> {
    let bad = decoding_error(&kv.key);
    let top: RawMap = serde_json::from_slice(&kv.value).map_err(&bad)?;
    let meta: RawMap = match top.get("metadata") {
        Some(raw) => serde_json::from_str(raw.get()).map_err(&bad)?,
        None => RawMap::new(),
    };
    Ok((top, meta))
}

/// What selectors read of an object: `{"metadata": {name, namespace, labels}}`.
fn shell(kv: &KeyValue) -> Result<Value, Status> {
    let bad = decoding_error(&kv.key);
    let (_, meta) = raw_parts(kv)?;
    let mut shell = serde_json::Map::new();
    for field in ["name", "namespace", "labels"] {
        if let Some(raw) = meta.get(field) {
            shell.insert(field.into(), serde_json::from_str(raw.get()).map_err(&bad)?);
        }
    }
    Ok(json!({ "metadata": shell }))
}

/// The object as a list item: its resourceVersion set, and (`typed`) no apiVersion and kind.
/// Only the metadata is re-encoded; the rest (managedFields above all) is copied as stored.
fn render(kv: &KeyValue, typed: bool) -> Result<Box<RawValue>, Status> {
    let bad = decoding_error(&kv.key);
    let (mut top, mut meta) = raw_parts(kv)?;
    let rv = RawValue::from_string(format!("\"{}\"", kv.mod_revision)).map_err(&bad)?;
    meta.insert("resourceVersion".into(), rv);
    let meta = RawValue::from_string(serde_json::to_string(&meta).map_err(&bad)?).map_err(&bad)?;
    top.insert("metadata".into(), meta);
    if typed {
        top.remove("apiVersion");
        top.remove("kind");
    }
    let bytes = serde_json::to_string(&top).map_err(&bad)?;
    RawValue::from_string(bytes).map_err(&bad)
}

/// A stored object as a list item without parsing more than its metadata; `None` when it does
/// not match the selectors. What a cached entry yields is kept with it for the next list.
fn raw_item(
    entry: &Entry,
    labels: &LabelSelector,
    fields: &FieldSelector,
    typed: bool,
) -> Result<Option<Box<RawValue>>, Status> {
    if !selected(labels, fields, memo(&entry.shell, || shell(&entry.kv))?) {
        return Ok(None);
    }
    if typed {
        Ok(Some(memo(&entry.item, || render(&entry.kv, true))?.clone()))
    } else {
        render(&entry.kv, false).map(Some)
    }
}

/// Upstream's ValidateListOptions: the combinations of `resourceVersionMatch`, `continue` and
/// `sendInitialEvents` a list (or, with `watch`, a watch) refuses with 422.
pub(crate) fn validate_options(q: &HashMap<String, String>, watch: bool) -> Result<(), Status> {
    let mut errs = Errors::default();
    let present = |k: &str| q.get(k).is_some_and(|v| !v.is_empty());
    let matching = q.get("resourceVersionMatch").map_or("", String::as_str);
    let field = "resourceVersionMatch";
    if watch {
        if q.contains_key("sendInitialEvents") && matching != "NotOlderThan" {
            errs.forbidden(
                field,
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            );
        }
        if !matching.is_empty() {
            if !q.contains_key("sendInitialEvents") {
                errs.forbidden(
                    field,
                    "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
                );
            }
            if matching != "NotOlderThan" {
                errs.not_supported(field, &json!(matching), &["NotOlderThan"]);
            }
            if present("continue") {
                errs.forbidden(
                    field,
                    "resourceVersionMatch is forbidden when continue is provided",
                );
            }
        }
    } else {
        if !matching.is_empty() {
            if !present("resourceVersion") {
                errs.forbidden(
                    field,
                    "resourceVersionMatch is forbidden unless resourceVersion is provided",
                );
            }
            if present("continue") {
                errs.forbidden(
                    field,
                    "resourceVersionMatch is forbidden when continue is provided",
                );
            }
            if matching != "Exact" && matching != "NotOlderThan" {
                errs.not_supported(field, &json!(matching), &["Exact", "NotOlderThan", ""]);
            }
            if matching == "Exact" && q.get("resourceVersion").is_some_and(|v| v == "0") {
                errs.forbidden(
                    field,
                    "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
                );
            }
        }
        if q.contains_key("sendInitialEvents") {
            errs.forbidden(
                "sendInitialEvents",
                "sendInitialEvents is forbidden for list",
            );
        }
    }
    errs.into_result("ListOptions", "meta.k8s.io", "")
}

/// Upstream's typed lists carry no apiVersion/kind in their items; custom resources' lists
/// (unstructured) do.
fn typed(resource: &Resource) -> bool {
    vkube_api::registry::custom::definition(resource).is_none()
}

pub(crate) async fn list(ctx: &Ctx<'_>) -> Result<Response<Body>, Status> {
    validate_options(ctx.q, false)?;
    let (labels, fields) = selectors(ctx.resource, ctx.q)?;
    let typed = typed(ctx.resource);
    let metadata_only = fields.0.iter().all(|(f, ..)| f.starts_with("metadata."));
    let same_version = convert::storage_version(ctx.resource) == ctx.resource.api_version();
    // Custom objects take the slow path: their CRD's defaults apply on read.
    if metadata_only && same_version && !ctx.resource.custom && !table::wanted(ctx.accept) {
        // The common case (kubectl -o json/yaml, informers): no full decode and re-encode.
        let every = labels.0.is_empty() && fields.0.is_empty();
        let page = select_with(ctx, every, |e| raw_item(e, &labels, &fields, typed)).await?;
        let meta = page.meta();
        let body = RawList {
            api_version: ctx.resource.api_version(),
            items: page.items,
            kind: format!("{}List", ctx.resource.kind),
            metadata: &meta,
        };
        let bytes = serde_json::to_vec(&body).map_err(Status::internal)?;
        let mut resp = response::bytes(bytes);
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        return Ok(resp);
    }
    let page = select(ctx).await?;
    let (meta, mut items) = (page.meta(), page.items);
    if table::wanted(ctx.accept) {
        return Ok(response::json(
            200,
            &table::table(ctx.resource, &items, meta, ctx.include()),
        ));
    }
    if typed {
        for item in items.iter_mut().filter_map(Value::as_object_mut) {
            item.remove("apiVersion");
            item.remove("kind");
        }
    }
    Ok(response::json(
        200,
        &json!({"kind": format!("{}List", ctx.resource.kind), "apiVersion": ctx.resource.api_version(), "metadata": meta, "items": items}),
    ))
}
