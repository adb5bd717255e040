//! `--encryption-provider-config`: kube-apiserver's encryption at rest. The file is read and
//! checked before anything starts (a bad one refuses the start, naming the file and the
//! problem); the store is wrapped as soon as it is opened, so every user of it — the API, the
//! shared watch, the controllers, the compactor — reads plain values and the backend holds
//! encrypted ones. The file is read once: kube-apiserver's
//! `--encryption-provider-config-automatic-reload` is not supported.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use vkube_api::registry::RESOURCES;
use vkube_store::Store;
use vkube_store::transform::{EncryptedStore, EncryptionConfig, GroupResource};

const FLAG: &str = "--encryption-provider-config";

/// The file named by the flag, else by vcluster.yaml's apiServer extraArgs; loaded and checked.
pub(crate) fn from_args(
    flag: Option<&Path>,
    extra_args: &[String],
) -> Result<Option<EncryptionConfig>> {
    let from_extra = extra_args
        .iter()
        .filter_map(|a| a.strip_prefix(FLAG)?.strip_prefix('='))
        .map(PathBuf::from)
        .next_back();
    let Some(path) = flag.map(Path::to_path_buf).or(from_extra) else {
        return Ok(None);
    };
    let config = vkube_store::transform::load(&path)
        .map_err(|e| anyhow::anyhow!("{FLAG} {}: {e}", path.display()))?;
    Ok(Some(config))
}

/// `store` with encryption at rest, when a config is given.
pub(crate) fn wrap(store: Arc<dyn Store>, config: Option<&EncryptionConfig>) -> Arc<dyn Store> {
    match config {
        Some(config) => EncryptedStore::wrap(store, config, prefixes),
        None => store,
    }
}

/// The store key prefixes of a group-resource as vkube lays keys out: a built-in resource
/// under `/registry/<storage>/` (upstream's segment: `services/specs`, `minions`, …), a
/// custom resource under `/registry/<group>/<plural>/`, whether its CRD exists yet or not.
fn prefixes(gr: &GroupResource) -> Vec<String> {
    let (group, resource) = (gr.group.as_str(), gr.resource.as_str());
    let storage = |s: &str| format!("/registry/{s}/");
    match (group, resource) {
        ("*", _) => vec!["/registry/".to_string()],
        (_, "*") => {
            let mut all: Vec<String> = RESOURCES
                .iter()
                .filter(|r| r.group == group)
                .map(|r| storage(r.storage))
                .collect();
            if group.contains('.') {
                // Its custom resources, today's and tomorrow's.
                all.push(storage(group));
            }
            all.sort();
            all.dedup();
            all
        }
        _ => match RESOURCES
            .iter()
            .find(|r| r.group == group && r.plural == resource)
        {
            Some(r) => vec![storage(r.storage)],
            None if group.contains('.') => vec![format!("/registry/{group}/{resource}/")],
            None => vec![storage(resource)],
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(s: &str) -> Vec<String> {
        prefixes(&GroupResource::parse(s))
    }

    #[test]
    fn group_resources_map_to_vkubes_keys() {
        assert_eq!(of("secrets"), ["/registry/secrets/"]);
        assert_eq!(of("services"), ["/registry/services/specs/"]);
        assert_eq!(of("deployments.apps"), ["/registry/deployments/"]);
        assert_eq!(of("ingresses.networking.k8s.io"), ["/registry/ingress/"]);
        assert_eq!(
            of("widgets.example.com"),
            ["/registry/example.com/widgets/"]
        );
        assert_eq!(of("*.*"), ["/registry/"]);
        assert_eq!(of("*.example.com"), ["/registry/example.com/"]);
        let apps = of("*.apps");
        assert!(apps.contains(&"/registry/deployments/".to_string()));
        assert!(apps.contains(&"/registry/statefulsets/".to_string()));
        assert!(!apps.contains(&"/registry/secrets/".to_string()));
        let core = of("*.");
        assert!(core.contains(&"/registry/secrets/".to_string()));
        assert!(core.contains(&"/registry/minions/".to_string()));
        assert!(!core.contains(&"/registry/deployments/".to_string()));
    }

    #[test]
    fn the_flag_wins_over_extra_args_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("enc.yaml");
        std::fs::write(
            &bad,
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers: [{aescbc: {keys: [{name: k, secret: c2hvcnQ=}]}}]\n",
        )
        .unwrap();
        let extra = vec![format!("{FLAG}={}", bad.display())];
        let err = from_args(None, &extra).unwrap_err().to_string();
        assert!(
            err.contains("enc.yaml") && err.contains("secret is not of the expected length"),
            "{err}"
        );
        assert!(from_args(None, &[]).unwrap().is_none());
        let missing = dir.path().join("missing.yaml");
        let err = from_args(Some(&missing), &extra).unwrap_err().to_string();
        assert!(err.contains("missing.yaml"), "{err}");
    }
}
