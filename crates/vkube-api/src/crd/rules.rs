//! `x-kubernetes-validations`: CEL rules evaluated at their schema node, as apiextensions'
//! `cel.Validator` does. `self` is the node's value; `oldSelf` (on update) the correlated old
//! value, and a rule that mentions `oldSelf` (a transition rule) only runs when one exists.
//! Object properties are exposed with upstream's escaping (`foo-bar` is `self.foo__dash__bar`).
//!
//! Supported: what the cel crate evaluates — the standard library (`has`, `all`, `exists`,
//! `exists_one`, `map`, `filter`, `size`, `matches`, `startsWith`, `endsWith`, `contains`,
//! conversions, optionals such as `self.?x.orValue(…)`), and cel-go's strings (`lowerAscii`,
//! `split`, `join`, `replace`, `trim`, `substring`, `indexOf`, `format`…), lists (`slice`,
//! `flatten`, `distinct`, `sort`, `sortBy`…) and math extensions. Not supported: Kubernetes'
//! own libraries (lists `isSorted`/`sum`/`min`/`max`, regex `find`/`findAll`, `url`, `ip`,
//! `cidr`, `quantity`, `authz`), timestamps and durations (`format: date-time`/`duration` values
//! are plain strings), `optionalOldSelf`, cost limits, and compile-time type checking (a
//! reference to an undeclared field fails when evaluated, not when the CRD is written).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use serde_json::Value;

use super::gofmt;
use super::schema::{Rule, Schema};
use crate::validation::Errors;

/// The compiled rules of a schema, mirroring its tree; built once per CRD version.
pub struct Rules {
    schema: Schema,
    root: Node,
}

#[derive(Default)]
struct Node {
    rules: Vec<Compiled>,
    properties: BTreeMap<String, Node>,
    additional: Option<Box<Node>>,
    items: Option<Box<Node>>,
    all_of: Vec<Node>,
}

struct Compiled {
    rule: Rule,
    program: Option<cel::Program>,
    message: Option<cel::Program>,
    uses_old_self: bool,
    field_path: String,
    /// Whether the rule or its message needs a large stack to evaluate.
    deep: bool,
}

/// A rule that does not compile (or is misplaced), with the schema path of the offending field
/// (`openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule`).
#[derive(Debug, Clone, PartialEq)]
pub struct CompileError {
    pub path: String,
    pub rule: Rule,
    pub detail: String,
}

/// The CEL environment every vkube expression is compiled and evaluated in.
pub fn env() -> Arc<cel::Env> {
    static ENV: OnceLock<Arc<cel::Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = cel::Env::stdlib();
        for ext in [
            cel::extensions::strings as fn(&mut cel::Env) -> _,
            cel::extensions::lists,
            cel::extensions::math,
        ] {
            // The extensions only fail on a duplicate declaration, which a fresh stdlib has not.
            let _ = env.add_extension(ext);
        }
        Arc::new(env)
    })
    .clone()
}

impl Rules {
    /// Compiles every rule (and messageExpression) of `schema`. The error lists each rule that
    /// does not compile, as "<schema path>: <why>".
    pub fn compile(schema: &Schema) -> Result<Rules, Vec<String>> {
        let mut errors = Vec::new();
        let root = build(schema, "openAPIV3Schema", None, &mut errors);
        if errors.is_empty() {
            Ok(Rules {
                schema: schema.clone(),
                root,
            })
        } else {
            Err(errors
                .into_iter()
                .map(|e| format!("{}: {}", e.path, e.detail))
                .collect())
        }
    }

    /// Whether any rule exists at all (nothing to evaluate otherwise).
    pub fn is_empty(&self) -> bool {
        fn empty(n: &Node) -> bool {
            n.rules.is_empty()
                && n.properties.values().all(empty)
                && n.additional.as_deref().is_none_or(empty)
                && n.items.as_deref().is_none_or(empty)
                && n.all_of.iter().all(empty)
        }
        empty(&self.root)
    }

    /// Evaluates the rules against `obj` (`old` is the stored object on an update), adding a
    /// field error per failing rule: its message (or `failed rule: <rule>`), its messageExpression
    /// when that evaluates to a usable string, at its fieldPath, with its reason.
    pub fn validate(&self, obj: &Value, old: Option<&Value>, errs: &mut Errors) {
        walk(&self.schema, &self.root, "", obj, old, errs);
    }
}

