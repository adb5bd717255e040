//! The leader's upkeep of the flow-control objects, as kube-apiserver's config producer
//! (`pkg/registry/flowcontrol/ensurer`) and consumer (`apf_controller.go`) do it, through the
//! API as `system:apiserver`:
//!
//! - suggested objects are created when missing, and their spec is reset to the bootstrap one
//!   only while `apf.kubernetes.io/autoupdate-spec` is `true` (absent or unparsable: only while
//!   `metadata.generation` is 1, and the annotation is then written);
//! - mandatory objects are created when missing and always reset (the annotation back to
//!   `true`; the exempt level's `spec.exempt` is left to the operator);
//! - an object that is in neither list but carries `autoupdate-spec: "true"` is deleted;
//! - every FlowSchema's `Dangling` condition says whether its level exists.
//!
//! Upstream runs the producer once a minute; here it also runs soon after any change to the
//! objects, so a deleted mandatory object is back within a second.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::task::AbortHandle;
use vkube_api::flowcontrol::{bootstrap, spec_equal};

use super::view::{FlowControlView, Objects};
use crate::router::{Api, RequestBody};

const PRODUCER: &str = "api-priority-and-fairness-config-producer-v1";
const CONSUMER: &str = "api-priority-and-fairness-config-consumer-v1";
const PERIOD: Duration = Duration::from_secs(60);
/// Changes that come together (the producer's own writes) are handled together.
const SETTLE: Duration = Duration::from_millis(300);

const BASE: &str = "/apis/flowcontrol.apiserver.k8s.io/v1";

fn plural(kind: &str) -> &'static str {
    if kind == "FlowSchema" {
        "flowschemas"
    } else {
        "prioritylevelconfigurations"
    }
}

/// Go's `strconv.ParseBool`.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn name_of(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or_default()
}

fn annotation(obj: &Value) -> Option<&str> {
    obj["metadata"]["annotations"][bootstrap::AUTO_UPDATE].as_str()
}

/// What the producer does to a stored object (upstream's `ReviseIfNeeded`): `None` when it is
/// fine, else the object to write.
pub fn revise(kind: &str, current: &Value, boot: &Value, mandatory: bool) -> Option<Value> {
    let auto = mandatory
        || match annotation(current).and_then(parse_bool) {
            Some(auto) => auto,
            None => current["metadata"]["generation"].as_i64() == Some(1),
        };
    let annotate = annotation(current).and_then(parse_bool) != Some(auto);
    let mut want = boot.clone();
    if mandatory && name_of(boot) == bootstrap::EXEMPT && kind != "FlowSchema" {
        // upstream's plcSpecEqualish: the exempt level's shares are not the producer's.
        if current["spec"]["exempt"].is_object() {
            want["spec"]["exempt"] = current["spec"]["exempt"].clone();
        }
    }
    let spec_changed = auto && !spec_equal(kind, &want, current);
    if !annotate && !spec_changed {
        return None;
    }
    let mut revised = current.clone();
    if spec_changed {
        revised["spec"] = boot["spec"].clone();
    }
    if annotate {
        let meta = &mut revised["metadata"];
        if !meta["annotations"].is_object() {
            meta["annotations"] = json!({});
        }
        meta["annotations"][bootstrap::AUTO_UPDATE] = json!(auto.to_string());
    }
    Some(revised)
}

/// The objects upstream's `RemoveUnwantedObjects` deletes: not bootstrap objects, annotated
/// `autoupdate-spec` with a true value.
pub fn unwanted<'a>(objects: impl Iterator<Item = &'a Value>, wanted: &[Value]) -> Vec<String> {
    objects
        .filter(|o| {
            !wanted
                .iter()
                .any(|w| w["metadata"]["name"] == o["metadata"]["name"])
        })
        .filter(|o| annotation(o).and_then(parse_bool) == Some(true))
        .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_string))
        .collect()
}

/// The `Dangling` condition `schema` should have, when it does not have it yet.
pub fn dangling(schema: &Value, levels: &Objects, now: &str) -> Option<Value> {
    let level = schema["spec"]["priorityLevelConfiguration"]["name"]
        .as_str()
        .unwrap_or_default();
    let (status, reason, message) = if levels.levels.contains_key(level) {
        (
            "False",
            "Found",
            format!(
                "This FlowSchema references the PriorityLevelConfiguration object named {level:?} and it exists"
            ),
        )
    } else {
        (
            "True",
            "NotFound",
            format!(
                "This FlowSchema references the PriorityLevelConfiguration object named {level:?} but there is no such object"
            ),
        )
    };
    let have = schema["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Dangling"));
    if have
        .is_some_and(|c| c["status"] == status && c["reason"] == reason && c["message"] == message)
    {
        return None;
    }
    Some(json!({
        "type": "Dangling",
        "status": status,
        "lastTransitionTime": now,
        "reason": reason,
        "message": message,
    }))
}

