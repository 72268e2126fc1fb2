//! `POST /api/compare`: one question about one scan to 2–4 models, answers streamed token by
//! token as NDJSON [`CompareEvent`]s, columns running side by side on blocking threads.
//!
//! Blind mode without model ids draws two enabled models with weights 1 / (1 + votes the
//! pair already has), on random sides, and logs the draw (`arena_samples`). When every column
//! has finished the comparison and its answers are stored in one transaction; a column that
//! fails is stored as failed (and cannot be voted on); if every column fails, or the page
//! has gone away, nothing is stored.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use medpo_models::GenerateParams;
use medpo_types::{
    ColumnInfo, CompareEvent, CompareRequest, GenerationSettings, ModelEntry, NewAnswer, PairSample, SettingsOverride,
};
use rand::Rng;
use tokio::sync::mpsc;

use super::{require, ApiError, ASKERS};
use crate::engine::ModelPool;
use crate::AppState;

/// Longest accepted question, in characters.
pub const MAX_QUESTION_CHARS: usize = 2000;
/// Most new tokens a page may ask for.
pub const MAX_NEW_TOKENS: u32 = 1024;

fn layout_defaults(layout: &str) -> GenerateParams {
    match layout {
        "llava_qwen2" => GenerateParams::huatuo_cli(),
        _ => GenerateParams::default(),
    }
}

/// The settings of one column: the model's released defaults (named) or one common greedy
/// setting (blind), then the request's overrides.
pub fn settings_for(layout: Option<&str>, o: &SettingsOverride) -> Result<GenerationSettings, ApiError> {
    let d = layout.map(layout_defaults).unwrap_or_default();
    let s = GenerationSettings {
        max_new_tokens: o.max_new_tokens.unwrap_or(128),
        temperature: o.temperature.unwrap_or(d.temperature as f32),
        top_p: o.top_p.unwrap_or(d.top_p as f32),
        repetition_penalty: o.repetition_penalty.unwrap_or(d.repetition_penalty),
        seed: o.seed.unwrap_or(0),
    };
    if s.max_new_tokens == 0 || s.max_new_tokens > MAX_NEW_TOKENS {
        return Err(ApiError::bad(format!("max new tokens must be 1 to {MAX_NEW_TOKENS}, got {}", s.max_new_tokens)));
    }
    let ok = s.temperature.is_finite()
        && s.temperature >= 0.0
        && s.temperature <= 5.0
        && s.top_p > 0.0
        && s.top_p <= 1.0
        && s.repetition_penalty > 0.0
        && s.repetition_penalty <= 5.0;
    if !ok {
        return Err(ApiError::bad(format!(
            "settings out of range: temperature {} (0–5), top_p {} (0–1], repetition penalty {} (0–5]",
            s.temperature, s.top_p, s.repetition_penalty
        )));
    }
    Ok(s)
}

/// Draws a pair among `models` with weights 1 / (1 + votes of the pair); the sides are
/// random. Returns the two models (A, B) and the log entry.
pub fn draw_pair(
    models: &[ModelEntry],
    votes: &[(i64, i64, i64)],
    rng: &mut impl Rng,
) -> Option<(ModelEntry, ModelEntry, PairSample)> {
    let mut pairs = Vec::new();
    for (i, a) in models.iter().enumerate() {
        for b in &models[i + 1..] {
            let (lo, hi) = (a.id.min(b.id), a.id.max(b.id));
            let n = votes.iter().find(|(x, y, _)| *x == lo && *y == hi).map_or(0, |v| v.2);
            pairs.push((a, b, n, 1.0 / (1.0 + n as f64)));
        }
    }
    let total: f64 = pairs.iter().map(|p| p.3).sum();
    if pairs.is_empty() || total <= 0.0 {
        return None;
    }
    let mut x = rng.random::<f64>() * total;
    let mut pick = pairs.len() - 1;
    for (i, p) in pairs.iter().enumerate() {
        if x < p.3 {
            pick = i;
            break;
        }
        x -= p.3;
    }
    let (a, b, n, w) = pairs[pick];
    let (a, b) = if rng.random::<bool>() { (a, b) } else { (b, a) };
    let sample =
        PairSample { model_a_id: a.id, model_b_id: b.id, pair_votes: n, candidates: pairs.len() as i64, probability: w / total };
    Some((a.clone(), b.clone(), sample))
}

