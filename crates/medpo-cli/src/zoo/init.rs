//! A randomly initialised checkpoint of the LLaVA-Med v1.5 family in its released layout: a
//! `llava_mistral` folder (config, tokenizer, `model.safetensors` with `model.*`, `lm_head`
//! and `model.mm_projector.{0,2}`) and a separate CLIP vision folder named by
//! `mm_vision_tower` (`vision_model.*`). Weights are drawn from the seed with the phantom
//! generator's SplitMix64 (normal, σ = `initializer_range`; norms 1, biases 0), so the same
//! seed writes the same bytes on any machine.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use candle_core::{Device, Tensor};
use medpo_phantom::Rng;
use serde::{Deserialize, Serialize};

/// The architecture's sizes.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dims {
    pub image_size: usize,
    pub patch_size: usize,
    pub vision_hidden: usize,
    pub vision_intermediate: usize,
    /// CLIP layers written; LLaVA reads the second-to-last one's output, so one fewer is run.
    pub vision_layers: usize,
    pub vision_heads: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
}

impl Dims {
    pub fn image_tokens(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }
}

const INIT_STD: f32 = 0.02;

struct Weights {
    rng: Rng,
    t: HashMap<String, Tensor>,
}

impl Weights {
    fn normal(&mut self, name: String, shape: &[usize]) -> anyhow::Result<()> {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| self.rng.normal() * INIT_STD).collect();
        self.t.insert(name, Tensor::from_vec(v, shape, &Device::Cpu)?);
        Ok(())
    }
    fn fill(&mut self, name: String, shape: &[usize], x: f32) -> anyhow::Result<()> {
        self.t.insert(name, Tensor::full(x, shape, &Device::Cpu)?);
        Ok(())
    }
    fn linear(&mut self, name: &str, out: usize, inp: usize, bias: bool) -> anyhow::Result<()> {
        self.normal(format!("{name}.weight"), &[out, inp])?;
        if bias {
            self.fill(format!("{name}.bias"), &[out], 0.0)?;
        }
        Ok(())
    }
    fn layer_norm(&mut self, name: &str, dim: usize) -> anyhow::Result<()> {
        self.fill(format!("{name}.weight"), &[dim], 1.0)?;
        self.fill(format!("{name}.bias"), &[dim], 0.0)
    }
    fn save(self, path: &Path) -> anyhow::Result<()> {
        candle_core::safetensors::save(&self.t, path).with_context(|| format!("writing {}", path.display()))
    }
}

