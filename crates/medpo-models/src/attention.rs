//! Fused masked attention for the differentiable (training) path on the CPU: one op from
//! q (B, H, T, D), k and v (B, KV, T, D) (grouped-query: head h reads KV head h / (H / KV)) to
//! the attention output (B, T, H·D), the layout `o_proj` reads, with its own backward.
//!
//! Built from candle ops, attention is a matmul, a copy, the masked softmax, a second matmul,
//! the K/V repetition for GQA and a transpose; on the way back each of those allocates its
//! gradient as zeros and adds to it, at (T × T) per head for the scores. Here the scores and
//! probabilities live in a per-thread T × T scratch, one (batch, head) at a time, and nothing of
//! that size is kept for the backward pass: it recomputes the probabilities from q and k
//! (flash-attention's trade, one extra T × T × D product per head), then
//!
//! - dV = Pᵀ·dO, summed over the heads of a KV group;
//! - dP = dO·Vᵀ, dS = scale · P ⊙ (dP − rowsum(dO ⊙ O));
//! - dQ = dS·K, dK = dSᵀ·Q (summed over the group).
//!
//! Masking follows [`crate::decoder`]'s masked softmax exactly: `allowed[(b·T + i)·T + j]`
//! says whether query i of row b sees key j; disallowed entries get probability 0, and a row
//! with no allowed key is uniform (and passes no gradient back, as with a constant fill). float32 and float64 (the finite-difference tests); the
//! products run on the `gemm` crate, one (batch, head) per task over the rayon pool.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Storage, Tensor};
use gemm::Parallelism;
use num_traits::Float;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::fused_grad::dispatch;

/// A float the fused attention runs in.
trait AttnFloat: Float + Send + Sync + 'static {
    /// The scale, given in float64, in this type.
    fn of(x: f64) -> Self;

    /// Softmax of `scale · x` over the allowed entries, in place.
    fn softmax_row(x: &mut [Self], allowed: &[bool], scale: Self, tmp: &mut [Self]);
}

impl AttnFloat for f32 {
    fn of(x: f64) -> f32 {
        x as f32
    }

    fn softmax_row(x: &mut [f32], allowed: &[bool], scale: f32, tmp: &mut [f32]) {
        // Keys after the last allowed one (the future, in a causal row) get 0 without an exp.
        let n = allowed.iter().rposition(|&a| a).map_or(x.len(), |p| p + 1);
        for (t, &v) in tmp[..n].iter_mut().zip(x.iter()) {
            *t = v * scale;
        }
        if n < x.len() {
            x[n..].fill(0.0);
        }
        crate::fused::kernels::softmax_row(crate::gemv::isa(), &tmp[..n], Some(&allowed[..n]), &mut x[..n]);
    }
}

impl AttnFloat for f64 {
    fn of(x: f64) -> f64 {
        x
    }

    fn softmax_row(x: &mut [f64], allowed: &[bool], scale: f64, _tmp: &mut [f64]) {
        let mut max = f64::NEG_INFINITY;
        for (&v, &a) in x.iter().zip(allowed) {
            if a && v * scale > max {
                max = v * scale;
            }
        }
        if max == f64::NEG_INFINITY {
            let u = 1.0 / x.len() as f64;
            x.fill(u);
            return;
        }
        let mut sum = 0.0;
        for (v, &a) in x.iter_mut().zip(allowed) {
            *v = if a { (*v * scale - max).exp() } else { 0.0 };
            sum += *v;
        }
        x.iter_mut().for_each(|v| *v /= sum);
    }
}

/// A raw pointer that may cross threads: the tasks write disjoint parts of one buffer.
#[derive(Clone, Copy)]
struct Out<F>(*mut F);
// SAFETY: every task writes a disjoint set of elements (its own batch and head, or KV group).
unsafe impl<F> Send for Out<F> {}
unsafe impl<F> Sync for Out<F> {}

impl<F> Out<F> {
    /// The pointer (a method, so that closures capture the `Send` wrapper, not its field).
    fn ptr(&self) -> *mut F {
        self.0
    }
}

