//! The `authorizer` variable of policy expressions (Kubernetes' CEL authz library), checked
//! against vkube's RBAC view: `authorizer.group('apps').resource('deployments')
//! .namespace('ns').name('x').check('create').allowed()`, `authorizer.path('/healthz')
//! .check('get')`, `authorizer.serviceAccount('ns', 'sa')…`, and on a decision `allowed()`,
//! `reason()`, `errored()`, `error()`. The builder values are CEL maps tagged with a private
//! key; the library functions read and extend them.

use std::collections::HashMap;
use std::sync::Arc;

use cel::Value;
use cel::extractors::This;
use vkube_auth::UserInfo;
use vkube_auth::rbac::{Attributes, Decision};

const TAG: &str = "__vkube_authz";

fn field(v: &Value, key: &str) -> Option<String> {
    match v {
        Value::Map(m) => match m
            .map
            .get(&cel::objects::Key::String(Arc::new(key.to_string())))
        {
            Some(Value::String(s)) => Some(s.to_string()),
            _ => None,
        },
        _ => None,
    }
}

fn fields(v: &Value) -> HashMap<String, Value> {
    match v {
        Value::Map(m) => m
            .map
            .iter()
            .filter_map(|(k, v)| match k {
                cel::objects::Key::String(k) => Some((k.to_string(), v.clone())),
                _ => None,
            })
            .collect(),
        _ => HashMap::new(),
    }
}

/// `this` as a builder of `stage`, extended with `key: value` as stage `next`.
fn extend(
    this: &Value,
    stages: &[&str],
    next: &str,
    key: &str,
    value: String,
) -> Result<Value, String> {
    let stage = field(this, TAG).unwrap_or_default();
    if !stages.contains(&stage.as_str()) {
        return Err(format!("no such overload: {key} on {stage:?}"));
    }
    let mut map = fields(this);
    map.insert(TAG.into(), Value::String(Arc::new(next.to_string())));
    map.insert(key.into(), Value::String(Arc::new(value)));
    Ok(map.into())
}

/// The root `authorizer` value for the requesting user.
pub fn root() -> Value {
    let mut map = HashMap::new();
    map.insert(
        TAG.to_string(),
        Value::String(Arc::new("authorizer".into())),
    );
    map.into()
}

/// The user a builder checks for: the request's, or a service account's.
fn user_of(this: &Value, requester: &UserInfo) -> UserInfo {
    match (field(this, "saNamespace"), field(this, "saName")) {
        (Some(ns), Some(name)) => UserInfo {
            username: format!("system:serviceaccount:{ns}:{name}"),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{ns}"),
                "system:authenticated".into(),
            ],
            ..UserInfo::default()
        },
        _ => requester.clone(),
    }
}

/// Registers the library's functions on `ctx`, deciding with `authorizer` for `user`.
pub fn install(
    ctx: &mut cel::Context<'static, 'static>,
    authorizer: Arc<crate::authz::Authorizer>,
    user: UserInfo,
) {
    let builder = |stages: &'static [&'static str], next: &'static str, key: &'static str| {
        move |This(this): This<Value>, arg: Arc<String>| -> Result<Value, cel::ExecutionError> {
            extend(&this, stages, next, key, arg.to_string())
                .map_err(|e| cel::ExecutionError::function_error(key, e))
        }
    };
    let _ = ctx.add_function("group", builder(&["authorizer"], "resource0", "group"));
    let _ = ctx.add_function("resource", builder(&["resource0"], "resource", "resource"));
    let _ = ctx.add_function(
        "subresource",
        builder(&["resource"], "resource", "subresource"),
    );
    let _ = ctx.add_function("namespace", builder(&["resource"], "resource", "namespace"));
    let _ = ctx.add_function("name", builder(&["resource"], "resource", "name"));
    let _ = ctx.add_function("path", builder(&["authorizer"], "path", "path"));
    let _ = ctx.add_function(
        "serviceAccount",
        |This(this): This<Value>, ns: Arc<String>, name: Arc<String>| -> Value {
            let mut map = fields(&this);
            map.insert("saNamespace".into(), Value::String(ns));
            map.insert("saName".into(), Value::String(name));
            map.into()
        },
    );
    let _ = ctx.add_function(
        "check",
        move |This(this): This<Value>, verb: Arc<String>| -> Value {
            let stage = field(&this, TAG).unwrap_or_default();
            let text = |k: &str| field(&this, k).unwrap_or_default();
            let attrs = Attributes {
                verb: verb.to_string(),
                resource_request: stage != "path",
                group: text("group"),
                resource: text("resource"),
                subresource: text("subresource"),
                name: text("name"),
                namespace: text("namespace"),
                path: text("path"),
            };
            let user = user_of(&this, &user);
            let decision = if user.is_master() {
                Decision::Allow("system:masters".into())
            } else {
                authorizer.rbac.authorize(&user, &attrs)
            };
            let (allowed, reason) = match decision {
                Decision::Allow(reason) => (true, reason),
                Decision::Deny => (false, String::new()),
            };
            let mut map = HashMap::new();
            map.insert(TAG.to_string(), Value::String(Arc::new("decision".into())));
            map.insert("allowed".to_string(), Value::Bool(allowed));
            map.insert("reason".to_string(), Value::String(Arc::new(reason)));
            map.into()
        },
    );
    let _ = ctx.add_function("allowed", |This(this): This<Value>| -> bool {
        matches!(fields(&this).get("allowed"), Some(Value::Bool(true)))
    });
    let _ = ctx.add_function("reason", |This(this): This<Value>| -> Arc<String> {
        Arc::new(field(&this, "reason").unwrap_or_default())
    });
    // RBAC does not fail: a decision never carries an error.
    let _ = ctx.add_function("errored", |This(_): This<Value>| false);
    let _ = ctx.add_function("error", |This(_): This<Value>| Arc::new(String::new()));
}