/// `POST /api/compare`.
pub async fn compare(State(state): State<AppState>, headers: HeaderMap, Json(req): Json<CompareRequest>) -> Result<Response, ApiError> {
    let user = require(&state, &headers, ASKERS).await?;
    let question = req.question.trim().to_string();
    if question.is_empty() {
        return Err(ApiError::bad("write a question first"));
    }
    if question.chars().count() > MAX_QUESTION_CHARS {
        return Err(ApiError::bad(format!("the question is longer than {MAX_QUESTION_CHARS} characters")));
    }
    let store = state.ctx.store.clone();
    let scan = store.scan(req.scan_id).await?;
    let enabled: Vec<ModelEntry> = store.list_models().await?.into_iter().filter(|m| m.enabled).collect();
    let (models, sample) = if req.blind && req.model_ids.is_empty() {
        let votes = store.pair_vote_counts().await?;
        let (a, b, s) = draw_pair(&enabled, &votes, &mut rand::rng()).ok_or_else(|| {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "the arena needs at least two enabled models; register them on the Models page")
        })?;
        tracing::info!(model_a = a.id, model_b = b.id, pair_votes = s.pair_votes, probability = s.probability, "blind pair drawn");
        (vec![a, b], Some(s))
    } else {
        let ids = &req.model_ids;
        if !(2..=4).contains(&ids.len()) {
            return Err(ApiError::bad(format!("choose 2 to 4 models, not {}", ids.len())));
        }
        let mut chosen = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            if ids[..i].contains(id) {
                return Err(ApiError::bad(format!("model {id} is chosen twice")));
            }
            let m = enabled
                .iter()
                .find(|m| m.id == *id)
                .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("model {id} is not registered or is disabled")))?;
            chosen.push(m.clone());
        }
        (chosen, None)
    };
    let blind = req.blind;
    let columns: Vec<ColumnInfo> = models
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let settings = settings_for(if blind { None } else { Some(m.layout.as_str()) }, &req.settings)?;
            Ok(ColumnInfo {
                label: format!("Model {}", (b'A' + i as u8) as char),
                model_id: (!blind).then_some(m.id),
                model_name: (!blind).then(|| m.name.clone()),
                settings,
            })
        })
        .collect::<Result<_, ApiError>>()?;

    let (tx, rx) = mpsc::channel::<CompareEvent>(1024);
    let _ = tx.send(CompareEvent::Start { blind, columns: columns.clone() }).await;
    let image_path = state.ctx.data_dir.join(&scan.path);
    let pool = state.engine.clone();
    let remotes = state.remotes.clone();
    tokio::spawn(async move {
        let mut handles = Vec::new();
        for (column, (m, info)) in models.iter().cloned().zip(columns.iter().cloned()).enumerate() {
            let (pool, remotes, tx, question, image_path) =
                (pool.clone(), remotes.clone(), tx.clone(), question.clone(), image_path.clone());
            let store = store.clone();
            handles.push(tokio::spawn(async move {
                // Remote columns wait on their remote's own bound, not on the local gate.
                let target = remotes.target(&store, &m).await;
                let _permit = if target.is_some() { None } else { pool.slots.clone().acquire_owned().await.ok() };
                let settings = info.settings.clone();
                let name = m.name.clone();
                let run = tokio::task::spawn_blocking({
                    let tx = tx.clone();
                    move || match target {
                        Some(target) => run_remote_column(target?, column, &question, &image_path, &settings, &tx),
                        None => run_column(&pool, &m, column, &question, &image_path, &settings, &tx),
                    }
                })
                .await;
                let outcome = match run {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(model = %name, error = %e, "a generation thread panicked");
                        Err("the model crashed while answering; see the server log".to_string())
                    }
                };
                if let Err(msg) = &outcome {
                    tracing::warn!(model = %name, column, error = %msg, "column failed");
                    // Blind: the message would name the model (or its files); say less.
                    let message = if blind { "this model failed to answer; the server log has the reason".to_string() } else { msg.clone() };
                    let _ = tx.send(CompareEvent::Error { column, message }).await;
                }
                (info, outcome)
            }));
        }
        let mut answers = Vec::new();
        for (h, m) in handles.into_iter().zip(&models) {
            let (info, outcome) = match h.await {
                Ok(r) => r,
                Err(_) => continue,
            };
            answers.push(match outcome {
                Ok((text, latency_ms)) => NewAnswer { model_id: m.id, text, settings: info.settings, latency_ms: Some(latency_ms), error: None },
                Err(e) => NewAnswer { model_id: m.id, text: String::new(), settings: info.settings, latency_ms: None, error: Some(e) },
            });
        }
        if answers.len() != models.len() || answers.iter().all(|a| a.error.is_some()) {
            let _ = tx.send(CompareEvent::Failed { message: "no model answered, so nothing was stored".into() }).await;
            return;
        }
        if tx.is_closed() {
            // The page went away: nobody can vote on these answers, so keep nothing.
            tracing::info!(user = %user.username, "the client left before the answers were complete; nothing stored");
            return;
        }
        match store.create_comparison_drawn(scan.id, &question, blind, Some(user.id), &answers, sample.as_ref()).await {
            Ok(c) => {
                tracing::info!(comparison = c.id, blind, models = answers.len(), "comparison stored");
                let _ = tx
                    .send(CompareEvent::Saved { comparison_id: c.id, answer_ids: c.answers.iter().map(|a| a.id).collect() })
                    .await;
            }
            Err(e) => {
                tracing::error!(error = %e, "storing a comparison failed");
                let _ = tx.send(CompareEvent::Failed { message: "the answers could not be stored; see the server log".into() }).await;
            }
        }
    });
    let stream = futures::StreamExt::fuse(futures::stream::unfold(rx, |mut rx| async move {
        let ev = rx.recv().await?;
        let mut line = serde_json::to_vec(&ev).unwrap_or_default();
        line.push(b'\n');
        Some((Ok::<_, std::convert::Infallible>(line), rx))
    }));
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson"), (header::CACHE_CONTROL, "no-store"), (header::HeaderName::from_static("x-accel-buffering"), "no")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Runs one column on a blocking thread: load (once), preprocess, generate with a token
/// callback. Returns the answer and its latency in ms (generation only).
fn run_column(
    pool: &Arc<ModelPool>,
    entry: &ModelEntry,
    column: usize,
    question: &str,
    image_path: &std::path::Path,
    s: &GenerationSettings,
    tx: &mpsc::Sender<CompareEvent>,
) -> Result<(String, i64), String> {
    let model = pool.get(entry)?;
    let image = medpo_models::preprocess::load_image(image_path).map_err(|e| format!("the scan could not be read: {e}"))?;
    let input = model.input(question, Some(&image)).map_err(|e| e.to_string())?;
    let params = GenerateParams {
        max_new_tokens: s.max_new_tokens as usize,
        temperature: s.temperature as f64,
        top_p: s.top_p as f64,
        repetition_penalty: s.repetition_penalty,
        seed: s.seed,
        stop_at_eos: true,
    };
    let started = Instant::now();
    let mut first: Option<i64> = None;
    let mut tokens = 0usize;
    let gens = model
        .generate(&[input], &params, &mut |e| {
            tokens += 1;
            first.get_or_insert_with(|| started.elapsed().as_millis() as i64);
            if !e.text.is_empty() {
                let _ = tx.blocking_send(CompareEvent::Token { column, text: e.text.to_string() });
            }
        })
        .map_err(|e| format!("generation failed: {e}"))?;
    let latency_ms = started.elapsed().as_millis() as i64;
    let text = gens.into_iter().next().map(|g| g.text).unwrap_or_default();
    let _ = tx.blocking_send(CompareEvent::Done { column, latency_ms, first_token_ms: first, tokens });
    Ok((text.trim().to_string(), latency_ms))
}

