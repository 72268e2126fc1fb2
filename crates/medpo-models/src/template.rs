//! Prompt templates and the LLaVA image-placeholder tokenization.
//!
//! The prompts are exactly those of the released code (see the fixtures README, section 2):
//! LLaVA-Med's `mistral_instruct`, HuatuoGPT-Vision's `<|user|>`/`<|assistant|>` (plain text,
//! not special tokens) and the llava-hf chat templates.

use std::path::{Path, PathBuf};

use tokenizers::Tokenizer;

use crate::config::{Layout, ModelConfig, TextArch};
use crate::error::{Error, Result};

/// LLaVA's `IMAGE_TOKEN_INDEX`: stands for one image in prompt ids; expanded into the projected
/// patch embeddings before the decoder.
pub const IMAGE_TOKEN_INDEX: i64 = -200;

/// The image placeholder in prompt text.
pub const IMAGE_PLACEHOLDER: &str = "<image>";

/// A conversation template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    /// LLaVA-Med v1.5 `mistral_instruct` (LLAMA_2 separator style, empty system prompt), also the
    /// llava-hf Mistral chat template: `[INST] <image>\n{q} [/INST]`.
    MistralInstruct,
    /// HuatuoGPT-Vision `cli.py`: `<|user|>\n<image>\n{q}\n<|assistant|>\n`.
    Huatuo,
    /// llava-hf LLaVA-1.5 (Vicuna) chat template: `USER: <image>\n{q} ASSISTANT:`.
    Vicuna,
}

impl Template {
    /// The template each layout's released code uses.
    pub fn for_layout(layout: Layout, arch: TextArch) -> Template {
        match (layout, arch) {
            (Layout::LlavaMistral, _) => Template::MistralInstruct,
            (Layout::LlavaQwen2, _) => Template::Huatuo,
            (Layout::LlavaHf, TextArch::Mistral) => Template::MistralInstruct,
            (Layout::LlavaHf, _) => Template::Vicuna,
        }
    }

    /// The single-turn prompt for `question`, with the image placeholder when `with_image`.
    pub fn prompt(&self, question: &str, with_image: bool) -> String {
        let image = if with_image { "<image>\n" } else { "" };
        match self {
            Template::MistralInstruct => format!("[INST] {image}{question} [/INST]"),
            Template::Huatuo => format!("<|user|>\n{image}{question}\n<|assistant|>\n"),
            Template::Vicuna => format!("USER: {image}{question} ASSISTANT:"),
        }
    }
}

/// The tokenizer plus the conventions of one model: BOS handling per chunk and the EOS.
#[derive(Clone)]
pub struct PromptTokenizer {
    tokenizer: Tokenizer,
    path: PathBuf,
    add_bos: bool,
    /// EOS appended to answers (the tokenizer's `eos_token`).
    pub eos_id: u32,
    /// Ids that stop generation.
    pub stop_ids: Vec<u32>,
    /// Padding id for batched inputs (its embedding is masked out, so any valid id works).
    pub pad_id: u32,
}

impl std::fmt::Debug for PromptTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptTokenizer").field("path", &self.path).field("eos_id", &self.eos_id).finish()
    }
}

impl PromptTokenizer {
    /// Loads `tokenizer.json` from the model folder.
    pub fn load(cfg: &ModelConfig) -> Result<Self> {
        let path = cfg.dir.join("tokenizer.json");
        if !path.is_file() {
            if cfg.dir.join("tokenizer.model").is_file() {
                return Err(Error::Tokenizer {
                    path,
                    message: "not found; the folder has only a sentencepiece tokenizer.model. Write tokenizer.json once \
                              with transformers: AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR)"
                        .into(),
                });
            }
            return Err(Error::MissingFile { what: "tokenizer file", path });
        }
        let tokenizer = Tokenizer::from_file(&path)
            .map_err(|e| Error::Tokenizer { path: path.clone(), message: e.to_string() })?;
        let eos_id = match &cfg.eos_token {
            Some(s) => tokenizer.token_to_id(s).ok_or_else(|| Error::Tokenizer {
                path: path.clone(),
                message: format!("eos_token `{s}` of tokenizer_config.json is not in the vocabulary"),
            })?,
            None => *cfg.eos_token_ids.first().ok_or_else(|| Error::Tokenizer {
                path: path.clone(),
                message: "no eos_token in tokenizer_config.json and no eos_token_id in the configs".into(),
            })?,
        };
        let mut stop_ids = cfg.eos_token_ids.clone();
        if !stop_ids.contains(&eos_id) {
            stop_ids.push(eos_id);
        }
        Ok(PromptTokenizer { tokenizer, path, add_bos: cfg.add_bos, eos_id, stop_ids, pad_id: eos_id })
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.tokenizer
    }

    fn encode_chunk(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, special)
            .map_err(|e| Error::Tokenizer { path: self.path.clone(), message: e.to_string() })?;
        Ok(enc.get_ids().to_vec())
    }

    /// LLaVA's `tokenizer_image_token`: split at `<image>`, tokenize each chunk on its own (with
    /// BOS when the tokenizer adds one, keeping only the first chunk's), join with -200.
    pub fn encode_prompt(&self, prompt: &str) -> Result<Vec<i64>> {
        let mut ids = Vec::new();
        for (i, chunk) in prompt.split(IMAGE_PLACEHOLDER).enumerate() {
            let mut c = self.encode_chunk(chunk, self.add_bos)?;
            if i > 0 {
                ids.push(IMAGE_TOKEN_INDEX);
                if self.add_bos && !c.is_empty() {
                    c.remove(0);
                }
            }
            ids.extend(c.into_iter().map(i64::from));
        }
        Ok(ids)
    }

    /// Answer ids: the text without special tokens, then the EOS (README section 4).
    pub fn encode_answer(&self, answer: &str) -> Result<Vec<u32>> {
        let mut ids = self.encode_chunk(answer, false)?;
        ids.push(self.eos_id);
        Ok(ids)
    }

    /// Decodes ids, skipping special tokens.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| Error::Tokenizer { path: self.path.clone(), message: e.to_string() })
    }

    /// Folder-independent path of the tokenizer file (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_match_the_released_code() {
        let q = "Is there a nodule?";
        assert_eq!(Template::MistralInstruct.prompt(q, true), "[INST] <image>\nIs there a nodule? [/INST]");
        assert_eq!(Template::Huatuo.prompt(q, true), "<|user|>\n<image>\nIs there a nodule?\n<|assistant|>\n");
        assert_eq!(Template::Vicuna.prompt(q, true), "USER: <image>\nIs there a nodule? ASSISTANT:");
        assert_eq!(Template::MistralInstruct.prompt(q, false), "[INST] Is there a nodule? [/INST]");
    }

    #[test]
    fn templates_follow_the_layout() {
        assert_eq!(Template::for_layout(Layout::LlavaMistral, TextArch::Mistral), Template::MistralInstruct);
        assert_eq!(Template::for_layout(Layout::LlavaQwen2, TextArch::Qwen2), Template::Huatuo);
        assert_eq!(Template::for_layout(Layout::LlavaHf, TextArch::Mistral), Template::MistralInstruct);
        assert_eq!(Template::for_layout(Layout::LlavaHf, TextArch::Llama), Template::Vicuna);
    }
}
