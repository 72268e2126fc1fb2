//! Bradley–Terry ratings by maximum likelihood, with bootstrap confidence intervals.
//!
//! Rules (protocol `medpo-eval/1`), following FastChat's `compute_mle_elo`
//! (`fastchat/serve/monitor/elo_analysis.py`):
//!
//! - **Ties and both-bad.** Every vote is weighted into a pairwise table: a win adds 2 to
//!   the winner's row against the loser, a tie *or a both-bad vote* adds 1 to each side
//!   (FastChat: `ptbl_win = 2·a_win + 2·b_win.T + tie + tie.T`, with `tie (bothbad)` counted
//!   as a tie). So a tie is half a win for each model, and both-bad carries no separate
//!   information about the pair's order.
//! - **Model.** `P(i beats j) = 1 / (1 + 10^((R_j − R_i)/400))`, fitted by weighted logistic
//!   maximum likelihood on that table. We solve it by Newton's method on natural-log
//!   strengths `θ` with a ridge penalty `λ/2·Σθ²`, `λ = 1e-3` (FastChat uses an unpenalised
//!   fit): negligible with real vote counts, it keeps the fit finite when a model never
//!   loses and makes `Σθ = 0`, so ratings are centred on 1000.
//! - **Scale.** `R = 1000 + 400·θ / ln 10`.
//! - **Intervals.** `rounds` bootstrap rounds (default 1,000) resample the votes with
//!   replacement (FastChat's `battles.sample(frac=1.0, replace=True)`) and refit; the
//!   interval is the percentile interval of each model's refitted ratings. The rating shown
//!   is the fit on all votes, not the bootstrap median.

use serde::{Deserialize, Serialize};

use crate::bootstrap_ci::{percentile_interval, rng, BootstrapConfig, IndexSampler};
use crate::error::{Error, Result};
use crate::votes::{models, Vote, Winner};

/// Ridge penalty on natural-log strengths.
pub const RIDGE: f64 = 1e-3;
/// Rating of an average model.
pub const INIT_RATING: f64 = 1000.0;
/// Rating points per factor 10 in odds.
pub const SCALE: f64 = 400.0;

/// One model's Bradley–Terry rating.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BtRating {
    pub model: String,
    pub rating: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub votes: usize,
    pub wins: usize,
    pub losses: usize,
    pub ties: usize,
    pub both_bad: usize,
}

/// A vote with its models as indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexedVote {
    pub a: usize,
    pub b: usize,
    pub winner: Winner,
}

