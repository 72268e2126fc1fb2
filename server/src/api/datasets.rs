//! Dataset snapshot downloads: TRL JSONL, and a zip with the seed's LLaVA conversation JSON,
//! the same JSONL and the scans the pairs refer to. Researchers and admins only; every
//! download is recorded in the audit log with its user.
//!
//! The pair → record rule (versioned with the vote rules, see `docs/datasets.md`): the prompt
//! is the question with `<image>` first when the pair has a scan; the image is the scan's file;
//! a rater's region becomes the record's ROI in pixels (it feeds ROI-noise image negatives);
//! the record id is `pair-<id>`.

use std::io::Write as _;

use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use medpo_train::data::PreferenceRecord;
use medpo_types::{PreferencePair, Role, Scan};

use super::{require, ApiError};
use crate::AppState;

/// The version of the vote → pair → record rules, written into every export.
pub const RULES_VERSION: &str = "medpo-pairs/1";

/// One frozen pair as a training record (images relative to the data folder).
pub fn pair_record(p: &PreferencePair, scan: Option<&Scan>) -> PreferenceRecord {
    let roi = match (&p.region, scan) {
        (Some(r), Some(s)) => {
            let clamp = |v: f64, max: i64| v.round().clamp(0.0, max.max(0) as f64) as u32;
            let b = [clamp(r.x, s.width), clamp(r.y, s.height), clamp(r.x + r.w, s.width), clamp(r.y + r.h, s.height)];
            (b[2] > b[0] && b[3] > b[1]).then_some(b)
        }
        _ => None,
    };
    PreferenceRecord {
        id: Some(format!("pair-{}", p.id)),
        prompt: if scan.is_some() { medpo_train::data::insert_image_token(&p.question) } else { p.question.clone() },
        chosen: p.chosen.clone(),
        rejected: p.rejected.clone(),
        image: scan.map(|s| s.path.clone()),
        rejected_image: None,
        weight: None,
        roi,
        source: Default::default(),
    }
}

/// The snapshot's records and the scans they use.
async fn records(state: &AppState, snapshot_id: i64) -> Result<(Vec<PreferenceRecord>, Vec<Scan>), ApiError> {
    let pairs = state.ctx.store.snapshot_pairs(snapshot_id).await?;
    let mut scans: Vec<Scan> = Vec::new();
    let mut out = Vec::with_capacity(pairs.len());
    for p in &pairs {
        let scan = match p.scan_id {
            Some(id) => match scans.iter().find(|s| s.id == id) {
                Some(s) => Some(s.clone()),
                None => {
                    let s = state.ctx.store.scan(id).await?;
                    scans.push(s.clone());
                    Some(s)
                }
            },
            None => None,
        };
        out.push(pair_record(p, scan.as_ref()));
    }
    Ok((out, scans))
}

fn jsonl(records: &[PreferenceRecord]) -> Result<Vec<u8>, ApiError> {
    let dir = tempfile_dir()?;
    let path = dir.join("dataset.jsonl");
    medpo_train::data::save_trl_jsonl(&path, records).map_err(|e| ApiError::internal("writing the JSONL failed", e))?;
    let bytes = std::fs::read(&path).map_err(|e| ApiError::internal("reading the JSONL back failed", e))?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(bytes)
}

fn tempfile_dir() -> Result<std::path::PathBuf, ApiError> {
    let dir = std::env::temp_dir().join(format!("medpo-export-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).map_err(|e| ApiError::internal("cannot create a temporary folder", e))?;
    Ok(dir)
}

fn attachment(bytes: Vec<u8>, content_type: &'static str, name: &str) -> Response {
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")).unwrap_or(HeaderValue::from_static("attachment"));
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type)), (header::CONTENT_DISPOSITION, disposition), (header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        bytes,
    )
        .into_response()
}

