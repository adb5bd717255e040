//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`), turned into the JSON
//! object the server works on. kubectl ≥ 1.32 and client-go programs send typed objects this way.
//!
//! The wire shape comes from `k8s.schema`, a table generated from upstream's Go types by
//! `scripts/gen-protobuf-schema`: field numbers and types, and the JSON side (name, omitempty,
//! pointer, inline). The JSON side matters because Go writes every non-pointer field on the wire,
//! zero or not; the JSON upstream would produce omits the zero ones marked omitempty, and vkube
//! must store what upstream would store. The table is parsed on first use, so a server that never
//! sees protobuf never pays for it.

mod wire;

use std::collections::HashMap;
use std::sync::OnceLock;

use base64::Engine;
use serde_json::{Map, Value};
use wire::{Fields, varints};

/// The prefix of every Kubernetes protobuf body: "k8s" and a zero byte.
pub const MAGIC: &[u8] = b"k8s\0";
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

const META: &str = "k8s.io.apimachinery.pkg.apis.meta.v1";

#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    #[error("provided input is not a Kubernetes protobuf message (missing the k8s\\x00 prefix)")]
    NotProtobuf,
    #[error("the protobuf message ends in the middle of a field")]
    Truncated,
    #[error("malformed protobuf: {0}")]
    Malformed(&'static str),
    #[error("no kind {kind:?} is registered for version {api_version:?}")]
    UnknownKind { api_version: String, kind: String },
    #[error("field {field:?}: {why}")]
    Field { field: String, why: String },
}

/// Decodes a whole protobuf request body (the `runtime.Unknown` envelope) into a JSON object with
/// `apiVersion` and `kind` set from the envelope.
pub fn decode_body(body: &[u8]) -> Result<Value, ProtobufError> {
    let rest = body.strip_prefix(MAGIC).ok_or(ProtobufError::NotProtobuf)?;
    decode_unknown(rest)
}

/// A `runtime.Unknown`: type meta, then the raw bytes of the message of that kind.
fn decode_unknown(data: &[u8]) -> Result<Value, ProtobufError> {
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for field in Fields::new(data) {
        match field? {
            (1, wire::Value::Bytes(type_meta)) => {
                for f in Fields::new(type_meta) {
                    match f? {
                        (1, wire::Value::Bytes(v)) => api_version = utf8(v, "apiVersion")?,
                        (2, wire::Value::Bytes(v)) => kind = utf8(v, "kind")?,
                        _ => {}
                    }
                }
            }
            (2, wire::Value::Bytes(v)) => raw = v,
            (3 | 4, wire::Value::Bytes(v)) if !v.is_empty() => {
                return Err(ProtobufError::Field {
                    field: "contentEncoding".into(),
                    why: "an encoded or non-protobuf payload inside the envelope is not supported"
                        .into(),
                });
            }
            _ => {}
        }
    }
    let schema = schema();
    let message =
        schema
            .message_for(&api_version, &kind)
            .ok_or_else(|| ProtobufError::UnknownKind {
                api_version: api_version.clone(),
                kind: kind.clone(),
            })?;
    let mut object = Map::new();
    object.insert("apiVersion".into(), Value::String(api_version));
    object.insert("kind".into(), Value::String(kind));
    if let Value::Object(fields) = schema.decode(message, raw)? {
        object.extend(fields);
    }
    Ok(Value::Object(object))
}

