//! The store's errors. Callers branch on the variant (a 409 for `Conflict`, a 410 for `Compacted`),
//! so each outcome the API layer answers differently has its own variant.

use crate::kv::{KeyValue, Revision};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key {key:?} already exists")]
    AlreadyExists { key: String },

    #[error("key {key:?} not found")]
    NotFound { key: String },

    /// A compare-and-swap lost: `current` is the value now stored.
    #[error("key {key:?} was modified: expected mod_revision {expected}, it is {}", current.mod_revision)]
    Conflict {
        key: String,
        expected: Revision,
        current: Box<KeyValue>,
    },

    /// The revision asked for has been compacted away.
    #[error("revision {requested} has been compacted; the oldest available is {compact_revision}")]
    Compacted {
        requested: Revision,
        compact_revision: Revision,
    },

    #[error("revision {requested} is in the future; the current revision is {current}")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },

    #[error("invalid key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },

    #[error("invalid store URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },

    /// A value the configured encryption providers cannot read, or could not encrypt
    /// (`--encryption-provider-config`); the message is kube-apiserver's, and the API answers
    /// it as upstream answers a storage internal error (500 InternalError).
    #[error("{message}")]
    Transform { key: String, message: String },

    /// The backend failed or could not be reached.
    #[error("{backend}: {message}")]
    Backend {
        backend: &'static str,
        message: String,
    },
}

impl StoreError {
    pub(crate) fn closed(backend: &'static str) -> Self {
        Self::backend(backend, "the store was closed")
    }

    pub(crate) fn backend(backend: &'static str, err: impl std::fmt::Display) -> Self {
        StoreError::Backend {
            backend,
            message: err.to_string(),
        }
    }
}

/// Rejects keys no backend can store alike: empty ones, and NUL (PostgreSQL's TEXT refuses it).
pub(crate) fn check_key(key: &str) -> Result<()> {
    let reason = if key.is_empty() {
        "a key must not be empty"
    } else if key.contains('\0') {
        "a key must not contain NUL"
    } else {
        return Ok(());
    };
    Err(StoreError::InvalidKey {
        key: key.to_string(),
        reason,
    })
}
