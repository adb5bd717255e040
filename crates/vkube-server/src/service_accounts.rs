//! The ServiceAccount admission plugin, as kube-apiserver 1.33 runs it on every pod create: the
//! pod's service account must exist, its image pull secrets are added, and, unless the pod or
//! the account opts out, a projected `kube-api-access-*` volume with a bound token, the cluster's
//! CA bundle and the namespace is mounted into every container at the well-known path. The
//! syncer (or a kubelet) turns that volume into files; in-cluster clients read them.

use serde_json::{Value, json};
use vkube_api::{Status, registry};

use crate::rest::{Ctx, store_status};

/// Where in-cluster clients (client-go's `rest.InClusterConfig`) look for the token and CA.
pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Upstream's token lifetime for the projected volume: an hour and 7 s, so the kubelet's refresh
/// at 80 % never lands on an hour boundary.
const TOKEN_SECONDS: i64 = 3607;
/// The alphabet of apimachinery's `rand.String`: no vowels, no look-alike digits.
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Admits a pod about to be created (defaulted, so `spec.serviceAccountName` is set).
pub(crate) async fn admit_pod(ctx: &Ctx<'_>, name: &str, pod: &mut Value) -> Result<(), Status> {
    // A mirror pod (a kubelet's static pod) may not use a service account; upstream skips it.
    if pod["metadata"]["annotations"]["kubernetes.io/config.mirror"].is_string() {
        return Ok(());
    }
    let namespace = ctx.info.namespace.clone();
    let account = pod["spec"]["serviceAccountName"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    let sa = lookup(ctx, &namespace, &account).await?.ok_or_else(|| {
        Status::forbidden(
            "pods",
            "",
            name,
            &format!(
                "error looking up service account {namespace}/{account}: serviceaccount \"{account}\" not found"
            ),
        )
    })?;
    let spec = &mut pod["spec"];
    if spec["imagePullSecrets"]
        .as_array()
        .is_none_or(|s| s.is_empty())
        && let Some(secrets) = sa["imagePullSecrets"].as_array().filter(|s| !s.is_empty())
    {
        spec["imagePullSecrets"] = json!(secrets);
    }
    let automount = spec["automountServiceAccountToken"]
        .as_bool()
        .or(sa["automountServiceAccountToken"].as_bool())
        .unwrap_or(true);
    if automount {
        mount_token(spec);
    }
    Ok(())
}

/// The account, from the store. The `default` account is made by the namespace controller right
/// after its namespace, so a pod created in the same instant may look a few times, as upstream's
/// plugin does (10 tries, 100–200 ms apart).
async fn lookup(ctx: &Ctx<'_>, namespace: &str, account: &str) -> Result<Option<Value>, Status> {
    let resource =
        registry::find("", "v1", "serviceaccounts").expect("serviceaccounts are built in");
    let key = resource.key(namespace, account);
    let tries = if account == "default" { 10 } else { 1 };
    for attempt in 0..tries {
        if attempt > 0 {
            let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]) % 100;
            tokio::time::sleep(std::time::Duration::from_millis(100 + jitter)).await;
        }
        if let Some(kv) = ctx.api.store.get(&key, None).await.map_err(store_status)? {
            return serde_json::from_slice(&kv.value).map(Some).map_err(|e| {
                Status::internal(format!("service account {namespace}/{account}: {e}"))
            });
        }
    }
    Ok(None)
}

/// Adds the projected token volume and its mount in every container and init container, unless
/// a volume is already mounted at the path (the pod brings its own token).
fn mount_token(spec: &mut Value) {
    let containers = |spec: &Value| -> Vec<Value> {
        ["initContainers", "containers"]
            .iter()
            .flat_map(|list| spec[list].as_array().cloned().unwrap_or_default())
            .collect()
    };
    let mounted = containers(spec).iter().any(|c| {
        c["volumeMounts"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["mountPath"] == MOUNT_PATH))
    });
    if mounted {
        return;
    }
    let taken: Vec<String> = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str().map(str::to_string))
        .collect();
    let name = loop {
        let candidate = format!("kube-api-access-{}", suffix());
        if !taken.contains(&candidate) {
            break candidate;
        }
    };
    let volume = json!({
        "name": name,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": TOKEN_SECONDS, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
        },
    });
    match spec["volumes"].as_array_mut() {
        Some(volumes) => volumes.push(volume),
        None => spec["volumes"] = json!([volume]),
    }
    let mount = json!({"name": name, "readOnly": true, "mountPath": MOUNT_PATH});
    for list in ["initContainers", "containers"] {
        // `get_mut`, not indexing: indexing a missing key would write `initContainers: null`.
        let containers = spec.get_mut(list).and_then(Value::as_array_mut);
        for c in containers.into_iter().flatten() {
            match c["volumeMounts"].as_array_mut() {
                Some(mounts) => mounts.push(mount.clone()),
                None => c["volumeMounts"] = json!([mount]),
            }
        }
    }
}

/// Five characters of apimachinery's alphabet, as `rand.String(5)`.
fn suffix() -> String {
    uuid::Uuid::new_v4().as_bytes()[..5]
        .iter()
        .map(|b| SUFFIX_ALPHABET[usize::from(*b) % SUFFIX_ALPHABET.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_container_mounts_the_token_volume() {
        let mut spec = json!({
            "containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "x", "volumeMounts": [{"name": "d", "mountPath": "/d"}]}],
            "initContainers": [{"name": "i", "image": "x"}],
            "volumes": [{"name": "d", "emptyDir": {}}],
        });
        mount_token(&mut spec);
        let volumes = spec["volumes"].as_array().unwrap();
        assert_eq!(volumes.len(), 2);
        let name = volumes[1]["name"].as_str().unwrap();
        assert!(
            name.starts_with("kube-api-access-") && name.len() == 21,
            "{name}"
        );
        let sources = &volumes[1]["projected"]["sources"];
        assert_eq!(sources[0]["serviceAccountToken"]["expirationSeconds"], 3607);
        assert_eq!(sources[1]["configMap"]["name"], "kube-root-ca.crt");
        assert_eq!(
            sources[2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"],
            "metadata.namespace"
        );
        for c in ["containers", "initContainers"]
            .iter()
            .flat_map(|l| spec[l].as_array().unwrap())
        {
            let mounts = c["volumeMounts"].as_array().unwrap();
            let m = mounts.last().unwrap();
            assert_eq!(m["mountPath"], MOUNT_PATH);
            assert_eq!(m["name"], name);
            assert_eq!(m["readOnly"], true);
        }
    }

    #[test]
    fn a_pod_without_init_containers_gets_no_null_list() {
        let mut spec = json!({"containers": [{"name": "a", "image": "x"}]});
        mount_token(&mut spec);
        assert!(spec.get("initContainers").is_none(), "{spec}");
    }

    #[test]
    fn a_pod_with_its_own_token_mount_gets_none() {
        let mut spec = json!({
            "containers": [{"name": "a", "image": "x", "volumeMounts": [{"name": "mine", "mountPath": MOUNT_PATH}]}],
            "volumes": [{"name": "mine", "secret": {"secretName": "s"}}],
        });
        let before = spec.clone();
        mount_token(&mut spec);
        assert_eq!(spec, before);
    }

    #[test]
    fn suffixes_use_apimachinerys_alphabet() {
        for _ in 0..100 {
            let s = suffix();
            assert_eq!(s.len(), 5);
            assert!(s.bytes().all(|b| SUFFIX_ALPHABET.contains(&b)), "{s}");
        }
    }
}
