//! Founding and joining: which cluster this replica's member belongs to (recorded in
//! `<data-dir>/etcd/cluster-id` once it is up), whether it founds one or joins one, and the
//! membership changes a join takes.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use etcd_client::Client;

use super::{Options, REQUEST_TIMEOUT, member_name};

/// How long replica 0, its data dir empty, looks for running members before it founds a new
/// cluster: after a full restart the others may still be starting, and founding a second cluster
/// beside them would split the state.
pub(super) const FOUNDING_GRACE: Duration = Duration::from_secs(2);

/// The cluster this replica's member belonged to, as recorded; `None` when nothing is.
pub(super) fn recorded_cluster(options: &Options) -> Result<Option<u64>> {
    let file = options.cluster_file();
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    let id = u64::from_str_radix(text.trim(), 16).with_context(|| {
        format!(
            "{} holds {:?}, not an etcd cluster ID (hex); delete it only to found a new cluster",
            file.display(),
            text.trim()
        )
    })?;
    Ok(Some(id))
}

/// Records `cluster` as this member's (written whole, then renamed, so a crash leaves the old
/// record or the new one).
pub(super) fn record_cluster(options: &Options, cluster: u64) -> Result<()> {
    let file = options.cluster_file();
    let tmp = options.dir.join("cluster-id.tmp");
    std::fs::write(&tmp, format!("{cluster:x}\n"))
        .and_then(|()| std::fs::rename(&tmp, &file))
        .with_context(|| format!("writing {}", file.display()))
}

/// The cluster ID the member at `client` reports (its own status: no quorum needed).
pub(super) async fn cluster_of(options: &Options, client: &str) -> Option<u64> {
    let ask = async {
        let mut client = options.connect(client, false).await.ok()?;
        let status = client.status().await.ok()?;
        status.header().map(|h| h.cluster_id())
    };
    tokio::time::timeout(REQUEST_TIMEOUT, ask)
        .await
        .ok()
        .flatten()
}

