//! What a type's strategy sets on create besides metadata and defaults, as upstream's
//! `PrepareForCreate` does: a Namespace's phase and finalizer, a Pod's phase and QoS class, a Job's
//! generated selector, and no client-written status where a status subresource owns it.

use serde_json::{Value, json};

use crate::{Resource, Status};

/// What a type sets on create besides metadata, as upstream's PrepareForCreate does.
/// A DaemonSet's template generation (upstream's `deprecated.daemonset.template.generation`).
pub const TEMPLATE_GENERATION: &str = "deprecated.daemonset.template.generation";

pub fn prepare_for_create(resource: &Resource, obj: &mut Value) {
    match (resource.group, resource.plural) {
        ("", "namespaces") => {
            let name = obj["metadata"]["name"].clone();
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = name;
            obj["status"] = json!({"phase": "Active"});
            // Upstream requires its own finalizer on every new namespace, whatever was asked.
            let finalizers = &mut obj["spec"]["finalizers"];
            match finalizers.as_array_mut() {
                Some(f) if f.iter().any(|f| f == "kubernetes") => {}
                Some(f) => f.push(json!("kubernetes")),
                None => *finalizers = json!(["kubernetes"]),
            }
        }
        ("", "pods") => {
            let qos = qos_class(&obj["spec"]);
            obj["status"] = json!({"phase": "Pending", "qosClass": qos});
        }
        // Upstream clears the status and its decoder's defaults give the phase back on every
        // read: a new claim or volume is Pending until a binder says otherwise.
        ("", "persistentvolumeclaims" | "persistentvolumes") => {
            obj["status"] = json!({"phase": "Pending"});
        }
        ("batch", "jobs") if obj["spec"]["manualSelector"] != true => {
            // Upstream generates the selector from the new uid, and labels the template to match.
            let uid = obj["metadata"]["uid"].clone();
            let name = obj["metadata"]["name"].clone();
            obj["spec"]["selector"] =
                json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
            let labels = &mut obj["spec"]["template"]["metadata"]["labels"];
            for (key, value) in [
                ("batch.kubernetes.io/controller-uid", &uid),
                ("batch.kubernetes.io/job-name", &name),
                ("controller-uid", &uid),
                ("job-name", &name),
            ] {
                labels[key] = value.clone();
            }
            // Upstream's defaulting gives a Job without labels its template's, and it runs on
            // every read of the stored Job, after the labels above were generated: so a
            // client sees them on the Job too (`kubectl get job -o yaml`, `describe`).
            if obj["metadata"]["labels"]
                .as_object()
                .is_none_or(|l| l.is_empty())
            {
                obj["metadata"]["labels"] = obj["spec"]["template"]["metadata"]["labels"].clone();
            }
            obj.as_object_mut().map(|m| m.remove("status"));
        }
        ("apps", "daemonsets") => {
            // apps/v1 carries the internal spec.templateGeneration in this annotation; it starts
            // at 1 (or what the client gave) and the DaemonSet controller labels pods with it.
            let given = obj["metadata"]["annotations"][TEMPLATE_GENERATION]
                .as_str()
                .and_then(|g| g.parse::<i64>().ok())
                .filter(|g| *g >= 1)
                .unwrap_or(1);
            obj["metadata"]["annotations"][TEMPLATE_GENERATION] = json!(given.to_string());
            obj.as_object_mut().map(|m| m.remove("status"));
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            // Upstream starts a CRD's status afresh, with the storage version stored.
            let stored: Vec<Value> = obj["spec"]["versions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|v| v["storage"] == true)
                .map(|v| v["name"].clone())
                .collect();
            obj["status"] =
                json!({"acceptedNames": {"plural": "", "kind": ""}, "storedVersions": stored});
        }
        _ if resource.subresource("status").is_some() => {
            if let Some(map) = obj.as_object_mut() {
                map.remove("status");
            }
        }
        _ => {}
    }
}

/// A Pod's quality-of-service class, from its containers' requests and limits (defaults applied).
fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .flat_map(|l| spec[*l].as_array().into_iter().flatten())
        .collect();
    let set = |c: &Value, what: &str| {
        c["resources"][what]
            .as_object()
            .is_some_and(|m| !m.is_empty())
    };
    if containers
        .iter()
        .all(|c| !set(c, "requests") && !set(c, "limits"))
    {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        ["cpu", "memory"].iter().all(|r| {
            let limit = &c["resources"]["limits"][*r];
            !limit.is_null() && c["resources"]["requests"][*r] == *limit
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// What a write through a subresource may change of the stored object `old`, taken from the
/// written object `obj`: `status` its status, `finalize` a Namespace's finalizers, `approval` a
/// CSR's conditions, `ephemeralcontainers` and `resize` their parts of a Pod.
pub fn apply_part(
    resource: &Resource,
    subresource: &str,
    old: &Value,
    obj: &Value,
) -> Result<Value, Status> {
    let mut new = old.clone();
    match subresource {
        "status" => {
            new["status"] = obj["status"].clone();
            // Upstream's status strategies reset the spec, not the metadata: annotations (and
            // labels, except on the apps workloads) written through `/status` are kept.
            // Custom resources keep none: their status strategy copies the old object whole.
            let mut carried = vec!["annotations"];
            if resource.group != "apps" {
                carried.push("labels");
            }
            if resource.custom {
                carried.clear();
            }
            for field in carried {
                match obj["metadata"].get(field) {
                    Some(v) if !v.is_null() => new["metadata"][field] = v.clone(),
                    _ => drop(
                        new["metadata"]
                            .as_object_mut()
                            .and_then(|m| m.remove(field)),
                    ),
                }
            }
        }
        "finalize" => new["spec"]["finalizers"] = obj["spec"]["finalizers"].clone(),
        "approval" => new["status"]["conditions"] = obj["status"]["conditions"].clone(),
        "ephemeralcontainers" => {
            let before = old["spec"]["ephemeralContainers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let after = obj["spec"]["ephemeralContainers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for c in &before {
                if !after.contains(c) {
                    let name = old["metadata"]["name"].as_str().unwrap_or_default();
                    let message = format!(
                        "Forbidden: existing ephemeral containers {:?} may not be removed or changed",
                        c["name"].as_str().unwrap_or_default()
                    );
                    let causes = vec![crate::object::cause(
                        "FieldValueForbidden",
                        "spec.ephemeralContainers",
                        message,
                    )];
                    return Err(Status::invalid(resource.kind, resource.group, name, causes));
                }
            }
            new["spec"]["ephemeralContainers"] = Value::Array(after);
        }
        "resize" => {
            let wanted = obj["spec"]["containers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for c in new["spec"]["containers"]
                .as_array_mut()
                .into_iter()
                .flatten()
            {
                if let Some(w) = wanted.iter().find(|w| w["name"] == c["name"]) {
                    for field in ["resources", "resizePolicy"] {
                        if !w[field].is_null() {
                            c[field] = w[field].clone();
                        }
                    }
                }
            }
        }
        _ => {}
    }
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_new_namespace_carries_the_kubernetes_finalizer() {
        let namespaces = crate::registry::find("", "v1", "namespaces").unwrap();
        for (asked, kept) in [
            (json!(null), json!(["kubernetes"])),
            (json!([]), json!(["kubernetes"])),
            (
                json!(["example.com/x"]),
                json!(["example.com/x", "kubernetes"]),
            ),
            (
                json!(["kubernetes", "example.com/x"]),
                json!(["kubernetes", "example.com/x"]),
            ),
        ] {
            let mut ns = json!({"metadata": {"name": "n"}, "spec": {"finalizers": asked}});
            prepare_for_create(namespaces, &mut ns);
            assert_eq!(ns["spec"]["finalizers"], kept);
            assert_eq!(ns["status"]["phase"], "Active");
        }
    }

    #[test]
    fn a_daemonsets_template_generation_starts_at_one_and_follows_the_template() {
        let sets = crate::registry::find("apps", "v1", "daemonsets").unwrap();
        let mut ds = json!({"metadata": {"name": "d"}, "spec": {"template": {"spec": {"a": 1}}}});
        prepare_for_create(sets, &mut ds);
        assert_eq!(ds["metadata"]["annotations"][TEMPLATE_GENERATION], "1");
        let mut same = ds.clone();
        same["spec"]["minReadySeconds"] = json!(5);
        crate::object::prepare_update(&ds, &mut same).unwrap();
        assert_eq!(same["metadata"]["annotations"][TEMPLATE_GENERATION], "1");
        let mut changed = ds.clone();
        changed["spec"]["template"]["spec"]["a"] = json!(2);
        crate::object::prepare_update(&ds, &mut changed).unwrap();
        assert_eq!(changed["metadata"]["annotations"][TEMPLATE_GENERATION], "2");
    }

    #[test]
    fn a_job_without_labels_gets_its_templates_generated_ones() {
        let jobs = crate::registry::find("batch", "v1", "jobs").unwrap();
        let mut job = json!({"metadata": {"name": "j", "uid": "u1"},
                             "spec": {"template": {"metadata": {"labels": {"app": "x"}}}}});
        prepare_for_create(jobs, &mut job);
        let labels = &job["metadata"]["labels"];
        assert_eq!(labels["app"], "x");
        assert_eq!(labels["batch.kubernetes.io/controller-uid"], "u1");
        assert_eq!(labels["job-name"], "j");
        let mut labelled = json!({"metadata": {"name": "j", "uid": "u1", "labels": {"mine": "1"}},
                                  "spec": {"template": {}}});
        prepare_for_create(jobs, &mut labelled);
        assert_eq!(labelled["metadata"]["labels"], json!({"mine": "1"}));
    }
}
