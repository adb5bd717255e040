//! `vkube snapshot create NAME file://PATH` and `vkube restore NAME file://PATH`: a virtual
//! cluster on the host, snapshotted and restored from this machine, as vcluster's
//! `vcluster snapshot` and `vcluster restore` do.
//!
//! Both run vkube itself inside the cluster's pods, where the store is: a snapshot is streamed
//! out of a ready replica (`vkube snapshot create -`, read at one revision while the cluster
//! serves); a restore pauses the cluster, runs a one-off pod with the replica's volumes and
//! configuration that reads the snapshot from its stdin (`vkube snapshot restore -`), and resumes
//! the cluster. The file is checked whole on this machine first, so a damaged one changes
//! nothing on the host.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, AttachParams};
use serde_json::Value;
use tokio::io::AsyncReadExt;

use super::host::{Host, explain, is_ready};
use super::one_off::{self, CONFIG, DATA_DIR};
use super::progress::Progress;
use super::{HostFlags, check_name, manage, namespace_of};
use crate::store_tools::snapshot;

/// The vkube binary in the chart's image (its entrypoint).
const VKUBE: &str = "/usr/local/bin/vkube";

/// The local path of a `file://` snapshot location (the only kind so far).
pub fn local_path(url: &str) -> Result<PathBuf> {
    match url.split_once("://") {
        Some(("file", path)) if !path.is_empty() => Ok(PathBuf::from(path)),
        Some(("file", _)) => bail!("{url}: name a file, e.g. file:///backups/team-a.snap"),
        Some((scheme, _)) => bail!(
            "{url}: vkube stores snapshots in local files only (file:///PATH), not {scheme}://"
        ),
        None => bail!("{url}: give a snapshot location as file:///PATH"),
    }
}

