//! The seam between vision and language: CLIP features → projector → spliced into the token
//! embeddings at each image placeholder (`-200`) → decoder.
//!
//! Every placeholder is replaced by *all* projected patch embeddings of its image (16 in the
//! fixtures, 576 for CLIP-L/336), and position ids run over the expanded sequence.

use candle_core::{DType, Device, Tensor};

use crate::clip::ClipVision;
use crate::config::{ModelConfig, SelectFeature};
use crate::decoder::{Decoder, KvCache};
use crate::error::{Error, Result};
use crate::projector::Projector;
use crate::template::IMAGE_TOKEN_INDEX;

/// One sequence: token ids in which each `IMAGE_TOKEN_INDEX` (-200) stands for one image, and
/// the pixel values of those images, (n_images, 3, S, S), in order.
#[derive(Debug, Clone)]
pub struct MultimodalInput {
    pub ids: Vec<i64>,
    pub pixel_values: Option<Tensor>,
}

impl MultimodalInput {
    /// Number of image placeholders in `ids`.
    pub fn image_count(&self) -> usize {
        self.ids.iter().filter(|&&i| i == IMAGE_TOKEN_INDEX).count()
    }
}

/// Which side batched sequences are padded on: left for generation, right for scoring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PadSide {
    Left,
    Right,
}

/// A padded batch of spliced embeddings.
#[derive(Debug, Clone)]
pub struct EmbeddedBatch {
    /// (B, T, hidden).
    pub embeds: Tensor,
    /// (B, T) u8: 1 for real positions, 0 for padding.
    pub attention_mask: Tensor,
    /// The same mask on the host.
    pub valid: Vec<Vec<bool>>,
    /// Expanded length of each row.
    pub lengths: Vec<usize>,
    /// Index of each row's first real position (the left padding).
    pub offsets: Vec<usize>,
}

/// Vision-tower outputs kept for the passes of one training step, keyed by pixel tensor: the
/// policy and reference passes (and every row on one image) then run a *frozen* tower once per
/// image. Only valid while the tower's weights are frozen and the same in every model it is
/// passed to (the caller's promise: a LoRA policy and its adapters-off reference, or a fully
/// tuned policy with a frozen tower and its frozen copy). Build a fresh one per step.
#[derive(Debug, Default)]
pub struct VisionCache {
    hidden: std::collections::HashMap<candle_core::TensorId, Tensor>,
}

impl VisionCache {
    /// Images encoded so far.
    pub fn len(&self) -> usize {
        self.hidden.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.hidden.is_empty()
    }
}

/// LLaVA: vision tower, projector and decoder.
#[derive(Debug, Clone)]
pub struct LlavaModel {
    pub(crate) vision: ClipVision,
    pub(crate) projector: Projector,
    pub(crate) decoder: Decoder,
    select_feature: SelectFeature,
    context_len: usize,
    image_size: usize,
}

impl LlavaModel {
    pub(crate) fn new(vision: ClipVision, projector: Projector, decoder: Decoder, cfg: &ModelConfig) -> Self {
        LlavaModel {
            vision,
            projector,
            decoder,
            select_feature: cfg.select_feature,
            context_len: cfg.context_len,
            image_size: cfg.vision.image_size,
        }
    }

    /// The decoder.
    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// Weights' dtype.
    pub fn dtype(&self) -> DType {
        self.decoder.dtype()
    }

    /// Weights' device.
    pub fn device(&self) -> &Device {
        self.decoder.device()
    }

    /// The selected CLIP hidden state, (N, 1 + patches, mm_hidden), CLS first.
    pub fn vision_hidden_state(&self, pixel_values: &Tensor) -> Result<Tensor> {
        self.vision.forward(pixel_values)
    }

    /// Projected image features, (N, image tokens, hidden).
    pub fn encode_images(&self, pixel_values: &Tensor) -> Result<Tensor> {
        self.project(self.vision.forward(pixel_values)?)
    }

