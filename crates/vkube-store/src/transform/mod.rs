//! Encryption at rest: kube-apiserver's `--encryption-provider-config`, as a [`Store`] decorator.
//!
//! [`EncryptedStore`] sits between every user of the store and the backend. Values under the
//! key prefixes a config names are encrypted on the way in (create, update) and decrypted on
//! the way out (get, list, watch events and their previous values, the current value a
//! conflict carries, the value a delete returns). Everything above it — the API, the shared
//! watch, the controllers, the compactor — sees plain values; the backend never does.
//!
//! The store knows keys, not resources: the caller turns each group-resource of the config into
//! key prefixes ([`EncryptedStore::wrap`]'s `prefixes`), since only it knows the storage layout.
//! Upstream's precedence holds whatever the prefixes: a rule naming the resource beats `*.group`,
//! which beats `*.*`.
//!
//! A value no provider can read is a [`StoreError::Transform`] with upstream's message, which
//! the API answers as kube-apiserver does (500 InternalError), never a panic. A watch cannot
//! fail one event without stalling every watcher behind it, so an unreadable event is passed
//! on as stored (its consumers then cannot decode it) and logged, with its key only.
//!
//! [`Store`]: crate::Store
//! [`StoreError::Transform`]: crate::StoreError::Transform

mod cipher;
mod config;
mod store;

pub use config::{ConfigError, EncryptionConfig, GroupResource, load, parse};
pub use store::EncryptedStore;
