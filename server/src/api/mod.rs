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
pub mod scans;

/// The endpoints, mounted at the root.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/scans", post(scans::upload))
        .route("/api/scans/{id}/seen/{model_id}", get(scans::seen_by_model))
        .route("/scans/{file}", get(scans::serve))
        .route("/api/compare", post(compare::compare))
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
        use medpo_store::Error as E;
        match &e {
            E::NotFound { .. } => Self::new(StatusCode::NOT_FOUND, e.to_string()),
            E::Invalid { .. } => Self::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
            _ if e.is_conflict() => Self::new(StatusCode::CONFLICT, e.to_string()),
            _ => Self::internal("the database could not complete the request", e),
        }
    }
}

/// The signed-in user if their role is one of `roles` (admins always), else 401/403.
pub async fn require(state: &AppState, headers: &HeaderMap, roles: &[Role]) -> Result<User, ApiError> {
    let session = app::auth::ssr::session_of(&state.ctx.store, headers).await?;
    match session {
        None => Err(ApiError::new(StatusCode::UNAUTHORIZED, "sign in first (your session may have expired)")),
        Some(s) if s.user.role == Role::Admin || roles.contains(&s.user.role) => Ok(s.user),
        Some(s) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "a {} account cannot do this; it needs one of: {}",
                s.user.role.as_str(),
                roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
            ),
        )),
    }
}

/// Roles that may upload scans and ask models.
pub const ASKERS: &[Role] = &[Role::Clinician, Role::Researcher];
