//! Moving a virtual cluster's state between stores (issue 21): `vkube store migrate` copies
//! every key of an offline store into an empty one, and `vkube snapshot create|restore` puts a
//! live store's keyspace, at one revision, in a checksummed file and back.
//!
//! It lives in the binary, not in `vkube-store`, because what it copies is vkube's keyspace, not
//! a generic one: it knows which records mean "a replica serves this store" (and so refuses), and
//! which records must not travel (a replica's heartbeat, the leader's lease).
//!
//! Both write the same way ([`keyspace::write`]): a marker key first, every key in the order of
//! its source `mod_revision`, a comparison of the whole destination with the source, then the
//! marker's removal and a compaction. A destination with the marker is a half-written one: a
//! rerun of the same copy resumes it, `vkube serve` refuses it.

mod keyspace;
mod location;
mod offline;
mod progress;
mod served;
pub(crate) mod snapshot;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use vkube_store::{Store, StoreUrl};

use crate::redact;
use location::{Location, Opened};

/// `vkube store migrate`.
#[derive(clap::Args)]
pub struct MigrateArgs {
    /// The store to copy from: sqlite://PATH, postgres://…, etcd://host:port[?prefix=…&ca=…],
    /// or etcd-dir://DATA-DIR[?peer=URL&client=URL] for the embedded etcd of
    /// `vkube serve --etcd-embedded --data-dir DATA-DIR` (one replica), which vkube runs for the
    /// copy. Nothing may serve it during the copy.
    #[arg(long, required_unless_present = "from_data_dir")]
    from: Option<String>,
    /// Instead of --from: the store of `vkube serve --data-dir DIR [--config FILE]` (with
    /// --from-config), as the host CLI names it inside a virtual cluster's pod.
    #[arg(long, conflicts_with = "from")]
    from_data_dir: Option<PathBuf>,
    /// With --from-data-dir: the vcluster.yaml that `vkube serve` ran with.
    #[arg(long, requires = "from_data_dir")]
    from_config: Option<PathBuf>,
    /// The store to copy into, in the same forms; it must be empty (or hold a half-finished copy
    /// of the same source, which is resumed). etcd-dir://NEW-DATA-DIR makes a new embedded etcd
    /// member there for `vkube serve --etcd-embedded --data-dir NEW-DATA-DIR`.
    #[arg(long, required_unless_present = "to_data_dir")]
    to: Option<String>,
    /// Instead of --to: the store `vkube serve --data-dir DIR --config FILE` will serve.
    #[arg(long, conflicts_with = "to")]
    to_data_dir: Option<PathBuf>,
    /// With --to-data-dir: the vcluster.yaml that `vkube serve` will run with.
    #[arg(long, requires = "to_data_dir")]
    to_config: Option<PathBuf>,
    /// Delete every key the destination holds first (under its prefix, for etcd).
    #[arg(long)]
    force: bool,
}

/// `vkube snapshot`.
#[derive(clap::Subcommand)]
pub enum SnapshotCommand {
    /// Write a store's keyspace, at one revision, to FILE (gzip, SHA-256 checksum). The store
    /// may be served meanwhile.
    Create(SnapshotCreateArgs),
    /// Write a snapshot into an empty store, after checking the whole file.
    Restore(SnapshotRestoreArgs),
}

#[derive(clap::Args)]
pub struct SnapshotCreateArgs {
    /// The file to write (`-`: standard output); with a URL after it, the name of a virtual
    /// cluster on the host.
    target: String,
    /// `file:///PATH`: snapshot the virtual cluster named first, on the host of the current
    /// kubeconfig context, into PATH on this machine (from a ready replica, while it serves).
    url: Option<String>,
    /// The store to read: sqlite://PATH, postgres://…, etcd://…
    #[arg(long, env = "VKUBE_STORE")]
    store: Option<String>,
    /// Instead of --store: the store of `vkube serve --data-dir DIR [--config FILE]`, while it
    /// serves (its embedded etcd member is read on loopback).
    #[arg(long, conflicts_with = "store")]
    data_dir: Option<PathBuf>,
    /// The cluster's vcluster.yaml, kept in the snapshot beside the keys.
    #[arg(long)]
    config: Option<PathBuf>,
    /// With a virtual cluster NAME: its namespace on the host (default: vkube-NAME).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    #[command(flatten)]
    host: crate::cli::HostFlags,
}

