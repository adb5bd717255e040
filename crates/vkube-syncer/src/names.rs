//! Host names of virtual objects, and the labels and annotations that tie the two (DESIGN rule 8).
//!
//! vcluster names a host object `NAME-x-NAMESPACE-x-CLUSTER`, which is ambiguous: `a-x-b` in
//! namespace `c` and `a` in namespace `b-x-c` get one host name. Here the host name is a readable
//! prefix (name and namespace, cut to fit) followed by a hash of the whole tuple (kind, namespace,
//! name, cluster), so two virtual objects share a host name only if their 50-bit hashes collide;
//! and the syncer never adopts a host object whose annotations name another virtual object, so
//! even that collision is reported, never merged.

use aws_lc_rs::digest;
use std::collections::BTreeMap;

/// The label that marks every host object of one virtual cluster (its value: the cluster name).
pub const CLUSTER_LABEL: &str = "vkube.dev/cluster";
/// The virtual object's kind, as a label, so one list finds one kind's host objects.
pub const KIND_LABEL: &str = "vkube.dev/kind";
/// The virtual namespace of a host pod, as a label: a host Service selects one namespace's pods.
pub const NAMESPACE_LABEL: &str = "vkube.dev/namespace";
/// Annotations naming the virtual object.
pub const NAME_ANNOTATION: &str = "vkube.dev/name";
pub const NAMESPACE_ANNOTATION: &str = "vkube.dev/namespace";
pub const UID_ANNOTATION: &str = "vkube.dev/uid";
/// Label and annotation keys under this prefix are the syncer's: a tenant's are dropped.
const OWN_PREFIX: &str = "vkube.dev/";

/// The longest name each kind's host object may have: a DNS label (63) for Services and for
/// pods (whose name is also their default hostname), a DNS subdomain (253) for the rest.
pub fn max_len(kind: &str) -> usize {
    match kind {
        "Service" | "Pod" => 63,
        _ => 253,
    }
}

/// The host name of the virtual object `kind` `namespace`/`name` of cluster `cluster`.
pub fn host_name(kind: &str, namespace: &str, name: &str, cluster: &str) -> String {
    let hash = tuple_hash(&[kind, namespace, name, cluster]);
    let room = max_len(kind) - hash.len() - 1;
    let mut prefix: String = format!("{name}-{namespace}")
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '-' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .take(room)
        .collect();
    // A DNS label neither starts nor ends with '-' (the hash ends it; the prefix starts it).
    while prefix.ends_with('-') {
        prefix.pop();
    }
    let prefix = prefix.trim_start_matches('-');
    if prefix.is_empty() {
        format!("v-{hash}")
    } else {
        format!("{prefix}-{hash}")
    }
}

/// Ten lowercase base32 characters (50 bits) of SHA-256 over the NUL-joined parts: NUL never
/// occurs in a Kubernetes name, so distinct tuples hash distinct inputs.
fn tuple_hash(parts: &[&str]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let digest = digest::digest(&digest::SHA256, parts.join("\0").as_bytes());
    let bytes = digest.as_ref();
    let mut bits: u64 = 0;
    for b in &bytes[..8] {
        bits = (bits << 8) | u64::from(*b);
    }
    (0..10)
        .map(|i| ALPHABET[((bits >> (59 - 5 * i)) & 31) as usize] as char)
        .collect()
}

/// A tenant's labels or annotations without any key of the syncer's own prefix, so a tenant
/// cannot forge ownership (DESIGN rule 10).
pub fn tenant_only(map: Option<&BTreeMap<String, String>>) -> BTreeMap<String, String> {
    map.into_iter()
        .flatten()
        .filter(|(k, _)| !k.starts_with(OWN_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The labels that mark a host object as this cluster's copy of a virtual `kind`.
pub fn ownership_labels(kind: &str, cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (CLUSTER_LABEL.to_string(), cluster.to_string()),
        (KIND_LABEL.to_string(), kind.to_ascii_lowercase()),
    ])
}

/// The label selector of this cluster's host objects of `kind`.
pub fn selector(kind: &str, cluster: &str) -> String {
    format!(
        "{CLUSTER_LABEL}={cluster},{KIND_LABEL}={}",
        kind.to_ascii_lowercase()
    )
}

/// The annotations naming the virtual object.
pub fn ownership_annotations(namespace: &str, name: &str, uid: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAMESPACE_ANNOTATION.to_string(), namespace.to_string()),
        (NAME_ANNOTATION.to_string(), name.to_string()),
        (UID_ANNOTATION.to_string(), uid.to_string()),
    ])
}

