//! Fused CPU kernels for the inference path (no backward; the differentiable path keeps
//! candle's composite ops). Each is one parallel pass where candle would make two or three,
//! sequential ones among them (candle's unary maps run on one thread).
//!
//! - [`layer_norm`]: two-pass mean/variance per row. candle-nn's fused `layer_norm` computes
//!   `E[x²] − E[x]²` in float32, which cancels badly on rows with a large mean (CLIP's residual
//!   stream has outlier channels of several hundred), so it is not used.
//! - SwiGLU: the float32 forward of [`crate::fused_grad::swiglu`] ([`silu_mul_slices`]).
//! - [`quick_gelu`]: `x · sigmoid(1.702 x)`, CLIP's activation.
//!
//! Each falls back to the composite candle ops off the CPU, for dtypes other than float32, and
//! whenever an input records operations for a backward pass.

use candle_core::{CpuStorage, CustomOp1, CustomOp3, DType, Layout, Shape, Tensor, D};
use rayon::prelude::*;

use crate::error::Result;

/// Elements per parallel task of the element-wise kernels; anything smaller runs on the calling
/// thread (handing a job to the rayon pool costs microseconds, a decode step makes dozens).
pub(crate) const CHUNK: usize = 1 << 14;

fn fusable(xs: &[&Tensor]) -> bool {
    xs.iter()
        .all(|x| x.device().is_cpu() && x.dtype() == DType::F32 && !x.track_op())
}

/// The elements of `v` that layout `l` covers, which must be contiguous (`what` names the op).
pub(crate) fn contiguous<'a, T>(v: &'a [T], l: &Layout, what: &str) -> candle_core::Result<&'a [T]> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::msg(format!("{what}: input must be contiguous")))?;
    Ok(&v[a..b])
}

fn slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        return Err(candle_core::Error::msg(format!("{what}: float32 only")));
    };
    contiguous(v, l, what)
}

/// Runs `f(piece, first)` over pieces of `out` made of whole units of `unit` elements (rows,
/// or single elements with `unit` 1); `first` is the index of the piece's first unit. Pieces
/// of about [`CHUNK`] elements go to the rayon pool; a small `out` runs on the calling thread.
pub(crate) fn for_chunks<T: Send>(out: &mut [T], unit: usize, f: impl Fn(&mut [T], usize) + Sync + Send) {
    let per = (CHUNK / unit.max(1)).max(1);
    if out.len() <= CHUNK {
        f(out, 0);
    } else {
        out.par_chunks_mut(per * unit.max(1)).enumerate().for_each(|(c, o)| f(o, c * per));
    }
}

/// `silu(g) · u` element-wise with the vectorised `exp` (the forward of
/// [`crate::fused_grad::swiglu`] in float32).
pub(crate) fn silu_mul_slices(g: &[f32], u: &[f32]) -> Vec<f32> {
    let isa = crate::gemv::isa();
    let mut y = vec![0f32; g.len()];
    for_chunks(&mut y, 1, |yc, o| kernels::silu_mul(isa, &g[o..o + yc.len()], &u[o..o + yc.len()], yc));
    y
}

struct LayerNorm {
    eps: f32,
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "medpo-layer-norm"
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
        let (x, w, b) = (
            slice(s1, l1, "layer-norm")?,
            slice(s2, l2, "layer-norm")?,
            slice(s3, l3, "layer-norm")?,
        );
        let d = *l1.shape().dims().last().unwrap_or(&0);
        if d == 0 || w.len() != d || b.len() != d {
            return Err(candle_core::Error::msg(format!(
                "layer-norm: width {d}, weight {}, bias {}",
                w.len(),
                b.len()
            )));
        }
        let mut y = vec![0f32; x.len()];
        let eps = self.eps;
        for_chunks(&mut y, d, |out, r0| {
            for (y, x) in out.chunks_mut(d).zip(x[r0 * d..].chunks(d)) {
                let mean = x.iter().sum::<f32>() / d as f32;
                let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
                let inv = 1.0 / (var + eps).sqrt();
                for i in 0..d {
                    y[i] = (x[i] - mean) * inv * w[i] + b[i];
                }
            }
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }
}

/// LayerNorm over the last dimension.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f32) -> Result<Tensor> {
    if fusable(&[x, w, b]) {
        Ok(x.contiguous()?.apply_op3_no_bwd(
            &w.contiguous()?,
            &b.contiguous()?,
            &LayerNorm { eps },
        )?)
    } else {
        Ok(candle_nn::ops::layer_norm_slow(x, w, b, eps)?)
    }
}

