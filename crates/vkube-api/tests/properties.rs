//! Property tests (issue 17, hostile input): the label and field selector parsers and the
//! strategic merge patch engine never panic on arbitrary input, and keep the properties that
//! follow from their specifications — a rendered selector parses back to itself and selects what
//! its requirements say; a strategic merge patch without lists or directives is a JSON merge
//! patch (RFC 7386); an empty patch changes nothing; a patch applied twice is applied once.
//! Cases per property: `PROPTEST_CASES` (proptest's default, 256, unless set).

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use vkube_api::selector::{LabelSelector, Op, Requirement, parse_fields, parse_labels};
use vkube_api::strategic;

/// Input that looks like a selector often enough to reach deep into the parser.
fn selectorish() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z0-9./_!=(), <>\\\\é-]{0,60}",
        "(!?[a-z]{1,3}( ?(=|==|!=|>|<| in | notin ) ?\\(?[a-z0-9,]{0,6}\\)?)?,?){0,5}",
    ]
}

/// A label key: an optional DNS-subdomain prefix and a name; never a keyword of the grammar.
fn key() -> impl Strategy<Value = String> {
    (
        proptest::option::of("[a-z]([a-z0-9-]{0,6}[a-z0-9])?(\\.[a-z]{1,4}){0,2}"),
        "[A-Za-z0-9]([A-Za-z0-9_.-]{0,10}[A-Za-z0-9])?",
    )
        .prop_map(|(prefix, name)| match prefix {
            Some(p) => format!("{p}/{name}"),
            None => name,
        })
        .prop_filter("keywords", |k| k != "in" && k != "notin")
}

/// A label value, possibly empty.
fn value() -> impl Strategy<Value = String> {
    "([A-Za-z0-9]([A-Za-z0-9_.-]{0,10}[A-Za-z0-9])?)?"
        .prop_filter("keywords", |v| v != "in" && v != "notin")
}

fn requirement() -> impl Strategy<Value = Requirement> {
    let set = || proptest::collection::vec(value(), 1..4);
    let number = any::<i32>().prop_map(|n| n.to_string());
    prop_oneof![
        key().prop_map(|key| (key, Op::Exists, vec![])),
        key().prop_map(|key| (key, Op::DoesNotExist, vec![])),
        (key(), value()).prop_map(|(key, v)| (key, Op::Equals, vec![v])),
        (key(), value()).prop_map(|(key, v)| (key, Op::NotEquals, vec![v])),
        (key(), set()).prop_map(|(key, vs)| (key, Op::In, vs)),
        (key(), set()).prop_map(|(key, vs)| (key, Op::NotIn, vs)),
        (key(), number.clone()).prop_map(|(key, n)| (key, Op::GreaterThan, vec![n])),
        (key(), number).prop_map(|(key, n)| (key, Op::LessThan, vec![n])),
    ]
    .prop_map(|(key, op, values)| Requirement { key, op, values })
}

fn selector() -> impl Strategy<Value = LabelSelector> {
    proptest::collection::vec(requirement(), 0..5).prop_map(|mut reqs| {
        // The parser orders requirements by key (stably), and a set's values (sorted, each
        // once), as upstream does.
        reqs.sort_by(|a, b| a.key.cmp(&b.key));
        LabelSelector(reqs)
    })
}

/// What the parser returns for a selector rendered from `selector`: sets of values sorted and
/// deduplicated, as upstream's parser collects them.
fn normalized(selector: &LabelSelector) -> LabelSelector {
    let mut selector = selector.clone();
    for r in &mut selector.0 {
        if matches!(r.op, Op::In | Op::NotIn) {
            r.values.sort();
            r.values.dedup();
        }
    }
    selector
}

