//! What a request asks for, derived from its method, path and query as kube-apiserver's
//! RequestInfoFactory derives it: verb, API group and version, namespace, resource, name and
//! subresource. Later the authorizer reads the same record.

use std::collections::HashMap;

use http::Method;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestInfo {
    /// True for `/api/…` and `/apis/…`; false for non-resource paths (`/healthz`, `/version`).
    pub is_resource: bool,
    pub verb: String,
    pub group: String,
    pub version: String,
    pub namespace: String,
    pub resource: String,
    pub name: String,
    pub subresource: String,
    /// The one name a list or watch selects with `fieldSelector=metadata.name=…`: upstream's
    /// RequestInfoFactory makes it the request's name for authorization, so a Role with
    /// `resourceNames` allows `kubectl get cm x -w`. Empty otherwise.
    pub selected_name: String,
    /// Path segments after `/api` or `/apis`, for discovery requests.
    pub parts: Vec<String>,
}

/// Query parameters; a repeated key keeps its first value, as Go's `url.Values.Get` does.
pub fn query(q: Option<&str>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for (k, v) in form_urlencoded::parse(q.unwrap_or_default().as_bytes()) {
        out.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    out
}

pub fn is_true(v: Option<&String>) -> bool {
    matches!(v.map(String::as_str), Some("1" | "true" | "True"))
}

impl RequestInfo {
    pub fn parse(method: &Method, path: &str, query: &HashMap<String, String>) -> RequestInfo {
        let mut parts: Vec<String> = path
            .trim_matches('/')
            .split('/')
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect();
        let mut info = RequestInfo::default();
        match parts.first().map(String::as_str) {
            Some("api") => {
                parts.remove(0);
            }
            Some("apis") => {
                parts.remove(0);
                if parts.is_empty() {
                    info.is_resource = true;
                    return info;
                }
                info.group = parts.remove(0);
            }
            _ => {
                info.verb = method.as_str().to_lowercase();
                return info;
            }
        }
        info.is_resource = true;
        info.parts = parts.clone();
        if parts.is_empty() {
            return info;
        }
        info.version = parts.remove(0);
        let mut watch = false;
        if parts.first().is_some_and(|p| p == "watch") {
            parts.remove(0);
            watch = true;
        }
        if parts.first().is_some_and(|p| p == "namespaces") && parts.len() > 1 {
            info.namespace = parts[1].clone();
            // `namespaces/{name}/status|finalize` are subresources of the namespace itself.
            if parts.len() >= 3 && !["status", "finalize"].contains(&parts[2].as_str()) {
                parts.drain(..2);
            } else {
                // `namespaces/{name}` addresses the namespace object.
                info.namespace.clear();
            }
        }
        if let Some(resource) = parts.first() {
            info.resource = resource.clone();
        }
        if let Some(name) = parts.get(1) {
            info.name = name.clone();
        }
        if let Some(sub) = parts.get(2) {
            info.subresource = sub.clone();
        }
        // `…/proxy/PATH`: the subresource is `proxy` (what RBAC's `pods/proxy` names), the rest
        // is the path at the target, as upstream's RequestInfoFactory reads it.
        if parts.len() > 3 && parts[2] != "proxy" {
            info.subresource = parts[2..].join("/");
        }
        let collection = info.name.is_empty();
        info.verb = match *method {
            Method::GET | Method::HEAD if watch || (collection && is_true(query.get("watch"))) => {
                "watch"
            }
            Method::GET | Method::HEAD if collection => "list",
            Method::GET | Method::HEAD => "get",
            Method::POST => "create",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE if collection => "deletecollection",
            Method::DELETE => "delete",
            _ => "",
        }
        .to_string();
        if !watch && matches!(info.verb.as_str(), "list" | "watch") {
            info.selected_name = query
                .get("fieldSelector")
                .and_then(|f| exact_name(f))
                .unwrap_or_default();
        }
        info
    }
}

/// The value of a `metadata.name=` (or `==`) term of a field selector, if it is a valid path
/// segment (as upstream's `RequiresExactMatch` and `IsValidPathSegmentName`).
fn exact_name(selector: &str) -> Option<String> {
    let name = selector.split(',').find_map(|term| {
        let rest = term.trim().strip_prefix("metadata.name")?;
        let value = rest.strip_prefix("==").or_else(|| rest.strip_prefix('='))?;
        (!value.starts_with('=')).then_some(value)
    })?;
    let invalid = name.is_empty() || name == "." || name == ".." || name.contains(['/', '%', '\\']);
    (!invalid).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(method: Method, path: &str) -> RequestInfo {
        let (path, q) = path.split_once('?').unwrap_or((path, ""));
        RequestInfo::parse(&method, path, &query(Some(q)))
    }

    #[test]
    fn derives_upstreams_attributes() {
        let i = parse(Method::GET, "/api/v1/namespaces/default/pods/web/log");
        assert_eq!(
            (
                i.verb.as_str(),
                i.namespace.as_str(),
                i.resource.as_str(),
                i.name.as_str(),
                i.subresource.as_str()
            ),
            ("get", "default", "pods", "web", "log")
        );
        let i = parse(Method::GET, "/apis/apps/v1/deployments?watch=true");
        assert_eq!(
            (
                i.verb.as_str(),
                i.group.as_str(),
                i.version.as_str(),
                i.resource.as_str()
            ),
            ("watch", "apps", "v1", "deployments")
        );
        let i = parse(Method::GET, "/api/v1/watch/namespaces/ns/configmaps");
        assert_eq!(
            (i.verb.as_str(), i.namespace.as_str(), i.resource.as_str()),
            ("watch", "ns", "configmaps")
        );
        let i = parse(Method::PUT, "/api/v1/namespaces/ns/status");
        assert_eq!(
            (
                i.verb.as_str(),
                i.namespace.as_str(),
                i.resource.as_str(),
                i.name.as_str(),
                i.subresource.as_str()
            ),
            ("update", "", "namespaces", "ns", "status")
        );
        let i = parse(Method::DELETE, "/api/v1/namespaces/ns");
        assert_eq!(
            (i.verb.as_str(), i.resource.as_str(), i.name.as_str()),
            ("delete", "namespaces", "ns")
        );
        let i = parse(Method::DELETE, "/api/v1/namespaces/ns/secrets");
        assert_eq!(
            (i.verb.as_str(), i.namespace.as_str(), i.resource.as_str()),
            ("deletecollection", "ns", "secrets")
        );
        let i = parse(Method::GET, "/healthz");
        assert!(!i.is_resource);
    }

    #[test]
    fn a_proxy_path_is_the_proxy_subresource() {
        let i = parse(
            Method::GET,
            "/api/v1/namespaces/a/pods/web:8080/proxy/healthz/x",
        );
        assert_eq!(
            (i.name.as_str(), i.subresource.as_str()),
            ("web:8080", "proxy")
        );
        let i = parse(
            Method::POST,
            "/api/v1/namespaces/a/services/https:web:443/proxy/",
        );
        assert_eq!(
            (i.verb.as_str(), i.subresource.as_str()),
            ("create", "proxy")
        );
        assert_eq!(crate::host_proxy::object_name("https:web:443"), "web");
        assert_eq!(crate::host_proxy::object_name("web:8080"), "web");
        assert_eq!(crate::host_proxy::object_name("web"), "web");
    }

    #[test]
    fn a_list_of_one_name_is_authorized_as_that_name() {
        let named = |path| parse(Method::GET, path).selected_name;
        assert_eq!(
            named("/api/v1/namespaces/ns/configmaps?fieldSelector=metadata.name%3Dx"),
            "x"
        );
        assert_eq!(
            named(
                "/api/v1/namespaces/ns/configmaps?watch=1&fieldSelector=a%3Db,metadata.name%3D%3Dx"
            ),
            "x"
        );
        assert_eq!(
            named("/api/v1/namespaces/ns/configmaps?fieldSelector=metadata.name!%3Dx"),
            ""
        );
        assert_eq!(
            named("/api/v1/namespaces/ns/configmaps?fieldSelector=metadata.name%3D.."),
            ""
        );
        // Not for the legacy /watch/ paths, nor for a get.
        assert_eq!(
            named("/api/v1/watch/namespaces/ns/configmaps?fieldSelector=metadata.name%3Dx"),
            ""
        );
        assert_eq!(
            named("/api/v1/namespaces/ns/configmaps/y?fieldSelector=metadata.name%3Dx"),
            ""
        );
    }
}
