//! Votes from the page: the server functions behind the vote panel and the rater's history.
//!
//! `POST /api/vote` (JSON): clinicians (and admins) vote once per comparison; the vote, its
//! error tags and the preference pairs it implies are stored in one transaction, and only
//! then are the blind names revealed.

use leptos::prelude::*;
use leptos::server_fn::codec::Json;
use medpo_types::{ModelEntry, RaterVote, Role, VoteReceipt, VoteRequest};
use serde::{Deserialize, Serialize};

/// What the ask-and-vote workbench needs to know about the visitor and the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchInfo {
    pub role: Option<Role>,
    pub username: Option<String>,
    pub models: Vec<ModelEntry>,
    pub max_upload_mb: usize,
}

impl BenchInfo {
    pub fn can_ask(&self) -> bool {
        matches!(self.role, Some(Role::Admin | Role::Clinician | Role::Researcher))
    }
    pub fn can_vote(&self) -> bool {
        matches!(self.role, Some(Role::Admin | Role::Clinician))
    }
}

#[server]
pub async fn workbench_info() -> Result<BenchInfo, ServerFnError> {
    let c = crate::ssr::ctx()?;
    let user = crate::auth::ssr::session().await?.map(|s| s.user);
    let models = c.store.list_models().await.map_err(crate::ssr::store_err)?.into_iter().filter(|m| m.enabled).collect();
    Ok(BenchInfo {
        role: user.as_ref().map(|u| u.role),
        username: user.map(|u| u.username),
        models,
        max_upload_mb: c.max_upload_mb,
    })
}

/// Records a vote (clinicians and admins), then reveals which model was A and which was B.
#[server(input = Json, endpoint = "vote")]
pub async fn submit_vote(vote: VoteRequest) -> Result<VoteReceipt, ServerFnError> {
    use axum::http::StatusCode;
    use medpo_types::{ErrorTag, NewVote, Winner};

    use crate::ssr::{bad_input, store_err};
    let user = crate::auth::ssr::require(&[Role::Clinician]).await?;
    let c = crate::ssr::ctx()?;
    let comparison = c.store.comparison(vote.comparison_id).await.map_err(store_err)?;
    let answer = |pos: i64| {
        comparison.answers.iter().find(|a| a.position == pos).cloned().ok_or_else(|| {
            bad_input(StatusCode::UNPROCESSABLE_ENTITY, format!("comparison {} has no answer in column {pos}", comparison.id))
        })
    };
    let (a, b) = (answer(vote.a_position)?, answer(vote.b_position)?);
    if vote.rationale.chars().count() > 4000 {
        return Err(bad_input(StatusCode::UNPROCESSABLE_ENTITY, "the rationale is longer than 4000 characters"));
    }
    if vote.corrected_answer.as_deref().is_some_and(|s| s.chars().count() > 4000) {
        return Err(bad_input(StatusCode::UNPROCESSABLE_ENTITY, "the corrected answer is longer than 4000 characters"));
    }
    if let Some(r) = &vote.region {
        let scan = c.store.scan(comparison.scan_id).await.map_err(store_err)?;
        let inside = r.x + r.w <= scan.width as f64 + 1e-6 && r.y + r.h <= scan.height as f64 + 1e-6;
        if !inside {
            return Err(bad_input(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("the marked region {r:?} lies outside the {}×{} scan", scan.width, scan.height),
            ));
        }
    }
    if vote.tags.len() > 2 * medpo_types::ERROR_TAGS.len() {
        return Err(bad_input(StatusCode::UNPROCESSABLE_ENTITY, "too many error tags"));
    }
    let mut tags: Vec<ErrorTag> = Vec::new();
    for t in &vote.tags {
        let answer_id = match t.side {
            'a' | 'A' => a.id,
            'b' | 'B' => b.id,
            other => return Err(bad_input(StatusCode::UNPROCESSABLE_ENTITY, format!("tag side `{other}` is not A or B"))),
        };
        // The same tag twice on one answer: keep the first.
        if !tags.iter().any(|x| x.answer_id == Some(answer_id) && x.tag == t.tag) {
            tags.push(ErrorTag { answer_id: Some(answer_id), tag: t.tag.clone(), severity: t.severity });
        }
    }
    // A fast answer for the common case; the unique index (rater, comparison) decides races.
    if c.store.has_voted(user.id, comparison.id).await.map_err(store_err)? {
        return Err(bad_input(StatusCode::CONFLICT, "you have already voted on this comparison"));
    }
    let stored = c
        .store
        .record_vote(&NewVote {
            comparison_id: comparison.id,
            rater_id: user.id,
            answer_a_id: a.id,
            answer_b_id: b.id,
            winner: vote.winner,
            rationale: vote.rationale.clone(),
            corrected_answer: vote.corrected_answer.clone(),
            region: vote.region,
            blind: comparison.blind,
            tags,
        })
        .await
        .map_err(store_err)?;
    let model_a = c.store.model(a.model_id).await.map_err(store_err)?.name;
    let model_b = c.store.model(b.model_id).await.map_err(store_err)?.name;
    let pairs = match vote.winner {
        Winner::Tie => 0,
        Winner::BothBad => 2,
        _ => 1,
    };
    tracing::info!(vote = stored.id, comparison = comparison.id, rater = %user.username, winner = vote.winner.as_str(), "vote stored");
    Ok(VoteReceipt { vote_id: stored.id, model_a, model_b, model_a_id: a.model_id, model_b_id: b.model_id, pairs })
}

/// The signed-in rater's own votes, newest first (empty when signed out).
#[server]
pub async fn my_votes() -> Result<Vec<RaterVote>, ServerFnError> {
    let Some(s) = crate::auth::ssr::session().await? else { return Ok(vec![]) };
    let c = crate::ssr::ctx()?;
    c.store.rater_history(s.user.id, 100).await.map_err(crate::ssr::store_err)
}
