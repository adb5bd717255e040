//! The host cluster as the CLI sees it: the user's kubeconfig, a client, and errors that name the
//! fix (no host reachable, RBAC missing).

use anyhow::{Context, Result, anyhow};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use serde_json::Value;

use super::HostFlags;

pub const FIELD_MANAGER: &str = "vkube";

pub struct Host {
    pub client: kube::Client,
    /// The kubeconfig context used (it names the connected context).
    pub context: String,
}

impl Host {
    /// The host of the user's kubeconfig (KUBECONFIG, else ~/.kube/config), checked reachable.
    pub async fn connect(flags: &HostFlags) -> Result<Host> {
        let kubeconfig = kube::config::Kubeconfig::read().map_err(|e| {
            anyhow!(
                "no kubeconfig for the host cluster ({e}); set KUBECONFIG or write ~/.kube/config for the cluster that should run the virtual cluster"
            )
        })?;
        let current = kubeconfig.current_context.clone();
        // Connected to a virtual cluster, the current context is vkube's; the host is the
        // context it was made from (vcluster does the same with its parent context).
        let context = flags
            .context
            .clone()
            .or_else(|| current.as_deref().map(parent_context))
            .context("the kubeconfig has no current context; pass --context NAME")?;
        let options = kube::config::KubeConfigOptions {
            context: Some(context.clone()),
            ..Default::default()
        };
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .with_context(|| format!("kubeconfig context {context:?}"))?;
        let server = config.cluster_url.to_string();
        let client = kube::Client::try_from(config).context("the host cluster's client")?;
        client.apiserver_version().await.map_err(|e| {
            anyhow!(
                "cannot reach the host cluster at {server} (kubeconfig context {context:?}): {e}; check that it is running and that KUBECONFIG or --context names it"
            )
        })?;
        Ok(Host { client, context })
    }

    /// Server-side apply of one object (vkube owns the fields it sets; conflicts are forced, as
    /// `helm upgrade --server-side` does).
    pub async fn apply(&self, object: &Value) -> Result<()> {
        let (api, name) = self.dynamic(object)?;
        let params = PatchParams::apply(FIELD_MANAGER).force();
        api.patch(&name, &params, &Patch::Apply(object))
            .await
            .map_err(|e| explain(e, &format!("applying {}", describe(object))))?;
        Ok(())
    }

    /// Deletes one object; gone already is fine. Returns whether it existed.
    pub async fn delete(&self, object: &Value) -> Result<bool> {
        let (api, name) = self.dynamic(object)?;
        let params = kube::api::DeleteParams::background();
        match api.delete(&name, &params).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
            Err(e) => Err(explain(e, &format!("deleting {}", describe(object)))),
        }
    }

    fn dynamic(&self, object: &Value) -> Result<(Api<DynamicObject>, String)> {
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let kind = object["kind"].as_str().unwrap_or_default();
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
        let name = object["metadata"]["name"]
            .as_str()
            .with_context(|| format!("{kind} without a name"))?
            .to_string();
        let api = match object["metadata"]["namespace"].as_str() {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        };
        Ok((api, name))
    }

    /// The last event about a pod, for a timeout's message.
    pub async fn last_event(&self, namespace: &str, pod: &str) -> Option<String> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        let params = ListParams::default().fields(&format!(
            "involvedObject.kind=Pod,involvedObject.name={pod}"
        ));
        let mut list = events.list(&params).await.ok()?.items;
        list.sort_by_key(|e| {
            e.last_timestamp
                .as_ref()
                .map(|t| t.0)
                .or(e.event_time.as_ref().map(|t| t.0))
        });
        let e = list.pop()?;
        Some(format!(
            "{} {}: {}",
            e.type_.unwrap_or_default(),
            e.reason.unwrap_or_default(),
            e.message.unwrap_or_default()
        ))
    }

    /// The last lines a pod's container wrote before its last restart (for a crash's message).
    pub async fn previous_logs(&self, namespace: &str, pod: &str) -> String {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let params = kube::api::LogParams {
            previous: true,
            tail_lines: Some(8),
            ..Default::default()
        };
        match pods.logs(pod, &params).await {
            Ok(text) => text.trim_end().to_string(),
            Err(e) => format!("(no logs: {e})"),
        }
    }

    /// The virtual cluster's control-plane pods, by ordinal.
    pub async fn control_plane_pods(&self, namespace: &str, name: &str) -> Result<Vec<Pod>> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let mut list = pods
            .list(&ListParams::default().labels(&format!("app=vkube,release={name}")))
            .await
            .map_err(|e| explain(e, &format!("listing pods in namespace {namespace}")))?
            .items;
        list.sort_by_key(|p| {
            p.metadata
                .name
                .as_deref()
                .and_then(|n| n.rsplit_once('-'))
                .and_then(|(_, n)| n.parse::<u32>().ok())
        });
        Ok(list)
    }
}

/// The host context of a context `vkube connect` wrote (`vkube_NAME_NS_HOSTCONTEXT`; names and
/// namespaces are DNS labels, without `_`), or the context itself.
pub fn parent_context(context: &str) -> String {
    context
        .strip_prefix("vkube_")
        .and_then(|rest| rest.splitn(3, '_').nth(2))
        .filter(|host| !host.is_empty())
        .unwrap_or(context)
        .to_string()
}

pub fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn describe(object: &Value) -> String {
    let kind = object["kind"].as_str().unwrap_or("object");
    let name = object["metadata"]["name"].as_str().unwrap_or("?");
    match object["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// A host error with what to do about it: a 403 names the permission to ask for.
pub fn explain(err: kube::Error, doing: &str) -> anyhow::Error {
    match err {
        kube::Error::Api(s) if s.code == 403 => anyhow!(
            "{doing}: the host refused it ({}); the kubeconfig's user needs that permission on the host (for example the `admin` ClusterRole in the namespace, or cluster-admin for ClusterRoles and new namespaces)",
            s.message
        ),
        kube::Error::Api(s) if s.code == 422 || s.code == 400 => anyhow!(
            "{doing}: the host rejected it: {}; check the values named in the message",
            s.message
        ),
        other => anyhow!("{doing}: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connected_context_leads_back_to_its_host() {
        assert_eq!(parent_context("vkube_one_vkube-one_kind_a"), "kind_a");
        assert_eq!(parent_context("admin@host"), "admin@host");
        assert_eq!(parent_context("vkube_x"), "vkube_x");
    }
}