/// The compile errors of a schema's rules, with their schema paths under `base`, including
/// transition rules placed where old values cannot be correlated.
pub fn compile_errors(schema: &Schema, base: &str) -> Vec<CompileError> {
    let mut errors = Vec::new();
    build(schema, base, None, &mut errors);
    errors
}

fn build(
    s: &Schema,
    path: &str,
    uncorrelatable: Option<&str>,
    errors: &mut Vec<CompileError>,
) -> Node {
    let mut node = Node::default();
    for (i, rule) in s.validations.iter().enumerate() {
        let at = format!("{path}.x-kubernetes-validations[{i}]");
        let mut bad = |field: &str, detail: String| {
            errors.push(CompileError {
                path: format!("{at}.{field}"),
                rule: rule.clone(),
                detail,
            })
        };
        let source = rule.rule.trim();
        let program = if source.is_empty() {
            None
        } else {
            match super::compile::program(source) {
                Ok(p) => Some(p),
                Err(e) => {
                    bad("rule", format!("compilation failed: {e}"));
                    None
                }
            }
        };
        let uses_old_self = program
            .as_ref()
            .is_some_and(|p| p.references().has_variable("oldSelf"));
        if uses_old_self {
            if let Some(within) = uncorrelatable {
                bad(
                    "rule",
                    format!(
                        "oldSelf cannot be used on the uncorrelatable portion of the schema within {within}"
                    ),
                );
            }
        }
        let message = match rule.message_expression.trim() {
            "" => None,
            m => match super::compile::program(m) {
                Ok(p) => Some(p),
                Err(e) => {
                    bad("messageExpression", format!("compilation failed: {e}"));
                    None
                }
            },
        };
        let field_path = if rule.field_path.trim().is_empty() {
            String::new()
        } else {
            match field_path(s, rule.field_path.trim()) {
                Ok(p) => p,
                Err(_) => {
                    bad("fieldPath", "fieldPath must be a valid path".into());
                    String::new()
                }
            }
        };
        let deep = program.iter().chain(&message).any(super::compile::deep);
        node.rules.push(Compiled {
            rule: rule.clone(),
            program,
            message,
            uses_old_self,
            field_path,
            deep,
        });
    }
    let atomic_map = s.map_type.as_deref() == Some("atomic");
    for (k, p) in &s.properties {
        let within = if atomic_map {
            Some(path)
        } else {
            uncorrelatable
        };
        let child = build(p, &format!("{path}.properties[{k}]"), within, errors);
        node.properties.insert(k.clone(), child);
    }
    if let Some(a) = s.additional_schema() {
        let child = build(
            a,
            &format!("{path}.additionalProperties"),
            uncorrelatable,
            errors,
        );
        node.additional = Some(Box::new(child));
    }
    if let Some(items) = &s.items {
        let map_list = s.list_type.as_deref() == Some("map");
        let within = if map_list { uncorrelatable } else { Some(path) };
        node.items = Some(Box::new(build(
            items,
            &format!("{path}.items"),
            within,
            errors,
        )));
    }
    for (i, a) in s.all_of.iter().enumerate() {
        let child = build(a, &format!("{path}.allOf[{i}]"), uncorrelatable, errors);
        node.all_of.push(child);
    }
    node
}

/// A rule's `fieldPath` (`.spec.x`, `.m['key']`, `.list[0]`) checked against the schema and
/// rendered as a field path relative to the rule's node (`spec.x`, `m[key]`).
pub fn field_path(s: &Schema, path: &str) -> Result<String, String> {
    let chars: Vec<char> = path.chars().collect();
    let mut out = String::new();
    let mut node = s;
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '.' => {
                let start = i + 1;
                i = start;
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    i += 1;
                }
                let name: String = chars[start..i].iter().collect();
                node = node
                    .properties
                    .get(&name)
                    .ok_or("does not refer to a valid field")?;
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&name);
            }
            '[' => {
                let end = chars[i..]
                    .iter()
                    .position(|c| *c == ']')
                    .ok_or("unexpected end of JSON path")?
                    + i;
                let inner: String = chars[i + 1..end].iter().collect();
                i = end + 1;
                if let Some(key) = inner.strip_prefix('\'').and_then(|k| k.strip_suffix('\'')) {
                    if let Some(p) = node.properties.get(key) {
                        node = p;
                    } else {
                        node = node
                            .additional_schema()
                            .ok_or("does not refer to a valid field")?;
                    }
                    out.push_str(&format!("[{key}]"));
                } else if inner.parse::<usize>().is_ok() {
                    node = node
                        .items
                        .as_deref()
                        .ok_or("does not refer to a valid field")?;
                    out.push_str(&format!("[{inner}]"));
                } else {
                    return Err(format!("invalid index {inner}"));
                }
            }
            _ => return Err("expected [ or . character".into()),
        }
    }
    Ok(out)
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn field(path: &str) -> &str {
    if path.is_empty() { "<nil>" } else { path }
}

