//! Test helpers: where the shared fixtures live.

use std::path::PathBuf;

/// The shared folder: `$MEDPO_SHARED`, else `<CARGO_MANIFEST_DIR>/../../../shared`.
pub fn shared_dir() -> PathBuf {
    match std::env::var_os("MEDPO_SHARED") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    }
}
