//! ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1), enforced as kube-apiserver
//! 1.33's `ValidatingAdmissionPolicy` plugin does, just before the validating webhooks: for each
//! policy (in name order) that matches the request, each of its bindings that matches, and each
//! param the binding selects, the match conditions, then the validations and audit annotations.
//! A failed validation acts as the binding's validationActions say: Deny (the first denial fails
//! the request), Warn (a `Warning` header) or Audit (an audit annotation).

mod authz;
mod eval;
mod params;
mod policy;
mod view;

#[cfg(test)]
mod tests;

use serde_json::{Value, json};
use vkube_api::Status;
use vkube_api::status::Cause;

pub use view::PolicyView;

use crate::webhooks::Admission;
use crate::webhooks::matching::{self, Request};
use eval::{Annotation, Decision};
use policy::{Binding, MatchResources, Policy};

/// Upstream's audit annotation for a validation failure under the Audit action.
const FAILURE_ANNOTATION: &str = "validation.policy.admission.k8s.io/validation_failure";
/// Longest published audit annotation value.
const MAX_ANNOTATION_VALUE: usize = 10 * 1024;

/// A denial to report: which policy and binding, why, and the status reason.
struct Denied {
    policy: String,
    binding: Option<String>,
    message: String,
    reason: String,
}

/// Runs the admission policies over a write (`object` absent for a DELETE).
pub(crate) async fn validate(
    adm: &Admission<'_>,
    object: Option<&Value>,
    old: Option<&Value>,
) -> Result<(), Status> {
    if matching::exempt(adm.resource()) {
        return Ok(());
    }
    let Some(view) = adm.ctx.api.hub.admission_policies.get() else {
        return Ok(());
    };
    view.catch_up_to(adm.store_revision().await).await;
    let hooks = view.hooks();
    if hooks.is_empty() {
        return Ok(());
    }
    let name = adm.name(object, old);
    let namespace = adm.namespace(&name);
    let mut denied = Vec::new();
    let mut namespace_object = None;
    for (policy, bindings) in &hooks {
        let fail = |denied: &mut Vec<Denied>, binding: Option<&Binding>, why: String| {
            if !policy.ignore_failures {
                let what = if binding.is_some() {
                    "binding"
                } else {
                    "policy"
                };
                denied.push(Denied {
                    policy: policy.name.clone(),
                    binding: binding.map(|b| b.name.clone()),
                    message: format!("failed to configure {what}: {why}"),
                    reason: String::new(),
                });
            }
        };
        let invoked = match matches(adm, &policy.constraints, &name, &namespace, object, old).await
        {
            Ok(Some(invoked)) => invoked,
            Ok(None) => continue,
            Err(status) => {
                fail(&mut denied, None, status.message);
                continue;
            }
        };
        if let Some(kind) = &policy.param_kind
            && kind.resource().is_none()
        {
            let why = format!(
                "failed to find resource referenced by paramKind: '{}'",
                kind.gvk()
            );
            fail(&mut denied, None, why);
            continue;
        }
        if policy.uses_authorizer {
            adm.ctx.api.authorizer.catch_up().await;
        }
        let mut published: Vec<(String, Vec<String>)> = Vec::new();
        for binding in bindings {
            if let Some(m) = &binding.match_resources {
                match matches(adm, m, &name, &namespace, object, old).await {
                    Ok(Some(_)) => {}
                    Ok(None) => continue,
                    Err(status) => {
                        fail(&mut denied, Some(binding), status.message);
                        continue;
                    }
                }
            }
            let params = match params::collect(adm, policy, binding, &namespace).await {
                Ok(params) => params,
                Err(why) => {
                    fail(&mut denied, Some(binding), why);
                    continue;
                }
            };
            if namespace_object.is_none() {
                namespace_object = Some(params::namespace_object(adm).await?);
            }
            let inputs = inputs(adm, invoked, &name, &namespace, object, old).await?;
            for param in params {
                let inputs = eval::Inputs {
                    params: param.unwrap_or(Value::Null),
                    namespace_object: namespace_object.clone().unwrap_or(Value::Null),
                    ..inputs.clone()
                };
                let authorizer = policy
                    .uses_authorizer
                    .then(|| (adm.ctx.api.authorizer.clone(), adm.ctx.user.clone()));
                let result = eval::evaluate(policy, &inputs, authorizer);
                for (i, decision) in result.decisions.into_iter().flatten().enumerate() {
                    let (message, reason) = match decision {
                        Decision::Admit => continue,
                        Decision::Error(_) if policy.ignore_failures => continue,
                        Decision::Error(why) => (why, String::new()),
                        Decision::Deny { message, reason } => (message, reason),
                    };
                    act(adm, policy, binding, i, message, reason, &mut denied);
                }
                for annotation in result.annotations {
                    match annotation {
                        Annotation::Publish(key, mut value) => {
                            value.truncate(MAX_ANNOTATION_VALUE);
                            match published.iter_mut().find(|(k, _)| *k == key) {
                                Some((_, values)) if !values.contains(&value) => values.push(value),
                                Some(_) => {}
                                None => published.push((key, vec![value])),
                            }
                        }
                        Annotation::Exclude => {}
                        Annotation::Error(_) if policy.ignore_failures => {}
                        Annotation::Error(why) => denied.push(Denied {
                            policy: policy.name.clone(),
                            binding: Some(binding.name.clone()),
                            message: why,
                            reason: String::new(),
                        }),
                    }
                }
            }
        }
        for (key, values) in published {
            adm.ctx
                .audit_annotate(format!("{}/{key}", policy.name), values.join(", "));
        }
    }
    match denied.into_iter().next() {
        None => Ok(()),
        Some(d) => Err(denial(adm, &name, object, d)),
    }
}

