//! TLS for embedded etcd, when the cluster CA is given in files (`--ca-cert-file`,
//! `--ca-key-file`): it has to exist before the store does, so a CA kept in the store cannot
//! secure the store. Each replica issues itself, from that CA, at every start:
//!
//! - `member.crt`: its member's certificate, serving clients and peers and presented to peers as
//!   a client (both extended key usages), for its own names: the host of its peer and client
//!   URLs (in a StatefulSet, the pod's FQDN), the pod's address, 127.0.0.1 and localhost;
//! - `client.crt`: vkube's client certificate, with which the store and the supervisor talk to
//!   the members.
//!
//! They lie in `<data-dir>/etcd/pki`, each file readable by its owner only, beside `ca.crt`.
//! etcd then requires a certificate from that CA of every client and every peer
//! (`--client-cert-auth`, `--peer-client-cert-auth`), so only the replicas of this cluster reach
//! its data. Issuing anew at each start follows the pod's address (a rescheduled pod has another
//! one) and renews the certificates (a year each) with every restart.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use etcd_client::{Certificate, Identity, TlsOptions};
use vkube_server::identity::{GivenCa, write_pair, write_private};

/// The files of one replica's etcd TLS, and the client configuration made of them.
#[derive(Clone)]
pub struct Tls {
    pub dir: PathBuf,
    /// The supervisor's own client (membership, health), as the store's.
    pub client: TlsOptions,
}

/// The directory only: the client configuration holds a private key, which no log may show.
impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("dir", &self.dir).finish()
    }
}

impl Tls {
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The flags that make etcd serve clients and peers with TLS and require certificates of
    /// the cluster CA from both.
    pub fn etcd_args(&self) -> Vec<String> {
        let path = |name: &str| self.file(name).display().to_string();
        vec![
            "--client-cert-auth".into(),
            format!("--trusted-ca-file={}", path("ca.crt")),
            format!("--cert-file={}", path("member.crt")),
            format!("--key-file={}", path("member.key")),
            "--peer-client-cert-auth".into(),
            format!("--peer-trusted-ca-file={}", path("ca.crt")),
            format!("--peer-cert-file={}", path("member.crt")),
            format!("--peer-key-file={}", path("member.key")),
        ]
    }

    /// The store's TLS: the CA and vkube's client certificate.
    pub fn store(&self) -> vkube_store::EtcdTls {
        vkube_store::EtcdTls {
            ca_file: Some(self.ca_file()),
            cert_file: Some(self.file("client.crt")),
            key_file: Some(self.file("client.key")),
        }
    }
}

/// Issues this replica's member and client certificates from `ca` for `names` (DNS names or
/// IP addresses; 127.0.0.1 and localhost are always added) into `dir`.
pub fn issue(ca: &GivenCa, member: &str, dir: &Path, names: &[String]) -> Result<Tls> {
    create_private_dir(dir)?;
    let mut all: Vec<String> = Vec::new();
    for name in names
        .iter()
        .map(String::as_str)
        .chain(["127.0.0.1", "localhost"])
    {
        if !all.iter().any(|n| n == name) {
            all.push(name.to_string());
        }
    }
    let issued = |what: &str| format!("issuing embedded etcd's {what} certificate");
    let peer = ca
        .ca
        .peer_cert(member, &all)
        .with_context(|| issued("member"))?;
    let client = ca
        .ca
        .client_cert("vkube-etcd-client", &[])
        .with_context(|| issued("client"))?;
    write_private(&dir.join("ca.crt"), &ca.ca.cert_pem)?;
    write_pair(dir, "member", &peer)?;
    write_pair(dir, "client", &client)?;
    for name in ["member.crt", "client.crt"] {
        restrict(&dir.join(name))?;
    }
    let client = TlsOptions::new()
        .ca_certificate(Certificate::from_pem(&ca.ca.cert_pem))
        .identity(Identity::from_pem(&client.cert_pem, &client.key_pem));
    Ok(Tls {
        dir: dir.to_path_buf(),
        client,
    })
}

/// The names a member's certificate holds: the hosts of its own URLs and its address.
pub fn names_of(urls: &[&str], address: Option<IpAddr>) -> Vec<String> {
    let mut names: Vec<String> = urls
        .iter()
        .filter_map(|u| url::Url::parse(u).ok())
        .filter_map(|u| match u.host()? {
            url::Host::Domain(d) => Some(d.to_string()),
            url::Host::Ipv4(ip) => Some(ip.to_string()),
            url::Host::Ipv6(ip) => Some(ip.to_string()),
        })
        .collect();
    names.extend(address.map(|a| a.to_string()));
    names.dedup();
    names
}

fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    restrict(dir)
}

/// Owner-only access: 0700 for a directory, 0600 for a file.
fn restrict(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = if path.is_dir() { 0o700 } else { 0o600 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("restricting {}", path.display()))
}