fn walk(s: &Schema, n: &Node, path: &str, obj: &Value, old: Option<&Value>, errs: &mut Errors) {
    if obj.is_null() {
        return;
    }
    let old = old.filter(|o| !o.is_null());
    if !n.rules.is_empty() {
        evaluate(s, n, path, obj, old, errs);
    }
    for (a, an) in s.all_of.iter().zip(&n.all_of) {
        walk(a, an, path, obj, old, errs);
    }
    match obj {
        Value::Array(items) => {
            let (Some(item_schema), Some(item_node)) = (&s.items, &n.items) else {
                return;
            };
            let old_items = old.and_then(Value::as_array);
            for (i, item) in items.iter().enumerate() {
                let old_item = match (s.list_type.as_deref(), old_items) {
                    (Some("map"), Some(olds)) => olds.iter().find(|o| {
                        s.list_map_keys.iter().all(|k| o.get(k) == item.get(k))
                            && !s.list_map_keys.is_empty()
                    }),
                    _ => None,
                };
                let at = format!("{path}[{i}]");
                walk(item_schema, item_node, &at, item, old_item, errs);
            }
        }
        Value::Object(map) => {
            let correlatable = s.map_type.as_deref() != Some("atomic");
            let old_map = old.and_then(Value::as_object).filter(|_| correlatable);
            for (k, v) in map {
                let old_v = old_map.and_then(|m| m.get(k));
                if let (Some(p), Some(pn)) = (s.properties.get(k), n.properties.get(k)) {
                    walk(p, pn, &child(path, k), v, old_v, errs);
                } else if let (Some(a), Some(an)) = (s.additional_schema(), &n.additional) {
                    walk(a, an, &format!("{path}[{k}]"), v, old_v, errs);
                }
            }
        }
        _ => {}
    }
}

fn evaluate(s: &Schema, n: &Node, path: &str, obj: &Value, old: Option<&Value>, errs: &mut Errors) {
    // A deep program recurses deeper than a worker thread's stack allows.
    if n.rules.iter().any(|c| c.deep) {
        return super::compile::on_large_stack(|| evaluate_here(s, n, path, obj, old, errs));
    }
    evaluate_here(s, n, path, obj, old, errs)
}

fn evaluate_here(
    s: &Schema,
    n: &Node,
    path: &str,
    obj: &Value,
    old: Option<&Value>,
    errs: &mut Errors,
) {
    let type_value = gofmt::quote(&s.type_);
    let mut ctx = cel::Context::with_env(env());
    ctx.add_variable_from_value("self", to_cel(obj, Some(s)));
    if let Some(o) = old {
        ctx.add_variable_from_value("oldSelf", to_cel(o, Some(s)));
    }
    for c in &n.rules {
        let Some(program) = &c.program else { continue };
        if c.uses_old_self && old.is_none() {
            continue;
        }
        let shown = rule_text(&c.rule);
        match program.execute(&ctx) {
            Ok(cel::Value::Bool(true)) => continue,
            Ok(_) => {}
            Err(e) => {
                let text = runtime_error(&e);
                let detail = if text.starts_with("no such overload") {
                    format!(
                        "'{text}': call arguments did not match a supported operator, function or macro signature for rule: {shown}"
                    )
                } else {
                    format!("{text} evaluating rule: {shown}")
                };
                errs.push(
                    "FieldValueInvalid",
                    field(path),
                    format!("Invalid value: {type_value}: {detail}"),
                );
                continue;
            }
        }
        let at = if c.field_path.is_empty() {
            path.to_string()
        } else {
            child(path, &c.field_path)
        };
        let detail = c
            .message
            .as_ref()
            .and_then(|m| match m.execute(&ctx) {
                Ok(cel::Value::String(s)) => {
                    let t = s.trim();
                    (!t.is_empty() && !t.contains(['\n', '\r'])).then(|| t.to_string())
                }
                _ => None,
            })
            .unwrap_or_else(|| {
                if c.rule.message.trim().is_empty() {
                    format!("failed rule: {shown}")
                } else {
                    c.rule.message.trim().to_string()
                }
            });
        let omit = s.type_ == "object" || s.type_ == "array";
        let value = gofmt::bad_value(obj);
        let with_value = |kind: &str| {
            if omit {
                format!("{kind}: {detail}")
            } else {
                format!("{kind}: {value}: {detail}")
            }
        };
        let (reason, message) = match c.rule.reason.as_deref() {
            Some("FieldValueForbidden") => ("FieldValueForbidden", format!("Forbidden: {detail}")),
            Some("FieldValueRequired") => {
                ("FieldValueRequired", format!("Required value: {detail}"))
            }
            Some("FieldValueDuplicate") => (
                "FieldValueDuplicate",
                if omit {
                    "Duplicate value".to_string()
                } else {
                    format!("Duplicate value: {value}")
                },
            ),
            _ => ("FieldValueInvalid", with_value("Invalid value")),
        };
        errs.push(reason, field(&at), message);
    }
}

