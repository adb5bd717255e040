//! Bodies built the way Go's generated marshalers write them: every non-pointer field on the wire,
//! zero or not, and pointer fields only when set.

use super::wire::encode::{bytes, int, string};
use super::*;
use serde_json::json;

fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let mut type_meta = Vec::new();
    string(&mut type_meta, 1, api_version);
    string(&mut type_meta, 2, kind);
    let mut unknown = Vec::new();
    bytes(&mut unknown, 1, &type_meta);
    bytes(&mut unknown, 2, raw);
    string(&mut unknown, 3, "");
    string(&mut unknown, 4, "");
    let mut body = MAGIC.to_vec();
    body.extend(unknown);
    body
}

/// ObjectMeta as Go writes it: all strings (empty too), generation 0, an empty creationTimestamp.
fn meta(name: &str, labels: &[(&str, &str)]) -> Vec<u8> {
    let mut m = Vec::new();
    string(&mut m, 1, name);
    for n in [2, 3, 4, 5, 6] {
        string(&mut m, n, "");
    }
    int(&mut m, 7, 0);
    bytes(&mut m, 8, &[]);
    for (k, v) in labels {
        let mut entry = Vec::new();
        string(&mut entry, 1, k);
        string(&mut entry, 2, v);
        bytes(&mut m, 11, &entry);
    }
    m
}

fn entry(key: &str, value: &[u8]) -> Vec<u8> {
    let mut e = Vec::new();
    string(&mut e, 1, key);
    bytes(&mut e, 2, value);
    e
}

#[test]
fn a_configmap_decodes_to_the_json_upstream_would_store() {
    let mut cm = Vec::new();
    bytes(&mut cm, 1, &meta("cm", &[("app", "web")]));
    bytes(&mut cm, 2, &entry("a", b"1"));
    bytes(&mut cm, 2, &entry("b", b""));
    bytes(&mut cm, 3, &entry("bin", &[0, 1, 2]));
    let v = decode_body(&envelope("v1", "ConfigMap", &cm)).unwrap();
    assert_eq!(
        v,
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "cm", "creationTimestamp": null, "labels": {"app": "web"}},
            "data": {"a": "1", "b": ""},
            "binaryData": {"bin": "AAEC"},
        })
    );
}

#[test]
fn a_deployment_keeps_pointer_zeros_inline_sources_and_special_types() {
    let mut port = Vec::new();
    string(&mut port, 1, "");
    int(&mut port, 2, 0);
    int(&mut port, 3, 80);
    string(&mut port, 4, "TCP");
    let mut quantity = Vec::new();
    string(&mut quantity, 1, "500m");
    let mut resources = Vec::new();
    bytes(&mut resources, 1, &entry("cpu", &quantity));
    let mut container = Vec::new();
    string(&mut container, 1, "web");
    string(&mut container, 2, "nginx:1.27");
    string(&mut container, 3, "sh");
    string(&mut container, 3, "-c");
    bytes(&mut container, 6, &port);
    bytes(&mut container, 8, &resources);
    let mut empty_dir = Vec::new();
    string(&mut empty_dir, 1, "");
    let mut source = Vec::new();
    bytes(&mut source, 2, &empty_dir);
    let mut volume = Vec::new();
    string(&mut volume, 1, "scratch");
    bytes(&mut volume, 2, &source);
    let mut pod_spec = Vec::new();
    bytes(&mut pod_spec, 1, &volume);
    bytes(&mut pod_spec, 2, &container);
    string(&mut pod_spec, 3, "");
    let mut template = Vec::new();
    bytes(&mut template, 1, &meta("", &[("app", "web")]));
    bytes(&mut template, 2, &pod_spec);
    let mut selector = Vec::new();
    bytes(&mut selector, 1, &entry("app", b"web"));
    let mut surge = Vec::new();
    int(&mut surge, 1, 1);
    int(&mut surge, 2, 0);
    string(&mut surge, 3, "25%");
    let mut unavailable = Vec::new();
    int(&mut unavailable, 1, 0);
    int(&mut unavailable, 2, 2);
    let mut rolling = Vec::new();
    bytes(&mut rolling, 1, &unavailable);
    bytes(&mut rolling, 2, &surge);
    let mut strategy = Vec::new();
    string(&mut strategy, 1, "RollingUpdate");
    bytes(&mut strategy, 2, &rolling);
    let mut spec = Vec::new();
    int(&mut spec, 1, 0);
    bytes(&mut spec, 2, &selector);
    bytes(&mut spec, 3, &template);
    bytes(&mut spec, 4, &strategy);
    int(&mut spec, 5, 0);
    let mut deployment = Vec::new();
    bytes(&mut deployment, 1, &meta("web", &[]));
    bytes(&mut deployment, 2, &spec);
    bytes(&mut deployment, 3, &[]);
    let v = decode_body(&envelope("apps/v1", "Deployment", &deployment)).unwrap();
    assert_eq!(
        v,
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "creationTimestamp": null},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"creationTimestamp": null, "labels": {"app": "web"}},
                    "spec": {
                        "volumes": [{"name": "scratch", "emptyDir": {}}],
                        "containers": [{
                            "name": "web", "image": "nginx:1.27", "command": ["sh", "-c"],
                            "ports": [{"containerPort": 80, "protocol": "TCP"}],
                            "resources": {"limits": {"cpu": "500m"}},
                        }],
                    },
                },
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 2, "maxSurge": "25%"}},
            },
            "status": {},
        })
    );
}