struct QuickGelu;

impl CustomOp1 for QuickGelu {
    fn name(&self) -> &'static str {
        "medpo-quick-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = slice(s, l, "quick-gelu")?;
        let mut y = vec![0f32; x.len()];
        let isa = crate::gemv::isa();
        for_chunks(&mut y, 1, |yc, o| kernels::quick_gelu(isa, &x[o..o + yc.len()], yc));
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }
}

/// `x · sigmoid(1.702 x)`.
pub fn quick_gelu(x: &Tensor) -> Result<Tensor> {
    if fusable(&[x]) {
        Ok(x.contiguous()?.apply_op1_no_bwd(&QuickGelu)?)
    } else {
        Ok((x * candle_nn::ops::sigmoid(&(x * 1.702)?)?)?)
    }
}

/// Softmax over the last axis where only allowed keys take part (probability 0 elsewhere;
/// a row with none allowed is uniform, as with a finite fill value). `allowed`, when given, is
/// (B, Tq, Tk) row-major and the input (B, G, Tq, Tk) for any number of groups G (heads, or
/// the query heads of one KV head stacked along the query axis: then row `g·Tq + i` of the
/// stack is query `i`).
struct MaskedSoftmax {
    allowed: Option<std::sync::Arc<Vec<bool>>>,
    tq: usize,
}

impl CustomOp1 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "medpo-masked-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = slice(s, l, "masked-softmax")?;
        let dims = l.shape().dims();
        let tk = *dims.last().unwrap_or(&0);
        let b = dims.first().copied().unwrap_or(0);
        if tk == 0 || self.tq == 0 || x.len() % (self.tq * tk) != 0 {
            return Err(candle_core::Error::msg(format!("masked-softmax: unexpected shape {dims:?}")));
        }
        if let Some(m) = &self.allowed {
            if m.len() != b * self.tq * tk {
                return Err(candle_core::Error::msg(format!("masked-softmax: mask of {} for shape {dims:?}", m.len())));
            }
        }
        let per_batch = x.len() / b.max(1);
        let isa = crate::gemv::isa();
        let (tq, allowed) = (self.tq, self.allowed.as_deref());
        let mut y = vec![0f32; x.len()];
        for_chunks(&mut y, tk, |out, r0| {
            for (i, (y, x)) in out.chunks_mut(tk).zip(x[r0 * tk..].chunks(tk)).enumerate() {
                let r = r0 + i;
                let m = allowed.map(|m| {
                    let (bi, i) = (r * tk / per_batch, r % tq);
                    &m[(bi * tq + i) * tk..(bi * tq + i + 1) * tk]
                });
                kernels::softmax_row(isa, x, m, y);
            }
        });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }
}

/// Softmax over the last dimension: a fused kernel when nothing is tracked, else the
/// differentiable composite.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if fusable(&[x]) && x.rank() >= 2 {
        let tq = x.dim(x.rank() - 2)?;
        Ok(x.contiguous()?.apply_op1_no_bwd(&MaskedSoftmax { allowed: None, tq })?)
    } else if x.track_op() {
        Ok(candle_nn::ops::softmax(x, D::Minus1)?)
    } else {
        Ok(candle_nn::ops::softmax_last_dim(&x.contiguous()?)?)
    }
}

/// Inference softmax of scores (B, G, G·… see [`MaskedSoftmax`]) restricted to `allowed`
/// (B, Tq, Tk). Float32 on the CPU only; the caller keeps a composite for other cases.
pub(crate) fn masked_softmax(scores: &Tensor, allowed: std::sync::Arc<Vec<bool>>, tq: usize) -> Result<Tensor> {
    Ok(scores.contiguous()?.apply_op1_no_bwd(&MaskedSoftmax { allowed: Some(allowed), tq })?)
}

/// The element-wise kernels, compiled per instruction set with a polynomial `exp` the
/// compiler can vectorise (libm's `expf` is called one element at a time).
pub(crate) mod kernels {
    use crate::gemv::Isa;

