//! Services whose addresses the host cluster gives. With a host, a virtual Service is reachable
//! only through its host copy, so its ClusterIP must be the host copy's: the create asks the host
//! first and answers with the host's address, as DESIGN rule 9 asks (no second address, no
//! rewrite after the fact). The server only knows that some [`HostServices`] does it; the binary
//! gives the syncer's.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;
use vkube_api::Status;

type Answer<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Makes and updates the host copies of virtual Services.
pub trait HostServices: Send + Sync {
    /// Creates the host copy of `svc` (defaulted, validated, with its uid) and writes the host's
    /// allocations into it: `clusterIP(s)`, `ipFamilies`, `ipFamilyPolicy` and each port's
    /// `nodePort`. A refusal is the host's, in the virtual Service's words.
    fn create<'a>(&'a self, svc: &'a mut Value) -> Answer<'a, Result<(), Status>>;
    /// Carries an update to the host copy and writes back what the host allocated for it (the
    /// `nodePort`s of a Service that became a NodePort one).
    fn update<'a>(&'a self, svc: &'a mut Value) -> Answer<'a, Result<(), Status>>;
    /// Deletes the host copy of a Service that could not be stored.
    fn release<'a>(&'a self, svc: &'a Value) -> Answer<'a, ()>;
}

/// The server's handle on [`HostServices`] (a newtype, so `Config` stays `Debug`).
#[derive(Clone)]
pub struct HostServicesHandle(pub Arc<dyn HostServices>);

impl std::fmt::Debug for HostServicesHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HostServices")
    }
}

/// Whether the host gives `svc` its addresses: every Service that has a ClusterIP. Headless and
/// ExternalName Services live only in the virtual cluster (its DNS answers for them).
pub fn on_host(svc: &Value) -> bool {
    svc["spec"]["type"] != "ExternalName" && svc["spec"]["clusterIP"] != "None"
}

/// The `default/kubernetes` Service when pods run on a host: its ClusterIP is the host Service
/// through which pods reach vkube, and its endpoint the address vkube advertises.
#[derive(Clone, Debug)]
pub struct KubernetesService {
    pub cluster_ip: String,
    pub endpoint: SocketAddr,
}
