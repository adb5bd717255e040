//! Store URLs, the one way every entry point (flags, vcluster.yaml, tests) names a backend:
//!
//! - `sqlite://PATH[?synchronous=full|normal]` (a relative PATH is relative to the working dir;
//!   `sqlite:///abs/path` is absolute)
//! - `postgres://user:pass@host:port/db[?…]` (or `postgresql://`), as libpq reads it
//! - `etcd://host:port[,host:port…][?prefix=/p&ca=FILE&cert=FILE&key=FILE]`
//! - `memory://`

use std::path::PathBuf;
use std::str::FromStr;

use crate::error::StoreError;
use crate::etcd::EtcdTls;
use crate::sqlite::Synchronous;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreUrl {
    Sqlite {
        path: PathBuf,
        synchronous: Synchronous,
    },
    Postgres {
        url: String,
    },
    Etcd {
        endpoints: Vec<String>,
        prefix: String,
        tls: Option<EtcdTls>,
    },
    Memory,
}

impl StoreUrl {
    /// The backend's name, as [`crate::Store::backend`] gives it.
    pub fn backend(&self) -> &'static str {
        match self {
            StoreUrl::Sqlite { .. } => "sqlite",
            StoreUrl::Postgres { .. } => "postgres",
            StoreUrl::Etcd { .. } => "etcd",
            StoreUrl::Memory => "memory",
        }
    }
}

impl FromStr for StoreUrl {
    type Err = StoreError;

    fn from_str(url: &str) -> Result<Self, StoreError> {
        let invalid = |reason: &str| StoreError::InvalidUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| invalid("expected SCHEME://…, with sqlite, postgres, etcd or memory"))?;
        let (body, query) = rest.split_once('?').unwrap_or((rest, ""));
        let params = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| p.split_once('=').unwrap_or((p, "")));
        match scheme {
            "sqlite" => {
                if body.is_empty() {
                    return Err(invalid(
                        "sqlite:// needs a file path, e.g. sqlite:///var/lib/vkube/state.db",
                    ));
                }
                let mut synchronous = Synchronous::Full;
                for (name, value) in params {
                    synchronous = match (name, value) {
                        ("synchronous", "full" | "FULL") => Synchronous::Full,
                        ("synchronous", "normal" | "NORMAL") => Synchronous::Normal,
                        ("synchronous", _) => {
                            return Err(invalid("synchronous must be full or normal"));
                        }
                        _ => {
                            return Err(invalid(&format!(
                                "unknown sqlite option {name:?}; known: synchronous"
                            )));
                        }
                    };
                }
                Ok(StoreUrl::Sqlite {
                    path: PathBuf::from(body),
                    synchronous,
                })
            }
            "postgres" | "postgresql" => {
                tokio_postgres::Config::from_str(url).map_err(|e| invalid(&e.to_string()))?;
                Ok(StoreUrl::Postgres {
                    url: url.to_string(),
                })
            }
            "etcd" => {
                let endpoints: Vec<String> = body
                    .trim_end_matches('/')
                    .split(',')
                    .filter(|e| !e.is_empty())
                    .map(str::to_string)
                    .collect();
                if endpoints.is_empty() {
                    return Err(invalid("etcd:// needs at least one host:port"));
                }
                if let Some(bad) = endpoints.iter().find(|e| !has_port(e)) {
                    return Err(invalid(&format!("endpoint {bad:?} is not host:port")));
                }
                let (mut prefix, mut tls) = (String::new(), EtcdTls::default());
                for (name, value) in params {
                    let file = || PathBuf::from(value);
                    match name {
                        "prefix" => prefix = value.to_string(),
                        "ca" => tls.ca_file = Some(file()),
                        "cert" => tls.cert_file = Some(file()),
                        "key" => tls.key_file = Some(file()),
                        _ => {
                            return Err(invalid(&format!(
                                "unknown etcd option {name:?}; known: prefix, ca, cert, key"
                            )));
                        }
                    }
                }
                let tls = (tls != EtcdTls::default()).then_some(tls);
                Ok(StoreUrl::Etcd {
                    endpoints,
                    prefix,
                    tls,
                })
            }
            "memory" => Ok(StoreUrl::Memory),
            other => Err(invalid(&format!(
                "unknown scheme {other:?}; use sqlite://, postgres://, etcd:// or memory://"
            ))),
        }
    }
}

fn has_port(endpoint: &str) -> bool {
    endpoint
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_scheme() {
        assert_eq!(
            "sqlite:///var/lib/vkube/state.db"
                .parse::<StoreUrl>()
                .unwrap(),
            StoreUrl::Sqlite {
                path: "/var/lib/vkube/state.db".into(),
                synchronous: Synchronous::Full
            }
        );
        assert_eq!(
            "sqlite://data/state.db?synchronous=normal"
                .parse::<StoreUrl>()
                .unwrap(),
            StoreUrl::Sqlite {
                path: "data/state.db".into(),
                synchronous: Synchronous::Normal
            }
        );
        assert_eq!(
            "etcd://127.0.0.1:2379,127.0.0.2:2379?prefix=/tenant-a&ca=/ca.pem"
                .parse::<StoreUrl>()
                .unwrap(),
            StoreUrl::Etcd {
                endpoints: vec!["127.0.0.1:2379".into(), "127.0.0.2:2379".into()],
                prefix: "/tenant-a".into(),
                tls: Some(EtcdTls {
                    ca_file: Some("/ca.pem".into()),
                    ..Default::default()
                }),
            }
        );
        assert_eq!("memory://".parse::<StoreUrl>().unwrap(), StoreUrl::Memory);
        assert!(matches!(
            "postgres://vkube@127.0.0.1:5432/vkube"
                .parse::<StoreUrl>()
                .unwrap(),
            StoreUrl::Postgres { .. }
        ));
    }

    #[test]
    fn rejects_what_it_cannot_open_with_a_reason() {
        for (url, needle) in [
            ("/var/lib/state.db", "SCHEME://"),
            ("mysql://x", "unknown scheme"),
            ("sqlite://", "needs a file path"),
            ("sqlite://x.db?sync=full", "unknown sqlite option"),
            ("etcd://", "at least one host:port"),
            ("etcd://localhost", "not host:port"),
            ("etcd://h:1?tls=1", "unknown etcd option"),
        ] {
            let err = url.parse::<StoreUrl>().unwrap_err().to_string();
            assert!(err.contains(needle), "{url}: {err}");
        }
    }
}
