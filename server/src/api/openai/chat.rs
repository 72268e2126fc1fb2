//! `POST /v1/chat/completions`, OpenAI's chat completions for the hosted VLMs.
//!
//! Request: `model` (a registry name), `messages` (one `user` message whose content is text
//! or parts: `{"type": "text"}` and at most one `{"type": "image_url"}` with a `data:` URL;
//! `system`/`developer` text is put before the question, as Mistral's chat template does),
//! `temperature`, `top_p`, `max_tokens` (or `max_completion_tokens`), `seed`, `stop` (up to 4
//! strings), `stream` (+ `stream_options.include_usage`), `logprobs` + `top_logprobs` (0–20),
//! and vLLM's `repetition_penalty`. Unset sampling settings take the model's released
//! defaults (greedy for LLaVA-Med; T = 0.2 with repetition penalty 1.2 for HuatuoGPT-Vision),
//! as on the Compare page.
//!
//! Refused with 400 (OpenAI's error shape, naming the field): malformed JSON, a missing or
//! empty question, a prior `assistant` turn (these checkpoints answer one question about one
//! image), more than one image, an image that is not a usable `data:` URL, settings out of
//! range, `n` ≠ 1, tools, and a prompt longer than the model's context (never truncated:
//! cutting inside the image tokens would corrupt the input). 404 for an unknown model, 413 for
//! an oversize image, 415 for a body that is not JSON.
//!
//! Response: `chat.completion` with `usage` (prompt tokens count the image's tokens) and
//! `finish_reason` `stop` (end of sequence or a stop string) or `length`; or, streamed, a
//! `chat.completion.chunk` per piece of text as server-sent events, ending with
//! `data: [DONE]`. A stream stops generating when the client goes away.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use medpo_models::{GenerateParams, Model, MultimodalInput};
use medpo_types::ModelEntry;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::image::{self, DataUrl};
use super::{authenticate, log_call, CallRecord, Caller, OpenAiError};
use crate::api::compare::MAX_NEW_TOKENS;
use crate::engine::ModelPool;
use crate::AppState;

/// Images one question may carry (the hosted models read one).
pub const MAX_IMAGES: usize = 1;
/// Longest question text accepted before tokenising, in characters.
pub const MAX_TEXT_CHARS: usize = 32_000;
/// Default `max_tokens`.
pub const DEFAULT_MAX_TOKENS: u32 = 256;
const ENDPOINT: &str = "/v1/chat/completions";

#[derive(Debug, Deserialize)]
struct ChatRequest {
    model: Option<String>,
    messages: Option<Vec<Message>>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    seed: Option<u64>,
    stop: Option<Stop>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    logprobs: bool,
    top_logprobs: Option<u32>,
    n: Option<u32>,
    repetition_penalty: Option<f32>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    tools: Option<serde_json::Value>,
    functions: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
struct Message {
    role: String,
    #[serde(default)]
    content: Option<Content>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<serde_json::Value>),
}

/// A validated request.
#[derive(Debug)]
struct Ask {
    model: String,
    question: String,
    image: Option<DataUrl>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    repetition_penalty: Option<f32>,
    max_tokens: u32,
    seed: u64,
    stops: Vec<String>,
    stream: bool,
    include_usage: bool,
    top_logprobs: Option<usize>,
}

