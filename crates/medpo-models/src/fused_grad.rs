//! Fused CPU ops *with* hand-written backward passes, for the differentiable (training) path.
//!
//! Built from candle's primitives, an RMSNorm is eight ops, a rotary embedding six and SwiGLU
//! two; each keeps its output alive for the backward pass and adds a gradient buffer (allocated
//! as zeros, then added to) per input. On the medium bench model that elementwise traffic cost
//! more than the matrix multiplies' share of a DPO step. Here each is one op whose backward is
//! one pass per input that needs a gradient, computed from the op's inputs (nothing extra is
//! kept):
//!
//! - [`rms_norm`]: `y = x · r · w` with `r = 1/sqrt(mean(x²) + eps)`;
//!   `dx = r·(g⊙w) − x·r³·mean(g⊙w⊙x)`, `dw = Σ_rows g⊙x·r`.
//! - [`swiglu`]: `y = silu(a) · u`; `da = g·u·s·(1 + a(1 − s))` with `s = sigmoid(a)`,
//!   `du = g·silu(a)`.
//! - [`rope`]: transformers' `x·cos + rotate_half(x)·sin` on (B, H, T, D);
//!   `dx₁ = g₁·c + g₂·s`, `dx₂ = g₂·c − g₁·s`.
//!
//! float32 and float64 on the CPU (the finite-difference tests run in float64 through the same
//! code); other devices and dtypes use the composite candle ops. `tests/gradients.rs` checks
//! gradients by finite differences; the unit tests below compare with the composites.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor, D};
use num_traits::Float;
use rayon::prelude::*;

use crate::error::Result;
use crate::fused::{contiguous, for_chunks, CHUNK};

fn on_cpu_float(xs: &[&Tensor]) -> bool {
    let dt = xs[0].dtype();
    matches!(dt, DType::F32 | DType::F64) && xs.iter().all(|x| x.device().is_cpu() && x.dtype() == dt)
}

macro_rules! dispatch {
    ($what:literal, $s:expr, $( $other:expr ),* ; |$v:ident, $($o:ident),*| $body:expr) => {
        match $s {
            CpuStorage::F32($v) => {
                $( let CpuStorage::F32($o) = $other else { return Err(candle_core::Error::msg(concat!($what, ": mixed dtypes"))) }; )*
                CpuStorage::F32($body)
            }
            CpuStorage::F64($v) => {
                $( let CpuStorage::F64($o) = $other else { return Err(candle_core::Error::msg(concat!($what, ": mixed dtypes"))) }; )*
                CpuStorage::F64($body)
            }
            _ => return Err(candle_core::Error::msg(concat!($what, ": float32 or float64 only"))),
        }
    };
}
pub(crate) use dispatch;

// ---------------------------------------------------------------------------------------------
// RMSNorm
// ---------------------------------------------------------------------------------------------

struct RmsNorm {
    eps: f64,
}

fn inv_rms<F: Float>(x: &[F], eps: f64) -> F {
    let mut s = F::zero();
    for &v in x {
        s = s + v * v;
    }
    (s / F::from(x.len()).unwrap_or(F::one()) + F::from(eps).unwrap_or(F::zero())).sqrt().recip()
}

fn rms_fwd<F: Float + Send + Sync>(x: &[F], w: &[F], eps: f64) -> Vec<F> {
    let d = w.len();
    let mut y = vec![F::zero(); x.len()];
    for_chunks(&mut y, d, |out, r0| {
        for (i, yr) in out.chunks_mut(d).enumerate() {
            let xr = &x[(r0 + i) * d..(r0 + i + 1) * d];
            let r = inv_rms(xr, eps);
            for j in 0..d {
                yr[j] = xr[j] * r * w[j];
            }
        }
    });
    y
}

fn rms_dx<F: Float + Send + Sync>(x: &[F], w: &[F], g: &[F], eps: f64) -> Vec<F> {
    let d = w.len();
    let inv_d = F::from(d).unwrap_or(F::one()).recip();
    let mut dx = vec![F::zero(); x.len()];
    for_chunks(&mut dx, d, |out, r0| {
        for (i, dr) in out.chunks_mut(d).enumerate() {
            let xr = &x[(r0 + i) * d..(r0 + i + 1) * d];
            let gr = &g[(r0 + i) * d..(r0 + i + 1) * d];
            let r = inv_rms(xr, eps);
            let mut dot = F::zero();
            for j in 0..d {
                dot = dot + gr[j] * w[j] * xr[j];
            }
            let c = r * r * r * dot * inv_d;
            for j in 0..d {
                dr[j] = r * gr[j] * w[j] - xr[j] * c;
            }
        }
    });
    dx
}

