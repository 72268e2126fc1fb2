//! The models the server answers with: loaded on first use, kept (least recently used
//! dropped beyond a limit), run on blocking threads so the async runtime keeps serving, and
//! gated so that only a few generations run at once.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use medpo_models::{LoadOptions, Model};
use medpo_types::ModelEntry;

type Slot = Arc<Mutex<Option<Arc<Model>>>>;

/// Loaded checkpoints, by model id.
pub struct ModelPool {
    models_dir: PathBuf,
    max_loaded: usize,
    loaded: Mutex<HashMap<i64, (Slot, Instant)>>,
    /// Generations allowed to run at once (each column of a comparison takes one).
    pub slots: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for ModelPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelPool").field("models_dir", &self.models_dir).field("max_loaded", &self.max_loaded).finish()
    }
}

impl ModelPool {
    pub fn new(models_dir: PathBuf, max_loaded: usize, concurrent: usize) -> Self {
        Self {
            models_dir,
            max_loaded: max_loaded.max(1),
            loaded: Mutex::new(HashMap::new()),
            slots: Arc::new(tokio::sync::Semaphore::new(concurrent.max(1))),
        }
    }

    /// The model of a registry entry, loading it if needed (blocking: call from a blocking
    /// thread). Errors name the checkpoint and what is wrong with it; a failed load is not
    /// cached, so fixing the folder and asking again works.
    pub fn get(&self, entry: &ModelEntry) -> Result<Arc<Model>, String> {
        let slot = {
            let mut map = self.loaded.lock().map_err(|_| "model pool lock poisoned".to_string())?;
            let slot = map.entry(entry.id).or_insert_with(|| (Arc::new(Mutex::new(None)), Instant::now()));
            slot.1 = Instant::now();
            let slot = slot.0.clone();
            while map.len() > self.max_loaded {
                // Drop the least recently used other model; generations running on it keep
                // their own reference until they finish.
                let Some(oldest) = map.iter().filter(|(id, _)| **id != entry.id).min_by_key(|(_, (_, t))| *t).map(|(id, _)| *id) else {
                    break;
                };
                map.remove(&oldest);
                tracing::info!(model = oldest, "unloaded the least recently used model");
            }
            slot
        };
        let mut guard = slot.lock().map_err(|_| "model slot lock poisoned".to_string())?;
        if let Some(m) = guard.as_ref() {
            return Ok(m.clone());
        }
        let dir = app::ssr::resolve_model_dir(&self.models_dir, &entry.path);
        let started = Instant::now();
        let opts = LoadOptions { models_dir: Some(self.models_dir.clone()), ..Default::default() };
        let model = Model::load(&dir, &opts).map_err(|e| format!("cannot load `{}`: {e}", entry.name))?;
        tracing::info!(model = %entry.name, secs = started.elapsed().as_secs_f64(), "model loaded");
        let model = Arc::new(model);
        *guard = Some(model.clone());
        Ok(model)
    }
}
