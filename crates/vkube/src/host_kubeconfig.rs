//! Inside a pod of the host, vkube publishes the virtual cluster's admin kubeconfig in host
//! Secret `vc-NAME` (vcluster's name and keys), where `vkube connect` and `kubectl get secret`
//! find it. Every replica checks it at start: all share one CA, so the first one writes it and
//! the others find it valid; a Secret from another CA (a cluster re-created under the same name)
//! is replaced.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};

pub struct Publisher {
    pub client: kube::Client,
    pub namespace: String,
    pub name: String,
    pub kubeconfig: PathBuf,
    /// The API port inside the pod (a port forward reaches it as localhost:PORT).
    pub port: u16,
}

impl Publisher {
    /// Waits for this replica's admin kubeconfig, then publishes it; retries until it has.
    pub async fn run(self) {
        loop {
            match self.publish().await {
                Ok(()) => return,
                Err(err) => tracing::debug!(%err, "publishing the kubeconfig Secret; retrying"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn publish(&self) -> Result<()> {
        let (ca, cert, key) = credentials(&self.kubeconfig)?;
        let secret_name = format!("vc-{}", self.name);
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let existing = secrets.get_opt(&secret_name).await?;
        let same_ca = existing
            .as_ref()
            .and_then(|s| s.data.as_ref())
            .and_then(|d| d.get("certificate-authority"))
            .is_some_and(|c| c.0 == ca.as_bytes());
        if same_ca {
            return Ok(());
        }
        let b64 = |s: &str| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(s)
        };
        let server = format!("https://localhost:{}", self.port);
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {n}\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\n\
             users:\n- name: {n}\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n\
             contexts:\n- name: {n}\n  context:\n    cluster: {n}\n    user: {n}\ncurrent-context: {n}\n",
            b64(&ca),
            b64(&cert),
            b64(&key),
            n = self.name,
        );
        let data = [
            ("config", config),
            ("certificate-authority", ca),
            ("client-certificate", cert),
            ("client-key", key),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.into_bytes())))
        .collect();
        // Owned by the front Service (the chart's), so that whatever removes the release
        // (`vkube delete`, `helm uninstall`) takes the credentials with it, through the host's GC.
        let services: Api<k8s_openapi::api::core::v1::Service> =
            Api::namespaced(self.client.clone(), &self.namespace);
        let owner = services.get_opt(&self.name).await?.and_then(|s| {
            Some(
                k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                    api_version: "v1".into(),
                    kind: "Service".into(),
                    name: self.name.clone(),
                    uid: s.metadata.uid?,
                    ..Default::default()
                },
            )
        });
        let mut secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(secret_name.clone()),
                namespace: Some(self.namespace.clone()),
                owner_references: owner.map(|o| vec![o]),
                labels: Some(
                    [
                        ("app".to_string(), "vkube".to_string()),
                        ("release".into(), self.name.clone()),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
            data: Some(data),
            ..Default::default()
        };
        match existing {
            None => match secrets.create(&PostParams::default(), &secret).await {
                Ok(_) => {}
                // Another replica was first; the next round checks its CA.
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e.into()),
            },
            Some(old) => {
                secret.metadata.resource_version = old.metadata.resource_version;
                secrets
                    .replace(&secret_name, &PostParams::default(), &secret)
                    .await?;
            }
        }
        eprintln!(
            "vkube: published the admin kubeconfig in host Secret {}/{secret_name}",
            self.namespace
        );
        Ok(())
    }
}

/// (CA, client certificate, client key), PEM, from the admin kubeconfig vkube wrote (its own
/// format: one `KEY-data: BASE64` line each).
fn credentials(path: &Path) -> Result<(String, String, String)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let field = |key: &str| -> Result<String> {
        use base64::Engine;
        let data = text
            .lines()
            .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix(": "))
            .with_context(|| format!("{} has no {key}", path.display()))?;
        let bytes = base64::engine::general_purpose::STANDARD.decode(data.trim())?;
        Ok(String::from_utf8(bytes)?)
    };
    Ok((
        field("certificate-authority-data")?,
        field("client-certificate-data")?,
        field("client-key-data")?,
    ))
}
