//! A Llama-style BPE tokenizer trained on the zoo's own corpus with the `tokenizers` crate:
//! Metaspace pre-tokenizer (`▁` for spaces, prepended), `<unk>`/`<s>`/`</s>` as ids 0/1/2, BOS
//! added by the post-processor (LLaVA-Med's `add_bos_token`), every printable ASCII character
//! in the alphabet so that any question typed in English encodes without `<unk>`.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{anyhow, Context};
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::processors::PostProcessorWrapper;
use tokenizers::{AddedToken, TokenizerBuilder};

/// Trains on `texts` and writes `tokenizer.json`, `tokenizer_config.json` and
/// `special_tokens_map.json` into `dir`. Returns the vocabulary size.
pub fn train(texts: &[String], vocab_size: usize, dir: &Path) -> anyhow::Result<usize> {
    let specials = ["<unk>", "<s>", "</s>"];
    let alphabet: HashSet<char> = (' '..='~').chain(['▁', '\n']).collect();
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(specials.iter().map(|s| AddedToken::from(*s, true)).collect())
        .initial_alphabet(alphabet)
        .build();
    let post = TemplateProcessing::builder()
        .try_single("<s> $A")
        .map_err(|e| anyhow!("{e}"))?
        .try_pair("<s> $A <s> $B")
        .map_err(|e| anyhow!("{e}"))?
        .special_tokens(vec![("<s>", 1)])
        .build()
        .map_err(|e| anyhow!("{e}"))?;
    let meta = Metaspace::new('▁', PrependScheme::Always, true);
    let model = BPE::builder().unk_token("<unk>".into()).build().map_err(|e| anyhow!("{e}"))?;
    let mut tok = TokenizerBuilder::<BPE, NormalizerWrapper, PreTokenizerWrapper, PostProcessorWrapper, DecoderWrapper>::new()
        .with_model(model)
        .with_normalizer(None)
        .with_pre_tokenizer(Some(PreTokenizerWrapper::Metaspace(meta.clone())))
        .with_post_processor(Some(PostProcessorWrapper::Template(post)))
        .with_decoder(Some(DecoderWrapper::Metaspace(meta)))
        .build()
        .map_err(|e| anyhow!("{e}"))?;
    tok.train(&mut trainer, texts.iter()).map_err(|e| anyhow!("training the tokenizer: {e}"))?;
    for (id, s) in specials.iter().enumerate() {
        if tok.token_to_id(s) != Some(id as u32) {
            anyhow::bail!("tokenizer: `{s}` did not get id {id}");
        }
    }
    let path = dir.join("tokenizer.json");
    tok.save(&path, true).map_err(|e| anyhow!("{e}")).with_context(|| format!("writing {}", path.display()))?;
    let n = tok.get_vocab_size(true);
    let cfg = serde_json::json!({
        "add_bos_token": true,
        "add_eos_token": false,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<unk>",
        "model_max_length": 512,
        "padding_side": "right",
        "clean_up_tokenization_spaces": false,
        "tokenizer_class": "LlamaTokenizer",
    });
    super::write_json(&dir.join("tokenizer_config.json"), &cfg)?;
    let map = serde_json::json!({ "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>" });
    super::write_json(&dir.join("special_tokens_map.json"), &map)?;
    Ok(n)
}