/// A selector's text, with optional spaces where the grammar allows them.
fn render(selector: &LabelSelector, spaced: bool) -> String {
    let sp = if spaced { " " } else { "" };
    selector
        .0
        .iter()
        .map(|r| {
            let k = &r.key;
            match r.op {
                Op::Exists => k.clone(),
                Op::DoesNotExist => format!("!{sp}{k}"),
                Op::Equals if spaced => format!("{k} == {}", r.values[0]),
                Op::Equals => format!("{k}={}", r.values[0]),
                Op::NotEquals => format!("{k}{sp}!={sp}{}", r.values[0]),
                Op::In => format!("{k} in{sp}({})", r.values.join(",")),
                Op::NotIn => format!("{k} notin{sp}({})", r.values.join(",")),
                Op::GreaterThan => format!("{k}{sp}>{sp}{}", r.values[0]),
                Op::LessThan => format!("{k}{sp}<{sp}{}", r.values[0]),
            }
        })
        .collect::<Vec<_>>()
        .join(if spaced { " , " } else { "," })
}

/// What upstream's `Requirement.Matches` says, written from its documentation.
fn model_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    selector.0.iter().all(|r| {
        let got = labels.get(&r.key);
        let number = |v: &String| v.parse::<i64>().ok();
        match r.op {
            Op::Exists => got.is_some(),
            Op::DoesNotExist => got.is_none(),
            Op::Equals | Op::In => got.is_some_and(|g| r.values.contains(g)),
            Op::NotEquals | Op::NotIn => got.is_none_or(|g| !r.values.contains(g)),
            Op::GreaterThan => got
                .and_then(number)
                .is_some_and(|g| g > number(&r.values[0]).unwrap()),
            Op::LessThan => got
                .and_then(number)
                .is_some_and(|g| g < number(&r.values[0]).unwrap()),
        }
    })
}

fn labels() -> impl Strategy<Value = BTreeMap<String, String>> {
    let value = prop_oneof![value(), any::<i16>().prop_map(|n| n.to_string())];
    proptest::collection::btree_map(key(), value, 0..5)
}

/// Arbitrary JSON, bounded in depth and size.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(|n| json!(n)),
        "[a-z$/]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    "[a-z]{1,6}",
                    Just("$patch".to_string()),
                    Just("$retainKeys".to_string()),
                    Just("$setElementOrder/containers".to_string()),
                    Just("$deleteFromPrimitiveList/finalizers".to_string()),
                    Just("name".to_string()),
                    Just("containers".to_string()),
                    Just("metadata".to_string()),
                    Just("spec".to_string()),
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Value> {
    proptest::collection::btree_map("[a-z]{1,6}|spec|metadata|data", json_value(), 0..5)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

/// RFC 7386, the reference a strategic merge patch without lists or directives must equal.
fn merge_patch(target: &Value, patch: &Value) -> Value {
    let Value::Object(patch) = patch else {
        return patch.clone();
    };
    let mut out = match target {
        Value::Object(t) => t.clone(),
        _ => Map::new(),
    };
    for (k, v) in patch {
        if v.is_null() {
            out.remove(k);
        } else {
            let merged = merge_patch(out.get(k).unwrap_or(&Value::Null), v);
            out.insert(k.clone(), merged);
        }
    }
    Value::Object(out)
}

/// ConfigMap-shaped documents: maps of strings, no lists, no directives.
fn string_map(nullable: bool) -> impl Strategy<Value = Value> {
    let v = if nullable {
        prop_oneof![
            3 => "[a-z0-9]{0,5}".prop_map(Value::String),
            1 => Just(Value::Null),
        ]
        .boxed()
    } else {
        "[a-z0-9]{0,5}".prop_map(Value::String).boxed()
    };
    proptest::collection::btree_map("[a-c]{1,2}", v, 0..4)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

fn config_map(nullable: bool) -> impl Strategy<Value = Value> {
    (
        string_map(nullable),
        string_map(nullable),
        string_map(nullable),
    )
        .prop_map(|(data, labels, annotations)| {
            json!({"metadata": {"name": "c", "labels": labels, "annotations": annotations},
                   "data": data})
        })
}

/// Pods whose containers (a list merged by `name`) and their env (merged by `name`) vary.
fn pod() -> impl Strategy<Value = Value> {
    let env = proptest::collection::btree_map("[A-C]", "[a-z]{0,3}", 0..3).prop_map(|m| {
        m.into_iter()
            .map(|(name, value)| json!({"name": name, "value": value}))
            .collect::<Vec<_>>()
    });
    let container = ("[a-c]", "[a-z]{1,4}", env)
        .prop_map(|(name, image, env)| json!({"name": name, "image": image, "env": env}));
    proptest::collection::btree_map("[a-c]", container, 0..3).prop_map(|containers| {
        let containers: Vec<Value> = containers.into_values().collect();
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
               "spec": {"containers": containers}})
    })
}