#[derive(clap::Args)]
pub struct SnapshotRestoreArgs {
    /// The snapshot file (`-`: standard input); with a URL after it, the name of a virtual
    /// cluster on the host.
    target: String,
    /// `file:///PATH`: restore the virtual cluster named first, on the host, from PATH on this
    /// machine (as `vkube restore NAME file:///PATH`).
    url: Option<String>,
    /// The store to write; it must be empty.
    #[arg(long, env = "VKUBE_STORE")]
    store: Option<String>,
    /// Instead of --store: the store of `vkube serve --data-dir DIR [--config FILE]`, which must
    /// not be serving.
    #[arg(long, conflicts_with = "store")]
    data_dir: Option<PathBuf>,
    /// With --data-dir: the vcluster.yaml that `vkube serve` runs with (it names the store).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Write the vcluster.yaml the snapshot holds, if any, to this file.
    #[arg(long)]
    config_out: Option<PathBuf>,
    /// Delete every key the destination holds first.
    #[arg(long)]
    force: bool,
    /// With a virtual cluster NAME: its namespace on the host (default: vkube-NAME).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    #[command(flatten)]
    host: crate::cli::HostFlags,
}

/// The store a snapshot command names: `--store`, or the one `vkube serve --data-dir` serves.
fn named_store(
    store: &Option<String>,
    data_dir: &Option<PathBuf>,
    config: &Option<PathBuf>,
    online: bool,
) -> Result<Location> {
    match (store, data_dir) {
        (Some(url), _) => url.parse().context("the store URL"),
        (None, Some(dir)) => served::location(dir, config.as_deref(), online),
        (None, None) => bail!(
            "name the store: --store URL, or --data-dir DIR for the store `vkube serve --data-dir DIR` serves; or give a virtual cluster on the host as NAME file:///PATH"
        ),
    }
}

/// Whether `key` travels to another store. Left behind: each replica's membership record (a
/// 5 s heartbeat whose TTL a copy cannot carry: it would stay forever, and name a replica that
/// does not serve the new store), the leader's lease (its holder is gone; without it the first
/// replica on the new store leads at once instead of waiting the lease out, and writes a new
/// one), etcd's watch-progress barrier keys (`…/\u{1}progress`, never an object) and the
/// marker of an unfinished copy.
pub(crate) fn carried(key: &str) -> bool {
    !(key.starts_with(vkube_server::replicas::PREFIX)
        || key == vkube_server::leader::LEASE_KEY
        || key.contains("/\u{1}")
        || key == keyspace::MARKER)
}

async fn open(url: &StoreUrl, must_exist: bool) -> Result<std::sync::Arc<dyn Store>> {
    if let (true, StoreUrl::Sqlite { path, .. }) = (must_exist, url) {
        if !path.exists() {
            bail!("there is no SQLite database at {}", path.display());
        }
    }
    vkube_store::open_url(url)
        .await
        .with_context(|| format!("opening {}", redact(url)))
}

/// The SQLite lock of a location that is an SQLite database.
fn lock(location: &Location) -> Result<Option<std::fs::File>> {
    match location {
        Location::Store(url) => offline::lock(url),
        Location::EmbeddedDir { .. } => Ok(None),
    }
}

/// Runs `work` on the stores of `locations` (each started, and for embedded etcd, stopped after).
async fn with_stores<T>(
    locations: Vec<(Location, bool)>,
    work: impl AsyncFnOnce(&[Opened]) -> Result<T>,
) -> Result<T> {
    let _locks = locations
        .iter()
        .map(|(l, _)| lock(l))
        .collect::<Result<Vec<_>>>()?;
    let mut opened = Vec::new();
    let mut result = Ok(());
    for (location, must_exist) in locations {
        match location.start(must_exist).await {
            Ok(o) => opened.push(o),
            Err(err) => {
                result = Err(err);
                break;
            }
        }
    }
    let result = match result {
        Ok(()) => work(&opened).await,
        Err(err) => Err(err),
    };
    for o in opened {
        o.close().await;
    }
    result
}

pub async fn migrate(args: MigrateArgs) -> Result<()> {
    if args.from.is_some() && args.from == args.to {
        bail!("--from and --to name the same store");
    }
    let from =
        named_store(&args.from, &args.from_data_dir, &args.from_config, false).context("--from")?;
    let to = named_store(&args.to, &args.to_data_dir, &args.to_config, false).context("--to")?;
    with_stores(vec![(from, true), (to, false)], async |opened| {
        let (from, to) = (&opened[0], &opened[1]);
        if from.shown == to.shown {
            bail!("the source and the destination are the same store, {}", from.shown);
        }
        let source = open(&from.url, true).await?;
        offline::refuse_served(source.as_ref(), &from.shown).await?;
        let dest = open(&to.url, false).await?;
        offline::refuse_served(dest.as_ref(), &to.shown).await?;
        let started = std::time::Instant::now();
        let (entries, revision) = keyspace::read_all(source.as_ref(), None).await?;
        eprintln!(
            "vkube: copying {} keys of {} at revision {revision} to {}",
            entries.len(),
            from.shown,
            to.shown
        );
        let origin = keyspace::Origin {
            source: from.shown.clone(),
            revision,
        };
        let report = keyspace::write(dest.as_ref(), &origin, entries, args.force).await?;
        report.print("migrated", started.elapsed());
        println!(
            "Revisions start anew at the destination: clients watching with an old resourceVersion get 410 Gone once and relist."
        );
        Ok(())
    })
    .await
}

