//! Pairwise win-rate matrix, as FastChat's `compute_pairwise_win_fraction`.
//!
//! Rule (protocol `medpo-eval/1`): cell (row, col) = wins of row over col / all votes between
//! them, in either seat; ties and both-bad votes count in the denominator only. A pair that
//! never met has no value.

use serde::{Deserialize, Serialize};

use crate::votes::{models, Vote, Winner};

/// Win counts and fractions between every pair of models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WinRateMatrix {
    pub models: Vec<String>,
    /// `wins[r][c]`: votes where `models[r]` beat `models[c]`.
    pub wins: Vec<Vec<usize>>,
    /// `battles[r][c]`: all votes between them (symmetric).
    pub battles: Vec<Vec<usize>>,
    /// `win_rate[r][c] = wins[r][c] / battles[r][c]`, `None` when they never met.
    pub win_rate: Vec<Vec<Option<f64>>>,
}

/// Builds the matrix, models in the given order (all models of the votes when `order` is
/// empty).
pub fn win_rate_matrix(votes: &[Vote], order: &[String]) -> WinRateMatrix {
    let names = if order.is_empty() { models(votes) } else { order.to_vec() };
    let p = names.len();
    let idx = |m: &str| names.iter().position(|n| n == m);
    let mut wins = vec![vec![0usize; p]; p];
    let mut battles = vec![vec![0usize; p]; p];
    for v in votes {
        let (Some(a), Some(b)) = (idx(&v.model_a), idx(&v.model_b)) else { continue };
        battles[a][b] += 1;
        battles[b][a] += 1;
        match v.winner {
            Winner::A => wins[a][b] += 1,
            Winner::B => wins[b][a] += 1,
            Winner::Tie | Winner::BothBad => {}
        }
    }
    let win_rate = (0..p)
        .map(|r| {
            (0..p)
                .map(|c| (battles[r][c] > 0).then(|| wins[r][c] as f64 / battles[r][c] as f64))
                .collect()
        })
        .collect();
    WinRateMatrix { models: names, wins, battles, win_rate }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_count_in_denominator() {
        let v = |a: &str, b: &str, w| Vote { model_a: a.into(), model_b: b.into(), winner: w, rater: None, item: None };
        let votes = [
            v("x", "y", Winner::A),
            v("y", "x", Winner::B),
            v("x", "y", Winner::Tie),
            v("y", "x", Winner::A),
            v("x", "y", Winner::BothBad),
        ];
        let m = win_rate_matrix(&votes, &[]);
        assert_eq!(m.models, ["x", "y"]);
        assert_eq!(m.win_rate[0][1], Some(2.0 / 5.0));
        assert_eq!(m.win_rate[1][0], Some(1.0 / 5.0));
        assert_eq!(m.win_rate[0][0], None);
    }
}