/// FastChat's weighted win table (`p × p`, row-major): `w[i][j]` = 2·(wins of i over j) +
/// (ties and both-bad votes between them).
pub fn weighted_table<'a>(votes: impl IntoIterator<Item = &'a IndexedVote>, p: usize) -> Vec<f64> {
    let mut w = vec![0.0; p * p];
    for v in votes {
        let (a, b) = (v.a, v.b);
        match v.winner {
            Winner::A => w[a * p + b] += 2.0,
            Winner::B => w[b * p + a] += 2.0,
            Winner::Tie | Winner::BothBad => {
                w[a * p + b] += 1.0;
                w[b * p + a] += 1.0;
            }
        }
    }
    w
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn objective(w: &[f64], theta: &[f64], p: usize) -> f64 {
    let mut ll = 0.0;
    for i in 0..p {
        for j in 0..p {
            let wij = w[i * p + j];
            if wij > 0.0 {
                // log σ(x) = −ln(1 + e^(−x)), computed stably.
                let x = theta[i] - theta[j];
                ll -= wij * (if x > 0.0 { (-x).exp().ln_1p() } else { -x + x.exp().ln_1p() });
            }
        }
    }
    ll - 0.5 * RIDGE * theta.iter().map(|t| t * t).sum::<f64>()
}

/// Fits natural-log strengths `θ` to a weighted table (`p × p`, row-major).
pub fn fit_strengths(w: &[f64], p: usize) -> Vec<f64> {
    let mut theta = vec![0.0; p];
    let mut obj = objective(w, &theta, p);
    for _ in 0..100 {
        let mut g = vec![0.0; p];
        let mut h = vec![0.0; p * p]; // negative Hessian
        for i in 0..p {
            g[i] -= RIDGE * theta[i];
            h[i * p + i] += RIDGE;
            for j in 0..p {
                if i == j {
                    continue;
                }
                let n = w[i * p + j] + w[j * p + i];
                if n == 0.0 {
                    continue;
                }
                let s = sigmoid(theta[i] - theta[j]);
                g[i] += w[i * p + j] - n * s;
                let c = n * s * (1.0 - s);
                h[i * p + i] += c;
                h[i * p + j] -= c;
            }
        }
        let Some(step) = solve(h, g, p) else { break };
        // Damped Newton: halve the step until the objective does not decrease.
        let mut t = 1.0;
        let mut accepted = false;
        for _ in 0..30 {
            let cand: Vec<f64> = theta.iter().zip(&step).map(|(a, d)| a + t * d).collect();
            let o = objective(w, &cand, p);
            if o >= obj - 1e-12 {
                theta = cand;
                obj = o;
                accepted = true;
                break;
            }
            t /= 2.0;
        }
        let size = step.iter().fold(0.0f64, |m, d| m.max(d.abs())) * t;
        if !accepted || size < 1e-10 {
            break;
        }
    }
    theta
}

/// Solves `a·x = b` (symmetric positive definite, `p × p`) by Gaussian elimination with
/// partial pivoting; `None` when singular.
fn solve(mut a: Vec<f64>, mut b: Vec<f64>, p: usize) -> Option<Vec<f64>> {
    for col in 0..p {
        let piv = (col..p).max_by(|&x, &y| a[x * p + col].abs().total_cmp(&a[y * p + col].abs()))?;
        if a[piv * p + col].abs() < 1e-300 {
            return None;
        }
        if piv != col {
            for k in 0..p {
                a.swap(col * p + k, piv * p + k);
            }
            b.swap(col, piv);
        }
        for row in col + 1..p {
            let f = a[row * p + col] / a[col * p + col];
            if f != 0.0 {
                for k in col..p {
                    a[row * p + k] -= f * a[col * p + k];
                }
                b[row] -= f * b[col];
            }
        }
    }
    let mut x = vec![0.0; p];
    for row in (0..p).rev() {
        let s: f64 = (row + 1..p).map(|k| a[row * p + k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row * p + row];
    }
    Some(x)
}

/// Converts natural-log strengths to ratings.
pub fn to_rating(theta: f64) -> f64 {
    INIT_RATING + SCALE * theta / std::f64::consts::LN_10
}

/// Bradley–Terry ratings with bootstrap intervals, best first.
pub fn bt_ratings(votes: &[Vote], cfg: &BootstrapConfig) -> Result<Vec<BtRating>> {
    if votes.is_empty() {
        return Err(Error::Invalid("no votes to rate".into()));
    }
    let names = models(votes);
    let p = names.len();
    let index = |m: &str| names.binary_search_by(|n| n.as_str().cmp(m)).unwrap_or(0);
    let indexed: Vec<IndexedVote> = votes
        .iter()
        .map(|v| IndexedVote { a: index(&v.model_a), b: index(&v.model_b), winner: v.winner })
        .collect();
    let theta = fit_strengths(&weighted_table(&indexed, p), p);

    let mut r = rng(cfg.seed, "bradley_terry");
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(cfg.rounds); p];
    let n = indexed.len();
    let dist = IndexSampler::new(n).ok_or_else(|| Error::Invalid("no votes to rate".into()))?;
    for _ in 0..cfg.rounds {
        let t = fit_strengths(&weighted_table((0..n).map(|_| &indexed[dist.draw(&mut r)]), p), p);
        for (s, x) in samples.iter_mut().zip(t) {
            s.push(to_rating(x));
        }
    }

    let mut out: Vec<BtRating> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let (ci_low, ci_high) = if cfg.rounds > 0 {
                percentile_interval(&mut samples[i], cfg.level)
            } else {
                (f64::NAN, f64::NAN)
            };
            let mut rating = BtRating {
                model: name.clone(),
                rating: to_rating(theta[i]),
                ci_low,
                ci_high,
                votes: 0,
                wins: 0,
                losses: 0,
                ties: 0,
                both_bad: 0,
            };
            for v in votes {
                let side = if v.model_a == *name {
                    v.winner
                } else if v.model_b == *name {
                    v.winner.swapped()
                } else {
                    continue;
                };
                rating.votes += 1;
                match side {
                    Winner::A => rating.wins += 1,
                    Winner::B => rating.losses += 1,
                    Winner::Tie => rating.ties += 1,
                    Winner::BothBad => rating.both_bad += 1,
                }
            }
            rating
        })
        .collect();
    out.sort_by(|a, b| b.rating.total_cmp(&a.rating));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vote(a: &str, b: &str, w: Winner) -> Vote {
        Vote { model_a: a.into(), model_b: b.into(), winner: w, rater: None, item: None }
    }

    #[test]
    fn two_models_closed_form() {
        // 30 wins for x, 10 for y, 20 ties: weighted 2·30 + 20 = 80 vs 2·10 + 20 = 40, so
        // P(x beats y) = 2/3 and θx − θy = ln 2 (up to the tiny ridge).
        let mut votes = Vec::new();
        votes.extend((0..30).map(|_| vote("x", "y", Winner::A)));
        votes.extend((0..10).map(|_| vote("y", "x", Winner::A)));
        votes.extend((0..10).map(|_| vote("x", "y", Winner::Tie)));
        votes.extend((0..10).map(|_| vote("y", "x", Winner::BothBad)));
        let cfg = BootstrapConfig { rounds: 200, ..Default::default() };
        let r = bt_ratings(&votes, &cfg).unwrap();
        assert_eq!(r[0].model, "x");
        let gap = r[0].rating - r[1].rating;
        let expected = 400.0 * 2f64.ln() / 10f64.ln(); // 120.41
        assert!((gap - expected).abs() < 0.1, "{gap}");
        assert!(((r[0].rating + r[1].rating) / 2.0 - 1000.0).abs() < 1e-6);
        assert_eq!((r[0].wins, r[0].losses, r[0].ties, r[0].both_bad), (30, 10, 10, 10));
        assert!(r[0].ci_low < r[0].rating && r[0].rating < r[0].ci_high);
    }

    #[test]
    fn undefeated_model_stays_finite() {
        let votes: Vec<Vote> = (0..20).map(|_| vote("x", "y", Winner::A)).collect();
        let r = bt_ratings(&votes, &BootstrapConfig { rounds: 10, ..Default::default() }).unwrap();
        assert!(r[0].rating.is_finite() && r[0].rating > r[1].rating);
    }
}
