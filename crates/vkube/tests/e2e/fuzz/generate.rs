//! The fuzz test's request generator: real resource paths and garbage, query strings, methods,
//! media types, bodies (valid objects mutated, random JSON, deep nesting, huge strings, patches
//! of every kind, YAML, protobuf, bytes) and credentials. Each request comes from its own
//! generator, seeded with the run's seed and the request's number, so one request replays alone.

use fastrand::Rng;
use serde_json::{Value, json};

/// The namespace the seed objects live in.
pub(crate) const NS: &str = "fuzz";

/// Who sends a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sender {
    /// The admin client certificate.
    Admin,
    /// No client certificate: anonymous, or whatever its bearer token says.
    Anonymous,
}

#[derive(Clone, Debug)]
pub(crate) struct Request {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
    pub(crate) sender: Sender,
    /// A watch (or a follow) stays open: the client stops reading after the head.
    pub(crate) streaming: bool,
}

impl Request {
    pub(crate) fn mutating(&self) -> bool {
        !matches!(self.method.as_str(), "GET" | "HEAD" | "OPTIONS")
    }

    /// What to print so a failure can be reproduced by hand.
    pub(crate) fn describe(&self) -> String {
        let body = String::from_utf8_lossy(&self.body[..self.body.len().min(300)]).into_owned();
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {}", &v[..v.len().min(120)]))
            .collect();
        format!(
            "{} {} as {:?}\n  headers: {headers:?}\n  body ({} bytes): {body}",
            self.method,
            &self.path[..self.path.len().min(400)],
            self.sender,
            self.body.len()
        )
    }
}

/// The collections and objects requests aim at: (collection path, a name in it, a seed object).
pub(crate) fn targets() -> Vec<(&'static str, &'static str, Value)> {
    let meta =
        |name: &str| json!({"name": name, "namespace": NS, "labels": {"app": "fuzz", "tier": "a"}});
    vec![
        (
            "/api/v1/namespaces/fuzz/configmaps",
            "cm",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("cm"), "data": {"a": "1"}}),
        ),
        (
            "/api/v1/namespaces/fuzz/secrets",
            "secret",
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": meta("secret"), "stringData": {"token": "s3cr3t"}}),
        ),
        (
            "/api/v1/namespaces/fuzz/pods",
            "pod",
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta("pod"), "spec": {"containers": [{"name": "c", "image": "busybox", "ports": [{"containerPort": 80}], "env": [{"name": "A", "value": "b"}]}]}}),
        ),
        (
            "/api/v1/namespaces/fuzz/services",
            "svc",
            json!({"apiVersion": "v1", "kind": "Service", "metadata": meta("svc"), "spec": {"selector": {"app": "fuzz"}, "ports": [{"port": 80, "targetPort": 8080}]}}),
        ),
        (
            "/api/v1/namespaces/fuzz/serviceaccounts",
            "sa",
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta("sa")}),
        ),
        (
            "/apis/apps/v1/namespaces/fuzz/deployments",
            "deploy",
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("deploy"), "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "fuzz"}}, "template": {"metadata": {"labels": {"app": "fuzz"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}),
        ),
        (
            "/apis/rbac.authorization.k8s.io/v1/namespaces/fuzz/roles",
            "role",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta("role"), "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}),
        ),
        (
            "/apis/rbac.authorization.k8s.io/v1/namespaces/fuzz/rolebindings",
            "rb",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta("rb"), "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "role"}, "subjects": [{"kind": "User", "name": "alice"}]}),
        ),
        (
            "/apis/batch/v1/namespaces/fuzz/jobs",
            "job",
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta("job"), "spec": {"suspend": true, "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}),
        ),
        (
            "/apis/networking.k8s.io/v1/namespaces/fuzz/networkpolicies",
            "np",
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta("np"), "spec": {"podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["fuzz"]}]}}}),
        ),
        (
            "/apis/example.com/v1/namespaces/fuzz/widgets",
            "widget",
            json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": meta("widget"), "spec": {"replicas": 1, "name": "a", "items": [1, 2]}}),
        ),
        (
            "/api/v1/namespaces",
            "fuzz",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}),
        ),
        (
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            "widgets.example.com",
            crd(),
        ),
    ]
}

