//! The phantom gallery: a small phantom benchmark (seed 0) written into `<data-dir>/phantoms`
//! at start-up if it is not there, served at `/phantoms/…` (synthetic images, no patient data),
//! so a visitor can try Compare and the arena without owning a scan.

use std::path::{Path, PathBuf};

/// Scans in the gallery's benchmark; its test split is what the gallery shows.
const GALLERY_SCANS: usize = 60;

/// The gallery folder.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("phantoms")
}

/// Writes the gallery unless a manifest of the current generator is there.
pub fn ensure(data_dir: &Path) {
    let out = dir(data_dir);
    let current = std::fs::read_to_string(out.join("manifest.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|m| m["generator"] == medpo_phantom::GENERATOR_VERSION);
    if current {
        return;
    }
    let cfg = medpo_phantom::Config { seed: 0, scans: GALLERY_SCANS, ..Default::default() };
    match medpo_phantom::write::write_benchmark(&out, &cfg, &mut |_, _| {}) {
        Ok(m) => tracing::info!(folder = %out.display(), scans = GALLERY_SCANS, test = m.counts.get("test").map_or(0, |c| c[0]), "wrote the phantom gallery"),
        Err(e) => tracing::warn!(folder = %out.display(), error = %e, "could not write the phantom gallery"),
    }
}
