//! Benchmark: Bradley–Terry ratings with 1,000-round bootstrap intervals, Elo, win rates and
//! agreement for simulated arena votes (10 models, 20,000 votes by default).
//!
//! ```text
//! cargo run --release -p medpo-eval --example arena_ratings [-- VOTES [ROUNDS]]
//! ```

use std::time::Instant;

use medpo_eval::arena::arena_report;
use medpo_eval::bootstrap_ci::BootstrapConfig;
use medpo_eval::votes::{Vote, Winner};
use rand::{Rng, SeedableRng};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|r| r.parse()).transpose()?.unwrap_or(20_000);
    let rounds: usize = args.next().map(|r| r.parse()).transpose()?.unwrap_or(1000);
    let models = 10;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let votes: Vec<Vote> = (0..n)
        .map(|i| {
            let a = rng.random_range(0..models);
            let b = (a + 1 + rng.random_range(0..models - 1)) % models;
            let p = 1.0 / (1.0 + 10f64.powf((b as f64 - a as f64) * 30.0 / 400.0));
            let u: f64 = rng.random();
            let winner = if u < p - 0.1 { Winner::A } else if u < 0.8 { Winner::B } else if u < 0.9 { Winner::Tie } else { Winner::BothBad };
            Vote {
                model_a: format!("model-{a}"),
                model_b: format!("model-{b}"),
                winner,
                rater: Some(format!("rater-{}", i % 3)),
                item: Some(format!("item-{}", i / 3)),
            }
        })
        .collect();
    let t = Instant::now();
    let r = arena_report(&votes, &BootstrapConfig { rounds, ..Default::default() })?;
    let dt = t.elapsed();
    for x in r.bradley_terry.iter().take(3) {
        println!("{:<10} {:7.1} [{:7.1}, {:7.1}]", x.model, x.rating, x.ci_low, x.ci_high);
    }
    println!("votes {n}, models {models}, rounds {rounds}: {:.1} ms", dt.as_secs_f64() * 1e3);
    Ok(())
}
