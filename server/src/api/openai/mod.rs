//! The OpenAI-compatible API under `/v1`, for scripts and tools that speak OpenAI's chat
//! completions (the `openai` Python package, FastChat, LLaMA-Factory, lm-eval harnesses):
//!
//! - `GET /v1/models`: the enabled models of the registry.
//! - `POST /v1/chat/completions`: one question (text plus at most one image as a `data:` URL,
//!   PNG, JPEG or DICOM) to one model, streamed as server-sent events or answered whole, with
//!   `usage` and, on request, `logprobs` ([`chat`]).
//!
//! Calls carry an API key (`Authorization: Bearer mpo_…`), made on the Account page or with
//! `medpo api-key create`; the key acts with its owner's role, is rate-limited
//! (`--api-rate-limit` requests per minute, a token bucket per key) and every call is logged
//! with key, model, tokens and latency (never message or image content). Errors use OpenAI's
//! shape, `{"error": {"message", "type", "param", "code"}}`, with the matching status.
//! Generation shares the model pool (and its concurrency gate) with Compare.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use medpo_types::{ApiKey, Role, User};

use crate::AppState;

pub mod chat;
pub mod image;
pub mod models;

/// The `/v1` endpoints.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/models", get(models::list))
        .route("/v1/chat/completions", post(chat::completions))
}

/// Roles whose keys may ask models (admins always may).
pub const API_ROLES: &[Role] = &[Role::Clinician, Role::Researcher];

/// An error in OpenAI's shape.
#[derive(Debug, Clone)]
pub struct OpenAiError {
    pub status: StatusCode,
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `permission_error`, `not_found_error`,
    /// `rate_limit_error` or `server_error`.
    pub kind: &'static str,
    pub param: Option<&'static str>,
    pub code: Option<&'static str>,
    /// Seconds, for 429.
    pub retry_after: Option<u64>,
}

impl OpenAiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), kind, param: None, code: None, retry_after: None }
    }
    /// 400 about the request.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }
    pub fn param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }
    pub fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "authentication_error", message).code("invalid_api_key")
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "permission_error", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found_error", message)
    }
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error", message)
    }
    pub fn unsupported_media(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_request_error", message)
    }
    pub fn rate_limited(retry_after: u64, per_minute: u32) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            format!("rate limit of {per_minute} requests per minute for this API key reached; retry in {retry_after} s"),
        )
        .code("rate_limit_exceeded");
        e.retry_after = Some(retry_after);
        e
    }
    /// 500: the detail goes to the log, the client gets a generic message.
    pub fn internal(what: &str, e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "{what}");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", format!("{what}; see the server log"))
    }
    /// The JSON body (also sent as an event when a stream fails after it started).
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "error": { "message": self.message, "type": self.kind, "param": self.param, "code": self.code } })
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let mut res = (self.status, Json(self.body())).into_response();
        if let Some(s) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                res.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        res
    }
}

impl From<medpo_store::Error> for OpenAiError {
    fn from(e: medpo_store::Error) -> Self {
        match app::ssr::store_status(&e) {
            Some(status) if status == StatusCode::NOT_FOUND => Self::not_found(e.to_string()),
            Some(status) => Self::new(status, "invalid_request_error", e.to_string()),
            None => Self::internal("the database could not complete the request", e),
        }
    }
}

/// Keys are made and hashed by the app's account code (the Account page and `medpo api-key`
/// share it).
pub use app::auth::ssr::{api_key_hash as key_hash, new_api_key as new_key, API_KEY_PREFIX as KEY_PREFIX};

/// Per-key token buckets: `per_minute` tokens of capacity, refilled continuously.
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<i64, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(per_minute: u32) -> Self {
        Self { per_minute: per_minute.max(1), buckets: Mutex::new(HashMap::new()) }
    }

    pub fn per_minute(&self) -> u32 {
        self.per_minute
    }

    /// Takes one token for `key`; `Err(seconds to wait)` when the bucket is empty.
    pub fn check(&self, key: i64) -> Result<(), u64> {
        let cap = f64::from(self.per_minute);
        let rate = cap / 60.0;
        let now = Instant::now();
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = map.entry(key).or_insert((cap, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(cap);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / rate).ceil().max(1.0) as u64)
        }
    }
}

/// Who is calling: the key and its owner.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key: ApiKey,
    pub user: User,
}

/// Checks the bearer key (401), the owner's role (403) and the key's rate (429).
pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Caller, OpenAiError> {
    let secret = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            OpenAiError::unauthorized(
                "no API key: send `Authorization: Bearer mpo_…` (create a key on the Account page or with `medpo api-key create`)",
            )
        })?;
    let (key, user) = state
        .ctx
        .store
        .active_api_key(&key_hash(secret))
        .await?
        .ok_or_else(|| OpenAiError::unauthorized("the API key is unknown or has been revoked"))?;
    if user.role != Role::Admin && !API_ROLES.contains(&user.role) {
        return Err(OpenAiError::forbidden(format!(
            "the key's owner `{}` is a {}; only clinicians, researchers and admins may ask models",
            user.username,
            user.role.as_str()
        )));
    }
    state.api_limiter.check(key.id).map_err(|wait| OpenAiError::rate_limited(wait, state.api_limiter.per_minute()))?;
    Ok(Caller { key, user })
}

/// What one call did, for the call log.
#[derive(Debug, Clone, Default)]
pub struct CallRecord {
    pub model: Option<String>,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub error: Option<String>,
}

/// Logs a call (tracing and the `api_calls` table); a failure to log is logged, not returned.
pub async fn log_call(state: &AppState, caller: &Caller, endpoint: &str, status: StatusCode, started: Instant, rec: CallRecord) {
    let latency_ms = started.elapsed().as_millis() as i64;
    tracing::info!(
        key = caller.key.id,
        key_prefix = %caller.key.prefix,
        user = %caller.user.username,
        endpoint,
        model = rec.model.as_deref().unwrap_or("-"),
        status = status.as_u16(),
        prompt_tokens = rec.prompt_tokens.unwrap_or(0),
        completion_tokens = rec.completion_tokens.unwrap_or(0),
        latency_ms,
        "api call"
    );
    let call = medpo_store::api_keys::ApiCall {
        key_id: caller.key.id,
        endpoint: endpoint.to_string(),
        model: rec.model,
        status: i64::from(status.as_u16()),
        prompt_tokens: rec.prompt_tokens,
        completion_tokens: rec.completion_tokens,
        latency_ms,
        error: rec.error,
    };
    if let Err(e) = state.ctx.store.log_api_call(&call).await {
        tracing::error!(error = %e, "logging an API call failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_prefixed_and_hashed() {
        let (a, pa, ha) = new_key();
        let (b, _, hb) = new_key();
        assert_ne!(a, b);
        assert!(a.starts_with(KEY_PREFIX) && a.len() == KEY_PREFIX.len() + 40);
        assert!(a.starts_with(&pa) && pa.len() == 12);
        assert_eq!(ha, key_hash(&a));
        assert_ne!(ha, hb);
        assert_eq!(ha.len(), 64);
    }

    #[test]
    fn buckets_allow_bursts_then_refuse() {
        let l = RateLimiter::new(3);
        assert!(l.check(1).is_ok() && l.check(1).is_ok() && l.check(1).is_ok());
        let wait = l.check(1).unwrap_err();
        assert!((1..=20).contains(&wait), "{wait}");
        assert!(l.check(2).is_ok(), "buckets are per key");
    }
}