#[test]
fn times_durations_and_meta_kinds() {
    let mut time = Vec::new();
    int(&mut time, 1, 1_700_000_000);
    int(&mut time, 2, 123_456_789);
    let mut options = Vec::new();
    int(&mut options, 1, 0);
    let v = decode_body(&envelope("apps/v1", "DeleteOptions", &options)).unwrap();
    assert_eq!(
        v,
        json!({"apiVersion": "apps/v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0})
    );

    let schema = schema();
    assert_eq!(
        schema
            .decode("k8s.io.apimachinery.pkg.apis.meta.v1.Time", &time)
            .unwrap(),
        json!("2023-11-14T22:13:20Z")
    );
    assert_eq!(
        schema
            .decode("k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime", &time)
            .unwrap(),
        json!("2023-11-14T22:13:20.123456Z")
    );
    for (nanos, text) in [
        (0, "0s"),
        (1_500, "1.5µs"),
        (150_000_000, "150ms"),
        (90_000_000_000, "1m30s"),
        (3_600_000_000_000, "1h0m0s"),
        (-2_500_000_000, "-2.5s"),
    ] {
        assert_eq!(go_duration(nanos), text);
    }
}

#[test]
fn bad_bodies_are_errors_never_panics() {
    assert!(matches!(
        decode_body(b"{}"),
        Err(ProtobufError::NotProtobuf)
    ));
    assert!(matches!(
        decode_body(&envelope("v1", "Nonsense", &[])),
        Err(ProtobufError::UnknownKind { .. })
    ));
    let mut cm = Vec::new();
    bytes(&mut cm, 1, &meta("cm", &[]));
    let mut body = envelope("v1", "ConfigMap", &cm);
    body.truncate(body.len() - 3);
    assert!(decode_body(&body).is_err());
    // A varint where the name string belongs.
    let mut wrong = Vec::new();
    let mut m = Vec::new();
    int(&mut m, 1, 7);
    bytes(&mut wrong, 1, &m);
    let err = decode_body(&envelope("v1", "ConfigMap", &wrong)).unwrap_err();
    assert!(err.to_string().contains("metadata.name"), "{err}");
    // Every prefix of a valid body is an error or a value, never a panic.
    let full = envelope("v1", "ConfigMap", &cm);
    for n in 0..full.len() {
        let _ = decode_body(&full[..n]);
    }
}

#[test]
fn a_crd_schema_decodes_its_unions_and_json_values() {
    use super::wire::encode::bytes as b;
    let props = |ty: &str| {
        let mut p = Vec::new();
        string(&mut p, 5, ty);
        p
    };
    // spec.size: {type: integer, default: 3, maximum: 10.5}
    let mut size = props("integer");
    let mut default = Vec::new();
    b(&mut default, 1, b"3");
    b(&mut size, 8, &default);
    size.push((9 << 3) | 1);
    size.extend(10.5f64.to_bits().to_le_bytes());
    // additionalProperties: false (JSONSchemaPropsOrBool, no schema)
    let mut or_bool = Vec::new();
    int(&mut or_bool, 1, 0);
    let mut spec = props("object");
    b(&mut spec, 29, &entry("size", &size));
    b(&mut spec, 30, &or_bool);
    // items of a list: JSONSchemaPropsOrArray with one schema
    let mut or_array = Vec::new();
    b(&mut or_array, 1, &props("string"));
    let mut list = props("array");
    b(&mut list, 24, &or_array);
    b(&mut spec, 29, &entry("tags", &list));
    let v = schema()
        .decode(
            "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps",
            &spec,
        )
        .unwrap();
    assert_eq!(
        v,
        json!({"type": "object", "additionalProperties": false, "properties": {
            "size": {"type": "integer", "default": 3, "maximum": 10.5},
            "tags": {"type": "array", "items": {"type": "string"}},
        }})
    );
}