pub async fn snapshot(command: SnapshotCommand) -> Result<()> {
    match command {
        SnapshotCommand::Create(args) => {
            if let Some(url) = &args.url {
                if args.store.is_some() || args.data_dir.is_some() {
                    bail!(
                        "give either a store (--store, --data-dir) or a virtual cluster NAME file:///PATH, not both"
                    );
                }
                return crate::cli::snapshot::create(
                    &args.target,
                    url,
                    &args.namespace,
                    &args.host,
                )
                .await;
            }
            let location = named_store(&args.store, &args.data_dir, &args.config, true)?;
            let config = match &args.config {
                Some(path) => Some(
                    std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?,
                ),
                None => None,
            };
            let to_stdout = args.target == "-";
            let file = PathBuf::from(&args.target);
            // Online: no lock, a served store is read at one revision like any reader's list.
            let opened = location.start(true).await?;
            let started = std::time::Instant::now();
            let made = match open(&opened.url, true).await {
                Ok(store) if to_stdout => {
                    snapshot::create_to_stdout(store.as_ref(), &opened.shown, config).await
                }
                Ok(store) => snapshot::create(store.as_ref(), &file, &opened.shown, config).await,
                Err(err) => Err(err),
            };
            opened.close().await;
            let made = made?;
            let secs = started.elapsed().as_secs_f64();
            let summary = format!(
                "snapshot {}: {} keys at revision {}, {} value bytes, {} bytes on disk, sha256 {}, {:.2}s ({:.0} keys/s)",
                if to_stdout {
                    "to standard output".into()
                } else {
                    file.display().to_string()
                },
                made.keys,
                made.revision,
                made.bytes,
                made.file_bytes,
                made.sha256,
                secs,
                made.keys as f64 / secs.max(1e-6)
            );
            // Standard output carries the snapshot itself when it is `-`.
            if to_stdout {
                eprintln!("{summary}");
            } else {
                println!("{summary}");
            }
            Ok(())
        }
        SnapshotCommand::Restore(args) => {
            if let Some(url) = args.url {
                if args.store.is_some() || args.data_dir.is_some() {
                    bail!(
                        "give either a store (--store, --data-dir) or a virtual cluster NAME file:///PATH, not both"
                    );
                }
                return crate::cli::snapshot::restore(crate::cli::snapshot::RestoreArgs::new(
                    args.target,
                    url,
                    args.namespace,
                    args.host,
                ))
                .await;
            }
            let location = named_store(&args.store, &args.data_dir, &args.config, false)?;
            let file = PathBuf::from(&args.target);
            let started = std::time::Instant::now();
            // The whole file is checked before the store is even opened: a bad file writes nothing.
            let loaded = snapshot::load(&file)?;
            with_stores(vec![(location, false)], async |opened| {
                let dest = open(&opened[0].url, false).await?;
                offline::refuse_served(dest.as_ref(), &opened[0].shown).await?;
                eprintln!(
                    "vkube: restoring {} keys from {} (vkube {}, revision {} of {}, taken {})",
                    loaded.entries.len(),
                    file.display(),
                    loaded.header.vkube_version,
                    loaded.header.revision,
                    loaded.header.source,
                    loaded.header.created
                );
                if let (Some(out), Some(config)) = (&args.config_out, &loaded.header.config) {
                    std::fs::write(out, config)
                        .with_context(|| format!("writing {}", out.display()))?;
                }
                let origin = keyspace::Origin {
                    source: format!("snapshot sha256:{}", loaded.sha256),
                    revision: loaded.header.revision,
                };
                let report =
                    keyspace::write(dest.as_ref(), &origin, loaded.entries, args.force).await?;
                report.print("restored", started.elapsed());
                if args.config_out.is_some() && loaded.header.config.is_none() {
                    println!(
                        "The snapshot holds no vcluster.yaml (it was taken without --config)."
                    );
                }
                Ok(())
            })
            .await
        }
    }
}

/// `vkube serve` refuses a store that a migration or a restore left half-written.
pub async fn refuse_unfinished(store: &dyn Store, shown: &str) -> Result<()> {
    if let Some(marker) = store.get(keyspace::MARKER, None).await? {
        bail!(
            "{shown} holds an unfinished copy ({}): run the same `vkube store migrate` or `vkube snapshot restore` again to finish it, or start over with --force",
            String::from_utf8_lossy(&marker.value)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_leases_barriers_and_the_marker_stay_behind() {
        assert!(carried("/registry/configmaps/default/a"));
        assert!(carried("/vkube/identity/ca"));
        assert!(carried("/registry/leases/kube-system/other"));
        assert!(!carried("/registry/vkubereplicas/vkube-0"));
        assert!(!carried(vkube_server::leader::LEASE_KEY));
        assert!(!carried("/registry/\u{1}progress"));
        assert!(!carried(keyspace::MARKER));
    }
}
