//! Remote OpenAI-compatible backends (`[[remote]]` in `medpo.toml`): vLLM or TGI serving a
//! checkpoint, or another MedPO server. Their models are registered like local ones (name
//! `<remote>/<model>`, layout `remote`, path `remote://<remote>/<model>`), so Compare, the
//! blind arena and the vote path treat them alike; a column for one streams from the remote
//! through [`medpo_remote::Client`] (timeouts, bounded retries, circuit breaker, its own
//! concurrency bound), so a slow, dead or garbled remote fails its column and never holds
//! the others or the local generation gate.

use std::collections::HashMap;
use std::sync::Arc;

use medpo_remote::{Client, RemoteConfig};
use medpo_store::Store;
use medpo_types::{ModelEntry, NewModel};

/// The registry layout of remote models.
pub const LAYOUT: &str = "remote";

/// One client per configured remote, by name.
#[derive(Debug, Default)]
pub struct RemotePool {
    clients: HashMap<String, Arc<Client>>,
}

impl RemotePool {
    /// Clients for validated configs (see `Config::remotes`).
    pub fn new(remotes: &[RemoteConfig]) -> Self {
        let clients = remotes
            .iter()
            .map(|r| {
                // Validated at start-up; a key variable unset since then sends no key.
                let key = r.validate().ok().flatten();
                (r.name.clone(), Arc::new(Client::new(r.clone(), key)))
            })
            .collect();
        Self { clients }
    }

    /// The client and the remote's model name for a registry entry, if it is remote.
    pub fn target(&self, entry: &ModelEntry) -> Option<Result<(Arc<Client>, String), String>> {
        if entry.layout != LAYOUT {
            return None;
        }
        let rest = entry.path.strip_prefix("remote://")?;
        let (remote, model) = rest.split_once('/')?;
        Some(match self.clients.get(remote) {
            Some(c) => Ok((c.clone(), model.to_string())),
            None => Err(format!("remote `{remote}` of `{}` is not configured on this server (see [[remote]] in medpo.toml)", entry.name)),
        })
    }
}

/// Whether a registry entry is a remote model.
pub fn is_remote(entry: &ModelEntry) -> bool {
    entry.layout == LAYOUT
}

/// Registers every configured remote model that is not registered yet (by name).
pub async fn register_remotes(store: &Store, remotes: &[RemoteConfig]) -> Vec<String> {
    let known: Vec<String> = match store.list_models().await {
        Ok(list) => list.into_iter().map(|m| m.name).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list registered models");
            return vec![];
        }
    };
    let mut added = Vec::new();
    for r in remotes {
        for m in &r.models {
            let name = format!("{}/{m}", r.name);
            if known.contains(&name) {
                continue;
            }
            let new = NewModel {
                name: name.clone(),
                base: format!("remote {}", r.name),
                variant: "remote".into(),
                layout: LAYOUT.into(),
                parent_id: None,
                path: format!("remote://{}/{m}", r.name),
                files: vec![],
                card: format!("Served by the OpenAI-compatible server `{}` at {} as `{m}`.", r.name, r.base_url),
                params: None,
            };
            match store.register_model(&new).await {
                Ok(_) => {
                    tracing::info!(model = %name, remote = %r.name, "registered a remote model");
                    added.push(name);
                }
                Err(e) => tracing::warn!(model = %name, error = %e, "could not register a remote model"),
            }
        }
    }
    added
}
