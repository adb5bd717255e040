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
        "certificatesigningrequest-signing" => "csrsigning",
        "endpoints" => "endpoint",
        "endpointslice-mirroring" => "endpointslicemirroring",
        "pod-garbage-collector" => "podgc",
        "root-ca-certificate-publisher" => "root-ca-cert-publisher",
        "replicationcontroller" => "replicationcontroller",
        short => short,
    }
}

/// Every controller name `--controllers` knows: kube-apiserver's own (apiextensions') and
/// kube-controller-manager's.
pub fn known() -> Vec<&'static str> {
    let mut all: Vec<&str> = vkube_controllers::APISERVER_CONTROLLERS.to_vec();
    all.extend(vkube_controllers::CONTROLLERS.iter().map(|(name, _)| *name));
    all
}

/// The leader tasks of the controllers not in `disabled`; EndpointSlices hold at most
/// `max_endpoints_per_slice` endpoints.
pub fn leader_tasks(disabled: &[String], max_endpoints_per_slice: u16) -> Vec<LeaderTask> {
    let apiserver = vkube_controllers::APISERVER_CONTROLLERS
        .iter()
        .filter(|name| !disabled.iter().any(|d| d == *name))
        .map(|&name| {
            LeaderTask(Arc::new(move |api: &InProcess| {
                let api = api.clone();
                tokio::spawn(async move {
                    let ctx = vkube_controllers::Context::new(loopback_client(api));
                    vkube_controllers::run(name, ctx)
                        .expect("a controller of vkube_controllers::APISERVER_CONTROLLERS")
                        .await;
                })
                .abort_handle()
            }))
        });
    let manager = vkube_controllers::CONTROLLERS
        .iter()
        .filter(|(name, _)| !disabled.iter().any(|d| d == name))
        .map(|&(name, account)| {
            LeaderTask(Arc::new(move |api: &InProcess| {
                let api = api.clone();
                tokio::spawn(async move {
                    ensure_account(&api, account).await;
                    let user = user(
                        format!("system:serviceaccount:kube-system:{account}"),
                        &[
                            "system:serviceaccounts",
                            "system:serviceaccounts:kube-system",
                        ],
                    );
                    let ca = api.cluster_ca();
                    let mut ctx = vkube_controllers::Context::new(client(api, user, account));
                    ctx.max_endpoints_per_slice = max_endpoints_per_slice;
                    if name == "csrsigning" {
                        let ca =
                            vkube_controllers::csr_signing::SigningCa::new(ca.cert_pem, ca.key_pem);
                        return vkube_controllers::csr_signing::run(ctx, ca).await;
                    }
                    if name == "root-ca-cert-publisher" {
                        return vkube_controllers::namespace_defaults::run_root_ca_publisher(
                            ctx,
                            ca.cert_pem,
                        )
                        .await;
                    }
                    vkube_controllers::run(name, ctx)
                        .expect("a controller of vkube_controllers::CONTROLLERS")
                        .await;
                })
                .abort_handle()
            }))
        });
    apiserver.chain(manager).collect()
}

fn user(username: String, groups: &[&str]) -> vkube_auth::UserInfo {
    let mut groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
    groups.push("system:authenticated".into());
    vkube_auth::UserInfo {
        username,
        groups,
        ..Default::default()
    }
}

/// The controller's ServiceAccount in kube-system, made as kube-controller-manager's own identity
/// (upstream's client builder does the same), so `kubectl get sa -n kube-system` lists it.
async fn ensure_account(api: &InProcess, account: &str) {
    let kcm = user("system:kube-controller-manager".into(), &[]);
    let accounts: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> = kube::Api::namespaced(
        client(api.clone(), kcm, "kube-controller-manager"),
        "kube-system",
    );
    let sa = serde_json::from_value(serde_json::json!({"metadata": {"name": account}}))
        .expect("a ServiceAccount");
    match accounts.create(&Default::default(), &sa).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(err) => tracing::warn!(%err, account, "creating the controller's service account"),
    }
}

