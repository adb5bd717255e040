//! `vkube connect` and `vkube disconnect`: the virtual cluster's kubeconfig from the host (Secret
//! `vc-NAME`, which vkube writes from inside its pod), reached through a port forward that a
//! background `vkube` process keeps (one forward per connection, each to a ready replica), or
//! through the Service when it is exposed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::api::Api;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::host::{Host, explain, is_ready};
use super::{HostFlags, namespace_of};

/// The host Secret in which vkube publishes the virtual cluster's admin kubeconfig (vcluster's
/// name for it).
pub fn kubeconfig_secret(name: &str) -> String {
    format!("vc-{name}")
}

/// The context `vkube connect` writes (vcluster's `vcluster_NAME_NS_HOSTCONTEXT`).
pub fn context_name(name: &str, namespace: &str, host_context: &str) -> String {
    format!("vkube_{name}_{namespace}_{host_context}")
}

#[derive(clap::Args)]
pub struct ConnectArgs {
    pub name: String,
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Print the kubeconfig instead of writing it (the port forward still runs in the background;
    /// `vkube disconnect` stops it).
    #[arg(long)]
    pub print: bool,
    /// The kubeconfig file to write the context into (default: the first of KUBECONFIG, else
    /// ~/.kube/config).
    #[arg(long = "kube-config")]
    pub kube_config: Option<PathBuf>,
    /// Make the new context the current one.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub update_current: bool,
    /// The local port of the port forward (default: a free one).
    #[arg(long)]
    pub local_port: Option<u16>,
    /// Run this command with KUBECONFIG set to the virtual cluster, then clean up.
    #[arg(last = true)]
    pub command: Vec<String>,
    #[command(flatten)]
    pub host: HostFlags,
}

#[derive(clap::Args)]
pub struct DisconnectArgs {
    /// The kubeconfig file `vkube connect` wrote (default as connect's).
    #[arg(long = "kube-config")]
    pub kube_config: Option<PathBuf>,
}

/// The background port forward (started by `connect`; not for direct use).
#[derive(clap::Args)]
pub struct PortForwardArgs {
    #[arg(long)]
    pub name: String,
    #[arg(long)]
    pub namespace: String,
    #[arg(long)]
    pub local_port: u16,
    #[command(flatten)]
    pub host: HostFlags,
}

/// What `vkube connect` did, so that `disconnect` can undo it.
#[derive(Serialize, Deserialize, Debug)]
struct Connection {
    name: String,
    namespace: String,
    context: String,
    previous_context: Option<String>,
    kubeconfig: Option<PathBuf>,
    pid: Option<u32>,
}

/// The admin credentials of a virtual cluster, PEM.
pub struct Credentials {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

/// The kubeconfig vkube published in its Secret, waiting for it until `deadline`.
pub async fn fetch_kubeconfig(
    host: &Host,
    namespace: &str,
    name: &str,
    deadline: Instant,
) -> Result<Credentials> {
    let secrets: Api<Secret> = Api::namespaced(host.client.clone(), namespace);
    let secret_name = kubeconfig_secret(name);
    loop {
        let secret = secrets
            .get_opt(&secret_name)
            .await
            .map_err(|e| explain(e, &format!("reading Secret {namespace}/{secret_name}")))?;
        if let Some(data) = secret.and_then(|s| s.data) {
            let text = |k: &str| {
                data.get(k)
                    .and_then(|b| String::from_utf8(b.0.clone()).ok())
                    .with_context(|| format!("Secret {namespace}/{secret_name} lacks {k}"))
            };
            return Ok(Credentials {
                ca: text("certificate-authority")?,
                cert: text("client-certificate")?,
                key: text("client-key")?,
            });
        }
        if Instant::now() >= deadline {
            bail!(
                "virtual cluster {name} has not published its kubeconfig (Secret {namespace}/{secret_name}); is it running? see `kubectl -n {namespace} logs {name}-0`"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn b64(s: &str) -> String {
    super::render::b64(s)
}

/// A kubeconfig for one virtual cluster at `server`.
fn kubeconfig(
    context: &str,
    server: &str,
    tls_server_name: Option<&str>,
    c: &Credentials,
) -> Value {
    let mut cluster = json!({"server": server, "certificate-authority-data": b64(&c.ca)});
    if let Some(name) = tls_server_name {
        cluster["tls-server-name"] = json!(name);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": cluster}],
        "users": [{"name": context, "user": {
            "client-certificate-data": b64(&c.cert), "client-key-data": b64(&c.key)}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
        "current-context": context,
    })
}

pub async fn run(args: ConnectArgs) -> Result<()> {
    let host = Host::connect(&args.host).await?;
    let namespace = namespace_of(&args.name, &args.namespace);
    connect(&host, &args, &namespace).await
}

/// `vkube create`'s final step: connect with the defaults.
pub async fn connect_after_create(host: &Host, name: &str, namespace: &str) -> Result<()> {
    let args = ConnectArgs {
        name: name.to_string(),
        namespace: Some(namespace.to_string()),
        print: false,
        kube_config: None,
        update_current: true,
        local_port: None,
        command: Vec::new(),
        host: HostFlags {
            context: Some(host.context.clone()),
        },
    };
    connect(host, &args, namespace).await
}

async fn connect(host: &Host, args: &ConnectArgs, namespace: &str) -> Result<()> {
    let name = args.name.as_str();
    let sets: Api<StatefulSet> = Api::namespaced(host.client.clone(), namespace);
    let set = sets
        .get_opt(name)
        .await
        .map_err(|e| explain(e, &format!("reading StatefulSet {namespace}/{name}")))?
        .ok_or_else(|| {
            anyhow!(
                "virtual cluster {name} not found in namespace {namespace}; `vkube list` shows the virtual clusters, `vkube create {name}` makes it"
            )
        })?;
    if super::manage::is_paused(&set) {
        bail!("virtual cluster {name} is paused; run `vkube resume {name} -n {namespace}` first");
    }
    let credentials = fetch_kubeconfig(
        host,
        namespace,
        name,
        Instant::now() + Duration::from_secs(60),
    )
    .await?;
    let context = context_name(name, namespace, &host.context);

    // Exposed: the Service's load-balancer address, no port forward.
    let (server, tls_name, pid) = match exposed_address(host, namespace, name).await? {
        Some(address) => (format!("https://{address}"), Some(name.to_string()), None),
        None => {
            let port = match args.local_port {
                Some(p) => p,
                None => free_port()?,
            };
            let pid = spawn_forwarder(host, name, namespace, port)?;
            (format!("https://127.0.0.1:{port}"), None, Some(pid))
        }
    };
    let config = kubeconfig(&context, &server, tls_name.as_deref(), &credentials);
    if let Err(err) = wait_reachable(&config, Duration::from_secs(30)).await {
        if let Some(pid) = pid {
            stop(pid);
        }
        return Err(err.context(format!("reaching virtual cluster {name} at {server}")));
    }

    if !args.command.is_empty() {
        let file =
            std::env::temp_dir().join(format!("vkube-{name}-{}.kubeconfig", std::process::id()));
        crate::cli::connect::write_private(&file, &super::values::to_yaml(&config)?)?;
        let status = tokio::process::Command::new(&args.command[0])
            .args(&args.command[1..])
            .env("KUBECONFIG", &file)
            .status()
            .await
            .with_context(|| format!("running {}", args.command[0]));
        let _ = std::fs::remove_file(&file);
        if let Some(pid) = pid {
            stop(pid);
        }
        let status = status?;
        if !status.success() {
            bail!("{} exited with {status}", args.command.join(" "));
        }
        return Ok(());
    }

    // A second connect replaces the first (and its port forward).
    let earlier = load(name, namespace)?;
    if let Some(old_pid) = earlier.as_ref().and_then(|c| c.pid) {
        stop(old_pid);
    }
    if args.print {
        print!("{}", super::values::to_yaml(&config)?);
        save(&Connection {
            name: name.into(),
            namespace: namespace.into(),
            context,
            previous_context: None,
            kubeconfig: None,
            pid,
        })?;
        return Ok(());
    }

    let path = kubeconfig_path(&args.kube_config)?;
    let mut user = read_kubeconfig(&path)?;
    // Reconnecting from the cluster's own context keeps the context to go back to.
    let previous = user["current-context"]
        .as_str()
        .filter(|c| !c.is_empty() && *c != context)
        .map(str::to_string)
        .or_else(|| earlier.and_then(|c| c.previous_context));
    merge_context(&mut user, &config, &context, args.update_current);
    write_private(&path, &super::values::to_yaml(&user)?)?;
    save(&Connection {
        name: name.into(),
        namespace: namespace.into(),
        context: context.clone(),
        previous_context: previous,
        kubeconfig: Some(path.clone()),
        pid,
    })?;
    eprintln!(
        "connected to virtual cluster {name} (context {context} in {}{}); `vkube disconnect` switches back",
        path.display(),
        if args.update_current {
            ", now current"
        } else {
            ""
        }
    );
    Ok(())
}

/// The address of an exposed control plane: the LoadBalancer's ingress, if it has one.
async fn exposed_address(host: &Host, namespace: &str, name: &str) -> Result<Option<String>> {
    let services: Api<Service> = Api::namespaced(host.client.clone(), namespace);
    let Some(service) = services.get_opt(name).await.ok().flatten() else {
        return Ok(None);
    };
    if service.spec.as_ref().and_then(|s| s.type_.as_deref()) != Some("LoadBalancer") {
        return Ok(None);
    }
    Ok(service
        .status
        .and_then(|s| s.load_balancer)
        .and_then(|lb| lb.ingress)
        .and_then(|i| i.into_iter().next())
        .and_then(|i| i.ip.or(i.hostname)))
}

async fn wait_reachable(config: &Value, within: Duration) -> Result<()> {
    let kubeconfig: kube::config::Kubeconfig = serde_json::from_value(config.clone())?;
    let options = kube::config::KubeConfigOptions::default();
    let client_config = kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?;
    let client = kube::Client::try_from(client_config)?;
    let deadline = Instant::now() + within;
    loop {
        match client.apiserver_version().await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(e.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn state_dir() -> Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    Ok(PathBuf::from(home).join(".vkube").join("connections"))
}

/// The background forwarder: this binary, in its own process group (a Ctrl-C in the terminal
/// does not stop it), logging next to the connection's record.
fn spawn_forwarder(host: &Host, name: &str, namespace: &str, port: u16) -> Result<u32> {
    use std::os::unix::process::CommandExt;
    let dir = state_dir()?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let log = std::fs::File::create(dir.join(format!("{name}_{namespace}.log")))?;
    let child = std::process::Command::new(std::env::current_exe()?)
        .args([
            "port-forward-daemon",
            "--name",
            name,
            "--namespace",
            namespace,
        ])
        .args([
            "--local-port",
            &port.to_string(),
            "--context",
            &host.context,
        ])
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("starting the port forward")?;
    Ok(child.id())
}

/// Stops a forwarder `connect` started; a PID since reused by another program is left alone.
fn stop(pid: u32) {
    let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| c.windows(19).any(|w| w == b"port-forward-daemon"));
    if !ours {
        return;
    }
    let _ = std::process::Command::new("kill")
        .arg(pid.to_string())
        .stderr(std::process::Stdio::null())
        .status();
}

/// The forwarder's loop: each local connection is forwarded to port 8443 of a ready replica,
/// chosen afresh, so a replica that goes away costs only the connections it carried.
pub async fn port_forward(args: PortForwardArgs) -> Result<()> {
    let host = Host::connect(&args.host).await?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.local_port))
        .await
        .with_context(|| format!("listening on 127.0.0.1:{}", args.local_port))?;
    eprintln!(
        "forwarding 127.0.0.1:{} to virtual cluster {} in namespace {}",
        args.local_port, args.name, args.namespace
    );
    let pods: Api<Pod> = Api::namespaced(host.client.clone(), &args.namespace);
    let mut next = 0usize;
    loop {
        let (mut conn, _) = listener.accept().await?;
        let ready: Vec<String> = host
            .control_plane_pods(&args.namespace, &args.name)
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(is_ready)
            .filter_map(|p| p.metadata.name)
            .collect();
        if ready.is_empty() {
            eprintln!("no ready replica of {}; dropping a connection", args.name);
            continue;
        }
        next = next.wrapping_add(1);
        let pod = ready[next % ready.len()].clone();
        let pods = pods.clone();
        tokio::spawn(async move {
            let mut forwarder = match pods.portforward(&pod, &[8443]).await {
                Ok(f) => f,
                Err(err) => {
                    eprintln!("port forward to {pod}: {err}");
                    return;
                }
            };
            if let Some(mut upstream) = forwarder.take_stream(8443) {
                let _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await;
            }
            drop(forwarder);
        });
    }
}

pub async fn disconnect(args: DisconnectArgs) -> Result<()> {
    let path = kubeconfig_path(&args.kube_config)?;
    let mut user = read_kubeconfig(&path)?;
    let current = user["current-context"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let connection = all_connections()?
        .into_iter()
        .find(|c| c.context == current)
        .ok_or_else(|| {
            anyhow!(
                "the current context {current:?} in {} is not a virtual cluster that `vkube connect` connected; nothing to disconnect",
                path.display()
            )
        })?;
    if let Some(pid) = connection.pid {
        stop(pid);
    }
    remove_context(&mut user, &connection.context);
    user["current-context"] = json!(connection.previous_context.clone().unwrap_or_default());
    write_private(&path, &super::values::to_yaml(&user)?)?;
    let _ = std::fs::remove_file(record_path(&connection.name, &connection.namespace)?);
    eprintln!(
        "disconnected from virtual cluster {}; current context: {}",
        connection.name,
        connection.previous_context.as_deref().unwrap_or("(none)")
    );
    Ok(())
}

/// Undoes `connect` for one virtual cluster (for `vkube delete`): stops its forward and drops
/// its context, switching back if it was current.
pub fn forget(name: &str, namespace: &str) -> Result<()> {
    let Some(connection) = load(name, namespace)? else {
        return Ok(());
    };
    if let Some(pid) = connection.pid {
        stop(pid);
    }
    if let Some(path) = &connection.kubeconfig
        && let Ok(mut user) = read_kubeconfig(path)
    {
        if user["current-context"] == json!(connection.context) {
            user["current-context"] =
                json!(connection.previous_context.clone().unwrap_or_default());
        }
        remove_context(&mut user, &connection.context);
        write_private(path, &super::values::to_yaml(&user)?)?;
    }
    let _ = std::fs::remove_file(record_path(name, namespace)?);
    Ok(())
}

/// The context `vkube connect` made current, if the current context is one.
pub fn current_connection() -> Option<(String, String)> {
    let path = kubeconfig_path(&None).ok()?;
    let user = read_kubeconfig(&path).ok()?;
    let current = user["current-context"].as_str()?.to_string();
    all_connections()
        .ok()?
        .into_iter()
        .find(|c| c.context == current)
        .map(|c| (c.name, c.namespace))
}

pub fn kubeconfig_path(given: &Option<PathBuf>) -> Result<PathBuf> {
    if let Some(path) = given {
        return Ok(path.clone());
    }
    if let Some(first) = std::env::var_os("KUBECONFIG")
        .and_then(|v| std::env::split_paths(&v).find(|p| !p.as_os_str().is_empty()))
    {
        return Ok(first);
    }
    let home = std::env::var_os("HOME").context("HOME is not set; pass --kube-config")?;
    Ok(PathBuf::from(home).join(".kube").join("config"))
}

fn read_kubeconfig(path: &Path) -> Result<Value> {
    match std::fs::read_to_string(path) {
        Ok(text) => super::values::parse_yaml(&text, &path.display().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(json!({"apiVersion": "v1", "kind": "Config"}))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Puts `config`'s cluster, user and context into `user` (replacing entries of the same name).
fn merge_context(user: &mut Value, config: &Value, context: &str, make_current: bool) {
    for list in ["clusters", "users", "contexts"] {
        let mut entries: Vec<Value> = user[list]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e["name"] != json!(context))
            .collect();
        entries.extend(config[list].as_array().cloned().unwrap_or_default());
        user[list] = Value::Array(entries);
    }
    if make_current || user["current-context"].as_str().is_none_or(str::is_empty) {
        user["current-context"] = json!(context);
    }
}

fn remove_context(user: &mut Value, context: &str) {
    for list in ["clusters", "users", "contexts"] {
        if let Some(entries) = user[list].as_array_mut() {
            entries.retain(|e| e["name"] != json!(context));
        }
    }
}

pub fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("vkube-tmp");
    {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        file.write_all(text.as_bytes())?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

fn record_path(name: &str, namespace: &str) -> Result<PathBuf> {
    Ok(state_dir()?.join(format!("{name}_{namespace}.json")))
}

fn save(connection: &Connection) -> Result<()> {
    let path = record_path(&connection.name, &connection.namespace)?;
    write_private(&path, &serde_json::to_string_pretty(connection)?)
}

fn load(name: &str, namespace: &str) -> Result<Option<Connection>> {
    match std::fs::read(record_path(name, namespace)?) {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn all_connections() -> Result<Vec<Connection>> {
    let dir = state_dir()?;
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    Ok(entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_context_merges_in_and_comes_out_leaving_the_others() {
        let creds = Credentials {
            ca: "CA".into(),
            cert: "C".into(),
            key: "K".into(),
        };
        let mut user = json!({"apiVersion": "v1", "kind": "Config", "current-context": "host",
            "clusters": [{"name": "host", "cluster": {"server": "https://h"}}],
            "users": [{"name": "host", "user": {}}],
            "contexts": [{"name": "host", "context": {"cluster": "host", "user": "host"}}]});
        let ctx = context_name("a", "vkube-a", "host");
        assert_eq!(ctx, "vkube_a_vkube-a_host");
        let config = kubeconfig(&ctx, "https://127.0.0.1:1", None, &creds);
        merge_context(&mut user, &config, &ctx, true);
        merge_context(&mut user, &config, &ctx, true);
        assert_eq!(user["contexts"].as_array().unwrap().len(), 2);
        assert_eq!(user["current-context"], json!(ctx));
        remove_context(&mut user, &ctx);
        assert_eq!(user["clusters"].as_array().unwrap().len(), 1);
        let parsed: kube::config::Kubeconfig = serde_json::from_value(config).unwrap();
        assert_eq!(parsed.current_context.as_deref(), Some(ctx.as_str()));
    }
}