/// The file name stem of a snapshot: `<dataset>-v<version>`.
async fn stem(state: &AppState, snapshot_id: i64) -> Result<String, ApiError> {
    let s = state.ctx.store.snapshot(snapshot_id).await?;
    let datasets = state.ctx.store.list_datasets().await?;
    let name = datasets.iter().find(|d| d.id == s.dataset_id).map(|d| d.name.clone()).unwrap_or_else(|| "dataset".into());
    let safe: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    Ok(format!("{safe}-v{}", s.version))
}

/// `GET /api/snapshots/{id}/pairs.jsonl`: the snapshot as TRL JSONL (image paths relative to
/// the data folder, as the zip lays them out).
pub async fn export_jsonl(State(state): State<AppState>, headers: HeaderMap, UrlPath(id): UrlPath<i64>) -> Result<Response, ApiError> {
    let user = require(&state, &headers, &[Role::Researcher]).await?;
    let stem = stem(&state, id).await?;
    let (recs, _) = records(&state, id).await?;
    let bytes = jsonl(&recs)?;
    state.ctx.store.audit(Some(user.id), &user.username, "export", &format!("snapshot {id} as JSONL ({} pairs)", recs.len())).await?;
    Ok(attachment(bytes, "application/x-ndjson", &format!("{stem}.jsonl")))
}

/// `GET /api/snapshots/{id}/llava.zip`: `dataset.json` (the seed's LLaVA conversation
/// format), `dataset.jsonl` (TRL), `README.txt` (counts, hash, rules version) and the scans
/// under `scans/`, so `image` paths resolve with the zip's folder as the images folder.
pub async fn export_zip(State(state): State<AppState>, headers: HeaderMap, UrlPath(id): UrlPath<i64>) -> Result<Response, ApiError> {
    let user = require(&state, &headers, &[Role::Researcher]).await?;
    let snap = state.ctx.store.snapshot(id).await?;
    let stem = stem(&state, id).await?;
    let (recs, scans) = records(&state, id).await?;
    let data_dir = state.ctx.data_dir.clone();
    let n = recs.len();
    let readme = format!(
        "{stem}: {n} preference pairs, snapshot id {id}, sha256 {sha}\nrules: {RULES_VERSION}\n\
         dataset.json  - the seed's LLaVA conversation format (conversations / rejected_conversations)\n\
         dataset.jsonl - TRL JSONL (prompt / chosen / rejected / images)\n\
         scans/        - the images; use this folder as the images folder (--image_folder)\n",
        sha = snap.sha256
    );
    let bytes = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, ApiError> {
        let dir = tempfile_dir()?;
        let seed = dir.join("dataset.json");
        medpo_train::data::save_seed_json(&seed, &recs).map_err(|e| ApiError::internal("writing the seed JSON failed", e))?;
        let seed_bytes = std::fs::read(&seed).map_err(|e| ApiError::internal("reading the seed JSON back failed", e))?;
        let _ = std::fs::remove_dir_all(&dir);
        let jsonl_bytes = jsonl(&recs)?;
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        let z = |e: zip::result::ZipError| ApiError::internal("writing the zip failed", e);
        for (name, bytes) in [("README.txt", readme.as_bytes()), ("dataset.json", &seed_bytes[..]), ("dataset.jsonl", &jsonl_bytes[..])] {
            zip.start_file(name, opts).map_err(z)?;
            zip.write_all(bytes).map_err(|e| ApiError::internal("writing the zip failed", e))?;
        }
        for s in &scans {
            let bytes = std::fs::read(data_dir.join(&s.path)).map_err(|e| ApiError::internal("a scan of the snapshot is missing from the data folder", e))?;
            zip.start_file(s.path.as_str(), opts).map_err(z)?;
            zip.write_all(&bytes).map_err(|e| ApiError::internal("writing the zip failed", e))?;
        }
        Ok(zip.finish().map_err(z)?.into_inner())
    })
    .await
    .map_err(|e| ApiError::internal("the export failed", e))??;
    state.ctx.store.audit(Some(user.id), &user.username, "export", &format!("snapshot {id} as LLaVA zip ({n} pairs)")).await?;
    Ok(attachment(bytes, "application/zip", &format!("{stem}.zip")))
}
