//! The training loop, independent of the model: sample order, gradient accumulation, clipping,
//! the cosine schedule, AdamW, per-step metrics, checkpoints, resume and cancellation.
//!
//! The model side is the [`PolicyModel`] trait: given sample indices it returns a
//! [`LossOutput`] (it runs the policy, and the reference with adapters off, then calls
//! [`crate::compute_loss`]). The model engine implements it; the tests here use a tiny linear
//! policy.
//!
//! Sample order: epoch e visits a permutation drawn from (seed, e) alone, and optimizer step k
//! reads micro-batches k·accum … k·accum + accum − 1 of its epoch. The data position is
//! therefore a function of the step, which is what makes resume exact.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{Device, Var};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, TrainerState};
use crate::error::{Error, Result};
use crate::metrics::{self, MetricsAccumulator, StepRecord, TrainCallback};
use crate::objective::LossOutput;
use crate::optim::{AdamW, AdamWConfig, GradAccumulator};
use crate::rng::{RngState, TrainRng};
use crate::schedule::{self, CosineSchedule};

/// The model side of training.
pub trait PolicyModel {
    /// Loss of one micro-batch of sample indices (gradients must reach the trainable `Var`s).
    fn loss(&mut self, indices: &[usize]) -> Result<LossOutput>;
    /// `false` skips a sample (e.g. longer than `max_length`): counted, never truncated.
    fn keep(&self, _index: usize) -> bool {
        true
    }
    /// The model's own RNG (dropout), saved in checkpoints.
    fn rng_state(&self) -> Option<RngState> {
        None
    }
    fn set_rng_state(&mut self, _state: &RngState) -> Result<()> {
        Ok(())
    }
}

/// Loop settings, with `TrainingArguments`' names and the seed's values as defaults
/// (lr 1e-7, warm-up ratio 0.03, 3 epochs, batch 4 × accumulation 4 = the seed's global 16).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainerArgs {
    pub per_device_train_batch_size: usize,
    pub gradient_accumulation_steps: usize,
    pub num_train_epochs: usize,
    /// Stop after this many optimizer steps (overrides epochs when set).
    pub max_steps: Option<u64>,
    pub learning_rate: f64,
    pub warmup_ratio: f64,
    pub max_grad_norm: f64,
    #[serde(flatten)]
    pub adam: AdamWConfig,
    pub seed: u64,
    /// Checkpoint every N optimizer steps (0: only at the end).
    pub save_steps: u64,
}

impl Default for TrainerArgs {
    fn default() -> Self {
        TrainerArgs {
            per_device_train_batch_size: 4,
            gradient_accumulation_steps: 4,
            num_train_epochs: 3,
            max_steps: None,
            learning_rate: 1e-7,
            warmup_ratio: 0.03,
            max_grad_norm: 1.0,
            adam: AdamWConfig::default(),
            seed: 42,
            save_steps: 0,
        }
    }
}

impl TrainerArgs {
    pub fn validate(&self) -> Result<()> {
        let bad = |key, value: String, reason: &str| {
            Err(Error::Config {
                key,
                value,
                reason: reason.into(),
            })
        };
        if self.per_device_train_batch_size == 0 {
            return bad("per_device_train_batch_size", "0".into(), "must be ≥ 1");
        }
        if self.gradient_accumulation_steps == 0 {
            return bad("gradient_accumulation_steps", "0".into(), "must be ≥ 1");
        }
        if !(self.learning_rate >= 0.0 && self.learning_rate.is_finite()) {
            return bad(
                "learning_rate",
                self.learning_rate.to_string(),
                "must be ≥ 0",
            );
        }
        if !(0.0..1.0).contains(&self.warmup_ratio) {
            return bad(
                "warmup_ratio",
                self.warmup_ratio.to_string(),
                "must be in [0, 1)",
            );
        }
        if self.max_grad_norm.is_nan() || self.max_grad_norm <= 0.0 {
            return bad(
                "max_grad_norm",
                self.max_grad_norm.to_string(),
                "must be > 0",
            );
        }
        Ok(())
    }
}

/// Why [`Trainer::run`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// All steps done (a final checkpoint was written when there is an output dir).
    Finished,
    /// The cancel flag was seen at a step boundary (a checkpoint was written).
    Cancelled,
    /// `stop_after` steps were run (used to simulate a killed job; nothing extra is saved).
    Interrupted,
}

