//! The decoder shared by Mistral, Llama and Qwen2 (Qwen2 adds q/k/v biases; see `mistral.rs`
//! and `qwen2.rs`), with two forward paths:
//!
//! - [`Decoder::forward_train`]: differentiable ops only (a masked softmax, RMSNorm, rotary
//!   embedding and SwiGLU with hand-written backward passes on the CPU, `fused_grad.rs`, and
//!   candle's composites elsewhere; explicit causal/padding masks), logits at every position;
//! - [`Decoder::forward_cached`]: the fast inference path with a KV cache (`softmax_last_dim`,
//!   fused `rms_norm` and `rope`, which have no backward).
//!
//! A test checks that both give the same logits. Both take input embeddings, which is where
//! LLaVA splices in the image features.

use candle_core::{DType, Device, Tensor, D};
use crate::loader::Linear;

use crate::config::TextConfig;
use crate::error::{Error, Result};
use crate::loader::Params;

#[derive(Debug, Clone)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
}

#[derive(Debug, Clone)]
struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

#[derive(Debug, Clone)]
struct DecoderLayer {
    input_layernorm: Tensor,
    self_attn: Attention,
    post_attention_layernorm: Tensor,
    mlp: Mlp,
}

/// A decoder-only LM: `embed_tokens`, layers, `norm`, `lm_head`.
#[derive(Debug, Clone)]
pub struct Decoder {
    embed_tokens: Tensor,
    layers: Vec<DecoderLayer>,
    norm: Tensor,
    lm_head: Linear,
    cfg: TextConfig,
    inv_freq: Vec<f32>,
    /// Checkpoint prefix of `embed_tokens`/`layers`/`norm` (ending in a dot).
    body: String,
}

/// The key/value cache of [`Decoder::forward_cached`], for a batch.
#[derive(Debug, Clone)]
pub struct KvCache {
    kv: Vec<Option<(Tensor, Tensor)>>,
    /// Per row: which cached positions are real tokens (left padding is not).
    valid: Vec<Vec<bool>>,
}

impl KvCache {
    /// An empty cache for `layers` layers.
    pub fn new(layers: usize) -> Self {
        KvCache { kv: vec![None; layers], valid: Vec::new() }
    }