fn parse_request(headers: &HeaderMap, body: &[u8], max_image_bytes: usize) -> Result<Ask, OpenAiError> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ct.trim_start().to_ascii_lowercase().starts_with("application/json") {
        return Err(OpenAiError::unsupported_media(format!(
            "Content-Type must be application/json, not `{}`",
            if ct.is_empty() { "(none)" } else { ct }
        )));
    }
    let req: ChatRequest = serde_json::from_slice(body).map_err(|e| {
        OpenAiError::invalid(format!("the body is not a valid chat completion request: {e}")).code("invalid_json")
    })?;
    let model = req.model.filter(|m| !m.trim().is_empty()).ok_or_else(|| {
        OpenAiError::invalid("`model` is required (GET /v1/models lists them)").param("model")
    })?;
    let messages = req.messages.filter(|m| !m.is_empty()).ok_or_else(|| {
        OpenAiError::invalid("`messages` must hold one user message").param("messages")
    })?;
    let mut system = Vec::new();
    let mut user: Option<(String, Vec<String>)> = None;
    for m in &messages {
        match m.role.as_str() {
            "system" | "developer" => {
                let (text, images) = content_of(m.content.as_ref())?;
                if !images.is_empty() {
                    return Err(OpenAiError::invalid("images belong in the user message").param("messages"));
                }
                if !text.trim().is_empty() {
                    system.push(text);
                }
            }
            "user" => {
                if user.is_some() {
                    return Err(OpenAiError::invalid(
                        "send one user message: the hosted checkpoints answer one question about one image (no multi-turn)",
                    )
                    .param("messages"));
                }
                user = Some(content_of(m.content.as_ref())?);
            }
            "assistant" | "tool" | "function" => {
                return Err(OpenAiError::invalid(format!(
                    "`{}` messages are not supported: the hosted checkpoints answer one question about one image (no multi-turn)",
                    m.role
                ))
                .param("messages"));
            }
            other => return Err(OpenAiError::invalid(format!("unknown message role `{other}`")).param("messages")),
        }
    }
    let (text, images) = user.ok_or_else(|| OpenAiError::invalid("there is no user message").param("messages"))?;
    if images.len() > MAX_IMAGES {
        return Err(OpenAiError::invalid(format!(
            "too many images: {} (these models read {MAX_IMAGES} image per question)",
            images.len()
        ))
        .param("messages")
        .code("too_many_images"));
    }
    let mut question = system.join("\n");
    if !question.is_empty() {
        question.push_str("\n\n");
    }
    question.push_str(text.trim());
    if text.trim().is_empty() {
        return Err(OpenAiError::invalid("the user message has no question text").param("messages"));
    }
    if question.chars().count() > MAX_TEXT_CHARS {
        return Err(OpenAiError::invalid(format!(
            "the prompt is {} characters, above the limit of {MAX_TEXT_CHARS}; it is never truncated",
            question.chars().count()
        ))
        .param("messages")
        .code("context_length_exceeded"));
    }
    let image = images.first().map(|u| image::parse_data_url(u, max_image_bytes)).transpose()?;

    if req.n.is_some_and(|n| n != 1) {
        return Err(OpenAiError::invalid("`n` must be 1").param("n"));
    }
    if req.tools.as_ref().is_some_and(|t| !t.is_null()) || req.functions.as_ref().is_some_and(|t| !t.is_null()) {
        return Err(OpenAiError::invalid("tools and function calling are not supported").param("tools"));
    }
    for (v, name) in [(req.presence_penalty, "presence_penalty"), (req.frequency_penalty, "frequency_penalty")] {
        if v.is_some_and(|v| v != 0.0) {
            return Err(OpenAiError::invalid(format!("`{name}` is not supported (use `repetition_penalty`)")).param(name));
        }
    }
    if let Some(t) = req.temperature {
        if !(t.is_finite() && (0.0..=2.0).contains(&t)) {
            return Err(OpenAiError::invalid(format!("`temperature` must be between 0 and 2, got {t}")).param("temperature"));
        }
    }
    if let Some(p) = req.top_p {
        if !(p.is_finite() && p > 0.0 && p <= 1.0) {
            return Err(OpenAiError::invalid(format!("`top_p` must be in (0, 1], got {p}")).param("top_p"));
        }
    }
    if let Some(r) = req.repetition_penalty {
        if !(r.is_finite() && r > 0.0 && r <= 5.0) {
            return Err(OpenAiError::invalid(format!("`repetition_penalty` must be in (0, 5], got {r}")).param("repetition_penalty"));
        }
    }
    let max_tokens = req.max_completion_tokens.or(req.max_tokens).unwrap_or(DEFAULT_MAX_TOKENS);
    if max_tokens == 0 || max_tokens > MAX_NEW_TOKENS {
        return Err(OpenAiError::invalid(format!("`max_tokens` must be 1 to {MAX_NEW_TOKENS}, got {max_tokens}")).param("max_tokens"));
    }
    let stops = match req.stop {
        None => vec![],
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) => v,
    };
    if stops.len() > 4 || stops.iter().any(|s| s.is_empty() || s.chars().count() > 64) {
        return Err(OpenAiError::invalid("`stop` takes up to 4 non-empty strings of at most 64 characters").param("stop"));
    }
    let top_logprobs = match (req.logprobs, req.top_logprobs) {
        (false, Some(n)) if n > 0 => {
            return Err(OpenAiError::invalid("`top_logprobs` needs `logprobs: true`").param("top_logprobs"));
        }
        (false, _) => None,
        (true, n) => {
            let n = n.unwrap_or(0);
            if n > 20 {
                return Err(OpenAiError::invalid(format!("`top_logprobs` must be 0 to 20, got {n}")).param("top_logprobs"));
            }
            Some(n as usize)
        }
    };
    Ok(Ask {
        model,
        question,
        image,
        temperature: req.temperature,
        top_p: req.top_p,
        repetition_penalty: req.repetition_penalty,
        max_tokens,
        seed: req.seed.unwrap_or(0),
        stops,
        stream: req.stream,
        include_usage: req.stream_options.is_some_and(|o| o.include_usage),
        top_logprobs,
    })
}

