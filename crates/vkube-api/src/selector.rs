//! Label and field selectors, with the grammar and matching rules of
//! `k8s.io/apimachinery/pkg/labels` and `…/fields`. No maintained crate implements them.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::status::Status;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Equals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub op: Op,
    pub values: Vec<String>,
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<Requirement>);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Ident(String),
    Not,
    NotEquals,
    Equals,
    In,
    NotIn,
    Open,
    Close,
    Comma,
    Gt,
    Lt,
}

fn lex(input: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = input.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '!' => {
                chars.next();
                if chars.peek() == Some(&'=') {
                    chars.next();
                    tokens.push(Token::NotEquals);
                } else {
                    tokens.push(Token::Not);
                }
            }
            '=' => {
                chars.next();
                if chars.peek() == Some(&'=') {
                    chars.next();
                }
                tokens.push(Token::Equals);
            }
            '(' | ')' | ',' | '>' | '<' => {
                chars.next();
                tokens.push(match c {
                    '(' => Token::Open,
                    ')' => Token::Close,
                    ',' => Token::Comma,
                    '>' => Token::Gt,
                    _ => Token::Lt,
                });
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || "!=(),<>".contains(c) {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                tokens.push(match word.as_str() {
                    "in" => Token::In,
                    "notin" => Token::NotIn,
                    _ => Token::Ident(word),
                });
            }
        }
    }
    tokens
}

fn describe(t: Option<&Token>) -> String {
    match t {
        None => "EOS".into(),
        Some(Token::Ident(s)) => s.clone(),
        Some(t) => format!("{t:?}"),
    }
}

/// Parses `labelSelector`; errors are 400 BadRequest, as upstream answers.
pub fn parse_labels(input: &str) -> Result<LabelSelector, Status> {
    let bad = |msg: String| Status::bad_request(format!("unable to parse requirement: {msg}"));
    let tokens = lex(input);
    let mut it = tokens.iter().peekable();
    let mut reqs = Vec::new();
    if tokens.is_empty() {
        return Ok(LabelSelector::default());
    }
    loop {
        let negated = it.next_if_eq(&&Token::Not).is_some();
        let key = match it.next() {
            Some(Token::Ident(k)) => k.clone(),
            t => {
                return Err(bad(format!(
                    "found '{}', expected: identifier",
                    describe(t)
                )));
            }
        };
        validate_key(&key).map_err(bad)?;
        if negated {
            reqs.push(Requirement {
                key,
                op: Op::DoesNotExist,
                values: vec![],
            });
        } else {
            let op = match it.peek() {
                None | Some(Token::Comma) => Op::Exists,
                Some(Token::Equals) => Op::Equals,
                Some(Token::NotEquals) => Op::NotEquals,
                Some(Token::In) => Op::In,
                Some(Token::NotIn) => Op::NotIn,
                Some(Token::Gt) => Op::GreaterThan,
                Some(Token::Lt) => Op::LessThan,
                Some(t) => {
                    return Err(bad(format!(
                        "found '{}', expected: in, notin, =, ==, !=, gt, lt",
                        describe(Some(t))
                    )));
                }
            };
            let values = match op {
                Op::Exists => vec![],
                Op::In | Op::NotIn => {
                    it.next();
                    if it.next() != Some(&Token::Open) {
                        return Err(bad("found '', expected: '('".into()));
                    }
                    let mut values = Vec::new();
                    loop {
                        match it.next() {
                            Some(Token::Ident(v)) => values.push(v.clone()),
                            // `in (,a)`, `in (a,,b)` and `in (,)` hold an empty value.
                            Some(Token::Comma) => {
                                values.push(String::new());
                                continue;
                            }
                            // `in ()` and, after a comma, `in (a,)` too, as upstream.
                            Some(Token::Close) => {
                                values.push(String::new());
                                break;
                            }
                            t => {
                                return Err(bad(format!(
                                    "found '{}', expected: ',', ')' or identifier",
                                    describe(t)
                                )));
                            }
                        }
                        match it.next() {
                            Some(Token::Comma) => {}
                            Some(Token::Close) => break,
                            t => {
                                return Err(bad(format!(
                                    "found '{}', expected: ',' or ')'",
                                    describe(t)
                                )));
                            }
                        }
                    }
                    // A set, as upstream's parser collects it: sorted, each value once.
                    values.sort();
                    values.dedup();
                    values
                }
                _ => {
                    it.next();
                    match it.peek() {
                        Some(Token::Ident(v)) => {
                            let v = v.clone();
                            it.next();
                            vec![v]
                        }
                        // `a=` selects an empty value.
                        None | Some(Token::Comma) => vec![String::new()],
                        t => {
                            return Err(bad(format!(
                                "found '{}', expected: identifier",
                                describe(t.copied())
                            )));
                        }
                    }
                }
            };
            for v in &values {
                if matches!(op, Op::GreaterThan | Op::LessThan) {
                    if v.parse::<i64>().is_err() {
                        return Err(bad(format!(
                            "for 'Gt', 'Lt' operators, the value must be an integer: {v:?}"
                        )));
                    }
                } else {
                    validate_value(v).map_err(|m| bad(format!("values[0][{key}]: {m}")))?;
                }
            }
            reqs.push(Requirement { key, op, values });
        }
        match it.next() {
            None => break,
            Some(Token::Comma) => continue,
            t => {
                return Err(bad(format!(
                    "found '{}', expected: ',' or 'end of string'",
                    describe(t)
                )));
            }
        }
    }
    reqs.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(LabelSelector(reqs))
}

