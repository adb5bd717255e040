//! One-off pods that run vkube next to a paused virtual cluster's state: a restore (`vkube
//! restore`) and a store move (`vkube create --upgrade` with another backing store). Each is the
//! replica's own pod template (image, security context, configuration, certificates, volumes),
//! with replica 0's volume, running one vkube command to completion.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::AsyncBufReadExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams, DeleteParams, LogParams, PostParams};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use super::host::explain;
use super::progress::Progress;

/// Where the chart mounts the replica's state and its vcluster.yaml.
pub const DATA_DIR: &str = "/data";
pub const CONFIG: &str = "/etc/vkube/config.yaml";

/// What a one-off pod runs.
pub struct Job<'a> {
    /// The virtual cluster.
    pub cluster: &'a str,
    /// The pod's name, and its `app` label.
    pub pod_name: String,
    pub app: &'a str,
    /// vkube's arguments.
    pub args: Vec<String>,
    /// Whether the command reads standard input (sent by [`run`]).
    pub stdin: bool,
    /// More volumes and where the container mounts them: (volume, volumeMount).
    pub volumes: Vec<(Value, Value)>,
}

/// A virtual cluster's StatefulSet as a one-off pod needs it: its pod template, and whether it
/// claims a `data` volume per replica.
pub fn replica_template(set: &StatefulSet) -> Result<(Value, bool)> {
    let spec = set.spec.as_ref();
    let template = spec
        .map(|s| serde_json::to_value(&s.template))
        .transpose()?
        .unwrap_or_default();
    let claimed = spec
        .and_then(|s| s.volume_claim_templates.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.metadata.name.as_deref() == Some("data")));
    Ok((template, claimed))
}

/// The pod of `job`: the StatefulSet's pod `template`, with replica 0's claim `data-NAME-0` as
/// its `data` volume when the StatefulSet has a claim template (`claimed`).
pub fn pod(job: &Job<'_>, template: &Value, claimed: bool) -> Result<Pod> {
    let mut spec = template["spec"].clone();
    spec["restartPolicy"] = json!("Never");
    let mut volumes: Vec<Value> = spec["volumes"].as_array().cloned().unwrap_or_default();
    let containers = spec["containers"]
        .as_array_mut()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| anyhow!("the StatefulSet of {} has no containers", job.cluster))?;
    containers.truncate(1);
    let container = containers[0].as_object_mut().ok_or_else(|| {
        anyhow!(
            "the StatefulSet of {} has a malformed container",
            job.cluster
        )
    })?;
    for key in ["readinessProbe", "livenessProbe", "startupProbe", "ports"] {
        container.remove(key);
    }
    container.insert("args".into(), json!(job.args));
    if job.stdin {
        container.insert("stdin".into(), json!(true));
        container.insert("stdinOnce".into(), json!(true));
    }
    if claimed {
        // Replica 0's volume: the one an embedded SQLite store lives on.
        volumes.push(json!({"name": "data", "persistentVolumeClaim": {"claimName": format!("data-{}-0", job.cluster)}}));
    }
    let mut mounts: Vec<Value> = container
        .get("volumeMounts")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (volume, mount) in &job.volumes {
        volumes.push(volume.clone());
        mounts.push(mount.clone());
    }
    container.insert("volumeMounts".into(), Value::Array(mounts));
    spec["volumes"] = Value::Array(volumes);
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": job.pod_name, "labels": {"app": job.app, "release": job.cluster}},
        "spec": spec,
    }))?)
}