/// The rule as upstream quotes it in messages: its message when set, else its text.
fn rule_text(rule: &Rule) -> String {
    if rule.message.trim().is_empty() {
        rule.rule.trim().to_string()
    } else {
        rule.message.trim().to_string()
    }
}

/// cel-go's wording for the runtime errors rules commonly hit.
fn runtime_error(e: &cel::ExecutionError) -> String {
    use cel::ExecutionError as E;
    match e {
        E::NoSuchKey(k) => format!("no such key: {k}"),
        E::NoSuchOverload(_) => format!("no such overload: {e}"),
        other => other.to_string(),
    }
}

/// CEL's reserved words (cel-go's lexer), shared with the admission policies' names.
pub(crate) const RESERVED: [&str; 21] = [
    "true",
    "false",
    "null",
    "in",
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
];

/// Upstream's escaping of property names into CEL identifiers; `None` for names CEL cannot
/// reach (such properties are left out of `self`).
pub fn escape(name: &str) -> Option<String> {
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    if RESERVED.contains(&name) {
        return Some(format!("__{name}__"));
    }
    let mut out = String::new();
    let chars: Vec<char> = name.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '_' && chars.get(i + 1) == Some(&'_') {
            out.push_str("__underscores__");
            i += 2;
            continue;
        }
        match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '_' => out.push(c),
            '.' => out.push_str("__dot__"),
            '-' => out.push_str("__dash__"),
            '/' => out.push_str("__slash__"),
            _ => return None,
        }
        i += 1;
    }
    Some(out)
}

/// A JSON value as CEL sees it under its schema: `number` fields are doubles even when whole,
/// `format: byte` strings are bytes, declared properties are escaped.
fn to_cel(v: &Value, s: Option<&Schema>) -> cel::Value {
    match v {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => {
            let typ = s.map_or("", |s| s.type_.as_str());
            match (typ, n.as_i64(), n.as_u64()) {
                ("number", _, _) => cel::Value::Float(n.as_f64().unwrap_or_default()),
                (_, Some(i), _) => cel::Value::Int(i),
                (_, None, Some(u)) => cel::Value::UInt(u),
                _ => cel::Value::Float(n.as_f64().unwrap_or_default()),
            }
        }
        Value::String(text) => {
            if s.is_some_and(|s| s.format == "byte") {
                use base64::Engine as _;
                if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(text) {
                    return cel::Value::Bytes(Arc::new(bytes));
                }
            }
            cel::Value::String(Arc::new(text.clone()))
        }
        Value::Array(items) => {
            let item_schema = s.and_then(|s| s.items.as_deref());
            cel::Value::List(Arc::new(
                items.iter().map(|x| to_cel(x, item_schema)).collect(),
            ))
        }
        Value::Object(map) => {
            let mut out: HashMap<cel::objects::Key, cel::Value> = HashMap::new();
            for (k, x) in map {
                let (key, child) = match s {
                    Some(s) if s.properties.contains_key(k) => match escape(k) {
                        Some(e) => (e, s.properties.get(k)),
                        None => continue,
                    },
                    Some(s) => (k.clone(), s.additional_schema()),
                    None => (k.clone(), None),
                };
                out.insert(cel::objects::Key::String(Arc::new(key)), to_cel(x, child));
            }
            cel::Value::Map(cel::objects::Map { map: Arc::new(out) })
        }
    }
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