fn utf8(bytes: &[u8], field: &str) -> Result<String, ProtobufError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| ProtobufError::Field {
        field: field.into(),
        why: "not valid UTF-8".into(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Type {
    String,
    Int32,
    Int64,
    Bool,
    Bytes,
    Double,
    Message(&'static str),
}

#[derive(Debug)]
struct Field {
    json: &'static str,
    ty: Type,
    map: bool,
    repeated: bool,
    pointer: bool,
    omitempty: bool,
    inline: bool,
    /// The strategic-merge-patch strategy (`merge`, `replace`, `retainKeys`, `merge,retainKeys`).
    patch_strategy: &'static str,
    patch_merge_key: &'static str,
}

#[derive(Debug, Default)]
struct Message {
    /// A named Go slice type (`ExtraValue`, `Verbs`): its JSON is the list itself.
    array: bool,
    fields: HashMap<u32, Field>,
}

struct Schema {
    messages: HashMap<String, Message>,
    /// (group, version) → proto package.
    packages: HashMap<(&'static str, &'static str), &'static str>,
}

fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| Schema::parse(include_str!("k8s.schema")))
}

impl Schema {
    fn parse(text: &'static str) -> Schema {
        let mut schema = Schema {
            messages: HashMap::new(),
            packages: HashMap::new(),
        };
        let (mut package, mut current) = ("", String::new());
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let parts: Vec<&'static str> = line.split(' ').collect();
            match parts.as_slice() {
                ["package", pkg, group, version] => {
                    package = pkg;
                    if *group != "-" {
                        let group = if *group == "core" { "" } else { group };
                        schema.packages.insert((group, version), pkg);
                    }
                }
                ["message", name, rest @ ..] => {
                    current = format!("{package}.{name}");
                    schema.messages.entry(current.clone()).or_default().array =
                        rest.first() == Some(&"array");
                }
                [number, json, ty, flags, patch @ ..] => {
                    let (patch_strategy, patch_merge_key) = match patch.first() {
                        Some(p) => p.split_once(':').unwrap_or((p, "")),
                        None => ("", ""),
                    };
                    let (map, ty) = match ty.strip_prefix("map:") {
                        Some(value) => (true, value),
                        None => (false, *ty),
                    };
                    let ty = match ty {
                        "string" => Type::String,
                        "int32" => Type::Int32,
                        "int64" => Type::Int64,
                        "bool" => Type::Bool,
                        "bytes" => Type::Bytes,
                        "double" => Type::Double,
                        other => Type::Message(other),
                    };
                    let field = Field {
                        json,
                        ty,
                        map,
                        repeated: flags.contains('r'),
                        pointer: flags.contains('p'),
                        omitempty: flags.contains('o'),
                        inline: flags.contains('i'),
                        patch_strategy,
                        patch_merge_key,
                    };
                    let number = number.parse().expect("k8s.schema: a field number");
                    let message = schema
                        .messages
                        .get_mut(&current)
                        .expect("k8s.schema: a message");
                    message.fields.insert(number, field);
                }
                _ => panic!("k8s.schema: unexpected line {line:?}"),
            }
        }
        schema
    }

    fn message_for(&'static self, api_version: &str, kind: &str) -> Option<&'static str> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let in_package = |pkg: &str| {
            let name = format!("{pkg}.{kind}");
            self.messages.get_key_value(&name).map(|(k, _)| k.as_str())
        };
        self.packages
            .get(&(group, version))
            .and_then(|pkg| in_package(pkg))
            .or_else(|| in_package(META))
    }

    /// The field of `message` whose JSON name is `json`, looking through inline fields.
    fn json_field(&self, message: &str, json: &str) -> Option<&Field> {
        let m = self.messages.get(message)?;
        m.fields.values().find(|f| f.json == json).or_else(|| {
            m.fields
                .values()
                .filter(|f| f.inline)
                .find_map(|f| match f.ty {
                    Type::Message(inner) => self.json_field(inner, json),
                    _ => None,
                })
        })
    }

    /// Decodes one message to JSON as Go's encoding/json would write the decoded Go value.
    fn decode(&self, name: &str, data: &[u8]) -> Result<Value, ProtobufError> {
        if let Some(special) = self.special(name, data)? {
            return Ok(special);
        }
        let message = self.messages.get(name).ok_or(ProtobufError::Malformed(
            "a reference to a message type this server does not know",
        ))?;
        let mut values: Vec<(u32, Value)> = Vec::new();
        for field in Fields::new(data) {
            let (number, raw) = field?;
            let Some(spec) = message.fields.get(&number) else {
                continue; // unknown fields are skipped, as Go's generated decoders do
            };
            let decoded = self.value(spec, raw).map_err(|e| match e {
                ProtobufError::Field { field, why } => ProtobufError::Field {
                    field: format!("{}.{field}", spec.json),
                    why,
                },
                other => ProtobufError::Field {
                    field: spec.json.to_string(),
                    why: other.to_string(),
                },
            })?;
            match values.iter_mut().find(|(n, _)| *n == number) {
                Some((_, Value::Array(items))) if spec.repeated => items.extend(as_items(decoded)),
                Some((_, Value::Object(entries))) if spec.map => {
                    if let Value::Object(more) = decoded {
                        entries.extend(more);
                    }
                }
                Some((_, slot)) => *slot = decoded,
                None if spec.repeated => values.push((number, Value::Array(as_items(decoded)))),
                None => values.push((number, decoded)),
            }
        }
        if message.array {
            return Ok(values
                .pop()
                .map(|(_, v)| v)
                .unwrap_or(Value::Array(Vec::new())));
        }
        let mut object = Map::new();
        values.sort_by_key(|(n, _)| *n);
        for (number, value) in values {
            let spec = &message.fields[&number];
            if spec.inline {
                if let Value::Object(inner) = value {
                    object.extend(inner);
                }
                continue;
            }
            // omitempty never drops a struct in Go: a zero metav1.Time is written as null.
            let scalar = !matches!(spec.ty, Type::Message(_)) || spec.map || spec.repeated;
            if spec.json == "-" || (spec.omitempty && !spec.pointer && scalar && is_zero(&value)) {
                continue;
            }
            object.insert(spec.json.to_string(), value);
        }
        Ok(Value::Object(object))
    }

    fn value(&self, spec: &Field, raw: wire::Value<'_>) -> Result<Value, ProtobufError> {
        if spec.map {
            let wire::Value::Bytes(entry) = raw else {
                return Err(ProtobufError::Malformed(
                    "a map entry that is not a message",
                ));
            };
            let (mut key, mut value) = (String::new(), None);
            for f in Fields::new(entry) {
                match f? {
                    (1, wire::Value::Bytes(k)) => key = utf8(k, "key")?,
                    (2, v) => value = Some(self.scalar_or_message(spec.ty, v)?),
                    _ => {}
                }
            }
            let value = match value {
                Some(v) => v,
                None => self.scalar_or_message(spec.ty, wire::Value::Bytes(&[]))?,
            };
            return Ok(Value::Object(Map::from_iter([(key, value)])));
        }
        if spec.repeated && matches!(spec.ty, Type::Int32 | Type::Int64 | Type::Bool) {
            let items = varints(raw)?
                .into_iter()
                .map(|v| scalar(spec.ty, v))
                .collect();
            return Ok(Value::Array(items));
        }
        self.scalar_or_message(spec.ty, raw)
    }

    fn scalar_or_message(&self, ty: Type, raw: wire::Value<'_>) -> Result<Value, ProtobufError> {
        match (ty, raw) {
            (Type::String, wire::Value::Bytes(b)) => Ok(Value::String(utf8(b, "string")?)),
            (Type::Bytes, wire::Value::Bytes(b)) => Ok(Value::String(
                base64::engine::general_purpose::STANDARD.encode(b),
            )),
            (Type::Message(name), wire::Value::Bytes(b)) => self.decode(name, b),
            (Type::Int32 | Type::Int64 | Type::Bool, wire::Value::Varint(v)) => Ok(scalar(ty, v)),
            (Type::Double, wire::Value::Fixed64(bits)) => Ok(double(f64::from_bits(bits))),
            _ => Err(ProtobufError::Malformed(
                "a wire type that does not match the field's type",
            )),
        }
    }

    /// The apimachinery types whose JSON is not their protobuf structure.
    fn special(&self, name: &str, data: &[u8]) -> Result<Option<Value>, ProtobufError> {
        if let Some(short) = name.strip_prefix(EXTENSIONS) {
            return self.extensions_special(short, data);
        }
        let Some(short) = name.strip_prefix("k8s.io.apimachinery.pkg.") else {
            return Ok(None);
        };
        let ints = |data| -> Result<HashMap<u32, wire::Value<'_>>, ProtobufError> {
            Fields::new(data).collect()
        };
        let value = match short {
            "apis.meta.v1.Time" | "apis.meta.v1.MicroTime" => {
                if data.is_empty() {
                    return Ok(Some(Value::Null));
                }
                let f = ints(data)?;
                let seconds = int_field(&f, 1) as i64;
                let nanos = int_field(&f, 2) as i64;
                Value::String(timestamp(seconds, nanos, short.ends_with("MicroTime"))?)
            }
            "apis.meta.v1.Duration" => {
                Value::String(go_duration(int_field(&ints(data)?, 1) as i64))
            }
            "api.resource.Quantity" | "api.resource.QuantityValue" => match ints(data)?.get(&1) {
                Some(wire::Value::Bytes(b)) => Value::String(utf8(b, "quantity")?),
                _ => Value::String("0".into()),
            },
            "util.intstr.IntOrString" => {
                let f = ints(data)?;
                if int_field(&f, 1) == 1 {
                    match f.get(&3) {
                        Some(wire::Value::Bytes(b)) => Value::String(utf8(b, "strVal")?),
                        _ => Value::String(String::new()),
                    }
                } else {
                    Value::from(int_field(&f, 2) as i32)
                }
            }
            "runtime.RawExtension" | "apis.meta.v1.FieldsV1" => {
                let raw = match ints(data)?.get(&1) {
                    Some(wire::Value::Bytes(b)) => *b,
                    _ => &[],
                };
                embedded(raw)?
            }
            "runtime.Unknown" => decode_unknown(data)?,
            _ => return Ok(None),
        };
        Ok(Some(value))
    }
}

