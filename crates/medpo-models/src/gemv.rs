//! `y = x·Wᵀ` for a handful of rows on the CPU: the shape of every projection in a decode step.
//!
//! A general GEMM (candle's `gemm` crate) packs both operands into blocks before it multiplies,
//! which pays off for hundreds of rows and costs most of the time for one: on the medium bench
//! model a 1 × 512 × 1408 product ran at 12 GFLOP/s through it, against 34 in torch. With one to
//! a few rows the work is one pass over the weight, which this does directly: each output is a
//! dot product over a contiguous weight row (checkpoint layout, `(out, in)`), or, for a weight
//! stored `(in, out)`, an `axpy` over contiguous weight rows. Output blocks are spread over the
//! rayon pool. The AVX-512 kernels are written with intrinsics; AVX2 + FMA and plain versions
//! of generic loops are left to the compiler to vectorise. The variant is chosen at run time
//! (the tests exercise the one this CPU takes).
//!
//! Summation order differs from the GEMM's, so results agree to float32 rounding (the tests
//! compare with candle's matmul at 1e-5 relative), not bit for bit.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape};
use rayon::prelude::*;

/// Largest row count routed here; beyond it the GEMM's packing pays off.
pub const MAX_ROWS: usize = 4;

/// Output elements per parallel task (one weight block of `BLOCK × in` floats).
const BLOCK: usize = 64;

/// Multiply-adds below which a product runs on the calling thread.
const INLINE_MACS: usize = 1 << 17;

/// Columns per parallel task for a weight stored (in, out).
const COLS: usize = 256;

/// `x (rows, in) · W` with `W` (out, in) row-major when `w_out_in`, else (in, out) row-major.
/// Forward only (used where no gradient is tracked).
pub(crate) struct SmallRowsMatmul {
    pub w_out_in: bool,
}