proptest! {
    #[test]
    fn label_selector_parser_never_panics(input in selectorish()) {
        let _ = parse_labels(&input);
    }

    #[test]
    fn field_selector_parser_never_panics(input in selectorish()) {
        let _ = parse_fields(&input, &["spec.nodeName", "status.phase"]);
    }

    #[test]
    fn a_rendered_label_selector_parses_back_to_itself(
        selector in selector(),
        spaced in any::<bool>(),
    ) {
        let text = render(&selector, spaced);
        let parsed = parse_labels(&text)
            .map_err(|s| TestCaseError::fail(format!("{text:?}: {}", s.message)))?;
        prop_assert_eq!(parsed, normalized(&selector), "{:?}", text);
    }

    #[test]
    fn a_label_selector_selects_what_its_requirements_say(
        selector in selector(),
        labels in labels(),
    ) {
        let parsed = parse_labels(&render(&selector, false)).unwrap();
        prop_assert_eq!(parsed.matches(&labels), model_matches(&selector, &labels));
    }

    #[test]
    fn field_selectors_parse_back_what_was_escaped(
        terms in proptest::collection::vec(
            (prop_oneof![Just("metadata.name"), Just("spec.nodeName")], any::<bool>(),
             any::<String>()),
            1..4,
        ),
    ) {
        // Upstream's fields.EscapeValue.
        let escape = |v: &str| {
            let mut out = String::new();
            for c in v.chars() {
                if matches!(c, '\\' | ',' | '=') {
                    out.push('\\');
                }
                out.push(c);
            }
            out
        };
        let text = terms
            .iter()
            .map(|(f, eq, v)| format!("{f}{}{}", if *eq { "=" } else { "!=" }, escape(v)))
            .collect::<Vec<_>>()
            .join(",");
        let parsed = parse_fields(&text, &["spec.nodeName"])
            .map_err(|s| TestCaseError::fail(format!("{text:?}: {}", s.message)))?;
        let want: Vec<(String, bool, String)> = terms
            .into_iter()
            .map(|(f, eq, v)| (f.to_string(), eq, v))
            .collect();
        prop_assert_eq!(parsed.0, want, "{:?}", text);
    }

    #[test]
    fn strategic_merge_never_panics(
        original in json_object(),
        patch in json_value(),
        kind in prop_oneof![
            Just(("v1", "Pod")), Just(("v1", "ConfigMap")), Just(("apps/v1", "Deployment")),
            Just(("v1", "Service")), Just(("v1", "NoSuchKind")),
        ],
    ) {
        let _ = strategic::apply(&original, &patch, kind.0, kind.1);
    }

    #[test]
    fn strategic_merge_without_lists_is_a_json_merge_patch(
        original in config_map(false),
        patch in config_map(true),
    ) {
        let merged = strategic::apply(&original, &patch, "v1", "ConfigMap").unwrap();
        prop_assert_eq!(merged, merge_patch(&original, &patch));
    }

    #[test]
    fn an_empty_strategic_patch_changes_nothing(original in prop_oneof![config_map(false), pod()]) {
        let kind = original["kind"].as_str().unwrap_or("ConfigMap").to_string();
        let merged = strategic::apply(&original, &json!({}), "v1", &kind).unwrap();
        prop_assert_eq!(merged, original);
    }

    #[test]
    fn a_strategic_patch_applied_twice_is_applied_once(original in pod(), patch in pod()) {
        let once = strategic::apply(&original, &patch, "v1", "Pod").unwrap();
        let twice = strategic::apply(&once, &patch, "v1", "Pod").unwrap();
        prop_assert_eq!(twice, once);
    }
}