/// Runs one column against a remote OpenAI-compatible server on a blocking thread: the scan
/// goes as a PNG `data:` URL, tokens stream back as they come. Returns the answer and its
/// latency in ms.
fn run_remote_column(
    (client, model): (Arc<medpo_remote::Client>, String),
    column: usize,
    question: &str,
    image_path: &std::path::Path,
    s: &GenerationSettings,
    tx: &mpsc::Sender<CompareEvent>,
) -> Result<(String, i64), String> {
    let png = std::fs::read(image_path).map_err(|e| format!("the scan could not be read: {e}"))?;
    let mut body = serde_json::json!({
        "model": model,
        "max_tokens": s.max_new_tokens,
        "temperature": s.temperature,
        "top_p": s.top_p,
        "seed": s.seed,
        "messages": medpo_remote::image_question(question, &png),
    });
    if s.repetition_penalty != 1.0 {
        body["repetition_penalty"] = serde_json::json!(s.repetition_penalty);
    }
    let started = Instant::now();
    let mut first: Option<i64> = None;
    let mut pieces = 0usize;
    let answer = client
        .stream(&body, &mut |d| {
            pieces += 1;
            first.get_or_insert_with(|| started.elapsed().as_millis() as i64);
            tx.blocking_send(CompareEvent::Token { column, text: d.to_string() }).is_ok()
        })
        .map_err(|e| e.to_string())?;
    let latency_ms = started.elapsed().as_millis() as i64;
    let tokens = answer.completion_tokens.map_or(pieces, |t| t as usize);
    let _ = tx.blocking_send(CompareEvent::Done { column, latency_ms, first_token_ms: first, tokens });
    Ok((answer.text.trim().to_string(), latency_ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn entry(id: i64) -> ModelEntry {
        ModelEntry {
            id,
            name: format!("m{id}"),
            base: "b".into(),
            variant: "sft".into(),
            layout: "llava_mistral".into(),
            parent_id: None,
            path: String::new(),
            files: vec![],
            card: String::new(),
            params: None,
            enabled: true,
            created_at: 0,
        }
    }

    #[test]
    fn under_voted_pairs_come_up_more_often() {
        let models = vec![entry(1), entry(2), entry(3)];
        // Pair (1,2) has 9 votes: weight 0.1 against 1 and 1 for the others.
        let votes = vec![(1, 2, 9)];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut counts = std::collections::HashMap::new();
        let mut a_first = 0;
        for _ in 0..4000 {
            let (a, b, s) = draw_pair(&models, &votes, &mut rng).unwrap();
            assert_ne!(a.id, b.id);
            let key = (a.id.min(b.id), a.id.max(b.id));
            let expect = if key == (1, 2) { 0.1 / 2.1 } else { 1.0 / 2.1 };
            assert!((s.probability - expect).abs() < 1e-12, "{s:?}");
            assert_eq!(s.candidates, 3);
            *counts.entry(key).or_insert(0) += 1;
            if a.id < b.id {
                a_first += 1;
            }
        }
        let heavy = counts[&(1, 2)] as f64 / 4000.0;
        assert!((heavy - 0.1 / 2.1).abs() < 0.02, "{counts:?}");
        assert!((counts[&(1, 3)] as f64 / 4000.0 - 1.0 / 2.1).abs() < 0.03, "{counts:?}");
        // Sides are random.
        assert!((a_first as f64 / 4000.0 - 0.5).abs() < 0.04);
        assert!(draw_pair(&models[..1], &votes, &mut rng).is_none());
    }

    #[test]
    fn blind_settings_are_common_and_overrides_checked() {
        let o = SettingsOverride::default();
        let named = settings_for(Some("llava_qwen2"), &o).unwrap();
        assert_eq!(named.repetition_penalty, 1.2);
        let blind = settings_for(None, &o).unwrap();
        assert_eq!((blind.temperature, blind.repetition_penalty, blind.max_new_tokens), (0.0, 1.0, 128));
        assert!(settings_for(None, &SettingsOverride { max_new_tokens: Some(0), ..o.clone() }).is_err());
        assert!(settings_for(None, &SettingsOverride { top_p: Some(1.5), ..o.clone() }).is_err());
        assert!(settings_for(None, &SettingsOverride { temperature: Some(f32::NAN), ..o }).is_err());
    }
}
