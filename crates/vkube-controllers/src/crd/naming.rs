//! Upstream's NamingConditionController and EstablishingController on one CRD: each requested
//! name is accepted unless another CRD of the group has already accepted it (a name this CRD
//! holds stays its own), `NamesAccepted` says which conflict kept a name back, and a CRD whose
//! names are all accepted is `Established` (once established it stays so, as upstream's).

use std::collections::BTreeSet;

use serde_json::{Value, json};

/// Sets a condition, keeping its `lastTransitionTime` while its status does not change
/// (upstream's `SetCRDCondition`).
pub(crate) fn set_condition(
    status: &mut Value,
    kind: &str,
    value: bool,
    reason: &str,
    message: &str,
    now: &str,
) {
    let value = if value { "True" } else { "False" };
    if !status["conditions"].is_array() {
        status["conditions"] = json!([]);
    }
    let Some(conditions) = status["conditions"].as_array_mut() else {
        return;
    };
    let since = conditions
        .iter()
        .find(|c| c["type"] == kind && c["status"] == value)
        .map(|c| c["lastTransitionTime"].clone())
        .filter(|t| t.is_string())
        .unwrap_or_else(|| json!(now));
    let condition = json!({
        "type": kind, "status": value, "lastTransitionTime": since,
        "reason": reason, "message": message,
    });
    match conditions.iter_mut().find(|c| c["type"] == kind) {
        Some(c) => *c = condition,
        None => conditions.push(condition),
    }
}

/// Whether a CRD's condition of this type is True.
pub(crate) fn condition(crd: &Value, kind: &str) -> bool {
    crd["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == kind && c["status"] == "True")
    })
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// The names the group's other CRDs hold: (resources, kinds), upstream's
/// `getAcceptedNamesForGroup`.
fn taken(group: &Value, others: &[Value]) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut resources, mut kinds) = (BTreeSet::new(), BTreeSet::new());
    for other in others.iter().filter(|o| o["spec"]["group"] == *group) {
        let n = &other["status"]["acceptedNames"];
        let field = |f: &str| n[f].as_str().filter(|s| !s.is_empty()).map(str::to_string);
        resources.extend(field("plural"));
        resources.extend(field("singular"));
        resources.extend(strings(&n["shortNames"]));
        kinds.extend(field("kind"));
        kinds.extend(field("listKind"));
    }
    (resources, kinds)
}

