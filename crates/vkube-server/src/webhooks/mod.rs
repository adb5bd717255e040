//! Admission webhooks: MutatingWebhookConfiguration and ValidatingWebhookConfiguration, called as
//! kube-apiserver 1.33 calls them. The REST handlers call [`mutate`] after the built-in mutating
//! admission and before validation, and [`validate`] after validation, before the quota (upstream's
//! plugin order: … MutatingAdmissionWebhook, ValidatingAdmissionWebhook, ResourceQuota).
//!
//! Mutating webhooks run one after another; each JSONPatch is applied before the next is called,
//! and a webhook with `reinvocationPolicy: IfNeeded` is called once more when a later one changed
//! the object. Validating webhooks run in parallel; the first (in order) to refuse decides.

mod client;
pub(crate) mod connect;
pub(crate) mod hook;
pub(crate) mod matching;
mod metrics;
pub(crate) mod review;
mod view;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use serde_json::{Value, json};
use vkube_api::{Resource, Status};

pub use hook::Operation;
pub use view::WebhookView;

/// The webhook client, shared with CRD conversion webhooks (conversion/).
pub(crate) use client::{dial, post, resolve, target_at};

use crate::rest::Ctx;
use hook::Hook;
use review::Attributes;

/// How long a write may wait for the store's revision and a view to reach it.
const VIEW_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// One admission request, as the webhooks see it.
pub(crate) struct Admission<'a> {
    pub operation: Operation,
    /// `dryRun=All` (the query, or a DeleteOptions' dryRun).
    pub dry_run: bool,
    pub(crate) ctx: &'a Ctx<'a>,
    /// The request's namespace's labels, read once for all the webhooks that select on them.
    namespace_labels: tokio::sync::OnceCell<Value>,
    /// The store's revision, read once for this request: the admission policies' view and the
    /// webhooks' view both wait for it (one revision read per write, not one per view).
    store_revision: tokio::sync::OnceCell<Option<vkube_store::Revision>>,
}