/// The loop.
pub struct Trainer {
    args: TrainerArgs,
    opt: AdamW,
    schedule: CosineSchedule,
    num_samples: usize,
    updates_per_epoch: u64,
    total_steps: u64,
    global_step: u64,
    skipped: u64,
    output_dir: Option<PathBuf>,
    run_id: String,
    device: Device,
}

impl Trainer {
    /// `vars`: the trainable parameters (LoRA adapters, or every weight for full fine-tuning).
    pub fn new(
        args: TrainerArgs,
        vars: Vec<(String, Var)>,
        num_samples: usize,
        output_dir: Option<PathBuf>,
        run_id: &str,
    ) -> Result<Self> {
        args.validate()?;
        if num_samples == 0 {
            return Err(Error::Config {
                key: "dataset",
                value: "0 records".into(),
                reason: "nothing to train on".into(),
            });
        }
        let device = vars
            .first()
            .map(|(_, v)| v.device().clone())
            .unwrap_or(Device::Cpu);
        let upe = schedule::updates_per_epoch(
            num_samples,
            args.per_device_train_batch_size,
            args.gradient_accumulation_steps,
        );
        let total = args.max_steps.unwrap_or(upe * args.num_train_epochs as u64);
        Ok(Trainer {
            schedule: CosineSchedule::new(args.learning_rate, args.warmup_ratio, total),
            opt: AdamW::new(vars, args.adam),
            args,
            num_samples,
            updates_per_epoch: upe,
            total_steps: total,
            global_step: 0,
            skipped: 0,
            output_dir,
            run_id: run_id.to_string(),
            device,
        })
    }

    pub fn global_step(&self) -> u64 {
        self.global_step
    }
    pub fn total_steps(&self) -> u64 {
        self.total_steps
    }
    pub fn skipped_samples(&self) -> u64 {
        self.skipped
    }

    /// Sample indices of micro-batch `micro` (0..accum) of optimizer step `step`.
    pub fn micro_batch(&self, step: u64, micro: usize) -> Vec<usize> {
        let epoch = step / self.updates_per_epoch;
        let within = (step % self.updates_per_epoch) as usize;
        let mut order: Vec<usize> = (0..self.num_samples).collect();
        TrainRng::for_item(self.args.seed, &format!("epoch-{epoch}")).shuffle(&mut order);
        let bs = self.args.per_device_train_batch_size;
        let b = within * self.args.gradient_accumulation_steps + micro;
        let lo = (b * bs).min(self.num_samples);
        let hi = ((b + 1) * bs).min(self.num_samples);
        order[lo..hi].to_vec()
    }

    /// Restores weights, optimizer, step and RNG from a checkpoint folder.
    pub fn resume_from(&mut self, dir: &Path, model: &mut dyn PolicyModel) -> Result<()> {
        let vars = self.opt.vars().to_vec();
        let state = checkpoint::load(dir, &vars, &mut self.opt, &self.device)?;
        if state.run_id != self.run_id {
            return Err(Error::Checkpoint {
                path: dir.into(),
                message: format!(
                    "belongs to run `{}`, not `{}` (config or dataset changed)",
                    state.run_id, self.run_id
                ),
            });
        }
        if let Some(r) = &state.model_rng {
            model.set_rng_state(r)?;
        }
        self.global_step = state.global_step;
        self.skipped = state.skipped_samples;
        Ok(())
    }

    /// Writes `checkpoint-<step>` under the output dir.
    pub fn save_checkpoint(&self, model: &dyn PolicyModel) -> Result<Option<PathBuf>> {
        let Some(out) = &self.output_dir else {
            return Ok(None);
        };
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        let (_, steps) = self.opt.state_tensors();
        let state = TrainerState {
            global_step: self.global_step,
            epoch: self.global_step as f64 / self.updates_per_epoch as f64,
            optimizer_steps: steps,
            model_rng: model.rng_state(),
            skipped_samples: self.skipped,
            run_id: self.run_id.clone(),
        };
        checkpoint::save(out, self.opt.vars(), &self.opt, &state).map(Some)
    }

