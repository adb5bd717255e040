//! `vkube create --upgrade` with another `controlPlane.backingStore`: the state moves with the
//! cluster instead of the new replicas starting on an empty store, which is how a vcluster user
//! lost a cluster's state to an upgrade (vcluster #2794). The cluster is paused, a one-off pod
//! with replica 0's volume runs `vkube store migrate` from the store the old configuration names
//! into the one the new configuration names (its progress shown as it goes), and the upgrade
//! goes on. The old store is left as it was: a SQLite database stays on its volume.

use std::time::Duration;

use anyhow::{Result, bail};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};

use super::host::{Host, explain};
use super::manage;
use super::one_off::{self, CONFIG, DATA_DIR};
use super::progress::Progress;
use super::render::Store;
use super::values::{self, Reader};

/// Where the one-off pod mounts the new configuration.
const NEXT_CONFIG_DIR: &str = "/etc/vkube-next";

/// A backing store as a move sees it: its kind and what names it (a database URL, an etcd
/// endpoint), so that pointing at another database is a move too.
#[derive(Debug, PartialEq)]
pub struct StoreOf {
    kind: Store,
    target: String,
}

impl StoreOf {
    pub fn of(values: &Value) -> Result<StoreOf> {
        let kind = Store::of(values)?;
        let r = Reader(values);
        let target = match kind {
            Store::ExternalDatabase => {
                r.string("controlPlane.backingStore.database.external.dataSource")?
            }
            Store::ExternalEtcd => r.string("controlPlane.backingStore.etcd.external.endpoint")?,
            Store::EmbeddedSqlite | Store::EmbeddedEtcd => String::new(),
        };
        Ok(StoreOf { kind, target })
    }

    fn shown(&self) -> String {
        let kind = match self.kind {
            Store::EmbeddedSqlite => "embedded SQLite",
            Store::EmbeddedEtcd => "embedded etcd",
            Store::ExternalEtcd => "external etcd",
            Store::ExternalDatabase => "external database",
        };
        match self.kind {
            Store::ExternalEtcd => format!("{kind} {}", self.target),
            // Without its password.
            Store::ExternalDatabase => match self.target.parse::<vkube_store::StoreUrl>() {
                Ok(url) => format!("{kind} {}", crate::redact(&url)),
                Err(_) => kind.to_string(),
            },
            _ => kind.to_string(),
        }
    }
}

/// Whether moving from `from` to `to` is supported, and if not, why.
fn refuse(name: &str, from: &StoreOf, to: &StoreOf) -> Result<()> {
    let (f, t) = (from.shown(), to.shown());
    if from.kind == Store::EmbeddedEtcd || to.kind == Store::EmbeddedEtcd {
        bail!(
            "vkube create --upgrade would move virtual cluster {name} from {f} to {t}: vkube cannot yet move state into or out of embedded etcd members in place; keep controlPlane.backingStore as it is"
        );
    }
    if to.kind == Store::EmbeddedSqlite {
        bail!(
            "vkube create --upgrade would move virtual cluster {name} from {f} to {t}: vkube cannot yet move state back into embedded SQLite in place; keep controlPlane.backingStore as it is"
        );
    }
    Ok(())
}

