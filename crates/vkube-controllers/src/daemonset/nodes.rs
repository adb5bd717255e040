//! Which nodes a DaemonSet's pods belong on (upstream's `NodeShouldRunDaemonPod`: the template's
//! nodeName, nodeSelector and required node affinity, and the node's NoSchedule/NoExecute taints
//! against the template's tolerations plus the ones every daemon pod gets), and how a pod is
//! placed on its node (a required node affinity on the node's name, as upstream since 1.12).

use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodSpec, Taint, Toleration,
};

/// The field a daemon pod's node affinity names its node by (`metav1.ObjectNameField`).
pub const NAME_FIELD: &str = "metadata.name";

fn toleration(key: &str, effect: &str) -> Toleration {
    Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Toleration::default()
    }
}

/// Upstream's `AddOrUpdateDaemonPodTolerations`: daemon pods stay on nodes that are not ready,
/// unreachable, under disk, memory or PID pressure, or cordoned, and (with the host's network)
/// nodes whose network is not ready.
pub fn add_daemon_tolerations(spec: &mut PodSpec) {
    let mut wanted = vec![
        toleration("node.kubernetes.io/not-ready", "NoExecute"),
        toleration("node.kubernetes.io/unreachable", "NoExecute"),
        toleration("node.kubernetes.io/disk-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/memory-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/pid-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if spec.host_network == Some(true) {
        wanted.push(toleration(
            "node.kubernetes.io/network-unavailable",
            "NoSchedule",
        ));
    }
    for t in wanted {
        add_or_update_toleration(spec, t);
    }
}

/// Upstream's `AddOrUpdateTolerationInPodSpec`: a toleration of the same key, operator, value
/// and effect is replaced (its `tolerationSeconds` goes), otherwise `t` is appended.
fn add_or_update_toleration(spec: &mut PodSpec, t: Toleration) {
    let list = spec.tolerations.get_or_insert_with(Vec::new);
    let same = |o: &Toleration| {
        o.key == t.key && o.operator == t.operator && o.value == t.value && o.effect == t.effect
    };
    match list.iter_mut().find(|o| same(o)) {
        Some(existing) => *existing = t,
        None => list.push(t),
    }
}

/// Upstream's `Toleration.ToleratesTaint`.
fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if t.effect
        .as_deref()
        .is_some_and(|e| !e.is_empty() && e != taint.effect)
    {
        return false;
    }
    if t.key
        .as_deref()
        .is_some_and(|k| !k.is_empty() && k != taint.key)
    {
        return false;
    }
    match t.operator.as_deref().unwrap_or_default() {
        "" | "Equal" => {
            t.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default()
        }
        "Exists" => true,
        _ => false,
    }
}

/// Whether a taint with one of `effects` is tolerated by none of `tolerations`.
fn untolerated(taints: &[Taint], tolerations: &[Toleration], effects: &[&str]) -> bool {
    taints
        .iter()
        .filter(|taint| effects.contains(&taint.effect.as_str()))
        .any(|taint| !tolerations.iter().any(|t| tolerates(t, taint)))
}

/// A requirement on a node's labels (`matchExpressions`), as upstream's label selector reads it;
/// `None` when it cannot be parsed.
fn label_requirement(r: &NodeSelectorRequirement, node: &Node) -> Option<bool> {
    let value = node.metadata.labels.as_ref().and_then(|l| l.get(&r.key));
    let values = r.values.as_deref().unwrap_or_default();
    let number = |s: &str| s.parse::<i64>().ok();
    Some(match r.operator.as_str() {
        "In" if !values.is_empty() => value.is_some_and(|v| values.contains(v)),
        "NotIn" if !values.is_empty() => value.is_none_or(|v| !values.contains(v)),
        "Exists" if values.is_empty() => value.is_some(),
        "DoesNotExist" if values.is_empty() => value.is_none(),
        op @ ("Gt" | "Lt") if values.len() == 1 => {
            let bound = number(&values[0])?;
            match value.and_then(|v| number(v)) {
                None => false,
                Some(v) if op == "Gt" => v > bound,
                Some(v) => v < bound,
            }
        }
        _ => return None,
    })
}

/// A requirement on a node's fields (`matchFields`: only `metadata.name`, `In` or `NotIn`).
fn field_requirement(r: &NodeSelectorRequirement, node: &Node) -> Option<bool> {
    if r.key != NAME_FIELD {
        return None;
    }
    let name = node.metadata.name.as_deref().unwrap_or_default();
    let values = r.values.as_deref().unwrap_or_default();
    match r.operator.as_str() {
        "In" if values.len() == 1 => Some(values[0] == name),
        "NotIn" if values.len() == 1 => Some(values[0] != name),
        _ => None,
    }
}

/// One term: every expression and field requirement holds; an empty term, or one that does not
/// parse, matches nothing.
fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs
        .iter()
        .all(|r| label_requirement(r, node) == Some(true))
        && fields
            .iter()
            .all(|r| field_requirement(r, node) == Some(true))
}

/// Upstream's `GetRequiredNodeAffinity(pod).Match(node)`: the nodeSelector's labels and any one
/// of the required node affinity's terms.
pub fn fits_affinity(spec: &PodSpec, node: &Node) -> bool {
    let labels = node.metadata.labels.as_ref();
    let selector_ok = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    selector_ok
        && required.is_none_or(|r| r.node_selector_terms.iter().any(|t| term_matches(t, node)))
}

/// Whether a new daemon pod should run on `node`, and whether one already there should keep
/// running (upstream's `NodeShouldRunDaemonPod`): a taint the pod does not tolerate keeps new
/// pods away, and evicts running ones only if its effect is NoExecute.
pub fn should_run(template: &PodSpec, node: &Node) -> (bool, bool) {
    let node_name = node.metadata.name.as_deref().unwrap_or_default();
    if template
        .node_name
        .as_deref()
        .is_some_and(|n| !n.is_empty() && n != node_name)
    {
        return (false, false);
    }
    let mut spec = template.clone();
    add_daemon_tolerations(&mut spec);
    if !fits_affinity(&spec, node) {
        return (false, false);
    }
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default();
    let tolerations = spec.tolerations.as_deref().unwrap_or_default();
    if untolerated(taints, tolerations, &["NoSchedule", "NoExecute"]) {
        return (false, !untolerated(taints, tolerations, &["NoExecute"]));
    }
    (true, true)
}

/// Upstream's `ReplaceDaemonSetPodNodeNameNodeAffinity`: the pod's required node affinity
/// becomes the one term `metadata.name In [node]` (the node already satisfies the others);
/// preferred terms and pod (anti-)affinity stay.
pub fn pin_to_node(affinity: Option<Affinity>, node: &str) -> Affinity {
    let required = NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_fields: Some(vec![NodeSelectorRequirement {
                key: NAME_FIELD.into(),
                operator: "In".into(),
                values: Some(vec![node.to_string()]),
            }]),
            match_expressions: None,
        }],
    };
    let mut affinity = affinity.unwrap_or_default();
    let node_affinity = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    node_affinity.required_during_scheduling_ignored_during_execution = Some(required);
    affinity
}

/// The node a daemon pod is for (upstream's `GetTargetNodeName`): its nodeName once bound, else
/// the node its `metadata.name In [node]` affinity names.
pub fn target_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(name) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(name.clone());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    for term in terms {
        for r in term.match_fields.iter().flatten() {
            if r.key == NAME_FIELD && r.operator == "In" {
                let values = r.values.as_deref().unwrap_or_default();
                return (values.len() == 1).then(|| values[0].clone());
            }
        }
    }
    None
}