    /// Runs until the last step, the cancel flag, or `stop_after` more steps.
    pub fn run(
        &mut self,
        model: &mut dyn PolicyModel,
        callbacks: &mut [&mut dyn TrainCallback],
        cancel: &AtomicBool,
        stop_after: Option<u64>,
    ) -> Result<Stop> {
        let accum = self.args.gradient_accumulation_steps;
        let mut done = 0u64;
        while self.global_step < self.total_steps {
            if cancel.load(Ordering::SeqCst) {
                self.checkpoint_and_notify(model, callbacks)?;
                return Ok(Stop::Cancelled);
            }
            if stop_after.is_some_and(|n| done >= n) {
                return Ok(Stop::Interrupted);
            }
            let step = self.global_step;
            let mut grads = GradAccumulator::new(self.opt.vars());
            let mut acc = MetricsAccumulator::default();
            for micro in 0..accum {
                let idx: Vec<usize> = self
                    .micro_batch(step, micro)
                    .into_iter()
                    .filter(|&i| {
                        let keep = model.keep(i);
                        if !keep {
                            self.skipped += 1;
                        }
                        keep
                    })
                    .collect();
                if idx.is_empty() {
                    continue;
                }
                let out = model.loss(&idx)?;
                grads.add(&out.loss.backward()?, 1.0 / accum as f64)?;
                acc.add(&out.metrics()?);
            }
            // The clipping coefficient is applied inside the optimizer's update (one pass less
            // over every gradient).
            let (norm, coef) = grads.clip_coefficient(self.args.max_grad_norm)?;
            let lr = self.schedule.lr(step);
            self.opt.step_scaled(&grads.take(), coef, lr)?;
            self.global_step += 1;
            done += 1;
            let mut m = acc.take();
            m.insert(metrics::LEARNING_RATE.into(), lr);
            m.insert(metrics::GRAD_NORM.into(), norm);
            let rec = StepRecord {
                step: self.global_step,
                epoch: self.global_step as f64 / self.updates_per_epoch as f64,
                metrics: m,
            };
            tracing::debug!(
                step = rec.step,
                loss = rec.metrics.get(metrics::LOSS).copied(),
                "step"
            );
            for cb in callbacks.iter_mut() {
                cb.on_step(&rec)?;
            }
            let at_end = self.global_step == self.total_steps;
            if (self.args.save_steps > 0 && self.global_step.is_multiple_of(self.args.save_steps))
                || at_end
            {
                self.checkpoint_and_notify(model, callbacks)?;
            }
        }
        Ok(Stop::Finished)
    }

