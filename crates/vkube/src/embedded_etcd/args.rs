//! `vkube serve`'s embedded etcd flags, and the member list they and the StatefulSet give.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use vkube_server::identity::GivenCa;

use super::{Options, client_url_of, member_name, parse_urls, tls};

/// etcd's ports, as the chart's headless Service names them.
const PEER_PORT: u16 = 2380;
const CLIENT_PORT: u16 = 2379;

/// Embedded etcd (vcluster's controlPlane.backingStore.etcd.embedded): each replica runs one
/// member of an etcd cluster and keeps the state there.
#[derive(clap::Args)]
pub struct EmbeddedEtcdArgs {
    /// Run and supervise one etcd member per replica, its data in the data dir's `etcd/`.
    #[arg(long, conflicts_with = "store")]
    pub etcd_embedded: bool,
    /// The etcd binary (default: `etcd` on PATH).
    #[arg(long, env = "VKUBE_ETCD_BINARY", default_value = "etcd")]
    etcd_binary: PathBuf,
    /// The peer URL of each replica's member, in replica order or as N=URL (comma-separated).
    /// Default in a StatefulSet pod (POD_NAME NAME-N, its FQDN in /etc/hosts):
    /// SCHEME://NAME-i.SUBDOMAIN:2380; else, with one replica, SCHEME://LISTEN-ADDRESS:2380.
    /// SCHEME is https with --ca-cert-file, else http.
    #[arg(long, value_delimiter = ',')]
    pub etcd_peers: Vec<String>,
    /// The client URL of each replica's member, likewise (default: each peer URL's host, port 2379).
    #[arg(long, value_delimiter = ',')]
    pub etcd_clients: Vec<String>,
}

/// Where this process runs, as far as embedded etcd cares.
pub struct Place<'a> {
    pub replicas: u32,
    pub replica: u32,
    pub data_dir: &'a Path,
    /// `--listen`: the default single member's host when it is a specific address.
    pub listen: std::net::SocketAddr,
    /// `--advertise-address` (VKUBE_ADVERTISE_ADDRESS): the pod's address.
    pub advertise: Option<IpAddr>,
    /// The cluster CA from files: with it, etcd runs with TLS.
    pub ca: Option<&'a GivenCa>,
}

impl EmbeddedEtcdArgs {
    /// This replica's member, from the replica list (the flags', or the StatefulSet's). With a
    /// CA, issues its certificates.
    pub fn options(&self, place: Place<'_>, extra_args: Vec<String>) -> Result<Options> {
        let pod = std::env::var("POD_NAME").ok().and_then(|pod| {
            let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
            StatefulSetPod::from_hosts(&pod, &hosts)
        });
        self.options_in(place, pod, extra_args)
    }