    /// Cached sequence length.
    pub fn len(&self) -> usize {
        self.valid.first().map_or(0, Vec::len)
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Host-side per-row position ids: `cumsum(valid) - 1`, as transformers derives them from the
/// attention mask (pads get position 0 and are masked anyway).
fn positions(valid: &[Vec<bool>], start_counts: &[usize]) -> Vec<Vec<usize>> {
    valid
        .iter()
        .zip(start_counts)
        .map(|(row, &c0)| {
            let mut c = c0;
            row.iter()
                .map(|&v| {
                    if v {
                        c += 1;
                        c - 1
                    } else {
                        c.saturating_sub(1)
                    }
                })
                .collect()
        })
        .collect()
}

fn repeat_kv(x: Tensor, n_rep: usize) -> Result<Tensor> {
    if n_rep == 1 {
        return Ok(x);
    }
    let (b, n_kv, t, d) = x.dims4()?;
    Ok(Tensor::cat(&vec![&x; n_rep], 2)?.reshape((b, n_kv * n_rep, t, d))?)
}

fn rms_norm_fast(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    Ok(candle_nn::ops::rms_norm(&x.contiguous()?, w, eps as f32)?)
}

/// Mask value for disallowed attention scores: finite, so fully masked (padding) rows stay finite.
fn mask_value(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => -65504.0,
        _ => -1e30,
    }
}

/// Which keys each query may see, (B, Tq, Tk) row-major with Tk = `offset + tq`: query i
/// (absolute position `offset + i`) sees key j when j <= offset + i and key j is a real token.
fn allowed_keys(key_valid: &[Vec<bool>], offset: usize, tq: usize) -> Vec<bool> {
    let tk = offset + tq;
    let mut m = Vec::with_capacity(key_valid.len() * tq * tk);
    for row in key_valid {
        for i in 0..tq {
            m.extend(row.iter().take(tk).enumerate().map(|(j, &v)| v && j <= offset + i));
        }
    }
    m
}

impl Decoder {
    /// Loads the decoder. `body` is the prefix of `embed_tokens`/`layers`/`norm` (ending in a
    /// dot), `lm_head` the full name of the head (the embedding is used when tied).
    pub fn load(p: &Params, body: &str, lm_head: &str, cfg: &TextConfig) -> Result<Self> {
        let (h, i, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
        let q_dim = cfg.num_attention_heads * cfg.head_dim;
        let kv_dim = cfg.num_key_value_heads * cfg.head_dim;
        let bias = cfg.attention_bias;
        let embed_tokens = p.get(&format!("{body}embed_tokens.weight"), &[v, h])?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let pre = format!("{body}layers.{l}");
            let a = format!("{pre}.self_attn");
            let m = format!("{pre}.mlp");
            layers.push(DecoderLayer {
                input_layernorm: p.get(&format!("{pre}.input_layernorm.weight"), &[h])?,
                self_attn: Attention {
                    q_proj: p.linear(&format!("{a}.q_proj"), h, q_dim, bias)?,
                    k_proj: p.linear(&format!("{a}.k_proj"), h, kv_dim, bias)?,
                    v_proj: p.linear(&format!("{a}.v_proj"), h, kv_dim, bias)?,
                    o_proj: p.linear(&format!("{a}.o_proj"), q_dim, h, false)?,
                },
                post_attention_layernorm: p.get(&format!("{pre}.post_attention_layernorm.weight"), &[h])?,
                mlp: Mlp {
                    gate_proj: p.linear(&format!("{m}.gate_proj"), h, i, false)?,
                    up_proj: p.linear(&format!("{m}.up_proj"), h, i, false)?,
                    down_proj: p.linear(&format!("{m}.down_proj"), i, h, false)?,
                },
            });
        }
        let norm = p.get(&format!("{body}norm.weight"), &[h])?;
        let lm_head = if cfg.tie_word_embeddings && !p.contains(lm_head) {
            // Tied: share the embedding (a transposed copy would double its memory).
            Linear::new(embed_tokens.clone(), None, false)?
        } else {
            Linear::new(p.get(lm_head, &[v, h])?, None, !p.is_trainable(lm_head))?
        };
        let d = cfg.head_dim;
        // transformers computes inv_freq and the angles in float32.
        let inv_freq = (0..d / 2).map(|k| 1.0f32 / (cfg.rope_theta as f32).powf((2 * k) as f32 / d as f32)).collect();
        Ok(Decoder { embed_tokens, layers, norm, lm_head, cfg: cfg.clone(), inv_freq, body: body.to_string() })
    }

    /// The attention and MLP projections of every layer, by checkpoint module path
    /// (`model.layers.3.self_attn.q_proj`, `model.layers.3.mlp.down_proj`), layer by layer in
    /// the order q, k, v, o, gate, up, down.
    pub fn projections(&self) -> Vec<(String, &Linear)> {
        let mut out = Vec::with_capacity(self.layers.len() * 7);
        for (l, layer) in self.layers.iter().enumerate() {
            let (a, m) = (&layer.self_attn, &layer.mlp);
            let pre = format!("{}layers.{l}", self.body);
            for (name, lin) in [
                ("self_attn.q_proj", &a.q_proj),
                ("self_attn.k_proj", &a.k_proj),
                ("self_attn.v_proj", &a.v_proj),
                ("self_attn.o_proj", &a.o_proj),
                ("mlp.gate_proj", &m.gate_proj),
                ("mlp.up_proj", &m.up_proj),
                ("mlp.down_proj", &m.down_proj),
            ] {
                out.push((format!("{pre}.{name}"), lin));
            }
        }
        out
    }