/// A failed validation under the binding's actions.
fn act(
    adm: &Admission<'_>,
    policy: &Policy,
    binding: &Binding,
    index: usize,
    message: String,
    reason: String,
    denied: &mut Vec<Denied>,
) {
    for action in &binding.actions {
        match action.as_str() {
            "Deny" => denied.push(Denied {
                policy: policy.name.clone(),
                binding: Some(binding.name.clone()),
                message: message.clone(),
                reason: reason.clone(),
            }),
            "Warn" => adm.ctx.warn(format!(
                "Validation failed for ValidatingAdmissionPolicy '{}' with binding '{}': {message}",
                policy.name, binding.name
            )),
            "Audit" => {
                let value = json!([{
                    "message": message,
                    "policy": binding.policy_name,
                    "binding": binding.name,
                    "expressionIndex": index,
                    "validationActions": binding.actions,
                }]);
                adm.ctx
                    .audit_annotate(FAILURE_ANNOTATION.to_string(), value.to_string());
            }
            _ => {}
        }
    }
}

/// The error a denial fails the request with: upstream's `admission.NewForbidden` (the message
/// `<resource> "<name>" is forbidden: …`) with the decision's reason (default Invalid) and its
/// code, and the message once more as a cause.
fn denial(adm: &Admission<'_>, name: &str, object: Option<&Value>, d: Denied) -> Status {
    let message = match &d.binding {
        Some(b) => format!(
            "ValidatingAdmissionPolicy '{}' with binding '{b}' denied request: {}",
            d.policy, d.message
        ),
        None => format!(
            "ValidatingAdmissionPolicy '{}' denied request: {}",
            d.policy, d.message
        ),
    };
    // Upstream names the object by its name, else its generateName, else "Unknown".
    let shown = Some(name)
        .filter(|n| !n.is_empty())
        .or_else(|| object.and_then(|o| o["metadata"]["generateName"].as_str()))
        .filter(|n| !n.is_empty())
        .unwrap_or("Unknown");
    let r = adm.resource();
    let mut status = Status::forbidden(r.plural, r.group, shown, &message);
    let reason = if d.reason.is_empty() {
        "Invalid"
    } else {
        d.reason.as_str()
    };
    (status.reason, status.code) = match reason {
        "Forbidden" => ("Forbidden", 403),
        "Unauthorized" => ("Unauthorized", 401),
        "RequestEntityTooLarge" => ("RequestEntityTooLarge", 413),
        _ => ("Invalid", 422),
    };
    if let Some(details) = status.details.as_mut() {
        details.causes.push(Cause {
            reason: String::new(),
            message,
            field: String::new(),
        });
    }
    status
}

/// Whether `m` selects the request, and under which (equivalent) resource: namespaceSelector,
/// objectSelector, the excluded rules, then the rules (none: everything the policy matched).
async fn matches(
    adm: &Admission<'_>,
    m: &MatchResources,
    name: &str,
    namespace: &str,
    object: Option<&Value>,
    old: Option<&Value>,
) -> Result<Option<&'static vkube_api::Resource>, Status> {
    if !matching::selector_empty(&m.namespace_selector)
        && let Some(labels) = adm.labels_for_namespace(namespace, object, old).await?
        && !vkube_api::selector::label_selector_matches(&m.namespace_selector, &labels)
    {
        return Ok(None);
    }
    if !matching::object_selected(&m.object_selector, object, old) {
        return Ok(None);
    }
    let request = Request {
        requested: adm.resource(),
        subresource: &adm.ctx.info.subresource,
        operation: adm.operation,
        namespace,
    };
    let named = |r: &policy::NamedRule, t: &crate::webhooks::hook::Target| r.matches(t, name);
    if matching::invocation_of(&m.exclude, named, m.exact, &request).is_some() {
        return Ok(None);
    }
    if m.rules.is_empty() {
        return Ok(Some(adm.resource()));
    }
    Ok(matching::invocation_of(&m.rules, named, m.exact, &request))
}

/// object, oldObject and request, in the version of the resource the policy matched.
async fn inputs(
    adm: &Admission<'_>,
    invoked: &'static vkube_api::Resource,
    name: &str,
    namespace: &str,
    object: Option<&Value>,
    old: Option<&Value>,
) -> Result<eval::Inputs, Status> {
    // In the matched version: through a CRD's conversion webhook when it has one (conversion/).
    let store = adm.ctx.api.store.as_ref();
    let object = crate::webhooks::in_version(store, object, invoked).await?;
    let old = crate::webhooks::in_version(store, old, invoked).await?;
    let options = adm.options();
    let attrs = adm.attributes(invoked, name, namespace, &options);
    let request = crate::webhooks::review::request("", &attrs, object.as_ref(), old.as_ref());
    Ok(eval::Inputs {
        object: object.unwrap_or(Value::Null),
        old_object: old.unwrap_or(Value::Null),
        request,
        params: Value::Null,
        namespace_object: Value::Null,
    })
}
