//! Paired tests between two models scored on the same items.
//!
//! Rules (protocol `medpo-eval/1`):
//!
//! - **Paired bootstrap** (per-item scores `a_i`, `b_i` of the same items): the observed
//!   difference is `mean(a) − mean(b)`. Each round resamples item indices with replacement
//!   (the same indices for both models) and recomputes the difference `d*`. The interval is
//!   the percentile interval of `d*` (see [`bootstrap_ci`](crate::bootstrap_ci)); the
//!   two-sided p-value is `min(1, 2·min(#{d* ≤ 0}, #{d* ≥ 0}) / rounds)`.
//! - **McNemar** (binary correctness of closed questions): `b` = items A got right and B
//!   wrong, `c` = the reverse. The exact test is the two-sided binomial test of `b` out of
//!   `b + c` at ½: `p = min(1, 2·P(X ≤ min(b, c)))`. The asymptotic test with continuity
//!   correction uses `χ² = (|b − c| − 1)² / (b + c)` on 1 degree of freedom. With `b + c = 0`
//!   both p-values are 1.

use serde::{Deserialize, Serialize};

use crate::bootstrap_ci::{percentile_interval, rng, BootstrapConfig, IndexSampler};
use crate::error::{Error, Result};

/// Result of a paired bootstrap.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PairedBootstrap {
    /// `mean(a) − mean(b)`.
    pub mean_diff: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub p_value: f64,
    pub n: usize,
}

/// Paired bootstrap of `mean(a) − mean(b)`.
pub fn paired_bootstrap(a: &[f64], b: &[f64], cfg: &BootstrapConfig, stream: &str) -> Result<PairedBootstrap> {
    if a.len() != b.len() {
        return Err(Error::Invalid(format!(
            "paired bootstrap needs the same items: {} scores vs {}",
            a.len(),
            b.len()
        )));
    }
    let n = a.len();
    if n == 0 {
        return Err(Error::Invalid("paired bootstrap of zero items".into()));
    }
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let mean_diff = d.iter().sum::<f64>() / n as f64;
    let mut r = rng(cfg.seed, stream);
    let dist = IndexSampler::new(n).ok_or_else(|| Error::Invalid("paired bootstrap of zero items".into()))?;
    let mut vals = Vec::with_capacity(cfg.rounds);
    let (mut le, mut ge) = (0usize, 0usize);
    for _ in 0..cfg.rounds {
        let mut s = 0.0;
        for _ in 0..n {
            s += d[dist.draw(&mut r)];
        }
        let m = s / n as f64;
        // Differences within rounding of zero count on both sides.
        if m <= 1e-12 {
            le += 1;
        }
        if m >= -1e-12 {
            ge += 1;
        }
        vals.push(m);
    }
    let (ci_low, ci_high) = percentile_interval(&mut vals, cfg.level);
    let p_value = if cfg.rounds == 0 {
        1.0
    } else {
        (2.0 * le.min(ge) as f64 / cfg.rounds as f64).min(1.0)
    };
    Ok(PairedBootstrap { mean_diff, ci_low, ci_high, p_value, n })
}

/// Result of McNemar's test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct McNemar {
    /// Items A got right and B wrong.
    pub a_only: u64,
    /// Items B got right and A wrong.
    pub b_only: u64,
    pub p_exact: f64,
    pub chi2_cc: f64,
    pub p_chi2_cc: f64,
}

/// McNemar's test on paired correctness.
pub fn mcnemar(a: &[bool], b: &[bool]) -> Result<McNemar> {
    if a.len() != b.len() {
        return Err(Error::Invalid(format!(
            "McNemar needs the same items: {} vs {}",
            a.len(),
            b.len()
        )));
    }
    let a_only = a.iter().zip(b).filter(|(x, y)| **x && !**y).count() as u64;
    let b_only = a.iter().zip(b).filter(|(x, y)| !**x && **y).count() as u64;
    Ok(mcnemar_counts(a_only, b_only))
}

