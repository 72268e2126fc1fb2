//! Everything the arena leaderboard shows, from one list of votes, as one storable value.

use serde::{Deserialize, Serialize};

use crate::agreement::{vote_agreement, VoteAgreement};
use crate::bootstrap_ci::BootstrapConfig;
use crate::bradley_terry::{bt_ratings, BtRating};
use crate::elo::{online_elo, K};
use crate::error::Result;
use crate::votes::Vote;
use crate::win_rate::{win_rate_matrix, WinRateMatrix};

/// Arena ratings, win rates and rater agreement of a set of votes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArenaReport {
    pub protocol_version: String,
    pub votes: usize,
    pub bootstrap: BootstrapConfig,
    /// Best first, with 95% intervals.
    pub bradley_terry: Vec<BtRating>,
    /// Online Elo (K = 4, votes in the given order), best first.
    pub online_elo: Vec<(String, f64)>,
    /// Models in Bradley–Terry order.
    pub win_rate: WinRateMatrix,
    pub agreement: VoteAgreement,
}

/// Computes the report (see [`bradley_terry`](crate::bradley_terry),
/// [`elo`](crate::elo), [`win_rate`](crate::win_rate), [`agreement`](crate::agreement)).
pub fn arena_report(votes: &[Vote], cfg: &BootstrapConfig) -> Result<ArenaReport> {
    let bradley_terry = bt_ratings(votes, cfg)?;
    let order: Vec<String> = bradley_terry.iter().map(|r| r.model.clone()).collect();
    Ok(ArenaReport {
        protocol_version: crate::PROTOCOL_VERSION.to_string(),
        votes: votes.len(),
        bootstrap: *cfg,
        online_elo: online_elo(votes, K),
        win_rate: win_rate_matrix(votes, &order),
        agreement: vote_agreement(votes),
        bradley_terry,
    })
}
