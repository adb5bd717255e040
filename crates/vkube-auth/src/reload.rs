//! The authentication configuration file is watched: a valid new version replaces the JWT
//! issuers without a restart; an invalid one is logged and counted, and the last good
//! configuration stays. The `anonymous` section cannot change on reload, as upstream.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::chain::Chain;
use crate::oidc::JwtAuthenticator;
use crate::oidc::config::ConfigError;
use crate::oidc::file::{AuthenticationConfig, parse};

/// Reads and checks the file, and builds (unstarted) authenticators for its issuers.
pub fn load(
    path: &Path,
) -> Result<(AuthenticationConfig, Vec<Arc<JwtAuthenticator>>), ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("reading {}: {e}", path.display())))?;
    let config = parse(&text).map_err(|e| ConfigError(format!("{}: {}", path.display(), e.0)))?;
    let issuers = config
        .jwt
        .iter()
        .map(|c| JwtAuthenticator::new(c.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((config, issuers))
}

/// Polls `path` every `interval` and applies changes to `chain`.
pub fn watch(chain: Arc<Chain>, path: PathBuf, interval: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = std::fs::read(&path).ok();
        loop {
            tokio::time::sleep(interval).await;
            let now = std::fs::read(&path).ok();
            if now == last {
                continue;
            }
            last = now;
            match load(&path) {
                Ok((config, issuers)) => {
                    let anonymous = config
                        .anonymous
                        .unwrap_or_else(|| chain.anonymous().clone());
                    if &anonymous != chain.anonymous() {
                        tracing::warn!(file = %path.display(), "authentication configuration not reloaded: the anonymous section cannot change on reload");
                        chain.metrics.reload(false);
                        continue;
                    }
                    issuers.iter().for_each(|i| i.start());
                    chain.set_jwt(issuers);
                    chain.metrics.reload(true);
                    tracing::info!(file = %path.display(), fingerprint = %chain.fingerprint(), "authentication configuration reloaded");
                }
                Err(err) => {
                    tracing::warn!(%err, "authentication configuration not reloaded; the last good one stays");
                    chain.metrics.reload(false);
                }
            }
        }
    })
}
