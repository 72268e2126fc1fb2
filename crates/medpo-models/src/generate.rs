//! Generation: greedy or sampled (temperature, top-p), repetition penalty, max new tokens, EOS
//! stop, a seed, a per-token streaming callback, and batches (left padding, one KV cache).
//!
//! The logits processors run in transformers' order: repetition penalty, temperature, top-p.
//! As with `generate(inputs_embeds=…)` in LLaVA and HuatuoGPT-Vision, the repetition penalty
//! covers the generated tokens only (the prompt is given as embeddings there).

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::llava::{LlavaModel, MultimodalInput, PadSide};
use crate::template::PromptTokenizer;

/// Sampling settings.
#[derive(Debug, Clone)]
pub struct GenerateParams {
    pub max_new_tokens: usize,
    /// 0 means greedy (argmax).
    pub temperature: f64,
    /// Nucleus sampling mass, 1.0 disables it.
    pub top_p: f64,
    /// transformers' `repetition_penalty`, 1.0 disables it.
    pub repetition_penalty: f32,
    pub seed: u64,
    /// Stop a row when it produces one of the model's EOS ids.
    pub stop_at_eos: bool,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams { max_new_tokens: 512, temperature: 0.0, top_p: 1.0, repetition_penalty: 1.0, seed: 0, stop_at_eos: true }
    }
}

impl GenerateParams {
    /// HuatuoGPT-Vision `cli.py` defaults: sampling at T = 0.2 with repetition penalty 1.2.
    pub fn huatuo_cli() -> Self {
        GenerateParams { temperature: 0.2, repetition_penalty: 1.2, ..Default::default() }
    }

    /// The defaults of each model's released code: HuatuoGPT-Vision samples (T = 0.2, repetition
    /// penalty 1.2); LLaVA-Med and llava-hf decode greedily.
    pub fn for_layout(layout: crate::config::Layout) -> Self {
        match layout {
            crate::config::Layout::LlavaQwen2 => Self::huatuo_cli(),
            _ => Self::default(),
        }
    }

    fn validate(&self) -> Result<()> {
        let ok = self.temperature >= 0.0 && self.top_p > 0.0 && self.top_p <= 1.0 && self.repetition_penalty > 0.0;
        if !ok {
            return Err(Error::InvalidInput(format!(
                "temperature {} must be >= 0, top_p {} in (0, 1], repetition_penalty {} > 0",
                self.temperature, self.top_p, self.repetition_penalty
            )));
        }
        Ok(())
    }
}

/// One streamed token.
#[derive(Debug)]
pub struct TokenEvent<'a> {
    /// Row of the batch.
    pub row: usize,
    pub token: u32,
    /// Text that this token completes (may be empty while a multi-byte character is pending).
    pub text: &'a str,
    /// Natural log of the token's probability under the model's own distribution (the raw
    /// logits' softmax, before repetition penalty, temperature and top-p), as OpenAI's and
    /// vLLM's `logprobs` report it.
    pub logprob: f32,
    /// The most likely tokens at this step with their log-probs, best first (as many as
    /// [`generate_with`] was asked for; empty otherwise).
    pub top: &'a [(u32, f32)],
}

/// The result for one row.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// Generated ids, the EOS included when it stopped the row.
    pub ids: Vec<u32>,
    /// Decoded text, special tokens skipped.
    pub text: String,
    pub stopped_at_eos: bool,
}

/// SplitMix64: a small, seedable generator so runs are reproducible across platforms.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Picks the next token from one row of logits.
fn pick(logits: &mut [f32], generated: &[u32], params: &GenerateParams, rng: &mut Rng) -> u32 {
    if params.repetition_penalty != 1.0 {
        let mut seen = generated.to_vec();
        seen.sort_unstable();
        seen.dedup();
        for &t in &seen {
            if let Some(l) = logits.get_mut(t as usize) {
                *l = if *l < 0.0 { *l * params.repetition_penalty } else { *l / params.repetition_penalty };
            }
        }
    }
    let argmax = || {
        // First maximum, like torch.argmax.
        let mut best = 0;
        for (i, &v) in logits.iter().enumerate() {
            if v > logits[best] {
                best = i;
            }
        }
        best as u32
    };
    if params.temperature <= 0.0 {
        return argmax();
    }
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let mut probs: Vec<(usize, f64)> =
        logits.iter().enumerate().map(|(i, &l)| (i, (((l - max) as f64) / params.temperature).exp())).collect();
    let total: f64 = probs.iter().map(|p| p.1).sum();
    probs.iter_mut().for_each(|p| p.1 /= total);
    probs.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal));
    if params.top_p < 1.0 {
        let mut cum = 0.0;
        let mut keep = 0;
        for p in &probs {
            keep += 1;
            cum += p.1;
            if cum >= params.top_p {
                break;
            }
        }
        probs.truncate(keep.max(1));
    }
    let mass: f64 = probs.iter().map(|p| p.1).sum();
    let mut u = rng.next_f64() * mass;
    for &(i, p) in &probs {
        if u < p {
            return i as u32;
        }
        u -= p;
    }
    probs.last().map_or(0, |p| p.0 as u32)
}

/// Generates for a batch of prompts. `on_token` is called for every new token of every row.
pub fn generate(
    model: &LlavaModel,
    tokenizer: &PromptTokenizer,
    inputs: &[MultimodalInput],
    params: &GenerateParams,
    on_token: &mut dyn FnMut(TokenEvent<'_>),
) -> Result<Vec<Generation>> {
    generate_with(model, tokenizer, inputs, params, 0, &mut |e| {
        on_token(e);
        true
    })
}

/// Log-sum-exp of a row of logits.
fn log_sum_exp(row: &[f32]) -> f32 {
    let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return max;
    }
    let sum: f64 = row.iter().map(|&x| ((x - max) as f64).exp()).sum();
    max + sum.ln() as f32
}

