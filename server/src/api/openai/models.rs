//! `GET /v1/models`: the enabled models of the registry, in OpenAI's list shape, with the
//! registry's facts (base, objective, parent) beside OpenAI's fields.

use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{authenticate, log_call, CallRecord, OpenAiError};
use crate::AppState;

pub async fn list(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, OpenAiError> {
    let started = Instant::now();
    let caller = authenticate(&state, &headers).await?;
    let models = state.ctx.store.list_models().await?;
    let names: std::collections::HashMap<i64, String> = models.iter().map(|m| (m.id, m.name.clone())).collect();
    let data: Vec<serde_json::Value> = models
        .iter()
        .filter(|m| m.enabled && !crate::remote::is_remote(m))
        .map(|m| {
            serde_json::json!({
                "id": m.name,
                "object": "model",
                "created": m.created_at / 1000,
                "owned_by": "medpo",
                "base": m.base,
                "objective": m.variant,
                "layout": m.layout,
                "parent": m.parent_id.and_then(|p| names.get(&p).cloned()),
            })
        })
        .collect();
    log_call(&state, &caller, "/v1/models", StatusCode::OK, started, CallRecord::default()).await;
    Ok(Json(serde_json::json!({ "object": "list", "data": data })).into_response())
}
