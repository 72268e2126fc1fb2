//! Server-side context shared with server functions (never compiled to wasm).

use std::path::PathBuf;

use axum::http;
use leptos::prelude::*;

/// What the server provides to every render and server function.
#[derive(Clone, Debug)]
pub struct ServerContext {
    pub store: medpo_store::Store,
    /// Where scans, datasets and checkpoints are written.
    pub data_dir: PathBuf,
    /// Where model checkpoints are looked up.
    pub models_dir: PathBuf,
    /// Failed sign-ins, for rate limiting.
    pub login_limiter: crate::auth::ssr::LoginLimiter,
    /// Add `Secure` to the session cookie (set when served over HTTPS).
    pub secure_cookies: bool,
    /// The upload limit in MB, shown on the page.
    pub max_upload_mb: usize,
    /// Benchmarks evaluation runs can use (from the server's configuration).
    pub benchmarks: Vec<medpo_types::BenchmarkSpec>,
    /// Devices training jobs can be queued on (`cpu`, and `cuda` when built with CUDA and a
    /// GPU is present).
    pub devices: Vec<String>,
}

/// The server context, or an error if called outside a request.
pub fn ctx() -> Result<ServerContext, ServerFnError> {
    use_context::<ServerContext>().ok_or_else(|| ServerFnError::new("server context missing"))
}

/// Turns a storage error into a message for the page. Input problems (not found, conflict,
/// invalid) are shown as they are; database failures are logged and shown generically.
pub fn store_err(e: medpo_store::Error) -> ServerFnError {
    match store_status(&e) {
        Some(code) => {
            set_status(code);
            ServerFnError::new(e.to_string())
        }
        None => {
            tracing::error!(error = %e, "storage error in a server function");
            ServerFnError::new("the database could not complete the request; see the server log")
        }
    }
}

/// The 4xx status of a storage error caused by the input (not found, invalid, conflict), or
/// `None` for a database failure. Shared by server functions and the server's JSON endpoints.
pub fn store_status(e: &medpo_store::Error) -> Option<http::StatusCode> {
    use medpo_store::Error as E;
    match e {
        E::NotFound { .. } => Some(http::StatusCode::NOT_FOUND),
        E::Invalid { .. } => Some(http::StatusCode::UNPROCESSABLE_ENTITY),
        _ if e.is_conflict() => Some(http::StatusCode::CONFLICT),
        _ => None,
    }
}

/// Sets the HTTP status of the current server-function response (a 4xx for bad input).
pub fn set_status(code: http::StatusCode) {
    if let Some(resp) = use_context::<leptos_axum::ResponseOptions>() {
        resp.set_status(code);
    }
}

/// A bad-input error: the message goes to the page, with the given 4xx status.
pub fn bad_input(code: http::StatusCode, msg: impl Into<String>) -> ServerFnError {
    set_status(code);
    ServerFnError::new(msg.into())
}

/// A checkpoint folder's path: absolute as given, otherwise inside the models directory.
pub fn resolve_model_dir(models_dir: &std::path::Path, path: &str) -> PathBuf {
    let p = std::path::Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        models_dir.join(p)
    }
}

/// Resolves a checkpoint folder named by a user: inside the models folder (after resolving
/// `..` and links), or anywhere for an admin. The result is canonical, so the same folder is
/// never registered twice under two spellings.
pub fn confined_model_dir(models_dir: &std::path::Path, path: &str, admin: bool) -> Result<PathBuf, String> {
    if path.is_empty() {
        return Err("give a checkpoint folder".into());
    }
    let joined = resolve_model_dir(models_dir, path);
    let canon = std::fs::canonicalize(&joined).map_err(|_| format!("checkpoint folder `{path}` does not exist"))?;
    if !admin {
        let root = std::fs::canonicalize(models_dir).map_err(|_| format!("the models folder `{}` does not exist", models_dir.display()))?;
        if !canon.starts_with(&root) {
            return Err(format!("`{path}` is outside the models folder; only an admin can register other folders"));
        }
    }
    Ok(canon)
}

/// What registration needs to know about a checkpoint folder.
#[derive(Debug, Clone)]
pub struct CheckpointProbe {
    pub layout: String,
    pub base: String,
    pub files: Vec<String>,
    pub params: Option<i64>,
}

/// Reads a checkpoint folder's `config.json` and safetensors headers (not the weights).
/// Errors name the folder or file and what is wrong.
pub fn probe_checkpoint(dir: &std::path::Path) -> Result<CheckpointProbe, String> {
    if !dir.is_dir() {
        return Err(format!("checkpoint folder `{}` does not exist", dir.display()));
    }
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| format!("cannot read `{}`: {e}", cfg_path.display()))?;
    let cfg: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("`{}` is not valid JSON: {e}", cfg_path.display()))?;
    let model_type = cfg.get("model_type").and_then(|v| v.as_str()).unwrap_or("");
    let (layout, base) = match model_type {
        "llava_mistral" => ("llava_mistral", "LLaVA-Med v1.5 (Mistral)"),
        "llava_qwen2" => ("llava_qwen2", "HuatuoGPT-Vision (Qwen2)"),
        "llava" => ("llava_hf", "llava-hf"),
        "" => return Err(format!("`{}` has no `model_type`", cfg_path.display())),
        other => {
            return Err(format!(
                "`{}`: model_type `{other}` is not supported (expected llava_mistral, llava_qwen2 or llava)",
                cfg_path.display()
            ))
        }
    };
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot list `{}`: {e}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let shards: Vec<&String> = files.iter().filter(|f| f.ends_with(".safetensors")).collect();
    if shards.is_empty() {
        return Err(format!("`{}` holds no .safetensors weights", dir.display()));
    }
    let mut params = 0i64;
    for f in &shards {
        params += safetensors_param_count(&dir.join(f))?;
    }
    Ok(CheckpointProbe { layout: layout.into(), base: base.into(), files, params: Some(params) })
}

