//! Medical vision-language models (LLaVA-Med v1.5, HuatuoGPT-Vision, llava-hf) in candle.
//!
//! This crate knows nothing of the web, of storage or of training loops. It loads the released
//! checkpoints exactly as published ([`config`] resolves the three on-disk dialects), preprocesses
//! images as LLaVA does ([`preprocess`]), builds prompts ([`template`]), and runs two forward
//! paths that agree: a fast one with a KV cache for [`generate`], and a differentiable one that
//! returns logits at every position for [`score`] and for training.
//!
//! Entry point: [`Model::load`], then [`Model::input`], [`Model::generate`], [`Model::score`],
//! [`Model::sequence_logprobs`] (differentiable) and [`Model::forward_train`].

pub mod alloc;
pub mod attention;
pub mod clip;
pub mod config;
pub mod decoder;
pub mod error;
pub mod fused;
pub mod fused_grad;
pub mod gemv;
pub mod generate;
pub mod llava;
pub mod loader;
pub mod mistral;
pub mod model;
pub mod preprocess;
pub mod projector;
pub mod qwen2;
pub mod score;
pub mod template;

pub use config::{Layout, ModelConfig, ResolveOptions};
pub use error::{Error, Result};
pub use generate::{GenerateParams, Generation, TokenEvent};
pub use llava::{EmbeddedBatch, LlavaModel, MultimodalInput, PadSide, VisionCache};
pub use loader::{Linear, LinearAdapter};
pub use model::{parse_device, parse_dtype, LoadOptions, Model, RuntimeConfig};
pub use score::{sequence_logprobs, AnswerSpans, ScoreItem};
pub use template::{PromptTokenizer, Template, IMAGE_TOKEN_INDEX};
