//! Batch-1 prefill latency and greedy decode tokens/s of a random-weight model with LLaVA-Med
//! v1.5-7B's shapes (CLIP ViT-L/14-336, MLP projector, Mistral-7B: 4096 wide, 32 layers, 32/8
//! heads, SwiGLU 14336, vocab 32000), printed beside the HBM roofline of the GPU it runs on:
//! decode reads every language-model weight once per token, so tokens/s ≤ bandwidth ÷ bytes.
//!
//! ```text
//! cargo run --release --features cuda -p medpo-models --example gpu_roofline -- \
//!     --dir target/llava-med-7b-random [--dtype bf16] [--new-tokens 64] [--runs 5]
//! ```
//!
//! The checkpoint (llava-hf layout, tokenizer and processor files of the tiny fixture, ~14 GB
//! in bf16) is written into `--dir` on first use, with uniform random weights scaled by
//! 1/√fan-in (timing does not depend on the values). `--preset medium` writes the benchmark's
//! medium dims instead (a CPU smoke test of this program). The bandwidth comes from a table of
//! GPUs by the name `nvidia-smi` reports; `MEDPO_HBM_GBPS` overrides it. Scripted by
//! `scripts/gpu-check.sh`; nothing here runs in CI.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use medpo_models::{GenerateParams, LoadOptions, Model};
use rayon::prelude::*;

struct Dims {
    h: usize,
    i: usize,
    l: usize,
    nh: usize,
    nkv: usize,
    vocab: usize,
    vh: usize,
    vi: usize,
    vl: usize,
    vheads: usize,
    img: usize,
    patch: usize,
}

const LLAVA_MED_7B: Dims = Dims { h: 4096, i: 14336, l: 32, nh: 32, nkv: 8, vocab: 32000, vh: 1024, vi: 4096, vl: 24, vheads: 16, img: 336, patch: 14 };
const MEDIUM: Dims = Dims { h: 512, i: 1408, l: 8, nh: 8, nkv: 4, vocab: 1024, vh: 384, vi: 1536, vl: 6, vheads: 6, img: 224, patch: 14 };

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn shared() -> PathBuf {
    std::env::var_os("MEDPO_SHARED").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"))
}

/// Uniform values in ±√3/√fan_in (unit variance × 1/√fan_in); norms' weights near 1.
fn random(shape: &[usize], fan_in: usize, seed: u64, dtype: DType) -> candle_core::Result<Tensor> {
    let n: usize = shape.iter().product();
    let scale = if fan_in == 0 { 0.1 } else { (3.0 / fan_in as f32).sqrt() };
    let mut v = vec![0f32; n];
    v.par_chunks_mut(1 << 16).enumerate().for_each(|(c, chunk)| {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (c as u64).wrapping_mul(0xD1B5_4A32_D192_ED03) | 1;
        for x in chunk {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
            *x = if fan_in == 0 { 1.0 + 0.1 * u } else { u * scale };
        }
    });
    Tensor::from_vec(v, shape, &Device::Cpu)?.to_dtype(dtype)
}