/// Whether the request lists or watches (the server's own reading of the request).
fn is_collection_read(req: &http::Request<kube::client::Body>) -> bool {
    let q = vkube_server::query(req.uri().query());
    let info = vkube_server::RequestInfo::parse(req.method(), req.uri().path(), &q);
    matches!(info.verb.as_str(), "list" | "watch")
}

/// A client whose requests the server serves in this process as `user`, with upstream's
/// User-Agent for `who` (the server names the field manager after its first word). Lists and
/// watches go as `system:kube-controller-manager`, as upstream's shared informers do (its role
/// may list and watch everything; a controller's own role often may not: the disruption
/// controller's cannot list pods); everything else goes as `user`.
fn client(api: InProcess, user: vkube_auth::UserInfo, who: &str) -> kube::Client {
    let informers = self::user("system:kube-controller-manager".into(), &[]);
    let agent = format!("kube-controller-manager/v1.33.0 (linux/amd64) kubernetes/vkube/{who}");
    in_process(api, user, informers, &agent)
}

/// kube-apiserver's loopback client, as its own controllers (apiextensions') use it: every
/// request as `system:apiserver` in group `system:masters`, with kube-apiserver's User-Agent
/// (so managedFields name `kube-apiserver`).
fn loopback_client(api: InProcess) -> kube::Client {
    let loopback = user("system:apiserver".into(), &[vkube_auth::MASTERS]);
    let agent = "kube-apiserver/v1.33.0 (linux/amd64) kubernetes/vkube";
    in_process(api, loopback.clone(), loopback, agent)
}

/// A client whose requests the server serves in this process: lists and watches as
/// `informers`, the rest as `user`, with `agent` as User-Agent.
fn in_process(
    api: InProcess,
    user: vkube_auth::UserInfo,
    informers: vkube_auth::UserInfo,
    agent: &str,
) -> kube::Client {
    let agent = http::HeaderValue::from_str(agent).expect("an ASCII User-Agent");
    let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let (api, agent) = (api.clone(), agent.clone());
        let user = if is_collection_read(&req) {
            informers.clone()
        } else {
            user.clone()
        };
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
        for name in [
            "customresourcedefinition",
            "garbagecollector",
            "resourcequota",
        ] {
            assert_eq!(known().iter().filter(|k| **k == name).count(), 1, "{name}");
        }
        assert_eq!(canonical("endpoints-controller"), "endpoint");
        assert_eq!(canonical("endpointslice-controller"), "endpointslice");
        assert_eq!(
            canonical("endpointslice-mirroring-controller"),
            "endpointslicemirroring"
        );
        for name in ["endpoint", "endpointslice", "endpointslicemirroring"] {
            assert!(known().contains(&name), "{name}");
        }
    }

    #[test]
    fn lists_and_watches_are_told_from_reads_of_one_object() {
        let read = |method: &str, uri: &str| {
            let req = http::Request::builder()
                .method(method)
                .uri(uri)
                .body(kube::client::Body::empty())
                .unwrap();
            is_collection_read(&req)
        };
        for uri in [
            "/api/v1/pods",
            "/api/v1/namespaces/ns/pods?watch=true",
            "/api/v1/namespaces",
            "/apis/apps/v1/deployments",
            "/apis/apps/v1/namespaces/ns/replicasets",
        ] {
            assert!(read("GET", uri), "{uri}");
        }
        for uri in [
            "/api/v1/namespaces/ns",
            "/api/v1/namespaces/ns/pods/p",
            "/api/v1/nodes/n",
            "/apis/apps/v1/namespaces/ns/deployments/d/scale",
            "/version",
        ] {
            assert!(!read("GET", uri), "{uri}");
        }
        assert!(!read("POST", "/api/v1/namespaces/ns/pods"));
    }
}
