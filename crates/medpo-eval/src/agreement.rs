//! Inter-rater agreement: Cohen's κ, Fleiss' κ and Krippendorff's α (nominal).
//!
//! Rules (protocol `medpo-eval/1`):
//!
//! - **Cohen's κ** (two raters, items both rated): `κ = (p_o − p_e)/(1 − p_e)` with `p_o` the
//!   share of agreeing items and `p_e = Σ_k p1(k)·p2(k)` from each rater's own marginals.
//! - **Fleiss' κ** (any number of raters per item, items with at least two ratings):
//!   `P_i = Σ_k n_ik(n_ik − 1) / (n_i(n_i − 1))`, `P̄` their mean, `p_k` the share of all
//!   ratings in category `k`, `P_e = Σ_k p_k²`, `κ = (P̄ − P_e)/(1 − P_e)`. With unequal
//!   numbers of raters per item this is the usual generalisation.
//! - **Krippendorff's α** (nominal, items with at least two ratings): from the coincidence
//!   matrix `o_ck = Σ_u (pairs (c, k) of ratings in unit u)/(m_u − 1)`, `n_c = Σ_k o_ck`,
//!   `n = Σ_c n_c`: `α = 1 − (n − 1)·Σ_{c≠k} o_ck / Σ_{c≠k} n_c·n_k`.
//! - Each is `None` when undefined (no usable items, or chance agreement of 1).
//!
//! For arena votes ([`vote_agreement`]), votes on the same `item` and the same pair of models
//! are one unit. The pair is put in alphabetical order, swapping `a`/`b` where needed, so a
//! rater who saw the models in the other seats is compared correctly. The labels are
//! first-model, second-model, tie and both-bad.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use serde::{Deserialize, Serialize};

use crate::votes::{Vote, Winner};

/// Cohen's κ of paired labels.
pub fn cohen_kappa<L: Eq + Hash + Clone>(pairs: &[(L, L)]) -> Option<f64> {
    if pairs.is_empty() {
        return None;
    }
    let n = pairs.len() as f64;
    let po = pairs.iter().filter(|(a, b)| a == b).count() as f64 / n;
    let mut m1: HashMap<&L, f64> = HashMap::new();
    let mut m2: HashMap<&L, f64> = HashMap::new();
    for (a, b) in pairs {
        *m1.entry(a).or_default() += 1.0 / n;
        *m2.entry(b).or_default() += 1.0 / n;
    }
    let pe: f64 = m1.iter().map(|(k, p)| p * m2.get(k).copied().unwrap_or(0.0)).sum();
    if (1.0 - pe).abs() < 1e-12 {
        return None;
    }
    Some((po - pe) / (1.0 - pe))
}

/// Fleiss' κ; each inner list holds the labels one item received.
pub fn fleiss_kappa<L: Eq + Hash + Clone>(items: &[Vec<L>]) -> Option<f64> {
    let usable: Vec<&Vec<L>> = items.iter().filter(|i| i.len() >= 2).collect();
    if usable.is_empty() {
        return None;
    }
    let mut totals: HashMap<&L, f64> = HashMap::new();
    let mut all = 0.0;
    let mut p_bar = 0.0;
    for item in &usable {
        let mut counts: HashMap<&L, f64> = HashMap::new();
        for l in item.iter() {
            *counts.entry(l).or_default() += 1.0;
            *totals.entry(l).or_default() += 1.0;
        }
        let ni = item.len() as f64;
        all += ni;
        p_bar += counts.values().map(|c| c * (c - 1.0)).sum::<f64>() / (ni * (ni - 1.0));
    }
    p_bar /= usable.len() as f64;
    let pe: f64 = totals.values().map(|c| (c / all).powi(2)).sum();
    if (1.0 - pe).abs() < 1e-12 {
        return None;
    }
    Some((p_bar - pe) / (1.0 - pe))
}

/// Krippendorff's α for nominal labels; each inner list holds the labels one unit received.
pub fn krippendorff_alpha_nominal<L: Eq + Hash + Clone>(units: &[Vec<L>]) -> Option<f64> {
    let mut o: HashMap<(&L, &L), f64> = HashMap::new();
    for u in units.iter().filter(|u| u.len() >= 2) {
        let m = u.len() as f64;
        for (i, c) in u.iter().enumerate() {
            for (j, k) in u.iter().enumerate() {
                if i != j {
                    *o.entry((c, k)).or_default() += 1.0 / (m - 1.0);
                }
            }
        }
    }
    let mut nc: HashMap<&L, f64> = HashMap::new();
    for ((c, _), v) in &o {
        *nc.entry(*c).or_default() += v;
    }
    let n: f64 = nc.values().sum();
    if n <= 1.0 {
        return None;
    }
    let disagree: f64 = o.iter().filter(|((c, k), _)| c != k).map(|(_, v)| v).sum();
    let sum_all: f64 = nc.values().sum::<f64>().powi(2);
    let sum_same: f64 = nc.values().map(|v| v * v).sum();
    let expected = sum_all - sum_same; // Σ_{c≠k} n_c·n_k
    if expected <= 0.0 {
        return None;
    }
    Some(1.0 - (n - 1.0) * disagree / expected)
}

/// Agreement among arena raters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VoteAgreement {
    pub raters: Vec<String>,
    /// Units (item + model pair) with at least two ratings.
    pub units_multi_rated: usize,
    /// Cohen's κ for every pair of raters with at least one common unit.
    pub cohen: Vec<PairKappa>,
    pub fleiss_kappa: Option<f64>,
    pub krippendorff_alpha: Option<f64>,
}