/// Moves the state of virtual cluster `name` from the store `old` values name to the one `new`
/// values name, leaving it paused with its StatefulSet deleted (the caller applies the new one;
/// a StatefulSet's volume claims cannot change in place).
pub async fn move_state(
    host: &Host,
    namespace: &str,
    name: &str,
    (old, new): (&Value, &Value),
    timeout: Duration,
    progress: &mut Progress,
) -> Result<()> {
    let (from, to) = (StoreOf::of(old)?, StoreOf::of(new)?);
    refuse(name, &from, &to)?;
    let (sets, set) = manage::stateful_set(host, namespace, name).await?;
    let (template, claimed) = one_off::replica_template(&set)?;
    eprintln!(
        "moving the state of virtual cluster {name} from {} to {}",
        from.shown(),
        to.shown()
    );
    manage::pause_cluster(host, namespace, name, timeout, progress).await?;
    // The new configuration travels in a Secret (it may hold a database password).
    let secret_name = format!("{name}-store-move");
    let secrets: Api<Secret> = Api::namespaced(host.client.clone(), namespace);
    let _ = secrets.delete(&secret_name, &DeleteParams::default()).await;
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": secret_name, "labels": {"app": "vkube-store-move", "release": name}},
        "stringData": {"config.yaml": values::to_yaml(new)?},
    }))?;
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .map_err(|e| explain(e, &format!("creating Secret {secret_name}")))?;
    let job = one_off::Job {
        cluster: name,
        pod_name: format!("{name}-store-move"),
        app: "vkube-store-move",
        args: [
            "store",
            "migrate",
            "--from-data-dir",
            DATA_DIR,
            "--from-config",
            CONFIG,
            "--to-data-dir",
            DATA_DIR,
            "--to-config",
            &format!("{NEXT_CONFIG_DIR}/config.yaml"),
        ]
        .map(String::from)
        .to_vec(),
        stdin: false,
        volumes: vec![(
            json!({"name": "next-config", "secret": {"secretName": secret_name}}),
            json!({"name": "next-config", "mountPath": NEXT_CONFIG_DIR, "readOnly": true}),
        )],
    };
    let pods: Api<Pod> = Api::namespaced(host.client.clone(), namespace);
    let result = match one_off::pod(&job, &template, claimed) {
        Ok(pod) => one_off::run(&pods, pod, None, true, timeout, progress).await,
        Err(err) => Err(err),
    };
    let _ = secrets.delete(&secret_name, &DeleteParams::default()).await;
    if let Err(err) = result {
        bail!(
            "{err:#}\nvirtual cluster {name} stays paused on {} (nothing of it was changed there); fix the cause and run the same `vkube create --upgrade` again, or `vkube resume {name} -n {namespace}` to go back",
            from.shown()
        );
    }
    progress.done(format!("state moved to {}", to.shown()));
    // The new StatefulSet may claim volumes differently; the old one's claims stay.
    sets.delete(name, &DeleteParams::orphan())
        .await
        .map_err(|e| explain(e, &format!("replacing StatefulSet {name}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(sets: &[&str]) -> Value {
        let mut v = values::defaults();
        for s in sets {
            values::apply_set(&mut v, s).unwrap();
        }
        v
    }

    #[test]
    fn a_move_is_a_change_of_kind_or_of_what_names_the_store() {
        let sqlite = StoreOf::of(&values(&[])).unwrap();
        let pg = |url: &str| {
            StoreOf::of(&values(&[
                "controlPlane.backingStore.database.external.enabled=true",
                &format!("controlPlane.backingStore.database.external.dataSource={url}"),
            ]))
            .unwrap()
        };
        assert_ne!(sqlite, pg("postgres://u:p@db/a"));
        assert_ne!(pg("postgres://u:p@db/a"), pg("postgres://u:p@db/b"));
        assert_eq!(pg("postgres://u:p@db/a"), pg("postgres://u:p@db/a"));
        assert!(!pg("postgres://u:secret@db/a").shown().contains("secret"));
        refuse("c", &sqlite, &pg("postgres://u:p@db/a")).unwrap();
        let etcd = StoreOf::of(&values(&[
            "controlPlane.backingStore.etcd.embedded.enabled=true",
        ]))
        .unwrap();
        let err = refuse("c", &sqlite, &etcd).unwrap_err().to_string();
        assert!(
            err.contains("embedded etcd") && err.contains("keep controlPlane.backingStore"),
            "{err}"
        );
        let err = refuse("c", &pg("postgres://u:p@db/a"), &sqlite)
            .unwrap_err()
            .to_string();
        assert!(err.contains("back into embedded SQLite"), "{err}");
    }
}