/// `vkube snapshot create NAME file://PATH`.
pub async fn create(
    name: &str,
    url: &str,
    namespace: &Option<String>,
    flags: &HostFlags,
) -> Result<()> {
    check_name(name)?;
    let path = local_path(url)?;
    let host = Host::connect(flags).await?;
    let namespace = namespace_of(name, namespace);
    let started = Instant::now();
    let pod = host
        .control_plane_pods(&namespace, name)
        .await?
        .into_iter()
        .find(is_ready)
        .ok_or_else(|| {
            anyhow!(
                "virtual cluster {name} in namespace {namespace} has no ready replica to read from (paused? `vkube resume {name} -n {namespace}`; `vkube list` shows them)"
            )
        })?;
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(host.client.clone(), &namespace);
    let command = [
        VKUBE,
        "snapshot",
        "create",
        "-",
        "--data-dir",
        DATA_DIR,
        "--config",
        CONFIG,
    ];
    let mut process = pods
        .exec(
            &pod_name,
            command,
            &AttachParams::default()
                .container("vkube")
                .stdout(true)
                .stderr(true),
        )
        .await
        .map_err(|e| explain(e, &format!("running vkube in pod {namespace}/{pod_name}")))?;
    let mut stdout = process.stdout().context("the exec's stdout")?;
    let mut stderr = process.stderr().context("the exec's stderr")?;
    let status = process.take_status().context("the exec's status")?;
    // Held in memory (a restore holds every entry in memory anyway), written once complete.
    let mut bytes = Vec::new();
    let (copied, mut messages) = tokio::join!(stdout.read_to_end(&mut bytes), async {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let status = status.await;
    copied.with_context(|| format!("reading the snapshot from pod {namespace}/{pod_name}"))?;
    if let Some(status) = status.filter(|s| s.status.as_deref() != Some("Success")) {
        messages.push_str(status.message.as_deref().unwrap_or_default());
        bail!(
            "the snapshot in pod {namespace}/{pod_name} failed: {}",
            messages.trim()
        );
    }
    // Checked whole here too, in memory, before anything is written: what arrived is exactly
    // what the pod wrote.
    let shown = format!("the snapshot from pod {namespace}/{pod_name}");
    let loaded = snapshot::load_from(std::io::Cursor::new(&bytes), bytes.len() as u64, &shown)?;
    let partial = partial_of(&path);
    std::fs::write(&partial, &bytes).with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, &path)
        .with_context(|| format!("renaming {} to {}", partial.display(), path.display()))?;
    println!(
        "snapshot of virtual cluster {name} (from {pod_name}): {} keys at revision {}, sha256 {}, written to {} in {:.1}s",
        loaded.entries.len(),
        loaded.header.revision,
        loaded.sha256,
        path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn partial_of(path: &Path) -> PathBuf {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    PathBuf::from(partial)
}

/// `vkube restore NAME file://PATH`.
#[derive(clap::Args)]
pub struct RestoreArgs {
    /// The virtual cluster.
    name: String,
    /// The snapshot: file:///PATH on this machine (from `vkube snapshot create NAME file://PATH`
    /// or `vkube snapshot create FILE --store URL`).
    url: String,
    /// Its namespace on the host (default: vkube-NAME).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// How long to wait for each step (pausing, the restore, resuming).
    #[arg(long, default_value = "5m", value_parser = super::parse_timeout)]
    timeout: Duration,
    #[command(flatten)]
    host: HostFlags,
}

impl RestoreArgs {
    /// For `vkube snapshot restore NAME file:///PATH`, the same as `vkube restore`.
    pub fn new(name: String, url: String, namespace: Option<String>, host: HostFlags) -> Self {
        RestoreArgs {
            name,
            url,
            namespace,
            timeout: Duration::from_secs(300),
            host,
        }
    }
}

pub async fn restore(args: RestoreArgs) -> Result<()> {
    let name = args.name.as_str();
    check_name(name)?;
    let path = local_path(&args.url)?;
    // The whole file is checked before the cluster is touched.
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let loaded = snapshot::load_from(
        std::io::Cursor::new(&bytes),
        bytes.len() as u64,
        &path.display().to_string(),
    )?;
    let host = Host::connect(&args.host).await?;
    let namespace = namespace_of(name, &args.namespace);
    let (_, set) = manage::stateful_set(&host, &namespace, name).await?;
    let (template, claimed) = one_off::replica_template(&set)?;
    refuse_embedded_etcd(&host, &namespace, name, &template).await?;
    eprintln!(
        "restoring virtual cluster {name} from {} ({} keys at revision {}, taken {} by vkube {})",
        path.display(),
        loaded.entries.len(),
        loaded.header.revision,
        loaded.header.created,
        loaded.header.vkube_version
    );
    let mut progress = Progress::new();
    let paused_here =
        manage::pause_cluster(&host, &namespace, name, args.timeout, &mut progress).await?;
    let pods: Api<Pod> = Api::namespaced(host.client.clone(), &namespace);
    let job = one_off::Job {
        cluster: name,
        pod_name: format!("{name}-restore"),
        app: "vkube-restore",
        args: [
            "snapshot",
            "restore",
            "-",
            "--data-dir",
            DATA_DIR,
            "--config",
            CONFIG,
            "--force",
        ]
        .map(String::from)
        .to_vec(),
        stdin: true,
        volumes: Vec::new(),
    };
    let result = match one_off::pod(&job, &template, claimed) {
        Ok(pod) => one_off::run(&pods, pod, Some(&bytes), false, args.timeout, &mut progress).await,
        Err(err) => Err(err),
    };
    let output = match result {
        Ok(output) => output,
        Err(err) => {
            progress.finish();
            bail!(
                "{err:#}\nvirtual cluster {name} stays paused: its store may be half-restored (vkube serve refuses such a store); run the same `vkube restore` again, or restore another snapshot"
            );
        }
    };
    progress.done("snapshot restored into the store");
    if paused_here {
        manage::resume_cluster(&host, &namespace, name, args.timeout, &mut progress).await?;
    }
    progress.finish();
    print!("{output}");
    println!(
        "restored virtual cluster {name} from {}{}",
        path.display(),
        if paused_here {
            ""
        } else {
            " (it was paused and stays so: `vkube resume` brings it back)"
        }
    );
    Ok(())
}

/// Embedded etcd keeps one member per replica, each with its own data dir and TLS identity: not
/// restorable in place yet, and found out before the cluster is paused.
async fn refuse_embedded_etcd(
    host: &Host,
    namespace: &str,
    name: &str,
    template: &Value,
) -> Result<()> {
    let Some(secret_name) = template["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == "config")
        .and_then(|v| v["secret"]["secretName"].as_str())
    else {
        return Ok(());
    };
    let secrets: Api<Secret> = Api::namespaced(host.client.clone(), namespace);
    let secret = secrets
        .get(secret_name)
        .await
        .map_err(|e| explain(e, &format!("reading the configuration of {name}")))?;
    let Some(text) = secret.data.as_ref().and_then(|d| d.get("config.yaml")) else {
        return Ok(());
    };
    let text = String::from_utf8_lossy(&text.0);
    let config = crate::config::parse(&text, Path::new("config.yaml"))?;
    if config.embedded_etcd.is_some() {
        bail!(
            "virtual cluster {name} keeps its state in embedded etcd (one member per replica): vkube cannot restore it in place yet; restore the snapshot into a virtual cluster on embedded SQLite, PostgreSQL or an external etcd"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_files_are_snapshot_locations() {
        assert_eq!(
            local_path("file:///b/a.snap").unwrap(),
            PathBuf::from("/b/a.snap")
        );
        assert_eq!(
            local_path("file://rel.snap").unwrap(),
            PathBuf::from("rel.snap")
        );
        for (bad, says) in [
            ("s3://bucket/a", "local files only"),
            ("file://", "name a file"),
            ("/b/a.snap", "file:///PATH"),
        ] {
            let err = local_path(bad).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