fn write_checkpoint(d: &Dims, out: &Path, dtype: DType) -> Result<(), Box<dyn std::error::Error>> {
    let src = shared().join("fixtures/v1/llava-hf-tiny");
    std::fs::create_dir_all(out)?;
    for f in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json", "processor_config.json"] {
        std::fs::copy(src.join(f), out.join(f))?;
    }
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(src.join("config.json"))?)?;
    for (k, x) in [("hidden_size", d.h), ("intermediate_size", d.i), ("num_hidden_layers", d.l), ("num_attention_heads", d.nh), ("num_key_value_heads", d.nkv), ("vocab_size", d.vocab)] {
        cfg["text_config"][k] = x.into();
    }
    cfg["vocab_size"] = d.vocab.into();
    for (k, x) in [("hidden_size", d.vh), ("intermediate_size", d.vi), ("num_hidden_layers", d.vl), ("num_attention_heads", d.vheads), ("image_size", d.img), ("patch_size", d.patch)] {
        cfg["vision_config"][k] = x.into();
    }
    cfg["image_seq_length"] = ((d.img / d.patch) * (d.img / d.patch)).into();
    std::fs::write(out.join("config.json"), serde_json::to_string_pretty(&cfg)?)?;
    let mut pre: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(src.join("preprocessor_config.json"))?)?;
    pre["size"] = serde_json::json!({ "shortest_edge": d.img });
    pre["crop_size"] = serde_json::json!({ "height": d.img, "width": d.img });
    std::fs::write(out.join("preprocessor_config.json"), serde_json::to_string_pretty(&pre)?)?;

    let mut t: HashMap<String, Tensor> = HashMap::new();
    let mut seed = 0u64;
    let mut put = |name: String, shape: &[usize], fan_in: usize| -> candle_core::Result<()> {
        seed += 1;
        t.insert(name, random(shape, fan_in, seed, dtype)?);
        Ok(())
    };
    let (h, hd) = (d.h, d.h / d.nh);
    put("language_model.model.embed_tokens.weight".into(), &[d.vocab, h], 1)?;
    put("language_model.lm_head.weight".into(), &[d.vocab, h], h)?;
    put("language_model.model.norm.weight".into(), &[h], 0)?;
    for n in 0..d.l {
        let p = format!("language_model.model.layers.{n}");
        put(format!("{p}.input_layernorm.weight"), &[h], 0)?;
        put(format!("{p}.post_attention_layernorm.weight"), &[h], 0)?;
        put(format!("{p}.self_attn.q_proj.weight"), &[d.nh * hd, h], h)?;
        put(format!("{p}.self_attn.k_proj.weight"), &[d.nkv * hd, h], h)?;
        put(format!("{p}.self_attn.v_proj.weight"), &[d.nkv * hd, h], h)?;
        put(format!("{p}.self_attn.o_proj.weight"), &[h, d.nh * hd], h)?;
        put(format!("{p}.mlp.gate_proj.weight"), &[d.i, h], h)?;
        put(format!("{p}.mlp.up_proj.weight"), &[d.i, h], h)?;
        put(format!("{p}.mlp.down_proj.weight"), &[h, d.i], d.i)?;
    }
    put("multi_modal_projector.linear_1.weight".into(), &[h, d.vh], d.vh)?;
    put("multi_modal_projector.linear_1.bias".into(), &[h], d.vh)?;
    put("multi_modal_projector.linear_2.weight".into(), &[h, h], h)?;
    put("multi_modal_projector.linear_2.bias".into(), &[h], h)?;
    let vp = "vision_tower.vision_model";
    let np = (d.img / d.patch) * (d.img / d.patch);
    put(format!("{vp}.embeddings.patch_embedding.weight"), &[d.vh, 3, d.patch, d.patch], 3 * d.patch * d.patch)?;
    put(format!("{vp}.embeddings.class_embedding"), &[d.vh], 1)?;
    put(format!("{vp}.embeddings.position_embedding.weight"), &[np + 1, d.vh], 1)?;
    for ln in ["pre_layrnorm", "post_layernorm"] {
        put(format!("{vp}.{ln}.weight"), &[d.vh], 0)?;
        put(format!("{vp}.{ln}.bias"), &[d.vh], d.vh)?;
    }
    for n in 0..d.vl {
        let p = format!("{vp}.encoder.layers.{n}");
        for ln in ["layer_norm1", "layer_norm2"] {
            put(format!("{p}.{ln}.weight"), &[d.vh], 0)?;
            put(format!("{p}.{ln}.bias"), &[d.vh], d.vh)?;
        }
        for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            put(format!("{p}.self_attn.{proj}.weight"), &[d.vh, d.vh], d.vh)?;
            put(format!("{p}.self_attn.{proj}.bias"), &[d.vh], d.vh)?;
        }
        put(format!("{p}.mlp.fc1.weight"), &[d.vi, d.vh], d.vh)?;
        put(format!("{p}.mlp.fc1.bias"), &[d.vi], d.vh)?;
        put(format!("{p}.mlp.fc2.weight"), &[d.vh, d.vi], d.vi)?;
        put(format!("{p}.mlp.fc2.bias"), &[d.vh], d.vi)?;
    }
    candle_core::safetensors::save(&t, out.join("model.safetensors"))?;
    Ok(())
}