/// The text and the image URLs of a message's content.
fn content_of(content: Option<&Content>) -> Result<(String, Vec<String>), OpenAiError> {
    match content {
        None => Ok((String::new(), vec![])),
        Some(Content::Text(t)) => Ok((t.clone(), vec![])),
        Some(Content::Parts(parts)) => {
            let mut text = Vec::new();
            let mut images = Vec::new();
            for p in parts {
                match p.get("type").and_then(|t| t.as_str()) {
                    Some("text") => text.push(
                        p.get("text")
                            .and_then(|t| t.as_str())
                            .ok_or_else(|| OpenAiError::invalid("a text part needs a `text` string").param("messages"))?
                            .to_string(),
                    ),
                    Some("image_url") => {
                        let url = p
                            .get("image_url")
                            .and_then(|u| u.get("url").and_then(|u| u.as_str()).or_else(|| u.as_str()))
                            .ok_or_else(|| OpenAiError::invalid("an image_url part needs `image_url.url`").param("messages"))?;
                        images.push(url.to_string());
                    }
                    Some(other) => {
                        return Err(OpenAiError::invalid(format!(
                            "content parts of type `{other}` are not supported (use `text` and `image_url`)"
                        ))
                        .param("messages"))
                    }
                    None => return Err(OpenAiError::invalid("every content part needs a `type`").param("messages")),
                }
            }
            Ok((text.join("\n"), images))
        }
    }
}

/// Emits text up to the first stop string, holding back a tail that could still grow into
/// one (so a stop string split across tokens is never sent).
#[derive(Debug)]
struct StopScanner {
    stops: Vec<String>,
    hold: usize,
    text: String,
    emitted: usize,
}

impl StopScanner {
    fn new(stops: Vec<String>) -> Self {
        let hold = stops.iter().map(|s| s.len()).max().unwrap_or(1).saturating_sub(1);
        Self { stops, hold, text: String::new(), emitted: 0 }
    }

    /// Adds a delta; returns the text safe to send and whether a stop string was reached.
    fn push(&mut self, delta: &str) -> (String, bool) {
        self.text.push_str(delta);
        let from = self.emitted.saturating_sub(self.hold);
        let from = (0..=from).rev().find(|&i| self.text.is_char_boundary(i)).unwrap_or(0);
        let hit = self.stops.iter().filter_map(|s| self.text[from..].find(s.as_str()).map(|i| from + i)).min();
        if let Some(pos) = hit {
            let pos = pos.max(self.emitted);
            let out = self.text[self.emitted..pos].to_string();
            self.text.truncate(pos);
            self.emitted = pos;
            return (out, true);
        }
        let mut safe = self.text.len().saturating_sub(self.hold).max(self.emitted);
        while !self.text.is_char_boundary(safe) {
            safe -= 1;
        }
        let out = self.text[self.emitted..safe].to_string();
        self.emitted = safe;
        (out, false)
    }

    /// The held-back rest, at the end of generation.
    fn finish(&mut self) -> String {
        let out = self.text[self.emitted..].to_string();
        self.emitted = self.text.len();
        out
    }
}

/// One piece of the answer as it is generated.
#[derive(Debug)]
enum Piece {
    Text(String),
    Logprob(serde_json::Value),
}

/// How a generation ended.
#[derive(Debug)]
struct Outcome {
    text: String,
    completion_tokens: usize,
    finish_reason: &'static str,
}

/// The model, the prepared input and its size.
struct Prepared {
    model: Arc<Model>,
    input: MultimodalInput,
    prompt_tokens: usize,
}