    fn options_in(
        &self,
        place: Place<'_>,
        pod: Option<StatefulSetPod>,
        extra_args: Vec<String>,
    ) -> Result<Options> {
        let replicas = place.replicas as usize;
        let replica = place.replica as usize;
        if replica >= replicas {
            bail!("--replica-id {replica} with {replicas} replicas: ids run from 0");
        }
        let scheme = if place.ca.is_some() { "https" } else { "http" };
        let derived = self.etcd_peers.is_empty().then_some(pod).flatten();
        let peers = if let Some(pod) = &derived {
            if pod.ordinal as usize != replica {
                bail!(
                    "this pod is {}-{} but --replica-id is {replica}: in a StatefulSet, leave --replica-id out or give --etcd-peers",
                    pod.set,
                    pod.ordinal
                );
            }
            pod.urls(scheme, PEER_PORT, replicas)
        } else if self.etcd_peers.is_empty() && replicas == 1 {
            let ip = match place.listen.ip() {
                ip if ip.is_unspecified() => IpAddr::from([127, 0, 0, 1]),
                ip => ip,
            };
            vec![format!(
                "{scheme}://{}",
                std::net::SocketAddr::new(ip, PEER_PORT)
            )]
        } else if self.etcd_peers.is_empty() {
            bail!(
                "embedded etcd with {replicas} replicas needs every member's peer URL: run as a StatefulSet pod (POD_NAME NAME-N, with spec.subdomain, so that /etc/hosts holds its FQDN), or give --etcd-peers {scheme}://HOST-0:2380,{scheme}://HOST-1:2380,…"
            );
        } else {
            parse_urls("etcd-peers", &self.etcd_peers, replicas)?
        };
        let clients = if !self.etcd_clients.is_empty() {
            parse_urls("etcd-clients", &self.etcd_clients, replicas)?
        } else if let Some(pod) = &derived {
            pod.urls(scheme, CLIENT_PORT, replicas)
        } else {
            peers
                .iter()
                .map(|p| client_url_of(p))
                .collect::<Result<_>>()?
        };
        for url in peers.iter().chain(&clients) {
            if !url.starts_with(&format!("{scheme}://")) {
                bail!(match place.ca {
                    Some(ca) => format!(
                        "embedded etcd URL {url:?}: with a cluster CA ({}) embedded etcd runs with TLS, so every peer and client URL is https://",
                        ca.cert_file.display()
                    ),
                    None => format!(
                        "embedded etcd URL {url:?}: https needs the cluster CA to issue certificates from: give --ca-cert-file and --ca-key-file"
                    ),
                });
            }
        }
        // The pod's address: the flag's (VKUBE_ADVERTISE_ADDRESS), else the one /etc/hosts gives
        // this pod's FQDN.
        let advertise = place.advertise.or(derived.as_ref().and_then(|pod| pod.ip));
        let dir = place.data_dir.join("etcd");
        let tls = match place.ca {
            Some(ca) => {
                let own = [peers[replica].as_str(), clients[replica].as_str()];
                let names = tls::names_of(&own, advertise);
                Some(tls::issue(
                    ca,
                    &member_name(replica),
                    &dir.join("pki"),
                    &names,
                )?)
            }
            None => None,
        };
        Ok(Options {
            binary: self.etcd_binary.clone(),
            dir,
            replica,
            peers,
            clients,
            extra_args,
            advertise,
            tls,
        })
    }
}

/// A StatefulSet's pod `SET-ORDINAL` and the subdomain its stable names live in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatefulSetPod {
    pub set: String,
    pub ordinal: u32,
    /// `SERVICE.NAMESPACE.svc.CLUSTER-DOMAIN`: pod i is `SET-i.<subdomain>`.
    pub subdomain: String,
    /// The pod's address, as /etc/hosts gives it.
    pub ip: Option<IpAddr>,
}

impl StatefulSetPod {
    /// The pod `pod_name` (POD_NAME, `SET-ORDINAL`) as /etc/hosts (`hosts`) describes it.
    ///
    /// Why /etc/hosts: for a pod with `spec.subdomain`, which a StatefulSet sets to its
    /// `serviceName`, the kubelet writes the line `POD-IP FQDN HOSTNAME` there, the FQDN being
    /// `HOSTNAME.SUBDOMAIN.NAMESPACE.svc.CLUSTER-DOMAIN`. That is the one place that holds the
    /// real Service name and cluster domain: the pod's env (POD_NAMESPACE) has neither, and a
    /// guess (`NAME-headless`, `cluster.local`) breaks on a cluster whose domain differs. It
    /// needs no DNS lookup, which could fail while the headless Service's records are still
    /// being published as the pods start. `None` (so explicit flags are needed) outside such a
    /// pod: no POD_NAME of that shape, or no line naming `POD_NAME.…` (bare machines, or
    /// hostNetwork pods, whose /etc/hosts the kubelet leaves alone).
    pub fn from_hosts(pod_name: &str, hosts: &str) -> Option<StatefulSetPod> {
        let (set, ordinal) = pod_name.rsplit_once('-')?;
        let ordinal: u32 = ordinal.parse().ok()?;
        if set.is_empty() {
            return None;
        }
        let prefix = format!("{pod_name}.");
        for line in hosts.lines() {
            let line = line.split('#').next().unwrap_or_default();
            let mut fields = line.split_whitespace();
            let Some(address) = fields.next() else {
                continue;
            };
            for name in fields {
                let subdomain = name
                    .strip_prefix(&prefix)
                    .map(|s| s.trim_end_matches('.'))
                    .filter(|s| !s.is_empty());
                if let Some(subdomain) = subdomain {
                    return Some(StatefulSetPod {
                        set: set.to_string(),
                        ordinal,
                        subdomain: subdomain.to_string(),
                        ip: address.parse().ok(),
                    });
                }
            }
        }
        None
    }

