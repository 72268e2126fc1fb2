//! Registers the checkpoints found in the models folder at start-up.

use std::path::Path;

use medpo_store::Store;

/// Registers every sub-folder of `models_dir` (one level deep) whose `config.json` names a
/// supported LLaVA layout and that is not registered yet (matched by path). Folders that
/// fail the check are logged and skipped; nothing here stops the server.
pub async fn register_models_dir(store: &Store, models_dir: &Path) -> Vec<String> {
    let mut added = Vec::new();
    let Ok(entries) = std::fs::read_dir(models_dir) else {
        tracing::info!(models_dir = %models_dir.display(), "models folder not found; no checkpoint registered automatically");
        return added;
    };
    let known: Vec<String> = match store.list_models().await {
        Ok(list) => list.into_iter().map(|m| m.path).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list registered models");
            return added;
        }
    };
    let mut dirs: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.join("config.json").is_file()).collect();
    dirs.sort();
    for dir in dirs {
        let abs = std::fs::canonicalize(&dir).unwrap_or(dir.clone());
        let path = abs.display().to_string();
        if known.contains(&path) {
            continue;
        }
        match app::ssr::probe_checkpoint(&abs) {
            Ok(probe) => {
                let name = abs.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let new = medpo_types::NewModel {
                    name: name.clone(),
                    base: probe.base,
                    variant: "sft".into(),
                    layout: probe.layout,
                    parent_id: None,
                    path,
                    files: probe.files,
                    card: String::new(),
                    params: probe.params,
                };
                match store.register_model(&new).await {
                    Ok(m) => {
                        tracing::info!(model = %m.name, layout = %m.layout, "registered a checkpoint from the models folder");
                        added.push(m.name);
                    }
                    Err(e) => tracing::warn!(folder = %abs.display(), error = %e, "could not register checkpoint"),
                }
            }
            Err(reason) => tracing::debug!(folder = %abs.display(), %reason, "skipping folder"),
        }
    }
    added
}
