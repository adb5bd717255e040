//! A ValidatingAdmissionPolicy or a binding, parsed and compiled once when the view takes the
//! object: match constraints, param kind, match conditions, variables, validations and audit
//! annotations, each CEL expression compiled in vkube's one CEL environment.

use serde_json::Value;

use crate::webhooks::hook::{Rule, Target};

/// A compiled expression and its text (upstream quotes the text in its errors); an expression
/// that does not compile keeps the compiler's message, which fails evaluation as upstream's
/// `compilation error: …`.
pub struct Expression {
    pub text: String,
    pub program: Result<cel::Program, String>,
}

impl Expression {
    pub fn compile(text: &str) -> Expression {
        Expression {
            text: text.to_string(),
            program: vkube_api::crd::compile::program(text),
        }
    }
}

/// A `NamedRuleWithOperations`: a rule, and the object names it is limited to (none: all).
pub struct NamedRule {
    pub rule: Rule,
    pub names: Vec<String>,
}

impl NamedRule {
    pub fn matches(&self, target: &Target, name: &str) -> bool {
        self.rule.matches(target) && (self.names.is_empty() || self.names.iter().any(|n| n == name))
    }
}

/// A `MatchResources`: the policy's matchConstraints or a binding's matchResources.
pub struct MatchResources {
    pub rules: Vec<NamedRule>,
    pub exclude: Vec<NamedRule>,
    pub namespace_selector: Value,
    pub object_selector: Value,
    /// matchPolicy Exact (default Equivalent).
    pub exact: bool,
}

fn named_rules(v: &Value) -> Vec<NamedRule> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|r| NamedRule {
            rule: Rule::parse(r),
            names: r["resourceNames"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect(),
        })
        .collect()
}

impl MatchResources {
    pub fn parse(m: &Value) -> MatchResources {
        MatchResources {
            rules: named_rules(&m["resourceRules"]),
            exclude: named_rules(&m["excludeResourceRules"]),
            namespace_selector: m["namespaceSelector"].clone(),
            object_selector: m["objectSelector"].clone(),
            exact: m["matchPolicy"] == "Exact",
        }
    }
}

pub struct Validation {
    pub expression: Expression,
    pub message: String,
    pub message_expression: Option<Expression>,
    /// The status reason of a denial (upstream's default: Invalid).
    pub reason: String,
}

pub struct Variable {
    pub name: String,
    pub expression: Expression,
}

pub struct AuditAnnotation {
    pub key: String,
    pub value: Expression,
}

/// `paramKind`: the group/version and kind of the params' resource.
pub struct ParamKind {
    pub api_version: String,
    pub kind: String,
}

impl ParamKind {
    /// The served resource of that kind, if any.
    pub fn resource(&self) -> Option<&'static vkube_api::Resource> {
        let (group, version) = self
            .api_version
            .split_once('/')
            .unwrap_or(("", &self.api_version));
        vkube_api::registry::all()
            .into_iter()
            .find(|r| r.group == group && r.version == version && r.kind == self.kind)
    }

    /// Go's `GroupVersionKind.String()`: `apps/v1, Kind=Foo`, `/v1, Kind=ConfigMap`.
    pub fn gvk(&self) -> String {
        let (group, version) = self
            .api_version
            .split_once('/')
            .unwrap_or(("", &self.api_version));
        format!("{group}/{version}, Kind={}", self.kind)
    }
}

pub struct Policy {
    pub name: String,
    /// failurePolicy Ignore (default Fail).
    pub ignore_failures: bool,
    pub param_kind: Option<ParamKind>,
    pub constraints: MatchResources,
    pub conditions: Vec<(String, Expression)>,
    pub variables: Vec<Variable>,
    pub validations: Vec<Validation>,
    pub audit_annotations: Vec<AuditAnnotation>,
    /// Whether an expression uses `authorizer` (the RBAC view then catches up first).
    pub uses_authorizer: bool,
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

impl Policy {
    pub fn parse(obj: &Value) -> Policy {
        let spec = &obj["spec"];
        let list = |key: &str| spec[key].as_array().cloned().unwrap_or_default();
        let policy = Policy {
            name: text(&obj["metadata"]["name"]),
            ignore_failures: spec["failurePolicy"] == "Ignore",
            param_kind: spec["paramKind"].is_object().then(|| ParamKind {
                api_version: text(&spec["paramKind"]["apiVersion"]),
                kind: text(&spec["paramKind"]["kind"]),
            }),
            constraints: MatchResources::parse(&spec["matchConstraints"]),
            conditions: list("matchConditions")
                .iter()
                .map(|c| {
                    let expression =
                        Expression::compile(c["expression"].as_str().unwrap_or_default());
                    (text(&c["name"]), expression)
                })
                .collect(),
            variables: list("variables")
                .iter()
                .map(|v| Variable {
                    name: text(&v["name"]),
                    expression: Expression::compile(v["expression"].as_str().unwrap_or_default()),
                })
                .collect(),
            validations: list("validations")
                .iter()
                .map(|v| Validation {
                    expression: Expression::compile(v["expression"].as_str().unwrap_or_default()),
                    message: text(&v["message"]),
                    message_expression: v["messageExpression"]
                        .as_str()
                        .filter(|m| !m.trim().is_empty())
                        .map(Expression::compile),
                    reason: v["reason"].as_str().unwrap_or("Invalid").to_string(),
                })
                .collect(),
            audit_annotations: list("auditAnnotations")
                .iter()
                .map(|a| AuditAnnotation {
                    key: text(&a["key"]),
                    value: Expression::compile(
                        a["valueExpression"].as_str().unwrap_or_default().trim(),
                    ),
                })
                .collect(),
            uses_authorizer: false,
        };
        let uses_authorizer = policy.expressions().any(|e| {
            e.program
                .as_ref()
                .is_ok_and(|p| p.references().has_variable("authorizer"))
        });
        Policy {
            uses_authorizer,
            ..policy
        }
    }

    fn expressions(&self) -> impl Iterator<Item = &Expression> {
        self.conditions
            .iter()
            .map(|(_, e)| e)
            .chain(self.variables.iter().map(|v| &v.expression))
            .chain(self.validations.iter().map(|v| &v.expression))
            .chain(self.audit_annotations.iter().map(|a| &a.value))
    }
}

/// A binding's `paramRef`.
pub struct ParamRef {
    pub name: String,
    pub namespace: String,
    pub selector: Option<Value>,
    /// parameterNotFoundAction Deny (else Allow).
    pub deny_when_missing: bool,
}

pub struct Binding {
    pub name: String,
    pub policy_name: String,
    pub param_ref: Option<ParamRef>,
    pub match_resources: Option<MatchResources>,
    pub actions: Vec<String>,
}

impl Binding {
    pub fn parse(obj: &Value) -> Binding {
        let spec = &obj["spec"];
        let p = &spec["paramRef"];
        Binding {
            name: text(&obj["metadata"]["name"]),
            policy_name: text(&spec["policyName"]),
            param_ref: p.is_object().then(|| ParamRef {
                name: text(&p["name"]),
                namespace: text(&p["namespace"]),
                selector: p.get("selector").filter(|s| s.is_object()).cloned(),
                deny_when_missing: p["parameterNotFoundAction"] == "Deny",
            }),
            match_resources: spec["matchResources"]
                .is_object()
                .then(|| MatchResources::parse(&spec["matchResources"])),
            actions: spec["validationActions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(str::to_string))
                .collect(),
        }
    }

    pub fn has(&self, action: &str) -> bool {
        self.actions.iter().any(|a| a == action)
    }
}