fn rms_dw<F: Float + Send + Sync>(x: &[F], g: &[F], d: usize, eps: f64) -> Vec<F> {
    let rows = x.len() / d.max(1);
    let per = (CHUNK / d.max(1)).max(1);
    let partial = |c: usize| {
        let mut acc = vec![F::zero(); d];
        for row in c * per..((c + 1) * per).min(rows) {
            let xr = &x[row * d..(row + 1) * d];
            let gr = &g[row * d..(row + 1) * d];
            let r = inv_rms(xr, eps);
            for j in 0..d {
                acc[j] = acc[j] + gr[j] * xr[j] * r;
            }
        }
        acc
    };
    let parts: Vec<Vec<F>> = (0..rows.div_ceil(per)).into_par_iter().map(partial).collect();
    let mut dw = vec![F::zero(); d];
    for p in parts {
        for j in 0..d {
            dw[j] = dw[j] + p[j];
        }
    }
    dw
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "medpo-rms-norm"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let eps = self.eps;
        let out = dispatch!("rms-norm", s1, s2; |x, w| rms_fwd(contiguous(x, l1, "rms-norm")?, contiguous(w, l2, "rms-norm")?, eps));
        Ok((out, l1.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, g: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        let dx = if x.track_op() { Some(x.apply_op3_no_bwd(w, &g, &RmsNormDx { eps: self.eps })?) } else { None };
        let dw = if w.track_op() { Some(x.apply_op2_no_bwd(&g, &RmsNormDw { eps: self.eps })?) } else { None };
        Ok((dx, dw))
    }
}

struct RmsNormDx {
    eps: f64,
}

impl CustomOp3 for RmsNormDx {
    fn name(&self) -> &'static str {
        "medpo-rms-norm-dx"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let eps = self.eps;
        let out = dispatch!("rms-norm-dx", s1, s2, s3; |x, w, g| rms_dx(
            contiguous(x, l1, "rms-norm-dx")?, contiguous(w, l2, "rms-norm-dx")?, contiguous(g, l3, "rms-norm-dx")?, eps));
        Ok((out, l1.shape().clone()))
    }
}

struct RmsNormDw {
    eps: f64,
}

impl CustomOp2 for RmsNormDw {
    fn name(&self) -> &'static str {
        "medpo-rms-norm-dw"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let eps = self.eps;
        let d = *l1.shape().dims().last().unwrap_or(&0);
        let out = dispatch!("rms-norm-dw", s1, s2; |x, g| rms_dw(contiguous(x, l1, "rms-norm-dw")?, contiguous(g, l2, "rms-norm-dw")?, d, eps));
        Ok((out, Shape::from(d)))
    }
}

/// RMSNorm over the last dimension, differentiable in `x` and `w`.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    if on_cpu_float(&[x, w]) && w.rank() == 1 && w.dim(0)? > 0 && x.dim(D::Minus1)? == w.dim(0)? {
        Ok(x.contiguous()?.apply_op2(&w.contiguous()?, RmsNorm { eps })?)
    } else {
        // transformers' order: in float32, then back to the input dtype, then the weight.
        let dt = x.dtype();
        let xf = if dt == DType::F64 { x.clone() } else { x.to_dtype(DType::F32)? };
        let var = xf.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = xf.broadcast_div(&(var + eps)?.sqrt()?)?.to_dtype(dt)?;
        Ok(normed.broadcast_mul(w)?)
    }
}

// ---------------------------------------------------------------------------------------------
// SwiGLU
// ---------------------------------------------------------------------------------------------

struct SwiGlu;

fn sigmoid<F: Float>(a: F) -> F {
    (F::one() + (-a).exp()).recip()
}

fn map2<F: Float + Send + Sync>(a: &[F], b: &[F], f: impl Fn(F, F) -> F + Sync + Send) -> Vec<F> {
    let mut y = vec![F::zero(); a.len()];
    for_chunks(&mut y, 1, |y, o| {
        for (i, y) in y.iter_mut().enumerate() {
            *y = f(a[o + i], b[o + i]);
        }
    });
    y
}

