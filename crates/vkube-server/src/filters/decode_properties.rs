//! Property tests (issue 17, hostile input) of the request decoders a body meets before any
//! handler: JSON ([`crate::rest::parse_body`], with its depth limit), YAML
//! ([`crate::yaml::to_json`] and the lenient reader of `fieldValidation`), and protobuf
//! ([`vkube_api::protobuf::decode_body`]), then the re-encoding to JSON the router does. The
//! invariant: no panic and no stack overflow (which would abort this process), only a value or
//! a 400. Cases: the `cases` of each block below, unless `PROPTEST_CASES` is set.

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::rest::parse_body;
use crate::yaml;

/// What the router does with a decoded YAML or protobuf body: JSON bytes, read again.
fn reencoded(value: &Value) {
    let bytes = serde_json::to_vec(value).expect("a decoded value encodes");
    match parse_body(&Bytes::from(bytes)) {
        Ok(again) => assert_eq!(&again, value),
        // Deeper than the JSON limit (a protobuf body can nest deeper): refused, not read.
        Err(status) => assert_eq!(status.code, 400, "{}", status.message),
    }
}

fn json_decodes_or_400(body: &[u8]) {
    match parse_body(&Bytes::copy_from_slice(body)) {
        Ok(v) => reencoded(&v),
        Err(status) => assert_eq!(status.code, 400, "{}", status.message),
    }
}

fn yaml_decodes_or_errs(text: &str) {
    if let Ok(v) = yaml::to_json(text) {
        reencoded(&v);
    }
    let _ = yaml::to_json_lenient(text);
}

fn protobuf_decodes_or_errs(body: &[u8]) {
    if let Ok(v) = vkube_api::protobuf::decode_body(body) {
        reencoded(&v);
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        "\\PC{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map("[a-z$.-]{0,6}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A Pod or a ConfigMap, the objects most bodies are.
fn object() -> impl Strategy<Value = Value> {
    (json_value(), "[a-z0-9-]{0,12}", any::<bool>()).prop_map(|(spec, name, pod)| {
        if pod {
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"a": "b"}}, "spec": spec})
        } else {
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": spec})
        }
    })
}

/// `bytes` with a few bytes replaced, removed or inserted, or cut short.
fn mutated(bytes: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = bytes.len().max(1);
    prop::collection::vec((0..len, any::<u8>(), 0u8..4), 1..6).prop_map(move |edits| {
        let mut b = bytes.clone();
        for (at, byte, how) in edits {
            let at = at.min(b.len());
            match how {
                0 if at < b.len() => b[at] = byte,
                1 if at < b.len() => {
                    b.remove(at);
                }
                2 => b.insert(at, byte),
                _ => b.truncate(at),
            }
        }
        b
    })
}

/// Nesting `depth` levels deep, of arrays, objects or both, closed or left open.
fn deep() -> impl Strategy<Value = String> {
    (0usize..20_000, 0u8..3, any::<bool>()).prop_map(|(depth, shape, closed)| {
        let (open, close) = match shape {
            0 => ("[", "]"),
            1 => ("{\"a\":", "}"),
            _ => ("[{\"a\":", "}]"),
        };
        let mut s = open.repeat(depth);
        s.push('1');
        if closed {
            s.push_str(&close.repeat(depth));
        }
        s
    })
}

/// YAML shaped to reach the YAML reader's corners: block and flow nesting, anchors and
/// aliases (a "billion laughs"), tags, merge keys, multiple documents.
fn yamlish() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,200}",
        "([a-z]{1,3}: ?(\\[|\\{|&a |\\*a|!!binary |!!str |<<: |- |\\||>|---\n|'|\")?[a-z0-9 ]{0,4}\n {0,6}){0,20}",
        (1usize..400).prop_map(|d| (0..d).map(|i| format!("{}k:\n", " ".repeat(i))).collect()),
        (1usize..5_000).prop_map(|d| "- ".repeat(d) + "x"),
        (1usize..9).prop_map(|n| {
            // a: &a [x, x], b: &b [*a, *a], … : each level doubles what the aliases expand to.
            let mut s = String::from("a0: &a0 [lol, lol, lol, lol]\n");
            for i in 1..=n {
                let p = i - 1;
                s.push_str(&format!(
                    "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
                ));
            }
            s
        }),
    ]
}

