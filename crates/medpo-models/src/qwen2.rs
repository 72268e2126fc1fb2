//! Qwen2 decoder (HuatuoGPT-Vision): Mistral's structure plus `self_attn.{q,k,v}_proj.bias`.
//!
//! The embedding and `lm_head` keep every row of `vocab_size` (1024 in the fixtures, 152064 in
//! the real model) even though the tokenizer is smaller: the extra rows take part in the softmax,
//! and cutting them changes log-probs by 2–3e-3 per token.

use crate::config::TextConfig;
use crate::decoder::Decoder;
use crate::error::Result;
use crate::loader::Params;

/// Loads a Qwen2 decoder under `body`.
pub fn load(p: &Params, body: &str, lm_head: &str, cfg: &TextConfig) -> Result<Decoder> {
    let cfg = TextConfig { attention_bias: true, ..cfg.clone() };
    Decoder::load(p, body, lm_head, &cfg)
}