#[derive(Clone)]
struct Dims {
    b: usize,
    h: usize,
    kv: usize,
    /// Queries per row (≤ `t`: the last layer may run only the positions that are read).
    tq: usize,
    /// Keys per row.
    t: usize,
    d: usize,
}

/// `dst (m × n) = [dst +] lhs (m × k) · rhs (k × n)`, strides as (row, column).
///
/// # Safety
/// The pointers must address the whole matrices their strides describe.
#[allow(clippy::too_many_arguments)]
unsafe fn mm<F: Copy + 'static>(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut F,
    dst_rs: usize,
    accumulate: bool,
    lhs: *const F,
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: *const F,
    (rhs_rs, rhs_cs): (usize, usize),
    one: F,
    zero: F,
) {
    // gemm: dst := alpha·dst + beta·lhs·rhs, reading dst only when `accumulate`.
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        accumulate,
        lhs,
        lhs_cs as isize,
        lhs_rs as isize,
        rhs,
        rhs_cs as isize,
        rhs_rs as isize,
        if accumulate { one } else { zero },
        one,
        false,
        false,
        false,
        Parallelism::None,
    );
}

/// P = softmax(scale · Q_h Kᵀ) for one (batch, head) into `p` (Tq × T).
fn probs<F: AttnFloat>(q: &[F], k: &[F], mask: &[bool], dims: &Dims, scale: F, p: &mut [F], tmp: &mut [F]) {
    let (tq, t, d) = (dims.tq, dims.t, dims.d);
    // SAFETY: q is Tq × D and k T × D row-major, p is Tq × T.
    unsafe { mm(tq, t, d, p.as_mut_ptr(), t, false, q.as_ptr(), (d, 1), k.as_ptr(), (1, d), F::one(), F::zero()) };
    for (i, row) in p.chunks_mut(t).enumerate() {
        F::softmax_row(row, &mask[i * t..(i + 1) * t], scale, tmp);
    }
}

fn forward<F: AttnFloat>(q: &[F], k: &[F], v: &[F], mask: &[bool], dims: &Dims, scale: F) -> Vec<F> {
    let Dims { b, h, kv, tq, t, d } = dims.clone();
    let rep = h / kv;
    let mut out = vec![F::zero(); b * tq * h * d];
    let o = Out(out.as_mut_ptr());
    (0..b * h).into_par_iter().for_each_init(
        || (vec![F::zero(); tq * t], vec![F::zero(); t]),
        |(p, tmp), bh| {
            let (bi, hi) = (bh / h, bh % h);
            let g = bi * kv + hi / rep;
            let qh = &q[bh * tq * d..(bh + 1) * tq * d];
            let kh = &k[g * t * d..(g + 1) * t * d];
            let vh = &v[g * t * d..(g + 1) * t * d];
            probs(qh, kh, &mask[bi * tq * t..(bi + 1) * tq * t], dims, scale, p, tmp);
            // O[bi, i, hi, :] = P · V: rows of the output are H·D apart.
            // SAFETY: this task alone writes head `hi` of row `bi`.
            unsafe {
                let dst = o.ptr().add((bi * tq * h + hi) * d);
                mm(tq, d, t, dst, h * d, false, p.as_ptr(), (t, 1), vh.as_ptr(), (d, 1), F::one(), F::zero());
            }
        },
    );
    out
}