/// The virtual object (namespace, name, uid) a host object's annotations name, if they do.
pub fn virtual_of(
    annotations: Option<&BTreeMap<String, String>>,
) -> Option<(String, String, String)> {
    let a = annotations?;
    Some((
        a.get(NAMESPACE_ANNOTATION)?.clone(),
        a.get(NAME_ANNOTATION)?.clone(),
        a.get(UID_ANNOTATION)?.clone(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_dns_label(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    }

    #[test]
    fn vclusters_ambiguous_pair_gets_two_host_names() {
        // vcluster maps both to "a-x-b-x-c-x-vc".
        let one = host_name("Pod", "c", "a-x-b", "vc");
        let two = host_name("Pod", "b-x-c", "a", "vc");
        assert_ne!(one, two);
        // Where even the readable parts coincide, the hash tells them apart.
        let (three, four) = (
            host_name("Pod", "c", "a-b", "vc"),
            host_name("Pod", "b-c", "a", "vc"),
        );
        assert_eq!(three.rsplit_once('-').unwrap().0, "a-b-c");
        assert_eq!(four.rsplit_once('-').unwrap().0, "a-b-c");
        assert_ne!(three, four);
    }

    #[test]
    fn the_name_is_a_pure_function_of_the_tuple() {
        let a = host_name("Pod", "default", "web-0", "team-a");
        assert_eq!(a, host_name("Pod", "default", "web-0", "team-a"));
        assert_ne!(a, host_name("Pod", "default", "web-0", "team-b"));
        assert_ne!(a, host_name("Service", "default", "web-0", "team-a"));
        assert!(a.starts_with("web-0-default-"), "{a}");
    }

    #[test]
    fn names_fit_every_limit() {
        let long_name = "n".repeat(253);
        let long_ns = "s".repeat(63);
        for kind in ["Pod", "Service"] {
            let h = host_name(kind, &long_ns, &long_name, "vc");
            assert!(is_dns_label(&h), "{h}");
        }
        let h = host_name("ConfigMap", &long_ns, &long_name, "vc");
        assert!(h.len() <= 253, "{}", h.len());
        // Dots (allowed in pod and ConfigMap names) and a trailing cut at '-' stay valid.
        let h = host_name("Pod", "ns", "a.b.c", "vc");
        assert!(is_dns_label(&h), "{h}");
        let h = host_name("Pod", "x", &format!("{}-", "a".repeat(51)), "vc");
        assert!(is_dns_label(&h), "{h}");
    }

    #[test]
    fn many_names_do_not_collide() {
        let mut seen = std::collections::HashSet::new();
        for ns in 0..50 {
            for name in 0..200 {
                assert!(seen.insert(host_name(
                    "Pod",
                    &format!("ns{ns}"),
                    &format!("p{name}"),
                    "vc"
                )));
            }
        }
    }

    #[test]
    fn tenants_cannot_set_the_syncers_keys() {
        let tenant = BTreeMap::from([
            ("app".to_string(), "web".to_string()),
            (CLUSTER_LABEL.to_string(), "other".to_string()),
            (UID_ANNOTATION.to_string(), "forged".to_string()),
        ]);
        let kept = tenant_only(Some(&tenant));
        assert_eq!(kept.len(), 1);
        assert_eq!(kept["app"], "web");
    }

    #[test]
    fn ownership_round_trips() {
        let a = ownership_annotations("ns", "name", "uid-1");
        assert_eq!(
            virtual_of(Some(&a)),
            Some(("ns".into(), "name".into(), "uid-1".into()))
        );
        assert_eq!(virtual_of(None), None);
        assert_eq!(
            selector("Pod", "vc"),
            "vkube.dev/cluster=vc,vkube.dev/kind=pod"
        );
    }
}