/// A label key: a qualified name, in upstream's words when it is not one.
pub fn validate_key(key: &str) -> Result<(), String> {
    match crate::validation::qualified_name(key).first() {
        Some(why) => Err(format!("Invalid value: {key:?}: {why}")),
        None => Ok(()),
    }
}

/// A label value: empty, or a qualified name part of at most 63 characters.
pub fn validate_value(value: &str) -> Result<(), String> {
    match crate::validation::label_value(value).first() {
        Some(why) => Err(format!("Invalid value: {value:?}: {why}")),
        None => Ok(()),
    }
}

/// Whether a metav1.LabelSelector (JSON) selects an object with `labels` (a JSON map).
pub fn label_selector_matches(selector: &Value, labels: &Value) -> bool {
    let label = |k: &str| labels.get(k).and_then(Value::as_str);
    let exact = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| label(k) == v.as_str());
    exact
        && selector["matchExpressions"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|e| {
                let key = e["key"].as_str().unwrap_or_default();
                let within = || {
                    e["values"]
                        .as_array()
                        .is_some_and(|vs| vs.iter().any(|v| v.as_str() == label(key)))
                };
                match e["operator"].as_str() {
                    Some("In") => within(),
                    Some("NotIn") => !within(),
                    Some("Exists") => label(key).is_some(),
                    Some("DoesNotExist") => label(key).is_none(),
                    _ => false,
                }
            })
}

pub(crate) fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase() | b[0].is_ascii_digit()
        && b[b.len() - 1].is_ascii_lowercase() | b[b.len() - 1].is_ascii_digit()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

impl LabelSelector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| {
            let value = labels.get(&r.key);
            match r.op {
                Op::Equals | Op::In => value.is_some_and(|v| r.values.contains(v)),
                Op::NotEquals | Op::NotIn => value.is_none_or(|v| !r.values.contains(v)),
                Op::Exists => value.is_some(),
                Op::DoesNotExist => value.is_none(),
                Op::GreaterThan | Op::LessThan => {
                    let (Some(have), Some(want)) = (
                        value.and_then(|v| v.parse::<i64>().ok()),
                        r.values.first().and_then(|v| v.parse::<i64>().ok()),
                    ) else {
                        return false;
                    };
                    if r.op == Op::GreaterThan {
                        have > want
                    } else {
                        have < want
                    }
                }
            }
        })
    }

    /// Matches an object's `metadata.labels`.
    pub fn matches_object(&self, object: &Value) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let labels: BTreeMap<String, String> = object["metadata"]["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        self.matches(&labels)
    }
}

/// A parsed field selector: `field=value`, `field==value` or `field!=value`, comma-separated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector(pub Vec<(String, bool, String)>);

