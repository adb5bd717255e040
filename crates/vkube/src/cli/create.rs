//! `vkube create NAME`: the chart rendered and applied to the host as a Helm release, then
//! waited on replica by replica, then connected.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

use super::host::{Host, explain, is_ready};
use super::progress::{Progress, seconds};
use super::release::{self, Release};
use super::render::{self, CaPair};
use super::{HostFlags, check_name, namespace_of, values};

/// The label on a namespace `vkube create` made, so `vkube delete` knows it may remove it.
pub const CREATED_FOR_LABEL: &str = "vkube.dev/created-for";

#[derive(clap::Args)]
pub struct CreateArgs {
    /// The virtual cluster's name (the release's, the StatefulSet's and the host Service's).
    pub name: String,
    /// The host namespace (default: vkube-NAME).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// A values file: vcluster.yaml's schema (repeatable; later files win).
    #[arg(short = 'f', long = "values")]
    pub values: Vec<PathBuf>,
    /// A value as KEY=VALUE, Helm's syntax (repeatable; after the files).
    #[arg(long = "set")]
    pub set: Vec<String>,
    /// Connect once it is ready (write a kubeconfig context and switch to it).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub connect: bool,
    /// Change an existing virtual cluster to these values (a new Helm revision).
    #[arg(long)]
    pub upgrade: bool,
    /// Expose the API through a LoadBalancer Service (controlPlane.service.spec.type).
    #[arg(long)]
    pub expose: bool,
    /// How long to wait for the replicas to be ready.
    #[arg(long, default_value = "5m", value_parser = super::parse_timeout)]
    pub timeout: Duration,
    /// Print the manifest that would be applied, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub host: HostFlags,
}

pub async fn run(args: CreateArgs) -> Result<()> {
    check_name(&args.name)?;
    let namespace = namespace_of(&args.name, &args.namespace);
    let mut config = values::user_values(&args.values, &args.set)?;
    if args.expose {
        values::apply_set(&mut config, "controlPlane.service.spec.type=LoadBalancer")?;
    }
    let mut merged = values::defaults();
    values::merge(&mut merged, config.clone());
    // Bad values fail here, before anything reaches the host.
    render::validate(&merged)?;
    check_config(&merged)?;
    if args.dry_run {
        let ca = generate_ca()?;
        let rendered = render::render(&args.name, &namespace, &merged, &ca)?;
        print!("{}", render::manifest(&rendered)?);
        return Ok(());
    }

    let host = Host::connect(&args.host).await?;
    let mut progress = Progress::new();
    let name = args.name.as_str();

    progress.waiting(format!("namespace {namespace}"));
    let made_namespace = ensure_namespace(&host, &namespace, name).await?;
    progress.done(format!(
        "namespace {namespace} {}",
        if made_namespace { "created" } else { "exists" }
    ));

    let revisions = release::revisions(&host.client, &namespace, name).await?;
    let previous = match revisions.last() {
        Some(secret) => Some(release::from_secret(secret)?),
        None => None,
    };
    if let Some(previous) = &previous {
        if previous.chart != release::CHART_NAME {
            bail!(
                "namespace {namespace} has a Helm release {name} of chart {:?}, not a virtual cluster; choose another name or namespace",
                previous.chart
            );
        }
        if !args.upgrade {
            bail!(
                "virtual cluster {name} already exists in namespace {namespace}; to change it run `vkube create {name} -n {namespace} --upgrade` with the new values, or `vkube connect {name} -n {namespace}` to use it"
            );
        }
    }

    // Another backing store: the state moves to it first (never a silent start on an empty one).
    if let Some(previous) = &previous {
        let mut old = values::defaults();
        values::merge(&mut old, previous.config.clone());
        if super::store_move::StoreOf::of(&old)? != super::store_move::StoreOf::of(&merged)? {
            super::store_move::move_state(
                &host,
                &namespace,
                name,
                (&old, &merged),
                args.timeout,
                &mut progress,
            )
            .await?;
        }
    }
    let ca = existing_ca(&host, &namespace, name).await?;
    let ca = match ca {
        Some(ca) => ca,
        None => generate_ca()?,
    };
    let rendered = render::render(name, &namespace, &merged, &ca)?;
    progress.waiting("applying objects");
    for item in &rendered {
        host.apply(&helm_owned(&item.object, name, &namespace))
            .await?;
    }
    let manifest = render::manifest(&rendered)?;
    // An upgrade that drops an object (a ClusterRole no longer asked for) deletes it.
    if let Some(previous) = &previous {
        let keep: Vec<_> = rendered.iter().map(|r| identity(&r.object)).collect();
        for old in release::manifest_objects(&previous.manifest)? {
            if !keep.contains(&identity(&old)) {
                host.delete(&old).await?;
            }
        }
    }
    record_release(
        &host,
        &namespace,
        name,
        config,
        manifest,
        &revisions,
        previous.as_ref(),
    )
    .await?;
    progress.done(format!(
        "{} objects applied, Helm release {name} revision {}",
        rendered.len(),
        previous.as_ref().map_or(1, |p| p.version + 1)
    ));

    let replicas =
        values::Reader(&merged).int("controlPlane.statefulSet.highAvailability.replicas")?;
    wait_ready(
        &host,
        &namespace,
        name,
        replicas as usize,
        args.timeout,
        &mut progress,
    )
    .await?;

    progress.waiting("kubeconfig");
    let deadline = Instant::now() + args.timeout;
    super::connect::fetch_kubeconfig(&host, &namespace, name, deadline).await?;
    progress.done("kubeconfig fetched");
    let total = progress.total();
    progress.finish();
    eprintln!(
        "virtual cluster {name} is ready in namespace {namespace} ({} in all)",
        seconds(total)
    );
    if args.connect {
        super::connect::connect_after_create(&host, name, &namespace).await?;
    } else {
        eprintln!("connect with: vkube connect {name} -n {namespace}");
    }
    Ok(())
}