/// The `k` largest entries of `row` as `(token, log-prob)`, best first (ties: lower id first).
fn top_k(row: &[f32], lse: f32, k: usize) -> Vec<(u32, f32)> {
    let mut all: Vec<(u32, f32)> = row.iter().enumerate().map(|(i, &x)| (i as u32, x - lse)).collect();
    let k = k.min(all.len());
    let by_score = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if k < all.len() && k > 0 {
        all.select_nth_unstable_by(k - 1, by_score);
        all.truncate(k);
    }
    all.sort_by(by_score);
    all.truncate(k);
    all
}

/// [`generate`] with per-token log-probs (`top_logprobs` alternatives per step) and early
/// stopping: when `on_token` returns `false` its row ends there (a stop sequence was seen, or
/// the client went away); generation ends when every row has ended.
pub fn generate_with(
    model: &LlavaModel,
    tokenizer: &PromptTokenizer,
    inputs: &[MultimodalInput],
    params: &GenerateParams,
    top_logprobs: usize,
    on_token: &mut dyn FnMut(TokenEvent<'_>) -> bool,
) -> Result<Vec<Generation>> {
    params.validate()?;
    let batch = model.embed_batch(inputs, PadSide::Left)?;
    let b = inputs.len();
    let prompt_len = batch.valid.first().map_or(0, Vec::len);
    let room = model.context_len().saturating_sub(prompt_len);
    let steps = params.max_new_tokens.min(room);
    let mut cache = model.new_cache();
    let mut rngs: Vec<Rng> = (0..b).map(|r| Rng(params.seed.wrapping_add(r as u64).wrapping_mul(0x2545_F491_4F6C_DD1D))).collect();
    let mut out: Vec<Generation> = vec![Generation { ids: vec![], text: String::new(), stopped_at_eos: false }; b];
    let mut done = vec![false; b];
    let mut logits = model.forward_cached(&batch.embeds, &mut cache, Some(&batch.valid), true)?;
    for step in 0..steps {
        let rows = logits.squeeze(1)?.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        let mut next = Vec::with_capacity(b);
        for (r, mut row) in rows.into_iter().enumerate() {
            if done[r] {
                next.push(tokenizer.pad_id);
                continue;
            }
            let lse = log_sum_exp(&row);
            let top = if top_logprobs > 0 { top_k(&row, lse, top_logprobs) } else { Vec::new() };
            let raw = row.clone();
            let tok = pick(&mut row, &out[r].ids, params, &mut rngs[r]);
            let logprob = raw.get(tok as usize).map_or(f32::NEG_INFINITY, |&x| x - lse);
            out[r].ids.push(tok);
            if params.stop_at_eos && tokenizer.stop_ids.contains(&tok) {
                done[r] = true;
                out[r].stopped_at_eos = true;
            }
            let last = done[r] || step + 1 == steps;
            // Hold back a trailing incomplete UTF-8 sequence until the next token completes it
            // (or the row ends).
            let text = tokenizer.decode(&out[r].ids)?;
            let delta = if text.ends_with('\u{FFFD}') && !last {
                String::new()
            } else {
                let d = text.get(out[r].text.len()..).unwrap_or("").to_string();
                out[r].text = text;
                d
            };
            if !on_token(TokenEvent { row: r, token: tok, text: &delta, logprob, top: &top }) {
                done[r] = true;
            }
            next.push(tok);
        }
        if done.iter().all(|&d| d) || step + 1 == steps {
            break;
        }
        let ids = Tensor::new(next.as_slice(), model.device())?.unsqueeze(1)?;
        let emb = model.decoder().embed_tokens(&ids)?;
        let valid: Vec<Vec<bool>> = done.iter().map(|_| vec![true]).collect();
        logits = model.forward_cached(&emb, &mut cache, Some(&valid), true)?;
    }
    for g in &mut out {
        g.text = tokenizer.decode(&g.ids)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repetition_penalty_follows_transformers() {
        let p = GenerateParams { repetition_penalty: 2.0, ..Default::default() };
        let mut l = vec![4.0, -1.0, 3.0];
        // Token 0 was generated: 4 / 2 = 2 < 3, so argmax moves to token 2; token 1 gets -2.
        assert_eq!(pick(&mut l, &[0, 1], &p, &mut Rng(0)), 2);
        assert_eq!(l, vec![2.0, -2.0, 3.0]);
    }

    #[test]
    fn top_p_keeps_the_nucleus_only() {
        let p = GenerateParams { temperature: 1.0, top_p: 0.5, ..Default::default() };
        let mut rng = Rng(3);
        for _ in 0..50 {
            let mut l = vec![0.0, 5.0, 0.0, 0.0];
            assert_eq!(pick(&mut l, &[], &p, &mut rng), 1);
        }
    }

    #[test]
    fn log_probs_and_top_k() {
        let row = [1.0f32, 3.0, 2.0, 3.0];
        let lse = log_sum_exp(&row);
        let direct = (row.iter().map(|&x| (x as f64).exp()).sum::<f64>()).ln() as f32;
        assert!((lse - direct).abs() < 1e-6);
        let top = top_k(&row, lse, 3);
        assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), [1, 3, 2]);
        assert!((top[0].1 - (3.0 - lse)).abs() < 1e-6);
        let p: f32 = row.iter().map(|&x| (x - lse).exp()).sum();
        assert!((p - 1.0).abs() < 1e-5);
        assert_eq!(top_k(&row, lse, 10).len(), 4);
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut l = vec![1.0, 3.0, 3.0];
        assert_eq!(pick(&mut l, &[], &GenerateParams::default(), &mut Rng(0)), 1);
    }
}
