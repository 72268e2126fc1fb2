//! AdamW with a state that checkpoints can save, gradient accumulation over micro-batches, and
//! global-norm clipping. The update is PyTorch's `torch.optim.AdamW` (Loshchilov & Hutter 2019,
//! arXiv 1711.05101, Algorithm 2) step for step, so runs compare with the HF Trainer's.
//!
//! candle_nn's `AdamW` keeps its moments private, so a resumed run could not continue exactly;
//! this one exposes them ([`AdamW::state_tensors`] / [`AdamW::load_state`]).

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// AdamW hyper-parameters, with `TrainingArguments`' names and defaults.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AdamWConfig {
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_epsilon: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_epsilon: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// Sums gradients of named `Var`s over micro-batches.
pub struct GradAccumulator {
    vars: Vec<(String, Var)>,
    sums: Vec<Option<Tensor>>,
}

impl GradAccumulator {
    pub fn new(vars: &[(String, Var)]) -> Self {
        GradAccumulator {
            vars: vars.to_vec(),
            sums: vec![None; vars.len()],
        }
    }

    /// Adds `scale` × this backward pass's gradients (scale = 1/accumulation steps).
    pub fn add(&mut self, grads: &GradStore, scale: f64) -> Result<()> {
        for ((_, v), s) in self.vars.iter().zip(self.sums.iter_mut()) {
            if let Some(g) = grads.get(v.as_tensor()) {
                let g = (g * scale)?;
                *s = Some(match s.take() {
                    None => g,
                    Some(acc) => (acc + g)?,
                });
            }
        }
        Ok(())
    }

    /// √(Σ‖g‖²) over every accumulated gradient (computed in f64).
    pub fn global_norm(&self) -> Result<f64> {
        let mut sq = 0.0;
        for g in self.sums.iter().flatten() {
            sq += g
                .to_dtype(DType::F64)?
                .sqr()?
                .sum_all()?
                .to_scalar::<f64>()?;
        }
        Ok(sq.sqrt())
    }

    /// Scales the gradients so their global norm is at most `max_norm`, as
    /// `torch.nn.utils.clip_grad_norm_` (coefficient max_norm/(norm + 1e-6), capped at 1).
    /// Returns the norm before clipping.
    pub fn clip(&mut self, max_norm: f64) -> Result<f64> {
        let norm = self.global_norm()?;
        let coef = max_norm / (norm + 1e-6);
        if coef < 1.0 {
            for s in self.sums.iter_mut() {
                if let Some(g) = s.take() {
                    *s = Some((g * coef)?);
                }
            }
        }
        Ok(norm)
    }

    /// The accumulated gradient of each var (`None` where none arrived), and a reset.
    pub fn take(&mut self) -> Vec<Option<Tensor>> {
        std::mem::replace(&mut self.sums, vec![None; self.vars.len()])
    }
}

/// AdamW over named `Var`s.
pub struct AdamW {
    cfg: AdamWConfig,
    vars: Vec<(String, Var)>,
    exp_avg: Vec<Option<Tensor>>,
    exp_avg_sq: Vec<Option<Tensor>>,
    /// Per-var step counts (PyTorch keeps one per parameter; a var without gradient is not stepped).
    steps: Vec<u64>,
}

impl AdamW {
    pub fn new(vars: Vec<(String, Var)>, cfg: AdamWConfig) -> Self {
        let n = vars.len();
        AdamW {
            cfg,
            vars,
            exp_avg: vec![None; n],
            exp_avg_sq: vec![None; n],
            steps: vec![0; n],
        }
    }

    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// One update with learning rate `lr`; `grads[i]` belongs to `vars()[i]`.
    pub fn step(&mut self, grads: &[Option<Tensor>], lr: f64) -> Result<()> {
        let AdamWConfig {
            adam_beta1: b1,
            adam_beta2: b2,
            adam_epsilon: eps,
            weight_decay: wd,
        } = self.cfg;
        for (i, (_, var)) in self.vars.iter().enumerate() {
            let Some(g) = &grads[i] else { continue };
            let g = g.to_dtype(var.dtype())?;
            self.steps[i] += 1;
            let t = self.steps[i] as i32;
            let m = match &self.exp_avg[i] {
                None => (&g * (1.0 - b1))?,
                Some(m) => ((m * b1)? + (&g * (1.0 - b1))?)?,
            };
            let v = match &self.exp_avg_sq[i] {
                None => (g.sqr()? * (1.0 - b2))?,
                Some(v) => ((v * b2)? + (g.sqr()? * (1.0 - b2))?)?,
            };
            let bc1 = 1.0 - b1.powi(t);
            let bc2 = 1.0 - b2.powi(t);
            let p = (var.as_tensor() * (1.0 - lr * wd))?;
            let denom = ((v.sqrt()? / bc2.sqrt())? + eps)?;
            let p = (p - ((&m / denom)? * (lr / bc1))?)?;
            var.set(&p)?;
            self.exp_avg[i] = Some(m);
            self.exp_avg_sq[i] = Some(v);
        }
        Ok(())
    }

