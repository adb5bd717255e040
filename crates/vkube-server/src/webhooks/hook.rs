//! One webhook of a configuration, parsed once when the view takes the object: its rules, policies,
//! selectors, compiled match conditions and TLS client. Matching a request against the rules is
//! upstream's `rules.Matcher` (operations, groups, versions, resources with subresources and `*`,
//! scope).

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

/// The admission operations a rule names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
    /// `exec`, `attach` and `portforward` of a pod: the connect options are the object.
    Connect,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }
}

/// A `RuleWithOperations`.
#[derive(Debug, Default)]
pub struct Rule {
    operations: Vec<String>,
    groups: Vec<String>,
    versions: Vec<String>,
    resources: Vec<String>,
    /// `*` (the default), `Cluster` or `Namespaced`.
    scope: String,
}

/// What a rule is asked about: the request's (or an equivalent) resource.
pub struct Target<'a> {
    pub operation: Operation,
    pub group: &'a str,
    pub version: &'a str,
    pub resource: &'a str,
    pub subresource: &'a str,
    /// The request's namespace (a Namespace object's own name for a Namespace).
    pub namespace: &'a str,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

impl Rule {
    pub fn parse(v: &Value) -> Rule {
        Rule {
            operations: strings(&v["operations"]),
            groups: strings(&v["apiGroups"]),
            versions: strings(&v["apiVersions"]),
            resources: strings(&v["resources"]),
            scope: v["scope"].as_str().unwrap_or("*").to_string(),
        }
    }

    pub fn matches(&self, t: &Target) -> bool {
        let any = |list: &[String], value: &str| list.iter().any(|x| x == "*" || x == value);
        any(&self.operations, t.operation.as_str())
            && any(&self.groups, t.group)
            && any(&self.versions, t.version)
            && self.resource_matches(t)
            && self.scope_matches(t)
    }

    /// `*` is every resource but no subresource, `*/*` everything, `pods/*` every subresource of
    /// pods, `*/status` the status of everything.
    fn resource_matches(&self, t: &Target) -> bool {
        self.resources.iter().any(|r| {
            let (res, sub) = r.split_once('/').unwrap_or((r.as_str(), ""));
            (res == "*" || res == t.resource)
                && if t.subresource.is_empty() {
                    sub.is_empty()
                } else {
                    sub == "*" || sub == t.subresource
                }
        })
    }

    fn scope_matches(&self, t: &Target) -> bool {
        let namespace_object = t.group.is_empty() && t.resource == "namespaces";
        match self.scope.as_str() {
            "Namespaced" => !namespace_object && !t.namespace.is_empty(),
            "Cluster" => namespace_object || t.namespace.is_empty(),
            _ => true,
        }
    }
}

/// Where the webhook is reached.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Url(String),
    Service {
        namespace: String,
        name: String,
        path: String,
        port: u16,
    },
}

/// A compiled `matchConditions` entry; a condition that does not compile keeps its error, which
/// fails the request as the failure policy says (upstream refuses such a configuration at create).
pub struct Condition {
    pub name: String,
    pub program: Result<cel::Program, String>,
}

pub struct Hook {
    pub configuration: String,
    pub name: String,
    pub mutating: bool,
    pub rules: Vec<Rule>,
    /// failurePolicy Ignore (default Fail).
    pub ignore_failures: bool,
    /// matchPolicy Exact (default Equivalent).
    pub exact: bool,
    pub namespace_selector: Value,
    pub object_selector: Value,
    pub side_effects: Option<String>,
    pub timeout: Duration,
    /// The AdmissionReview version to send: the first of admissionReviewVersions vkube speaks.
    pub review_version: Option<&'static str>,
    /// reinvocationPolicy IfNeeded.
    pub reinvoke: bool,
    pub conditions: Vec<Condition>,
    pub endpoint: Result<Endpoint, String>,
    /// The TLS client: the caBundle as the only roots, else the system's.
    pub tls: Result<tokio_rustls::TlsConnector, String>,
}

impl Hook {
    /// Every webhook of a configuration object.
    pub fn parse_all(config: &Value, mutating: bool) -> Vec<Arc<Hook>> {
        let name = config["metadata"]["name"].as_str().unwrap_or_default();
        config["webhooks"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|w| Arc::new(Hook::parse(name, w, mutating)))
            .collect()
    }

    pub fn parse(configuration: &str, w: &Value, mutating: bool) -> Hook {
        let conditions = w["matchConditions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| Condition {
                name: c["name"].as_str().unwrap_or_default().to_string(),
                program: cel::Program::compile(c["expression"].as_str().unwrap_or_default())
                    .map_err(|e| e.to_string()),
            })
            .collect();
        let review_version = strings(&w["admissionReviewVersions"])
            .iter()
            .find_map(|v| match v.as_str() {
                "v1" => Some("v1"),
                "v1beta1" => Some("v1beta1"),
                _ => None,
            })
            // Before v1 the field was optional and meant v1beta1.
            .or(w["admissionReviewVersions"].is_null().then_some("v1beta1"));
        let client = &w["clientConfig"];
        Hook {
            configuration: configuration.to_string(),
            name: w["name"].as_str().unwrap_or_default().to_string(),
            mutating,
            rules: w["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .map(Rule::parse)
                .collect(),
            ignore_failures: w["failurePolicy"] == "Ignore",
            exact: w["matchPolicy"] == "Exact",
            namespace_selector: w["namespaceSelector"].clone(),
            object_selector: w["objectSelector"].clone(),
            side_effects: w["sideEffects"].as_str().map(str::to_string),
            timeout: Duration::from_secs(w["timeoutSeconds"].as_u64().unwrap_or(10).clamp(1, 30)),
            review_version,
            reinvoke: w["reinvocationPolicy"] == "IfNeeded",
            conditions,
            endpoint: endpoint(client),
            tls: tls_client(client["caBundle"].as_str()),
        }
    }
}

/// Where a clientConfig points (shared with CRD conversion webhooks: conversion/).
pub(crate) fn endpoint(client: &Value) -> Result<Endpoint, String> {
    if let Some(url) = client["url"].as_str() {
        return Ok(Endpoint::Url(url.to_string()));
    }
    let svc = &client["service"];
    if svc.is_object() {
        return Ok(Endpoint::Service {
            namespace: svc["namespace"].as_str().unwrap_or_default().to_string(),
            name: svc["name"].as_str().unwrap_or_default().to_string(),
            path: svc["path"].as_str().unwrap_or("/").to_string(),
            port: svc["port"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(443),
        });
    }
    Err("the webhook has neither a url nor a service".into())
}

/// The TLS client of a clientConfig: its caBundle as the only roots, else the system's (also for
/// conversion webhooks: conversion/).
pub(crate) fn tls_client(ca_bundle: Option<&str>) -> Result<tokio_rustls::TlsConnector, String> {
    let pem = match ca_bundle.filter(|b| !b.is_empty()) {
        Some(b64) => {
            use base64::Engine as _;
            let pem = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| format!("caBundle: {e}"))?;
            Some(String::from_utf8(pem).map_err(|e| format!("caBundle: {e}"))?)
        }
        None => None,
    };
    vkube_auth::fetch::Client::new(pem.as_deref())
        .map(|c| c.connector())
        .map_err(|e| format!("unable to load root certificates: {e}"))
}