    /// Projected features of several pixel tensors, concatenated; the tower output of each is
    /// taken from (or put into) `cache` by tensor id when one is given.
    /// `ids`: the caller's tensor ids of `pix` (before any device move).
    fn encode_many(&self, pix: &[Tensor], ids: &[candle_core::TensorId], cache: Option<&mut VisionCache>) -> Result<Tensor> {
        let Some(cache) = cache else {
            return self.encode_images(&Tensor::cat(pix, 0)?);
        };
        let missing: Vec<(usize, &Tensor)> =
            pix.iter().enumerate().filter(|(i, _)| !cache.hidden.contains_key(&ids[*i])).collect();
        if !missing.is_empty() {
            let batch: Vec<&Tensor> = missing.iter().map(|(_, p)| *p).collect();
            let h = self.vision.forward(&Tensor::cat(&batch, 0)?)?.detach();
            let mut at = 0;
            for (i, p) in missing {
                let n = p.dim(0)?;
                cache.hidden.insert(ids[i], h.narrow(0, at, n)?);
                at += n;
            }
        }
        let hs: Vec<&Tensor> = ids.iter().map(|id| &cache.hidden[id]).collect();
        self.project(Tensor::cat(&hs, 0)?)
    }

    fn project(&self, h: Tensor) -> Result<Tensor> {
        let h = match self.select_feature {
            SelectFeature::Patch => h.narrow(1, 1, h.dim(1)? - 1)?,
            SelectFeature::ClsPatch => h,
        };
        self.projector.forward(&h)
    }

    /// Splices, pads and stacks a batch. Errors when a row's placeholders and images disagree or
    /// when the expanded row exceeds the context (nothing is ever truncated).
    pub fn embed_batch(&self, inputs: &[MultimodalInput], side: PadSide) -> Result<EmbeddedBatch> {
        self.embed_rows(inputs, side, None, None)
    }

