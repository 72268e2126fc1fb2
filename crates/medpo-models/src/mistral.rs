//! Mistral (and Llama) decoders: `model.layers.N.self_attn.{q,k,v,o}_proj` without biases,
//! grouped-query attention, RMSNorm, SwiGLU MLP, rotary embeddings with `rope_theta`.
//!
//! LLaVA-Med v1.5 (`llava_mistral`) and llava-hf Mistral/Llama checkpoints use this decoder; the
//! shared implementation with both forward paths is in `decoder.rs`.

use crate::config::TextConfig;
use crate::decoder::Decoder;
use crate::error::Result;
use crate::loader::Params;

/// Loads a Mistral/Llama decoder under `body` (`model.` or `language_model.model.`).
pub fn load(p: &Params, body: &str, lm_head: &str, cfg: &TextConfig) -> Result<Decoder> {
    let cfg = TextConfig { attention_bias: false, ..cfg.clone() };
    Decoder::load(p, body, lm_head, &cfg)
}