    /// Like [`Decoder::projections`], mutable (to attach adapters).
    pub fn projections_mut(&mut self) -> Vec<(String, &mut Linear)> {
        let mut out = Vec::with_capacity(self.layers.len() * 7);
        for (l, layer) in self.layers.iter_mut().enumerate() {
            let (a, m) = (&mut layer.self_attn, &mut layer.mlp);
            let pre = format!("{}layers.{l}", self.body);
            for (name, lin) in [
                ("self_attn.q_proj", &mut a.q_proj),
                ("self_attn.k_proj", &mut a.k_proj),
                ("self_attn.v_proj", &mut a.v_proj),
                ("self_attn.o_proj", &mut a.o_proj),
                ("mlp.gate_proj", &mut m.gate_proj),
                ("mlp.up_proj", &mut m.up_proj),
                ("mlp.down_proj", &mut m.down_proj),
            ] {
                out.push((format!("{pre}.{name}"), lin));
            }
        }
        out
    }

    /// The resolved text config.
    pub fn config(&self) -> &TextConfig {
        &self.cfg
    }

    /// The dtype of the weights.
    pub fn dtype(&self) -> DType {
        self.embed_tokens.dtype()
    }

    /// The device of the weights.
    pub fn device(&self) -> &Device {
        self.embed_tokens.device()
    }

    /// Token embeddings: ids (any shape, u32) → (…, hidden).
    pub fn embed_tokens(&self, ids: &Tensor) -> Result<Tensor> {
        let shape = ids.dims().to_vec();
        let flat = ids.flatten_all()?;
        let e = self.embed_tokens.index_select(&flat, 0)?;
        let mut out_shape = shape;
        out_shape.push(self.cfg.hidden_size);
        Ok(e.reshape(out_shape)?)
    }

    /// cos and sin, each (B, T, head_dim / 2), for the given positions.
    fn rope_tables(&self, pos: &[Vec<usize>]) -> Result<(Tensor, Tensor)> {
        let b = pos.len();
        let t = pos.first().map_or(0, Vec::len);
        let half = self.inv_freq.len();
        let (cos, sin) = self.rope_values(pos);
        let dev = self.device();
        let dt = self.dtype();
        Ok((
            Tensor::from_vec(cos, (b, t, half), dev)?.to_dtype(dt)?,
            Tensor::from_vec(sin, (b, t, half), dev)?.to_dtype(dt)?,
        ))
    }

    /// cos and sin (B, T, D/2) row-major, in float32 as transformers computes them.
    fn rope_values(&self, pos: &[Vec<usize>]) -> (Vec<f32>, Vec<f32>) {
        let b = pos.len();
        let t = pos.first().map_or(0, Vec::len);
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(b * t * half);
        let mut sin = Vec::with_capacity(b * t * half);
        for row in pos {
            for &p in row {
                for &f in &self.inv_freq {
                    let a = (p as f32) * f;
                    cos.push((a as f64).cos() as f32);
                    sin.push((a as f64).sin() as f32);
                }
            }
        }
        (cos, sin)
    }

    /// A (B, 1, Tq, Tk) u8 mask: query i (absolute position `offset + i`) may see key j when
    /// j <= offset + i and key j is a real token.
    fn mask(&self, key_valid: &[Vec<bool>], offset: usize, tq: usize) -> Result<Tensor> {
        let m: Vec<u8> = allowed_keys(key_valid, offset, tq).into_iter().map(u8::from).collect();
        Ok(Tensor::from_vec(m, (key_valid.len(), 1, tq, offset + tq), self.device())?)
    }

    fn check_embeds(&self, embeds: &Tensor) -> Result<(usize, usize)> {
        let (b, t, h) = embeds.dims3()?;
        if h != self.cfg.hidden_size {
            return Err(Error::InvalidInput(format!("embeddings have width {h}, the model {}", self.cfg.hidden_size)));
        }
        Ok((b, t))
    }