/// Parses a resource's `fieldSelector`: the fields of its built-in list, or those its CRD
/// declares in `selectableFields`.
pub fn parse_fields_for(resource: &crate::Resource, input: &str) -> Result<FieldSelector, Status> {
    match crate::registry::custom::definition(resource) {
        Some(d) => {
            let fields: Vec<&str> = d.selectable_fields.iter().map(String::as_str).collect();
            parse_fields(input, &fields)
        }
        None => parse_fields(input, selectable_fields(resource.group, resource.plural)),
    }
}

/// Parses `fieldSelector`; `supported` lists the fields the resource can select on besides
/// `metadata.name` and `metadata.namespace`. `resource` names the resource in errors.
pub fn parse_fields(input: &str, supported: &[&str]) -> Result<FieldSelector, Status> {
    let mut terms = Vec::new();
    for term in split_unescaped(input, ',') {
        if term.is_empty() {
            continue;
        }
        let (field, equal, value) = if let Some((f, v)) = split_once_unescaped(&term, "!=") {
            (f, false, v)
        } else if let Some((f, v)) = split_once_unescaped(&term, "==") {
            (f, true, v)
        } else if let Some((f, v)) = split_once_unescaped(&term, "=") {
            (f, true, v)
        } else {
            return Err(Status::bad_request(format!(
                "invalid selector: '{input}'; can't understand '{term}'"
            )));
        };
        let field = field.trim().to_string();
        if field != "metadata.name"
            && field != "metadata.namespace"
            && !supported.contains(&field.as_str())
        {
            return Err(Status::bad_request(format!(
                "field label not supported: {field}"
            )));
        }
        terms.push((field, equal, unescape(&value)));
    }
    Ok(FieldSelector(terms))
}

fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            if let Some(p) = parts.last_mut() {
                p.push('\\');
                p.push(c);
            }
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            parts.push(String::new());
        } else if let Some(p) = parts.last_mut() {
            p.push(c);
        }
    }
    parts
}

fn split_once_unescaped(s: &str, op: &str) -> Option<(String, String)> {
    // By characters: a byte index inside a multi-byte character is no place to split (and
    // slicing there panicked on any non-ASCII selector).
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        if c == '\\' {
            chars.next();
            continue;
        }
        if s[i..].starts_with(op) {
            return Some((s[..i].to_string(), s[i + op.len()..].to_string()));
        }
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if !escaped && c == '\\' {
            escaped = true;
        } else {
            out.push(c);
            escaped = false;
        }
    }
    out
}

impl FieldSelector {
    /// Matches an object whose selectable fields `field` resolves.
    pub fn matches(&self, field: impl Fn(&str) -> String) -> bool {
        self.0
            .iter()
            .all(|(name, equal, value)| (field(name) == *value) == *equal)
    }
}

/// The fields a resource can be selected on besides `metadata.name` and `metadata.namespace`,
/// as upstream registers them per type.
pub fn selectable_fields(group: &str, plural: &str) -> &'static [&'static str] {
    match (group, plural) {
        ("", "pods") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        ("", "events") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ("", "secrets") => &["type"],
        ("", "namespaces") => &["status.phase"],
        ("", "nodes") => &["spec.unschedulable"],
        ("", "replicationcontrollers") | ("apps", "replicasets") => &["status.replicas"],
        ("batch", "jobs") => &["status.successful"],
        ("", "services") => &["spec.clusterIP", "spec.type"],
        ("certificates.k8s.io", "certificatesigningrequests") => &["spec.signerName"],
        _ => &[],
    }
}

/// The string a field selector compares: the value at the dotted path, "" when absent.
pub fn field_value(object: &Value, field: &str) -> String {
    let path = if field == "source" {
        "source.component"
    } else {
        field
    };
    let mut v = object;
    for part in path.split('.') {
        v = &v[part];
    }
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null if field == "spec.unschedulable" || field == "spec.hostNetwork" => {
            "false".into()
        }
        _ => String::new(),
    }
}