    fn checkpoint_and_notify(
        &self,
        model: &dyn PolicyModel,
        callbacks: &mut [&mut dyn TrainCallback],
    ) -> Result<()> {
        if let Some(dir) = self.save_checkpoint(model)? {
            for cb in callbacks.iter_mut() {
                cb.on_checkpoint(self.global_step, &dir)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::JsonlWriter;
    use crate::objective::{compute_loss, LossConfig, Objective, PreferenceLogps};
    use candle_core::Tensor;

    const D: usize = 6;

    /// A tiny differentiable "policy": log π(y) = w·φ(y) − 3 with fixed features φ, a frozen
    /// copy of the initial w as the reference, and feature dropout from its own RNG (so the RNG
    /// state matters for exact resume). Pairs prefer responses whose features align with a
    /// hidden direction.
    struct LinearPolicy {
        w: Var,
        w_ref: Tensor,
        chosen: Tensor,
        rejected: Tensor,
        rng: TrainRng,
        cfg: LossConfig,
        dropout: bool,
    }

    fn dataset(n: usize, seed: u64) -> (Tensor, Tensor) {
        let mut rng = TrainRng::seed_from_u64(seed);
        let truth: Vec<f64> = (0..D)
            .map(|i| if i % 2 == 0 { 1.0 } else { -0.5 })
            .collect();
        let (mut c, mut r) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let a: Vec<f64> = (0..D).map(|_| rng.normal()).collect();
            let b: Vec<f64> = (0..D).map(|_| rng.normal()).collect();
            let score = |x: &[f64]| x.iter().zip(&truth).map(|(p, q)| p * q).sum::<f64>();
            let (w, l) = if score(&a) >= score(&b) {
                (a, b)
            } else {
                (b, a)
            };
            c.extend(w);
            r.extend(l);
        }
        (
            Tensor::from_vec(c, (n, D), &Device::Cpu).unwrap(),
            Tensor::from_vec(r, (n, D), &Device::Cpu).unwrap(),
        )
    }

    impl LinearPolicy {
        fn new(n: usize, dropout: bool) -> Self {
            let w =
                Var::from_tensor(&Tensor::full(0.05f64, (D, 1), &Device::Cpu).unwrap()).unwrap();
            let (chosen, rejected) = dataset(n, 3);
            LinearPolicy {
                w_ref: w.as_tensor().detach().copy().unwrap(),
                w,
                chosen,
                rejected,
                rng: TrainRng::seed_from_u64(77),
                cfg: LossConfig::new(Objective::Sigmoid, 0.5),
                dropout,
            }
        }
        fn logps(&mut self, feats: &Tensor, w: &Tensor) -> Tensor {
            let f = if self.dropout {
                let n = feats.elem_count();
                let mask: Vec<f64> = (0..n)
                    .map(|_| {
                        if self.rng.uniform() < 0.1 {
                            0.0
                        } else {
                            1.0 / 0.9
                        }
                    })
                    .collect();
                (feats * Tensor::from_vec(mask, feats.shape(), &Device::Cpu).unwrap()).unwrap()
            } else {
                feats.clone()
            };
            (f.matmul(w).unwrap().squeeze(1).unwrap() - 3.0).unwrap()
        }
        fn batch(&mut self, idx: &[usize], c: &Tensor, r: &Tensor) -> PreferenceLogps {
            let ids = Tensor::new(
                idx.iter().map(|&i| i as u32).collect::<Vec<_>>(),
                &Device::Cpu,
            )
            .unwrap();
            let (fc, fr) = (
                c.index_select(&ids, 0).unwrap(),
                r.index_select(&ids, 0).unwrap(),
            );
            let w = self.w.as_tensor().clone();
            let w_ref = self.w_ref.clone();
            let pc = self.logps(&fc, &w);
            let pr = self.logps(&fr, &w);
            let rc = (fc.matmul(&w_ref).unwrap().squeeze(1).unwrap() - 3.0).unwrap();
            let rr = (fr.matmul(&w_ref).unwrap().squeeze(1).unwrap() - 3.0).unwrap();
            PreferenceLogps::paired(pc, pr, rc, rr)
        }
    }

    impl PolicyModel for LinearPolicy {
        fn loss(&mut self, idx: &[usize]) -> Result<LossOutput> {
            let (c, r) = (self.chosen.clone(), self.rejected.clone());
            let b = self.batch(idx, &c, &r);
            compute_loss(&self.cfg, &b)
        }
        fn keep(&self, i: usize) -> bool {
            i != 5 // pretend sample 5 is over-long
        }
        fn rng_state(&self) -> Option<RngState> {
            Some(self.rng.state())
        }
        fn set_rng_state(&mut self, s: &RngState) -> Result<()> {
            self.rng = TrainRng::from_state(s).unwrap();
            Ok(())
        }
    }

    fn args() -> TrainerArgs {
        TrainerArgs {
            per_device_train_batch_size: 3,
            gradient_accumulation_steps: 2,
            num_train_epochs: 3,
            learning_rate: 0.05,
            warmup_ratio: 0.1,
            max_grad_norm: 0.5,
            save_steps: 3,
            ..Default::default()
        }
    }

    fn run(out: &Path, interrupt_after: Option<u64>) -> (Vec<f64>, Vec<StepRecord>) {
        let n = 24;
        let log = out.join("metrics.jsonl");
        // First leg (possibly "killed" after some steps).
        let mut model = LinearPolicy::new(n, true);
        let mut t = Trainer::new(
            args(),
            vec![("policy.weight".into(), model.w.clone())],
            n,
            Some(out.into()),
            "test-run",
        )
        .unwrap();
        let mut w = JsonlWriter::append(&log).unwrap();
        let stop = t
            .run(
                &mut model,
                &mut [&mut w],
                &AtomicBool::new(false),
                interrupt_after,
            )
            .unwrap();
        if interrupt_after.is_some() {
            assert_eq!(stop, Stop::Interrupted);
            drop((model, t));
            // A fresh process: new model, new trainer, resume from the latest checkpoint.
            let mut model = LinearPolicy::new(n, true);
            let mut t = Trainer::new(
                args(),
                vec![("policy.weight".into(), model.w.clone())],
                n,
                Some(out.into()),
                "test-run",
            )
            .unwrap();
            let ck = checkpoint::latest(out).unwrap();
            t.resume_from(&ck, &mut model).unwrap();
            assert!(t.global_step() > 0 && t.global_step() < t.total_steps());
            assert_eq!(
                t.run(&mut model, &mut [&mut w], &AtomicBool::new(false), None)
                    .unwrap(),
                Stop::Finished
            );
            return (
                model
                    .w
                    .as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap(),
                JsonlWriter::read(&log).unwrap(),
            );
        }
        assert_eq!(stop, Stop::Finished);
        assert!(t.skipped_samples() > 0, "sample 5 is skipped each epoch");
        (
            model
                .w
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap(),
            JsonlWriter::read(&log).unwrap(),
        )
    }

    /// Resume after a kill gives bit-identical weights and the same per-step metrics as an
    /// uninterrupted run (weights, AdamW moments, step, schedule position and dropout RNG).
    #[test]
    fn resume_equals_uninterrupted() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (w_full, log_full) = run(a.path(), None);
        let (w_resumed, log_resumed) = run(b.path(), Some(5)); // killed after step 5; last checkpoint at 3
        assert_eq!(w_full, w_resumed);
        assert_eq!(log_full.len(), 12, "4 updates per epoch × 3 epochs");
        // The resumed log repeats steps 4–5 (re-run after the kill), then continues identically.
        let last_by_step = |log: &[StepRecord]| {
            let mut m = std::collections::BTreeMap::new();
            for r in log {
                m.insert(r.step, r.clone());
            }
            m
        };
        assert_eq!(last_by_step(&log_full), last_by_step(&log_resumed));
        let first_5: Vec<_> = log_resumed.iter().take(5).collect();
        for (x, y) in first_5.iter().zip(&log_full) {
            assert_eq!(*x, y, "the killed leg matches too");
        }
        assert!(checkpoint::checkpoint_dir(b.path(), 12)
            .join(checkpoint::STATE_FILE)
            .is_file());
        // A different run id refuses to resume.
        let mut model = LinearPolicy::new(24, true);
        let mut t = Trainer::new(
            args(),
            vec![("policy.weight".into(), model.w.clone())],
            24,
            None,
            "other",
        )
        .unwrap();
        assert!(t
            .resume_from(&checkpoint::latest(b.path()).unwrap(), &mut model)
            .unwrap_err()
            .to_string()
            .contains("test-run"));
    }

    /// DPO raises the reward margin and preference accuracy on held-out pairs; cancellation stops
    /// at a step boundary with a checkpoint.
    #[test]
    fn dpo_improves_held_out_pairs_and_cancel_is_clean() {
        let n = 48;
        let mut model = LinearPolicy::new(n, false);
        let (hc, hr) = dataset(200, 1234);
        let eval = |m: &mut LinearPolicy| {
            let idx: Vec<usize> = (0..200).collect();
            let b = m.batch(&idx, &hc, &hr);
            let o = compute_loss(&m.cfg, &b).unwrap();
            let met = o.metrics().unwrap();
            (
                met[metrics::REWARDS_MARGINS],
                met[metrics::REWARDS_ACCURACIES],
            )
        };
        let (m0, acc0) = eval(&mut model);
        assert_eq!((m0, acc0), (0.0, 0.0), "policy = reference at step 0");
        let mut a = args();
        a.num_train_epochs = 6;
        a.max_grad_norm = 10.0;
        let mut t = Trainer::new(
            a,
            vec![("policy.weight".into(), model.w.clone())],
            n,
            None,
            "x",
        )
        .unwrap();
        t.run(&mut model, &mut [], &AtomicBool::new(false), None)
            .unwrap();
        let (m1, acc1) = eval(&mut model);
        assert!(
            m1 > 0.5 && acc1 > 0.8,
            "held-out margin {m1}, accuracy {acc1}"
        );

        let dir = tempfile::tempdir().unwrap();
        let cancel = AtomicBool::new(false);
        struct CancelAt<'a>(&'a AtomicBool, u64);
        impl TrainCallback for CancelAt<'_> {
            fn on_step(&mut self, r: &StepRecord) -> Result<()> {
                if r.step == self.1 {
                    self.0.store(true, Ordering::SeqCst);
                }
                Ok(())
            }
        }
        let mut model = LinearPolicy::new(n, false);
        let mut t = Trainer::new(
            args(),
            vec![("policy.weight".into(), model.w.clone())],
            n,
            Some(dir.path().into()),
            "x",
        )
        .unwrap();
        let stop = t
            .run(&mut model, &mut [&mut CancelAt(&cancel, 2)], &cancel, None)
            .unwrap();
        assert_eq!((stop, t.global_step()), (Stop::Cancelled, 2));
        assert_eq!(
            checkpoint::latest(dir.path()).unwrap(),
            checkpoint::checkpoint_dir(dir.path(), 2)
        );
    }
}
