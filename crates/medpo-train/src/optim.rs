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
                let g = if scale == 1.0 { g.clone() } else { (g * scale)? };
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
            sq += match fused::sum_sq(g) {
                Some(x) => x,
                None => g.to_dtype(DType::F64)?.sqr()?.sum_all()?.to_scalar::<f64>()?,
            };
        }
        Ok(sq.sqrt())
    }

    /// Scales the gradients so their global norm is at most `max_norm`, as
    /// `torch.nn.utils.clip_grad_norm_` (coefficient max_norm/(norm + 1e-6), capped at 1).
    /// Returns the norm before clipping.
    pub fn clip(&mut self, max_norm: f64) -> Result<f64> {
        let (norm, coef) = self.clip_coefficient(max_norm)?;
        if coef < 1.0 {
            for s in self.sums.iter_mut() {
                if let Some(g) = s.take() {
                    *s = Some((g * coef)?);
                }
            }
        }
        Ok(norm)
    }

    /// The global norm and the clipping coefficient (≤ 1) [`GradAccumulator::clip`] would
    /// apply, without scaling anything: [`AdamW::step_scaled`] folds it into its update.
    pub fn clip_coefficient(&self, max_norm: f64) -> Result<(f64, f64)> {
        let norm = self.global_norm()?;
        Ok((norm, (max_norm / (norm + 1e-6)).min(1.0)))
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
        self.step_scaled(grads, 1.0, lr)
    }

    /// [`AdamW::step`] on `grad_scale ×` the gradients (the clipping coefficient of
    /// [`GradAccumulator::clip_coefficient`], applied on the fly).
    pub fn step_scaled(&mut self, grads: &[Option<Tensor>], grad_scale: f64, lr: f64) -> Result<()> {
        self.step_with(grads, grad_scale, lr, true)
    }

    /// `fused`: float32/float64 CPU parameters are updated in place in three passes (first
    /// moment, second moment, parameter), without temporaries; otherwise (and on other
    /// devices) with candle ops. Both compute PyTorch's update.
    fn step_with(&mut self, grads: &[Option<Tensor>], grad_scale: f64, lr: f64, fused: bool) -> Result<()> {
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
            let bc1 = 1.0 - b1.powi(t);
            let bc2 = 1.0 - b2.powi(t);
            let p = var.as_tensor();
            if fused && fused::applies(p, &g) {
                let m = match &self.exp_avg[i] {
                    Some(m) => m.clone(),
                    None => p.zeros_like()?,
                };
                let v = match &self.exp_avg_sq[i] {
                    Some(v) => v.clone(),
                    None => p.zeros_like()?,
                };
                let up = fused::Moments { b1, b2, grad_scale };
                m.inplace_op2(&g, &fused::Moment { up, second: false })?;
                v.inplace_op2(&g, &fused::Moment { up, second: true })?;
                p.inplace_op3(&m, &v, &fused::Apply { lr, wd, bc1, bc2, eps })?;
                self.exp_avg[i] = Some(m);
                self.exp_avg_sq[i] = Some(v);
                continue;
            }
            let g = if grad_scale == 1.0 { g } else { (g * grad_scale)? };
            let m = match &self.exp_avg[i] {
                None => (&g * (1.0 - b1))?,
                Some(m) => ((m * b1)? + (&g * (1.0 - b1))?)?,
            };
            let v = match &self.exp_avg_sq[i] {
                None => (g.sqr()? * (1.0 - b2))?,
                Some(v) => ((v * b2)? + (g.sqr()? * (1.0 - b2))?)?,
            };
            let p = (p * (1.0 - lr * wd))?;
            let denom = ((v.sqrt()? / bc2.sqrt())? + eps)?;
            let p = (p - ((&m / denom)? * (lr / bc1))?)?;
            var.set(&p)?;
            self.exp_avg[i] = Some(m);
            self.exp_avg_sq[i] = Some(v);
        }
        Ok(())
    }

    /// Moments as named tensors (`exp_avg.<var>`, `exp_avg_sq.<var>`) and step counts. The
    /// tensors share the optimizer's buffers, which the next step updates in place: write them
    /// out (as checkpoints do) or copy them before stepping again.
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
            // Own copies (updated in place from now on; the caller's tensors stay as they are).
            let get = |k: String| tensors.get(&k).map(|t| t.to_dtype(var.dtype())?.copy()).transpose();
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