macro_rules! kernels {
    ($modname:ident, $($feat:literal),*) => {
        mod $modname {
            /// Σ a[i]·b[i] with 32 independent partial sums.
            #[inline(always)]
            fn dot(a: &[f32], b: &[f32]) -> f32 {
                let n = a.len() / 32 * 32;
                let mut acc = [0f32; 32];
                for (ca, cb) in a[..n].chunks_exact(32).zip(b[..n].chunks_exact(32)) {
                    for i in 0..32 {
                        acc[i] += ca[i] * cb[i];
                    }
                }
                let mut s = 0f32;
                for i in 0..16 {
                    acc[i] += acc[i + 16];
                }
                for v in acc.iter().take(16) {
                    s += v;
                }
                for i in n..a.len() {
                    s += a[i] * b[i];
                }
                s
            }

            /// Outputs `o0 .. o0 + yt.len() / rows` of every row, written transposed
            /// (`yt[(o - o0) · rows + r]`), for a weight in (out, in) layout.
            $(#[target_feature(enable = $feat)])*
            pub unsafe fn out_in(x: &[f32], rows: usize, w: &[f32], k: usize, o0: usize, yt: &mut [f32]) {
                for (j, out) in yt.chunks_exact_mut(rows).enumerate() {
                    let wr = &w[(o0 + j) * k..(o0 + j + 1) * k];
                    for (r, y) in out.iter_mut().enumerate() {
                        *y = dot(&x[r * k..(r + 1) * k], wr);
                    }
                }
            }

            /// Columns `c0 .. c0 + width` of every row, for a weight in (in, out) layout:
            /// `y[r, c0..] = Σ_i x[r, i] · W[i, c0..]`, written row-major into `yb` (rows × width).
            /// 64 columns at a time are summed in registers over the whole of `i`.
            $(#[target_feature(enable = $feat)])*
            pub unsafe fn in_out(x: &[f32], rows: usize, w: &[f32], k: usize, n: usize, c0: usize, yb: &mut [f32]) {
                const T: usize = 64;
                let width = yb.len() / rows;
                for r in 0..rows {
                    let xr = &x[r * k..(r + 1) * k];
                    let mut c = 0;
                    while c + T <= width {
                        let mut acc = [0f32; T];
                        for (i, &xi) in xr.iter().enumerate() {
                            let wr = &w[i * n + c0 + c..i * n + c0 + c + T];
                            for j in 0..T {
                                acc[j] += xi * wr[j];
                            }
                        }
                        yb[r * width + c..r * width + c + T].copy_from_slice(&acc);
                        c += T;
                    }
                    if c < width {
                        let y = &mut yb[r * width + c..(r + 1) * width];
                        y.fill(0.0);
                        for (i, &xi) in xr.iter().enumerate() {
                            let wr = &w[i * n + c0 + c..i * n + c0 + width];
                            for (yv, wv) in y.iter_mut().zip(wr) {
                                *yv += xi * wv;
                            }
                        }
                    }
                }
            }
        }
    };
}

#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
kernels!(avx2, "avx2", "fma");
kernels!(plain,);

/// Hand-written AVX-512 versions of the two kernels (the compiler's vectorisation of the
/// generic loops streams the weight at about half the speed).
#[cfg(target_arch = "x86_64")]
mod avx512x {
    use std::arch::x86_64::*;

    /// As `out_in` of the generic kernels: four weight rows per pass share each load of `x`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn out_in(x: &[f32], rows: usize, w: &[f32], k: usize, o0: usize, yt: &mut [f32]) {
        let outs = yt.len() / rows;
        let k16 = k / 16 * 16;
        let mut j = 0;
        while j < outs {
            let g = (outs - j).min(4);
            for r in 0..rows {
                let xr = x.as_ptr().add(r * k);
                let mut acc = [_mm512_setzero_ps(); 4];
                let mut i = 0;
                while i < k16 {
                    let xv = _mm512_loadu_ps(xr.add(i));
                    for (q, a) in acc.iter_mut().enumerate().take(g) {
                        let wv = _mm512_loadu_ps(w.as_ptr().add((o0 + j + q) * k + i));
                        *a = _mm512_fmadd_ps(xv, wv, *a);
                    }
                    i += 16;
                }
                for (q, a) in acc.iter().enumerate().take(g) {
                    let mut s = _mm512_reduce_add_ps(*a);
                    let wr = &w[(o0 + j + q) * k..(o0 + j + q + 1) * k];
                    for t in k16..k {
                        s += x[r * k + t] * wr[t];
                    }
                    yt[(j + q) * rows + r] = s;
                }
            }
            j += g;
        }
    }

    /// As `in_out` of the generic kernels, 256 columns (16 registers) at a time.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn in_out(
        x: &[f32],
        rows: usize,
        w: &[f32],
        k: usize,
        n: usize,
        c0: usize,
        yb: &mut [f32],
    ) {
        let width = yb.len() / rows;
        for r in 0..rows {
            let xr = &x[r * k..(r + 1) * k];
            let mut c = 0;
            while c + 256 <= width {
                let mut acc = [_mm512_setzero_ps(); 16];
                let mut wp = w.as_ptr().add(c0 + c);
                for &xi in xr {
                    let xv = _mm512_set1_ps(xi);
                    for (q, a) in acc.iter_mut().enumerate() {
                        *a = _mm512_fmadd_ps(xv, _mm512_loadu_ps(wp.add(16 * q)), *a);
                    }
                    wp = wp.add(n);
                }
                for (q, a) in acc.iter().enumerate() {
                    _mm512_storeu_ps(yb.as_mut_ptr().add(r * width + c + 16 * q), *a);
                }
                c += 256;
            }
            while c + 16 <= width {
                let mut acc = _mm512_setzero_ps();
                let mut wp = w.as_ptr().add(c0 + c);
                for &xi in xr {
                    acc = _mm512_fmadd_ps(_mm512_set1_ps(xi), _mm512_loadu_ps(wp), acc);
                    wp = wp.add(n);
                }
                _mm512_storeu_ps(yb.as_mut_ptr().add(r * width + c), acc);
                c += 16;
            }
            for cc in c..width {
                let mut s = 0f32;
                for (i, &xi) in xr.iter().enumerate() {
                    s += xi * w[i * n + c0 + cc];
                }
                yb[r * width + cc] = s;
            }
        }
    }
}

/// The widest instruction set of this CPU that the kernels here and in `fused.rs` use.
#[derive(Clone, Copy)]
pub(crate) enum Isa {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    Avx2,
    Plain,
}

pub(crate) fn isa() -> Isa {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx512f") {
            return Isa::Avx512;
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Isa::Avx2;
        }
    }
    Isa::Plain
}

