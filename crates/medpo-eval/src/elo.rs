//! Online Elo, as FastChat's `compute_elo`.
//!
//! Rules (protocol `medpo-eval/1`): every model starts at 1000; votes are applied in file
//! order; with expected score `E_a = 1 / (1 + 10^((R_b − R_a)/400))` and actual score
//! `S_a` = 1 (A wins), 0 (B wins) or ½ (tie or both-bad), `R_a += K·(S_a − E_a)` and
//! `R_b += K·((1 − S_a) − (1 − E_a))`, with `K = 4`. Online Elo depends on vote order; the
//! Bradley–Terry fit does not, which is why the leaderboard uses the latter.

use std::collections::BTreeMap;

use crate::votes::Vote;

/// FastChat's K factor.
pub const K: f64 = 4.0;

/// Online Elo ratings, best first.
pub fn online_elo(votes: &[Vote], k: f64) -> Vec<(String, f64)> {
    let mut r: BTreeMap<String, f64> = BTreeMap::new();
    for v in votes {
        let ra = *r.get(&v.model_a).unwrap_or(&1000.0);
        let rb = *r.get(&v.model_b).unwrap_or(&1000.0);
        let ea = 1.0 / (1.0 + 10f64.powf((rb - ra) / 400.0));
        let sa = v.winner.score_a();
        r.insert(v.model_a.clone(), ra + k * (sa - ea));
        r.insert(v.model_b.clone(), rb + k * ((1.0 - sa) - (1.0 - ea)));
    }
    let mut out: Vec<(String, f64)> = r.into_iter().collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::votes::Winner;

    #[test]
    fn hand_computed() {
        let v = |a: &str, b: &str, w| Vote { model_a: a.into(), model_b: b.into(), winner: w, rater: None, item: None };
        // First vote from equal ratings: E = ½, winner +2, loser −2.
        let r = online_elo(&[v("x", "y", Winner::A)], K);
        assert_eq!(r, vec![("x".to_string(), 1002.0), ("y".to_string(), 998.0)]);
        // Then a tie: E_x = 1/(1 + 10^(−4/400)) = 0.505756; x moves by 4·(0.5 − 0.505756).
        let r = online_elo(&[v("x", "y", Winner::A), v("x", "y", Winner::Tie)], K);
        let ex = 1.0 / (1.0 + 10f64.powf(-4.0 / 400.0));
        assert!((r[0].1 - (1002.0 + 4.0 * (0.5 - ex))).abs() < 1e-12);
        assert!((r[0].1 + r[1].1 - 2000.0).abs() < 1e-9);
    }
}