/// (dq, dk, dv) from q, k, v, the output o and its gradient g (both (B, T, H·D)).
#[allow(clippy::too_many_arguments)]
fn backward<F: AttnFloat>(
    q: &[F],
    k: &[F],
    v: &[F],
    o: &[F],
    g: &[F],
    mask: &[bool],
    dims: &Dims,
    scale: F,
) -> (Vec<F>, Vec<F>, Vec<F>) {
    let Dims { b, h, kv, tq, t, d } = dims.clone();
    let rep = h / kv;
    let mut dq = vec![F::zero(); b * h * tq * d];
    let mut dk = vec![F::zero(); b * kv * t * d];
    let mut dv = vec![F::zero(); b * kv * t * d];
    let (pq, pk, pv) = (Out(dq.as_mut_ptr()), Out(dk.as_mut_ptr()), Out(dv.as_mut_ptr()));
    (0..b * kv).into_par_iter().for_each_init(
        || (vec![F::zero(); tq * t], vec![F::zero(); tq * t], vec![F::zero(); t], vec![F::zero(); tq]),
        |(p, ds, tmp, rowdot), bg| {
            let bi = bg / kv;
            let kg = &k[bg * t * d..(bg + 1) * t * d];
            let vg = &v[bg * t * d..(bg + 1) * t * d];
            let m = &mask[bi * tq * t..(bi + 1) * tq * t];
            for r in 0..rep {
                let hi = (bg % kv) * rep + r;
                let bh = bi * h + hi;
                let qh = &q[bh * tq * d..(bh + 1) * tq * d];
                probs(qh, kg, m, dims, scale, p, tmp);
                // dO and O of this head: rows H·D apart, starting at head `hi` of row `bi`.
                let at = (bi * tq * h + hi) * d;
                let (go, oo) = (&g[at..], &o[at..]);
                // SAFETY: this task alone writes KV group `bg` of dk/dv and the heads of that
                // group in dq; all matrices are addressed within their buffers.
                unsafe {
                    // dV += Pᵀ · dO
                    let dvg = pv.ptr().add(bg * t * d);
                    mm(t, d, tq, dvg, d, r > 0, p.as_ptr(), (1, t), go.as_ptr(), (h * d, 1), F::one(), F::zero());
                    // dP = dO · Vᵀ
                    mm(tq, t, d, ds.as_mut_ptr(), t, false, go.as_ptr(), (h * d, 1), vg.as_ptr(), (1, d), F::one(), F::zero());
                }
                for i in 0..tq {
                    let mut s = F::zero();
                    for c in 0..d {
                        s = s + go[i * h * d + c] * oo[i * h * d + c];
                    }
                    rowdot[i] = s;
                }
                for (i, (dsr, pr)) in ds.chunks_mut(t).zip(p.chunks(t)).enumerate() {
                    if !m[i * t..(i + 1) * t].iter().any(|&a| a) {
                        // A query that sees no key has a constant (uniform) output: no gradient.
                        dsr.fill(F::zero());
                        continue;
                    }
                    let di = rowdot[i];
                    for (x, &pv) in dsr.iter_mut().zip(pr) {
                        *x = scale * pv * (*x - di);
                    }
                }
                unsafe {
                    // dQ_h = dS · K
                    let dqh = pq.ptr().add(bh * tq * d);
                    mm(tq, d, t, dqh, d, false, ds.as_ptr(), (t, 1), kg.as_ptr(), (d, 1), F::one(), F::zero());
                    // dK += dSᵀ · Q_h
                    let dkg = pk.ptr().add(bg * t * d);
                    mm(t, d, tq, dkg, d, r > 0, ds.as_ptr(), (1, t), qh.as_ptr(), (d, 1), F::one(), F::zero());
                }
            }
        },
    );
    (dq, dk, dv)
}

struct FusedAttention {
    mask: Arc<Vec<bool>>,
    dims: Dims,
    scale: f64,
}

impl FusedAttention {
    fn check(&self, l1: &Layout, l2: &Layout, l3: &Layout) -> candle_core::Result<()> {
        let Dims { b, h, kv, tq, t, d } = self.dims;
        let ok = l1.shape().dims() == [b, h, tq, d]
            && l2.shape().dims() == [b, kv, t, d]
            && l3.shape().dims() == [b, kv, t, d]
            && self.mask.len() == b * tq * t;
        if ok {
            Ok(())
        } else {
            Err(candle_core::Error::msg(format!(
                "fused attention: q {:?}, k {:?}, v {:?} for {b} rows, {h}/{kv} heads, {t} tokens",
                l1.shape(),
                l2.shape(),
                l3.shape()
            )))
        }
    }
}

fn slice<'a, F>(v: &'a [F], l: &Layout) -> candle_core::Result<&'a [F]> {
    crate::fused::contiguous(v, l, "fused attention")
}