    /// [`LlavaModel::embed_batch`] with, per row, the length checked against the context
    /// (`longest`: a packed row holds several sequences, each shorter than the row; None: the row's
    /// length) and an optional cache of frozen tower outputs.
    pub(crate) fn embed_rows(
        &self,
        inputs: &[MultimodalInput],
        side: PadSide,
        longest: Option<&[usize]>,
        cache: Option<&mut VisionCache>,
    ) -> Result<EmbeddedBatch> {
        if inputs.is_empty() {
            return Err(Error::InvalidInput("empty batch".into()));
        }
        // Rows that share one pixel tensor (e.g. the chosen and rejected answers of a preference
        // pair) share its encoding: each distinct tensor is encoded once.
        let mut pix = Vec::new();
        let mut pix_ids = Vec::new();
        let mut first_image: Vec<usize> = Vec::with_capacity(inputs.len());
        let mut seen: std::collections::HashMap<candle_core::TensorId, usize> = std::collections::HashMap::new();
        let mut n_unique = 0;
        for (r, inp) in inputs.iter().enumerate() {
            let n_img = inp.image_count();
            let given = match &inp.pixel_values {
                Some(p) => p.dims4()?.0,
                None => 0,
            };
            if n_img != given {
                return Err(Error::InvalidInput(format!(
                    "row {r} has {n_img} image placeholders but {given} images"
                )));
            }
            if let Some(p) = &inp.pixel_values {
                if let Some(&start) = seen.get(&p.id()) {
                    first_image.push(start);
                    continue;
                }
                let (n, c, h, w) = p.dims4()?;
                if c != 3 || h != self.image_size || w != self.image_size {
                    return Err(Error::InvalidInput(format!(
                        "row {r}: pixel values are {c}x{h}x{w}, expected 3x{0}x{0}",
                        self.image_size
                    )));
                }
                seen.insert(p.id(), n_unique);
                first_image.push(n_unique);
                n_unique += n;
                pix.push(p.to_device(self.device())?);
                pix_ids.push(p.id());
            } else {
                first_image.push(0);
            }
        }
        let feats = if pix.is_empty() { None } else { Some(self.encode_many(&pix, &pix_ids, cache)?) };
        let n_feat = feats.as_ref().map_or(0, |f| f.dim(1).unwrap_or(0));
        let vocab = self.decoder.config().vocab_size as i64;
        let mut rows = Vec::with_capacity(inputs.len());
        for (r, (inp, &first)) in inputs.iter().zip(&first_image).enumerate() {
            let mut img_idx = first;
            let mut parts = Vec::new();
            let mut text: Vec<u32> = Vec::new();
            let mut image_tokens = 0;
            let flush = |text: &mut Vec<u32>, parts: &mut Vec<Tensor>| -> Result<()> {
                if !text.is_empty() {
                    let ids = Tensor::new(text.as_slice(), self.device())?;
                    parts.push(self.decoder.embed_tokens(&ids)?);
                    text.clear();
                }
                Ok(())
            };
            for &id in &inp.ids {
                if id == IMAGE_TOKEN_INDEX {
                    flush(&mut text, &mut parts)?;
                    let f = feats.as_ref().ok_or_else(|| Error::InvalidInput("missing image".into()))?;
                    parts.push(f.get(img_idx)?);
                    img_idx += 1;
                    image_tokens += n_feat;
                } else if id < 0 || id >= vocab {
                    return Err(Error::InvalidInput(format!("token id {id} outside the vocabulary of {vocab}")));
                } else {
                    text.push(id as u32);
                }
            }
            flush(&mut text, &mut parts)?;
            if parts.is_empty() {
                return Err(Error::InvalidInput("empty sequence".into()));
            }
            let row = Tensor::cat(&parts, 0)?;
            let len = match longest {
                // The packed row's text ids are its prompt and answers; `longest` counts ids, the
                // image placeholders among them once each.
                Some(s) => s[r] + image_tokens - inp.image_count(),
                None => row.dim(0)?,
            };
            if len > self.context_len {
                return Err(Error::ContextOverflow { tokens: len, image_tokens, context: self.context_len });
            }
            rows.push(row);
        }
        let max_len = rows.iter().map(|r| r.dim(0).unwrap_or(0)).max().unwrap_or(0);
        let hidden = self.decoder.config().hidden_size;
        let mut padded = Vec::with_capacity(rows.len());
        let mut valid = Vec::with_capacity(rows.len());
        let mut lengths = Vec::new();
        let mut offsets = Vec::new();
        for row in rows {
            let len = row.dim(0)?;
            let pad = max_len - len;
            let zeros = Tensor::zeros((pad, hidden), row.dtype(), row.device())?;
            let (r, v, off) = match side {
                PadSide::Left if pad > 0 => (Tensor::cat(&[&zeros, &row], 0)?, [vec![false; pad], vec![true; len]].concat(), pad),
                PadSide::Right if pad > 0 => (Tensor::cat(&[&row, &zeros], 0)?, [vec![true; len], vec![false; pad]].concat(), 0),
                _ => (row, vec![true; len], 0),
            };
            padded.push(r);
            valid.push(v);
            lengths.push(len);
            offsets.push(off);
        }
        let embeds = Tensor::stack(&padded, 0)?;
        let flat: Vec<u8> = valid.iter().flatten().map(|&v| u8::from(v)).collect();
        let attention_mask = Tensor::from_vec(flat, (valid.len(), max_len), self.device())?;
        Ok(EmbeddedBatch { embeds, attention_mask, valid, lengths, offsets })
    }

    /// Differentiable forward over a spliced batch: logits (B, T, vocab) at every position.
    pub fn forward_train(&self, batch: &EmbeddedBatch) -> Result<Tensor> {
        let all_valid = batch.valid.iter().all(|r| r.iter().all(|&v| v));
        let mask = if all_valid { None } else { Some(&batch.attention_mask) };
        self.decoder.forward_train(&batch.embeds, mask)
    }

    /// Fast forward with a KV cache (prefill or decode step).
    pub fn forward_cached(
        &self,
        embeds: &Tensor,
        cache: &mut KvCache,
        valid: Option<&[Vec<bool>]>,
        last_only: bool,
    ) -> Result<Tensor> {
        self.decoder.forward_cached(embeds, cache, valid, last_only)
    }

    /// A fresh KV cache for this model.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.decoder.config().num_hidden_layers)
    }

    /// Longest accepted sequence.
    pub fn context_len(&self) -> usize {
        self.context_len
    }
}