/// A protobuf field: `tag` with a length-delimited payload.
fn field(tag: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![(tag << 3) | 2];
    let mut n = payload.len();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(payload);
    out
}

/// A `runtime.Unknown` envelope of `kind` around `raw`.
fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let mut type_meta = field(1, api_version.as_bytes());
    type_meta.extend(field(2, kind.as_bytes()));
    let mut body = vkube_api::protobuf::MAGIC.to_vec();
    body.extend(field(1, &type_meta));
    body.extend(field(2, raw));
    body
}

const KINDS: &[(&str, &str)] = &[
    ("v1", "Pod"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("apps/v1", "Deployment"),
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
    ("v1", "Nothing"),
];

/// Protobuf bodies: a known kind's envelope around random fields, fields nested thousands deep
/// (a CRD's schema nests itself), or any bytes after the magic.
fn protobufish() -> impl Strategy<Value = Vec<u8>> {
    let kind = prop::sample::select(KINDS);
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512).prop_map(|b| {
            let mut body = vkube_api::protobuf::MAGIC.to_vec();
            body.extend(b);
            body
        }),
        (kind.clone(), prop::collection::vec(any::<u8>(), 0..512))
            .prop_map(|((v, k), raw)| envelope(v, k, &raw)),
        (
            kind.clone(),
            prop::collection::vec((1u8..16, prop::collection::vec(any::<u8>(), 0..24)), 0..12)
        )
            .prop_map(|((v, k), fields)| {
                let raw: Vec<u8> = fields.iter().flat_map(|(t, p)| field(*t, p)).collect();
                envelope(v, k, &raw)
            }),
        (kind, 1usize..3_000, 1u8..16).prop_map(|((v, k), depth, tag)| {
            let mut inner = field(1, b"x");
            for _ in 0..depth {
                inner = field(tag, &inner);
            }
            envelope(v, k, &inner)
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_bytes_as_json_decode_or_400(body in prop::collection::vec(any::<u8>(), 0..256)) {
        json_decodes_or_400(&body);
    }

    #[test]
    fn a_mutated_object_decodes_or_400(body in object()
        .prop_map(|o| serde_json::to_vec(&o).unwrap())
        .prop_flat_map(mutated))
    {
        json_decodes_or_400(&body);
    }

    #[test]
    fn an_object_decodes_to_itself(obj in object()) {
        let body = Bytes::from(serde_json::to_vec(&obj).unwrap());
        prop_assert_eq!(parse_body(&body).unwrap(), obj);
    }


    #[test]
    fn an_object_in_yaml_decodes_to_itself(obj in object()) {
        let text = serde_saphyr::to_string(&obj).unwrap();
        prop_assert_eq!(yaml::to_json(&text).unwrap(), obj);
    }

    #[test]
    fn protobuf_bodies_decode_or_err(body in protobufish()) {
        protobuf_decodes_or_errs(&body);
    }
}

proptest! {
    // A "billion laughs" costs the reader a second (in a debug build) before its node budget
    // stops it.
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn yaml_bodies_decode_or_err(text in yamlish()) {
        yaml_decodes_or_errs(&text);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// JSON past the depth limit is refused with Go's words, as JSON, as YAML (a flow-style
    /// superset) and inside a protobuf envelope's raw bytes.
    #[test]
    fn deep_nesting_is_refused_not_recursed_into(text in deep()) {
        let depth = text.bytes().filter(|b| *b == b'[' || *b == b'{').count();
        match parse_body(&Bytes::from(text.clone())) {
            Ok(v) => reencoded(&v),
            Err(status) => {
                prop_assert_eq!(status.code, 400);
                if depth > crate::filters::limits::MAX_JSON_DEPTH {
                    prop_assert!(status.message.ends_with("exceeded max depth"), "{}", status.message);
                }
            }
        }
        yaml_decodes_or_errs(&text);
        protobuf_decodes_or_errs(&envelope("v1", "Pod", text.as_bytes()));
    }
}