impl FusedAttention {
    /// (dq, dk, dv) as tensors from the storages of q, k, v, the output and its gradient.
    fn grads<F: AttnFloat + candle_core::WithDType>(
        &self,
        [(q, lq), (k, lk), (v, lv), (o, lo), (g, lg)]: [(&Vec<F>, &Layout); 5],
        dev: &candle_core::Device,
    ) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        let Dims { b, h, kv, tq, t, d } = self.dims;
        let (dq, dk, dv) = backward(
            slice(q, lq)?,
            slice(k, lk)?,
            slice(v, lv)?,
            slice(o, lo)?,
            slice(g, lg)?,
            &self.mask,
            &self.dims,
            F::of(self.scale),
        );
        Ok((
            Tensor::from_vec(dq, (b, h, tq, d), dev)?,
            Tensor::from_vec(dk, (b, kv, t, d), dev)?,
            Tensor::from_vec(dv, (b, kv, t, d), dev)?,
        ))
    }
}

impl CustomOp3 for FusedAttention {
    fn name(&self) -> &'static str {
        "medpo-fused-attention"
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
        self.check(l1, l2, l3)?;
        let Dims { b, h, tq, d, .. } = self.dims;
        let scale = self.scale;
        let out = dispatch!("fused attention", s1, s2, s3; |q, k, v| forward(
            slice(q, l1)?, slice(k, l2)?, slice(v, l3)?, &self.mask, &self.dims, AttnFloat::of(scale)));
        Ok((out, Shape::from((b, tq, h * d))))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (sq, lq) = q.storage_and_layout();
        let (sk, lk) = k.storage_and_layout();
        let (sv, lv) = v.storage_and_layout();
        let (so, lo) = res.storage_and_layout();
        let (sg, lg) = grad.storage_and_layout();
        let dev = q.device();
        use CpuStorage::{F32, F64};
        use Storage::Cpu;
        let (dq, dk, dv) = match (&*sq, &*sk, &*sv, &*so, &*sg) {
            (Cpu(F32(q)), Cpu(F32(k)), Cpu(F32(v)), Cpu(F32(o)), Cpu(F32(g))) => {
                self.grads([(q, lq), (k, lk), (v, lv), (o, lo), (g, lg)], dev)?
            }
            (Cpu(F64(q)), Cpu(F64(k)), Cpu(F64(v)), Cpu(F64(o)), Cpu(F64(g))) => {
                self.grads([(q, lq), (k, lk), (v, lv), (o, lo), (g, lg)], dev)?
            }
            _ => return Err(candle_core::Error::msg("fused attention backward: float32 or float64 on the CPU")),
        };
        let keep = |x: &Tensor, g: Tensor| x.track_op().then_some(g);
        Ok((keep(q, dq), keep(k, dk), keep(v, dv)))
    }
}

/// Whether [`attention`] runs on these tensors (float32 or float64 on the CPU, one dtype).
pub fn supported(q: &Tensor, k: &Tensor, v: &Tensor) -> bool {
    let dt = q.dtype();
    matches!(dt, candle_core::DType::F32 | candle_core::DType::F64)
        && [q, k, v].iter().all(|x| x.device().is_cpu() && x.dtype() == dt)
}