/// In-place CPU kernels of the optimizer (one pass each, no temporaries) and the squared norm.
mod fused {
    use candle_core::{CpuStorage, DType, InplaceOp2, InplaceOp3, Layout, Storage, Tensor};
    use num_traits::Float;
    use rayon::prelude::*;

    const CHUNK: usize = 1 << 16;

    /// Whether the in-place update runs on `p` with gradient `g`.
    pub fn applies(p: &Tensor, g: &Tensor) -> bool {
        p.device().is_cpu()
            && matches!(p.dtype(), DType::F32 | DType::F64)
            && g.dtype() == p.dtype()
            && p.is_contiguous()
            && g.is_contiguous()
            && p.shape() == g.shape()
    }

    /// Σ x² in float64 of a contiguous float32/float64 CPU tensor (None: another kind).
    pub fn sum_sq(x: &Tensor) -> Option<f64> {
        if !x.device().is_cpu() {
            return None;
        }
        let (s, l) = x.storage_and_layout();
        let (a, z) = l.contiguous_offsets()?;
        fn go<F: Float + Sync>(v: &[F]) -> f64 {
            v.par_chunks(CHUNK)
                .map(|c| c.iter().map(|&x| x.to_f64().unwrap_or(f64::NAN).powi(2)).sum::<f64>())
                .sum()
        }
        match &*s {
            Storage::Cpu(CpuStorage::F32(v)) => Some(go(&v[a..z])),
            Storage::Cpu(CpuStorage::F64(v)) => Some(go(&v[a..z])),
            _ => None,
        }
    }