/// Cohen's κ of one pair of raters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairKappa {
    pub rater_1: String,
    pub rater_2: String,
    pub common_units: usize,
    pub kappa: Option<f64>,
}

/// Agreement of votes that carry `rater` and `item`; others are ignored. A rater voting
/// twice on the same unit counts once (the last vote).
pub fn vote_agreement(votes: &[Vote]) -> VoteAgreement {
    // unit → rater → label
    let mut units: BTreeMap<(String, String, String), BTreeMap<String, Winner>> = BTreeMap::new();
    for v in votes {
        let (Some(rater), Some(item)) = (&v.rater, &v.item) else { continue };
        let (first, second, w) = if v.model_a <= v.model_b {
            (v.model_a.clone(), v.model_b.clone(), v.winner)
        } else {
            (v.model_b.clone(), v.model_a.clone(), v.winner.swapped())
        };
        units.entry((item.clone(), first, second)).or_default().insert(rater.clone(), w);
    }
    let mut raters: Vec<String> = units.values().flat_map(|m| m.keys().cloned()).collect();
    raters.sort();
    raters.dedup();
    let multi: Vec<Vec<Winner>> = units
        .values()
        .filter(|m| m.len() >= 2)
        .map(|m| m.values().copied().collect())
        .collect();
    let mut cohen = Vec::new();
    for (i, r1) in raters.iter().enumerate() {
        for r2 in &raters[i + 1..] {
            let pairs: Vec<(Winner, Winner)> = units
                .values()
                .filter_map(|m| Some((*m.get(r1)?, *m.get(r2)?)))
                .collect();
            if !pairs.is_empty() {
                cohen.push(PairKappa {
                    rater_1: r1.clone(),
                    rater_2: r2.clone(),
                    common_units: pairs.len(),
                    kappa: cohen_kappa(&pairs),
                });
            }
        }
    }
    VoteAgreement {
        raters,
        units_multi_rated: multi.len(),
        cohen,
        fleiss_kappa: fleiss_kappa(&multi),
        krippendorff_alpha: krippendorff_alpha_nominal(&multi),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_case_hand_computed() {
        // Units (a,a), (a,b), (b,b).
        // Cohen: p_o = 2/3, p_e = 2/3·1/3 + 1/3·2/3 = 4/9, κ = (2/9)/(5/9) = 0.4.
        let pairs = [('a', 'a'), ('a', 'b'), ('b', 'b')];
        assert!((cohen_kappa(&pairs).unwrap() - 0.4).abs() < 1e-12);
        let units: Vec<Vec<char>> = pairs.iter().map(|(x, y)| vec![*x, *y]).collect();
        // Fleiss: P̄ = 2/3, P_e = ½, κ = 1/3.
        assert!((fleiss_kappa(&units).unwrap() - 1.0 / 3.0).abs() < 1e-12);
        // α: o_aa = o_bb = 2, o_ab = o_ba = 1, n = 6; α = 1 − 5·2/18 = 4/9.
        assert!((krippendorff_alpha_nominal(&units).unwrap() - 4.0 / 9.0).abs() < 1e-12);
    }

    #[test]
    fn fleiss_wikipedia_example() {
        // Fleiss (1971) as on Wikipedia: 10 items, 14 raters, 5 categories; κ = 0.210.
        let table = [
            [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
            [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
        ];
        let items: Vec<Vec<usize>> = table
            .iter()
            .map(|row| row.iter().enumerate().flat_map(|(k, &c)| std::iter::repeat_n(k, c)).collect())
            .collect();
        assert!((fleiss_kappa(&items).unwrap() - 0.20993).abs() < 1e-5);
    }

    #[test]
    fn undefined_and_perfect() {
        assert_eq!(cohen_kappa::<u8>(&[]), None);
        assert_eq!(cohen_kappa(&[(1, 1), (1, 1)]), None);
        assert_eq!(cohen_kappa(&[(1, 1), (2, 2)]), Some(1.0));
        assert_eq!(krippendorff_alpha_nominal(&[vec![1, 1], vec![2, 2]]), Some(1.0));
    }

    #[test]
    fn votes_with_swapped_seats_agree() {
        let v = |a: &str, b: &str, w, r: &str, i: &str| Vote {
            model_a: a.into(), model_b: b.into(), winner: w, rater: Some(r.into()), item: Some(i.into()),
        };
        let votes = [
            v("x", "y", Winner::A, "r1", "q1"),
            v("y", "x", Winner::B, "r2", "q1"), // same judgement, seats swapped
            v("x", "y", Winner::Tie, "r1", "q2"),
            v("x", "y", Winner::B, "r2", "q2"),
            v("x", "y", Winner::B, "r1", "q3"),
            v("x", "y", Winner::B, "r2", "q3"),
        ];
        let a = vote_agreement(&votes);
        assert_eq!(a.raters, ["r1", "r2"]);
        assert_eq!(a.units_multi_rated, 3);
        // r1: A, Tie, B; r2: A, B, B. p_o = 2/3; p_e = 1/3·1/3 + 1/3·2/3 + 1/3·0 = 1/3; κ = ½.
        assert!((a.cohen[0].kappa.unwrap() - 0.5).abs() < 1e-12);
    }
}