    /// Moments as named tensors (`exp_avg.<var>`, `exp_avg_sq.<var>`) and step counts.
    pub fn state_tensors(&self) -> (Vec<(String, Tensor)>, HashMap<String, u64>) {
        let mut t = Vec::new();
        let mut steps = HashMap::new();
        for (i, (name, _)) in self.vars.iter().enumerate() {
            if let (Some(m), Some(v)) = (&self.exp_avg[i], &self.exp_avg_sq[i]) {
                t.push((format!("exp_avg.{name}"), m.clone()));
                t.push((format!("exp_avg_sq.{name}"), v.clone()));
            }
            steps.insert(name.clone(), self.steps[i]);
        }
        (t, steps)
    }

    /// Restores what [`AdamW::state_tensors`] returned.
    pub fn load_state(
        &mut self,
        tensors: &HashMap<String, Tensor>,
        steps: &HashMap<String, u64>,
    ) -> Result<()> {
        for (i, (name, var)) in self.vars.iter().enumerate() {
            self.steps[i] = *steps.get(name).ok_or_else(|| Error::Checkpoint {
                path: "optimizer".into(),
                message: format!("no step count for `{name}`"),
            })?;
            let get = |k: String| tensors.get(&k).map(|t| t.to_dtype(var.dtype())).transpose();
            self.exp_avg[i] = get(format!("exp_avg.{name}"))?;
            self.exp_avg_sq[i] = get(format!("exp_avg_sq.{name}"))?;
            if self.steps[i] > 0 && (self.exp_avg[i].is_none() || self.exp_avg_sq[i].is_none()) {
                return Err(Error::Checkpoint {
                    path: "optimizer".into(),
                    message: format!("no moments for `{name}`"),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn var(v: &[f64]) -> Var {
        Var::from_tensor(&Tensor::new(v, &Device::Cpu).unwrap()).unwrap()
    }

    #[test]
    fn clipping_scales_to_max_norm() {
        let (a, b) = (var(&[1.0, 2.0]), var(&[2.0]));
        let vars = vec![("a".to_string(), a.clone()), ("b".to_string(), b.clone())];
        let mut acc = GradAccumulator::new(&vars);
        // loss = 1.5·Σa² + Σb → grads 3a = (3, 6) and 1: two micro-batches of half weight.
        for _ in 0..2 {
            let loss = ((a.as_tensor().sqr().unwrap().sum_all().unwrap() * 1.5).unwrap()
                + b.as_tensor().sum_all().unwrap())
            .unwrap();
            acc.add(&loss.backward().unwrap(), 0.5).unwrap();
        }
        let norm = acc.global_norm().unwrap();
        assert!((norm - (9.0f64 + 36.0 + 1.0).sqrt()).abs() < 1e-12);
        let before = acc.clip(1.0).unwrap();
        assert_eq!(before, norm);
        assert!((acc.global_norm().unwrap() - norm / (norm + 1e-6)).abs() < 1e-12);
        // Below the threshold nothing changes.
        assert!((acc.clip(10.0).unwrap() - norm / (norm + 1e-6)).abs() < 1e-12);
        let g = acc.take();
        assert!(g.iter().all(Option::is_some));
        assert!(acc.take().iter().all(Option::is_none));
    }

    /// Two steps of torch.optim.AdamW(lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    /// on p = [1, −2] with gradients g1 = [0.5, −1], g2 = [0.25, 0.5]; values computed by hand
    /// from PyTorch's update rule.
    #[test]
    fn adamw_matches_pytorch_rule() {
        let p = var(&[1.0, -2.0]);
        let mut opt = AdamW::new(
            vec![("p".into(), p.clone())],
            AdamWConfig {
                weight_decay: 0.01,
                ..Default::default()
            },
        );
        let (lr, b1, b2, eps, wd) = (0.1, 0.9f64, 0.999f64, 1e-8, 0.01);
        let mut want = [1.0f64, -2.0];
        let (mut m, mut v) = ([0.0f64; 2], [0.0f64; 2]);
        for (t, g) in [[0.5, -1.0], [0.25, 0.5]].iter().enumerate() {
            opt.step(&[Some(Tensor::new(&g[..], &Device::Cpu).unwrap())], lr)
                .unwrap();
            for i in 0..2 {
                want[i] *= 1.0 - lr * wd;
                m[i] = b1 * m[i] + (1.0 - b1) * g[i];
                v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
                let (c1, c2) = (1.0 - b1.powi(t as i32 + 1), 1.0 - b2.powi(t as i32 + 1));
                want[i] -= lr / c1 * m[i] / (v[i].sqrt() / c2.sqrt() + eps);
            }
        }
        let got = p.as_tensor().to_vec1::<f64>().unwrap();
        for i in 0..2 {
            assert!((got[i] - want[i]).abs() < 1e-14, "{got:?} vs {want:?}");
        }
        // State round trip: a second optimizer continues identically.
        let (t, s) = opt.state_tensors();
        let q = var(&got);
        let mut opt2 = AdamW::new(
            vec![("p".into(), q.clone())],
            AdamWConfig {
                weight_decay: 0.01,
                ..Default::default()
            },
        );
        opt2.load_state(&t.into_iter().collect(), &s).unwrap();
        let g = Tensor::new(&[0.1f64, -0.3], &Device::Cpu).unwrap();
        opt.step(&[Some(g.clone())], lr).unwrap();
        opt2.step(&[Some(g)], lr).unwrap();
        assert_eq!(
            p.as_tensor().to_vec1::<f64>().unwrap(),
            q.as_tensor().to_vec1::<f64>().unwrap()
        );
    }
}