/// A CRD with CEL rules, so custom resources and the rule evaluator are in reach.
pub(crate) fn crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object",
                        "x-kubernetes-validations": [
                            {"rule": "self.replicas >= 0", "message": "replicas must not be negative"},
                            {"rule": "!has(self.name) || self.name.matches('^[a-z]*$')", "messageExpression": "'bad name: ' + self.name"},
                            {"rule": "self.items.all(x, x < 100)", "fieldPath": ".items"}],
                        "properties": {"replicas": {"type": "integer"}, "name": {"type": "string", "maxLength": 32},
                            "items": {"type": "array", "maxItems": 16, "items": {"type": "integer"}},
                            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}},
                    "status": {"type": "object", "properties": {"replicas": {"type": "integer"}}}}}}}]
        }
    })
}

const SUBRESOURCES: &[&str] = &[
    "status",
    "scale",
    "log",
    "exec",
    "attach",
    "portforward",
    "proxy",
    "binding",
    "eviction",
    "token",
    "ephemeralcontainers",
    "approval",
    "finalize",
    "resize",
    "x",
];

const OTHER_PATHS: &[&str] = &[
    "/",
    "/api",
    "/apis",
    "/api/v1",
    "/apis/apps",
    "/apis/apps/v1",
    "/version",
    "/healthz",
    "/livez",
    "/readyz?verbose",
    "/healthz/etcd",
    "/metrics",
    "/openapi/v2",
    "/openapi/v3",
    "/openapi/v3/api/v1",
    "/openapi/v3/apis/apps/v1",
    "/.well-known/openid-configuration",
    "/openid/v1/jwks",
    "/vkube/replicas",
    "/api/v1/nodes",
    "/api/v1/pods",
    "/api/v1/watch/pods",
    "/api/v1/namespaces/default/services/kubernetes",
    "/api/v1/namespaces/kube-system/configmaps",
    "/apis/coordination.k8s.io/v1/leases",
    "/apis/events.k8s.io/v1/events",
    "/apis/certificates.k8s.io/v1/certificatesigningrequests",
    "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
    "/apis/authentication.k8s.io/v1/selfsubjectreviews",
    "/apis/authentication.k8s.io/v1/tokenreviews",
    "/apis/rbac.authorization.k8s.io/v1/clusterroles",
    "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
    "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies",
    "/apis/example.com/v1/widgets",
    "/apis/example.com",
    "/apis/nope.io/v1/things",
];

fn pick<'a, T>(rng: &mut Rng, items: &'a [T]) -> &'a T {
    &items[rng.usize(..items.len())]
}

/// Text from an alphabet hostile to parsers.
fn junk(rng: &mut Rng, max: usize) -> String {
    const PIECES: &[&str] = &[
        "a", "Z", "0", "-", ".", "/", "..", "%", "%00", "%2F", "%zz", "~", "!", "=", "==", "!=",
        ",", "(", ")", " in ", " notin ", "\"", "'", "\\", "{", "}", "[", "]", ":", ";", "?", "&",
        "#", "é", "\u{202e}", "😀", "\u{0}", "\t", "\n", "$", "*", "+", "<", ">", "@",
    ];
    let n = rng.usize(0..=max);
    (0..n).map(|_| *pick(rng, PIECES)).collect()
}