impl Schema {
    /// apiextensions' types with a JSON form of their own: `JSON` (any value, as raw JSON), and
    /// the schema-or-something unions, which are the schema when it is set.
    fn extensions_special(&self, short: &str, data: &[u8]) -> Result<Option<Value>, ProtobufError> {
        let schema = || format!("{EXTENSIONS}JSONSchemaProps");
        let fields = || Fields::new(data).collect::<Result<Vec<_>, _>>();
        let value = match short {
            "JSON" => match fields()?.into_iter().find(|(n, _)| *n == 1) {
                Some((_, wire::Value::Bytes(raw))) => embedded(raw)?,
                _ => Value::Null,
            },
            "JSONSchemaPropsOrArray" | "JSONSchemaPropsOrBool" | "JSONSchemaPropsOrStringArray" => {
                let schema_field = if short == "JSONSchemaPropsOrBool" {
                    2
                } else {
                    1
                };
                let mut one = None;
                let mut many = Vec::new();
                let mut allows = false;
                for (n, v) in fields()? {
                    match (n, v) {
                        (n, wire::Value::Bytes(b)) if n == schema_field => {
                            one = Some(self.decode(&schema(), b)?);
                        }
                        (2, wire::Value::Bytes(b)) if short == "JSONSchemaPropsOrArray" => {
                            many.push(self.decode(&schema(), b)?);
                        }
                        (2, wire::Value::Bytes(b)) => {
                            many.push(Value::String(utf8(b, "property")?))
                        }
                        (1, wire::Value::Varint(v)) => allows = v != 0,
                        _ => {}
                    }
                }
                match (one, short) {
                    (Some(s), _) => s,
                    (None, "JSONSchemaPropsOrBool") => Value::Bool(allows),
                    (None, _) => Value::Array(many),
                }
            }
            _ => return Ok(None),
        };
        Ok(Some(value))
    }
}

