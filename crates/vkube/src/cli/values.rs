//! A virtual cluster's values: the chart's defaults (`chart/values.yaml`, vcluster.yaml's schema),
//! then each `-f` file, then each `--set`, merged as Helm merges them.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value};

/// The chart's `values.yaml`, embedded so that `vkube create` needs no chart on disk.
pub const DEFAULTS: &str = include_str!("../../../../chart/values.yaml");

/// The defaults as JSON.
pub fn defaults() -> Value {
    parse_yaml(DEFAULTS, "chart/values.yaml")
        .expect("chart/values.yaml parses (a unit test checks)")
}

/// A YAML document as JSON; an empty document is `{}`.
pub fn parse_yaml(text: &str, what: &str) -> Result<Value> {
    if text.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    let value: Value =
        serde_saphyr::from_str(text).with_context(|| format!("{what} is not valid YAML"))?;
    match value {
        Value::Object(_) => Ok(value),
        Value::Null => Ok(Value::Object(Map::new())),
        _ => bail!("{what}: values must be a YAML mapping at the top level"),
    }
}

/// YAML as kubectl writes it: plain or quoted scalars, never folded, so that line-based readers
/// of kubeconfigs and manifests see each value on its key's line.
pub fn to_yaml(value: &impl serde::Serialize) -> Result<String> {
    let options = serde_saphyr::ser_options! { prefer_block_scalars: false };
    serde_saphyr::to_string_with_options(value, options)
        .map_err(|e| anyhow::anyhow!("as YAML: {e}"))
}

/// The user's values: every `-f` file in order, then every `--set` (Helm's order). This is what
/// the release records as its `config`.
pub fn user_values(files: &[impl AsRef<Path>], sets: &[String]) -> Result<Value> {
    let mut values = Value::Object(Map::new());
    for file in files {
        let file = file.as_ref();
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading values file {}", file.display()))?;
        merge(&mut values, parse_yaml(&text, &file.display().to_string())?);
    }
    for set in sets {
        apply_set(&mut values, set)?;
    }
    Ok(values)
}

/// Helm's coalescing: maps merge key by key, anything else (lists included) replaces; a `null`
/// deletes the key.
pub fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(base), Value::Object(over)) => {
            for (key, value) in over {
                match (base.get_mut(&key), value) {
                    (_, Value::Null) => {
                        base.remove(&key);
                    }
                    (Some(existing @ Value::Object(_)), value @ Value::Object(_)) => {
                        merge(existing, value)
                    }
                    (_, value) => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, over) => *base = over,
    }
}

/// One `--set a.b=c,d[0]=e`: Helm's strvals syntax. Values are typed as Helm types them: `true`,
/// `false`, `null`, integers; anything else is a string. `\,` and `\.` escape.
pub fn apply_set(values: &mut Value, set: &str) -> Result<()> {
    for pair in split_unescaped(set, ',') {
        let Some((key, raw)) = split_once_unescaped(&pair, '=') else {
            bail!("--set {set:?}: {pair:?} has no '=' (want key.path=value)");
        };
        let path = parse_path(&key).with_context(|| format!("--set {set:?}"))?;
        let value = typed(&unescape(&raw));
        set_path(values, &path, value).with_context(|| format!("--set {set:?}"))?;
    }
    Ok(())
}

#[derive(Debug, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

fn parse_path(key: &str) -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    for part in split_unescaped(key, '.') {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part.as_str(), ""),
        };
        if name.is_empty() {
            bail!("empty key in {key:?}");
        }
        steps.push(Step::Key(unescape(name)));
        while let Some(stripped) = rest.strip_prefix('[') {
            let end = stripped
                .find(']')
                .with_context(|| format!("unclosed '[' in {key:?}"))?;
            let index = stripped[..end]
                .parse()
                .with_context(|| format!("list index {:?} in {key:?}", &stripped[..end]))?;
            steps.push(Step::Index(index));
            rest = &stripped[end + 1..];
        }
        if !rest.is_empty() {
            bail!("unexpected {rest:?} in {key:?}");
        }
    }
    Ok(steps)
}

