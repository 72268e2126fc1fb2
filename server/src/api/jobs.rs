//! `GET /api/jobs/{id}/events`: a training job's progress as server-sent events, for the live
//! charts of the job page.
//!
//! Events: `metrics` (a JSON array of `{step, metrics}` rows, each batch's `id` is its last
//! step, so a reconnecting browser resumes with `Last-Event-ID`), `log` (a JSON array of the
//! job log's new lines) and `status` (the job row's status, step, total, error and resulting
//! model, sent when it changes). The stream ends
//! after the job's final status. It reads the database, so it follows a job run by any worker,
//! across server restarts.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::stream::{self, Stream, StreamExt};
use medpo_types::Role;

use super::{require, ApiError};
use crate::AppState;

#[derive(serde::Deserialize, Default)]
pub struct EventsQuery {
    /// Send only rows after this step (the page passes what it already drew).
    after: Option<i64>,
    /// Send only log lines after this many (the page passes how many it has).
    log_after: Option<usize>,
}

struct Cursor {
    store: medpo_store::Store,
    id: i64,
    after: i64,
    last_status: Option<serde_json::Value>,
    ended: bool,
    first: bool,
    log: std::path::PathBuf,
    log_sent: usize,
}

pub async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<i64>,
    Query(q): Query<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    require(&state, &headers, &[Role::Viewer, Role::Clinician, Role::Researcher]).await?;
    state.ctx.store.job(id).await?;
    let resume = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<i64>().ok());
    let cursor = Cursor {
        store: state.ctx.store.clone(),
        id,
        after: resume.or(q.after).unwrap_or(0),
        last_status: None,
        ended: false,
        first: true,
        log: app::training_config::job_log(&state.ctx.data_dir, id),
        log_sent: q.log_after.unwrap_or(0),
    };
    let s = stream::unfold(cursor, |mut c| async move {
        if c.ended {
            return None;
        }
        if !c.first {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        c.first = false;
        let mut out = Vec::new();
        match c.store.job_metrics(c.id, c.after).await {
            Ok(rows) if !rows.is_empty() => {
                c.after = rows.last().map_or(c.after, |r| r.step);
                let data = serde_json::to_string(&rows).unwrap_or_else(|_| "[]".into());
                out.push(Event::default().event("metrics").id(c.after.to_string()).data(data));
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(job = c.id, error = %e, "cannot read training metrics for the live chart"),
        }
        // New lines of the job's log (read whole: it is a few hundred lines).
        if let Ok(text) = tokio::fs::read_to_string(&c.log).await {
            let lines: Vec<&str> = text.lines().collect();
            if lines.len() > c.log_sent {
                let new = &lines[c.log_sent.max(lines.len().saturating_sub(500))..];
                out.push(Event::default().event("log").data(serde_json::to_string(new).unwrap_or_else(|_| "[]".into())));
                c.log_sent = lines.len();
            }
        }
        match c.store.job(c.id).await {
            Ok(job) => {
                let status = serde_json::json!({
                    "status": job.status.as_str(),
                    "step": job.step,
                    "total_steps": job.total_steps,
                    "error": job.error,
                    "result_model_id": job.result_model_id,
                    "cancel_requested": job.cancel_requested,
                });
                if c.last_status.as_ref() != Some(&status) {
                    out.push(Event::default().event("status").data(status.to_string()));
                    c.last_status = Some(status);
                }
                // Final, and every row up to its last step sent: end the stream.
                if job.status.is_final() && c.after >= job.step {
                    c.ended = true;
                }
            }
            Err(e) => {
                tracing::warn!(job = c.id, error = %e, "cannot read a training job for the live chart");
                c.ended = true;
            }
        }
        Some((out, c))
    })
    .flat_map(|events| stream::iter(events.into_iter().map(Ok)));
    Ok(Sse::new(s).keep_alive(KeepAlive::default()))
}