const EXTENSIONS: &str = "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.";

/// A protobuf double as JSON: integral values as integers, as Go's encoder writes them.
fn double(f: f64) -> Value {
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        Value::from(f as i64)
    } else {
        serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
    }
}

/// Embedded objects (RawExtension, FieldsV1) carry JSON, or a nested protobuf envelope.
fn embedded(raw: &[u8]) -> Result<Value, ProtobufError> {
    if raw.is_empty() {
        return Ok(Value::Null);
    }
    if raw.starts_with(MAGIC) {
        return decode_body(raw);
    }
    serde_json::from_slice(raw).map_err(|e| ProtobufError::Field {
        field: "raw".into(),
        why: format!("embedded object is not JSON: {e}"),
    })
}

fn int_field(fields: &HashMap<u32, wire::Value<'_>>, n: u32) -> u64 {
    match fields.get(&n) {
        Some(wire::Value::Varint(v)) => *v,
        _ => 0,
    }
}

fn scalar(ty: Type, v: u64) -> Value {
    match ty {
        Type::Int32 => Value::from(v as i64 as i32),
        Type::Bool => Value::Bool(v != 0),
        _ => Value::from(v as i64),
    }
}

fn as_items(v: Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items,
        other => vec![other],
    }
}

/// Go's omitempty: false, 0, "" (and empty collections, which never reach the wire).
fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null | Value::Object(_) => false,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
    }
}

