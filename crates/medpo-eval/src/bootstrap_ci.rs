//! Seeded percentile-bootstrap confidence intervals.
//!
//! Method (protocol `medpo-eval/1`):
//!
//! - The point estimate is the metric on all items.
//! - Each of `rounds` (default 1,000) bootstrap rounds draws `n` item indices uniformly with
//!   replacement from the `n` items of the group and recomputes the metric on them. All
//!   metrics of one group are computed on the same resample in each round.
//! - The interval is the 2.5th and 97.5th percentile of the round values (linear
//!   interpolation between order statistics, numpy's default), for a 95% level.
//! - The random stream is ChaCha8 seeded with `seed` (default 0) and a stream number derived
//!   from the group's name (FNV-1a); indices are drawn with `rand`'s `Uniform::new(0, n)`, so a group's interval does not depend on which other
//!   groups were computed, nor in what order. `rand` and `rand_chacha` are pinned exactly,
//!   so intervals are bit-for-bit reproducible.

use rand::distr::{Distribution, Uniform};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Bootstrap settings; stored with every result.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BootstrapConfig {
    pub rounds: usize,
    pub seed: u64,
    /// Confidence level, e.g. 0.95.
    pub level: f64,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        BootstrapConfig {
            rounds: 1000,
            seed: 0,
            level: 0.95,
        }
    }
}

/// A point estimate with its confidence interval and the number of items behind it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub value: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub n: usize,
}

/// FNV-1a 64 of a string: the stream number of a named group.
pub fn stream_id(name: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// The generator for one named stream.
pub fn rng(seed: u64, stream: &str) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(stream_id(stream));
    r
}

/// Draws item indices `0..n` (n ≥ 1) uniformly: `rand` 0.9's `Uniform::new(0, n)`.
pub struct IndexSampler(Uniform<usize>);

impl IndexSampler {
    /// A sampler over `0..n`; `None` when `n = 0`.
    pub fn new(n: usize) -> Option<Self> {
        Uniform::new(0, n).ok().map(IndexSampler)
    }

    /// One index.
    #[inline]
    pub fn draw(&self, r: &mut ChaCha8Rng) -> usize {
        self.0.sample(r)
    }
}

/// The `q`-quantile (0 ≤ q ≤ 1) of sorted values, linear interpolation.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    sorted[lo] + (sorted[hi] - sorted[lo]) * frac
}

/// The percentile interval of round values at `level`.
pub fn percentile_interval(values: &mut [f64], level: f64) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    let tail = (1.0 - level) / 2.0;
    (quantile_sorted(values, tail), quantile_sorted(values, 1.0 - tail))
}

/// Means of several per-item columns with intervals, all resampled together.
///
/// `rows` holds `n` items of `m` values each, row-major (`rows[i * m + j]` is metric `j` of
/// item `i`). Returns `m` estimates; with `n = 0` every value is NaN.
pub fn bootstrap_means(rows: &[f64], m: usize, cfg: &BootstrapConfig, stream: &str) -> Vec<Estimate> {
    let n = rows.len().checked_div(m).unwrap_or(0);
    if n == 0 {
        return vec![Estimate { value: f64::NAN, ci_low: f64::NAN, ci_high: f64::NAN, n: 0 }; m];
    }
    let mut point = vec![0.0; m];
    for row in rows.chunks_exact(m) {
        for (p, v) in point.iter_mut().zip(row) {
            *p += v;
        }
    }
    let mut r = rng(cfg.seed, stream);
    let Some(dist) = IndexSampler::new(n) else { return Vec::new() };
    let mut rounds: Vec<Vec<f64>> = vec![Vec::with_capacity(cfg.rounds); m];
    let mut sums = vec![0.0; m];
    for _ in 0..cfg.rounds {
        match m {
            1 => resample_sums::<1>(rows, n, &dist, &mut r, &mut sums),
            2 => resample_sums::<2>(rows, n, &dist, &mut r, &mut sums),
            3 => resample_sums::<3>(rows, n, &dist, &mut r, &mut sums),
            _ => {
                sums.iter_mut().for_each(|s| *s = 0.0);
                for _ in 0..n {
                    let i = dist.draw(&mut r);
                    for (s, v) in sums.iter_mut().zip(&rows[i * m..(i + 1) * m]) {
                        *s += v;
                    }
                }
            }
        }
        for (k, s) in sums.iter().enumerate() {
            rounds[k].push(s / n as f64);
        }
    }
    point
        .into_iter()
        .zip(rounds.iter_mut())
        .map(|(p, vals)| {
            let (ci_low, ci_high) = percentile_interval(vals, cfg.level);
            Estimate { value: p / n as f64, ci_low, ci_high, n }
        })
        .collect()
}

