//! Where a copy reads or writes: a store URL, or `etcd-dir://DATA-DIR`, the data dir of a
//! single-replica embedded etcd (`vkube serve --etcd-embedded --data-dir DATA-DIR`). Embedded
//! etcd runs only while its vkube serves, so for an offline copy vkube starts the member itself,
//! exactly as `vkube serve` would, for the length of the copy. A new data dir gets a new member,
//! which `vkube serve --etcd-embedded --data-dir DATA-DIR` then runs as its own.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use vkube_store::StoreUrl;

use crate::embedded_etcd::{self, Member};
use crate::redact;

/// A parsed `--from`/`--to`/`--store`.
pub enum Location {
    Store(StoreUrl),
    EmbeddedDir {
        dir: PathBuf,
        peer: String,
        client: String,
    },
}

/// How long a member started for a copy may take to serve.
const HEALTHY: Duration = Duration::from_secs(60);

impl std::str::FromStr for Location {
    type Err = anyhow::Error;

    fn from_str(url: &str) -> Result<Location> {
        let Some(rest) = url.strip_prefix("etcd-dir://") else {
            return Ok(Location::Store(url.parse()?));
        };
        let (dir, query) = rest.split_once('?').unwrap_or((rest, ""));
        if dir.is_empty() {
            bail!("{url}: etcd-dir:// needs the data dir, e.g. etcd-dir:///var/lib/vkube");
        }
        // The single member `vkube serve --etcd-embedded` runs on 127.0.0.1 by default.
        let (mut peer, mut client) = (
            "http://127.0.0.1:2380".to_string(),
            "http://127.0.0.1:2379".to_string(),
        );
        for param in query.split('&').filter(|p| !p.is_empty()) {
            match param.split_once('=') {
                Some(("peer", v)) => peer = v.to_string(),
                Some(("client", v)) => client = v.to_string(),
                _ => bail!(
                    "{url}: unknown etcd-dir option {param:?}; known: peer=URL, client=URL (as --etcd-peers and --etcd-clients)"
                ),
            }
        }
        for u in [&peer, &client] {
            if !u.starts_with("http://") {
                bail!(
                    "{url}: {u}: etcd-dir:// runs a plain-HTTP member on loopback; for a member with TLS, serve it and give its etcd:// URL with ca, cert and key"
                );
            }
        }
        Ok(Location::EmbeddedDir {
            dir: PathBuf::from(dir),
            peer,
            client,
        })
    }
}

/// The store a [`Location`] names, with the member that serves it for the copy, if any.
pub struct Opened {
    pub url: StoreUrl,
    pub shown: String,
    member: Option<Member>,
}

impl Opened {
    /// Stops the member started for the copy.
    pub async fn close(self) {
        if let Some(member) = self.member {
            member.stop().await;
        }
    }
}

impl Location {
    /// Resolves the location to a store URL, starting an embedded etcd member on its data dir
    /// (`must_exist`: only on an existing one).
    pub async fn start(self, must_exist: bool) -> Result<Opened> {
        let (dir, peer, client) = match self {
            Location::Store(url) => {
                return Ok(Opened {
                    shown: redact(&url),
                    url,
                    member: None,
                });
            }
            Location::EmbeddedDir { dir, peer, client } => (dir, peer, client),
        };
        let data = dir.join("etcd");
        if must_exist && !embedded_etcd::has_wal(&data.join("data")) {
            bail!("{} holds no embedded etcd data", dir.display());
        }
        let address = client.trim_start_matches("http://").to_string();
        if tokio::net::TcpStream::connect(&address).await.is_ok() {
            bail!(
                "something already listens at {client}: the member of a running vkube serve --etcd-embedded? A migration copies an offline store: stop it first (a snapshot can read it online: give --store etcd://{address})"
            );
        }
        let options = embedded_etcd::Options {
            binary: std::env::var_os("VKUBE_ETCD_BINARY")
                .map(PathBuf::from)
                .unwrap_or_else(|| "etcd".into()),
            dir: data,
            replica: 0,
            peers: vec![peer],
            clients: vec![client],
            extra_args: Vec::new(),
            advertise: None,
            tls: None,
        };
        let url = options.store_url();
        let log = options.dir.join("etcd.log");
        let member = embedded_etcd::start(options).await?;
        if tokio::time::timeout(HEALTHY, member.wait_healthy())
            .await
            .is_err()
        {
            member.stop().await;
            bail!(
                "the embedded etcd member on {} did not serve within {}s (its log: {})",
                dir.display(),
                HEALTHY.as_secs(),
                log.display()
            );
        }
        Ok(Opened {
            shown: format!("etcd-dir://{}", dir.display()),
            url,
            member: Some(member),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_etcd_dir_names_the_member_serve_would_run() {
        let Location::EmbeddedDir { dir, peer, client } =
            "etcd-dir:///var/lib/vkube".parse().unwrap()
        else {
            panic!("not an etcd dir");
        };
        assert_eq!(dir, PathBuf::from("/var/lib/vkube"));
        assert_eq!(
            (peer.as_str(), client.as_str()),
            ("http://127.0.0.1:2380", "http://127.0.0.1:2379")
        );
        let Ok(Location::EmbeddedDir { peer, .. }) =
            "etcd-dir://d?peer=http://127.0.0.1:12380&client=http://127.0.0.1:12379".parse()
        else {
            panic!("not an etcd dir");
        };
        assert_eq!(peer, "http://127.0.0.1:12380");
        assert!(matches!(
            "sqlite:///x.db".parse::<Location>(),
            Ok(Location::Store(StoreUrl::Sqlite { .. }))
        ));
        for (bad, needle) in [
            ("etcd-dir://", "needs the data dir"),
            ("etcd-dir://d?tls=1", "unknown etcd-dir option"),
            ("etcd-dir://d?peer=https://h:2380", "plain-HTTP"),
        ] {
            let err = bad.parse::<Location>().err().unwrap().to_string();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }
}