impl<'a> Admission<'a> {
    pub(crate) fn new(ctx: &'a Ctx<'a>, operation: Operation, dry_run: bool) -> Admission<'a> {
        Admission {
            operation,
            dry_run,
            ctx,
            namespace_labels: tokio::sync::OnceCell::new(),
            store_revision: tokio::sync::OnceCell::new(),
        }
    }

    /// The store's current revision as a view must reach it for this request ([`crate::hub::Hub::sync`],
    /// read once and shared).
    pub(crate) async fn store_revision(&self) -> Option<vkube_store::Revision> {
        *self
            .store_revision
            .get_or_init(|| self.ctx.api.hub.sync(VIEW_WAIT))
            .await
    }

    pub(crate) fn resource(&self) -> &'static Resource {
        self.ctx.resource
    }

    /// The set this replica applies, once it has caught up with the store; `None` when no webhook
    /// may see this request.
    async fn hooks(&self, mutating: bool) -> Option<Vec<Arc<Hook>>> {
        if matching::exempt(self.resource()) {
            return None;
        }
        let view = self.ctx.api.hub.webhooks.get()?;
        view.catch_up_to(self.store_revision().await).await;
        let hooks = view.hooks(mutating);
        (!hooks.is_empty()).then_some(hooks)
    }

    /// The name the request is about: the URL's, else the object's.
    pub(crate) fn name(&self, object: Option<&Value>, old: Option<&Value>) -> String {
        if !self.ctx.info.name.is_empty() {
            return self.ctx.info.name.clone();
        }
        object
            .or(old)
            .and_then(|o| o["metadata"]["name"].as_str())
            .unwrap_or_default()
            .to_string()
    }

    /// The namespace the request is about: a Namespace object's own name for a Namespace.
    pub(crate) fn namespace(&self, name: &str) -> String {
        let r = self.resource();
        if r.group.is_empty() && r.plural == "namespaces" {
            name.to_string()
        } else {
            self.ctx.info.namespace.clone()
        }
    }

    pub(crate) fn options(&self) -> Value {
        let kind = match self.operation {
            Operation::Create => "CreateOptions",
            Operation::Update => "UpdateOptions",
            Operation::Delete => "DeleteOptions",
            // Upstream's connect handler passes no operation options.
            Operation::Connect => return Value::Null,
        };
        let mut options = json!({"kind": kind, "apiVersion": "meta.k8s.io/v1"});
        if self.dry_run {
            options["dryRun"] = json!(["All"]);
        }
        if let Some(manager) = self.ctx.q.get("fieldManager") {
            options["fieldManager"] = json!(manager);
        }
        if let Some(policy) = self.ctx.q.get("propagationPolicy") {
            options["propagationPolicy"] = json!(policy);
        }
        options
    }

    /// The labels the namespaceSelector is matched against; `None` when it does not apply
    /// (cluster-scoped resources other than Namespaces).
    pub(crate) async fn labels_for_namespace(
        &self,
        namespace: &str,
        object: Option<&Value>,
        old: Option<&Value>,
    ) -> Result<Option<Value>, Status> {
        let r = self.resource();
        let labels = |o: &Value| o["metadata"].get("labels").cloned().unwrap_or(json!({}));
        if r.group.is_empty() && r.plural == "namespaces" {
            return Ok(object.or(old).map(labels));
        }
        if namespace.is_empty() || !r.namespaced {
            return Ok(None);
        }
        let key = vkube_api::registry::find("", "v1", "namespaces")
            .map(|n| n.key("", namespace))
            .unwrap_or_default();
        let read = async {
            match self.ctx.api.store.get(&key, None).await {
                Ok(Some(kv)) => Ok(serde_json::from_slice::<Value>(&kv.value)
                    .map(|ns| labels(&ns))
                    .unwrap_or(json!({}))),
                Ok(None) => Err(Status::not_found("namespaces", "", namespace)),
                Err(err) => Err(crate::rest::store_status(err)),
            }
        };
        self.namespace_labels
            .get_or_try_init(|| read)
            .await
            .map(|l| Some(l.clone()))
    }

    /// Whether `hook` is called, and under which resource.
    async fn should_call(
        &self,
        hook: &Hook,
        name: &str,
        namespace: &str,
        object: Option<&Value>,
        old: Option<&Value>,
    ) -> Result<Option<&'static Resource>, Status> {
        if !matching::selector_empty(&hook.namespace_selector) {
            if let Some(labels) = self.labels_for_namespace(namespace, object, old).await? {
                if !vkube_api::selector::label_selector_matches(&hook.namespace_selector, &labels) {
                    return Ok(None);
                }
            }
        }
        if !matching::object_selected(&hook.object_selector, object, old) {
            return Ok(None);
        }
        let Some(invoked) = matching::invocation(
            hook,
            self.resource(),
            &self.ctx.info.subresource,
            self.operation,
            namespace,
        ) else {
            return Ok(None);
        };
        if !hook.conditions.is_empty() {
            let store = self.ctx.api.store.as_ref();
            let object = in_version(store, object, invoked).await?;
            let old = in_version(store, old, invoked).await?;
            let options = self.options();
            let attrs = self.attributes(invoked, name, namespace, &options);
            let request = review::request("", &attrs, object.as_ref(), old.as_ref());
            match matching::conditions_match(hook, object.as_ref(), old.as_ref(), &request) {
                Ok(true) => {}
                Ok(false) => return Ok(None),
                Err(_) if hook.ignore_failures => return Ok(None),
                Err(why) => return Err(matching::condition_error(self.resource(), name, &why)),
            }
        }
        Ok(Some(invoked))
    }

    pub(crate) fn attributes<'b>(
        &'b self,
        invoked: &'static Resource,
        name: &'b str,
        namespace: &'b str,
        options: &'b Value,
    ) -> Attributes<'b> {
        let requested = self.resource();
        // A CONNECT is about the connect options (`PodExecOptions`, …), as upstream's scope.Kind.
        let (kind, request_kind) = match connect::options_kind(self) {
            Some(kind) => (kind, kind),
            None => (invoked.kind, requested.kind),
        };
        Attributes {
            operation: self.operation,
            group: invoked.group,
            version: invoked.version,
            resource: invoked.plural,
            kind,
            subresource: &self.ctx.info.subresource,
            request_group: requested.group,
            request_version: requested.version,
            request_resource: requested.plural,
            request_kind,
            name,
            namespace,
            user: self.ctx.user,
            dry_run: self.dry_run,
            options,
        }
    }

    /// One call: the answer of a webhook that allowed the request, or the error the request fails
    /// with (a denial, or a failed call under failurePolicy Fail); `Ok(None)`: the call failed and
    /// the failure policy says Ignore. Each call is counted in the webhook metrics.
    async fn call(
        &self,
        hook: &Hook,
        attrs: &Attributes<'_>,
        object: Option<&Value>,
        old: Option<&Value>,
    ) -> Result<Option<review::Answer>, Status> {
        let started = std::time::Instant::now();
        let outcome = self.exchange(hook, attrs, object, old).await;
        let metrics = self.ctx.api.hub.webhooks.get().map(|v| v.metrics());
        let observe = |outcome: metrics::Outcome| {
            if let Some(m) = metrics {
                m.observe(hook, self.operation, outcome, started.elapsed());
            }
        };
        match outcome {
            Ok(answer) if answer.allowed => {
                observe(metrics::Outcome::Allowed);
                Ok(Some(answer))
            }
            Ok(answer) => {
                // A denial still carries its warnings.
                self.take_warnings(&answer);
                let status = review::denied(&hook.name, answer.result.as_ref());
                observe(metrics::Outcome::Denied(status.code));
                Err(status)
            }
            Err(Failure::Call(why)) if hook.ignore_failures => {
                tracing::warn!(webhook = %hook.name, %why, "failed calling webhook, failing open");
                observe(metrics::Outcome::FailedOpen);
                Ok(None)
            }
            Err(Failure::Call(why)) => {
                observe(metrics::Outcome::FailedClosed);
                Err(review::call_failed(&hook.name, &why))
            }
            Err(Failure::Refused(status)) => {
                observe(metrics::Outcome::Internal);
                Err(status)
            }
        }
    }

    /// The AdmissionReview exchange itself.
    async fn exchange(
        &self,
        hook: &Hook,
        attrs: &Attributes<'_>,
        object: Option<&Value>,
        old: Option<&Value>,
    ) -> Result<review::Answer, Failure> {
        let failed = |why: String| Err(Failure::Call(why));
        if self.dry_run {
            match hook.side_effects.as_deref() {
                None => return failed("Webhook SideEffects is nil".into()),
                Some("None" | "NoneOnDryRun") => {}
                Some(_) => {
                    return Err(Failure::Refused(Status::bad_request(format!(
                        "admission webhook {:?} does not support dry run",
                        hook.name
                    ))));
                }
            }
        }
        let Some(version) = hook.review_version else {
            return failed("webhook does not accept known AdmissionReview versions".into());
        };
        let tls = match &hook.tls {
            Ok(tls) => tls,
            Err(e) => return failed(format!("could not get REST client: {e}")),
        };
        let target = match client::target(self.ctx.api.store.as_ref(), hook).await {
            Ok(t) => t,
            Err(e) => return failed(format!("failed to call webhook: {e}")),
        };
        let uid = uuid::Uuid::new_v4().to_string();
        let body = review::review(version, review::request(&uid, attrs, object, old));
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let (code, answer) = match client::post(tls, &target, bytes, hook.timeout).await {
            Ok(r) => r,
            Err(e) => {
                return failed(format!(
                    "failed to call webhook: Post {:?}: {e}",
                    target.url
                ));
            }
        };
        if !(200..300).contains(&code) {
            return failed(format!(
                "failed to call webhook: {}",
                review::http_error(code, &answer)
            ));
        }
        let parsed: Value = match serde_json::from_slice(&answer) {
            Ok(v) => v,
            Err(e) => return failed(format!("failed to call webhook: {e}")),
        };
        review::verify(version, &uid, hook.mutating, &parsed)
            .or_else(|e| failed(format!("received invalid webhook response: {e}")))
    }

    /// Runs the mutating webhooks over `object` (absent for a DELETE). Returns whether a webhook
    /// changed it (then the caller defaults it again, as upstream decodes a patched object).
    pub(crate) async fn mutate(
        &self,
        mut object: Option<&mut Value>,
        old: Option<&Value>,
    ) -> Result<bool, Status> {
        let Some(hooks) = self.hooks(true).await else {
            return Ok(false);
        };
        let name = self.name(object.as_deref(), old);
        let namespace = self.namespace(&name);
        let options = self.options();
        let mut changed_any = false;
        // For each webhook called: the object as it left that webhook (for reinvocation).
        let mut after: Vec<Option<Value>> = vec![None; hooks.len()];
        for round in 0..2 {
            let mut changed_this_round = false;
            for (i, hook) in hooks.iter().enumerate() {
                if round == 1 {
                    // Only IfNeeded webhooks already called, and only if the object moved since.
                    let moved = after[i].as_ref() != object.as_deref();
                    if !(hook.reinvoke && after[i].is_some() && moved) {
                        continue;
                    }
                }
                let Some(invoked) = self
                    .should_call(hook, &name, &namespace, object.as_deref(), old)
                    .await?
                else {
                    continue;
                };
                let attrs = self.attributes(invoked, &name, &namespace, &options);
                let store = self.ctx.api.store.as_ref();
                let sent = in_version(store, object.as_deref(), invoked).await?;
                let sent_old = in_version(store, old, invoked).await?;
                let Some(answer) = self
                    .call(hook, &attrs, sent.as_ref(), sent_old.as_ref())
                    .await?
                else {
                    after[i] = object.as_deref().cloned();
                    continue;
                };
                self.take_warnings(&answer);
                if let Some(patch) = answer.patch.as_deref() {
                    let Some(obj) = object.as_deref_mut() else {
                        return Err(Status::internal(format!(
                            "admission webhook {:?} attempted to modify the object, which is not supported for this operation",
                            hook.name
                        )));
                    };
                    let resource = self.resource();
                    if apply_patch(store, resource, hook, obj, sent, patch).await? {
                        changed_any = true;
                        changed_this_round = true;
                    }
                }
                after[i] = object.as_deref().cloned();
            }
            if round == 0 && !changed_this_round {
                break;
            }
        }
        // A custom object loses what its schema does not know, as upstream prunes after
        // admission (a webhook cannot store unknown fields).
        if let (true, Some(obj), Some(d)) = (
            changed_any,
            object,
            vkube_api::registry::custom::definition(self.resource()),
        ) {
            vkube_api::custom_objects::prune(&d, obj);
        }
        Ok(changed_any)
    }

    /// Runs the validating webhooks, all at once; the first refusal (in order) fails the request.
    pub(crate) async fn validate(
        &self,
        object: Option<&Value>,
        old: Option<&Value>,
    ) -> Result<(), Status> {
        // Upstream's plugin order: ValidatingAdmissionPolicy, then ValidatingAdmissionWebhook.
        crate::admission_policy::validate(self, object, old).await?;
        let Some(hooks) = self.hooks(false).await else {
            return Ok(());
        };
        let name = self.name(object, old);
        let namespace = self.namespace(&name);
        let options = self.options();
        let calls = hooks.iter().map(|hook| {
            let (name, namespace, options) = (&name, &namespace, &options);
            async move {
                let Some(invoked) = self.should_call(hook, name, namespace, object, old).await?
                else {
                    return Ok(());
                };
                let attrs = self.attributes(invoked, name, namespace, options);
                let store = self.ctx.api.store.as_ref();
                let sent = in_version(store, object, invoked).await?;
                let sent_old = in_version(store, old, invoked).await?;
                let Some(answer) = self
                    .call(hook, &attrs, sent.as_ref(), sent_old.as_ref())
                    .await?
                else {
                    return Ok(());
                };
                self.take_warnings(&answer);
                Ok(())
            }
        });
        let results = futures_util::future::join_all(calls).await;
        results.into_iter().collect()
    }

    fn take_warnings(&self, answer: &review::Answer) {
        for w in &answer.warnings {
            self.ctx.warn(w.clone());
        }
    }
}

