//! Evaluation of medical vision-language models: benchmarks, metrics, statistics.
//!
//! This crate knows nothing of the web or of storage.
//!
//! # Design
//!
//! One small module per metric or statistic, each stating its rules in its module docs; the
//! rules together form a versioned protocol ([`PROTOCOL_VERSION`], written up in
//! `docs/eval-protocol.md`). Every run is also scored under LLaVA-Med's own, more lenient
//! rules ([`llava_med`], [`protocol::Protocol::LlavaMed`]), reported side by side so our
//! numbers can stand beside published ones. Every stored result names the protocol version it was computed
//! under, so numbers computed under different rules are never compared silently.
//!
//! # Entry points
//!
//! - VQA: [`bench::VqaBenchmark::load`] → [`answers::read_answers`] →
//!   [`score::score_run`] gives a [`summary::RunSummary`] (metrics with intervals + per-item
//!   results), the unit a server stores. [`runner::run_eval`] produces the answers from any
//!   [`runner::Answerer`] (the model engine implements it), resumably.
//! - Leaderboards: [`leaderboard::leaderboards`] over stored summaries, with
//!   [`leaderboard::compare_runs`] (paired bootstrap + McNemar) against a baseline.
//! - Arena: [`votes::Vote`] rows → [`arena::arena_report`] (all of the below as one value),
//!   [`bradley_terry::bt_ratings`] (ratings with intervals),
//!   [`elo::online_elo`], [`win_rate::win_rate_matrix`], [`agreement::vote_agreement`].
//! - Reports: [`report::score_reports`] (BLEU-4, ROUGE-L and, with an [`nli::NliJudge`] such
//!   as [`nli::OpenAiJudge`], atomic-fact NLI).
//!
//! # Architecture invariant
//!
//! No web, database or tensor code: the model engine plugs in through [`runner::Answerer`],
//! the server stores the serde types of [`summary`], [`bradley_terry`] and [`agreement`].

pub mod agreement;
pub mod arena;
pub mod answers;
pub mod bench;
pub mod bleu;
pub mod bootstrap_ci;
pub mod bradley_terry;
pub mod category;
pub mod closed_accuracy;
pub mod elo;
pub mod error;
pub mod exact_match;
pub mod leaderboard;
pub mod llava_med;
pub mod nli;
pub mod normalize;
pub mod open_recall;
pub mod paired_test;
pub mod protocol;
pub mod report;
pub mod rouge_l;
pub mod runner;
pub mod score;
pub mod summary;
pub mod token_f1;
pub mod votes;
pub mod win_rate;

pub use error::{Error, Result};

/// The version of the evaluation protocol: normalisation, tokenisation, metric rules,
/// categories and CI method. Bump it whenever any of them changes.
pub const PROTOCOL_VERSION: &str = "medpo-eval/1";
