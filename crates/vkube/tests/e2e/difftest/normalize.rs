//! What legitimately differs between two servers, replaced by placeholders so the rest compares:
//! uids, resourceVersions, generated names, timestamps, continue tokens, allocated IPs and ports.
//!
//! A uid, an object's resourceVersion or a generated name is labelled by the step whose answer
//! showed it first (`<rv create-cm>`, `<rv list #2>` for the second new one in that answer), so
//! relations still compare ("an unchanged update keeps the resourceVersion", "the watch shows the
//! update's resourceVersion") and a difference in one step does not shift the labels of the next.
//! A list's own resourceVersion and a bookmark's are the store's revision at that moment, which
//! other writers (leases, controllers) move: they become `<list>` and `<bookmark>`.

use std::collections::HashMap;

use serde_json::Value;

#[derive(Default)]
pub(crate) struct Normalizer {
    /// raw value → label, for uids and generated names (replaced wherever they occur)...
    labels: HashMap<String, String>,
    /// ...and for object resourceVersions (replaced in messages as whole words only).
    rvs: HashMap<String, String>,
    counts: HashMap<(&'static str, String), usize>,
}

/// The length of the timestamp (`2024-01-02T03:04:05Z`, fractional seconds allowed) that `b`
/// starts with.
fn time_at(b: &[u8]) -> Option<usize> {
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let shape = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !shape {
        return None;
    }
    let mut end = 19;
    if b[end] == b'.' {
        end += 1;
        while b.get(end).is_some_and(u8::is_ascii_digit) {
            end += 1;
        }
    }
    (b.get(end) == Some(&b'Z')).then_some(end + 1)
}

/// Replaces every timestamp in `s` (also inside a message quoting an object) by `<time>`.
fn replace_times(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = String::new();
    let (mut i, mut copied, mut found) = (0, 0, false);
    while i < b.len() {
        match time_at(&b[i..]) {
            Some(n) => {
                out.push_str(&s[copied..i]);
                out.push_str("<time>");
                i += n;
                copied = i;
                found = true;
            }
            None => i += 1,
        }
    }
    out.push_str(&s[copied..]);
    found.then_some(out)
}

impl Normalizer {
    fn label(&mut self, kind: &'static str, step: &str, raw: &str, prefix: &str) -> String {
        let table = if kind == "rv" {
            &mut self.rvs
        } else {
            &mut self.labels
        };
        if let Some(l) = table.get(raw) {
            return l.clone();
        }
        let n = self.counts.entry((kind, step.to_string())).or_insert(0);
        *n += 1;
        let label = if *n == 1 {
            format!("{prefix}<{kind} {step}>")
        } else {
            format!("{prefix}<{kind} {step} #{n}>")
        };
        table.insert(raw.to_string(), label.clone());
        label
    }

    /// Normalizes `{code, warnings?, body}` of `step`.
    pub(crate) fn answer(&mut self, step: &str, mut answer: Value, watch: bool) -> Value {
        let body = &mut answer["body"];
        if watch {
            if let Value::Array(events) = body {
                // Bookmarks come when the server likes; only the end of the initial events is
                // part of the contract.
                events.retain(|e| {
                    e["type"] != "BOOKMARK"
                        || e["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"]
                            == "true"
                });
                for e in events.iter_mut() {
                    if e["type"] == "BOOKMARK" {
                        e["object"]["metadata"]["resourceVersion"] = "<bookmark>".into();
                    }
                }
            }
        } else if body.get("items").is_some_and(Value::is_array) {
            if let Some(rv) = body.pointer_mut("/metadata/resourceVersion") {
                *rv = "<list>".into();
            }
        }
        self.structure(step, body);
        self.strings(&mut answer, false);
        answer
    }

    /// Replaces the fields that differ by nature, walking keys in sorted order so labels are
    /// handed out in the same order whatever order the server wrote the keys in.
    fn structure(&mut self, step: &str, v: &mut Value) {
        match v {
            Value::Object(map) => {
                if let (Some(Value::String(g)), Some(Value::String(n))) =
                    (map.get("generateName"), map.get("name"))
                {
                    if n.starts_with(g.as_str()) && n != g {
                        let g = g.clone();
                        let n = n.clone();
                        self.label("generated", step, &n, &g);
                    }
                }
                let mut keys: Vec<String> = map.keys().cloned().collect();
                keys.sort();
                for k in keys {
                    let field = map.get_mut(&k).unwrap();
                    match (k.as_str(), &*field) {
                        ("resourceVersion", Value::String(s)) if s.parse::<u64>().is_ok() => {
                            *field = self.label("rv", step, &s.clone(), "").into();
                        }
                        ("uid", Value::String(s)) if !s.is_empty() => {
                            *field = self.label("uid", step, &s.clone(), "").into();
                        }
                        ("continue", Value::String(s)) if !s.is_empty() => {
                            *field = "<continue>".into();
                        }
                        ("clusterIP", Value::String(s)) if s != "None" && !s.is_empty() => {
                            *field = "<cluster-ip>".into();
                        }
                        ("clusterIPs", Value::Array(ips)) => {
                            let ips = ips
                                .iter()
                                .map(|ip| match ip.as_str() {
                                    Some("None") => ip.clone(),
                                    _ => "<cluster-ip>".into(),
                                })
                                .collect();
                            *field = Value::Array(ips);
                        }
                        ("nodePort" | "healthCheckNodePort", Value::Number(_)) => {
                            *field = "<node-port>".into();
                        }
                        _ => self.structure(step, field),
                    }
                }
            }
            Value::Array(items) => {
                for i in items {
                    self.structure(step, i);
                }
            }
            Value::String(s) => {
                if let Some(t) = replace_times(s) {
                    *s = t;
                }
            }
            _ => {}
        }
    }

    /// Replaces labelled raw values inside strings (a uid in a precondition message, a
    /// generated name in a Status); resourceVersions only as whole numbers in messages about
    /// resource versions, since small numbers occur in other messages too.
    fn strings(&self, v: &mut Value, message: bool) {
        match v {
            Value::Object(map) => {
                for (k, field) in map.iter_mut() {
                    self.strings(field, k == "message");
                }
            }
            Value::Array(items) => {
                for i in items {
                    self.strings(i, message);
                }
            }
            Value::String(s) => {
                for (raw, label) in &self.labels {
                    if s.contains(raw.as_str()) {
                        *s = s.replace(raw.as_str(), label);
                    }
                }
                let lower = s.to_ascii_lowercase();
                if message
                    && (lower.contains("resourceversion") || lower.contains("resource version"))
                {
                    *s = self.replace_rvs(s);
                }
            }
            _ => {}
        }
    }

    fn replace_rvs(&self, s: &str) -> String {
        let mut out = String::new();
        let mut word = String::new();
        for c in s.chars().chain(std::iter::once('\0')) {
            if c.is_ascii_alphanumeric() {
                word.push(c);
                continue;
            }
            match self.rvs.get(&word) {
                Some(l) if word.bytes().all(|b| b.is_ascii_digit()) => out.push_str(l),
                _ => out.push_str(&word),
            }
            word.clear();
            if c != '\0' {
                out.push(c);
            }
        }
        out
    }
}