/// The values as `vkube serve` will read them (the chart mounts them as its `--config`): what
/// it would refuse at start is refused here, before anything is applied.
fn check_config(merged: &Value) -> Result<()> {
    let yaml = values::to_yaml(merged)?;
    let config = crate::config::parse(&yaml, std::path::Path::new("the values"))?;
    let mut flags = vkube_auth::oidc::Flags::default();
    for arg in &config.api_server_args {
        flags
            .set(arg)
            .map_err(|e| anyhow::anyhow!("controlPlane.distro.k8s.apiServer.extraArgs: {e}"))?;
    }
    Ok(())
}

/// Namespace, creating it (labelled as ours) if missing. Returns whether it was created.
async fn ensure_namespace(host: &Host, namespace: &str, name: &str) -> Result<bool> {
    let namespaces: Api<Namespace> = Api::all(host.client.clone());
    match namespaces.get_opt(namespace).await {
        Ok(Some(ns)) if ns.metadata.deletion_timestamp.is_some() => bail!(
            "namespace {namespace} is being deleted; wait until it is gone, or choose another with -n"
        ),
        Ok(Some(_)) => Ok(false),
        // Without permission to read namespaces, go on: the applies below say what is missing.
        Err(kube::Error::Api(s)) if s.code == 403 => Ok(false),
        Err(e) => Err(explain(e, &format!("reading namespace {namespace}"))),
        Ok(None) => {
            let ns: Namespace = serde_json::from_value(json!({
                "metadata": {"name": namespace, "labels": {CREATED_FOR_LABEL: name}}
            }))?;
            match namespaces.create(&PostParams::default(), &ns).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(explain(e, &format!("creating namespace {namespace}"))),
            }
        }
    }
}

/// The CA of an earlier install (an upgrade keeps it, so certificates and kubeconfigs hold).
async fn existing_ca(host: &Host, namespace: &str, name: &str) -> Result<Option<CaPair>> {
    let secrets: Api<Secret> = Api::namespaced(host.client.clone(), namespace);
    let secret = secrets
        .get_opt(&format!("{name}-certs"))
        .await
        .map_err(|e| explain(e, &format!("reading Secret {namespace}/{name}-certs")))?;
    let Some(data) = secret.and_then(|s| s.data) else {
        return Ok(None);
    };
    let text = |k: &str| {
        data.get(k)
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
            .filter(|s| !s.is_empty())
    };
    Ok(match (text("ca.crt"), text("ca.key")) {
        (Some(cert_pem), Some(key_pem)) => Some(CaPair { cert_pem, key_pem }),
        _ => None,
    })
}

/// An object as `helm install` applies it: the manifest's object plus the ownership metadata
/// Helm adds (and `helm upgrade` and `helm uninstall` check before touching an object).
fn helm_owned(object: &Value, release: &str, namespace: &str) -> Value {
    let mut object = object.clone();
    let meta = &mut object["metadata"];
    meta["labels"]["app.kubernetes.io/managed-by"] = json!("Helm");
    meta["annotations"]["meta.helm.sh/release-name"] = json!(release);
    meta["annotations"]["meta.helm.sh/release-namespace"] = json!(namespace);
    object
}