fn percent_encoded(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn path(rng: &mut Rng, targets: &[(&'static str, &'static str, Value)]) -> String {
    let (collection, name, _) = pick(rng, targets);
    match rng.u8(0..20) {
        0..=5 => collection.to_string(),
        6..=10 => format!("{collection}/{name}"),
        11..=12 => format!("{collection}/{name}/{}", pick(rng, SUBRESOURCES)),
        13 => format!("{collection}/{}", percent_encoded(&junk(rng, 20))),
        14 => format!("{collection}/{}", "n".repeat(rng.usize(250..70_000))),
        15 => {
            // A real path with one segment garbled.
            let mut segments: Vec<String> = collection.split('/').map(String::from).collect();
            let at = rng.usize(1..segments.len());
            segments[at] = percent_encoded(&junk(rng, 8));
            segments.join("/")
        }
        16 => collection.replace("/namespaces/fuzz", "/namespaces/nowhere"),
        17 => format!("{collection}//{name}/../{name}/."),
        _ => pick(rng, OTHER_PATHS).to_string(),
    }
}

/// Query parameters and values worth sending; a value `~N` stands for up to N characters of
/// junk.
const PARAMS: &[(&str, &[&str])] = &[
    (
        "labelSelector",
        &[
            "app=fuzz",
            "app!=fuzz",
            "app in (fuzz,x)",
            "!app",
            "app,tier=a",
            "app notin ()",
            "a==b==c",
            "x=(",
            "in in in",
            "a=b,",
            ",",
            "=",
            "~30",
        ],
    ),
    (
        "fieldSelector",
        &[
            "metadata.name=cm",
            "metadata.namespace!=fuzz",
            "spec.nodeName=",
            "status.phase=Running",
            "a=b,",
            "=",
            "~30",
        ],
    ),
    (
        "limit",
        &["1", "0", "-1", "500", "99999999999999999999", "x"],
    ),
    (
        "continue",
        &[
            "eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6MSwic3RhcnQiOiJhIn0",
            "~40",
        ],
    ),
    (
        "resourceVersion",
        &[
            "0",
            "1",
            "",
            "-5",
            "99999999999",
            "abc",
            "18446744073709551616",
        ],
    ),
    ("resourceVersionMatch", &["NotOlderThan", "Exact", "x"]),
    ("watch", &["true", "1", "false", "x"]),
    ("timeoutSeconds", &["1", "0", "-1", "x", "2"]),
    ("dryRun", &["All", "all", "x", ""]),
    ("fieldManager", &["fuzzer", "~200"]),
    ("fieldValidation", &["Strict", "Warn", "Ignore", "x"]),
    ("force", &["true", "false", "x"]),
    ("gracePeriodSeconds", &["0", "-1", "30", "x"]),
    (
        "propagationPolicy",
        &["Foreground", "Background", "Orphan", "x"],
    ),
    (
        "timeout",
        &[
            "1s",
            "0",
            "5m",
            "-1s",
            "1",
            "1h2m3.5s",
            "9999999999999h",
            "x",
            "1e3s",
            "1µs",
            "100ms",
        ],
    ),
    ("allowWatchBookmarks", &["true"]),
    ("sendInitialEvents", &["true", "~10"]),
    ("pretty", &["~10"]),
    ("follow", &["true", "~10"]),
    ("container", &["c", "~10"]),
    ("tailLines", &["~10"]),
    ("includeObject", &["Object", "None", "~10"]),
];

fn query(rng: &mut Rng, method: &str) -> (String, bool) {
    let mut params: Vec<(&str, String)> = Vec::new();
    for _ in 0..rng.usize(0..5) {
        let (name, values) = pick(rng, PARAMS);
        let value = pick(rng, values);
        let value = match value.strip_prefix('~') {
            Some(n) => junk(rng, n.parse().unwrap()),
            None => value.to_string(),
        };
        params.push((name, value));
    }
    // A watch stays open; only GETs are watches.
    let streaming = method == "GET" && params.iter().any(|(k, _)| *k == "watch");
    let q: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}={}", percent_encoded(v)))
        .collect();
    (q.join("&"), streaming)
}

