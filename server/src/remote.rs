//! Remote OpenAI-compatible backends: vLLM or TGI serving a checkpoint, or another MedPO
//! server, from `[[remote]]` in `medpo.toml` or added by an admin on the Models page (stored in
//! the `remotes` table). Their models are registered like local ones (name `<remote>/<model>`,
//! layout `remote`, path `remote://<remote>/<model>`), so Compare, the blind arena and the vote
//! path treat them alike; a column for one streams from the remote through
//! [`medpo_remote::Client`] (timeouts, bounded retries, circuit breaker, its own concurrency
//! bound), so a slow, dead or garbled remote fails its column and never holds the others or
//! the local generation gate.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use medpo_remote::{Client, RemoteConfig};
use medpo_store::Store;
use medpo_types::ModelEntry;

/// The registry layout of remote models.
pub const LAYOUT: &str = app::ssr::REMOTE_LAYOUT;

/// One client per remote, by name: the configured ones at start, the stored ones on first use.
#[derive(Debug, Default)]
pub struct RemotePool {
    clients: RwLock<HashMap<String, Arc<Client>>>,
}

fn client_for(r: &RemoteConfig) -> Result<Arc<Client>, String> {
    let key = r.validate()?;
    Ok(Arc::new(Client::new(r.clone(), key)))
}

impl RemotePool {
    /// Clients for the validated `[[remote]]` configs (see `Config::remotes`).
    pub fn new(remotes: &[RemoteConfig]) -> Self {
        let clients = remotes
            .iter()
            .filter_map(|r| match client_for(r) {
                Ok(c) => Some((r.name.clone(), c)),
                Err(e) => {
                    tracing::error!(remote = %r.name, error = %e, "remote left out");
                    None
                }
            })
            .collect();
        Self { clients: RwLock::new(clients) }
    }

    /// The client and the remote's model name for a registry entry, if it is remote. A remote
    /// added on the Models page is read from the database the first time it is needed.
    pub async fn target(&self, store: &Store, entry: &ModelEntry) -> Option<Result<(Arc<Client>, String), String>> {
        if entry.layout != LAYOUT {
            return None;
        }
        let Some((remote, model)) = entry.path.strip_prefix("remote://").and_then(|r| r.split_once('/')) else {
            return Some(Err(format!("model `{}` has a malformed remote path `{}`", entry.name, entry.path)));
        };
        let cached = self.clients.read().unwrap_or_else(|p| p.into_inner()).get(remote).cloned();
        let client = match cached {
            Some(c) => c,
            None => {
                let stored = match store.remote_named(remote).await {
                    Ok(Some(r)) => r,
                    Ok(None) => {
                        return Some(Err(format!(
                            "remote `{remote}` of `{}` is not configured on this server (medpo.toml [[remote]] or the Models page)",
                            entry.name
                        )))
                    }
                    Err(e) => return Some(Err(format!("cannot read remote `{remote}`: {e}"))),
                };
                let c = match client_for(&app::ssr::remote_config(&stored)) {
                    Ok(c) => c,
                    Err(e) => return Some(Err(e)),
                };
                self.clients.write().unwrap_or_else(|p| p.into_inner()).entry(remote.to_string()).or_insert(c).clone()
            }
        };
        Some(Ok((client, model.to_string())))
    }
}

/// Whether a registry entry is a remote model.
pub fn is_remote(entry: &ModelEntry) -> bool {
    entry.layout == LAYOUT
}

/// Registers the models of every configured remote that are not registered yet (by name).
pub async fn register_remotes(store: &Store, remotes: &[RemoteConfig]) -> Vec<String> {
    let mut added = Vec::new();
    for r in remotes {
        added.extend(app::ssr::register_remote_models(store, r).await);
    }
    added
}