/// Masked attention, differentiable in q, k and v: q (B, H, Tq, D), k and v (B, KV, T, D) with H
/// a multiple of KV; `allowed` (B, Tq, T) row-major (query i of row b sees key j); the scores
/// are scaled by `scale` before the softmax. Returns (B, Tq, H·D). Tq = T for a full layer;
/// fewer queries (whose positions the caller chose, and whose mask rows are theirs) for a
/// layer that only some positions are read from. CPU float32/float64 only ([`supported`]).
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, allowed: Arc<Vec<bool>>, scale: f64) -> Result<Tensor> {
    let (b, h, tq, d) = q.dims4()?;
    let (kv, t) = (k.dim(1)?, k.dim(2)?);
    if kv == 0 || h % kv != 0 {
        return Err(Error::InvalidInput(format!("{h} query heads cannot share {kv} key/value heads")));
    }
    let op = FusedAttention { mask: allowed, dims: Dims { b, h, kv, tq, t, d }, scale };
    Ok(q.contiguous()?.apply_op3(&k.contiguous()?, &v.contiguous()?, op)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var, D};

    /// The composite this op replaces: repeat K/V per group, masked softmax, weighted sum.
    fn composite(q: &Tensor, k: &Tensor, v: &Tensor, allowed: &[bool], scale: f64) -> Tensor {
        let (b, h, t, d) = q.dims4().unwrap();
        let rep = h / k.dim(1).unwrap();
        let rk = |x: &Tensor| {
            let (b, kv, t, d) = x.dims4().unwrap();
            Tensor::cat(&vec![x; rep], 2).unwrap().reshape((b, kv * rep, t, d)).unwrap()
        };
        let m: Vec<u8> = allowed.iter().map(|&a| u8::from(a)).collect();
        let mask = Tensor::from_vec(m, (b, 1, t, t), q.device()).unwrap().broadcast_as((b, h, t, t)).unwrap();
        let neg = Tensor::new(-1e30f64, q.device()).unwrap().to_dtype(q.dtype()).unwrap().broadcast_as((b, h, t, t)).unwrap();
        let s = (q.matmul(&rk(k).t().unwrap()).unwrap() * scale).unwrap();
        let p = candle_nn::ops::softmax(&mask.where_cond(&s, &neg).unwrap(), D::Minus1).unwrap();
        p.matmul(&rk(v)).unwrap().transpose(1, 2).unwrap().reshape((b, t, h * d)).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
    }

    /// A query subset (the last layer reading a few positions) equals those rows of the full
    /// op, and its gradients equal the full op's when only those rows carry a loss.
    #[test]
    fn a_query_subset_equals_those_rows() {
        let (b, h, kv, t, d) = (2, 4, 2, 9, 3);
        let rows = [[2usize, 5, 8], [0, 4, 4]];
        let dev = Device::Cpu;
        let mk = |n: usize, s: f64| (0..n).map(|i| ((i * 7919 % 23) as f64 - 11.0) * s).collect::<Vec<f64>>();
        let q = Var::from_vec(mk(b * h * t * d, 0.09), (b, h, t, d), &dev).unwrap();
        let k = Var::from_vec(mk(b * kv * t * d, 0.07), (b, kv, t, d), &dev).unwrap();
        let v = Var::from_vec(mk(b * kv * t * d, 0.11), (b, kv, t, d), &dev).unwrap();
        let mut allowed = Vec::new();
        for _ in 0..b {
            for i in 0..t {
                for j in 0..t {
                    allowed.push(j <= i);
                }
            }
        }
        let full = attention(q.as_tensor(), k.as_tensor(), v.as_tensor(), Arc::new(allowed.clone()), 0.5).unwrap();
        // The subset: q rows gathered, mask rows gathered.
        let mut sub_mask = Vec::new();
        let mut qs = Vec::new();
        for (bi, r) in rows.iter().enumerate() {
            for &i in r {
                sub_mask.extend_from_slice(&allowed[(bi * t + i) * t..(bi * t + i + 1) * t]);
            }
            let idx = Tensor::new(&[r[0] as u32, r[1] as u32, r[2] as u32], &dev).unwrap();
            qs.push(q.as_tensor().get(bi).unwrap().index_select(&idx, 1).unwrap());
        }
        let qsub = Tensor::stack(&qs, 0).unwrap();
        let sub = attention(&qsub, k.as_tensor(), v.as_tensor(), Arc::new(sub_mask), 0.5).unwrap();
        // Loss weights: the subset's rows in the full output, a row counted as often as it is read.
        let mut wf = vec![0f64; b * t * h * d];
        let ws: Vec<f64> = (0..b * 3 * h * d).map(|i| ((i % 7) as f64 - 3.0) / 3.0).collect();
        for (bi, r) in rows.iter().enumerate() {
            for (k2, &i) in r.iter().enumerate() {
                for c in 0..h * d {
                    let want = full.get(bi).unwrap().get(i).unwrap().get(c).unwrap().to_scalar::<f64>().unwrap();
                    let got = sub.get(bi).unwrap().get(k2).unwrap().get(c).unwrap().to_scalar::<f64>().unwrap();
                    assert!((want - got).abs() < 1e-12, "row {bi} position {i}: {want} vs {got}");
                    wf[(bi * t + i) * h * d + c] += ws[(bi * 3 + k2) * h * d + c];
                }
            }
        }
        let wf = Tensor::from_vec(wf, (b, t, h * d), &dev).unwrap();
        let ws = Tensor::from_vec(ws, (b, 3, h * d), &dev).unwrap();
        let gf = (full * wf).unwrap().sum_all().unwrap().backward().unwrap();
        let gs = (sub * ws).unwrap().sum_all().unwrap().backward().unwrap();
        for (name, x) in [("k", &k), ("v", &v), ("q", &q)] {
            let (a, c) = (gf.get(x.as_tensor()).unwrap(), gs.get(x.as_tensor()).unwrap());
            assert!(max_diff(a, c) < 1e-12, "d{name}: {}", max_diff(a, c));
        }
    }

    /// Causal rows with padding, a packed row (two answers sharing a prompt) and a row whose
    /// padding queries see nothing; GQA 4/2. Value and all three gradients against the
    /// composite, in float64 (tight) and float32.
    #[test]
    fn equals_the_composite_in_value_and_gradient() {
        let (b, h, kv, t, d) = (3, 4, 2, 7, 5);
        let mut allowed = Vec::new();
        for row in 0..b {
            for i in 0..t {
                for j in 0..t {
                    allowed.push(match row {
                        0 => j <= i,
                        // prompt 0..3, answer A 3..5, answer B 5..7
                        1 => j <= i && (j < 3 || (i >= 5) == (j >= 5)),
                        _ => j <= i && i < 5 && j < 5,
                    });
                }
            }
        }
        let allowed = Arc::new(allowed);
        for dt in [DType::F64, DType::F32] {
            let dev = Device::Cpu;
            let mk = |n: usize, s: f64| {
                let x: Vec<f64> = (0..n).map(|i| ((i * 7919 % 23) as f64 - 11.0) * s).collect();
                x
            };
            let q = Var::from_vec(mk(b * h * t * d, 0.09), (b, h, t, d), &dev).unwrap();
            let k = Var::from_vec(mk(b * kv * t * d, 0.07), (b, kv, t, d), &dev).unwrap();
            let v = Var::from_vec(mk(b * kv * t * d, 0.11), (b, kv, t, d), &dev).unwrap();
            let (q, k, v) = (
                q.as_tensor().to_dtype(dt).unwrap(),
                k.as_tensor().to_dtype(dt).unwrap(),
                v.as_tensor().to_dtype(dt).unwrap(),
            );
            let (q, k, v) = (Var::from_tensor(&q).unwrap(), Var::from_tensor(&k).unwrap(), Var::from_tensor(&v).unwrap());
            let w = Tensor::arange(0f64, (b * t * h * d) as f64, &dev).unwrap().to_dtype(dt).unwrap().reshape((b, t, h * d)).unwrap();
            let w = w.cos().unwrap();
            let fused = attention(q.as_tensor(), k.as_tensor(), v.as_tensor(), allowed.clone(), 0.6).unwrap();
            let plain = composite(q.as_tensor(), k.as_tensor(), v.as_tensor(), &allowed, 0.6);
            let tol = if dt == DType::F64 { 1e-12 } else { 1e-5 };
            assert!(max_diff(&fused, &plain) < tol, "{dt:?} value");
            let g1 = (fused * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let g2 = (plain * &w).unwrap().sum_all().unwrap().backward().unwrap();
            for (name, x) in [("q", &q), ("k", &k), ("v", &v)] {
                let (a, c) = (g1.get(x.as_tensor()).unwrap(), g2.get(x.as_tensor()).unwrap());
                assert!(max_diff(a, c) < tol * 10.0, "{dt:?} d{name}: {}", max_diff(a, c));
            }
        }
    }
}