fn map3<F: Float + Send + Sync>(a: &[F], b: &[F], c: &[F], f: impl Fn(F, F, F) -> F + Sync + Send) -> Vec<F> {
    let mut y = vec![F::zero(); a.len()];
    for_chunks(&mut y, 1, |y, o| {
        for (i, y) in y.iter_mut().enumerate() {
            *y = f(a[o + i], b[o + i], c[o + i]);
        }
    });
    y
}

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "medpo-swiglu"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        if l1.shape() != l2.shape() {
            return Err(candle_core::Error::msg(format!("swiglu: shapes {:?} and {:?}", l1.shape(), l2.shape())));
        }
        let out = if let (CpuStorage::F32(a), CpuStorage::F32(u)) = (s1, s2) {
            // float32: the vectorised kernel the inference path uses.
            CpuStorage::F32(crate::fused::silu_mul_slices(contiguous(a, l1, "swiglu")?, contiguous(u, l2, "swiglu")?))
        } else {
            dispatch!("swiglu", s1, s2; |a, u| map2(contiguous(a, l1, "swiglu")?, contiguous(u, l2, "swiglu")?,
                |a, u| a * sigmoid(a) * u))
        };
        Ok((out, l1.shape().clone()))
    }

    fn bwd(&self, a: &Tensor, u: &Tensor, _res: &Tensor, g: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        let da = if a.track_op() { Some(a.apply_op3_no_bwd(u, &g, &SwiGluDa)?) } else { None };
        let du = if u.track_op() { Some(a.apply_op2_no_bwd(&g, &SwiGluDu)?) } else { None };
        Ok((da, du))
    }
}

struct SwiGluDa;

impl CustomOp3 for SwiGluDa {
    fn name(&self) -> &'static str {
        "medpo-swiglu-da"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let out = dispatch!("swiglu-da", s1, s2, s3; |a, u, g| map3(
            contiguous(a, l1, "swiglu-da")?, contiguous(u, l2, "swiglu-da")?, contiguous(g, l3, "swiglu-da")?,
            |a, u, g| { let s = sigmoid(a); g * u * s * (1.0 + a * (1.0 - s)) }));
        Ok((out, l1.shape().clone()))
    }
}

struct SwiGluDu;

impl CustomOp2 for SwiGluDu {
    fn name(&self) -> &'static str {
        "medpo-swiglu-du"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let out = dispatch!("swiglu-du", s1, s2; |a, g| map2(contiguous(a, l1, "swiglu-du")?, contiguous(g, l2, "swiglu-du")?,
            |a, g| g * a * sigmoid(a)));
        Ok((out, l1.shape().clone()))
    }
}

/// `silu(a) · u`, differentiable in both.
pub fn swiglu(a: &Tensor, u: &Tensor) -> Result<Tensor> {
    if on_cpu_float(&[a, u]) && a.dims() == u.dims() {
        Ok(a.contiguous()?.apply_op2(&u.contiguous()?, SwiGlu)?)
    } else {
        Ok((a.silu()? * u)?)
    }
}

// ---------------------------------------------------------------------------------------------
// Rotary embedding
// ---------------------------------------------------------------------------------------------

/// cos/sin tables (B, T, D/2) in float32 (as transformers computes them), shared by every layer.
#[derive(Clone)]
pub struct RopeTables {
    cos: Arc<Vec<f32>>,
    sin: Arc<Vec<f32>>,
    b: usize,
    t: usize,
    half: usize,
}

impl RopeTables {
    /// Tables from (B, T, D/2) row-major cos and sin values.
    pub fn new(cos: Vec<f32>, sin: Vec<f32>, b: usize, t: usize, half: usize) -> Self {
        RopeTables { cos: Arc::new(cos), sin: Arc::new(sin), b, t, half }
    }

    /// The tables as (B, 1, T, D) tensors with the halves repeated, for the composite form.
    pub fn full(&self, dtype: DType, dev: &candle_core::Device) -> Result<(Tensor, Tensor)> {
        let shape = (self.b, self.t, self.half);
        let c = Tensor::from_slice(&self.cos, shape, dev)?.to_dtype(dtype)?;
        let s = Tensor::from_slice(&self.sin, shape, dev)?.to_dtype(dtype)?;
        Ok((Tensor::cat(&[&c, &c], D::Minus1)?.unsqueeze(1)?, Tensor::cat(&[&s, &s], D::Minus1)?.unsqueeze(1)?))
    }
}