/// Any JSON value, up to `depth` levels.
fn random_json(rng: &mut Rng, depth: usize) -> Value {
    match rng.u8(0..if depth == 0 { 5 } else { 8 }) {
        0 => Value::Null,
        1 => json!(rng.bool()),
        2 => json!(rng.i64(..)),
        3 => json!(rng.f64() * 1e300),
        4 => json!(junk(rng, 16)),
        5 | 6 => Value::Object(
            (0..rng.usize(0..5))
                .map(|_| (junk(rng, 8), random_json(rng, depth - 1)))
                .collect(),
        ),
        _ => Value::Array(
            (0..rng.usize(0..5))
                .map(|_| random_json(rng, depth - 1))
                .collect(),
        ),
    }
}

fn nested(depth: usize) -> Value {
    let mut v = json!("bottom");
    for i in 0..depth {
        v = if i % 2 == 0 {
            json!([v])
        } else {
            json!({"a": v})
        };
    }
    v
}

/// JSON nested `depth` levels, written out directly: a value that deep would overflow this
/// process's stack when serialized.
fn deep_text(depth: usize) -> Vec<u8> {
    let mut text =
        "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"deep\"},\"x\":"
            .to_string();
    text.push_str(&"[".repeat(depth));
    text.push_str(&"]".repeat(depth));
    text.push('}');
    text.into_bytes()
}

