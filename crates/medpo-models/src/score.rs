//! Scoring: the summed log-probability of a response given (image, prompt).
//!
//! Convention (fixtures README, section 4): the input is the expanded prompt followed by the
//! answer ids (answer text + EOS); the score is Σ_t log_softmax(logits[P + t - 1])[answer[t]]
//! over the answer tokens only, with the softmax over the full `vocab_size` row. Batches are
//! right-padded, so positions need no shifting and padding never influences real tokens.

use std::collections::HashMap;

use candle_core::{DType, Tensor, D};

use crate::error::{Error, Result};
use crate::llava::{LlavaModel, MultimodalInput, PadSide, VisionCache};

/// A prompt (with its images) and the response ids to score (EOS included).
#[derive(Debug, Clone)]
pub struct ScoreItem {
    pub prompt: MultimodalInput,
    pub answer_ids: Vec<u32>,
}

/// Per-row gather indices and mask for [`sequence_logprobs`].
#[derive(Debug, Clone)]
pub struct AnswerSpans {
    /// (B, T) u32: the token that position t predicts (0 where masked).
    pub targets: Tensor,
    /// (B, T) f32: 1 where position t predicts an answer token.
    pub mask: Tensor,
    /// Answer length of each row.
    pub counts: Vec<usize>,
}

/// Summed answer log-probs (B,) from logits (B, T, V). Differentiable; computed in f32 (f64 when
/// the logits are f64).
pub fn sequence_logprobs(logits: &Tensor, spans: &AnswerSpans) -> Result<Tensor> {
    let dt = if logits.dtype() == DType::F64 { DType::F64 } else { DType::F32 };
    let logp = candle_nn::ops::log_softmax(&logits.to_dtype(dt)?, D::Minus1)?;
    let tok = logp.gather(&spans.targets.unsqueeze(2)?.contiguous()?, 2)?.squeeze(2)?;
    Ok((tok * spans.mask.to_dtype(dt)?)?.sum(1)?)
}

/// Per row: (prompt ids count, answer ids).
pub type Answers = Vec<(usize, Vec<u32>)>;

/// Builds the full sequences (prompt + answer) and the answer spans.
pub fn build_inputs(items: &[ScoreItem]) -> Result<(Vec<MultimodalInput>, Answers)> {
    let mut inputs = Vec::with_capacity(items.len());
    let mut answers = Vec::with_capacity(items.len());
    for (r, it) in items.iter().enumerate() {
        if it.answer_ids.is_empty() {
            return Err(Error::InvalidInput(format!("row {r} has an empty answer")));
        }
        let mut ids = it.prompt.ids.clone();
        let prompt_tokens = ids.len();
        ids.extend(it.answer_ids.iter().map(|&i| i as i64));
        inputs.push(MultimodalInput { ids, pixel_values: it.prompt.pixel_values.clone() });
        answers.push((prompt_tokens, it.answer_ids.clone()));
    }
    Ok((inputs, answers))
}

/// Differentiable answer log-prob sums (B,) for a batch, on the training path. Only the
/// positions that predict answer tokens go through `lm_head` and the softmax.
pub fn score_batch(model: &LlavaModel, items: &[ScoreItem]) -> Result<Tensor> {
    score_packed(model, items, None)
}