/// McNemar's test from the discordant counts.
pub fn mcnemar_counts(a_only: u64, b_only: u64) -> McNemar {
    let n = a_only + b_only;
    if n == 0 {
        return McNemar { a_only, b_only, p_exact: 1.0, chi2_cc: 0.0, p_chi2_cc: 1.0 };
    }
    let k = a_only.min(b_only);
    let p_exact = (2.0 * binomial_half_cdf(n, k)).min(1.0);
    let diff = (a_only as f64 - b_only as f64).abs();
    let chi2_cc = (diff - 1.0).max(0.0).powi(2) / n as f64;
    McNemar { a_only, b_only, p_exact, chi2_cc, p_chi2_cc: chi2_sf_1df(chi2_cc) }
}

/// `P(X ≤ k)` for `X ~ Binomial(n, ½)`, summed in log space.
pub fn binomial_half_cdf(n: u64, k: u64) -> f64 {
    let ln2 = std::f64::consts::LN_2;
    let mut log_pmf = -(n as f64) * ln2; // P(X = 0)
    let mut logs = vec![log_pmf];
    for j in 1..=k.min(n) {
        log_pmf += ((n - j + 1) as f64).ln() - (j as f64).ln();
        logs.push(log_pmf);
    }
    let max = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let s: f64 = logs.iter().map(|l| (l - max).exp()).sum();
    (max + s.ln()).exp().min(1.0)
}

/// Upper tail of χ² with one degree of freedom: `erfc(sqrt(x/2))`.
pub fn chi2_sf_1df(x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    erfc((x / 2.0).sqrt())
}

/// Complementary error function (Numerical Recipes `erfcc`, fractional error < 1.2e-7).
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let ans = t
        * (-z * z - 1.26551223
            + t * (1.00002368
                + t * (0.37409196
                    + t * (0.09678418
                        + t * (-0.18628806
                            + t * (0.27886807
                                + t * (-1.13520398
                                    + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
            .exp();
    if x >= 0.0 {
        ans
    } else {
        2.0 - ans
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_binomial_hand_computed() {
        // b = 1, c = 9: P(X ≤ 1) = (1 + 10)/1024, two-sided 22/1024.
        let m = mcnemar_counts(1, 9);
        assert!((m.p_exact - 22.0 / 1024.0).abs() < 1e-12);
        // χ² = (8 − 1)²/10 = 4.9, p = 0.02686 (scipy.stats.chi2.sf(4.9, 1)).
        assert!((m.chi2_cc - 4.9).abs() < 1e-12);
        assert!((m.p_chi2_cc - 0.026857).abs() < 1e-5);
        // Symmetric and capped at 1.
        assert_eq!(mcnemar_counts(5, 5).p_exact, 1.0);
        assert_eq!(mcnemar_counts(0, 0).p_chi2_cc, 1.0);
        // Large n does not underflow: b = 1000, c = 1200.
        let m = mcnemar_counts(1000, 1200);
        assert!(m.p_exact > 0.0 && m.p_exact < 1e-3, "{m:?}");
    }

    #[test]
    fn chi2_critical_value() {
        assert!((chi2_sf_1df(3.841459) - 0.05).abs() < 1e-6);
    }

    #[test]
    fn from_vectors() {
        let a = [true, true, false, false, true];
        let b = [true, false, true, false, false];
        let m = mcnemar(&a, &b).unwrap();
        assert_eq!((m.a_only, m.b_only), (2, 1));
        assert!(mcnemar(&a, &b[..2]).is_err());
    }

    #[test]
    fn paired_bootstrap_detects_a_real_difference_only() {
        let cfg = BootstrapConfig::default();
        let a: Vec<f64> = (0..300).map(|i| if i % 10 < 7 { 1.0 } else { 0.0 }).collect();
        let b: Vec<f64> = (0..300).map(|i| if i % 10 < 5 { 1.0 } else { 0.0 }).collect();
        let r = paired_bootstrap(&a, &b, &cfg, "t").unwrap();
        assert!((r.mean_diff - 0.2).abs() < 1e-12);
        assert!(r.ci_low > 0.0 && r.p_value < 0.01, "{r:?}");
        let same = paired_bootstrap(&a, &a, &cfg, "t").unwrap();
        assert_eq!(same.p_value, 1.0);
        assert_eq!((same.ci_low, same.ci_high), (0.0, 0.0));
    }
}
