//! Registers the checkpoints found in the models folder at start-up.

use std::path::Path;

use medpo_store::Store;
use medpo_types::ModelLineage;

fn lineage(dir: &Path) -> ModelLineage {
    let path = dir.join(ModelLineage::FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).unwrap_or_else(|e| {
            tracing::warn!(file = %path.display(), error = %e, "ignoring an unreadable medpo.json");
            ModelLineage::default()
        }),
        Err(_) => ModelLineage::default(),
    }
}

/// The model card: the folder's `README.md` (Hugging Face's convention), at most 64 KiB.
fn card(dir: &Path) -> String {
    match std::fs::read_to_string(dir.join("README.md")) {
        Ok(mut t) => {
            if t.len() > 64 * 1024 {
                let mut end = 64 * 1024;
                while !t.is_char_boundary(end) {
                    end -= 1;
                }
                t.truncate(end);
            }
            t
        }
        Err(_) => String::new(),
    }
}

/// Registers every sub-folder of `models_dir` (one level deep) whose `config.json` names a
/// supported LLaVA layout and that is not registered yet (matched by path), with its card
/// (`README.md`) and lineage (`medpo.json`: variant and parent folder) when it has them;
/// parents are registered before their children. Folders that fail the check are logged and
/// skipped; nothing here stops the server.
pub async fn register_models_dir(store: &Store, models_dir: &Path) -> Vec<String> {
    let mut added = Vec::new();
    let Ok(entries) = std::fs::read_dir(models_dir) else {
        tracing::info!(models_dir = %models_dir.display(), "models folder not found; no checkpoint registered automatically");
        return added;
    };
    let registered = match store.list_models().await {
        Ok(list) => list,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list registered models");
            return added;
        }
    };
    let known: Vec<String> = registered.iter().map(|m| m.path.clone()).collect();
    let mut ids: std::collections::HashMap<String, i64> = registered.iter().map(|m| (m.name.clone(), m.id)).collect();
    let mut dirs: Vec<(bool, std::path::PathBuf, ModelLineage)> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join("config.json").is_file())
        .map(|p| {
            let l = lineage(&p);
            (l.parent.is_some(), p, l)
        })
        .collect();
    dirs.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    for (_, dir, lineage) in dirs {
        let abs = std::fs::canonicalize(&dir).unwrap_or(dir.clone());
        let path = abs.display().to_string();
        if known.contains(&path) {
            continue;
        }
        match app::ssr::probe_checkpoint(&abs) {
            Ok(probe) => {
                let name = abs.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let parent_id = lineage.parent.as_ref().and_then(|p| ids.get(p).copied());
                if let (Some(p), None) = (&lineage.parent, parent_id) {
                    tracing::warn!(folder = %abs.display(), parent = %p, "medpo.json names a parent that is not registered");
                }
                let new = medpo_types::NewModel {
                    name: name.clone(),
                    base: probe.base,
                    variant: lineage.variant.unwrap_or_else(|| "sft".into()),
                    layout: probe.layout,
                    parent_id,
                    path,
                    files: probe.files,
                    card: card(&abs),
                    params: probe.params,
                };
                match store.register_model(&new).await {
                    Ok(m) => {
                        ids.insert(m.name.clone(), m.id);
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
