//! `vkube create / connect / disconnect / list / delete / pause / resume`: virtual clusters on a
//! host Kubernetes cluster, as vcluster's CLI manages them (names and flags after vcluster's).
//! Each virtual cluster is a release of the chart in `chart/`, rendered here in Rust
//! ([`render`]) and recorded as a Helm release ([`release`]), so no helm binary is needed.

pub mod connect;
pub mod create;
pub mod host;
pub mod manage;
pub mod one_off;
pub mod progress;
pub mod release;
pub mod render;
pub mod snapshot;
pub mod store_move;
pub mod values;

use std::time::Duration;

use anyhow::{Result, bail};

/// Flags every command that talks to the host takes.
#[derive(clap::Args, Clone)]
pub struct HostFlags {
    /// The host's kubeconfig context (default: the current context).
    #[arg(long, global = true)]
    pub context: Option<String>,
}

/// The namespace of virtual cluster NAME: `-n`, else `vkube-NAME` (vcluster's `vcluster-NAME`).
pub fn namespace_of(name: &str, given: &Option<String>) -> String {
    given.clone().unwrap_or_else(|| format!("vkube-{name}"))
}

/// A virtual cluster's name is a StatefulSet's name whose pods' names (NAME-N) and revision
/// labels stay within 63 characters: a DNS label of at most 52.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 52
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !ok {
        bail!(
            "invalid virtual cluster name {name:?}: use 1 to 52 lowercase letters, digits and '-', starting and ending with a letter or digit (it names the StatefulSet and its pods on the host)"
        );
    }
    Ok(())
}

/// Parses `90s`, `5m`, `1h` or plain seconds.
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    crate::parse_interval(s)
}

#[derive(clap::Subcommand)]
pub enum Command {
    /// Create a virtual cluster on the host (installs the chart as a Helm release), then connect.
    Create(create::CreateArgs),
    /// Connect to a virtual cluster: write a kubeconfig context, reach it by port forward.
    Connect(connect::ConnectArgs),
    /// Stop the port forward of `vkube connect` and switch back to the previous context.
    Disconnect(connect::DisconnectArgs),
    /// List the virtual clusters on the host.
    List(manage::ListArgs),
    /// Delete a virtual cluster: its release, its pods on the host and (unless kept) its volumes.
    Delete(manage::DeleteArgs),
    /// Scale a virtual cluster's control plane to zero and stop its workloads on the host.
    Pause(manage::PauseArgs),
    /// Bring a paused virtual cluster back.
    Resume(manage::PauseArgs),
    /// Restore a virtual cluster from a snapshot (`vkube snapshot create NAME file:///PATH`):
    /// it is paused, its store replaced, and resumed.
    Restore(snapshot::RestoreArgs),
}

pub async fn run(command: Command) -> Result<()> {
    match command {
        Command::Create(args) => create::run(args).await,
        Command::Connect(args) => connect::run(args).await,
        Command::Disconnect(args) => connect::disconnect(args).await,
        Command::List(args) => manage::list(args).await,
        Command::Delete(args) => manage::delete(args).await,
        Command::Pause(args) => manage::pause(args).await,
        Command::Resume(args) => manage::resume(args).await,
        Command::Restore(args) => snapshot::restore(args).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels_short_enough_for_pod_names() {
        check_name("team-a").unwrap();
        assert!(check_name("Team").is_err());
        assert!(check_name(&"a".repeat(53)).is_err());
        assert!(check_name("-a").is_err());
        assert_eq!(namespace_of("team-a", &None), "vkube-team-a");
    }
}
