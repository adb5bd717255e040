//! Whether a webhook is called for a request, in upstream's order (`ShouldCallHook`):
//! namespaceSelector, objectSelector, the rules (the request's resource, then with matchPolicy
//! Equivalent the resources that share its storage), then matchConditions (CEL).

use serde_json::Value;
use vkube_api::{Resource, Status, registry};

use super::hook::{Hook, Operation, Rule, Target};

/// Resources no webhook sees, so a broken webhook can always be removed (upstream's
/// `IsExemptAdmissionConfigurationResource`).
pub fn exempt(r: &Resource) -> bool {
    r.group == "admissionregistration.k8s.io"
        && matches!(
            r.plural,
            "mutatingwebhookconfigurations"
                | "validatingwebhookconfigurations"
                | "validatingadmissionpolicies"
                | "validatingadmissionpolicybindings"
                | "mutatingadmissionpolicies"
                | "mutatingadmissionpolicybindings"
        )
}

/// An empty (or absent) label selector selects everything.
pub fn selector_empty(s: &Value) -> bool {
    let none = |k: &str| {
        s[k].as_object().is_none_or(|m| m.is_empty()) && s[k].as_array().is_none_or(Vec::is_empty)
    };
    none("matchLabels") && none("matchExpressions")
}

/// objectSelector: the new or the old object's labels.
pub fn object_selected(selector: &Value, object: Option<&Value>, old: Option<&Value>) -> bool {
    if selector_empty(selector) {
        return true;
    }
    [object, old].into_iter().flatten().any(|o| {
        let labels = o["metadata"]
            .get("labels")
            .cloned()
            .unwrap_or_else(|| Value::Object(Default::default()));
        vkube_api::selector::label_selector_matches(selector, &labels)
    })
}

/// The resource (the request's own, or an equivalent one) under which `hook` is called, if any.
pub fn invocation(
    hook: &Hook,
    requested: &'static Resource,
    subresource: &str,
    operation: Operation,
    namespace: &str,
) -> Option<&'static Resource> {
    let request = Request {
        requested,
        subresource,
        operation,
        namespace,
    };
    invocation_of(&hook.rules, Rule::matches, hook.exact, &request)
}

/// What a request addresses, for [`invocation_of`].
pub struct Request<'a> {
    pub requested: &'static Resource,
    pub subresource: &'a str,
    pub operation: Operation,
    pub namespace: &'a str,
}

/// The resource (the request's own, or with `exact` false an equivalent one) under which one of
/// `rules` matches the request, if any; admission policies' named rules use it too.
pub fn invocation_of<R>(
    rules: &[R],
    matches: impl Fn(&R, &Target) -> bool,
    exact: bool,
    request: &Request,
) -> Option<&'static Resource> {
    let Request {
        requested,
        subresource,
        operation,
        namespace,
    } = *request;
    let target = |r: &'static Resource| Target {
        operation,
        group: r.group,
        version: r.version,
        resource: r.plural,
        subresource,
        namespace,
    };
    if rules.iter().any(|rule| matches(rule, &target(requested))) {
        return Some(requested);
    }
    if exact {
        return None;
    }
    let equivalents: Vec<&'static Resource> = registry::all()
        .into_iter()
        .filter(|r| r.storage == requested.storage && !std::ptr::eq(*r, requested))
        .filter(|r| (r.group, r.version) != (requested.group, requested.version))
        .collect();
    // Earlier rules first, as upstream.
    rules.iter().find_map(|rule| {
        equivalents
            .iter()
            .copied()
            .find(|r| matches(rule, &target(r)))
    })
}

/// matchConditions: `Ok(false)` when one is false; an error (for the failure policy to weigh)
/// when none is false but one could not be evaluated. `authorizer` is not offered.
pub fn conditions_match(
    hook: &Hook,
    object: Option<&Value>,
    old: Option<&Value>,
    request: &Value,
) -> Result<bool, String> {
    if hook.conditions.is_empty() {
        return Ok(true);
    }
    let to_cel =
        |v: Option<&Value>| cel::to_value(v.unwrap_or(&Value::Null)).unwrap_or(cel::Value::Null);
    let mut ctx = cel::Context::default();
    ctx.add_variable_from_value("object", to_cel(object));
    ctx.add_variable_from_value("oldObject", to_cel(old));
    ctx.add_variable_from_value("request", to_cel(Some(request)));
    let mut errors = Vec::new();
    for c in &hook.conditions {
        let program = match &c.program {
            Ok(p) => p,
            Err(e) => {
                errors.push(format!(
                    "compilation failed for matchCondition {:?}: {e}",
                    c.name
                ));
                continue;
            }
        };
        match program.execute(&ctx) {
            Ok(cel::Value::Bool(true)) => {}
            Ok(cel::Value::Bool(false)) => return Ok(false),
            Ok(other) => errors.push(format!(
                "matchCondition {:?} resulted in a non-boolean value: {other:?}",
                c.name
            )),
            Err(e) => errors.push(format!("matchCondition {:?}: {e}", c.name)),
        }
    }
    if errors.is_empty() {
        Ok(true)
    } else {
        Err(errors.join("\n"))
    }
}

/// The Forbidden error a failing matchCondition gives under failurePolicy Fail.
pub fn condition_error(resource: &Resource, name: &str, why: &str) -> Status {
    Status::forbidden(resource.plural, resource.group, name, why)
}