struct Client(Arc<Api>);

impl Client {
    async fn call(&self, method: Method, uri: &str, content_type: &str, body: Value) -> u16 {
        let user = vkube_auth::UserInfo {
            username: "system:apiserver".into(),
            groups: vec!["system:authenticated".into(), "system:masters".into()],
            ..Default::default()
        };
        let body = if body.is_null() {
            Bytes::new()
        } else {
            Bytes::from(body.to_string())
        };
        let Ok(req) = Request::builder()
            .method(method)
            .uri(uri)
            .header(http::header::CONTENT_TYPE, content_type)
            .header(http::header::ACCEPT, "application/json")
            .body(RequestBody::InProcess(http_body_util::Full::new(body)))
        else {
            return 400;
        };
        let resp = self.0.clone().handle(Some(user), req).await;
        let status = resp.status().as_u16();
        if status >= 400 && status != 404 && status != 409 {
            let body = resp.into_body().collect().await.map(|b| b.to_bytes());
            let text = body.map(|b| String::from_utf8_lossy(&b).into_owned());
            tracing::warn!(uri, status, body = ?text.ok(), "flow control upkeep");
        }
        status
    }

    async fn ensure(&self, objects: &Objects, boot: &Value, mandatory: bool) {
        let kind = boot["kind"].as_str().unwrap_or_default();
        let name = boot["metadata"]["name"].as_str().unwrap_or_default();
        let stored = if kind == "FlowSchema" {
            &objects.schemas
        } else {
            &objects.levels
        };
        let collection = format!("{BASE}/{}", plural(kind));
        match stored.get(name) {
            None => {
                let uri = format!("{collection}?fieldManager={PRODUCER}");
                self.call(Method::POST, &uri, "application/json", boot.clone())
                    .await;
            }
            Some(current) => {
                if let Some(revised) = revise(kind, current, boot, mandatory) {
                    let uri = format!("{collection}/{name}?fieldManager={PRODUCER}");
                    // A conflict means someone wrote it meanwhile: the next round looks again.
                    self.call(Method::PUT, &uri, "application/json", revised)
                        .await;
                }
            }
        }
    }

    /// One round of the producer, then the consumer's status writes.
    async fn round(&self, view: &FlowControlView) {
        if !view.catch_up(Duration::from_secs(5)).await {
            return;
        }
        let objects = view.objects();
        let suggested = [
            bootstrap::suggested_levels(),
            bootstrap::suggested_schemas(),
        ];
        let mandatory = [
            bootstrap::mandatory_levels(),
            bootstrap::mandatory_schemas(),
        ];
        for (list, is_mandatory) in [(&suggested, false), (&mandatory, true)] {
            for boot in list.iter().flatten() {
                self.ensure(&objects, boot, is_mandatory).await;
            }
        }
        let schemas: Vec<Value> = [
            bootstrap::mandatory_schemas(),
            bootstrap::suggested_schemas(),
        ]
        .concat();
        let levels: Vec<Value> =
            [bootstrap::mandatory_levels(), bootstrap::suggested_levels()].concat();
        for (kind, stored, wanted) in [
            ("FlowSchema", &objects.schemas, &schemas),
            ("PriorityLevelConfiguration", &objects.levels, &levels),
        ] {
            for name in unwanted(stored.values(), wanted) {
                let uri = format!("{BASE}/{}/{name}", plural(kind));
                self.call(Method::DELETE, &uri, "application/json", Value::Null)
                    .await;
            }
        }
        let objects = view.objects();
        let now = vkube_api::object::now();
        for (name, schema) in &objects.schemas {
            if let Some(condition) = dangling(schema, &objects, &now) {
                let uri =
                    format!("{BASE}/flowschemas/{name}/status?fieldManager={CONSUMER}&force=true");
                let body = json!({
                    "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
                    "kind": "FlowSchema",
                    "metadata": {"name": name},
                    "status": {"conditions": [condition]},
                });
                self.call(Method::PATCH, &uri, "application/apply-patch+yaml", body)
                    .await;
            }
        }
    }
}

/// The leader's loop: a round at once, after each change to the objects, and every minute.
pub fn start(api: Arc<Api>, view: Arc<FlowControlView>) -> AbortHandle {
    let task = tokio::spawn(async move {
        let client = Client(api);
        loop {
            let changed = view.changed();
            client.round(&view).await;
            let _ = tokio::time::timeout(PERIOD, changed).await;
            tokio::time::sleep(SETTLE).await;
        }
    });
    task.abort_handle()
}