    /// `exp(x)` for float32: Cephes' range reduction and degree-6 polynomial, within 2 ulp
    /// on [-87.3, 88]; 0 below, saturating at `exp(88)` ≈ 1.65e38 above (never infinite; the
    /// callers only need large values to be large).
    #[inline(always)]
    pub fn exp(x: f32) -> f32 {
        const LOG2E: f32 = std::f32::consts::LOG2_E;
        const C1: f32 = 0.693_359_4;
        const C2: f32 = -2.121_944_4e-4;
        let under = x < -87.3;
        let x = x.clamp(-87.3, 88.0);
        // Round to nearest with the 1.5·2^23 trick (no call to `roundf`).
        let n = (x * LOG2E + 12_582_912.0) - 12_582_912.0;
        let r = x - n * C1 - n * C2;
        let mut p = 1.987_569_1e-4f32;
        p = p * r + 1.398_199_9e-3;
        p = p * r + 8.333_452e-3;
        p = p * r + 4.166_579_6e-2;
        p = p * r + 1.666_666_5e-1;
        p = p * r + 5.000_000_1e-1;
        let e = p * r * r + r + 1.0;
        let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
        if under { 0.0 } else { e * scale }
    }

    macro_rules! versions {
        ($name:ident ( $($arg:ident : $ty:ty),* ) $body:block) => {
            pub fn $name(isa: Isa, $($arg: $ty),*) {
                #[inline(always)]
                fn imp($($arg: $ty),*) $body
                #[cfg(target_arch = "x86_64")]
                #[target_feature(enable = "avx512f")]
                unsafe fn v4($($arg: $ty),*) { imp($($arg),*) }
                #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($arg: $ty),*) { imp($($arg),*) }
                match isa {
                    // SAFETY: `isa` is only these variants when the CPU has the features.
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512 => unsafe { v4($($arg),*) },
                    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
                    Isa::Avx2 => unsafe { v3($($arg),*) },
                    Isa::Plain => imp($($arg),*),
                }
            }
        };
    }

    versions!(silu_mul(g: &[f32], u: &[f32], y: &mut [f32]) {
        for ((y, &g), &u) in y.iter_mut().zip(g).zip(u) {
            *y = g / (1.0 + exp(-g)) * u;
        }
    });

    versions!(quick_gelu(x: &[f32], y: &mut [f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = x / (1.0 + exp(-1.702 * x));
        }
    });

    /// Σ x with 16 partial sums (a single running sum cannot be vectorised).
    #[inline(always)]
    fn sum(x: &[f32]) -> f32 {
        let mut acc = [0f32; 16];
        let mut chunks = x.chunks_exact(16);
        for c in &mut chunks {
            for i in 0..16 {
                acc[i] += c[i];
            }
        }
        acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
    }