fn generate_ca() -> Result<CaPair> {
    let ca = vkube_server::identity::Ca::generate().context("generating the cluster CA")?;
    Ok(CaPair {
        cert_pem: ca.cert_pem,
        key_pem: ca.key_pem,
    })
}

fn identity(object: &Value) -> (String, String, String) {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    (
        text(&object["kind"]),
        text(&object["metadata"]["namespace"]),
        text(&object["metadata"]["name"]),
    )
}

async fn record_release(
    host: &Host,
    namespace: &str,
    name: &str,
    config: Value,
    manifest: String,
    revisions: &[Secret],
    previous: Option<&Release>,
) -> Result<()> {
    let now = release::now();
    let record = Release {
        name: name.to_string(),
        namespace: namespace.to_string(),
        version: previous.map_or(1, |p| p.version + 1),
        status: "deployed".into(),
        config,
        manifest,
        first_deployed: previous.map_or(now.clone(), |p| p.first_deployed.clone()),
        last_deployed: now,
        chart: release::CHART_NAME.into(),
    };
    let notes = format!("connect with: vkube connect {name} -n {namespace}\n");
    let defaults = values::defaults();
    host.apply(&release::to_secret(&record, &defaults, &notes)?)
        .await?;
    for old in revisions {
        let deployed = old
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("status"))
            .is_some_and(|s| s == "deployed");
        if deployed {
            host.apply(&release::supersede(old)?).await?;
        }
    }
    Ok(())
}

/// Waits for every replica: scheduled, then ready, each reported as it happens. A timeout names
/// what it waited for and the stuck pod's last event.
pub async fn wait_ready(
    host: &Host,
    namespace: &str,
    name: &str,
    replicas: usize,
    timeout: Duration,
    progress: &mut Progress,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut scheduled_reported = false;
    let mut ready_reported = vec![false; replicas];
    loop {
        let pods = host.control_plane_pods(namespace, name).await?;
        let scheduled = pods
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
            .count();
        if !scheduled_reported && scheduled >= replicas {
            progress.done(format!("{replicas} pod(s) scheduled"));
            scheduled_reported = true;
        }
        if let Some((pod_name, why)) = pods.iter().find_map(crash_looping) {
            let logs = host.previous_logs(namespace, &pod_name).await;
            bail!(
                "replica {pod_name} keeps failing ({why}); its last log lines:\n{logs}\n(see `kubectl -n {namespace} logs {pod_name} --previous`; fix the values and run `vkube create {name} -n {namespace} --upgrade`)"
            );
        }
        for pod in &pods {
            let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
            let Some(ordinal) = pod_name
                .strip_prefix(name)
                .and_then(|s| s.strip_prefix('-'))
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|n| *n < replicas)
            else {
                continue;
            };
            if scheduled_reported && !ready_reported[ordinal] && is_ready(pod) {
                ready_reported[ordinal] = true;
                progress.done(format!("replica {pod_name} ready"));
            }
        }
        if ready_reported.iter().all(|r| *r) {
            return Ok(());
        }
        let waiting_for = (0..replicas)
            .find(|i| !ready_reported[*i])
            .map(|i| format!("{name}-{i}"))
            .unwrap_or_default();
        progress.waiting(if scheduled_reported {
            format!("replica {waiting_for} ready")
        } else {
            format!("pods scheduled ({scheduled}/{replicas})")
        });
        if Instant::now() >= deadline {
            let event = host
                .last_event(namespace, &waiting_for)
                .await
                .map(|e| format!("; its last event: {e}"))
                .unwrap_or_else(|| "; it has no events".into());
            bail!(
                "timed out after {} waiting for pod {namespace}/{waiting_for} to be {}{event} (see `kubectl -n {namespace} describe pod {waiting_for}`; wait longer with --timeout)",
                seconds(timeout),
                if scheduled_reported {
                    "ready"
                } else {
                    "scheduled"
                }
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A pod whose container is in CrashLoopBackOff after failing twice: waiting longer will not help.
fn crash_looping(pod: &k8s_openapi::api::core::v1::Pod) -> Option<(String, String)> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses.iter().find_map(|c| {
        let waiting = c.state.as_ref()?.waiting.as_ref()?;
        (waiting.reason.as_deref() == Some("CrashLoopBackOff") && c.restart_count >= 2).then(|| {
            (
                pod.metadata.name.clone().unwrap_or_default(),
                format!("CrashLoopBackOff, {} restarts", c.restart_count),
            )
        })
    })
}