/// Upstream's `calculateNamesAndConditions` and the establishing step, on `crd`'s status; the
/// storage version joins `storedVersions` too (kube-apiserver's CRD strategy does that on
/// update; vkube's leaves it here).
pub(crate) fn accept_names(crd: &mut Value, others: &[Value], now: &str) {
    let spec = crd["spec"].clone();
    let mut requested = spec["names"].clone();
    let kind = requested["kind"].as_str().unwrap_or_default().to_string();
    if requested["singular"].as_str().is_none_or(str::is_empty) {
        requested["singular"] = json!(kind.to_ascii_lowercase());
    }
    if requested["listKind"].as_str().is_none_or(str::is_empty) {
        requested["listKind"] = json!(format!("{kind}List"));
    }
    let (resources, kinds) = taken(&spec["group"], others);
    let accepted = crd["status"]["acceptedNames"].clone();
    let mut names = accepted.clone();
    if !names.is_object() {
        names = json!({});
    }
    // The last conflict found is the one the condition reports, as upstream's.
    let mut conflict: Option<(&str, String)> = None;
    for (field, reason, used) in [
        ("plural", "PluralConflict", &resources),
        ("singular", "SingularConflict", &resources),
    ] {
        let want = requested[field].as_str().unwrap_or_default();
        if want == accepted[field].as_str().unwrap_or_default() || !used.contains(want) {
            names[field] = json!(want);
        } else {
            conflict = Some((reason, format!("{want:?} is already in use")));
        }
    }
    let held: BTreeSet<String> = strings(&accepted["shortNames"]).into_iter().collect();
    let short_conflict = strings(&requested["shortNames"])
        .into_iter()
        .find(|s| !held.contains(s) && resources.contains(s));
    match short_conflict {
        Some(s) => conflict = Some(("ShortNamesConflict", format!("{s:?} is already in use"))),
        None if requested["shortNames"].is_array() => {
            names["shortNames"] = requested["shortNames"].clone()
        }
        None => {}
    }
    for (field, reason) in [("kind", "KindConflict"), ("listKind", "ListKindConflict")] {
        let want = requested[field].as_str().unwrap_or_default();
        if want == accepted[field].as_str().unwrap_or_default() || !kinds.contains(want) {
            names[field] = json!(want);
        } else {
            conflict = Some((reason, format!("{want:?} is already in use")));
        }
    }
    if requested["categories"].is_array() {
        names["categories"] = requested["categories"].clone();
    }
    let established = condition(crd, "Established");
    if !crd["status"].is_object() {
        crd["status"] = json!({});
    }
    let status = &mut crd["status"];
    status["acceptedNames"] = names;
    match conflict {
        None => {
            set_condition(
                status,
                "NamesAccepted",
                true,
                "NoConflicts",
                "no conflicts found",
                now,
            );
            set_condition(
                status,
                "Established",
                true,
                "InitialNamesAccepted",
                "the initial names have been accepted",
                now,
            );
        }
        Some((reason, message)) => {
            set_condition(status, "NamesAccepted", false, reason, &message, now);
            if !established {
                set_condition(
                    status,
                    "Established",
                    false,
                    "NotAccepted",
                    "not all names are accepted",
                    now,
                );
            }
        }
    }
    if let Some(storage) = spec["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["storage"] == true)
        .map(|v| v["name"].clone())
    {
        let stored = &mut status["storedVersions"];
        match stored.as_array_mut() {
            Some(list) if list.contains(&storage) => {}
            Some(list) => list.push(storage),
            None => *stored = json!([storage]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-01-01T00:00:00Z";

    fn crd(plural: &str, kind: &str, short: &[&str]) -> Value {
        json!({
            "metadata": {"name": format!("{plural}.example.com")},
            "spec": {"group": "example.com", "scope": "Namespaced",
                     "names": {"plural": plural, "kind": kind, "shortNames": short},
                     "versions": [{"name": "v1", "served": true, "storage": true}]},
        })
    }

    #[test]
    fn names_are_accepted_and_the_crd_established() {
        let mut c = crd("widgets", "Widget", &["wd"]);
        accept_names(&mut c, &[], NOW);
        let s = &c["status"];
        assert_eq!(s["acceptedNames"]["singular"], "widget");
        assert_eq!(s["acceptedNames"]["listKind"], "WidgetList");
        assert_eq!(s["acceptedNames"]["shortNames"], json!(["wd"]));
        assert_eq!(s["storedVersions"], json!(["v1"]));
        assert!(condition(&c, "NamesAccepted"));
        assert!(condition(&c, "Established"));
        let mut again = c.clone();
        accept_names(&mut again, &[], "2027-01-01T00:00:00Z");
        assert_eq!(again, c, "a second pass changes nothing, not even a time");
    }

    #[test]
    fn a_name_in_use_in_the_group_is_refused_and_the_names_held_stay() {
        let mut first = crd("widgets", "Widget", &["wd"]);
        accept_names(&mut first, &[], NOW);
        let mut second = crd("gadgets", "Gadget", &["wd"]);
        accept_names(&mut second, std::slice::from_ref(&first), NOW);
        assert!(!condition(&second, "NamesAccepted"));
        assert!(!condition(&second, "Established"));
        let c = &second["status"]["conditions"][0];
        assert_eq!(c["reason"], "ShortNamesConflict");
        assert_eq!(c["message"], "\"wd\" is already in use");
        // The other names are accepted; the short names are held back.
        assert_eq!(second["status"]["acceptedNames"]["plural"], "gadgets");
        assert!(second["status"]["acceptedNames"]["shortNames"].is_null());
        // The first CRD keeps what it holds even though the second asks for it.
        let mut kept = first.clone();
        accept_names(&mut kept, &[second], NOW);
        assert!(condition(&kept, "NamesAccepted"));
        // The last conflict found is the one reported.
        let mut third = crd("widgets", "Widget", &[]);
        third["metadata"]["name"] = json!("other.example.com");
        accept_names(&mut third, &[first], NOW);
        assert_eq!(
            third["status"]["conditions"][0]["reason"],
            "ListKindConflict"
        );
    }
}