/// (name, HBM GB/s) of the first GPU, from `nvidia-smi` and a table of data-sheet figures.
fn bandwidth() -> (String, Option<f64>) {
    let name = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=name", "--format=csv,noheader"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(|l| l.trim().to_string()))
        .unwrap_or_else(|| "unknown (no nvidia-smi)".into());
    if let Some(gbps) = std::env::var("MEDPO_HBM_GBPS").ok().and_then(|s| s.parse().ok()) {
        return (name, Some(gbps));
    }
    let table = [
        ("H200", 4800.0),
        ("H100 NVL", 3900.0),
        ("H100 PCIe", 2000.0),
        ("H100", 3350.0),
        ("GH200", 4000.0),
        ("B200", 8000.0),
        ("A100-SXM4-80GB", 2039.0),
        ("A100 80GB PCIe", 1935.0),
        ("A100", 1555.0),
        ("L40S", 864.0),
        ("L4", 300.0),
        ("A10G", 600.0),
        ("RTX 4090", 1008.0),
    ];
    let bw = table.iter().find(|(k, _)| name.contains(k)).map(|&(_, v)| v);
    (name, bw)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    medpo_models::alloc::retain_freed_memory();
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("usage: gpu_roofline [--dir DIR] [--preset 7b|medium] [--device cuda|cpu] [--dtype bf16|f16|f32] [--new-tokens N] [--runs N]");
        return Ok(());
    }
    let preset = arg(&args, "--preset").unwrap_or_else(|| "7b".into());
    let dims = match preset.as_str() {
        "7b" => &LLAVA_MED_7B,
        "medium" => &MEDIUM,
        other => return Err(format!("--preset {other}: 7b or medium").into()),
    };
    let dir = PathBuf::from(arg(&args, "--dir").unwrap_or_else(|| format!("target/llava-med-{preset}-random")));
    let dtype = medpo_models::parse_dtype(&arg(&args, "--dtype").unwrap_or_else(|| "bf16".into()))?;
    let device = medpo_models::parse_device(&arg(&args, "--device").unwrap_or_else(|| "cuda".into()))?;
    let n: usize = arg(&args, "--new-tokens").map(|s| s.parse()).transpose()?.unwrap_or(64);
    let runs: usize = arg(&args, "--runs").map(|s| s.parse()).transpose()?.unwrap_or(5);
    if !dir.join("model.safetensors").is_file() {
        let t = Instant::now();
        let file_dtype = if dtype == DType::F32 { DType::F32 } else { DType::BF16 };
        write_checkpoint(dims, &dir, file_dtype)?;
        eprintln!("wrote {} ({:.0} s)", dir.display(), t.elapsed().as_secs_f64());
    }
    let t = Instant::now();
    let model = Model::load(&dir, &LoadOptions { device: device.clone(), dtype, ..Default::default() })?;
    eprintln!("loaded on {device:?} in {:.1} s", t.elapsed().as_secs_f64());
    let scan = image::open(shared().join("fixtures/v1/scan.png"))?.to_rgb8();
    let input = model.input("Is there a nodule in the left lung?", Some(&scan))?;
    let prompt_tokens = model.prompt_tokens(&input);
    let gen = |k: usize| -> Result<f64, Box<dyn std::error::Error>> {
        let p = GenerateParams { max_new_tokens: k, stop_at_eos: false, ..Default::default() };
        let t = Instant::now();
        let out = model.generate(std::slice::from_ref(&input), &p, &mut |_| {})?;
        // Generation returns host ids, so the device has finished when this returns.
        assert_eq!(out[0].ids.len(), k);
        Ok(t.elapsed().as_secs_f64())
    };
    let median = |f: &dyn Fn() -> Result<f64, Box<dyn std::error::Error>>| -> Result<f64, Box<dyn std::error::Error>> {
        f()?; // warm-up
        let mut v = (0..runs).map(|_| f()).collect::<Result<Vec<_>, _>>()?;
        v.sort_by(f64::total_cmp);
        Ok(v[v.len() / 2])
    };
    let t1 = median(&|| gen(1))?;
    let tn = median(&|| gen(n))?;
    let decode = (n - 1) as f64 / (tn - t1);
    // Bytes read per decode step: every language-model weight once (one row of the embedding;
    // the vision tower and the projector run only in the prefill), plus the KV cache at the
    // mean length.
    let per = dtype.size_in_bytes() as f64;
    let hd = dims.h / dims.nh;
    let lm_params = (dims.l * (2 * dims.h + dims.h * dims.nh * hd * 2 + 2 * dims.h * dims.nkv * hd + 3 * dims.h * dims.i) + dims.h + dims.vocab * dims.h) as f64;
    let kv = (2 * dims.l * dims.nkv * hd) as f64 * (prompt_tokens as f64 + n as f64 / 2.0);
    let bytes = (lm_params + kv) * per;
    let (gpu, bw) = bandwidth();
    println!("model: random weights, preset {preset} (7b: LLaVA-Med v1.5-7B shapes), {dtype:?} on {device:?}; GPU: {gpu}");
    println!("prompt: {prompt_tokens} tokens ({} image tokens)", (dims.img / dims.patch).pow(2));
    println!("prefill latency (batch 1, median of {runs}): {:.1} ms", t1 * 1e3);
    println!("greedy decode (batch 1, {n} tokens, (n-1)/(t(n)-t(1))): {decode:.1} tokens/s");
    println!("bytes read per decode token: {:.2} GB (LM weights + KV cache)", bytes / 1e9);
    match bw {
        Some(gbps) => {
            let roof = gbps * 1e9 / bytes;
            println!("HBM roofline: {gbps:.0} GB/s ÷ {:.2} GB = {roof:.1} tokens/s; decode reaches {:.0}% of it", bytes / 1e9, 100.0 * decode / roof);
        }
        None => println!("HBM roofline: unknown bandwidth for this GPU (set MEDPO_HBM_GBPS)"),
    }
    Ok(())
}
