//! The workload controllers (`vkube-controllers`) wired to the server: each runs on the leader
//! with its own in-process `kube::Client`, which sends every request through the server's whole
//! request path as the controller's service account, as kube-controller-manager does with
//! `--use-service-account-credentials`. So a ReplicaSet's pods are charged to the quota,
//! validated, defaulted and recorded in managedFields under `kube-controller-manager`, and RBAC
//! (upstream's `system:controller:*` roles) limits what each controller may do.

use std::sync::Arc;

use http_body_util::BodyExt;
use vkube_server::{InProcess, LeaderTask};

/// kube-controller-manager's names for the controllers `--controllers` takes (since 1.28 they
/// end in `-controller`; the short names stay accepted), mapped to vkube's.
pub fn canonical(name: &str) -> &str {
    match name.strip_suffix("-controller").unwrap_or(name) {
        "garbage-collector" => "garbagecollector",
        "daemon-set" => "daemonset",
        "replicationcontroller" => "replicationcontroller",
        short => short,
    }
}

/// Every controller name `--controllers` knows: the server's and this crate's.
pub fn known() -> Vec<&'static str> {
    let mut all: Vec<&str> = vkube_server::CONTROLLERS.to_vec();
    all.extend(vkube_controllers::CONTROLLERS.iter().map(|(name, _)| *name));
    all
}

/// The leader tasks of the controllers not in `disabled`.
pub fn leader_tasks(disabled: &[String]) -> Vec<LeaderTask> {
    vkube_controllers::CONTROLLERS
        .iter()
        .filter(|(name, _)| !disabled.iter().any(|d| d == name))
        .map(|&(name, account)| {
            LeaderTask(Arc::new(move |api: &InProcess| {
                let ctx = vkube_controllers::Context::new(client(api.clone(), account));
                vkube_controllers::start(name, ctx)
                    .expect("a controller of vkube_controllers::CONTROLLERS")
                    .abort_handle()
            }))
        })
        .collect()
}

/// A client whose requests the server serves in this process as `system:serviceaccount:
/// kube-system:ACCOUNT`.
fn client(api: InProcess, account: &'static str) -> kube::Client {
    let user = vkube_auth::UserInfo {
        username: format!("system:serviceaccount:kube-system:{account}"),
        groups: vec![
            "system:serviceaccounts".into(),
            "system:serviceaccounts:kube-system".into(),
            "system:authenticated".into(),
        ],
        ..Default::default()
    };
    // Upstream's User-Agent: the server names the field manager after its first word.
    let agent = http::HeaderValue::from_str(&format!(
        "kube-controller-manager/v1.33.0 (linux/amd64) kubernetes/vkube/system:serviceaccount:kube-system:{account}"
    ))
    .expect("an ASCII User-Agent");
    let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let (api, user, agent) = (api.clone(), user.clone(), agent.clone());
        async move {
            let (mut parts, body) = req.into_parts();
            let body = body.collect().await?.to_bytes();
            parts.headers.insert(http::header::USER_AGENT, agent);
            let resp = api.call(user, http::Request::from_parts(parts, body)).await;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(resp)
        }
    });
    kube::Client::new(service, "default")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_names_and_short_names_are_the_same_controller() {
        assert_eq!(canonical("deployment-controller"), "deployment");
        assert_eq!(canonical("deployment"), "deployment");
        assert_eq!(
            canonical("garbage-collector-controller"),
            "garbagecollector"
        );
        assert_eq!(canonical("garbagecollector"), "garbagecollector");
        assert_eq!(canonical("daemonset-controller"), "daemonset");
        assert_eq!(
            canonical("ttl-after-finished-controller"),
            "ttl-after-finished"
        );
        assert!(known().contains(&"statefulset") && known().contains(&"namespace"));
    }
}