/// Sums the element counts in a safetensors file's header (reads only the header).
fn safetensors_param_count(path: &std::path::Path) -> Result<i64, String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| format!("cannot open `{}`: {e}", path.display()))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(|_| format!("`{}` is too short to be safetensors", path.display()))?;
    let n = u64::from_le_bytes(len);
    if n > 100 << 20 {
        return Err(format!("`{}` has an implausible header length {n}", path.display()));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(|_| format!("`{}`: header is truncated", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| format!("`{}`: header is not JSON: {e}", path.display()))?;
    let mut total = 0i64;
    if let Some(map) = v.as_object() {
        for (k, t) in map {
            if k == "__metadata__" {
                continue;
            }
            let shape = t.get("shape").and_then(|s| s.as_array()).ok_or_else(|| format!("`{}`: tensor `{k}` has no shape", path.display()))?;
            let mut n: i64 = 1;
            for d in shape {
                let d = d.as_i64().filter(|d| *d >= 0).ok_or_else(|| format!("`{}`: tensor `{k}` has a bad dimension", path.display()))?;
                n = n.checked_mul(d).ok_or_else(|| format!("`{}`: tensor `{k}` is implausibly large", path.display()))?;
            }
            total = total.checked_add(n).ok_or_else(|| format!("`{}`: parameter count overflows", path.display()))?;
        }
    }
    Ok(total)
}

/// The registry layout of models served by a remote OpenAI-compatible server.
pub const REMOTE_LAYOUT: &str = "remote";

/// Whether this server can train or evaluate the model itself (enabled and not remote).
pub fn runs_here(m: &medpo_types::ModelEntry) -> bool {
    m.enabled && m.layout != REMOTE_LAYOUT
}

/// The client configuration of a remote registered from the Models page.
pub fn remote_config(r: &medpo_types::RemoteEndpoint) -> medpo_remote::RemoteConfig {
    let mut c = medpo_remote::RemoteConfig::new(&r.name, &r.base_url, r.models.clone());
    c.api_key_env = r.api_key_env.clone();
    c.timeout_s = r.timeout_s.max(1) as u64;
    c.max_concurrency = r.max_concurrency.max(1) as usize;
    c
}

/// Registers a remote's models (`<remote>/<model>`, layout `remote`, path
/// `remote://<remote>/<model>`) that are not registered yet; returns the names added.
pub async fn register_remote_models(store: &medpo_store::Store, r: &medpo_remote::RemoteConfig) -> Vec<String> {
    let known: Vec<String> = match store.list_models().await {
        Ok(list) => list.into_iter().map(|m| m.name).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list registered models");
            return vec![];
        }
    };
    let mut added = Vec::new();
    for m in &r.models {
        let name = format!("{}/{m}", r.name);
        if known.contains(&name) {
            continue;
        }
        let new = medpo_types::NewModel {
            name: name.clone(),
            base: format!("remote {}", r.name),
            variant: "remote".into(),
            layout: REMOTE_LAYOUT.into(),
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
    added
}

/// The benchmarks for a form: (name, why it cannot run now), runnable ones first.
pub fn benchmark_choices(specs: &[medpo_types::BenchmarkSpec]) -> Vec<(String, Option<String>)> {
    let mut v: Vec<(String, Option<String>)> = specs.iter().map(|b| (b.name.clone(), b.unavailable())).collect();
    v.sort_by_key(|(_, why)| why.is_some());
    v
}

/// Votes as the evaluation engine reads them (rater and comparison as ids).
pub fn eval_votes(votes: &[medpo_types::VoteOutcome]) -> Vec<medpo_eval::votes::Vote> {
    votes
        .iter()
        .map(|v| medpo_eval::votes::Vote {
            model_a: v.model_a.clone(),
            model_b: v.model_b.clone(),
            winner: match v.winner {
                medpo_types::Winner::A => medpo_eval::votes::Winner::A,
                medpo_types::Winner::B => medpo_eval::votes::Winner::B,
                medpo_types::Winner::Tie => medpo_eval::votes::Winner::Tie,
                medpo_types::Winner::BothBad => medpo_eval::votes::Winner::BothBad,
            },
            rater: Some(v.rater_id.to_string()),
            item: Some(v.comparison_id.to_string()),
        })
        .collect()
}
