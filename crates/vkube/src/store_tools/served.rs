//! The store that `vkube serve --config FILE --data-dir DIR` serves, for the commands the host
//! CLI runs inside a virtual cluster's pod (`vkube snapshot create - --data-dir /data --config
//! /etc/vkube/config.yaml`): the pod knows its vcluster.yaml and data dir, not a store URL, and a
//! PostgreSQL password or etcd client certificate must not travel through the exec's arguments.

use std::path::Path;

use anyhow::{Result, bail};
use vkube_store::{EtcdTls, StoreUrl};

use super::location::Location;

/// Where the store of `vkube serve --data-dir data_dir [--config config]` is. `online`: the
/// server runs (its embedded etcd member answers on loopback); otherwise the store is opened
/// offline (an embedded etcd data dir is started for the copy, which only a single member
/// allows).
pub fn location(data_dir: &Path, config: Option<&Path>, online: bool) -> Result<Location> {
    let config = config.map(crate::config::load).transpose()?;
    let Some(config) = config else {
        return Ok(Location::Store(sqlite(data_dir)));
    };
    if let Some(store) = config.store {
        return Ok(Location::Store(store));
    }
    if config.embedded_etcd.is_none() {
        return Ok(Location::Store(sqlite(data_dir)));
    }
    if online {
        // The member `vkube serve` runs listens on loopback too, with the client certificate it
        // issued itself when the cluster has a CA (always, under the chart).
        let pki = data_dir.join("etcd/pki");
        let (scheme, tls) = if pki.join("client.crt").exists() {
            let tls = EtcdTls {
                ca_file: Some(pki.join("ca.crt")),
                cert_file: Some(pki.join("client.crt")),
                key_file: Some(pki.join("client.key")),
            };
            ("https", Some(tls))
        } else {
            ("http", None)
        };
        return Ok(Location::Store(StoreUrl::Etcd {
            endpoints: vec![format!("{scheme}://127.0.0.1:2379")],
            prefix: String::new(),
            tls,
        }));
    }
    let replicas = config.high_availability.replicas.unwrap_or(1);
    if replicas > 1 || data_dir.join("etcd/pki").exists() {
        bail!(
            "this virtual cluster keeps its state in embedded etcd members (one per replica, with TLS): vkube cannot yet restore them in place; take the state out with `vkube snapshot create`, then restore it into a cluster on embedded SQLite, PostgreSQL or an external etcd"
        );
    }
    format!("etcd-dir://{}", data_dir.display()).parse()
}

fn sqlite(data_dir: &Path) -> StoreUrl {
    StoreUrl::Sqlite {
        path: data_dir.join("state.db"),
        synchronous: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_config(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.yaml");
        std::fs::write(&file, text).unwrap();
        (dir, file)
    }

    fn url(location: Location) -> StoreUrl {
        match location {
            Location::Store(url) => url,
            Location::EmbeddedDir { dir, .. } => panic!("etcd-dir {}", dir.display()),
        }
    }

    #[test]
    fn the_default_is_the_data_dirs_sqlite_database() {
        let data = Path::new("/data");
        let expected = sqlite(data);
        assert_eq!(url(location(data, None, true).unwrap()), expected);
        let (_dir, file) = with_config("controlPlane: {}\n");
        assert_eq!(url(location(data, Some(&file), false).unwrap()), expected);
    }

    #[test]
    fn an_external_store_comes_from_the_config() {
        let (_dir, file) = with_config(
            "controlPlane:\n  backingStore:\n    database:\n      external:\n        enabled: true\n        dataSource: postgres://u:p@db:5432/v\n",
        );
        let got = url(location(Path::new("/data"), Some(&file), true).unwrap());
        assert!(matches!(got, StoreUrl::Postgres { .. }), "{got:?}");
    }

    #[test]
    fn embedded_etcd_is_read_online_through_the_local_member_and_not_restored_in_place() {
        let (dir, file) = with_config(
            "controlPlane:\n  backingStore:\n    etcd:\n      embedded:\n        enabled: true\n  statefulSet:\n    highAvailability:\n      replicas: 3\n",
        );
        let data = dir.path();
        std::fs::create_dir_all(data.join("etcd/pki")).unwrap();
        std::fs::write(data.join("etcd/pki/client.crt"), "").unwrap();
        match url(location(data, Some(&file), true).unwrap()) {
            StoreUrl::Etcd { endpoints, tls, .. } => {
                assert_eq!(endpoints, ["https://127.0.0.1:2379"]);
                assert_eq!(
                    tls.unwrap().key_file.unwrap(),
                    data.join("etcd/pki/client.key")
                );
            }
            other => panic!("{other:?}"),
        }
        let err = location(data, Some(&file), false).err().unwrap();
        assert!(err.to_string().contains("cannot yet restore"), "{err}");
    }
}
