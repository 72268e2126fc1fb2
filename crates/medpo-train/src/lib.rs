//! Preference training for medical vision-language models.
//!
//! This crate knows nothing of the web or of storage. The model engine (`medpo-models`)
//! supplies differentiable sequence log-probabilities and a hook for adapters; [`policy`] wires
//! it to the trainer, and everything else is model-independent.
//!
//! # Code map
//! - [`objective`]: [`Objective`] (one name table → `FromStr`/`Display`/serde with TRL's
//!   `loss_type` strings) and [`compute_loss`], the one function from log-probs to loss terms:
//!   all 15 TRL 1.16 DPO loss types, weighted combinations, f-divergences, cDPO, SimPO, CPO,
//!   ORPO, KTO, and the seed's DPO+NLL, CoPO, anchor, mDPO (with the corrupted image for real)
//!   and MMedPO. Checked against `shared/fixtures/v1/dpo_golden.json`.
//! - [`data`]: the seed's LLaVA conversation records and TRL JSONL, in and out; validation
//!   with errors that name file and record.
//! - [`negatives`]: crop (mDPO), ROI noise (CoPO/MMedPO), diffusion noise (HA-DPO/POVID), seeded,
//!   written as PNGs the dataset references.
//! - [`pairs`]: the paper's targeted visual-misinterpretation pairs (retrieval by vision-feature
//!   cosine, answers on the similar image; modes mixed / dpo-only / copo-only).
//! - [`lora`]: LoRA linear layers over a frozen base (adapters off = the reference model), PEFT
//!   save/load, merge.
//! - [`trainer`], [`optim`], [`schedule`], [`checkpoint`], [`metrics`], [`rng`]: the loop
//!   (accumulation, clipping, cosine warm-up, AdamW, JSONL metrics and callbacks, checkpoints,
//!   exact resume, cancellation at a step boundary, skipped over-long samples).
//! - [`config`]: `train.toml` with TRL's field names.
//! - [`policy`]: [`policy::VlmPolicy`], the [`trainer::PolicyModel`] of a `medpo-models` model
//!   (LoRA with the base as reference, or full fine-tuning with a frozen copy), PEFT and merged
//!   exports, and the model side of the targeted pairs.
//!
//! # What the model engine plugs in
//! [`policy::VlmPolicy`] is the implementation for `medpo-models`; another engine would
//! implement [`trainer::PolicyModel`] the same way: `loss(indices)` builds, for those records,
//! the policy log-prob sums (adapters on; `Var`-connected), the reference ones (inside
//! [`lora::Lora::reference`], or a frozen copy for full fine-tuning; detached), the token
//! counts and any corrupted/noised-image log-probs the objective needs, fills a
//! [`PreferenceLogps`] and returns [`compute_loss`]`(&cfg.loss, &batch)`; `keep(i)` returns false
//! for records longer than `max_length`; `rng_state` returns the LoRA dropout RNG. Then
//! `Trainer::new(cfg.args, trainable_vars, n, Some(cfg.output_dir), run_id)`, optionally
//! `resume_from(checkpoint::latest(..))`, and `run(model, callbacks, cancel, None)`.
//!
//! # Invariants
//! - Only `Var`s are trained; frozen weights are plain tensors with no gradient buffer.
//! - Every random draw (LoRA init and dropout, negatives, sample order) comes from a seeded
//!   [`rng::TrainRng`]; the sample order is a function of (seed, epoch, step), so resume is exact.
//! - Kinked forms (`relu`, `abs`, `maximum`) are never used where z = 0 is reached at step 0.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod error;
pub mod lora;
pub mod metrics;
pub mod negatives;
pub mod objective;
pub mod optim;
pub mod pairs;
pub mod policy;
pub mod rng;
pub mod schedule;
pub mod trainer;

#[cfg(test)]
pub(crate) mod testutil;

pub use error::{Error, Result};
pub use objective::{
    compute_loss, FDivergence, LossConfig, LossOutput, Objective, PreferenceLogps,
};