/// Writes the CLIP vision folder `clip_dir` and the LLaVA folder `model_dir` (whose
/// `mm_vision_tower` is `vision_tower`, a path relative to `model_dir`). The tokenizer files
/// must already be in `model_dir`; `vocab` is its size.
pub fn write_random(dims: &Dims, vocab: usize, seed: u64, clip_dir: &Path, model_dir: &Path, vision_tower: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(clip_dir).with_context(|| format!("creating {}", clip_dir.display()))?;
    std::fs::create_dir_all(model_dir).with_context(|| format!("creating {}", model_dir.display()))?;
    let d = dims;
    // The vision tower.
    let clip_cfg = serde_json::json!({
        "architectures": ["CLIPVisionModel"],
        "model_type": "clip_vision_model",
        "hidden_act": "quick_gelu",
        "hidden_size": d.vision_hidden,
        "intermediate_size": d.vision_intermediate,
        "num_hidden_layers": d.vision_layers,
        "num_attention_heads": d.vision_heads,
        "num_channels": 3,
        "image_size": d.image_size,
        "patch_size": d.patch_size,
        "layer_norm_eps": 1e-5,
        "attention_dropout": 0.0,
        "initializer_range": INIT_STD,
        "torch_dtype": "float32",
    });
    super::write_json(&clip_dir.join("config.json"), &clip_cfg)?;
    let pre = serde_json::json!({
        "crop_size": d.image_size,
        "size": d.image_size,
        "do_center_crop": true,
        "do_normalize": true,
        "do_resize": true,
        "feature_extractor_type": "CLIPFeatureExtractor",
        "image_processor_type": "CLIPImageProcessor",
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "resample": 3,
    });
    super::write_json(&clip_dir.join("preprocessor_config.json"), &pre)?;
    let mut w = Weights { rng: Rng::new(seed ^ 0xC11F_70E5), t: HashMap::new() };
    let (vh, np) = (d.vision_hidden, d.image_tokens());
    w.normal("vision_model.embeddings.patch_embedding.weight".into(), &[vh, 3, d.patch_size, d.patch_size])?;
    w.normal("vision_model.embeddings.class_embedding".into(), &[vh])?;
    w.normal("vision_model.embeddings.position_embedding.weight".into(), &[np + 1, vh])?;
    w.layer_norm("vision_model.pre_layrnorm", vh)?;
    w.layer_norm("vision_model.post_layernorm", vh)?;
    for l in 0..d.vision_layers {
        let p = format!("vision_model.encoder.layers.{l}");
        w.layer_norm(&format!("{p}.layer_norm1"), vh)?;
        w.layer_norm(&format!("{p}.layer_norm2"), vh)?;
        for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            w.linear(&format!("{p}.self_attn.{proj}"), vh, vh, true)?;
        }
        w.linear(&format!("{p}.mlp.fc1"), d.vision_intermediate, vh, true)?;
        w.linear(&format!("{p}.mlp.fc2"), vh, d.vision_intermediate, true)?;
    }
    w.save(&clip_dir.join("model.safetensors"))?;

    // Projector and decoder.
    let cfg = serde_json::json!({
        "architectures": ["LlavaMistralForCausalLM"],
        "model_type": "llava_mistral",
        "hidden_act": "silu",
        "hidden_size": d.hidden,
        "intermediate_size": d.intermediate,
        "num_hidden_layers": d.layers,
        "num_attention_heads": d.heads,
        "num_key_value_heads": d.kv_heads,
        "max_position_embeddings": 512,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "sliding_window": null,
        "tie_word_embeddings": false,
        "vocab_size": vocab,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "initializer_range": INIT_STD,
        "attention_dropout": 0.0,
        "image_aspect_ratio": "pad",
        "mm_hidden_size": vh,
        "mm_patch_merge_type": "flat",
        "mm_projector_type": "mlp2x_gelu",
        "mm_use_im_patch_token": false,
        "mm_use_im_start_end": false,
        "mm_vision_select_feature": "patch",
        "mm_vision_select_layer": -2,
        "mm_vision_tower": vision_tower,
        "tokenizer_model_max_length": 512,
        "tokenizer_padding_side": "right",
        "unfreeze_mm_vision_tower": true,
        "use_mm_proj": true,
        "use_cache": true,
        "torch_dtype": "float32",
    });
    super::write_json(&model_dir.join("config.json"), &cfg)?;
    super::write_json(
        &model_dir.join("generation_config.json"),
        &serde_json::json!({ "bos_token_id": 1, "eos_token_id": 2 }),
    )?;
    let mut w = Weights { rng: Rng::new(seed ^ 0x11A7_A000), t: HashMap::new() };
    let (h, hd) = (d.hidden, d.hidden / d.heads);
    w.normal("model.embed_tokens.weight".into(), &[vocab, h])?;
    w.normal("lm_head.weight".into(), &[vocab, h])?;
    w.fill("model.norm.weight".into(), &[h], 1.0)?;
    w.linear("model.mm_projector.0", h, vh, true)?;
    w.linear("model.mm_projector.2", h, h, true)?;
    for l in 0..d.layers {
        let p = format!("model.layers.{l}");
        w.fill(format!("{p}.input_layernorm.weight"), &[h], 1.0)?;
        w.fill(format!("{p}.post_attention_layernorm.weight"), &[h], 1.0)?;
        w.linear(&format!("{p}.self_attn.q_proj"), d.heads * hd, h, false)?;
        w.linear(&format!("{p}.self_attn.k_proj"), d.kv_heads * hd, h, false)?;
        w.linear(&format!("{p}.self_attn.v_proj"), d.kv_heads * hd, h, false)?;
        w.linear(&format!("{p}.self_attn.o_proj"), h, d.heads * hd, false)?;
        w.linear(&format!("{p}.mlp.gate_proj"), d.intermediate, h, false)?;
        w.linear(&format!("{p}.mlp.up_proj"), d.intermediate, h, false)?;
        w.linear(&format!("{p}.mlp.down_proj"), h, d.intermediate, false)?;
    }
    w.save(&model_dir.join("model.safetensors"))
}