/// Why an exchange with a webhook did not produce an answer.
enum Failure {
    /// The call failed or the answer was unusable: the failure policy decides.
    Call(String),
    /// The request is refused whatever the failure policy (a dry run the webhook cannot take).
    Refused(Status),
}

/// An object in the version of the resource a webhook was called for (through its CRD's
/// conversion webhook when it has one: conversion/).
pub(crate) async fn in_version(
    store: &dyn vkube_store::Store,
    object: Option<&Value>,
    invoked: &Resource,
) -> Result<Option<Value>, Status> {
    let Some(o) = object else {
        return Ok(None);
    };
    let to = invoked.api_version();
    crate::conversion::one(store, invoked, o.clone(), &to)
        .await
        .map(Some)
}

/// Applies a webhook's JSONPatch to the object it was sent (`sent`, in its version) and converts
/// the result back into `obj`'s version (of `resource`; by its CRD's conversion webhook when it
/// has one). Returns whether the object changed.
async fn apply_patch(
    store: &dyn vkube_store::Store,
    resource: &Resource,
    hook: &Hook,
    obj: &mut Value,
    sent: Option<Value>,
    patch: &[u8],
) -> Result<bool, Status> {
    let undecodable = |e: &dyn std::fmt::Display| {
        review::call_failed(
            &hook.name,
            &format!("received undecodable patch in webhook response: {e}"),
        )
    };
    let ops: json_patch::Patch = serde_json::from_slice(patch).map_err(|e| undecodable(&e))?;
    if ops.0.is_empty() {
        return Ok(false);
    }
    let mut patched = sent.unwrap_or_else(|| obj.clone());
    json_patch::patch(&mut patched, &ops).map_err(Status::internal)?;
    let version = obj["apiVersion"].as_str().unwrap_or_default().to_string();
    let patched = crate::conversion::one(store, resource, patched, &version).await?;
    let changed = patched != *obj;
    *obj = patched;
    Ok(changed)
}
