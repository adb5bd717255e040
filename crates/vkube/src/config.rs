//! `--config vcluster.yaml`: the keys of vcluster's config that vkube honours today: the backing
//! store, high availability and the API server's authentication flags. Every other key is named in one warning (never ignored silently), and a file that is
//! not valid YAML or has a wrong type is an error naming the line and the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use serde::Deserialize;
use serde::de::IgnoredAny;
use vkube_store::{EtcdTls, StoreUrl};

type Other = BTreeMap<String, IgnoredAny>;

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct VclusterYaml {
    control_plane: ControlPlane,
    sync: crate::sync_config::Sync,
    #[serde(flatten)]
    other: Other,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ControlPlane {
    backing_store: BackingStore,
    distro: Distro,
    stateful_set: StatefulSet,
    #[serde(flatten)]
    other: Other,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct StatefulSet {
    high_availability: HighAvailability,
    #[serde(flatten)]
    other: Other,
}

/// vcluster's `controlPlane.statefulSet.highAvailability` (durations in seconds).
#[derive(Deserialize, Default, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct HighAvailability {
    pub replicas: Option<u32>,
    pub lease_duration: Option<u64>,
    pub renew_deadline: Option<u64>,
    pub retry_period: Option<u64>,
    #[serde(flatten)]
    other: Other,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Distro {
    k8s: K8sDistro,
    #[serde(flatten)]
    other: Other,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct K8sDistro {
    api_server: ApiServer,
    #[serde(flatten)]
    other: Other,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ApiServer {
    /// kube-apiserver flags, `--name=value` each: vkube honours the authentication ones.
    extra_args: Vec<String>,
    #[serde(flatten)]
    other: Other,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct BackingStore {
    database: Database,
    etcd: Etcd,
    #[serde(flatten)]
    other: Other,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Database {
    embedded: Enabled,
    external: DatabaseExternal,
    #[serde(flatten)]
    other: Other,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Enabled {
    enabled: bool,
    #[serde(flatten)]
    other: Other,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct DatabaseExternal {
    enabled: bool,
    data_source: String,
    #[serde(flatten)]
    other: Other,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Etcd {
    embedded: EtcdEmbedded,
    external: EtcdExternal,
    #[serde(flatten)]
    other: Other,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct EtcdEmbedded {
    enabled: bool,
    /// Flags for each member's etcd, `--name=value` each.
    extra_args: Vec<String>,
    #[serde(flatten)]
    other: Other,
}

/// `controlPlane.backingStore.etcd.embedded`: each replica runs one member of an etcd cluster.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct EmbeddedEtcd {
    pub extra_args: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct EtcdExternal {
    enabled: bool,
    endpoint: String,
    tls: EtcdTlsFiles,
    #[serde(flatten)]
    other: Other,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct EtcdTlsFiles {
    ca_file: String,
    cert_file: String,
    key_file: String,
    #[serde(flatten)]
    other: Other,
}

/// vcluster.yaml keys that the chart reads when it renders the pods (image, resources,
/// volumes, the Service); `vkube serve` reads the file the chart mounts, and these are not for it.
const CHART_KEYS: &[&str] = &[
    "controlPlane.statefulSet.image",
    "controlPlane.statefulSet.imagePullPolicy",
    "controlPlane.statefulSet.resources",
    "controlPlane.statefulSet.persistence",
    "controlPlane.statefulSet.env",
    "controlPlane.statefulSet.labels",
    "controlPlane.statefulSet.annotations",
    "controlPlane.statefulSet.pods",
    "controlPlane.service",
];

/// What a vcluster.yaml asks of vkube.
#[derive(Debug, PartialEq)]
pub struct Config {
    /// The store it names, if any (`None`: the embedded default, or embedded etcd).
    pub store: Option<StoreUrl>,
    /// `controlPlane.backingStore.etcd.embedded`, when enabled.
    pub embedded_etcd: Option<EmbeddedEtcd>,
    /// Dotted paths of keys vkube does not know or support yet.
    pub unsupported: Vec<String>,
    /// `controlPlane.distro.k8s.apiServer.extraArgs`.
    pub api_server_args: Vec<String>,
    /// `controlPlane.statefulSet.highAvailability`.
    pub high_availability: HighAvailability,
    /// `sync`: what the syncer copies between vkube and the host.
    pub sync: crate::sync_config::SyncSettings,
}

/// The dotted path of the key on `line` (1-based), from the indentation of the lines above it.
fn key_path_at(text: &str, line: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let Some(start) = line.checked_sub(1).filter(|l| *l < lines.len()) else {
        return String::new();
    };
    let key = |l: &str| {
        l.trim_start()
            .trim_start_matches("- ")
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_string()
    };
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut path = vec![key(lines[start])];
    let mut depth = indent(lines[start]);
    for l in lines[..start].iter().rev() {
        if l.trim().is_empty() || l.trim_start().starts_with('#') {
            continue;
        }
        if indent(l) < depth {
            depth = indent(l);
            path.push(key(l));
        }
    }
    path.reverse();
    path.join(".")
}

pub fn parse(text: &str, file: &Path) -> Result<Config> {
    let yaml: VclusterYaml = match serde_saphyr::from_str(text) {
        Ok(v) => v,
        Err(err) => {
            let msg = err.to_string();
            match err.location() {
                Some(loc) => {
                    let key = key_path_at(text, loc.line() as usize);
                    bail!(
                        "{}: line {}, key {key:?}: {msg}",
                        file.display(),
                        loc.line()
                    )
                }
                None => bail!("{}: {msg}", file.display()),
            }
        }
    };
    let mut unsupported = Vec::new();
    let mut note = |prefix: &str, other: &Other| {
        unsupported.extend(other.keys().map(|k| {
            if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            }
        }));
    };
    let cp = &yaml.control_plane;
    let bs = &cp.backing_store;
    note("", &yaml.other);
    note("controlPlane", &cp.other);
    note("controlPlane.backingStore", &bs.other);
    note("controlPlane.distro", &cp.distro.other);
    note("controlPlane.statefulSet", &cp.stateful_set.other);
    note(
        "controlPlane.statefulSet.highAvailability",
        &cp.stateful_set.high_availability.other,
    );
    note("controlPlane.distro.k8s", &cp.distro.k8s.other);
    note(
        "controlPlane.distro.k8s.apiServer",
        &cp.distro.k8s.api_server.other,
    );
    note("controlPlane.backingStore.database", &bs.database.other);
    note(
        "controlPlane.backingStore.database.embedded",
        &bs.database.embedded.other,
    );
    note(
        "controlPlane.backingStore.database.external",
        &bs.database.external.other,
    );
    note("controlPlane.backingStore.etcd", &bs.etcd.other);
    note(
        "controlPlane.backingStore.etcd.embedded",
        &bs.etcd.embedded.other,
    );
    note(
        "controlPlane.backingStore.etcd.external",
        &bs.etcd.external.other,
    );
    note(
        "controlPlane.backingStore.etcd.external.tls",
        &bs.etcd.external.tls.other,
    );

    // Keys the chart (`chart/`, `vkube create`) consumes: how the pods run, not what vkube does.
    unsupported.retain(|k| !CHART_KEYS.contains(&k.as_str()));

    let (sync, sync_unsupported) = yaml.sync.settings();
    unsupported.extend(sync_unsupported);

    let mut chosen = Vec::new();
    if bs.database.embedded.enabled {
        chosen.push(("controlPlane.backingStore.database.embedded", None));
    }
    if bs.database.external.enabled {
        let source = bs.database.external.data_source.trim();
        if source.is_empty() {
            bail!(
                "{}: controlPlane.backingStore.database.external.enabled is true but dataSource is empty; set it to postgres://user:password@host:5432/database",
                file.display()
            );
        }
        if !source.starts_with("postgres://") && !source.starts_with("postgresql://") {
            bail!(
                "{}: controlPlane.backingStore.database.external.dataSource: vkube supports PostgreSQL (postgres://…), not {:?}",
                file.display(),
                source.split("://").next().unwrap_or(source)
            );
        }
        chosen.push((
            "controlPlane.backingStore.database.external",
            Some(source.parse::<StoreUrl>()?),
        ));
    }
    if bs.etcd.embedded.enabled {
        chosen.push(("controlPlane.backingStore.etcd.embedded", None));
    }
    if bs.etcd.external.enabled {
        let endpoint = bs.etcd.external.endpoint.trim();
        if endpoint.is_empty() {
            bail!(
                "{}: controlPlane.backingStore.etcd.external.enabled is true but endpoint is empty; set it to host:2379",
                file.display()
            );
        }
        let tls = &bs.etcd.external.tls;
        let file_of = |f: &String| (!f.is_empty()).then(|| PathBuf::from(f));
        let tls = EtcdTls {
            ca_file: file_of(&tls.ca_file),
            cert_file: file_of(&tls.cert_file),
            key_file: file_of(&tls.key_file),
        };
        let endpoints = endpoint.split(',').map(|e| e.trim().to_string()).collect();
        let tls = (tls != EtcdTls::default()).then_some(tls);
        chosen.push((
            "controlPlane.backingStore.etcd.external",
            Some(StoreUrl::Etcd {
                endpoints,
                prefix: String::new(),
                tls,
            }),
        ));
    }
    if chosen.len() > 1 {
        let names: Vec<_> = chosen.iter().map(|(n, _)| *n).collect();
        bail!(
            "{}: more than one backing store is enabled ({}); enable exactly one",
            file.display(),
            names.join(" and ")
        );
    }
    let embedded_etcd = bs.etcd.embedded.enabled.then(|| EmbeddedEtcd {
        extra_args: bs.etcd.embedded.extra_args.clone(),
    });
    Ok(Config {
        store: chosen.into_iter().next().and_then(|(_, url)| url),
        embedded_etcd,
        unsupported,
        api_server_args: cp.distro.k8s.api_server.extra_args.clone(),
        high_availability: cp.stateful_set.high_availability.clone(),
        sync,
    })
}

pub fn load(file: &Path) -> Result<Config> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", file.display()))?;
    parse(&text, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Config> {
        parse(text, Path::new("vcluster.yaml"))
    }

    #[test]
    fn honours_the_backing_store_keys() {
        assert_eq!(p("controlPlane:\n  backingStore:\n    database:\n      embedded:\n        enabled: true\n").unwrap().store, None);
        let pg = p("controlPlane:\n  backingStore:\n    database:\n      external:\n        enabled: true\n        dataSource: postgres://u@db:5432/v\n").unwrap();
        assert!(matches!(pg.store, Some(StoreUrl::Postgres { .. })));
        let embedded = p("controlPlane:\n  backingStore:\n    etcd:\n      embedded:\n        enabled: true\n        extraArgs: [--snapshot-count=5000]\n").unwrap();
        assert_eq!((embedded.store, embedded.unsupported.len()), (None, 0));
        assert_eq!(
            embedded.embedded_etcd.unwrap().extra_args,
            ["--snapshot-count=5000"]
        );
        let etcd = p("controlPlane:\n  backingStore:\n    etcd:\n      external:\n        enabled: true\n        endpoint: etcd-0:2379\n        tls:\n          caFile: /ca.pem\n").unwrap();
        match etcd.store {
            Some(StoreUrl::Etcd {
                endpoints,
                tls: Some(tls),
                ..
            }) => {
                assert_eq!(endpoints, ["etcd-0:2379"]);
                assert_eq!(tls.ca_file, Some(PathBuf::from("/ca.pem")));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn names_unknown_keys() {
        let c = p("sync:\n  toHost: {}\ncontrolPlane:\n  distro:\n    k3s: {}\n  backingStore:\n    database:\n      embedded:\n        enabled: true\n        foo: 1\n").unwrap();
        assert_eq!(
            c.unsupported,
            [
                "controlPlane.distro.k3s",
                "controlPlane.backingStore.database.embedded.foo"
            ]
        );
    }

    #[test]
    fn reads_the_api_servers_extra_args() {
        let c = p("controlPlane:\n  distro:\n    k8s:\n      apiServer:\n        extraArgs:\n        - --oidc-issuer-url=https://login.microsoftonline.com/t/v2.0\n        - --oidc-client-id=abc\n").unwrap();
        assert!(c.unsupported.is_empty(), "{:?}", c.unsupported);
        assert_eq!(
            c.api_server_args,
            [
                "--oidc-issuer-url=https://login.microsoftonline.com/t/v2.0",
                "--oidc-client-id=abc"
            ]
        );
    }

    #[test]
    fn errors_name_the_line_and_the_key() {
        let err = p("controlPlane:\n  backingStore:\n    database:\n      embedded:\n        enabled: maybe\n").unwrap_err().to_string();
        assert!(
            err.contains("line 5")
                && err.contains("controlPlane.backingStore.database.embedded.enabled"),
            "{err}"
        );
        let err = p("controlPlane: [\n").unwrap_err().to_string();
        assert!(err.contains("line"), "{err}");
        let err = p("controlPlane:\n  backingStore:\n    database:\n      embedded: {enabled: true}\n      external: {enabled: true, dataSource: postgres://x@h/d}\n").unwrap_err().to_string();
        assert!(err.contains("more than one backing store"), "{err}");
        let err = p("controlPlane:\n  backingStore:\n    etcd:\n      embedded: {enabled: true}\n      external: {enabled: true, endpoint: e:2379}\n").unwrap_err().to_string();
        assert!(
            err.contains("more than one backing store")
                && err.contains("etcd.embedded and controlPlane.backingStore.etcd.external"),
            "{err}"
        );
        let err = p("controlPlane:\n  backingStore:\n    database:\n      external: {enabled: true, dataSource: mysql://x@h/d}\n").unwrap_err().to_string();
        assert!(err.contains("vkube supports PostgreSQL"), "{err}");
    }

    #[test]
    fn the_charts_defaults_are_a_config_vkube_reads_without_warnings() {
        let c = parse(crate::cli::values::DEFAULTS, Path::new("chart/values.yaml")).unwrap();
        assert!(c.unsupported.is_empty(), "{:?}", c.unsupported);
        assert_eq!(c.store, None);
    }
}