/// Once the member answers, records its cluster (then waits forever: it runs beside the
/// member's process in the supervisor).
pub(super) async fn record_when_up(options: &Options) {
    loop {
        if let Some(cluster) = cluster_of(options, options.client()).await {
            match recorded_cluster(options) {
                Ok(Some(recorded)) if recorded == cluster => {}
                Ok(recorded) => {
                    if let Some(recorded) = recorded {
                        eprintln!(
                            "vkube: etcd member {} runs in cluster {cluster:x}, not in the recorded {recorded:x}; recording {cluster:x}",
                            options.name()
                        );
                    }
                    if let Err(err) = record_cluster(options, cluster) {
                        eprintln!("vkube: {err:#}");
                    }
                }
                Err(err) => eprintln!("vkube: {err:#}"),
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    std::future::pending::<()>().await
}

/// etcd's `--initial-cluster-token`, which only a founding member reads: etcd derives the member
/// and cluster IDs from it and the peer URLs, so a token of each founding's own gives each cluster
/// an ID of its own. With one fixed token, replica 0 founding again at the same address would
/// get the very ID of the cluster it split from, and the ID could not tell them apart.
pub(super) fn founding_token(state: &str) -> String {
    if state != "new" {
        return "vkube".into();
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("vkube-{nanos:x}-{:x}", std::process::id())
}

/// How the member starts: alone, founding the cluster, or joining the existing one.
pub(super) struct Bootstrap {
    pub(super) initial_cluster: String,
    pub(super) state: &'static str,
    /// The member ID `member add` gave it.
    pub(super) id: Option<u64>,
}

/// Another member that answered: where, its cluster's ID and members, and a client to it.
struct Found {
    endpoint: String,
    cluster: u64,
    members: Vec<etcd_client::Member>,
    client: Client,
}

/// The first other member that answers, with the cluster's members.
async fn find_cluster(options: &Options) -> Option<Found> {
    for endpoint in options.others() {
        let ask = async {
            let mut client = options.connect(endpoint, false).await.ok()?;
            let list = client.member_list().await.ok()?;
            Some(Found {
                endpoint: endpoint.clone(),
                cluster: list.header()?.cluster_id(),
                members: list.members().to_vec(),
                client,
            })
        };
        if let Ok(Some(found)) = tokio::time::timeout(REQUEST_TIMEOUT, ask).await {
            return Some(found);
        }
    }
    None
}

/// Whether `found` answers for another cluster than the recorded one (then it must not be
/// joined, nor believed about this member's membership).
fn foreign(recorded: Option<u64>, found: &Found) -> bool {
    recorded.is_some_and(|r| r != found.cluster)
}

/// Whether the cluster, asked through another member of it, no longer lists this one.
pub(super) async fn removed(options: &Options) -> bool {
    let recorded = recorded_cluster(options).ok().flatten();
    match find_cluster(options).await {
        Some(found) if !foreign(recorded, &found) => !found
            .members
            .iter()
            .any(|m| m.peer_urls().iter().any(|u| u == options.peer())),
        _ => false,
    }
}

/// Founds the cluster (replica 0, when no other member answers) or joins it: removes a stale
/// member of this name or peer URL, adds this one, and starts from the membership the add
/// returned. Retries until it succeeds, since a join has to wait for quorum and for etcd's
/// reconfiguration checks (one unstarted member at a time, peers connected for 5 s).
pub(super) async fn bootstrap(options: &Options) -> Result<Bootstrap> {
    let started = Instant::now();
    // Set once this replica's member has been up: it then never founds a cluster again.
    let recorded = recorded_cluster(options)?;
    let file = options.cluster_file();
    // When it last said why it waits: once at first, then every 5 s.
    let mut said: Option<Instant> = None;
    let mut due = || {
        let due = said.is_none_or(|at| at.elapsed() > Duration::from_secs(5));
        if due {
            said = Some(Instant::now());
        }
        due
    };
    loop {
        // Why it has not started yet, if it should say so.
        let waiting = match find_cluster(options).await {
            Some(found) if foreign(recorded, &found) => Some(format!(
                "vkube: etcd member {} belongs to cluster {:x} (recorded in {}), but the member at {} answers for cluster {:x}; it joins no other cluster and waits for a member of its own",
                options.name(),
                recorded.unwrap_or_default(),
                file.display(),
                found.endpoint,
                found.cluster
            )),
            Some(mut found) => match join(options, &mut found.client, &found.members).await {
                Ok(bootstrap) => return Ok(bootstrap),
                Err(err) => Some(format!(
                    "vkube: etcd member {} cannot join yet: {err:#}; retrying",
                    options.name()
                )),
            },
            None if recorded.is_some() => {
                let others: Vec<String> = options.others().cloned().collect();
                let waits = if others.is_empty() {
                    "it has no other member, and will not found a new cluster by itself".into()
                } else {
                    format!(
                        "it waits for a member of that cluster to answer at {} and will not found a new one",
                        others.join(",")
                    )
                };
                Some(format!(
                    "vkube: etcd member {} has no data but belongs to cluster {:x} (recorded in {}); {waits}. Only if that cluster is lost for good: delete {} to found a new, empty cluster from this replica",
                    options.name(),
                    recorded.unwrap_or_default(),
                    file.display(),
                    file.display()
                ))
            }
            None if options.replica == 0
                && (options.peers.len() == 1 || started.elapsed() >= FOUNDING_GRACE) =>
            {
                eprintln!(
                    "vkube: no other etcd member answers; {} founds the cluster",
                    options.name()
                );
                return Ok(Bootstrap {
                    initial_cluster: format!("{}={}", options.name(), options.peer()),
                    state: "new",
                    id: None,
                });
            }
            None if options.replica != 0 => Some(format!(
                "vkube: etcd member {} waits for a member of the cluster to answer at {}",
                options.name(),
                options.others().cloned().collect::<Vec<_>>().join(",")
            )),
            None => None,
        };
        if let Some(why) = waiting
            && due()
        {
            eprintln!("{why}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn join(
    options: &Options,
    client: &mut Client,
    members: &[etcd_client::Member],
) -> Result<Bootstrap> {
    let timeout = |what: &'static str| move |_| anyhow::anyhow!("{what}: timed out");
    for stale in members
        .iter()
        .filter(|m| m.name() == options.name() || m.peer_urls().iter().any(|u| u == options.peer()))
    {
        eprintln!(
            "vkube: etcd member {} ({:x}) is listed but this replica has no data: removing it to add it anew",
            options.name(),
            stale.id()
        );
        tokio::time::timeout(REQUEST_TIMEOUT, client.member_remove(stale.id()))
            .await
            .map_err(timeout("member remove"))?
            .context("member remove")?;
    }
    let added = tokio::time::timeout(
        REQUEST_TIMEOUT,
        client.member_add([options.peer().to_string()], None),
    )
    .await
    .map_err(timeout("member add"))?
    .context("member add")?;
    let new_id = added.member().map(|m| m.id());
    // Members that have not started yet have no name: theirs comes from the replica list.
    let mut cluster = Vec::new();
    for m in added.member_list() {
        let name = if Some(m.id()) == new_id {
            options.name()
        } else if !m.name().is_empty() {
            m.name().to_string()
        } else if let Some(i) = options.peers.iter().position(|p| m.peer_urls().contains(p)) {
            member_name(i)
        } else {
            continue;
        };
        cluster.extend(m.peer_urls().iter().map(|u| format!("{name}={u}")));
    }
    eprintln!(
        "vkube: etcd member {} added to the cluster ({})",
        options.name(),
        cluster.join(",")
    );
    Ok(Bootstrap {
        initial_cluster: cluster.join(","),
        state: "existing",
        id: new_id,
    })
}