    fn valid_rows(mask: Option<&Tensor>, b: usize, t: usize) -> Result<Vec<Vec<bool>>> {
        match mask {
            None => Ok(vec![vec![true; t]; b]),
            Some(m) => {
                let m = m.to_dtype(DType::F32)?.to_vec2::<f32>()?;
                if m.len() != b || m.iter().any(|r| r.len() != t) {
                    return Err(Error::InvalidInput(format!("attention mask must be ({b}, {t})")));
                }
                Ok(m.into_iter().map(|r| r.into_iter().map(|x| x > 0.5).collect()).collect())
            }
        }
    }

    /// Differentiable forward: embeddings (B, T, H) and an optional (B, T) mask of real tokens
    /// (1) and padding (0), left or right. Returns logits (B, T, vocab) at every position.
    pub fn forward_train(&self, embeds: &Tensor, attention_mask: Option<&Tensor>) -> Result<Tensor> {
        let hidden = self.hidden_train(embeds, attention_mask)?;
        self.lm_head.forward(&hidden)
    }

    /// Like [`Decoder::forward_train`] but returns the final hidden states (after `norm`).
    pub fn hidden_train(&self, embeds: &Tensor, attention_mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, t) = self.check_embeds(embeds)?;
        let valid = Self::valid_rows(attention_mask, b, t)?;
        let pos = positions(&valid, &vec![0; b]);
        self.hidden_train_packed(embeds, &pos, allowed_keys(&valid, 0, t), None)
    }