/// [`score_batch`] with the rows that share a prompt (the same ids and the same pixel tensor,
/// e.g. a preference pair's chosen and rejected answers) packed into one sequence: the prompt,
/// then each answer, every answer attending to the prompt and to itself only, its positions
/// continuing the prompt's. The prompt (image tokens included) is then computed once for all
/// its answers; each answer's log-probs are those of the unpacked row (up to float rounding).
/// `cache`: frozen vision-tower outputs shared with other passes of the same step
/// ([`VisionCache`]).
pub fn score_packed(model: &LlavaModel, items: &[ScoreItem], cache: Option<&mut VisionCache>) -> Result<Tensor> {
    // Group the items by prompt, in order of first appearance.
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut by_prompt: HashMap<(&[i64], Option<candle_core::TensorId>), usize> = HashMap::new();
    for (r, it) in items.iter().enumerate() {
        if it.answer_ids.is_empty() {
            return Err(Error::InvalidInput(format!("row {r} has an empty answer")));
        }
        let key = (it.prompt.ids.as_slice(), it.prompt.pixel_values.as_ref().map(Tensor::id));
        let g = *by_prompt.entry(key).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(r);
    }
    let mut inputs = Vec::with_capacity(groups.len());
    let mut longest = Vec::with_capacity(groups.len());
    for g in &groups {
        let first = &items[g[0]].prompt;
        let mut ids = first.ids.clone();
        let mut most = 0;
        for &r in g {
            ids.extend(items[r].answer_ids.iter().map(|&i| i as i64));
            most = most.max(items[r].answer_ids.len());
        }
        longest.push(first.ids.len() + most);
        inputs.push(MultimodalInput { ids, pixel_values: first.pixel_values.clone() });
    }
    let batch = model.embed_rows(&inputs, PadSide::Right, Some(&longest), cache)?;
    let (b, t, _) = batch.embeds.dims3()?;
    let mut pos = Vec::with_capacity(b);
    let mut allowed = Vec::with_capacity(b * t * t);
    // Per item: (flat hidden row predicting each answer token, the token).
    let mut picks: Vec<Vec<(u32, u32)>> = vec![Vec::new(); items.len()];
    for (row, g) in groups.iter().enumerate() {
        let answers: usize = g.iter().map(|&r| items[r].answer_ids.len()).sum();
        let p = batch.lengths[row] - answers;
        if p == 0 {
            return Err(Error::InvalidInput(format!("row {} has an empty prompt", g[0])));
        }
        // segment[i]: which answer position i belongs to (None: the prompt or padding).
        let mut segment = vec![None; t];
        let mut rp: Vec<usize> = (0..t).map(|i| if i < p { i } else { 0 }).collect();
        let mut start = p;
        for (k, &r) in g.iter().enumerate() {
            let ans = &items[r].answer_ids;
            for (m, &a) in ans.iter().enumerate() {
                segment[start + m] = Some(k);
                rp[start + m] = p + m;
                let from = if m == 0 { p - 1 } else { start + m - 1 };
                picks[r].push(((row * t + from) as u32, a));
            }
            start += ans.len();
        }
        for i in 0..t {
            for j in 0..t {
                allowed.push(j <= i && (j < p || (segment[i].is_some() && segment[j] == segment[i])));
            }
        }
        pos.push(rp);
    }
    // Only the positions that predict answer tokens are read: the last layer runs just those
    // (as many per row as the row with the most; shorter rows repeat their first).
    let mut read: Vec<Vec<usize>> = vec![Vec::new(); b];
    for p in picks.iter().flatten() {
        read[p.0 as usize / t].push(p.0 as usize % t);
    }
    for r in read.iter_mut() {
        r.sort_unstable();
        r.dedup();
    }
    let width = read.iter().map(Vec::len).max().unwrap_or(0);
    for r in read.iter_mut() {
        let first = r.first().copied().unwrap_or(0);
        r.resize(width, first);
    }
    for p in picks.iter_mut().flatten() {
        let (row, at) = (p.0 as usize / t, p.0 as usize % t);
        let k = read[row].iter().position(|&i| i == at).unwrap_or(0);
        p.0 = (row * width + k) as u32;
    }
    let hidden = model.decoder().hidden_train_packed(&batch.embeds, &pos, allowed, Some(&read))?;
    logprob_sums_at(model, &hidden, &picks)
}

/// Answer log-prob sums as numbers, for evaluation. On the CPU this is the packed forward of
/// [`score_packed`] (answers to one prompt and image share its computation, and the last layer
/// runs only where log-probs are read), detached; elsewhere the KV-cache inference path.
pub fn score_fast(model: &LlavaModel, items: &[ScoreItem]) -> Result<Vec<f64>> {
    if model.device().is_cpu() && matches!(model.dtype(), DType::F32 | DType::F64) {
        let sums = score_packed(model, items, None)?.detach();
        return Ok(sums.to_dtype(DType::F64)?.to_vec1::<f64>()?);
    }
    let (inputs, answers) = build_inputs(items)?;
    let batch = model.embed_batch(&inputs, PadSide::Right)?;
    let mut cache = model.new_cache();
    let hidden = model.decoder().hidden_cached(&batch.embeds, &mut cache, Some(&batch.valid))?;
    let sums = answer_logprob_sums(model, &hidden, &batch.lengths, &answers)?;
    Ok(sums.to_dtype(DType::F64)?.to_vec1::<f64>()?)
}