/// A workload's `spec.selector` as a selector string (`a=b,c=d`): Deployments and ReplicaSets
/// hold a LabelSelector (its `matchLabels` are used), ReplicationControllers and Services a map.
pub fn spec_selector_string(object: &Value) -> String {
    let sel = &object["spec"]["selector"];
    let labels = sel.get("matchLabels").unwrap_or(sel);
    let mut terms: Vec<String> = labels
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some(format!("{k}={}", v.as_str()?)))
                .collect()
        })
        .unwrap_or_default();
    terms.sort();
    terms.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_the_full_grammar() {
        // Cases from upstream's selector_test.go (TestSelectorParse / TestSelectorMatches).
        for ok in [
            "",
            "x=a,y=b,z=c",
            "x!=a,y=b",
            "x=,z= ",
            "x= ,z= ",
            "!x",
            "x>1",
            "x>1,z<5",
            "x in (a)",
            "x in (a,)",
            "x in ()",
            "x notin (a,b)",
            "x in (a, b , c)",
            "a.b/c-d=e",
            "x==a",
            "x , y",
        ] {
            assert!(
                parse_labels(ok).is_ok(),
                "{ok:?} should parse: {:?}",
                parse_labels(ok)
            );
        }
        for bad in [
            "x=a||y=b",
            "x==a==b",
            "!x=a",
            "x<a",
            "x in a",
            "x in (a",
            "x=(",
            "x notin",
            "x===a",
            "x=a b",
            "-x=a",
            "x=-a",
            "x=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ] {
            let err = parse_labels(bad).expect_err(bad);
            assert_eq!((err.code, err.reason), (400, "BadRequest"), "{bad}");
        }
    }

    #[test]
    fn matches_as_upstream() {
        let l = labels(&[("x", "y"), ("n", "3")]);
        let m = |s: &str| parse_labels(s).unwrap().matches(&l);
        assert!(m("") && m("x=y") && m("x==y") && m("x!=z") && m("z!=y") && m("x") && m("!z"));
        assert!(m("x in (y,z)") && m("x notin (z)") && m("z notin (z)") && m("n>2") && m("n<4"));
        assert!(
            !m("x=z") && !m("x!=y") && !m("z") && !m("!x") && !m("x in (z)") && !m("x notin (y)")
        );
        assert!(!m("n>3") && !m("x>1") && !m("z<1") && !m("x=y,z"));
        assert!(parse_labels("x=").unwrap().matches(&labels(&[("x", "")])));
    }

    /// Found by the property tests (tests/properties.rs): upstream's `(a,)` holds the empty
    /// value too, and a set's values come back sorted, each once.
    #[test]
    fn a_trailing_comma_in_a_set_holds_the_empty_value() {
        let empty = labels(&[("x", "")]);
        assert!(parse_labels("x in (a,)").unwrap().matches(&empty));
        assert!(!parse_labels("x notin (a,)").unwrap().matches(&empty));
        assert!(!parse_labels("x in (a,b)").unwrap().matches(&empty));
        let parsed = parse_labels("x in (b,a,b,)").unwrap();
        assert_eq!(parsed.0[0].values, ["", "a", "b"]);
    }

    /// Found by the property tests: a non-ASCII field selector panicked (a byte index inside a
    /// character); it is parsed, or refused, like any other.
    #[test]
    fn non_ascii_field_selectors_do_not_panic() {
        let parsed = parse_fields("metadata.name=é\\,ü", &[]).unwrap();
        assert_eq!(parsed.0, [("metadata.name".into(), true, "é,ü".into())]);
        assert!(parse_fields("\u{a3c}", &[]).is_err());
        assert!(parse_fields("é!=x", &[]).is_err());
    }

    #[test]
    fn field_selectors() {
        let s = parse_fields("metadata.name=a,status.phase!=Running", &["status.phase"]).unwrap();
        assert!(s.matches(|f| if f == "metadata.name" {
            "a".into()
        } else {
            "Pending".into()
        }));
        assert!(!s.matches(|f| if f == "metadata.name" {
            "a".into()
        } else {
            "Running".into()
        }));
        let err = parse_fields("spec.foo=x", &[]).unwrap_err();
        assert_eq!(err.message, "field label not supported: spec.foo");
        let escaped = parse_fields(r"metadata.name=a\,b", &[]).unwrap();
        assert_eq!(escaped.0[0].2, "a,b");
        assert!(parse_fields("metadata.name", &[]).is_err());
    }
}