/// metav1.Time as JSON: RFC 3339 in UTC, whole seconds; MicroTime keeps six fractional digits.
fn timestamp(seconds: i64, nanos: i64, micro: bool) -> Result<String, ProtobufError> {
    let t = time::OffsetDateTime::from_unix_timestamp(seconds)
        .map_err(|_| ProtobufError::Malformed("a timestamp out of range"))?;
    let base = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    Ok(if micro {
        format!("{base}.{:06}Z", nanos.clamp(0, 999_999_999) / 1000)
    } else {
        format!("{base}Z")
    })
}

/// Go's time.Duration.String(): "1h2m3.5s", "150ms", "0s".
fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    if n < 1_000_000_000 {
        let (unit, div) = match n {
            0..1_000 => ("ns", 1),
            1_000..1_000_000 => ("µs", 1_000),
            _ => ("ms", 1_000_000),
        };
        return format!("{sign}{}{unit}", fraction(n, div));
    }
    let (h, rest) = (n / 3_600_000_000_000, n % 3_600_000_000_000);
    let (m, s) = (rest / 60_000_000_000, rest % 60_000_000_000);
    let seconds = format!("{}s", fraction(s, 1_000_000_000));
    match (h, m) {
        (0, 0) => format!("{sign}{seconds}"),
        (0, m) => format!("{sign}{m}m{seconds}"),
        (h, m) => format!("{sign}{h}h{m}m{seconds}"),
    }
}

fn fraction(n: u64, div: u64) -> String {
    let (whole, frac) = (n / div, n % div);
    if frac == 0 {
        return whole.to_string();
    }
    let digits = div.ilog10() as usize;
    let frac = format!("{frac:0digits$}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

/// What strategic merge patch needs to know of one field of a built-in type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PatchField {
    /// The message (Go struct) of the field's values, for objects, lists of objects and map values.
    pub message: Option<&'static str>,
    pub list: bool,
    pub map: bool,
    pub strategy: &'static str,
    pub merge_key: &'static str,
}

/// The message of a built-in kind (`apps/v1`, `Deployment`), if vkube knows its wire shape.
pub fn kind_message(api_version: &str, kind: &str) -> Option<&'static str> {
    schema().message_for(api_version, kind)
}

/// The strategic-merge-patch view of field `json` of `message`.
pub fn patch_field(message: &str, json: &str) -> Option<PatchField> {
    let f = schema().json_field(message, json)?;
    let message = match f.ty {
        Type::Message(m) => Some(m),
        _ => None,
    };
    Some(PatchField {
        message,
        list: f.repeated,
        map: f.map,
        strategy: f.patch_strategy,
        merge_key: f.patch_merge_key,
    })
}

#[cfg(test)]
mod tests;
