//! The structural schema of a CRD version (`schema.openAPIV3Schema`), and what the server does with
//! it on every write, as apiextensions-apiserver does: prune unknown fields, apply defaults, and
//! validate with kube-openapi's checks and messages.

mod formats;
mod prune;
mod validate;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde_json::Value;

pub use prune::{apply_defaults, prune};
pub use validate::validate;

/// One node of a schema: the structural part (type, properties, items, additionalProperties,
/// extensions) and the value validations, including the `allOf`/`anyOf`/`oneOf`/`not` junctors
/// (whose nodes use the same type, with only value validations set).
#[derive(Debug, Clone, Default)]
pub struct Schema {
    /// `type`; empty when unset (int-or-string and preserve-unknown-fields nodes).
    pub type_: String,
    pub format: String,
    pub nullable: bool,
    pub default: Option<Value>,
    pub properties: BTreeMap<String, Schema>,
    pub items: Option<Box<Schema>>,
    pub additional_properties: Option<Additional>,
    pub preserve_unknown_fields: bool,
    pub embedded_resource: bool,
    pub int_or_string: bool,
    pub list_type: Option<String>,
    pub list_map_keys: Vec<String>,
    pub map_type: Option<String>,
    /// `x-kubernetes-validations`, evaluated by [`crate::crd::rules`].
    pub validations: Vec<Rule>,

    pub maximum: Option<f64>,
    pub exclusive_maximum: bool,
    pub minimum: Option<f64>,
    pub exclusive_minimum: bool,
    pub max_length: Option<i64>,
    pub min_length: Option<i64>,
    pub pattern: Option<Pattern>,
    pub max_items: Option<i64>,
    pub min_items: Option<i64>,
    pub unique_items: bool,
    pub multiple_of: Option<f64>,
    pub enum_values: Option<Vec<Value>>,
    pub max_properties: Option<i64>,
    pub min_properties: Option<i64>,
    pub required: Vec<String>,
    pub all_of: Vec<Schema>,
    pub any_of: Vec<Schema>,
    pub one_of: Vec<Schema>,
    pub not: Option<Box<Schema>>,
}

/// `additionalProperties`: a bare boolean, or a schema for every value of a map.
#[derive(Debug, Clone)]
pub enum Additional {
    Bool(bool),
    Schema(Box<Schema>),
}

/// A `pattern`, compiled once (Go's RE2 and the regex crate agree on the syntax CRDs use).
#[derive(Debug, Clone)]
pub struct Pattern {
    pub source: String,
    pub regex: regex::Regex,
}

/// One `x-kubernetes-validations` entry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rule {
    pub rule: String,
    pub message: String,
    pub message_expression: String,
    pub reason: Option<String>,
    pub field_path: String,
    pub optional_old_self: Option<bool>,
}

impl Schema {
    /// Parses a version's `schema.openAPIV3Schema`. Only shape errors are reported here (a field
    /// of the wrong JSON type, a bad pattern): whether the schema is structural is the CRD
    /// validation's business ([`crate::crd::definition`]).
    pub fn parse(v: &Value) -> Result<Schema, String> {
        parse_at(v, "openAPIV3Schema")
    }

    /// The schema of `additionalProperties`, when it is one.
    pub fn additional_schema(&self) -> Option<&Schema> {
        match &self.additional_properties {
            Some(Additional::Schema(s)) => Some(s),
            _ => None,
        }
    }

    /// The schema that applies to the value under `key` of an object of this schema, and whether
    /// the key is known at all (a property, or any key under `additionalProperties`).
    pub(crate) fn child(&self, key: &str) -> (bool, Option<&Schema>) {
        if let Some(p) = self.properties.get(key) {
            (true, Some(p))
        } else {
            match &self.additional_properties {
                Some(Additional::Schema(s)) => (true, Some(s)),
                Some(Additional::Bool(_)) => (true, None),
                None => (false, None),
            }
        }
    }
}