/// `y (rows, n)` for `x (rows, k)` and `w` as described by `w_out_in`.
pub fn matmul_small(
    x: &[f32],
    rows: usize,
    w: &[f32],
    k: usize,
    n: usize,
    w_out_in: bool,
) -> Vec<f32> {
    let isa = isa();
    let mut y = vec![0f32; rows * n];
    if rows == 0 || n == 0 {
        return y;
    }
    // Small products run on the calling thread: handing work to the pool costs more.
    let inline = rows * n * k <= INLINE_MACS;
    if w_out_in {
        let mut yt = vec![0f32; n * rows];
        let f = |(b, chunk): (usize, &mut [f32])| {
            let o0 = b * BLOCK;
            // SAFETY: the variant is only chosen when the CPU has its features (`isa`).
            unsafe {
                match isa {
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512 => avx512x::out_in(x, rows, w, k, o0, chunk),
                    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
                    Isa::Avx2 => avx2::out_in(x, rows, w, k, o0, chunk),
                    Isa::Plain => plain::out_in(x, rows, w, k, o0, chunk),
                }
            }
        };
        if inline {
            yt.chunks_mut(BLOCK * rows).enumerate().for_each(f);
        } else {
            yt.par_chunks_mut(BLOCK * rows).enumerate().for_each(f);
        }
        for o in 0..n {
            for r in 0..rows {
                y[r * n + o] = yt[o * rows + r];
            }
        }
    } else {
        let f = |b: usize| {
            let c0 = b * COLS;
            let width = COLS.min(n - c0);
            let mut yb = vec![0f32; rows * width];
            // SAFETY: as above.
            unsafe {
                match isa {
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512 => avx512x::in_out(x, rows, w, k, n, c0, &mut yb),
                    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
                    Isa::Avx2 => avx2::in_out(x, rows, w, k, n, c0, &mut yb),
                    Isa::Plain => plain::in_out(x, rows, w, k, n, c0, &mut yb),
                }
            }
            (c0, yb)
        };
        let blocks: Vec<(usize, Vec<f32>)> = if inline {
            (0..n.div_ceil(COLS)).map(f).collect()
        } else {
            (0..n.div_ceil(COLS)).into_par_iter().map(f).collect()
        };
        for (c0, yb) in blocks {
            let width = yb.len() / rows;
            for r in 0..rows {
                y[r * n + c0..r * n + c0 + width].copy_from_slice(&yb[r * width..(r + 1) * width]);
            }
        }
    }
    y
}

impl CustomOp2 for SmallRowsMatmul {
    fn name(&self) -> &'static str {
        "small-rows-matmul"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(xv), CpuStorage::F32(wv)) = (xs, ws) else {
            return Err(candle_core::Error::msg("small-rows-matmul: float32 only"));
        };
        let (Some((xa, xb)), Some((wa, wb))) = (xl.contiguous_offsets(), wl.contiguous_offsets())
        else {
            return Err(candle_core::Error::msg(
                "small-rows-matmul: operands must be contiguous",
            ));
        };
        let (rows, k) = xl.shape().dims2()?;
        let (w0, w1) = wl.shape().dims2()?;
        let (wk, n) = if self.w_out_in { (w1, w0) } else { (w0, w1) };
        if wk != k {
            return Err(candle_core::Error::msg(format!(
                "small-rows-matmul: input width {k}, weight expects {wk}"
            )));
        }
        let y = matmul_small(&xv[xa..xb], rows, &wv[wa..wb], k, n, self.w_out_in);
        Ok((CpuStorage::F32(y), Shape::from((rows, n))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn agrees_with_the_gemm_in_both_layouts() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        // Odd sizes: a dot-product tail, a partial output block, a partial column block.
        for &(rows, k, n) in &[
            (1usize, 512usize, 1408usize),
            (3, 97, 70),
            (4, 33, 1025),
            (2, 8, 3),
        ] {
            let x = Tensor::randn(0f32, 1.0, (rows, k), &dev)?;
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev)?;
            let want = x.matmul(&w.t()?)?;
            let got = x.apply_op2_no_bwd(&w, &SmallRowsMatmul { w_out_in: true })?;
            let wt = w.t()?.contiguous()?;
            let got_t = x.apply_op2_no_bwd(&wt, &SmallRowsMatmul { w_out_in: false })?;
            for g in [got, got_t] {
                assert_eq!(g.dims(), want.dims());
                let err = (g - &want)?
                    .abs()?
                    .flatten_all()?
                    .max(0)?
                    .to_scalar::<f32>()?;
                let scale = want.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
                assert!(
                    err <= 1e-5 * scale.max(1.0),
                    "{rows}x{k}x{n}: max error {err} (scale {scale})"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn refuses_mismatched_widths() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::zeros((1, 8), candle_core::DType::F32, &dev)?;
        let w = Tensor::zeros((4, 9), candle_core::DType::F32, &dev)?;
        let e = x
            .apply_op2_no_bwd(&w, &SmallRowsMatmul { w_out_in: true })
            .unwrap_err();
        assert!(e.to_string().contains("input width 8"), "{e}");
        Ok(())
    }
}