    /// The differentiable forward with explicit per-row position ids (B × T) and attention
    /// pattern: `allowed[(b·T + i)·T + j]` says whether query i of row b sees key j. Packed rows
    /// use it to hold several sequences that share a prefix (a prompt and each of its answers:
    /// every answer sees the prompt and itself, with positions continuing the prompt's), so the
    /// shared prefix is computed once.
    ///
    /// `read`: per row, the positions whose final hidden state the caller reads (the same count
    /// in every row; repeat one to pad). The last layer then runs its queries, attention output
    /// and MLP on those positions only (its keys and values still cover every position), and
    /// the result is (B, R, H) in `read`'s order; `None`: every position, (B, T, H).
    pub fn hidden_train_packed(
        &self,
        embeds: &Tensor,
        pos: &[Vec<usize>],
        allowed: Vec<bool>,
        read: Option<&[Vec<usize>]>,
    ) -> Result<Tensor> {
        let (b, t) = self.check_embeds(embeds)?;
        if pos.len() != b || pos.iter().any(|r| r.len() != t) || allowed.len() != b * t * t {
            return Err(Error::InvalidInput(format!("positions must be ({b}, {t}) and the attention pattern ({b}, {t}, {t})")));
        }
        if let Some(read) = read {
            let r = read.first().map_or(0, Vec::len);
            if read.len() != b || r == 0 || read.iter().any(|x| x.len() != r || x.iter().any(|&i| i >= t)) {
                return Err(Error::InvalidInput(format!("read positions must be ({b}, R) with R ≥ 1 and each < {t}")));
            }
        }
        let (nh, nkv, hd) = (self.cfg.num_attention_heads, self.cfg.num_key_value_heads, self.cfg.head_dim);
        let eps = self.cfg.rms_norm_eps;
        let scale = 1.0 / (hd as f64).sqrt();
        // On the CPU, attention is one op with its own backward (`attention.rs`): no (T × T)
        // tensor enters the graph. Elsewhere: a u8 mask and a finite fill value for
        // `where_cond`, and candle's softmax.
        let fused = self.device().is_cpu() && matches!(self.dtype(), DType::F32 | DType::F64);
        enum Mask {
            Fused(std::sync::Arc<Vec<bool>>),
            Composite { mask: Tensor, neg: Tensor },
        }
        /// One attention pattern: its queries' rope tables and mask.
        struct Pattern {
            rope: crate::fused_grad::RopeTables,
            tq: usize,
            mask: Mask,
        }
        let pattern = |qpos: &[Vec<usize>], allowed: Vec<bool>, tq: usize| -> Result<Pattern> {
            let (cos, sin) = self.rope_values(qpos);
            let rope = crate::fused_grad::RopeTables::new(cos, sin, b, tq, self.inv_freq.len());
            let mask = if fused {
                Mask::Fused(std::sync::Arc::new(allowed))
            } else {
                let m: Vec<u8> = allowed.into_iter().map(u8::from).collect();
                let mask = Tensor::from_vec(m, (b, 1, tq, t), self.device())?.broadcast_as((b, nh, tq, t))?;
                let neg = Tensor::new(mask_value(self.dtype()), self.device())?.to_dtype(self.dtype())?.broadcast_as((b, nh, tq, t))?;
                Mask::Composite { mask, neg }
            };
            Ok(Pattern { rope, tq, mask })
        };
        // The last layer's queries when only some positions are read: their positions and
        // their rows of the attention pattern, and where they sit in the flattened (B·T) rows.
        let subset = match read {
            Some(read) => {
                let r = read[0].len();
                let qpos: Vec<Vec<usize>> = read.iter().zip(pos).map(|(rd, p)| rd.iter().map(|&i| p[i]).collect()).collect();
                let mut rows = Vec::with_capacity(b * r * t);
                for (bi, rd) in read.iter().enumerate() {
                    for &i in rd {
                        rows.extend_from_slice(&allowed[(bi * t + i) * t..(bi * t + i + 1) * t]);
                    }
                }
                let flat: Vec<u32> = read.iter().enumerate().flat_map(|(bi, rd)| rd.iter().map(move |&i| (bi * t + i) as u32)).collect();
                Some((pattern(&qpos, rows, r)?, Tensor::new(flat.as_slice(), self.device())?))
            }
            None => None,
        };
        let full = pattern(pos, allowed, t)?;
        let mut x = embeds.to_dtype(self.dtype())?;
        let last = self.layers.len().saturating_sub(1);
        for (li, layer) in self.layers.iter().enumerate() {
            let h = crate::fused_grad::rms_norm(&x, &layer.input_layernorm, eps)?;
            let a = &layer.self_attn;
            let k = a.k_proj.forward(&h)?.reshape((b, t, nkv, hd))?.transpose(1, 2)?;
            let v = a.v_proj.forward(&h)?.reshape((b, t, nkv, hd))?.transpose(1, 2)?.contiguous()?;
            let k = crate::fused_grad::rope(&k, &full.rope)?;
            // Queries: every position, or in the last layer only the positions that are read.
            let (pat, xq, hq) = match (&subset, li == last) {
                (Some((pat, flat)), true) => {
                    let take = |z: &Tensor| -> Result<Tensor> {
                        Ok(z.reshape((b * t, self.cfg.hidden_size))?.index_select(flat, 0)?.reshape((b, pat.tq, self.cfg.hidden_size))?)
                    };
                    (pat, take(&x)?, take(&h)?)
                }
                _ => (&full, x.clone(), h),
            };
            let tq = pat.tq;
            let q = a.q_proj.forward(&hq)?.reshape((b, tq, nh, hd))?.transpose(1, 2)?;
            let q = crate::fused_grad::rope(&q, &pat.rope)?;
            let att = match &pat.mask {
                Mask::Fused(allowed) => crate::attention::attention(&q, &k, &v, allowed.clone(), scale)?,
                Mask::Composite { mask, neg } => {
                    let (k, v) = (repeat_kv(k, nh / nkv)?, repeat_kv(v, nh / nkv)?);
                    let scores = (q.matmul(&k.t()?)? * scale)?;
                    let probs = candle_nn::ops::softmax(&mask.where_cond(&scores, neg)?, D::Minus1)?;
                    probs.matmul(&v)?.transpose(1, 2)?.reshape((b, tq, nh * hd))?
                }
            };
            let y = (xq + a.o_proj.forward(&att)?)?;
            let h = crate::fused_grad::rms_norm(&y, &layer.post_attention_layernorm, eps)?;
            let m = &layer.mlp;
            let g = crate::fused_grad::swiglu(&m.gate_proj.forward(&h)?, &m.up_proj.forward(&h)?)?;
            x = (y + m.down_proj.forward(&g)?)?;
        }
        crate::fused_grad::rms_norm(&x, &self.norm, eps)
    }