/// Creates `pod`, sends it `stdin` if any, shows its output as it comes (`follow`), and returns
/// its log once it succeeded; an error with its log when it failed.
pub async fn run(
    pods: &Api<Pod>,
    pod: Pod,
    stdin: Option<&[u8]>,
    follow: bool,
    timeout: Duration,
    progress: &mut Progress,
) -> Result<String> {
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    // A pod left by an interrupted run goes first.
    if pods.get_opt(&pod_name).await?.is_some() {
        pods.delete(&pod_name, &DeleteParams::background()).await?;
        wait_for(pods, &pod_name, timeout, "the previous pod to go", |p| {
            p.is_none()
        })
        .await?;
    }
    pods.create(&PostParams::default(), &pod)
        .await
        .map_err(|e| explain(e, &format!("creating pod {pod_name}")))?;
    progress.waiting(format!("pod {pod_name} starting"));
    wait_for(pods, &pod_name, timeout, "the pod to run", |p| {
        p.and_then(|p| p.status.as_ref()?.phase.clone())
            .is_some_and(|phase| phase != "Pending")
    })
    .await?;
    if let Some(bytes) = stdin {
        let mut process = pods
            .attach(
                &pod_name,
                &AttachParams::default()
                    .container("vkube")
                    .stdin(true)
                    .stdout(true)
                    .stderr(true),
            )
            .await
            .map_err(|e| explain(e, &format!("attaching to pod {pod_name}")))?;
        let mut writer = process.stdin().context("the pod's stdin")?;
        writer.write_all(bytes).await.context("sending the data")?;
        writer.shutdown().await?;
        drop(writer);
        progress.done(format!("{} bytes sent to pod {pod_name}", bytes.len()));
        let _ = tokio::time::timeout(timeout, process.join()).await;
    }
    if follow {
        // Its progress lines, live (the log ends when the container does).
        let params = LogParams {
            follow: true,
            ..Default::default()
        };
        if let Ok(stream) = pods.log_stream(&pod_name, &params).await {
            let mut lines = stream.lines();
            while let Ok(Some(Ok(line))) =
                tokio::time::timeout(timeout, futures_util::StreamExt::next(&mut lines)).await
            {
                progress.note(&line);
            }
        }
    }
    let finished = wait_for(pods, &pod_name, timeout, "the pod to finish", |p| {
        p.and_then(|p| p.status.as_ref()?.phase.clone())
            .is_some_and(|phase| phase == "Succeeded" || phase == "Failed")
    })
    .await?;
    let logs = pods
        .logs(&pod_name, &Default::default())
        .await
        .unwrap_or_default();
    let phase = finished.and_then(|p| p.status?.phase).unwrap_or_default();
    let _ = pods.delete(&pod_name, &DeleteParams::background()).await;
    if phase != "Succeeded" {
        bail!("pod {pod_name} failed:\n{}", logs.trim_end());
    }
    Ok(logs)
}

/// Polls pod `name` until `done` holds, for at most `timeout`; returns the last pod read.
async fn wait_for(
    pods: &Api<Pod>,
    name: &str,
    timeout: Duration,
    what: &str,
    done: impl Fn(Option<&Pod>) -> bool,
) -> Result<Option<Pod>> {
    let deadline = Instant::now() + timeout;
    loop {
        let pod = pods
            .get_opt(name)
            .await
            .map_err(|e| explain(e, &format!("reading pod {name}")))?;
        if done(pod.as_ref()) {
            return Ok(pod);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {}s waiting for {what}", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pod_is_the_replicas_pod_on_replica_0s_volume_running_one_command() {
        let template = json!({"spec": {
            "containers": [{"name": "vkube", "image": "vkube.local/vkube:dev", "args": ["serve"],
                "readinessProbe": {}, "ports": [{"containerPort": 8443}],
                "volumeMounts": [{"name": "config", "mountPath": "/etc/vkube"}]}],
            "volumes": [{"name": "config", "secret": {"secretName": "vc-config-a"}}],
            "securityContext": {"runAsUser": 65532},
        }});
        let job = Job {
            cluster: "a",
            pod_name: "a-restore".into(),
            app: "vkube-restore",
            args: vec!["snapshot".into(), "restore".into()],
            stdin: true,
            volumes: vec![(
                json!({"name": "next", "secret": {"secretName": "a-next"}}),
                json!({"name": "next", "mountPath": "/etc/vkube-next"}),
            )],
        };
        let pod = serde_json::to_value(pod(&job, &template, true).unwrap()).unwrap();
        let c = &pod["spec"]["containers"][0];
        assert_eq!(c["args"][1], "restore");
        assert_eq!(c["stdin"], true);
        assert!(c.get("readinessProbe").is_none() && c.get("ports").is_none());
        assert_eq!(c["volumeMounts"][1]["mountPath"], "/etc/vkube-next");
        assert_eq!(pod["spec"]["restartPolicy"], "Never");
        assert_eq!(pod["spec"]["securityContext"]["runAsUser"], 65532);
        assert_eq!(
            pod["spec"]["volumes"][1]["persistentVolumeClaim"]["claimName"],
            "data-a-0"
        );
        assert_eq!(pod["spec"]["volumes"][2]["secret"]["secretName"], "a-next");
        assert_eq!(pod["metadata"]["labels"]["app"], "vkube-restore");
    }
}