struct Rope {
    tables: RopeTables,
    /// Backward: rotate by −angle.
    inverse: bool,
}

fn rope_apply<F: Float + Send + Sync>(x: &[F], tab: &RopeTables, heads: usize, inverse: bool) -> Vec<F> {
    let (t, half) = (tab.t, tab.half);
    let d = 2 * half;
    let mut y = vec![F::zero(); x.len()];
    for_chunks(&mut y, d, |out, r0| {
        for (i, yr) in out.chunks_mut(d).enumerate() {
            let row = r0 + i;
            // Row order (B, H, T): the table row is (b, t).
            let (bi, ti) = (row / (heads * t), row % t);
            let cs = &tab.cos[(bi * t + ti) * half..(bi * t + ti + 1) * half];
            let sn = &tab.sin[(bi * t + ti) * half..(bi * t + ti + 1) * half];
            let xr = &x[row * d..(row + 1) * d];
            for j in 0..half {
                let c = F::from(cs[j]).unwrap_or(F::zero());
                let s = F::from(sn[j]).unwrap_or(F::zero());
                let s = if inverse { -s } else { s };
                let (x1, x2) = (xr[j], xr[j + half]);
                yr[j] = x1 * c - x2 * s;
                yr[j + half] = x2 * c + x1 * s;
            }
        }
    });
    y
}

impl CustomOp1 for Rope {
    fn name(&self) -> &'static str {
        "medpo-rope"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let dims = l.shape().dims();
        let tab = &self.tables;
        if dims.len() != 4 || dims[0] != tab.b || dims[2] != tab.t || dims[3] != 2 * tab.half {
            return Err(candle_core::Error::msg(format!(
                "rope: input {dims:?} does not match tables ({}, _, {}, {})",
                tab.b,
                tab.t,
                2 * tab.half
            )));
        }
        let heads = dims[1];
        let inverse = self.inverse;
        let out = match s {
            CpuStorage::F32(x) => CpuStorage::F32(rope_apply(contiguous(x, l, "rope")?, tab, heads, inverse)),
            CpuStorage::F64(x) => CpuStorage::F64(rope_apply(contiguous(x, l, "rope")?, tab, heads, inverse)),
            _ => return Err(candle_core::Error::msg("rope: float32 or float64 only")),
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, _res: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        // A rotation's adjoint is the rotation by the opposite angle.
        let inv = Rope { tables: self.tables.clone(), inverse: !self.inverse };
        Ok(Some(g.contiguous()?.apply_op1_no_bwd(&inv)?))
    }
}

/// Rotary embedding of `x` (B, H, T, D) (transformers' `rotate_half` convention), returned
/// contiguous, differentiable in `x`.
pub fn rope(x: &Tensor, tables: &RopeTables) -> Result<Tensor> {
    if on_cpu_float(&[x]) && tables.half > 0 {
        Ok(x.contiguous()?.apply_op1(Rope { tables: tables.clone(), inverse: false })?)
    } else {
        let (cos, sin) = tables.full(x.dtype(), x.device())?;
        let d = x.dim(D::Minus1)?;
        let (x1, x2) = (x.narrow(D::Minus1, 0, d / 2)?, x.narrow(D::Minus1, d / 2, d / 2)?);
        let rot = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
        Ok((x.broadcast_mul(&cos)? + rot.broadcast_mul(&sin)?)?.contiguous()?)
    }
}