fn parse_at(v: &Value, path: &str) -> Result<Schema, String> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("{path}: must be an object"))?;
    let mut s = Schema::default();
    for (key, val) in obj {
        let at = format!("{path}.{key}");
        match key.as_str() {
            "type" => s.type_ = string(val, &at)?,
            "format" => s.format = string(val, &at)?,
            "nullable" => s.nullable = boolean(val, &at)?,
            "default" => s.default = Some(val.clone()),
            "properties" => {
                let props = val
                    .as_object()
                    .ok_or_else(|| format!("{at}: must be an object"))?;
                for (name, p) in props {
                    s.properties
                        .insert(name.clone(), parse_at(p, &format!("{at}[{name}]"))?);
                }
            }
            "items" => {
                if val.is_array() {
                    return Err(format!(
                        "{at}: items must be a schema object and not an array"
                    ));
                }
                s.items = Some(Box::new(parse_at(val, &at)?));
            }
            "additionalProperties" => {
                s.additional_properties = Some(match val {
                    Value::Bool(b) => Additional::Bool(*b),
                    other => Additional::Schema(Box::new(parse_at(other, &at)?)),
                });
            }
            "x-kubernetes-preserve-unknown-fields" => {
                s.preserve_unknown_fields = boolean(val, &at)?
            }
            "x-kubernetes-embedded-resource" => s.embedded_resource = boolean(val, &at)?,
            "x-kubernetes-int-or-string" => s.int_or_string = boolean(val, &at)?,
            "x-kubernetes-list-type" => s.list_type = Some(string(val, &at)?),
            "x-kubernetes-map-type" => s.map_type = Some(string(val, &at)?),
            "x-kubernetes-list-map-keys" => s.list_map_keys = strings(val, &at)?,
            "x-kubernetes-validations" => {
                let list = val
                    .as_array()
                    .ok_or_else(|| format!("{at}: must be a list"))?;
                for (i, r) in list.iter().enumerate() {
                    s.validations.push(rule(r, &format!("{at}[{i}]"))?);
                }
            }
            "maximum" => s.maximum = Some(float(val, &at)?),
            "minimum" => s.minimum = Some(float(val, &at)?),
            "exclusiveMaximum" => s.exclusive_maximum = boolean(val, &at)?,
            "exclusiveMinimum" => s.exclusive_minimum = boolean(val, &at)?,
            "multipleOf" => s.multiple_of = Some(float(val, &at)?),
            "maxLength" => s.max_length = Some(int(val, &at)?),
            "minLength" => s.min_length = Some(int(val, &at)?),
            "maxItems" => s.max_items = Some(int(val, &at)?),
            "minItems" => s.min_items = Some(int(val, &at)?),
            "maxProperties" => s.max_properties = Some(int(val, &at)?),
            "minProperties" => s.min_properties = Some(int(val, &at)?),
            "uniqueItems" => s.unique_items = boolean(val, &at)?,
            "required" => s.required = strings(val, &at)?,
            "enum" => {
                let list = val
                    .as_array()
                    .ok_or_else(|| format!("{at}: must be a list"))?;
                s.enum_values = Some(list.clone());
            }
            "pattern" => {
                let source = string(val, &at)?;
                let regex = regex::Regex::new(&source).map_err(|e| {
                    format!("{at}: must be a valid regular expression, but isn't: {e}")
                })?;
                s.pattern = Some(Pattern { source, regex });
            }
            "allOf" | "anyOf" | "oneOf" => {
                let list = val
                    .as_array()
                    .ok_or_else(|| format!("{at}: must be a list"))?;
                let parsed = list
                    .iter()
                    .enumerate()
                    .map(|(i, x)| parse_at(x, &format!("{at}[{i}]")))
                    .collect::<Result<Vec<_>, _>>()?;
                match key.as_str() {
                    "allOf" => s.all_of = parsed,
                    "anyOf" => s.any_of = parsed,
                    _ => s.one_of = parsed,
                }
            }
            "not" => s.not = Some(Box::new(parse_at(val, &at)?)),
            // Documentation and fields the CRD validation refuses; nothing to enforce here.
            _ => {}
        }
    }
    Ok(s)
}

fn string(v: &Value, at: &str) -> Result<String, String> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("{at}: must be a string"))
}

fn boolean(v: &Value, at: &str) -> Result<bool, String> {
    v.as_bool()
        .ok_or_else(|| format!("{at}: must be a boolean"))
}

fn float(v: &Value, at: &str) -> Result<f64, String> {
    v.as_f64().ok_or_else(|| format!("{at}: must be a number"))
}

fn int(v: &Value, at: &str) -> Result<i64, String> {
    v.as_i64()
        .ok_or_else(|| format!("{at}: must be an integer"))
}

fn strings(v: &Value, at: &str) -> Result<Vec<String>, String> {
    v.as_array()
        .and_then(|l| l.iter().map(|x| x.as_str().map(str::to_string)).collect())
        .ok_or_else(|| format!("{at}: must be a list of strings"))
}

fn rule(v: &Value, at: &str) -> Result<Rule, String> {
    let text = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    if !v.is_object() {
        return Err(format!("{at}: must be an object"));
    }
    Ok(Rule {
        rule: text("rule"),
        message: text("message"),
        message_expression: text("messageExpression"),
        reason: v["reason"].as_str().map(str::to_string),
        field_path: text("fieldPath"),
        optional_old_self: v["optionalOldSelf"].as_bool(),
    })
}

/// kube-openapi's name for a property under `path` ("" at the root).
pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}
