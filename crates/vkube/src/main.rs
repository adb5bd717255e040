//! `vkube`: a virtual Kubernetes control plane in one binary.
//!
//! `vkube serve` runs the API server on a store (embedded SQLite by default); `vkube store status`
//! inspects the store.
#![forbid(unsafe_code)]

mod config;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use vkube_store::{ListOptions, StoreUrl};

#[derive(Parser)]
#[command(
    name = "vkube",
    version,
    about = "A virtual Kubernetes control plane in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a virtual cluster's API server.
    Serve(ServeArgs),
    /// Inspect the store.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Open the store (creating an embedded SQLite database if needed) and print its state.
    Status(StoreArgs),
}

#[derive(clap::Args)]
struct StoreArgs {
    /// Directory for vkube's state; the embedded SQLite database lives here.
    #[arg(long, env = "VKUBE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The store: sqlite://PATH, postgres://…, etcd://host:port[,host:port][?prefix=…&ca=…&cert=…&key=…].
    /// Default: SQLite in the data dir.
    #[arg(long, env = "VKUBE_STORE")]
    store: Option<String>,
}

#[derive(clap::Args)]
struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Address to serve HTTPS on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: std::net::SocketAddr,
    /// Extra DNS name or IP address for the serving certificate (repeatable).
    #[arg(long = "tls-san")]
    tls_sans: Vec<String>,
    /// A vcluster.yaml; today vkube reads its controlPlane.backingStore.
    #[arg(long)]
    config: Option<PathBuf>,
}

impl StoreArgs {
    fn data_dir(&self) -> Result<PathBuf> {
        match &self.data_dir {
            Some(dir) => Ok(dir.clone()),
            None => default_data_dir(),
        }
    }

    fn url(&self) -> Result<StoreUrl> {
        if let Some(url) = &self.store {
            return Ok(url.parse()?);
        }
        Ok(StoreUrl::Sqlite {
            path: self.data_dir()?.join("state.db"),
            synchronous: Default::default(),
        })
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => drop(s.recv().await),
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

async fn serve(args: ServeArgs) -> Result<()> {
    let mut url = args.store.url()?;
    if let Some(file) = &args.config {
        let config = config::load(file)?;
        if !config.unsupported.is_empty() {
            eprintln!(
                "vkube: warning: {} has keys vkube does not support yet, which it ignores: {}",
                file.display(),
                config.unsupported.join(", ")
            );
        }
        if let Some(store) = config.store {
            if args.store.store.is_some() {
                anyhow::bail!(
                    "both --store and {}'s controlPlane.backingStore name a store; keep one",
                    file.display()
                );
            }
            url = store;
        }
    }
    let shown = redact(&url);
    let store = vkube_store::open_url(&url)
        .await
        .with_context(|| format!("opening {shown}"))?;
    let config = vkube_server::Config {
        listen: args.listen,
        tls_sans: args.tls_sans,
        data_dir: args.store.data_dir()?,
    };
    let listen = args.listen;
    vkube_server::serve(
        store,
        config,
        |kubeconfig| {
            println!(
                "vkube is serving on https://{listen} ({shown}); use it with: export KUBECONFIG={}",
                kubeconfig.display()
            );
        },
        shutdown_signal(),
    )
    .await?;
    eprintln!("vkube: shut down");
    Ok(())
}

fn default_data_dir() -> Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME is not set; pass --data-dir DIR")?;
    Ok(PathBuf::from(home).join(".vkube"))
}

/// A URL fit to print: no password.
fn redact(url: &StoreUrl) -> String {
    match url {
        StoreUrl::Sqlite { path, .. } => format!("sqlite://{}", path.display()),
        StoreUrl::Postgres { url } => match url::Url::parse(url) {
            Ok(mut u) if u.password().is_some() => {
                let _ = u.set_password(Some("***"));
                u.to_string()
            }
            _ => url.clone(),
        },
        StoreUrl::Etcd {
            endpoints, prefix, ..
        } => format!("etcd://{}?prefix={prefix}", endpoints.join(",")),
        StoreUrl::Memory => "memory://".into(),
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("vkube: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args).await?,
        Command::Store {
            command: StoreCommand::Status(args),
        } => {
            let url = args.url()?;
            let shown = redact(&url);
            let store = vkube_store::open_url(&url)
                .await
                .with_context(|| format!("opening {shown}"))?;
            let revision = store.current_revision().await?;
            let keys = store.list("/", ListOptions::default()).await?.items.len();
            println!("store:    {shown}");
            println!("backend:  {}", store.backend());
            println!("revision: {revision}");
            println!("keys:     {keys}");
        }
    }
    Ok(())
}