/// Σ log p(answer) per row from final hidden states (B, T, H) of right-padded rows.
fn answer_logprob_sums(
    model: &LlavaModel,
    hidden: &Tensor,
    lengths: &[usize],
    answers: &[(usize, Vec<u32>)],
) -> Result<Tensor> {
    let t = hidden.dim(1)?;
    let mut picks = Vec::with_capacity(answers.len());
    for (r, (&len, (_, ans))) in lengths.iter().zip(answers).enumerate() {
        let p = len - ans.len();
        if p == 0 {
            return Err(Error::InvalidInput(format!("row {r} has an empty prompt")));
        }
        picks.push(ans.iter().enumerate().map(|(k, &a)| ((r * t + p + k - 1) as u32, a)).collect());
    }
    logprob_sums_at(model, hidden, &picks)
}

/// Per item, Σ log_softmax(lm_head(hidden[row]))[token] over its (flat row of `hidden`, token)
/// picks: only the picked rows go through `lm_head`.
fn logprob_sums_at(model: &LlavaModel, hidden: &Tensor, picks: &[Vec<(u32, u32)>]) -> Result<Tensor> {
    let (b, t, h) = hidden.dims3()?;
    let rows: Vec<u32> = picks.iter().flatten().map(|&(r, _)| r).collect();
    let targets: Vec<u32> = picks.iter().flatten().map(|&(_, a)| a).collect();
    let dev = hidden.device();
    let n = rows.len();
    let sel = hidden.reshape((b * t, h))?.index_select(&Tensor::new(rows.as_slice(), dev)?, 0)?;
    let logits = model.decoder().logits(&sel)?;
    let dt = if logits.dtype() == DType::F64 { DType::F64 } else { DType::F32 };
    let logp = candle_nn::ops::log_softmax(&logits.to_dtype(dt)?, D::Minus1)?;
    let tok = logp.gather(&Tensor::new(targets.as_slice(), dev)?.unsqueeze(1)?, 1)?.squeeze(1)?;
    // Sum per item: (items, N) one-hot ownership times (N,).
    let mut own = vec![0f32; picks.len() * n];
    let mut i = 0;
    for (r, p) in picks.iter().enumerate() {
        for _ in p {
            own[r * n + i] = 1.0;
            i += 1;
        }
    }
    let own = Tensor::from_vec(own, (picks.len(), n), dev)?.to_dtype(dt)?;
    Ok(own.matmul(&tok.unsqueeze(1)?)?.squeeze(1)?)
}

/// Targets and mask for right-padded rows whose answers end each row.
pub fn answer_spans(
    lengths: &[usize],
    answers: &[(usize, Vec<u32>)],
    t: usize,
    device: &candle_core::Device,
) -> Result<AnswerSpans> {
    let b = lengths.len();
    let mut targets = vec![0u32; b * t];
    let mut mask = vec![0f32; b * t];
    let mut counts = Vec::with_capacity(b);
    for (r, (&len, (_, ans))) in lengths.iter().zip(answers).enumerate() {
        let p = len - ans.len(); // expanded prompt length
        if p == 0 {
            return Err(Error::InvalidInput(format!("row {r} has an empty prompt")));
        }
        for (k, &a) in ans.iter().enumerate() {
            targets[r * t + p + k - 1] = a;
            mask[r * t + p + k - 1] = 1.0;
        }
        counts.push(ans.len());
    }
    Ok(AnswerSpans {
        targets: Tensor::from_vec(targets, (b, t), device)?,
        mask: Tensor::from_vec(mask, (b, t), device)?,
        counts,
    })
}
