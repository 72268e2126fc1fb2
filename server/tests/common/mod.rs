//! Helpers shared by the server's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use medpo_server::{Config, Settings};
use medpo_types::NewModel;

/// The shared folder: `$MEDPO_SHARED`, else `../../shared` beside the repository.
pub fn shared() -> PathBuf {
    std::env::var_os("MEDPO_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"))
}

/// A resolved configuration in `dir` (an empty `medpo.toml`, data in `dir/data`, the fixture
/// models as the models folder), after `edit`; its data folder is created.
pub fn config(dir: &Path, edit: impl FnOnce(&mut Settings)) -> Config {
    let cfg_file = dir.join("medpo.toml");
    std::fs::write(&cfg_file, "").unwrap();
    let mut s = Settings {
        config: Some(cfg_file),
        data_dir: Some(dir.join("data")),
        models_dir: Some(shared().join("fixtures/v1")),
        ..Default::default()
    };
    edit(&mut s);
    let config = s.resolve().unwrap();
    config.prepare_data_dir().unwrap();
    config
}

/// Registers a checkpoint folder as an SFT model; returns its id.
pub async fn register(store: &medpo_store::Store, name: &str, path: &Path, layout: &str) -> i64 {
    store
        .register_model(&NewModel {
            name: name.into(),
            base: "fixture".into(),
            variant: "sft".into(),
            layout: layout.into(),
            parent_id: None,
            path: path.display().to_string(),
            files: vec![],
            card: String::new(),
            params: None,
        })
        .await
        .unwrap()
        .id
}

/// Registers the fixture model `name` (a folder of `shared/fixtures/v1`).
pub async fn register_fixture(store: &medpo_store::Store, name: &str, layout: &str) -> i64 {
    register(store, name, &shared().join("fixtures/v1").join(name), layout).await
}

/// A multipart form body with one `file` field; returns (content type, body).
pub fn multipart(name: &str, bytes: &[u8]) -> (String, Vec<u8>) {
    let mut body = format!(
        "--XBOUNDARY\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(b"\r\n--XBOUNDARY--\r\n");
    ("multipart/form-data; boundary=XBOUNDARY".into(), body)
}