    /// Each pod's URL at `port`: `SCHEME://SET-i.SUBDOMAIN:PORT`.
    fn urls(&self, scheme: &str, port: u16, replicas: usize) -> Vec<String> {
        (0..replicas)
            .map(|i| format!("{scheme}://{}-{i}.{}:{port}", self.set, self.subdomain))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTS: &str = "# Kubernetes-managed hosts file.
127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
10.244.1.7\tvk-1.vk-headless.team-a.svc.cluster.local\tvk-1

# Entries added by HostAliases.
10.0.0.9\tvk-1-alias
";

    #[test]
    fn a_statefulset_pod_is_found_in_etc_hosts() {
        let pod = StatefulSetPod::from_hosts("vk-1", HOSTS).unwrap();
        assert_eq!(
            pod,
            StatefulSetPod {
                set: "vk".into(),
                ordinal: 1,
                subdomain: "vk-headless.team-a.svc.cluster.local".into(),
                ip: Some("10.244.1.7".parse().unwrap()),
            }
        );
        assert_eq!(
            pod.urls("https", 2380, 3),
            [
                "https://vk-0.vk-headless.team-a.svc.cluster.local:2380",
                "https://vk-1.vk-headless.team-a.svc.cluster.local:2380",
                "https://vk-2.vk-headless.team-a.svc.cluster.local:2380",
            ]
        );
        // Another cluster domain is taken as written.
        let other = "10.1.0.4 my-vc-12.my-vc-headless.ns.svc.corp.example my-vc-12";
        let pod = StatefulSetPod::from_hosts("my-vc-12", other).unwrap();
        assert_eq!((pod.set.as_str(), pod.ordinal), ("my-vc", 12));
        assert_eq!(pod.subdomain, "my-vc-headless.ns.svc.corp.example");
    }

    #[test]
    fn no_pod_without_an_ordinal_or_an_fqdn_line() {
        assert_eq!(StatefulSetPod::from_hosts("vk", HOSTS), None);
        assert_eq!(
            StatefulSetPod::from_hosts("vk-2", HOSTS),
            None,
            "not this pod"
        );
        assert_eq!(StatefulSetPod::from_hosts("vk-x", HOSTS), None);
        let bare = "127.0.0.1 localhost\n10.0.0.5 vk-1\n";
        assert_eq!(StatefulSetPod::from_hosts("vk-1", bare), None);
        let commented = "# 10.0.0.5 vk-1.vk-headless.ns.svc.cluster.local vk-1\n";
        assert_eq!(StatefulSetPod::from_hosts("vk-1", commented), None);
    }

    fn args(peers: &[&str]) -> EmbeddedEtcdArgs {
        EmbeddedEtcdArgs {
            etcd_embedded: true,
            etcd_binary: "etcd".into(),
            etcd_peers: peers.iter().map(|s| s.to_string()).collect(),
            etcd_clients: vec![],
        }
    }

    fn place<'a>(dir: &'a Path, ca: Option<&'a GivenCa>, replica: u32) -> Place<'a> {
        Place {
            replicas: 3,
            replica,
            data_dir: dir,
            listen: "0.0.0.0:8443".parse().unwrap(),
            advertise: None,
            ca,
        }
    }

    fn given_ca(dir: &Path) -> GivenCa {
        let (cert, key) = ca_in_files(dir);
        GivenCa::from_files(&cert, &key).unwrap()
    }

    #[test]
    fn in_a_statefulset_pod_the_members_are_derived_and_get_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let ca = given_ca(&dir.path().join("secret"));
        let pod = StatefulSetPod::from_hosts("vk-1", HOSTS);
        let options = args(&[])
            .options_in(place(dir.path(), Some(&ca), 1), pod.clone(), vec![])
            .unwrap();
        let fqdn = |i: usize| format!("vk-{i}.vk-headless.team-a.svc.cluster.local");
        assert_eq!(options.peers[2], format!("https://{}:2380", fqdn(2)));
        assert_eq!(options.clients[0], format!("https://{}:2379", fqdn(0)));
        assert_eq!(options.advertise, Some("10.244.1.7".parse().unwrap()));
        // The member's certificate names the pod, its address and loopback; every file is
        // its owner's only.
        let pki = dir.path().join("etcd/pki");
        let cert = std::fs::read_to_string(pki.join("member.crt")).unwrap();
        let der = rustls::pki_types::pem::PemObject::from_pem_slice(cert.as_bytes())
            .map(|d: rustls::pki_types::CertificateDer| d.to_vec())
            .unwrap();
        for name in [fqdn(1).as_str(), "localhost", "127.0.0.1", "10.244.1.7"] {
            assert!(
                has_san(&der, name),
                "{name} not in the member's certificate"
            );
        }
        assert!(!has_san(&der, &fqdn(2)));
        use std::os::unix::fs::PermissionsExt;
        for file in [
            "ca.crt",
            "member.crt",
            "member.key",
            "client.crt",
            "client.key",
        ] {
            let mode = std::fs::metadata(pki.join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
        let tls = options.tls.as_ref().unwrap();
        assert!(tls.etcd_args().contains(&"--client-cert-auth".to_string()));
        assert!(
            tls.etcd_args()
                .contains(&"--peer-client-cert-auth".to_string())
        );

        // Explicit flags win; without a CA the derived URLs are http.
        let options = args(&["http://a:1", "http://b:1", "http://c:1"])
            .options_in(place(dir.path(), None, 1), pod.clone(), vec![])
            .unwrap();
        assert_eq!(options.peers[1], "http://b:1");
        let options = args(&[])
            .options_in(place(dir.path(), None, 1), pod.clone(), vec![])
            .unwrap();
        assert_eq!(options.peers[1], format!("http://{}:2380", fqdn(1)));
        assert!(options.tls.is_none());
        // A pod whose ordinal is not its replica id is refused.
        let err = args(&[])
            .options_in(place(dir.path(), None, 2), pod, vec![])
            .err()
            .unwrap();
        assert!(err.to_string().contains("--replica-id is 2"), "{err}");
    }

    #[test]
    fn schemes_follow_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let ca = given_ca(&dir.path().join("secret"));
        let http = [
            "http://127.0.0.1:1",
            "http://127.0.0.1:2",
            "http://127.0.0.1:3",
        ];
        let err = args(&http)
            .options_in(place(dir.path(), Some(&ca), 0), None, vec![])
            .err()
            .unwrap();
        assert!(err.to_string().contains("runs with TLS"), "{err}");
        let https = http.map(|u| u.replace("http:", "https:"));
        let https: Vec<&str> = https.iter().map(String::as_str).collect();
        let err = args(&https)
            .options_in(place(dir.path(), None, 0), None, vec![])
            .err()
            .unwrap();
        assert!(err.to_string().contains("--ca-cert-file"), "{err}");
        // Bare machine, no StatefulSet, 3 replicas and no peers: the flags are needed.
        let err = args(&[])
            .options_in(place(dir.path(), None, 0), None, vec![])
            .err()
            .unwrap();
        assert!(err.to_string().contains("--etcd-peers"), "{err}");
    }

    /// Whether a certificate (DER) holds the subject alternative name `dns`, or `ip`.
    fn has_san(der: &[u8], san: &str) -> bool {
        let needle: Vec<u8> = match san.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => [&[0x87, 4][..], &ip.octets()].concat(),
            Ok(IpAddr::V6(ip)) => [&[0x87, 16][..], &ip.octets()].concat(),
            Err(_) => [&[0x82, san.len() as u8][..], san.as_bytes()].concat(),
        };
        der.windows(needle.len()).any(|w| w == needle)
    }

    /// A CA in files, as a Secret would hold it.
    pub(crate) fn ca_in_files(dir: &Path) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test-ca");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        std::fs::create_dir_all(dir).unwrap();
        let (cert_file, key_file) = (dir.join("ca.crt"), dir.join("ca.key"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        (cert_file, key_file)
    }
}
