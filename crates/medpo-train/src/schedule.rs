//! Learning-rate schedule: linear warm-up then cosine decay to 0, as Hugging Face's
//! `get_cosine_schedule_with_warmup` (the seed's `lr_scheduler_type cosine`, `warmup_ratio 0.03`).

use serde::{Deserialize, Serialize};

/// The cosine schedule with warm-up, over `total_steps` optimizer steps.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CosineSchedule {
    pub base_lr: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
}

impl CosineSchedule {
    /// Warm-up steps = ⌈total · warmup_ratio⌉, as `TrainingArguments.get_warmup_steps`.
    pub fn new(base_lr: f64, warmup_ratio: f64, total_steps: u64) -> Self {
        CosineSchedule {
            base_lr,
            warmup_steps: (total_steps as f64 * warmup_ratio).ceil() as u64,
            total_steps,
        }
    }

    /// The learning rate of optimizer step `step` (0-based). As in transformers, step 0 of a
    /// warm-up runs at lr 0 (the scheduler is stepped after the optimizer). Past `total_steps`
    /// the rate stays 0 (transformers' formula would rise again there).
    pub fn lr(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.base_lr * step as f64 / self.warmup_steps.max(1) as f64;
        }
        let progress = ((step - self.warmup_steps) as f64
            / (self.total_steps.saturating_sub(self.warmup_steps)).max(1) as f64)
            .min(1.0);
        self.base_lr * (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
    }
}

/// Optimizer steps of a run, as the HF Trainer counts them: per epoch
/// max(⌈n / batch⌉ / accumulation, 1) (integer division), times the epochs.
pub fn total_steps(num_samples: usize, batch_size: usize, grad_accum: usize, epochs: usize) -> u64 {
    updates_per_epoch(num_samples, batch_size, grad_accum) * epochs as u64
}

/// Optimizer steps per epoch (see [`total_steps`]).
pub fn updates_per_epoch(num_samples: usize, batch_size: usize, grad_accum: usize) -> u64 {
    let batches = num_samples.div_ceil(batch_size.max(1));
    ((batches / grad_accum.max(1)) as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_with_warmup_values() {
        // The seed's setting: warmup_ratio 0.03; 100 steps → 3 warm-up steps.
        let s = CosineSchedule::new(1e-7, 0.03, 100);
        assert_eq!(s.warmup_steps, 3);
        assert_eq!(s.lr(0), 0.0);
        assert!((s.lr(1) - 1e-7 / 3.0).abs() < 1e-20);
        assert!((s.lr(2) - 2e-7 / 3.0).abs() < 1e-20);
        assert!((s.lr(3) - 1e-7).abs() < 1e-20);
        // Half-way through the decay: half the peak.
        let s = CosineSchedule::new(1.0, 0.1, 110);
        assert_eq!(s.warmup_steps, 11);
        assert!(
            (s.lr(11 + 49) - 0.5 * (1.0 + (std::f64::consts::PI * 49.0 / 99.0).cos())).abs()
                < 1e-12
        );
        assert!((s.lr(11 + 99 / 2) - 0.5).abs() < 0.02);
        assert!(s.lr(110) < 1e-12 && s.lr(200) < 1e-12);
        // transformers' value at step 50 of get_cosine_schedule_with_warmup(…, 10, 100): 0.5·(1+cos(π·40/90)).
        let s = CosineSchedule {
            base_lr: 1.0,
            warmup_steps: 10,
            total_steps: 100,
        };
        assert!(
            (s.lr(50) - 0.5 * (1.0 + (std::f64::consts::PI * 40.0 / 90.0).cos())).abs() < 1e-15
        );
        assert!((s.lr(5) - 0.5).abs() < 1e-15);
        // Step counts: 1000 samples, batch 4, accumulation 4 → 62 updates per epoch.
        assert_eq!(updates_per_epoch(1000, 4, 4), 62);
        assert_eq!(total_steps(1000, 4, 4, 3), 186);
        assert_eq!(total_steps(3, 4, 4, 2), 2);
    }
}
