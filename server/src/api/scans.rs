//! Scan upload (PNG, JPEG, DICOM), stored content-addressed and de-identified; the stored
//! scans; and the exact image a model sees after its preprocessing.
//!
//! `POST /api/scans` (multipart): `file`, optional `preset` (lung, mediastinum, bone, brain),
//! `window_center` + `window_width`, and `preview=1` to render without storing (the page
//! uses it while the user adjusts the window). Only the rendered 8-bit PNG and the safe tags
//! (modality, body part, view) are kept; the uploaded bytes never touch the disk.

use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::extract::{Multipart, Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use medpo_imaging::{DecodedScan, Limits, Preset, RenderOptions, SafeMeta};
use medpo_types::{NewScan, Role, Scan};
use serde::Serialize;

use super::{require, ApiError, ASKERS};
use crate::AppState;

/// The answer to an upload.
#[derive(Debug, Serialize)]
pub struct Uploaded {
    /// The stored scan (absent for a preview).
    pub scan: Option<Scan>,
    /// Whether the same scan was already stored (same rendered pixels).
    pub existing: bool,
    /// Where the stored PNG is served, or a `data:` URL for a preview.
    pub url: String,
    pub width: u32,
    pub height: u32,
    pub source_format: String,
    pub meta: SafeMeta,
    /// What the decoder did that a clinician should know.
    pub notes: Vec<String>,
}

struct Form {
    name: String,
    bytes: Vec<u8>,
    opts: RenderOptions,
    preview: bool,
}

async fn read_form(mut mp: Multipart, limit: usize) -> Result<Form, ApiError> {
    let too_big = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the upload is larger than the server's limit of {} MB", limit >> 20),
        )
    };
    let mut file: Option<(String, Vec<u8>)> = None;
    let (mut preset, mut center, mut width, mut preview) = (None, None, None, false);
    loop {
        let field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => return Err(too_big()),
            Err(e) => return Err(ApiError::bad(format!("the upload form could not be read: {}", e.body_text()))),
        };
        let name = field.name().unwrap_or("").to_string();
        if name == "file" {
            let fname = field.file_name().unwrap_or("upload").chars().filter(|c| !c.is_control()).take(200).collect();
            let bytes = field.bytes().await.map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    too_big()
                } else {
                    ApiError::bad(format!("the file could not be read: {}", e.body_text()))
                }
            })?;
            file = Some((fname, bytes.to_vec()));
            continue;
        }
        let text = field.text().await.map_err(|e| ApiError::bad(format!("form field `{name}`: {}", e.body_text())))?;
        let text = text.trim().to_string();
        let num = |t: &str| {
            t.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| ApiError::bad(format!("`{name}` must be a number, got `{t}`")))
        };
        match name.as_str() {
            "preset" if !text.is_empty() => preset = Some(text.parse::<Preset>().map_err(ApiError::bad)?),
            "window_center" if !text.is_empty() => center = Some(num(&text)?),
            "window_width" if !text.is_empty() => width = Some(num(&text)?),
            "preview" => preview = matches!(text.as_str(), "1" | "true" | "yes"),
            _ => {}
        }
    }
    let (name, bytes) = file.ok_or_else(|| ApiError::bad("choose a file to upload (form field `file`)"))?;
    let window = match (center, width) {
        (Some(c), Some(w)) if w > 0.0 => Some((c, w)),
        (Some(_), Some(w)) => return Err(ApiError::bad(format!("window width must be positive, got {w}"))),
        (None, None) => None,
        _ => return Err(ApiError::bad("give both window_center and window_width, or neither")),
    };
    Ok(Form { name, bytes, opts: RenderOptions { window, preset }, preview })
}

/// Where a scan's PNG lives inside the data folder.
pub fn scan_path(data_dir: &Path, sha: &str) -> PathBuf {
    data_dir.join("scans").join(&sha[..2]).join(format!("{sha}.png"))
}

/// `POST /api/scans`.
pub async fn upload(State(state): State<AppState>, headers: HeaderMap, mp: Multipart) -> Result<Response, ApiError> {
    let user = require(&state, &headers, ASKERS).await?;
    let limit = state.config.max_upload_bytes;
    let form = read_form(mp, limit).await?;
    let limits = Limits { max_bytes: limit, ..Default::default() };
    let (name, opts) = (form.name.clone(), form.opts);
    let decoded: DecodedScan = tokio::task::spawn_blocking(move || medpo_imaging::decode_upload(&form.bytes, &limits, &opts))
        .await
        .map_err(|e| ApiError::internal("decoding the upload failed", e))?
        .map_err(|e| {
            let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
            ApiError::new(status, format!("{name}: {e}"))
        })?;
    let base = Uploaded {
        scan: None,
        existing: false,
        url: String::new(),
        width: decoded.width,
        height: decoded.height,
        source_format: decoded.source_format.to_string(),
        meta: decoded.meta.clone(),
        notes: decoded.notes.clone(),
    };
    if form.preview {
        use base64::Engine;
        let url = format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(&decoded.png_bytes));
        return Ok(Json(Uploaded { url, ..base }).into_response());
    }
    let (scan, created) = store_decoded(&state, &decoded, user.id).await?;
    let sha = scan.sha256.clone();
    tracing::info!(scan = scan.id, sha = %sha, format = %decoded.source_format, existing = !created, user = %user.username, "scan uploaded");
    Ok((
        if created { StatusCode::CREATED } else { StatusCode::OK },
        Json(Uploaded { url: format!("/scans/{sha}.png"), existing: !created, scan: Some(scan), ..base }),
    )
        .into_response())
}

