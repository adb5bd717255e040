//! Differences between two normalized answers, field by field, and the allow-list
//! (`difftest/allow.yaml`) that accepts some of them with a reason.

use serde::Deserialize;
use serde_json::Value;

/// One field that differs: `code`, `warnings`, `body.metadata.labels.app`, `body.items[2]`.
/// `None` is a field one side does not have.
pub(crate) struct Diff {
    pub(crate) path: String,
    pub(crate) upstream: Option<Value>,
    pub(crate) vkube: Option<Value>,
}

pub(crate) fn diff(
    path: &str,
    upstream: Option<&Value>,
    vkube: Option<&Value>,
    out: &mut Vec<Diff>,
) {
    match (upstream, vkube) {
        // Objects of different kinds (a Status for an object): one difference, not one per field.
        (Some(Value::Object(a)), Some(Value::Object(b)))
            if a.get("kind").is_some_and(Value::is_string)
                && b.get("kind").is_some_and(Value::is_string)
                && a.get("kind") != b.get("kind") =>
        {
            out.push(Diff {
                path: path.to_string(),
                upstream: upstream.cloned(),
                vkube: vkube.cloned(),
            });
        }
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                diff(&format!("{path}.{k}"), a.get(k), b.get(k), out);
            }
        }
        (Some(Value::Array(a)), Some(Value::Array(b))) => {
            for i in 0..a.len().max(b.len()) {
                diff(&format!("{path}[{i}]"), a.get(i), b.get(i), out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(Diff {
            path: path.to_string(),
            upstream: a.cloned(),
            vkube: b.cloned(),
        }),
    }
}

/// The allow-list: `intended` differences are vkube's choice and documented as such;
/// `known_gaps` are missing features or bugs not fixed yet, kept here so the suite passes while
/// saying so.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct AllowList {
    #[serde(default)]
    pub(crate) intended: Vec<Allow>,
    #[serde(default)]
    pub(crate) known_gaps: Vec<Allow>,
}

/// Differences at `fields` of `steps` (`file/step`), both glob patterns: `*` matches within one
/// path segment (no `.`, `/`), `**` across segments. With `upstream` or `vkube`, only where that
/// side has this value (`<absent>`: no such field; `<null>`: JSON null).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Allow {
    pub(crate) steps: Vec<String>,
    pub(crate) fields: Vec<String>,
    #[serde(default)]
    upstream: Option<Value>,
    #[serde(default)]
    vkube: Option<Value>,
    pub(crate) reason: String,
}

fn value_is(expected: &Option<Value>, got: &Option<Value>) -> bool {
    match expected.as_ref().map(|e| (e, e.as_str())) {
        None => true,
        Some((_, Some("<absent>"))) => got.is_none(),
        Some((_, Some("<null>"))) => got == &Some(Value::Null),
        Some((e, _)) => got.as_ref() == Some(e),
    }
}

impl Allow {
    pub(crate) fn accepts(&self, step: &str, d: &Diff) -> bool {
        self.steps.iter().any(|p| glob(p, step))
            && self.fields.iter().any(|p| glob(p, &d.path))
            && value_is(&self.upstream, &d.upstream)
            && value_is(&self.vkube, &d.vkube)
    }
}

pub(crate) fn glob(pattern: &str, text: &str) -> bool {
    glob_bytes(pattern.as_bytes(), text.as_bytes())
}

fn glob_bytes(p: &[u8], t: &[u8]) -> bool {
    if let Some(rest) = p.strip_prefix(b"**") {
        return (0..=t.len()).any(|i| glob_bytes(rest, &t[i..]));
    }
    match p.first() {
        None => t.is_empty(),
        Some(b'*') => (0..=t.len())
            .take_while(|&i| i == 0 || !matches!(t[i - 1], b'.' | b'/'))
            .any(|i| glob_bytes(&p[1..], &t[i..])),
        Some(&c) => t.first() == Some(&c) && glob_bytes(&p[1..], &t[1..]),
    }
}

#[test]
fn globs() {
    assert!(glob(
        "**managedFields**",
        "body.metadata.managedFields[0].time"
    ));
    assert!(glob("ssa/*", "ssa/apply-conflict"));
    assert!(!glob("ssa/*", "ssa/x/y"));
    assert!(glob("body.*.name", "body.metadata.name"));
    assert!(!glob("body.*", "body.metadata.name"));
    assert!(glob("*", "code"));
    assert!(glob("body.items[*].metadata", "body.items[3].metadata"));
}