fn set_path(at: &mut Value, path: &[Step], value: Value) -> Result<()> {
    let Some((step, rest)) = path.split_first() else {
        *at = value;
        return Ok(());
    };
    let next_is_list = matches!(rest.first(), Some(Step::Index(_)));
    let empty = || {
        if next_is_list {
            Value::Array(Vec::new())
        } else {
            Value::Object(Map::new())
        }
    };
    match step {
        Step::Key(key) => {
            if !at.is_object() {
                *at = Value::Object(Map::new());
            }
            let map = at.as_object_mut().expect("made an object");
            let child = map.entry(key.clone()).or_insert_with(empty);
            if rest.is_empty() {
                *child = value;
                Ok(())
            } else {
                set_path(child, rest, value)
            }
        }
        Step::Index(i) => {
            if !at.is_array() {
                *at = Value::Array(Vec::new());
            }
            let list = at.as_array_mut().expect("made a list");
            if *i > 10_000 {
                bail!("list index {i} is too large");
            }
            while list.len() <= *i {
                list.push(Value::Null);
            }
            if rest.is_empty() {
                list[*i] = value;
                Ok(())
            } else {
                if list[*i].is_null() {
                    list[*i] = empty();
                }
                set_path(&mut list[*i], rest, value)
            }
        }
    }
}

fn typed(raw: &str) -> Value {
    match raw {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        "null" => Value::Null,
        _ => match raw.parse::<i64>() {
            // Helm keeps a leading zero as a string ("0123"), as strvals does.
            Ok(n) if !(raw.len() > 1 && raw.starts_with('0')) => Value::from(n),
            _ => Value::String(raw.to_string()),
        },
    }
}

fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let last = parts.last_mut().expect("one part");
                last.push('\\');
                if let Some(next) = chars.next() {
                    last.push(next);
                }
            }
            c if c == sep => parts.push(String::new()),
            c => parts.last_mut().expect("one part").push(c),
        }
    }
    parts
}

fn split_once_unescaped(s: &str, sep: char) -> Option<(String, String)> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            c if c == sep && !escaped => return Some((s[..i].to_string(), s[i + 1..].to_string())),
            _ => escaped = false,
        }
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The value at a dotted path, if any.
pub fn get<'a>(values: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(values, |v, key| v.get(key))
}

/// Reading typed values with the key in the error, as Helm's schema check names it.
pub struct Reader<'a>(pub &'a Value);

impl Reader<'_> {
    pub fn bool(&self, path: &str) -> Result<bool> {
        match get(self.0, path) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => bail!("{path}: expected a boolean, got {other}"),
        }
    }

    pub fn string(&self, path: &str) -> Result<String> {
        match get(self.0, path) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            Some(Value::Bool(b)) => Ok(b.to_string()),
            Some(other) => bail!("{path}: expected a string, got {other}"),
        }
    }

    pub fn int(&self, path: &str) -> Result<i64> {
        match get(self.0, path) {
            Some(Value::Number(n)) if n.is_i64() => Ok(n.as_i64().expect("is_i64")),
            Some(Value::Number(n)) if n.as_f64().is_some_and(|f| f.fract() == 0.0) => {
                Ok(n.as_f64().expect("a number") as i64)
            }
            None | Some(Value::Null) => bail!("{path}: missing (expected an integer)"),
            Some(other) => bail!("{path}: expected an integer, got {other}"),
        }
    }

    /// A list or a map as it is (for pass-through keys: env, volumes, labels, resources).
    pub fn raw(&self, path: &str) -> Value {
        get(self.0, path).cloned().unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_parse_and_name_the_embedded_sqlite_default() {
        let d = defaults();
        assert_eq!(
            get(&d, "controlPlane.statefulSet.highAvailability.replicas"),
            Some(&json!(1))
        );
    }

    #[test]
    fn sets_are_typed_and_nested_as_helm_does() {
        let mut v = json!({});
        apply_set(&mut v, "a.b=3,a.c=true,d=x\\,y,e[1].f=0123,g=null").unwrap();
        assert_eq!(
            v,
            json!({"a": {"b": 3, "c": true}, "d": "x,y", "e": [null, {"f": "0123"}], "g": null})
        );
        let err = apply_set(&mut v, "novalue").unwrap_err().to_string();
        assert!(err.contains("has no '='"), "{err}");
    }

    #[test]
    fn merge_replaces_lists_and_deletes_on_null() {
        let mut base = json!({"a": {"b": [1, 2], "c": 1, "d": 2}});
        merge(&mut base, json!({"a": {"b": [3], "d": null}}));
        assert_eq!(base, json!({"a": {"b": [3], "c": 1}}));
    }

    #[test]
    fn reader_names_the_key_of_a_wrong_type() {
        let v = json!({"a": {"n": "three"}});
        let err = Reader(&v).int("a.n").unwrap_err().to_string();
        assert!(err.starts_with("a.n: expected an integer"), "{err}");
    }
}