    /// Fast inference forward with a KV cache. `embeds` (B, T, H) are appended after the cached
    /// positions; `new_valid` marks which of them are real tokens (None: all). Returns logits
    /// (B, T, vocab), or (B, 1, vocab) for the last position only when `last_only`.
    pub fn forward_cached(
        &self,
        embeds: &Tensor,
        cache: &mut KvCache,
        new_valid: Option<&[Vec<bool>]>,
        last_only: bool,
    ) -> Result<Tensor> {
        let x = self.hidden_cached_at(embeds, cache, new_valid, last_only)?;
        self.logits(&x)
    }

    /// The output head: hidden states (after `norm`) to logits.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        self.lm_head.forward(hidden)
    }

    /// Fast path up to the final norm: hidden states (B, T, H) of the new positions.
    ///
    /// Grouped-query attention runs without copying K/V per query head: the `n_rep` query heads
    /// of one KV head are stacked along the time axis, (B, n_kv, n_rep·T, D).
    pub fn hidden_cached(&self, embeds: &Tensor, cache: &mut KvCache, new_valid: Option<&[Vec<bool>]>) -> Result<Tensor> {
        self.hidden_cached_at(embeds, cache, new_valid, false)
    }

    /// [`Decoder::hidden_cached`]; with `last_only`, the hidden state of the last new position
    /// only, (B, 1, H): the last layer then runs its queries, attention output and MLP at that
    /// position alone (a prefill reads nothing else), its keys and values at every position
    /// (the cache needs them).
    pub fn hidden_cached_at(
        &self,
        embeds: &Tensor,
        cache: &mut KvCache,
        new_valid: Option<&[Vec<bool>]>,
        last_only: bool,
    ) -> Result<Tensor> {
        let (b, t) = self.check_embeds(embeds)?;
        if cache.kv.len() != self.layers.len() {
            return Err(Error::InvalidInput("KV cache built for another model".into()));
        }
        if !cache.is_empty() && cache.valid.len() != b {
            return Err(Error::InvalidInput(format!("KV cache holds {} rows, got {b}", cache.valid.len())));
        }
        let new_valid: Vec<Vec<bool>> = match new_valid {
            Some(v) if v.len() == b && v.iter().all(|r| r.len() == t) => v.to_vec(),
            Some(_) => return Err(Error::InvalidInput(format!("validity mask must be ({b}, {t})"))),
            None => vec![vec![true; t]; b],
        };
        let offset = cache.len();
        let counts: Vec<usize> = if cache.is_empty() {
            vec![0; b]
        } else {
            cache.valid.iter().map(|r| r.iter().filter(|&&v| v).count()).collect()
        };
        let pos = positions(&new_valid, &counts);
        if cache.is_empty() {
            cache.valid = new_valid.clone();
        } else {
            for (row, add) in cache.valid.iter_mut().zip(&new_valid) {
                row.extend_from_slice(add);
            }
        }
        let (nh, nkv, hd) = (self.cfg.num_attention_heads, self.cfg.num_key_value_heads, self.cfg.head_dim);
        let rep = nh / nkv;
        let tk = offset + t;
        let any_pad = cache.valid.iter().any(|r| r.iter().any(|v| !v));
        let fuse = self.device().is_cpu() && self.dtype() == DType::F32;
        // The same mask for the fused CPU softmax: (B, T, Tk), shared by every head.
        let allowed = (fuse && (t > 1 || any_pad)).then(|| std::sync::Arc::new(allowed_keys(&cache.valid, offset, t)));
        // Elsewhere: a u8 mask and a finite fill value for `where_cond`.
        let mask = if !fuse && (t > 1 || any_pad) {
            // (B, 1, rep·T, Tk): row r·T + i is query i of the r-th head in the group.
            let m = self.mask(&cache.valid, offset, t)?;
            let m = if rep > 1 { Tensor::cat(&vec![&m; rep], 2)? } else { m };
            let neg = Tensor::new(mask_value(self.dtype()), self.device())?
                .to_dtype(self.dtype())?
                .broadcast_as((b, nkv, rep * t, tk))?;
            Some((m.broadcast_as((b, nkv, rep * t, tk))?, neg))
        } else {
            None
        };
        let (cos, sin) = self.rope_tables(&pos)?;
        let eps = self.cfg.rms_norm_eps;
        let scale = 1.0 / (hd as f64).sqrt();
        let mut x = embeds.to_dtype(self.dtype())?;
        let last = self.layers.len().saturating_sub(1);
        // The last layer of a `last_only` call (CPU float32): one query per row (the last), its
        // rows of the mask; its keys and values still cover every position (the cache needs them).
        let narrow_last = last_only && t > 1 && allowed.is_some();
        let allowed_last = match (&allowed, narrow_last) {
            (Some(al), true) => {
                let rows: Vec<bool> = (0..b).flat_map(|r| al[(r * t + t - 1) * tk..(r * t + t) * tk].iter().copied()).collect();
                Some(std::sync::Arc::new(rows))
            }
            _ => None,
        };
        for (li, layer) in self.layers.iter().enumerate() {
            // Queries at positions q0.. (all of them, or the last one in a narrowed last layer).
            let (q0, allowed) = if narrow_last && li == last { (t - 1, &allowed_last) } else { (0, &allowed) };
            let tq = t - q0;
            let h = rms_norm_fast(&x, &layer.input_layernorm, eps)?;
            let a = &layer.self_attn;
            let k = a.k_proj.forward(&h)?.reshape((b, t, nkv, hd))?.transpose(1, 2)?.contiguous()?;
            let v = a.v_proj.forward(&h)?.reshape((b, t, nkv, hd))?.transpose(1, 2)?.contiguous()?;
            let k = candle_nn::rotary_emb::rope(&k, &cos, &sin)?;
            let q = a.q_proj.forward(&h.narrow(1, q0, tq)?)?.reshape((b, tq, nh, hd))?.transpose(1, 2)?.contiguous()?;
            let q = candle_nn::rotary_emb::rope(&q, &cos.narrow(1, q0, tq)?.contiguous()?, &sin.narrow(1, q0, tq)?.contiguous()?)?;
            let (k, v) = match &cache.kv[li] {
                Some((pk, pv)) => (Tensor::cat(&[pk, &k], 2)?, Tensor::cat(&[pv, &v], 2)?),
                None => (k, v),
            };
            cache.kv[li] = Some((k.clone(), v.clone()));
            let q = (q.reshape((b, nkv, rep * tq, hd))? * scale)?;
            let scores = q.matmul(&k.t()?)?;
            let probs = match (allowed, &mask) {
                (Some(allowed), _) => crate::fused::masked_softmax(&scores, allowed.clone(), tq)?,
                (None, Some((m, neg))) => candle_nn::ops::softmax_last_dim(&m.where_cond(&scores, neg)?)?,
                (None, None) => crate::fused::softmax_last_dim(&scores)?,
            };
            let att = probs.matmul(&v)?.reshape((b, nh, tq, hd))?.transpose(1, 2)?.reshape((b, tq, nh * hd))?;
            x = (x.narrow(1, q0, tq)? + a.o_proj.forward(&att)?)?;
            let h = rms_norm_fast(&x, &layer.post_attention_layernorm, eps)?;
            let m = &layer.mlp;
            let g = crate::fused_grad::swiglu(&m.gate_proj.forward(&h)?, &m.up_proj.forward(&h)?)?;
            x = (x + m.down_proj.forward(&g)?)?;
        }
        let x = if last_only && !narrow_last { x.narrow(1, t - 1, 1)? } else { x };
        rms_norm_fast(&x, &self.norm, eps)
    }
}
