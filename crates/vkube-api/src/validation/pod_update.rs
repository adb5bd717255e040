//! A Pod's spec is immutable once created, but for container images, a shorter
//! `activeDeadlineSeconds`, added tolerations, removed scheduling gates and a negative grace
//! period raised to 1 (upstream's ValidatePodUpdate). Resources change through the `resize`
//! subresource, ephemeral containers through theirs, so this applies to updates of the pod
//! itself only. Spec values compare as upstream's semantic equality does: quantities by value,
//! and an absent, null or empty list or map alike.

use serde_json::{Value, json};

use super::Errors;
use crate::quantity::Quantity;

const UPDATABLE: &str = "`spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

fn list(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

/// Checks an update of a pod's spec (`new` against the stored `old`).
pub(super) fn check(new: &Value, old: &Value, errs: &mut Errors) {
    for field in ["containers", "initContainers"] {
        if list(&new[field]).len() != list(&old[field]).len() {
            errs.forbidden(
                &format!("spec.{field}"),
                "pod updates may not add or remove containers",
            );
            return;
        }
    }
    let deadline = "spec.activeDeadlineSeconds";
    match (
        new["activeDeadlineSeconds"].as_i64(),
        old["activeDeadlineSeconds"].as_i64(),
    ) {
        (Some(n), _) if !(0..=i32::MAX as i64).contains(&n) => {
            let detail = format!("must be between 0 and {}, inclusive", i32::MAX);
            errs.invalid(deadline, &json!(n), &detail);
            return;
        }
        (Some(n), Some(o)) if o < n => {
            errs.invalid(
                deadline,
                &json!(n),
                "must be less than or equal to previous value",
            );
            return;
        }
        (None, Some(_)) => errs.invalid(
            deadline,
            &Value::Null,
            "must not update from a positive integer to nil value",
        ),
        _ => {}
    }
    let new_tolerations = list(&new["tolerations"]);
    for o in list(&old["tolerations"]) {
        let kept = new_tolerations.iter().any(|n| {
            let mut o = o.clone();
            o["tolerationSeconds"] = n["tolerationSeconds"].clone();
            same(&o, n)
        });
        if !kept {
            errs.forbidden(
                "spec.tolerations",
                "existing toleration can not be modified except its tolerationSeconds",
            );
            break;
        }
    }
    let old_gates = list(&old["schedulingGates"]);
    for g in list(&new["schedulingGates"]) {
        if !old_gates.iter().any(|o| same(o, &g)) {
            let name = g["name"].as_str().unwrap_or_default();
            let detail =
                format!("only deletion is allowed, but found new scheduling gate '{name}'");
            errs.forbidden("spec.schedulingGates", &detail);
        }
    }
    if same(new, old) {
        return;
    }
    let munged = munge(new, old);
    let mut diff = Vec::new();
    differences("spec", old, &munged, &mut diff);
    if !diff.is_empty() {
        errs.forbidden(
            "spec",
            &format!(
                "pod updates may not change fields other than {UPDATABLE}\n{}",
                diff.join("\n")
            ),
        );
    }
}

/// `new` with what an update may change taken from `old`.
fn munge(new: &Value, old: &Value) -> Value {
    let mut m = new.clone();
    for field in ["containers", "initContainers"] {
        if let Some(containers) = m[field].as_array_mut() {
            for (c, o) in containers.iter_mut().zip(list(&old[field])) {
                c["image"] = o["image"].clone();
            }
        }
    }
    for field in [
        "activeDeadlineSeconds",
        "schedulingGates",
        "tolerations",
        "ephemeralContainers",
    ] {
        m[field] = old[field].clone();
    }
    let grace = "terminationGracePeriodSeconds";
    if old[grace].as_i64().is_some_and(|g| g < 0) && m[grace] == 1 {
        m[grace] = old[grace].clone();
    }
    if !list(&old["schedulingGates"]).is_empty() {
        // A gated pod may still gain node constraints; the scheduler has not placed it.
        m["nodeSelector"] = old["nodeSelector"].clone();
        m["affinity"] = old["affinity"].clone();
    }
    m
}

fn empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// Upstream's semantic equality on JSON: quantities by value, nil and empty alike.
fn same(a: &Value, b: &Value) -> bool {
    let mut diff = Vec::new();
    differences("", a, b, &mut diff);
    diff.is_empty()
}

/// The paths where `old` and `new` differ, as `- path: old` / `+ path: new` lines.
fn differences(path: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
    if empty(old) && empty(new) {
        return;
    }
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let none = Value::Null;
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let (x, y) = (a.get(k).unwrap_or(&none), b.get(k).unwrap_or(&none));
                differences(&format!("{path}.{k}"), x, y, out);
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                differences(&format!("{path}[{i}]"), x, y, out);
            }
        }
        (Value::String(a), Value::String(b))
            if a == b
                || matches!((Quantity::parse(a), Quantity::parse(b)), (Ok(x), Ok(y)) if x == y) => {
        }
        (a, b) if a == b => {}
        (a, b) => {
            let show = |v: &Value| match v {
                Value::Object(m) if m.is_empty() => "{}".to_string(),
                v => v.to_string(),
            };
            out.push(format!("- {path}: {}", show(a)));
            out.push(format!("+ {path}: {}", show(b)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(cpu: &str) -> Value {
        json!({"containers": [{"name": "c", "image": "x:1", "resources": {"requests": {"cpu": cpu}}}],
               "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}],
               "restartPolicy": "Always"})
    }

    fn check_errs(new: &Value, old: &Value) -> Vec<String> {
        let mut errs = Errors::default();
        check(new, old, &mut errs);
        errs.0
            .into_iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect()
    }

    #[test]
    fn images_deadlines_and_tolerations_may_change() {
        let old = spec("500m");
        let mut new = old.clone();
        new["containers"][0]["image"] = json!("x:2");
        new["activeDeadlineSeconds"] = json!(30);
        new["tolerations"][0]["tolerationSeconds"] = json!(10);
        new["tolerations"]
            .as_array_mut()
            .unwrap()
            .push(json!({"key": "extra"}));
        new["containers"][0]["resources"]["requests"]["cpu"] = json!("0.5");
        new["ephemeralContainers"] = json!([]);
        assert_eq!(check_errs(&new, &old), Vec::<String>::new());
    }

    #[test]
    fn resources_and_container_counts_may_not() {
        let old = spec("500m");
        let new = spec("100m");
        let errs = check_errs(&new, &old);
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].starts_with(&format!(
                "spec: Forbidden: pod updates may not change fields other than {UPDATABLE}\n"
            )),
            "{}",
            errs[0]
        );
        assert!(errs[0].ends_with(
            "- spec.containers[0].resources.requests.cpu: \"500m\"\n+ spec.containers[0].resources.requests.cpu: \"100m\""
        ));
        let mut two = old.clone();
        two["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "d", "image": "y"}));
        assert_eq!(
            check_errs(&two, &old),
            vec!["spec.containers: Forbidden: pod updates may not add or remove containers"]
        );
        let mut longer = old.clone();
        longer["activeDeadlineSeconds"] = json!(10);
        let mut even_longer = old.clone();
        even_longer["activeDeadlineSeconds"] = json!(20);
        assert_eq!(
            check_errs(&even_longer, &longer),
            vec![
                "spec.activeDeadlineSeconds: Invalid value: 20: must be less than or equal to previous value"
            ]
        );
        let mut dropped = old.clone();
        dropped["tolerations"] = json!([]);
        assert_eq!(
            check_errs(&dropped, &old)[0],
            "spec.tolerations: Forbidden: existing toleration can not be modified except its tolerationSeconds"
        );
    }
}
