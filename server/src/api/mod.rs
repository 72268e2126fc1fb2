//! The JSON and streaming endpoints that server functions do not fit: scan upload
//! (multipart), serving stored scans, the image a model saw, and the streamed comparison.
//!
//! Every error is `{"error": "..."}` with a 4xx status naming what was wrong; nothing is
//! stored when a request fails.

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use medpo_types::{Role, User};

use crate::AppState;

pub mod compare;
pub mod datasets;
pub mod jobs;
pub mod openai;
pub mod scans;

/// The endpoints, mounted at the root.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/scans", post(scans::upload))
        .route("/api/scans/{id}/seen/{model_id}", get(scans::seen_by_model))
        .route("/scans/{file}", get(scans::serve))
        .route("/api/compare", post(compare::compare))
        .route("/api/snapshots/{id}/pairs.jsonl", get(datasets::export_jsonl))
        .route("/api/snapshots/{id}/llava.zip", get(datasets::export_zip))
        .route("/api/datasets/{id}/upload", post(datasets::upload))
        .route("/api/jobs/{id}/events", get(jobs::events))
        .merge(openai::routes())
}

/// An error answer: status and a message for the page.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }
    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn internal(what: &str, e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "{what}");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{what}; see the server log"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(serde_json::json!({ "error": self.message }))).into_response()
    }
}

impl From<medpo_store::Error> for ApiError {
    fn from(e: medpo_store::Error) -> Self {
        match app::ssr::store_status(&e) {
            Some(status) => Self::new(status, e.to_string()),
            None => Self::internal("the database could not complete the request", e),
        }
    }
}

/// The signed-in user if their role is one of `roles` (admins always), else 401/403.
pub async fn require(state: &AppState, headers: &HeaderMap, roles: &[Role]) -> Result<User, ApiError> {
    let session = app::auth::ssr::session_of(&state.ctx.store, headers).await?;
    app::auth::ssr::allowed(session.map(|s| s.user), roles).map_err(|(status, msg)| ApiError::new(status, msg))
}

/// Roles that may upload scans and ask models.
pub const ASKERS: &[Role] = &[Role::Clinician, Role::Researcher];