    /// max x over the allowed entries (−inf if none), with 16 partial maxima.
    #[inline(always)]
    fn masked_max(x: &[f32], allowed: Option<&[bool]>) -> f32 {
        let mut acc = [f32::NEG_INFINITY; 16];
        let n = x.len() / 16 * 16;
        match allowed {
            Some(m) => {
                for (c, cm) in x[..n].chunks_exact(16).zip(m[..n].chunks_exact(16)) {
                    for i in 0..16 {
                        let v = if cm[i] { c[i] } else { f32::NEG_INFINITY };
                        acc[i] = if v > acc[i] { v } else { acc[i] };
                    }
                }
                for i in n..x.len() {
                    if m[i] && x[i] > acc[0] {
                        acc[0] = x[i];
                    }
                }
            }
            None => {
                for c in x[..n].chunks_exact(16) {
                    for i in 0..16 {
                        acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
                    }
                }
                for &v in &x[n..] {
                    if v > acc[0] {
                        acc[0] = v;
                    }
                }
            }
        }
        acc.iter().fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a })
    }

    versions!(softmax_row(x: &[f32], allowed: Option<&[bool]>, y: &mut [f32]) {
        let max = masked_max(x, allowed);
        if max == f32::NEG_INFINITY {
            y.fill(1.0 / y.len() as f32);
            return;
        }
        match allowed {
            Some(m) => {
                for ((y, &v), &a) in y.iter_mut().zip(x).zip(m) {
                    let e = exp(v - max);
                    *y = if a { e } else { 0.0 };
                }
            }
            None => {
                for (y, &v) in y.iter_mut().zip(x) {
                    *y = exp(v - max);
                }
            }
        }
        let inv = 1.0 / sum(y);
        for y in y.iter_mut() {
            *y *= inv;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    use crate::fused_grad::max_abs_diff as max_diff;

    #[test]
    fn fused_kernels_equal_the_composites() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        // Rows with a large mean: the case where E[x²] − E[x]² in float32 goes wrong.
        let x = (Tensor::randn(0f32, 1.0, (3, 5, 384), &dev)? + 300.0)?;
        let w = Tensor::randn(0f32, 1.0, 384, &dev)?;
        let b = Tensor::randn(0f32, 1.0, 384, &dev)?;
        let f64_ref = candle_nn::ops::layer_norm_slow(&x.to_dtype(DType::F64)?, &w.to_dtype(DType::F64)?, &b.to_dtype(DType::F64)?, 1e-5)?
            .to_dtype(DType::F32)?;
        let ours = max_diff(&layer_norm(&x, &w, &b, 1e-5).unwrap(), &f64_ref);
        let one_pass = max_diff(&candle_nn::ops::layer_norm(&x, &w, &b, 1e-5)?, &f64_ref);
        assert!(ours < 1e-3, "two-pass layer norm off by {ours}");
        assert!(one_pass > 10.0 * ours, "one-pass {one_pass} vs two-pass {ours}");

        let g = Tensor::randn(0f32, 3.0, (2, 7, 1000), &dev)?;
        let u = Tensor::randn(0f32, 1.0, (2, 7, 1000), &dev)?;
        assert!(max_diff(&crate::fused_grad::swiglu(&g, &u).unwrap(), &(g.silu()? * &u)?) < 1e-5);
        let want = (&g * candle_nn::ops::sigmoid(&(&g * 1.702)?)?)?;
        assert!(max_diff(&quick_gelu(&g).unwrap(), &want) < 1e-5);
        Ok(())
    }

    #[test]
    fn polynomial_exp_is_within_two_ulp() {
        let mut worst = 0f32;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (got, want) = (kernels::exp(x), (x as f64).exp() as f32);
            worst = worst.max(((got - want) / want).abs());
            x += 0.013;
        }
        assert!(worst < 3.0 * f32::EPSILON, "relative error {worst}");
        assert_eq!(kernels::exp(-1e30), 0.0);
        assert_eq!(kernels::exp(f32::NEG_INFINITY), 0.0);
        assert!(kernels::exp(1e30).is_finite());
    }

    #[test]
    fn masked_softmax_matches_where_cond_and_softmax() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let (b, g, tq, tk) = (2usize, 3usize, 4usize, 6usize);
        let x = Tensor::randn(0f32, 2.0, (b, g, tq, tk), &dev)?;
        // Causal with an offset of 2 and a padded key per batch row; row (1, 0) allows nothing.
        let mut allowed = vec![false; b * tq * tk];
        for bi in 0..b {
            for i in 0..tq {
                for j in 0..tk {
                    allowed[(bi * tq + i) * tk + j] = j <= 2 + i && j != bi && !(bi == 1 && i == 0);
                }
            }
        }
        let m = Tensor::from_vec(allowed.iter().map(|&a| u8::from(a)).collect::<Vec<_>>(), (b, 1, tq, tk), &dev)?
            .broadcast_as((b, g, tq, tk))?;
        let neg = Tensor::new(-1e30f32, &dev)?.broadcast_as((b, g, tq, tk))?;
        let want = candle_nn::ops::softmax_last_dim(&m.where_cond(&x, &neg)?)?;
        let got = masked_softmax(&x, std::sync::Arc::new(allowed), tq).unwrap();
        assert!(max_diff(&got, &want) < 1e-6);
        let plain = candle_nn::ops::softmax_last_dim(&x)?;
        assert!(max_diff(&softmax_last_dim(&x).unwrap(), &plain) < 1e-6);
        Ok(())
    }

    #[test]
    fn tracked_inputs_keep_their_gradients() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let g = Var::randn(0f32, 1.0, (4, 8), &dev)?;
        let u = Tensor::randn(0f32, 1.0, (4, 8), &dev)?;
        let grads = crate::fused_grad::swiglu(g.as_tensor(), &u).unwrap().sum_all()?.backward()?;
        assert!(grads.get(g.as_tensor()).is_some());
        let grads = quick_gelu(g.as_tensor()).unwrap().sum_all()?.backward()?;
        assert!(grads.get(g.as_tensor()).is_some());
        let w = Tensor::ones(8, DType::F32, &dev)?;
        let b = Tensor::zeros(8, DType::F32, &dev)?;
        let grads = layer_norm(g.as_tensor(), &w, &b, 1e-5)
            .unwrap()
            .sqr()?
            .sum_all()?
            .backward()?;
        assert!(grads.get(g.as_tensor()).is_some());
        Ok(())
    }
}