/// Loads the model and builds its input: runs on a blocking thread.
fn prepare(pool: &ModelPool, entry: &ModelEntry, question: &str, image: Option<&DataUrl>, max_bytes: usize) -> Result<Prepared, OpenAiError> {
    let img = image.map(|u| image::decode(u, max_bytes)).transpose()?;
    let model = pool.get(entry).map_err(|e| {
        tracing::error!(model = %entry.name, error = %e, "model load failed");
        OpenAiError { status: StatusCode::SERVICE_UNAVAILABLE, ..OpenAiError::internal("the model could not be loaded", &e) }
    })?;
    let input = model.input(question, img.as_ref()).map_err(|e| OpenAiError::invalid(format!("the prompt could not be built: {e}")))?;
    let prompt_tokens = model.prompt_tokens(&input);
    let ctx = model.config.context_len;
    if prompt_tokens >= ctx {
        let image_tokens = if img.is_some() { model.config.num_image_tokens() } else { 0 };
        return Err(OpenAiError::invalid(format!(
            "the prompt is {prompt_tokens} tokens ({image_tokens} of them the image's) but `{}` reads at most {ctx}; \
             shorten the question (prompts are never truncated)",
            entry.name
        ))
        .param("messages")
        .code("context_length_exceeded"));
    }
    Ok(Prepared { model, input, prompt_tokens })
}

fn generate_params(entry: &ModelEntry, ask: &Ask) -> GenerateParams {
    let d = match entry.layout.as_str() {
        "llava_qwen2" => GenerateParams::huatuo_cli(),
        _ => GenerateParams::default(),
    };
    GenerateParams {
        max_new_tokens: ask.max_tokens as usize,
        temperature: ask.temperature.map_or(d.temperature, f64::from),
        top_p: ask.top_p.map_or(d.top_p, f64::from),
        repetition_penalty: ask.repetition_penalty.unwrap_or(d.repetition_penalty),
        seed: ask.seed,
        stop_at_eos: true,
    }
}

fn bytes_of(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

/// Generates on a blocking thread; `emit` gets each piece and returns `false` to stop (the
/// client went away).
fn run(p: &Prepared, params: &GenerateParams, ask_stops: Vec<String>, top_logprobs: Option<usize>, emit: &mut dyn FnMut(Piece) -> bool) -> Result<Outcome, String> {
    let mut scanner = StopScanner::new(ask_stops);
    let mut stopped = false;
    let mut gone = false;
    let mut tokens = 0usize;
    let model = &p.model;
    let gens = model
        .generate_with(std::slice::from_ref(&p.input), params, top_logprobs.unwrap_or(0), &mut |e| {
            tokens += 1;
            if let Some(n) = top_logprobs {
                let top: Vec<serde_json::Value> = e.top[..n.min(e.top.len())]
                    .iter()
                    .map(|(id, lp)| {
                        let t = model.tokenizer.decode(&[*id]).unwrap_or_default();
                        serde_json::json!({ "token": t, "logprob": lp, "bytes": bytes_of(&t) })
                    })
                    .collect();
                let entry = serde_json::json!({ "token": e.text, "logprob": e.logprob, "bytes": bytes_of(e.text), "top_logprobs": top });
                if !emit(Piece::Logprob(entry)) {
                    gone = true;
                    return false;
                }
            }
            let (out, hit) = scanner.push(e.text);
            if !out.is_empty() && !emit(Piece::Text(out)) {
                gone = true;
                return false;
            }
            if hit {
                stopped = true;
                return false;
            }
            true
        })
        .map_err(|e| format!("generation failed: {e}"))?;
    if !stopped && !gone {
        let rest = scanner.finish();
        if !rest.is_empty() {
            emit(Piece::Text(rest));
        }
    }
    let g = gens.into_iter().next();
    let finish_reason = if stopped || g.as_ref().is_some_and(|g| g.stopped_at_eos) { "stop" } else { "length" };
    Ok(Outcome { text: scanner.text.clone(), completion_tokens: tokens, finish_reason })
}

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn completion_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 12];
    rand::rng().fill_bytes(&mut b);
    format!("chatcmpl-{}", hex::encode(b))
}

