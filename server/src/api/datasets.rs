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
pub use medpo_types::PAIR_RULES_VERSION as RULES_VERSION;

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

/// A snapshot's training records and the scans they use (each scan read once). Shared by the
/// downloads and the job queue, which trains on exactly these records.
pub async fn records(store: &medpo_store::Store, snapshot_id: i64) -> Result<(Vec<PreferenceRecord>, Vec<Scan>), medpo_store::Error> {
    let pairs = store.snapshot_pairs(snapshot_id).await?;
    let mut scans: Vec<Scan> = Vec::new();
    let mut out = Vec::with_capacity(pairs.len());
    for p in &pairs {
        let scan = match p.scan_id {
            Some(id) => match scans.iter().find(|s| s.id == id) {
                Some(s) => Some(s.clone()),
                None => {
                    let s = store.scan(id).await?;
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
    medpo_train::data::to_trl_jsonl(records).map_err(|e| ApiError::internal("writing the JSONL failed", e))
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
async fn stem(state: &AppState, s: &medpo_types::DatasetSnapshot) -> Result<String, ApiError> {
    let datasets = state.ctx.store.list_datasets().await?;
    let name = datasets.iter().find(|d| d.id == s.dataset_id).map(|d| d.name.clone()).unwrap_or_else(|| "dataset".into());
    let safe: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    Ok(format!("{safe}-v{}", s.version))
}

/// `GET /api/snapshots/{id}/pairs.jsonl`: the snapshot as TRL JSONL (image paths relative to
/// the data folder, as the zip lays them out).
pub async fn export_jsonl(State(state): State<AppState>, headers: HeaderMap, UrlPath(id): UrlPath<i64>) -> Result<Response, ApiError> {
    let user = require(&state, &headers, &[Role::Researcher]).await?;
    let stem = stem(&state, &state.ctx.store.snapshot(id).await?).await?;
    let (recs, _) = records(&state.ctx.store, id).await?;
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
    let stem = stem(&state, &snap).await?;
    let (recs, scans) = records(&state.ctx.store, id).await?;
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
        let seed_bytes = medpo_train::data::to_seed_json(&recs).map_err(|e| ApiError::internal("writing the seed JSON failed", e))?;
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

/// Most problems listed in one refusal.
const MAX_LISTED: usize = 20;

/// One validated record of an upload, before anything is stored.
struct Prepared {
    question: String,
    chosen: String,
    rejected: String,
    image: Option<String>,
    roi: Option<[u32; 4]>,
}

/// Reads an uploaded preference file (TRL `.jsonl`, the seed's `.json`, or a `.zip` holding one
/// of them with its images), validates every record and decodes every image. Nothing is stored
/// here; errors name the line (or record) and what is wrong.
fn prepare_upload(name: &str, bytes: &[u8], limits: &medpo_imaging::Limits) -> Result<(Vec<Prepared>, Vec<(String, medpo_imaging::DecodedScan)>), String> {
    let lower = name.to_ascii_lowercase();
    let dir = std::env::temp_dir().join(format!("medpo-upload-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create a temporary folder: {e}"))?;
    let _cleanup = RemoveOnDrop(dir.clone());
    let (path, images_dir) = if lower.ends_with(".zip") {
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| format!("`{name}` is not a readable zip: {e}"))?;
        let mut total = 0u64;
        for i in 0..zip.len() {
            let mut f = zip.by_index(i).map_err(|e| format!("`{name}`: entry {i}: {e}"))?;
            if f.is_dir() {
                continue;
            }
            let entry = f.name().map(|n| n.into_owned()).unwrap_or_else(|_| format!("#{i}"));
            let Some(rel) = f.enclosed_name() else {
                return Err(format!("`{name}`: entry `{entry}` points outside the archive"));
            };
            total += f.size();
            if total > 4 * limits.max_bytes as u64 {
                return Err(format!("`{name}` unpacks to more than {} MB", 4 * (limits.max_bytes >> 20)));
            }
            let out = dir.join(rel);
            if let Some(parent) = out.parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            let mut w = std::fs::File::create(&out).map_err(|e| e.to_string())?;
            std::io::copy(&mut f, &mut w).map_err(|e| format!("`{name}`: entry `{entry}`: {e}"))?;
        }
        let found = ["dataset.jsonl", "dataset.json"].iter().map(|n| dir.join(n)).find(|p| p.is_file());
        let path = found.ok_or_else(|| format!("`{name}` holds no dataset.jsonl (TRL) or dataset.json (LLaVA conversations) at its top level"))?;
        let images = path.parent().map(|p| p.to_path_buf()).unwrap_or_else(|| dir.clone());
        (path, Some(images))
    } else if lower.ends_with(".jsonl") || lower.ends_with(".json") {
        let file = dir.join(if lower.ends_with(".jsonl") { "upload.jsonl" } else { "upload.json" });
        std::fs::write(&file, bytes).map_err(|e| e.to_string())?;
        (file, None)
    } else {
        return Err(format!("`{name}`: expected a .jsonl (TRL), a .json (the seed's LLaVA conversations) or a .zip of one with its images"));
    };
    // Messages name the uploaded file, not the temporary copy.
    let shown = |m: String| m.replace(&path.display().to_string(), name).replace(&dir.display().to_string(), name);
    let mut records = medpo_train::data::load(&path).map_err(|e| shown(e.to_string()))?;
    if records.is_empty() {
        return Err(format!("`{name}` holds no preference record"));
    }
    let report = medpo_train::data::validate(&mut records, images_dir.as_deref());
    if !report.is_ok() {
        let n = report.errors.len();
        let listed: Vec<String> = report.errors.iter().take(MAX_LISTED).map(|i| shown(i.to_string())).collect();
        return Err(format!("{n} record(s) of `{name}` are invalid; nothing was stored: {}{}", listed.join("; "), if n > MAX_LISTED { "; …" } else { "" }));
    }
    let mut scans: Vec<(String, medpo_imaging::DecodedScan)> = Vec::new();
    let mut out = Vec::with_capacity(records.len());
    for r in &records {
        if let Some(img) = &r.image {
            let Some(images) = &images_dir else {
                return Err(shown(format!("{}: refers to image `{img}`; upload a .zip holding the file and its images", r.source)));
            };
            if !scans.iter().any(|(k, _)| k == img) {
                let bytes = std::fs::read(images.join(img)).map_err(|e| shown(format!("{}: image `{img}`: {e}", r.source)))?;
                let decoded = medpo_imaging::decode_upload(&bytes, limits, &Default::default()).map_err(|e| shown(format!("{}: image `{img}`: {e}", r.source)))?;
                scans.push((img.clone(), decoded));
            }
        }
        let question = r.prompt.replace(medpo_train::data::IMAGE_TOKEN, "").trim().to_string();
        out.push(Prepared { question, chosen: r.chosen.clone(), rejected: r.rejected.clone(), image: r.image.clone(), roi: r.roi });
    }
    Ok((out, scans))
}

struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `POST /api/datasets/{id}/upload` (multipart: `file`, optional `note`): a preference file
/// becomes the dataset's next version, holding exactly its pairs. Every record is checked
/// first; a refusal lists the bad lines and stores nothing.
pub async fn upload(
    State(state): State<AppState>,
    headers: HeaderMap,
    UrlPath(dataset_id): UrlPath<i64>,
    mut mp: axum::extract::Multipart,
) -> Result<Response, ApiError> {
    let user = require(&state, &headers, &[Role::Researcher]).await?;
    if !state.ctx.store.list_datasets().await?.iter().any(|d| d.id == dataset_id) {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("dataset {dataset_id} does not exist")));
    }
    let limit = state.config.max_upload_bytes;
    let mut file: Option<(String, Vec<u8>)> = None;
    let mut note = String::new();
    while let Some(field) = mp.next_field().await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("the upload is larger than the server's limit of {} MB", limit >> 20))
        } else {
            ApiError::bad(format!("the upload form could not be read: {}", e.body_text()))
        }
    })? {
        match field.name().unwrap_or("") {
            "file" => {
                let name: String = field.file_name().unwrap_or("upload").chars().filter(|c| !c.is_control()).take(200).collect();
                let bytes = field.bytes().await.map_err(|e| ApiError::bad(format!("the file could not be read: {}", e.body_text())))?;
                file = Some((name, bytes.to_vec()));
            }
            "note" => note = field.text().await.unwrap_or_default().chars().take(500).collect(),
            _ => {}
        }
    }
    let (name, bytes) = file.ok_or_else(|| ApiError::bad("choose a preference file (.jsonl, .json or .zip)"))?;
    let limits = medpo_imaging::Limits { max_bytes: limit, ..Default::default() };
    let upload_name = name.clone();
    let (records, decoded) = tokio::task::spawn_blocking(move || prepare_upload(&upload_name, &bytes, &limits))
        .await
        .map_err(|e| ApiError::internal("reading the upload failed", e))?
        .map_err(|m| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, m))?;
    // Every record is valid: store the images (content-addressed), then the pairs and the
    // snapshot in one transaction.
    let mut scan_ids = std::collections::HashMap::new();
    for (key, d) in decoded {
        let (scan, _) = super::scans::store_decoded(&state, &d, user.id).await?;
        scan_ids.insert(key, scan.id);
    }
    let pairs: Vec<medpo_store::datasets::ImportedPair> = records
        .into_iter()
        .map(|r| medpo_store::datasets::ImportedPair {
            scan_id: r.image.as_ref().and_then(|i| scan_ids.get(i).copied()),
            question: r.question,
            chosen: r.chosen,
            rejected: r.rejected,
            region: r.roi.map(|[x0, y0, x1, y1]| medpo_types::Region { x: x0 as f64, y: y0 as f64, w: (x1 - x0) as f64, h: (y1 - y0) as f64 }),
        })
        .collect();
    let note = if note.trim().is_empty() { format!("uploaded {name}") } else { note };
    let snap = state.ctx.store.upload_snapshot(dataset_id, &pairs, &note, Some(user.id)).await?;
    state.ctx.store.audit(Some(user.id), &user.username, "upload", &format!("snapshot {} of dataset {dataset_id} from `{name}` ({} pairs)", snap.id, snap.pair_count)).await?;
    tracing::info!(dataset = dataset_id, snapshot = snap.id, pairs = snap.pair_count, user = %user.username, "preference file uploaded");
    Ok((StatusCode::CREATED, axum::Json(snap)).into_response())
}