/// max |a − b| over all elements, as f64 (unit tests of this module and `fused.rs`).
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    use super::max_abs_diff as max_diff;

    /// Value and gradients of `f` against the composite `g` on the same inputs.
    fn same_value_and_grads(
        inputs: &[Var],
        f: impl Fn(&[Tensor]) -> Tensor,
        g: impl Fn(&[Tensor]) -> Tensor,
        tol: f64,
    ) {
        let ts: Vec<Tensor> = inputs.iter().map(|v| v.as_tensor().clone()).collect();
        let (a, b) = (f(&ts), g(&ts));
        assert!(max_diff(&a, &b) < tol, "values differ by {}", max_diff(&a, &b));
        // A fixed random cotangent so that every output element matters.
        let cot = Tensor::randn(0f64, 1.0, a.dims(), &Device::Cpu).unwrap().to_dtype(a.dtype()).unwrap();
        let ga = (a * &cot).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = (b * &cot).unwrap().sum_all().unwrap().backward().unwrap();
        for (i, v) in inputs.iter().enumerate() {
            let (x, y) = (ga.get(v.as_tensor()).expect("fused grad"), gb.get(v.as_tensor()).expect("composite grad"));
            assert!(max_diff(x, y) < tol, "input {i}: gradients differ by {}", max_diff(x, y));
        }
    }

    #[test]
    fn rms_norm_matches_the_composite() {
        for dt in [DType::F64, DType::F32] {
            let x = Var::from_tensor(&Tensor::randn(0f64, 2.0, (3, 70, 48), &Device::Cpu).unwrap().to_dtype(dt).unwrap()).unwrap();
            let w = Var::from_tensor(&Tensor::randn(1f64, 0.3, 48, &Device::Cpu).unwrap().to_dtype(dt).unwrap()).unwrap();
            let tol = if dt == DType::F64 { 1e-10 } else { 1e-4 };
            same_value_and_grads(
                &[x, w],
                |t| rms_norm(&t[0], &t[1], 1e-5).unwrap(),
                |t| {
                    let var = t[0].sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
                    t[0].broadcast_div(&(var + 1e-5).unwrap().sqrt().unwrap()).unwrap().broadcast_mul(&t[1]).unwrap()
                },
                tol,
            );
        }
    }

    #[test]
    fn swiglu_matches_the_composite() {
        for dt in [DType::F64, DType::F32] {
            let a = Var::from_tensor(&Tensor::randn(0f64, 3.0, (2, 9, 1000), &Device::Cpu).unwrap().to_dtype(dt).unwrap()).unwrap();
            let u = Var::from_tensor(&Tensor::randn(0f64, 1.0, (2, 9, 1000), &Device::Cpu).unwrap().to_dtype(dt).unwrap()).unwrap();
            let tol = if dt == DType::F64 { 1e-10 } else { 1e-4 };
            same_value_and_grads(&[a, u], |t| swiglu(&t[0], &t[1]).unwrap(), |t| (t[0].silu().unwrap() * &t[1]).unwrap(), tol);
        }
    }

    #[test]
    fn rope_matches_the_composite() {
        let (b, h, t, half) = (2usize, 3usize, 5usize, 4usize);
        let cos: Vec<f32> = (0..b * t * half).map(|i| (i as f32 * 0.37).cos()).collect();
        let sin: Vec<f32> = (0..b * t * half).map(|i| (i as f32 * 0.37).sin()).collect();
        let tab = RopeTables::new(cos, sin, b, t, half);
        for dt in [DType::F64, DType::F32] {
            // A transposed view, as the attention passes it.
            let x = Var::from_tensor(&Tensor::randn(0f64, 1.0, (b, t, h, 2 * half), &Device::Cpu).unwrap().to_dtype(dt).unwrap()).unwrap();
            let tol = if dt == DType::F64 { 1e-12 } else { 1e-5 };
            let tab2 = tab.clone();
            same_value_and_grads(
                &[x],
                |ts| rope(&ts[0].transpose(1, 2).unwrap(), &tab).unwrap(),
                move |ts| {
                    let x = ts[0].transpose(1, 2).unwrap();
                    let (c, s) = tab2.full(x.dtype(), x.device()).unwrap();
                    let (x1, x2) = (x.narrow(D::Minus1, 0, half).unwrap(), x.narrow(D::Minus1, half, half).unwrap());
                    let rot = Tensor::cat(&[&x2.neg().unwrap(), &x1], D::Minus1).unwrap();
                    (x.broadcast_mul(&c).unwrap() + rot.broadcast_mul(&s).unwrap()).unwrap()
                },
                tol,
            );
        }
    }

    #[test]
    fn shape_errors_name_the_op() {
        let tab = RopeTables::new(vec![0.0; 8], vec![0.0; 8], 1, 2, 4);
        let x = Tensor::zeros((1, 1, 3, 8), DType::F32, &Device::Cpu).unwrap();
        let e = rope(&x, &tab).unwrap_err().to_string();
        assert!(e.contains("rope: input"), "{e}");
    }
}