fn usage(prompt: usize, completion: usize) -> serde_json::Value {
    serde_json::json!({ "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion })
}

/// `POST /v1/chat/completions`.
pub async fn completions(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let started = Instant::now();
    let caller = match authenticate(&state, &headers).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    match handle(&state, &caller, &headers, &body, started).await {
        Ok(res) => res,
        Err((e, model)) => {
            let rec = CallRecord { model, error: Some(e.message.clone()), ..Default::default() };
            log_call(&state, &caller, ENDPOINT, e.status, started, rec).await;
            e.into_response()
        }
    }
}

async fn handle(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    body: &[u8],
    started: Instant,
) -> Result<Response, (OpenAiError, Option<String>)> {
    let max_bytes = state.config.max_upload_bytes;
    let mut ask = parse_request(headers, body, max_bytes).map_err(|e| (e, None))?;
    let model_name = Some(ask.model.clone());
    let fail = |e: OpenAiError| (e, model_name.clone());
    let entry = state
        .ctx
        .store
        .list_models()
        .await
        .map_err(|e| fail(e.into()))?
        .into_iter()
        .find(|m| m.enabled && m.name == ask.model && !crate::remote::is_remote(m))
        .ok_or_else(|| {
            fail(OpenAiError::not_found(format!("model `{}` does not exist or is disabled (GET /v1/models lists them)", ask.model))
                .param("model")
                .code("model_not_found"))
        })?;
    let permit = state.engine.slots.clone().acquire_owned().await.map_err(|e| fail(OpenAiError::internal("the generation gate is closed", e)))?;
    let pool = state.engine.clone();
    // The image (up to the upload limit) moves to the blocking thread; nothing else needs it.
    let (question, image) = (ask.question.clone(), ask.image.take());
    let prep_entry = entry.clone();
    let prepared = tokio::task::spawn_blocking(move || prepare(&pool, &prep_entry, &question, image.as_ref(), max_bytes))
        .await
        .map_err(|e| fail(OpenAiError::internal("preparing the prompt crashed", e)))?
        .map_err(fail)?;
    let params = generate_params(&entry, &ask);
    let id = completion_id();
    let created = now_s();
    let name = entry.name.clone();

    if !ask.stream {
        let (stops, top) = (ask.stops.clone(), ask.top_logprobs);
        let result = tokio::task::spawn_blocking(move || {
            let mut logprobs = Vec::new();
            let out = run(&prepared, &params, stops, top, &mut |p| {
                if let Piece::Logprob(v) = p {
                    logprobs.push(v);
                }
                true
            });
            drop(permit);
            out.map(|o| (o, logprobs, prepared.prompt_tokens))
        })
        .await
        .map_err(|e| fail(OpenAiError::internal("the model crashed while answering", e)))?;
        let (out, logprobs, prompt_tokens) = result.map_err(|e| fail(OpenAiError::internal("the model failed to answer", e)))?;
        let body = serde_json::json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": name,
            "system_fingerprint": null,
            "choices": [{
                "index": 0,
                "message": { "role": "assistant", "content": out.text.trim_start() },
                "logprobs": ask.top_logprobs.map(|_| serde_json::json!({ "content": logprobs })),
                "finish_reason": out.finish_reason,
            }],
            "usage": usage(prompt_tokens, out.completion_tokens),
        });
        let rec = CallRecord {
            model: Some(name),
            prompt_tokens: Some(prompt_tokens as i64),
            completion_tokens: Some(out.completion_tokens as i64),
            error: None,
        };
        log_call(state, caller, ENDPOINT, StatusCode::OK, started, rec).await;
        return Ok(Json(body).into_response());
    }

    // Streamed: chunks over a channel; the blocking generator stops when the client is gone.
    let (tx, rx) = mpsc::channel::<String>(256);
    let chunk = {
        let (id, name) = (id.clone(), name.clone());
        move |delta: serde_json::Value, logprobs: Option<serde_json::Value>, finish: Option<&str>| {
            let c = serde_json::json!({
                "id": id, "object": "chat.completion.chunk", "created": created, "model": name, "system_fingerprint": null,
                "choices": [{ "index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish }],
            });
            format!("data: {c}\n\n")
        }
    };
    let _ = tx.send(chunk(serde_json::json!({ "role": "assistant", "content": "" }), None, None)).await;
    let (state2, caller2) = (state.clone(), caller.clone());
    let (stops, top, include_usage) = (ask.stops.clone(), ask.top_logprobs, ask.include_usage);
    tokio::spawn(async move {
        let gen_tx = tx.clone();
        let chunk2 = chunk.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut leading = true;
            let mut pending_lp: Vec<serde_json::Value> = Vec::new();
            let out = run(&prepared, &params, stops, top, &mut |p| match p {
                Piece::Logprob(v) => {
                    pending_lp.push(v);
                    !gen_tx.is_closed()
                }
                Piece::Text(mut t) => {
                    if leading {
                        t = t.trim_start().to_string();
                        if t.is_empty() {
                            return !gen_tx.is_closed();
                        }
                        leading = false;
                    }
                    let lp = top.map(|_| serde_json::json!({ "content": std::mem::take(&mut pending_lp) }));
                    gen_tx.blocking_send(chunk2(serde_json::json!({ "content": t }), lp, None)).is_ok()
                }
            });
            drop(permit);
            (out, prepared.prompt_tokens)
        })
        .await;
        let (status, rec) = match result {
            Ok((Ok(out), prompt_tokens)) => {
                let _ = tx.send(chunk(serde_json::json!({}), None, Some(out.finish_reason))).await;
                if include_usage {
                    let u = serde_json::json!({
                        "id": id, "object": "chat.completion.chunk", "created": created, "model": name,
                        "system_fingerprint": null, "choices": [], "usage": usage(prompt_tokens, out.completion_tokens),
                    });
                    let _ = tx.send(format!("data: {u}\n\n")).await;
                }
                let rec = CallRecord {
                    model: Some(name.clone()),
                    prompt_tokens: Some(prompt_tokens as i64),
                    completion_tokens: Some(out.completion_tokens as i64),
                    error: tx.is_closed().then(|| "the client went away".to_string()),
                };
                (StatusCode::OK, rec)
            }
            Ok((Err(e), _)) => {
                let err = OpenAiError::internal("the model failed to answer", &e);
                let _ = tx.send(format!("data: {}\n\n", err.body())).await;
                (StatusCode::INTERNAL_SERVER_ERROR, CallRecord { model: Some(name.clone()), error: Some(e), ..Default::default() })
            }
            Err(e) => {
                let err = OpenAiError::internal("the model crashed while answering", &e);
                let _ = tx.send(format!("data: {}\n\n", err.body())).await;
                (StatusCode::INTERNAL_SERVER_ERROR, CallRecord { model: Some(name.clone()), error: Some(e.to_string()), ..Default::default() })
            }
        };
        let _ = tx.send("data: [DONE]\n\n".to_string()).await;
        log_call(&state2, &caller2, ENDPOINT, status, started, rec).await;
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        let s = rx.recv().await?;
        Some((Ok::<_, std::convert::Infallible>(Bytes::from(s)), rx))
    });
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-store"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_strings_split_across_tokens_are_never_sent() {
        let mut s = StopScanner::new(vec!["END".into()]);
        let mut sent = String::new();
        for d in ["The lu", "ng is cl", "ear. E", "N", "D and more"] {
            let (out, hit) = s.push(d);
            sent.push_str(&out);
            if hit {
                break;
            }
        }
        assert_eq!(sent, "The lung is clear. ");
        assert_eq!(s.text, "The lung is clear. ");
        let mut s = StopScanner::new(vec![]);
        assert_eq!(s.push("abc"), ("abc".to_string(), false));
        let mut s = StopScanner::new(vec!["xyz".into()]);
        let (a, _) = s.push("héllo wörld");
        assert_eq!(a + &s.finish(), "héllo wörld");
    }

    #[test]
    fn requests_are_validated_with_named_fields() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        let p = |body: &str| parse_request(&h, body.as_bytes(), 1 << 20);
        let ok = p(r#"{"model": "m", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "Is there a nodule?"}]}], "stop": "."}"#).unwrap();
        assert_eq!(ok.question, "Be brief.\n\nIs there a nodule?");
        assert_eq!((ok.stops.len(), ok.max_tokens, ok.stream), (1, DEFAULT_MAX_TOKENS, false));
        let e = |body: &str| p(body).unwrap_err();
        assert_eq!(e("{").code, Some("invalid_json"));
        assert_eq!(e(r#"{"messages": [{"role": "user", "content": "q"}]}"#).param, Some("model"));
        assert!(e(r#"{"model": "m", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}"#).message.contains("multi-turn"));
        assert_eq!(e(r#"{"model": "m", "messages": [{"role": "user", "content": "q"}], "temperature": 9}"#).param, Some("temperature"));
        assert_eq!(e(r#"{"model": "m", "messages": [{"role": "user", "content": "q"}], "top_logprobs": 3}"#).param, Some("top_logprobs"));
        assert_eq!(e(r#"{"model": "m", "messages": [{"role": "user", "content": "q"}], "n": 2}"#).param, Some("n"));
        let two = r#"{"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}}"#;
        assert_eq!(e(&format!(r#"{{"model": "m", "messages": [{{"role": "user", "content": [{{"type": "text", "text": "q"}}, {two}, {two}]}}]}}"#)).code, Some("too_many_images"));
        assert_eq!(e(r#"{"model": "m", "messages": [{"role": "user", "content": [{"type": "audio"}]}]}"#).param, Some("messages"));
        let mut plain = HeaderMap::new();
        plain.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        assert_eq!(parse_request(&plain, b"{}", 10).unwrap_err().status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
}