    fn slices<'a, F>(v: &'a [F], l: &Layout) -> candle_core::Result<&'a [F]> {
        let (a, z) = l
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::msg("adamw: tensors must be contiguous"))?;
        Ok(&v[a..z])
    }

    fn slices_mut<'a, F>(v: &'a mut [F], l: &Layout) -> candle_core::Result<&'a mut [F]> {
        let (a, z) = l
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::msg("adamw: tensors must be contiguous"))?;
        Ok(&mut v[a..z])
    }

    #[derive(Clone, Copy)]
    pub struct Moments {
        pub b1: f64,
        pub b2: f64,
        pub grad_scale: f64,
    }

    /// m ← β₁·m + (1 − β₁)·s·g, or v ← β₂·v + (1 − β₂)·(s·g)².
    pub struct Moment {
        pub up: Moments,
        pub second: bool,
    }

    impl Moment {
        fn run<F: Float + Send + Sync>(&self, dst: &mut [F], g: &[F]) {
            let c = |x: f64| F::from(x).unwrap_or(F::nan());
            let s = c(self.up.grad_scale);
            let (b, nb) = if self.second { (c(self.up.b2), c(1.0 - self.up.b2)) } else { (c(self.up.b1), c(1.0 - self.up.b1)) };
            let second = self.second;
            dst.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK)).for_each(|(d, g)| {
                for (d, &g) in d.iter_mut().zip(g) {
                    let g = g * s;
                    *d = *d * b + nb * if second { g * g } else { g };
                }
            });
        }
    }

    impl InplaceOp2 for Moment {
        fn name(&self) -> &'static str {
            "medpo-adamw-moment"
        }

        fn cpu_fwd(&self, dst: &mut CpuStorage, dst_l: &Layout, g: &CpuStorage, gl: &Layout) -> candle_core::Result<()> {
            match (dst, g) {
                (CpuStorage::F32(d), CpuStorage::F32(g)) => self.run(slices_mut(d, dst_l)?, slices(g, gl)?),
                (CpuStorage::F64(d), CpuStorage::F64(g)) => self.run(slices_mut(d, dst_l)?, slices(g, gl)?),
                _ => return Err(candle_core::Error::msg("adamw: float32 or float64, all alike")),
            }
            Ok(())
        }
    }

    /// p ← p·(1 − lr·wd) − (lr/bc₁)·m / (√v/√bc₂ + ε), PyTorch's order of operations.
    pub struct Apply {
        pub lr: f64,
        pub wd: f64,
        pub bc1: f64,
        pub bc2: f64,
        pub eps: f64,
    }

    impl Apply {
        fn run<F: Float + Send + Sync>(&self, p: &mut [F], m: &[F], v: &[F]) {
            let c = |x: f64| F::from(x).unwrap_or(F::nan());
            let (decay, step, sbc2, eps) = (c(1.0 - self.lr * self.wd), c(self.lr / self.bc1), c(self.bc2.sqrt()), c(self.eps));
            p.par_chunks_mut(CHUNK).zip(m.par_chunks(CHUNK).zip(v.par_chunks(CHUNK))).for_each(|(p, (m, v))| {
                for ((p, &m), &v) in p.iter_mut().zip(m).zip(v) {
                    *p = *p * decay - m / (v.sqrt() / sbc2 + eps) * step;
                }
            });
        }
    }

    impl InplaceOp3 for Apply {
        fn name(&self) -> &'static str {
            "medpo-adamw-apply"
        }

        fn cpu_fwd(
            &self,
            dst: &mut CpuStorage,
            dst_l: &Layout,
            m: &CpuStorage,
            ml: &Layout,
            v: &CpuStorage,
            vl: &Layout,
        ) -> candle_core::Result<()> {
            match (dst, m, v) {
                (CpuStorage::F32(p), CpuStorage::F32(m), CpuStorage::F32(v)) => {
                    self.run(slices_mut(p, dst_l)?, slices(m, ml)?, slices(v, vl)?)
                }
                (CpuStorage::F64(p), CpuStorage::F64(m), CpuStorage::F64(v)) => {
                    self.run(slices_mut(p, dst_l)?, slices(m, ml)?, slices(v, vl)?)
                }
                _ => return Err(candle_core::Error::msg("adamw: float32 or float64, all alike")),
            }
            Ok(())
        }
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

    /// The in-place CPU update equals the candle-op one (float32, with a gradient scale and
    /// weight decay, over three steps), and the fast squared norm equals the composite.
    #[test]
    fn fused_step_equals_the_composite() {
        let n = 1000;
        let init: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
        let make = || Var::from_vec(init.clone(), n, &Device::Cpu).unwrap();
        let (a, b) = (make(), make());
        let cfg = AdamWConfig { weight_decay: 0.01, ..Default::default() };
        let mut oa = AdamW::new(vec![("p".into(), a.clone())], cfg);
        let mut ob = AdamW::new(vec![("p".into(), b.clone())], cfg);
        for step in 0..3 {
            let g: Vec<f32> = (0..n).map(|i| (((i + step) * 53 % 97) as f32 - 48.0) / 30.0).collect();
            let g = Tensor::from_vec(g, n, &Device::Cpu).unwrap();
            oa.step_with(&[Some(g.clone())], 0.7, 1e-2, true).unwrap();
            ob.step_with(&[Some(g)], 0.7, 1e-2, false).unwrap();
        }
        let (x, y) = (a.as_tensor().to_vec1::<f32>().unwrap(), b.as_tensor().to_vec1::<f32>().unwrap());
        for i in 0..n {
            assert!((x[i] - y[i]).abs() <= 1e-6 * (1.0 + y[i].abs()), "{i}: {} vs {}", x[i], y[i]);
        }
        let want = a.as_tensor().to_dtype(DType::F64).unwrap().sqr().unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap();
        let got = fused::sum_sq(a.as_tensor()).unwrap();
        assert!((got - want).abs() < 1e-9 * want);
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