/// `obj` with a few of its values replaced, removed or added.
fn mutate(rng: &mut Rng, obj: &mut Value) {
    for _ in 0..rng.usize(1..4) {
        // Walk down a random way, as a JSON pointer.
        let mut pointer = String::new();
        let mut here = &*obj;
        for _ in 0..rng.usize(0..5) {
            let (step, next) = match here {
                Value::Object(m) if !m.is_empty() => {
                    let (k, v) = m.iter().nth(rng.usize(..m.len())).unwrap();
                    (k.replace('~', "~0").replace('/', "~1"), v)
                }
                Value::Array(a) if !a.is_empty() => {
                    let i = rng.usize(..a.len());
                    (i.to_string(), &a[i])
                }
                _ => break,
            };
            pointer = format!("{pointer}/{step}");
            here = next;
        }
        let at = obj.pointer_mut(&pointer).expect("a path just walked");
        let replacement = match rng.u8(0..12) {
            0 => Value::Null,
            1 => json!(junk(rng, 300)),
            2 => json!("x".repeat(rng.usize(1_000..200_000))),
            3 => json!(i64::MAX),
            4 => json!(-1),
            5 => nested(*pick(rng, &[10, 60, 126, 127, 128, 300])),
            6 => {
                json!({"$patch": pick(rng, &["delete", "replace", "x"]), "$retainKeys": ["a"], "$setElementOrder/containers": [{"name": "c"}]})
            }
            7 => {
                json!({"ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "cm", "uid": junk(rng, 10)}], "finalizers": [junk(rng, 10)], "name": junk(rng, 70)})
            }
            8 => json!([]),
            _ => random_json(rng, 3),
        };
        match at {
            Value::Object(m) if rng.u8(0..3) == 0 => {
                if let Some(k) = m.keys().next().cloned() {
                    m.remove(&k);
                }
            }
            Value::Object(m) if rng.bool() => {
                m.insert(junk(rng, 12), replacement);
            }
            Value::Array(a) if rng.bool() => a.push(replacement),
            _ => *at = replacement,
        }
    }
}

fn json_patch(rng: &mut Rng) -> Value {
    let ops: Vec<Value> = (0..rng.usize(0..5))
        .map(|_| {
            let path = pick(rng, &["/metadata/labels/x", "/metadata/name", "/data/a", "/spec/containers/0/image", "/spec/containers/-", "/metadata/labels/a~1b", "/x~2", "", "/", "/spec/replicas"]).to_string();
            let mut op = json!({"op": pick(rng, &["add", "remove", "replace", "move", "copy", "test", "x"]), "path": path});
            if rng.bool() {
                op["value"] = random_json(rng, 2);
            }
            if rng.bool() {
                op["from"] = json!(pick(rng, &["/metadata/labels", "/data", "/nope", "/metadata/name"]));
            }
            op
        })
        .collect();
    Value::Array(ops)
}

/// Protobuf: the magic and garbage, or an envelope around garbage.
fn protobuf(rng: &mut Rng) -> Vec<u8> {
    let mut body = b"k8s\0".to_vec();
    if rng.bool() {
        let kind = pick(
            rng,
            &["Pod", "ConfigMap", "Deployment", "CustomResourceDefinition"],
        )
        .as_bytes();
        let mut type_meta = vec![0x0a, 2, b'v', b'1', 0x12, kind.len() as u8];
        type_meta.extend_from_slice(kind);
        body.extend([0x0a, type_meta.len() as u8]);
        body.extend(type_meta);
        let raw: Vec<u8> = (0..rng.usize(0..200)).map(|_| rng.u8(..)).collect();
        body.extend([0x12, raw.len().min(127) as u8]);
        body.extend(raw);
    } else {
        body.extend((0..rng.usize(0..300)).map(|_| rng.u8(..)));
    }
    body
}

fn credentials(rng: &mut Rng) -> Option<String> {
    Some(match rng.u8(0..8) {
        0 => format!("Bearer {}", junk(rng, 40)),
        1 => "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.".to_string(),
        2 => "Bearer eyJhbGciOiJIUzI1NiIsImtpZCI6IngifQ.eyJpc3MiOiJodHRwczovL2t1YmVybmV0ZXMuZGVmYXVsdC5zdmMuY2x1c3Rlci5sb2NhbCIsInN1YiI6InN5c3RlbTphZG1pbiJ9.c2ln".to_string(),
        3 => format!("Bearer {}", "a".repeat(rng.usize(60_000..70_000))),
        4 => "Basic YWRtaW46YWRtaW4=".to_string(),
        5 => "Bearer ".to_string(),
        6 => format!("Bearer {}.{}.{}", junk(rng, 10), junk(rng, 10), junk(rng, 10)),
        _ => return None,
    })
}

/// Request number `n` of the run with `seed`.
pub(crate) fn request(seed: u64, n: u64, rejected_only: bool) -> Request {
    let mut rng = Rng::with_seed(seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let targets = targets();
    let method = pick(
        &mut rng,
        &[
            "GET", "GET", "GET", "POST", "POST", "PUT", "PATCH", "PATCH", "DELETE", "HEAD",
            "OPTIONS", "FUZZ",
        ],
    )
    .to_string();
    let path = path(&mut rng, &targets);
    let (mut q, streaming) = query(&mut rng, &method);
    let streaming = streaming || (method == "GET" && path.contains("/watch/"));
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut sender = if rng.u8(0..6) == 0 {
        Sender::Anonymous
    } else {
        Sender::Admin
    };
    if let Some(auth) = credentials(&mut rng).filter(|_| rng.u8(0..4) == 0) {
        headers.push(("authorization".into(), auth));
    }
    if rng.u8(0..10) == 0 {
        headers.push((
            "impersonate-user".into(),
            pick(
                &mut rng,
                &[
                    "alice",
                    "system:anonymous",
                    "",
                    "system:serviceaccount:fuzz:sa",
                ],
            )
            .to_string(),
        ));
        if rng.bool() {
            headers.push(("impersonate-group".into(), junk(&mut rng, 12)));
        }
    }
    if rng.u8(0..4) == 0 {
        headers.push((
            "accept".into(),
            pick(
                &mut rng,
                &[
                    "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
                    "application/vnd.kubernetes.protobuf",
                    "application/yaml",
                    "text/html",
                    "*/*",
                    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
                    "",
                ],
            )
            .to_string(),
        ));
    }
    if rng.u8(0..200) == 0 {
        // Past Go's 1 MiB of headers (431), or just under it.
        let size = *pick(&mut rng, &[(1 << 20) + 8192, 200_000]);
        headers.push(("x-big".into(), "b".repeat(size)));
    }
    // The body: an object of the target's kind, mutated, or anything else.
    let (_, _, seed_obj) = pick(&mut rng, &targets).clone();
    let mut obj = seed_obj;
    if rng.u8(0..3) != 0 {
        mutate(&mut rng, &mut obj);
    }
    let (content_type, body): (&str, Vec<u8>) = match rng.u8(0..14) {
        0..=3 => ("application/json", serde_json::to_vec(&obj).unwrap()),
        4 => (
            "application/yaml",
            serde_saphyr::to_string(&obj)
                .unwrap_or_default()
                .into_bytes(),
        ),
        5 => ("application/vnd.kubernetes.protobuf", protobuf(&mut rng)),
        6 => (
            "application/json-patch+json",
            serde_json::to_vec(&json_patch(&mut rng)).unwrap(),
        ),
        7 => (
            "application/merge-patch+json",
            serde_json::to_vec(&obj).unwrap(),
        ),
        8 => (
            "application/strategic-merge-patch+json",
            serde_json::to_vec(&obj).unwrap(),
        ),
        9 => {
            if rng.bool() {
                q.push_str("&fieldManager=fuzzer");
            }
            (
                "application/apply-patch+yaml",
                serde_saphyr::to_string(&obj)
                    .unwrap_or_default()
                    .into_bytes(),
            )
        }
        10 => (
            "application/json",
            deep_text(*pick(&mut rng, &[127, 128, 1_000, 10_001, 200_000])),
        ),
        11 => ("application/json", {
            let mut bytes = serde_json::to_vec(&obj).unwrap();
            for _ in 0..rng.usize(1..8) {
                if !bytes.is_empty() {
                    let at = rng.usize(..bytes.len());
                    bytes[at] = rng.u8(..);
                }
            }
            bytes
        }),
        12 => (
            *pick(
                &mut rng,
                &[
                    "text/plain",
                    "application/x-www-form-urlencoded",
                    "",
                    "application/json; charset=utf-16",
                    "multipart/form-data; boundary=x",
                ],
            ),
            serde_json::to_vec(&random_json(&mut rng, 4)).unwrap(),
        ),
        _ => ("application/json", Vec::new()),
    };
    let body = if rng.u8(0..150) == 0 {
        // Past the 3 MiB limit.
        vec![b' '; 3 * 1024 * 1024 + 1]
    } else {
        body
    };
    if !content_type.is_empty() {
        headers.push(("content-type".into(), content_type.to_string()));
    }
    if rejected_only && method != "GET" && method != "HEAD" {
        // Nothing may change the store: a write runs dry, asks for a dry run the server must
        // refuse, or comes from someone who may not write. The server reads the first
        // `dryRun`, so the generator's own go.
        let rest: Vec<&str> = q
            .split('&')
            .filter(|p| !p.is_empty() && !p.starts_with("dryRun="))
            .collect();
        let mut params = Vec::new();
        match rng.u8(0..3) {
            0 => params.push("dryRun=All"),
            1 => params.push("dryRun=Some"),
            _ => {
                sender = Sender::Anonymous;
                headers.retain(|(k, _)| k != "authorization" && !k.starts_with("impersonate"));
            }
        }
        params.extend(rest);
        q = params.join("&");
    }
    let path = if q.is_empty() {
        path
    } else {
        format!("{path}?{q}")
    };
    Request {
        method,
        path,
        headers,
        body,
        sender,
        streaming,
    }
}

/// The seed objects as the server should hold them before fuzzing (creation order).
pub(crate) fn seed_objects() -> Vec<(&'static str, Value)> {
    let mut all: Vec<(&'static str, Value)> = targets()
        .into_iter()
        .map(|(collection, _, obj)| (collection, obj))
        .collect();
    // The namespace and the CRD before what lives in them.
    all.sort_by_key(|(c, _)| {
        !(c.ends_with("/namespaces") || c.ends_with("customresourcedefinitions"))
    });
    all
}