/// Stores a decoded scan: the PNG content-addressed under the data folder, then its row. A
/// failed insert removes a file this call wrote (unless a row meanwhile points to it). Returns
/// the row and whether it is new.
pub(crate) async fn store_decoded(state: &AppState, decoded: &DecodedScan, user_id: i64) -> Result<(medpo_types::Scan, bool), ApiError> {
    let sha = decoded.sha256();
    let path = scan_path(&state.ctx.data_dir, &sha);
    let wrote = {
        let (path, bytes) = (path.clone(), decoded.png_bytes.clone());
        tokio::task::spawn_blocking(move || write_once(&path, &bytes))
            .await
            .map_err(|e| ApiError::internal("storing the scan failed", e))?
            .map_err(|e| ApiError::internal("storing the scan failed", e))?
    };
    let new = NewScan {
        sha256: sha.clone(),
        path: path.strip_prefix(&state.ctx.data_dir).unwrap_or(&path).display().to_string(),
        size_bytes: decoded.png_bytes.len() as i64,
        width: decoded.width as i64,
        height: decoded.height as i64,
        source_format: decoded.source_format,
        modality: decoded.meta.modality.clone(),
        body_part: decoded.meta.body_part.clone(),
        view: decoded.meta.view.clone(),
        uploaded_by: Some(user_id),
    };
    match state.ctx.store.insert_scan(&new).await {
        Ok(r) => Ok(r),
        Err(e) => {
            if wrote && matches!(state.ctx.store.scan_by_sha(&sha).await, Ok(None)) {
                let _ = tokio::fs::remove_file(&path).await;
            }
            Err(e.into())
        }
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename, unless it exists (same
/// content by construction). True when this call wrote it.
fn write_once(path: &Path, bytes: &[u8]) -> std::io::Result<bool> {
    if path.is_file() {
        return Ok(false);
    }
    let dir = path.parent().ok_or_else(|| std::io::Error::other("scan path has no folder"))?;
    std::fs::create_dir_all(dir)?;
    // A name of its own per write: two uploads of the same scan may race here.
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{:016x}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("scan"),
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::write(&tmp, bytes)?;
    // Same content either way: if another request renamed first, this rename replaces it.
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(true)
}

fn png(bytes: Vec<u8>, cache: &'static str) -> Response {
    ([(header::CONTENT_TYPE, "image/png"), (header::CACHE_CONTROL, cache)], Body::from(bytes)).into_response()
}

/// `GET /scans/{sha}.png`: a stored scan, for signed-in users.
pub async fn serve(State(state): State<AppState>, headers: HeaderMap, UrlPath(file): UrlPath<String>) -> Result<Response, ApiError> {
    require(&state, &headers, &[Role::Clinician, Role::Researcher, Role::Viewer]).await?;
    let sha = file.strip_suffix(".png").unwrap_or(&file);
    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no scan `{file}`")));
    }
    let path = scan_path(&state.ctx.data_dir, &sha.to_ascii_lowercase());
    match tokio::fs::read(&path).await {
        // Short and private: a shared workstation should not keep scans after sign-out.
        Ok(bytes) => Ok(png(bytes, "private, max-age=600")),
        Err(_) => Err(ApiError::new(StatusCode::NOT_FOUND, format!("no scan `{file}`"))),
    }
}

/// `GET /api/scans/{id}/seen/{model_id}`: the scan after the model's own preprocessing (pad
/// to square with the CLIP mean colour, bicubic resize, centre crop): exactly the pixels its
/// vision tower gets, before normalisation.
pub async fn seen_by_model(
    State(state): State<AppState>,
    headers: HeaderMap,
    UrlPath((id, model_id)): UrlPath<(i64, i64)>,
) -> Result<Response, ApiError> {
    require(&state, &headers, &[Role::Clinician, Role::Researcher, Role::Viewer]).await?;
    let scan = state.ctx.store.scan(id).await?;
    let model = state.ctx.store.model(model_id).await?;
    let file = state.ctx.data_dir.join(&scan.path);
    let dir = app::ssr::resolve_model_dir(&state.ctx.models_dir, &model.path);
    let models_dir = state.ctx.models_dir.clone();
    let out = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, String> {
        let cfg = medpo_models::config::ModelConfig::from_dir(&dir, &medpo_models::config::ResolveOptions { models_dir: Some(models_dir) })
            .map_err(|e| e.to_string())?;
        let img = medpo_models::preprocess::load_image(&file).map_err(|e| e.to_string())?;
        let pre = medpo_models::preprocess::preprocess(&img, &cfg.image).map_err(|e| e.to_string())?;
        let mut buf = std::io::Cursor::new(Vec::new());
        pre.cropped.write_to(&mut buf, image::ImageFormat::Png).map_err(|e| e.to_string())?;
        Ok(buf.into_inner())
    })
    .await
    .map_err(|e| ApiError::internal("preprocessing failed", e))?
    .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("model `{}`: {e}", model.name)))?;
    Ok(png(out, "private, max-age=600"))
}
