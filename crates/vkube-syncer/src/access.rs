//! What the syncer may read on the host outside its namespace, found out once per run.
//!
//! The syncer's Role (deploy/host-rbac.yaml) covers its host namespace. Host nodes and persistent
//! volumes are cluster-scoped: reading them needs the optional ClusterRole, which vcluster's chart
//! also grants only with `sync.fromHost.nodes.enabled`. Without it the host answers 403, and the
//! syncer works without that read, as vcluster does by default: virtual nodes are fake nodes
//! (nodes.rs) and a virtual volume is built from its host claim (volumes.rs).
//!
//! The decision is taken once per syncer run, at the first 403, logged once, and not asked again
//! in that run: a ClusterRole granted later takes effect at the next run (vkube restarted, or
//! another replica leading). A permission that is there is used; nothing is probed up front.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// A cluster-scoped host read the syncer can do without.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read {
    /// get/list of host nodes: without it, virtual nodes are fake nodes.
    Nodes,
    /// get of host persistent volumes: without it, a virtual volume is built from its host claim.
    Volumes,
}

/// One syncer run's knowledge of the host's refusals, and of the virtual cluster's version
/// (asked once, for fake nodes' kubelet version).
#[derive(Debug, Default)]
pub struct HostAccess {
    nodes_refused: AtomicBool,
    volumes_refused: AtomicBool,
    pub virtual_version: tokio::sync::OnceCell<String>,
}

impl HostAccess {
    fn flag(&self, read: Read) -> &AtomicBool {
        match read {
            Read::Nodes => &self.nodes_refused,
            Read::Volumes => &self.volumes_refused,
        }
    }

    /// Whether the syncer still tries `read` in this run.
    pub fn allowed(&self, read: Read) -> bool {
        !self.flag(read).load(Ordering::Relaxed)
    }

    /// Whether `err` is the host's refusal (403) of `read`. The first one switches this run to
    /// working without `read` and is logged, once; any other error is the caller's.
    pub fn refused(&self, read: Read, err: &kube::Error) -> bool {
        if !forbidden(err) {
            return false;
        }
        if !self.flag(read).swap(true, Ordering::Relaxed) {
            match read {
                Read::Nodes => tracing::info!(
                    %err,
                    "the host refuses reading its nodes (no ClusterRole, as vcluster's default): \
                     virtual nodes are fake nodes for this run"
                ),
                Read::Volumes => tracing::info!(
                    %err,
                    "the host refuses reading its persistent volumes (no ClusterRole): virtual \
                     volumes are built from their host claims, without the host volume's source, \
                     for this run"
                ),
            }
        }
        true
    }
}

/// A 403 Forbidden from the host.
pub fn forbidden(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 403)
}

type Runs = Mutex<HashMap<(String, String), Arc<HostAccess>>>;

fn runs() -> &'static Runs {
    static RUNS: OnceLock<Runs> = OnceLock::new();
    RUNS.get_or_init(Default::default)
}

/// The current run's access of the syncer of `config` (its host namespace and cluster name).
pub fn of(config: &crate::Config) -> Arc<HostAccess> {
    let key = (config.host_namespace.clone(), config.cluster.clone());
    let mut runs = runs().lock().unwrap_or_else(|e| e.into_inner());
    runs.entry(key).or_default().clone()
}

/// A new run of the syncer of `config`: everything is tried again.
pub fn start(config: &crate::Config) {
    let key = (config.host_namespace.clone(), config.cluster.clone());
    let mut runs = runs().lock().unwrap_or_else(|e| e.into_inner());
    runs.insert(key, Arc::default());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("nodes \"n\" is forbidden", "Forbidden")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn the_first_403_decides_for_the_run_and_only_for_its_read() {
        let access = HostAccess::default();
        assert!(access.allowed(Read::Nodes) && access.allowed(Read::Volumes));
        // Other errors are not refusals: the read is tried again.
        assert!(!access.refused(Read::Nodes, &status(404)));
        assert!(!access.refused(Read::Nodes, &status(500)));
        assert!(access.allowed(Read::Nodes));
        assert!(access.refused(Read::Nodes, &status(403)));
        assert!(!access.allowed(Read::Nodes));
        assert!(access.allowed(Read::Volumes));
        // A second refusal changes nothing (and logs nothing).
        assert!(access.refused(Read::Nodes, &status(403)));
        assert!(!access.allowed(Read::Nodes));
        assert!(access.refused(Read::Volumes, &status(403)));
        assert!(!access.allowed(Read::Volumes));
    }
}
