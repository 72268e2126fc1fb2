//! Writes a random llava-hf checkpoint with the MEDIUM dims of `shared/bench/medium_dims.json`
//! (weights only; tokenizer and processor files copied from the tiny fixture), for timing the
//! engine when the Python generator is not at hand. Its numbers are not comparable with the
//! reference's outputs (different random weights), only its speed is.
//!
//! ```text
//! cargo run --release -p medpo-models --example synth_medium -- ../shared/fixtures/v1/llava-hf-tiny target/medium-synth/llava-hf-tiny
//! ```

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let src = PathBuf::from(args.next().ok_or("usage: synth_medium TINY_LLAVA_HF_DIR OUT_DIR")?);
    let out = PathBuf::from(args.next().ok_or("usage: synth_medium TINY_LLAVA_HF_DIR OUT_DIR")?);
    std::fs::create_dir_all(&out)?;
    for f in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json", "processor_config.json"] {
        std::fs::copy(src.join(f), out.join(f))?;
    }
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(src.join("config.json"))?)?;
    let (h, i, l, nh, nkv, v) = (512usize, 1408usize, 8usize, 8usize, 4usize, 1024usize);
    let (vh, vi, vl, vheads, img, patch) = (384usize, 1536usize, 6usize, 6usize, 224usize, 14usize);
    for (k, x) in [("hidden_size", h), ("intermediate_size", i), ("num_hidden_layers", l), ("num_attention_heads", nh), ("num_key_value_heads", nkv)] {
        cfg["text_config"][k] = x.into();
    }
    for (k, x) in [("hidden_size", vh), ("intermediate_size", vi), ("num_hidden_layers", vl), ("num_attention_heads", vheads), ("image_size", img), ("patch_size", patch)] {
        cfg["vision_config"][k] = x.into();
    }
    cfg["image_seq_length"] = ((img / patch) * (img / patch)).into();
    std::fs::write(out.join("config.json"), serde_json::to_string_pretty(&cfg)?)?;
    let mut pre: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(src.join("preprocessor_config.json"))?)?;
    pre["size"] = serde_json::json!({ "shortest_edge": img });
    pre["crop_size"] = serde_json::json!({ "height": img, "width": img });
    std::fs::write(out.join("preprocessor_config.json"), serde_json::to_string_pretty(&pre)?)?;

    let dev = Device::Cpu;
    let mut t: HashMap<String, Tensor> = HashMap::new();
    let mut put = |name: String, shape: &[usize], fan_in: usize| -> candle_core::Result<()> {
        let std = if fan_in == 0 { 0.1 } else { (1.0 / fan_in as f64).sqrt() };
        let x = Tensor::randn(0f32, std as f32, shape, &dev)?;
        let x = if fan_in == 0 { (x + 1.0)? } else { x };
        t.insert(name, x.to_dtype(DType::F32)?);
        Ok(())
    };
    let hd = h / nh;
    put("language_model.model.embed_tokens.weight".into(), &[v, h], 1)?;
    put("language_model.lm_head.weight".into(), &[v, h], h)?;
    put("language_model.model.norm.weight".into(), &[h], 0)?;
    for n in 0..l {
        let p = format!("language_model.model.layers.{n}");
        put(format!("{p}.input_layernorm.weight"), &[h], 0)?;
        put(format!("{p}.post_attention_layernorm.weight"), &[h], 0)?;
        put(format!("{p}.self_attn.q_proj.weight"), &[nh * hd, h], h)?;
        put(format!("{p}.self_attn.k_proj.weight"), &[nkv * hd, h], h)?;
        put(format!("{p}.self_attn.v_proj.weight"), &[nkv * hd, h], h)?;
        put(format!("{p}.self_attn.o_proj.weight"), &[h, nh * hd], h)?;
        put(format!("{p}.mlp.gate_proj.weight"), &[i, h], h)?;
        put(format!("{p}.mlp.up_proj.weight"), &[i, h], h)?;
        put(format!("{p}.mlp.down_proj.weight"), &[h, i], i)?;
    }
    put("multi_modal_projector.linear_1.weight".into(), &[h, vh], vh)?;
    put("multi_modal_projector.linear_1.bias".into(), &[h], vh)?;
    put("multi_modal_projector.linear_2.weight".into(), &[h, h], h)?;
    put("multi_modal_projector.linear_2.bias".into(), &[h], h)?;
    let vp = "vision_tower.vision_model";
    let np = (img / patch) * (img / patch);
    put(format!("{vp}.embeddings.patch_embedding.weight"), &[vh, 3, patch, patch], 3 * patch * patch)?;
    put(format!("{vp}.embeddings.class_embedding"), &[vh], 1)?;
    put(format!("{vp}.embeddings.position_embedding.weight"), &[np + 1, vh], 1)?;
    put(format!("{vp}.pre_layrnorm.weight"), &[vh], 0)?;
    put(format!("{vp}.pre_layrnorm.bias"), &[vh], vh)?;
    put(format!("{vp}.post_layernorm.weight"), &[vh], 0)?;
    put(format!("{vp}.post_layernorm.bias"), &[vh], vh)?;
    for n in 0..vl {
        let p = format!("{vp}.encoder.layers.{n}");
        for ln in ["layer_norm1", "layer_norm2"] {
            put(format!("{p}.{ln}.weight"), &[vh], 0)?;
            put(format!("{p}.{ln}.bias"), &[vh], vh)?;
        }
        for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            put(format!("{p}.self_attn.{proj}.weight"), &[vh, vh], vh)?;
            put(format!("{p}.self_attn.{proj}.bias"), &[vh], vh)?;
        }
        put(format!("{p}.mlp.fc1.weight"), &[vi, vh], vh)?;
        put(format!("{p}.mlp.fc1.bias"), &[vi], vh)?;
        put(format!("{p}.mlp.fc2.weight"), &[vh, vi], vi)?;
        put(format!("{p}.mlp.fc2.bias"), &[vh], vi)?;
    }
    candle_core::safetensors::save(&t, out.join("model.safetensors"))?;
    // The bench reads MODEL_DIR/../scan.png.
    let scan = src.join("../scan.png");
    if let Some(parent) = out.parent() {
        std::fs::copy(scan, parent.join("scan.png"))?;
    }
    eprintln!("wrote {}", out.display());
    Ok(())
}
