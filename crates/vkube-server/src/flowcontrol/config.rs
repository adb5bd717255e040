//! The configuration a request is classified by: the FlowSchemas in matching order and the
//! priority levels they name, parsed from the stored objects. The rules are upstream's
//! (`apf_controller.go` digest, `rule.go` matching): a schema whose level does not exist is
//! skipped; a missing mandatory schema or level is imagined from the bootstrap definition.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use vkube_api::flowcontrol::bootstrap;
use vkube_auth::UserInfo;

use crate::request::RequestInfo;

/// What a limited level answers when it is full.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LimitResponse {
    Reject,
    Queue {
        queues: usize,
        hand_size: usize,
        queue_length_limit: usize,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Level {
    pub name: String,
    pub uid: String,
    /// `None`: exempt.
    pub limited: Option<LimitResponse>,
    pub shares: u64,
}

#[derive(Clone, Debug)]
pub struct Schema {
    pub name: String,
    pub uid: String,
    pub level: String,
    pub precedence: i64,
    /// `ByUser`, `ByNamespace`, or none.
    pub distinguisher: Option<String>,
    rules: Vec<Value>,
}

/// One revision of the configuration.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// In matching order: precedence, then name.
    pub schemas: Vec<Arc<Schema>>,
    pub levels: BTreeMap<String, Arc<Level>>,
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

impl Level {
    pub fn parse(obj: &Value) -> Level {
        let spec = &obj["spec"];
        let limited = &spec["limited"];
        let (limited_response, shares) = if spec["type"] == "Exempt" {
            let shares = spec["exempt"]["nominalConcurrencyShares"].as_u64();
            (None, shares.unwrap_or(0))
        } else {
            let response = &limited["limitResponse"];
            let q = &response["queuing"];
            let n = |v: &Value, default: u64| v.as_u64().filter(|n| *n > 0).unwrap_or(default);
            let response = if response["type"] == "Queue" {
                LimitResponse::Queue {
                    queues: n(&q["queues"], 64) as usize,
                    hand_size: n(&q["handSize"], 8) as usize,
                    queue_length_limit: n(&q["queueLengthLimit"], 50) as usize,
                }
            } else {
                LimitResponse::Reject
            };
            let shares = limited["nominalConcurrencyShares"].as_u64().unwrap_or(30);
            (Some(response), shares)
        };
        Level {
            name: text(&obj["metadata"]["name"]),
            uid: text(&obj["metadata"]["uid"]),
            limited: limited_response,
            shares,
        }
    }
}

impl Schema {
    pub fn parse(obj: &Value) -> Schema {
        let spec = &obj["spec"];
        Schema {
            name: text(&obj["metadata"]["name"]),
            uid: text(&obj["metadata"]["uid"]),
            level: text(&spec["priorityLevelConfiguration"]["name"]),
            precedence: spec["matchingPrecedence"].as_i64().unwrap_or(1000),
            distinguisher: spec["distinguisherMethod"]["type"]
                .as_str()
                .map(str::to_string),
            rules: spec["rules"].as_array().cloned().unwrap_or_default(),
        }
    }

    fn matches(&self, user: &UserInfo, info: &RequestInfo, path: &str) -> bool {
        self.rules.iter().any(|rule| {
            let subjects = rule["subjects"].as_array().into_iter().flatten();
            if !subjects.into_iter().any(|s| subject_matches(s, user)) {
                return false;
            }
            if info.is_resource {
                let rules = rule["resourceRules"].as_array().into_iter().flatten();
                rules.into_iter().any(|r| resource_rule_matches(r, info))
            } else {
                let rules = rule["nonResourceRules"].as_array().into_iter().flatten();
                rules
                    .into_iter()
                    .any(|r| non_resource_rule_matches(r, &info.verb, path))
            }
        })
    }

    /// The flow distinguisher: the user's name, the request's namespace, or nothing.
    pub fn distinguish(&self, user: &UserInfo, info: &RequestInfo) -> String {
        match self.distinguisher.as_deref() {
            Some("ByUser") => user.username.clone(),
            Some("ByNamespace") => info.namespace.clone(),
            _ => String::new(),
        }
    }
}

fn subject_matches(subject: &Value, user: &UserInfo) -> bool {
    match subject["kind"].as_str() {
        Some("User") => {
            let name = subject["user"]["name"].as_str();
            name.is_some_and(|n| n == "*" || n == user.username)
        }
        Some("Group") => match subject["group"]["name"].as_str() {
            Some("*") => true,
            Some(group) => user.groups.iter().any(|g| g == group),
            None => false,
        },
        Some("ServiceAccount") => {
            let sa = &subject["serviceAccount"];
            let (Some(ns), Some(name)) = (sa["namespace"].as_str(), sa["name"].as_str()) else {
                return false;
            };
            let Some(rest) = user.username.strip_prefix("system:serviceaccount:") else {
                return false;
            };
            if name == "*" {
                rest.strip_prefix(ns).is_some_and(|r| r.starts_with(':'))
            } else {
                rest == format!("{ns}:{name}")
            }
        }
        _ => false,
    }
}

/// Upstream's `containsString`: a lone wildcard matches anything.
fn contains(list: &Value, x: &str, wildcard: &str) -> bool {
    let items: Vec<&str> = list
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    (items.len() == 1 && items[0] == wildcard) || items.contains(&x)
}

fn resource_rule_matches(rule: &Value, info: &RequestInfo) -> bool {
    let resource = if info.subresource.is_empty() {
        info.resource.clone()
    } else {
        format!("{}/{}", info.resource, info.subresource)
    };
    if !contains(&rule["verbs"], &info.verb, "*")
        || !contains(&rule["resources"], &resource, "*")
        || !contains(&rule["apiGroups"], &info.group, "*")
    {
        return false;
    }
    if info.namespace.is_empty() {
        return rule["clusterScope"] == true;
    }
    contains(&rule["namespaces"], &info.namespace, "*")
}

fn non_resource_rule_matches(rule: &Value, verb: &str, path: &str) -> bool {
    if !contains(&rule["verbs"], verb, "*") {
        return false;
    }
    let urls = rule["nonResourceURLs"].as_array().into_iter().flatten();
    urls.into_iter().filter_map(Value::as_str).any(|url| {
        if url == "*" || url == path {
            return true;
        }
        let mut prefix = url.trim_end_matches('*').to_string();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        path.starts_with(&prefix)
    })
}

impl Config {
    /// Digests the stored objects as upstream's controller does.
    pub fn build(schemas: &[Value], levels: &[Value]) -> Config {
        let mut config = Config::default();
        for obj in levels {
            let level = Level::parse(obj);
            config.levels.insert(level.name.clone(), Arc::new(level));
        }
        for proto in bootstrap::mandatory_levels() {
            let name = proto["metadata"]["name"].as_str().unwrap_or_default();
            if !config.levels.contains_key(name) {
                config
                    .levels
                    .insert(name.to_string(), Arc::new(Level::parse(&proto)));
            }
        }
        let mut parsed: Vec<Schema> = schemas
            .iter()
            .map(Schema::parse)
            .filter(|s| config.levels.contains_key(&s.level))
            .collect();
        for proto in bootstrap::mandatory_schemas() {
            let name = proto["metadata"]["name"].as_str().unwrap_or_default();
            if !parsed.iter().any(|s| s.name == name) {
                let mut imagined = Schema::parse(&proto);
                // Upstream puts an imagined `exempt` first and `catch-all` last, whatever
                // the others' precedences.
                imagined.precedence = if name == bootstrap::EXEMPT {
                    i64::MIN
                } else {
                    i64::MAX
                };
                parsed.push(imagined);
            }
        }
        parsed.sort_by(|a, b| (a.precedence, &a.name).cmp(&(b.precedence, &b.name)));
        config.schemas = parsed.into_iter().map(Arc::new).collect();
        config
    }

    /// The first schema that matches, and its level.
    pub fn classify(
        &self,
        user: &UserInfo,
        info: &RequestInfo,
        path: &str,
    ) -> Option<(Arc<Schema>, Arc<Level>)> {
        let schema = self.schemas.iter().find(|s| s.matches(user, info, path))?;
        let level = self.levels.get(&schema.level)?;
        Some((schema.clone(), level.clone()))
    }

    /// Each limited level's concurrency limit: its share of `total`, rounded up
    /// (`ceil(total * shares / sum of every level's shares)`).
    pub fn limits(&self, total: usize) -> BTreeMap<String, usize> {
        let sum: u64 = self.levels.values().map(|l| l.shares).sum();
        self.levels
            .values()
            .filter(|l| l.limited.is_some())
            .map(|l| {
                let limit = if sum == 0 {
                    0
                } else {
                    (total as f64 * l.shares as f64 / sum as f64).ceil() as usize
                };
                (l.name.clone(), limit)
            })
            .collect()
    }
}