/// One round's column sums over `n` resampled rows of width `M` (the common widths, unrolled).
fn resample_sums<const M: usize>(rows: &[f64], n: usize, dist: &IndexSampler, r: &mut ChaCha8Rng, out: &mut [f64]) {
    let mut sums = [0.0f64; M];
    for _ in 0..n {
        let i = dist.draw(r);
        let row = &rows[i * M..(i + 1) * M];
        for k in 0..M {
            sums[k] += row[k];
        }
    }
    out.copy_from_slice(&sums);
}

/// Any statistic of `n` items with an interval: `stat` receives the indices of a resample
/// (all of `0..n` for the point estimate).
pub fn bootstrap_stat(
    n: usize,
    cfg: &BootstrapConfig,
    stream: &str,
    mut stat: impl FnMut(&[usize]) -> f64,
) -> Estimate {
    let all: Vec<usize> = (0..n).collect();
    let value = stat(&all);
    if n == 0 {
        return Estimate { value, ci_low: f64::NAN, ci_high: f64::NAN, n };
    }
    let mut r = rng(cfg.seed, stream);
    let Some(dist) = IndexSampler::new(n) else { return Estimate { value, ci_low: f64::NAN, ci_high: f64::NAN, n } };
    let mut idx = vec![0usize; n];
    let mut vals = Vec::with_capacity(cfg.rounds);
    for _ in 0..cfg.rounds {
        for x in idx.iter_mut() {
            *x = dist.draw(&mut r);
        }
        vals.push(stat(&idx));
    }
    let (ci_low, ci_high) = percentile_interval(&mut vals, cfg.level);
    Estimate { value, ci_low, ci_high, n }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(quantile_sorted(&v, 0.5), 3.0);
        assert_eq!(quantile_sorted(&v, 0.025), 1.1);
        assert_eq!(quantile_sorted(&v, 1.0), 5.0);
    }

    #[test]
    fn constant_column_has_zero_width() {
        let rows = vec![1.0; 50];
        let e = bootstrap_means(&rows, 1, &BootstrapConfig::default(), "x");
        assert_eq!(e[0], Estimate { value: 1.0, ci_low: 1.0, ci_high: 1.0, n: 50 });
    }

    #[test]
    fn interval_matches_normal_theory_and_is_reproducible() {
        // 400 Bernoulli items, 200 ones: the 95% interval half-width is about
        // 1.96·sqrt(0.25/400) = 0.049.
        let rows: Vec<f64> = (0..400).map(|i| (i % 2) as f64).collect();
        let cfg = BootstrapConfig::default();
        let e = bootstrap_means(&rows, 1, &cfg, "acc")[0];
        assert_eq!(e.value, 0.5);
        let half = (e.ci_high - e.ci_low) / 2.0;
        assert!((half - 0.049).abs() < 0.006, "{e:?}");
        assert_eq!(e, bootstrap_means(&rows, 1, &cfg, "acc")[0]);
        let s = bootstrap_stat(400, &cfg, "acc", |ix| ix.iter().map(|&i| rows[i]).sum::<f64>() / ix.len() as f64);
        assert_eq!((s.ci_low, s.ci_high), (e.ci_low, e.ci_high));
    }

    #[test]
    fn empty_group() {
        let e = bootstrap_means(&[], 2, &BootstrapConfig::default(), "x");
        assert_eq!(e.len(), 2);
        assert!(e[0].value.is_nan() && e[0].n == 0);
    }
}
