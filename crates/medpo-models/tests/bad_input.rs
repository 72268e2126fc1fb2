//! Every bad input of issue 3 gives a clear error naming the file, key or value, and nothing
//! panics. Each test corrupts a copy of the fixtures in a temporary folder.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use common::*;
use medpo_models::{Error, LoadOptions, Model};

/// Copies `src` into `dst` recursively.
fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}

/// A temporary copy of the fixture folders (llava-med needs its sibling CLIP folder).
fn copy_fixtures() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("v1");
    for name in ["llava-med-tiny", "clip-vit-tiny", "huatuogpt-vision-tiny", "llava-hf-tiny"] {
        copy_dir(&fixtures().join(name), &root.join(name));
    }
    (tmp, root)
}

fn load_err(dir: &Path, opts: &LoadOptions) -> Error {
    match Model::load(dir, opts) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e,
    }
}

fn edit_json(path: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

fn rewrite_safetensors(path: &Path, f: impl FnOnce(&mut HashMap<String, Tensor>)) {
    let mut t = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    f(&mut t);
    candle_core::safetensors::save(&t, path).unwrap();
}

#[test]
fn missing_shard() {
    let (_t, root) = copy_fixtures();
    let dir = root.join("llava-med-tiny");
    // The last shard the index names, whatever the fixture's shard count.
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("model.safetensors.index.json")).unwrap()).unwrap();
    let shard = index["weight_map"].as_object().unwrap().values().filter_map(|v| v.as_str()).max().unwrap().to_string();
    std::fs::remove_file(dir.join(&shard)).unwrap();
    let e = load_err(&dir, &LoadOptions::default());
    assert!(matches!(e, Error::MissingFile { .. }), "{e}");
    assert!(e.to_string().contains(&shard), "{e}");
    // The registration check refuses it the same way, before anything is registered.
    let e = Model::check(&dir, Some(root.clone())).unwrap_err();
    assert!(e.to_string().contains(&shard), "{e}");
}

/// The registration check loads a checkpoint that fits in memory completely, so a tensor of
/// the wrong shape is caught, and accepts the intact fixture.
#[test]
fn registration_check() {
    let (_t, root) = copy_fixtures();
    let dir = root.join("huatuogpt-vision-tiny");
    let ok = Model::check(&dir, Some(root.clone())).unwrap();
    assert!(ok.contains("loaded completely"), "{ok}");
    let h = medpo_models::ModelConfig::from_dir(&dir, &Default::default()).unwrap().text.hidden_size;
    rewrite_safetensors(&dir.join("model.safetensors"), |t| {
        t.insert("model.layers.0.mlp.up_proj.weight".into(), Tensor::zeros((7, h), DType::F32, &Device::Cpu).unwrap());
    });
    let e = Model::check(&dir, Some(root.clone())).unwrap_err();
    assert!(e.to_string().contains("model.layers.0.mlp.up_proj.weight"), "{e}");
}

#[test]
fn missing_index_entry() {
    let (_t, root) = copy_fixtures();
    let dir = root.join("llava-med-tiny");
    edit_json(&dir.join("model.safetensors.index.json"), |v| {
        v["weight_map"].as_object_mut().unwrap().remove("model.norm.weight");
    });
    let e = load_err(&dir, &LoadOptions::default());
    let msg = e.to_string();
    assert!(matches!(e, Error::MissingTensor { .. }), "{msg}");
    assert!(msg.contains("model.norm.weight") && msg.contains("model.safetensors.index.json"), "{msg}");
}

#[test]
fn tensor_missing_from_single_file() {
    let (_t, root) = copy_fixtures();
    let dir = root.join("huatuogpt-vision-tiny");
    rewrite_safetensors(&dir.join("model.safetensors"), |t| {
        t.remove("model.layers.1.self_attn.v_proj.bias");
    });
    let msg = load_err(&dir, &LoadOptions::default()).to_string();
    assert!(msg.contains("model.layers.1.self_attn.v_proj.bias") && msg.contains("model.safetensors"), "{msg}");
}

#[test]
fn tensor_of_wrong_shape() {
    let (_t, root) = copy_fixtures();
    let dir = root.join("huatuogpt-vision-tiny");
    let cfg = medpo_models::ModelConfig::from_dir(&dir, &Default::default()).unwrap();
    let (h, i) = (cfg.text.hidden_size, cfg.text.intermediate_size);
    rewrite_safetensors(&dir.join("model.safetensors"), |t| {
        t.insert("model.layers.0.mlp.up_proj.weight".into(), Tensor::zeros((7, h), DType::F32, &Device::Cpu).unwrap());
    });
    let e = load_err(&dir, &LoadOptions::default());
    let msg = e.to_string();
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{msg}");
    assert!(msg.contains("model.layers.0.mlp.up_proj.weight") && msg.contains(&format!("[7, {h}]")) && msg.contains(&format!("[{i}, {h}]")), "{msg}");
}

#[test]
fn tensor_of_wrong_dtype() {
    let (_t, root) = copy_fixtures();
    let dir = root.join("huatuogpt-vision-tiny");
    let h = medpo_models::ModelConfig::from_dir(&dir, &Default::default()).unwrap().text.hidden_size;
    rewrite_safetensors(&dir.join("model.safetensors"), |t| {
        t.insert("model.norm.weight".into(), Tensor::zeros(h, DType::I64, &Device::Cpu).unwrap());
    });
    let e = load_err(&dir, &LoadOptions::default());
    let msg = e.to_string();
    assert!(matches!(e, Error::DtypeMismatch { .. }), "{msg}");
    assert!(msg.contains("model.norm.weight") && msg.contains("I64"), "{msg}");
}

#[test]
fn zero_size_and_corrupt_weight_files() {
    let (_t, root) = copy_fixtures();
    let dir = root.join("huatuogpt-vision-tiny");
    std::fs::write(dir.join("model.safetensors"), b"").unwrap();
    let e = load_err(&dir, &LoadOptions::default());
    assert!(matches!(e, Error::Safetensors { .. }) && e.to_string().contains("model.safetensors"), "{e}");
    std::fs::write(dir.join("model.safetensors"), b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all").unwrap();
    let e = load_err(&dir, &LoadOptions::default());
    assert!(matches!(e, Error::Safetensors { .. }), "{e}");
}

#[test]
fn extra_keys_are_tolerated() {
    let (_t, root) = copy_fixtures();
    let dir = root.join("huatuogpt-vision-tiny");
    rewrite_safetensors(&dir.join("model.safetensors"), |t| {
        t.insert("model.vision_tower.extra.weight".into(), Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap());
    });
    Model::load(&dir, &LoadOptions::default()).unwrap();
}

#[test]
fn config_missing_a_required_key() {
    let (_t, root) = copy_fixtures();
    for (name, key) in [("llava-med-tiny", "hidden_size"), ("huatuogpt-vision-tiny", "mm_vision_tower"), ("llava-med-tiny", "rms_norm_eps")] {
        let dir = root.join(name);
        let orig = std::fs::read_to_string(dir.join("config.json")).unwrap();
        edit_json(&dir.join("config.json"), |v| {
            v.as_object_mut().unwrap().remove(key);
        });
        let msg = load_err(&dir, &LoadOptions::default()).to_string();
        assert!(msg.contains(key) && msg.contains("config.json"), "{msg}");
        std::fs::write(dir.join("config.json"), orig).unwrap();
    }
    // llava-hf: a key inside text_config.
    // llava-hf: keys inside text_config / vision_config. transformers omits keys equal to the
    // class defaults, so a missing `num_hidden_layers` means Llama's 32 layers and the weights
    // then lack layer 2.
    let dir = root.join("llava-hf-tiny");
    let layers = medpo_models::ModelConfig::from_dir(&dir, &Default::default()).unwrap().text.num_hidden_layers;
    edit_json(&dir.join("config.json"), |v| {
        v["text_config"].as_object_mut().unwrap().remove("num_hidden_layers");
    });
    let msg = load_err(&dir, &LoadOptions::default()).to_string();
    assert!(msg.contains(&format!("language_model.model.layers.{layers}.")), "{msg}");
    edit_json(&dir.join("config.json"), |v| {
        v["text_config"]["num_hidden_layers"] = layers.into();
        v.as_object_mut().unwrap().remove("image_token_index");
    });
    let msg = load_err(&dir, &LoadOptions::default()).to_string();
    assert!(msg.contains("image_token_index") && msg.contains("config.json"), "{msg}");
}

#[test]
fn unknown_model_type() {
    let (_t, root) = copy_fixtures();
    let dir = root.join("llava-med-tiny");
    edit_json(&dir.join("config.json"), |v| v["model_type"] = "llava_gemma".into());
    let e = load_err(&dir, &LoadOptions::default());
    let msg = e.to_string();
    assert!(matches!(e, Error::UnknownModelType { .. }), "{msg}");
    assert!(msg.contains("llava_gemma") && msg.contains("llava_mistral"), "{msg}");
}

#[test]
fn tokenizer_file_missing() {
    let (_t, root) = copy_fixtures();
    let dir = root.join("huatuogpt-vision-tiny");
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    let msg = load_err(&dir, &LoadOptions::default()).to_string();
    assert!(msg.contains("tokenizer.json"), "{msg}");
    // Only a sentencepiece model: the message says how to make tokenizer.json.
    std::fs::write(dir.join("tokenizer.model"), b"spm").unwrap();
    let msg = load_err(&dir, &LoadOptions::default()).to_string();
    assert!(msg.contains("tokenizer.model") && msg.contains("save_pretrained"), "{msg}");
    // A corrupt one, too.
    std::fs::write(dir.join("tokenizer.json"), b"{\"model\": 3}").unwrap();
    let msg = load_err(&dir, &LoadOptions::default()).to_string();
    assert!(msg.contains("tokenizer.json"), "{msg}");
}

#[test]
fn vision_tower_resolution() {
    let (tmp, root) = copy_fixtures();
    let dir = root.join("llava-med-tiny");
    // Hub-style name resolved inside a models dir.
    let models = tmp.path().join("models");
    copy_dir(&root.join("clip-vit-tiny"), &models.join("openai/clip-vit-large-patch14-336"));
    edit_json(&dir.join("config.json"), |v| v["mm_vision_tower"] = "openai/clip-vit-large-patch14-336".into());
    let e = load_err(&dir, &LoadOptions::default());
    assert!(matches!(e, Error::VisionTowerNotFound { .. }) && e.to_string().contains("openai/clip-vit-large-patch14-336"), "{e}");
    let opts = LoadOptions { models_dir: Some(models.clone()), ..Default::default() };
    Model::load(&dir, &opts).unwrap();
    // Absolute path.
    let abs = root.join("clip-vit-tiny");
    edit_json(&dir.join("config.json"), |v| v["mm_vision_tower"] = abs.display().to_string().into());
    Model::load(&dir, &LoadOptions::default()).unwrap();
}

#[test]
fn weights_that_do_not_fit_are_refused_before_loading() {
    let opts = LoadOptions { available_memory: Some(1 << 10), ..Default::default() };
    let e = load_err(&fixtures().join("llava-med-tiny"), &opts);
    assert!(matches!(e, Error::OutOfMemory { .. }), "{e}");
    assert!(e.to_string().contains("MiB"), "{e}");
}

fn png_header(width: u32, height: u32) -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut c = 0xFFFF_FFFFu32;
        for &b in data {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            }
        }
        !c
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        let mut c = kind.to_vec();
        c.extend(data);
        out.extend((data.len() as u32).to_be_bytes());
        out.extend(&c);
        out.extend(crc32(&c).to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    // A tiny zlib stream (the decoder never gets that far) and the end marker.
    chunk(&mut out, b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    chunk(&mut out, b"IEND", &[]);
    out
}

#[test]
fn corrupt_empty_and_absurd_images() {
    use medpo_models::preprocess::decode_image;
    let name = Path::new("upload.png");
    let e = decode_image(b"", name).unwrap_err();
    assert!(matches!(e, Error::Image { .. }) && e.to_string().contains("upload.png"), "{e}");
    let e = decode_image(b"definitely not an image", name).unwrap_err();
    assert!(matches!(e, Error::Image { .. }), "{e}");
    let png = std::fs::read(fixtures().join("scan.png")).unwrap();
    let e = decode_image(&png[..png.len() / 2], name).unwrap_err();
    assert!(matches!(e, Error::Image { .. }), "{e}");
    let e = decode_image(&png_header(100_000, 100_000), name).unwrap_err();
    assert!(matches!(e, Error::ImageDimensions { .. }) && e.to_string().contains("100000x100000"), "{e}");
    let e = decode_image(&png_header(0, 5), name).unwrap_err();
    assert!(matches!(e, Error::Image { .. } | Error::ImageDimensions { .. }), "{e}");
    // A missing file names its path.
    let e = medpo_models::preprocess::load_image(Path::new("/nonexistent/x.png")).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/x.png"), "{e}");
}

#[test]
fn grayscale_rgba_and_16bit_pngs_are_accepted() {
    let model = load("llava-med-tiny");
    let rgb = scan();
    let tmp = tempfile::tempdir().unwrap();
    let gray = image::DynamicImage::ImageRgb8(rgb.clone()).to_luma8();
    let rgba = image::DynamicImage::ImageRgb8(rgb.clone()).to_rgba8();
    let rgb16 = image::DynamicImage::ImageRgb8(rgb.clone()).to_rgb16();
    gray.save(tmp.path().join("g.png")).unwrap();
    rgba.save(tmp.path().join("a.png")).unwrap();
    rgb16.save(tmp.path().join("w.png")).unwrap();
    let base = model.preprocess_image(&rgb).unwrap();
    for f in ["g.png", "a.png", "w.png"] {
        let img = medpo_models::preprocess::load_image(&tmp.path().join(f)).unwrap();
        let px = model.preprocess_image(&img).unwrap();
        let side = model.config.vision.image_size;
        assert_eq!(px.dims(), &[1, 3, side, side]);
        if f != "g.png" {
            // RGBA drops alpha and 16-bit scales back exactly: same pixels as the RGB original.
            assert!(max_abs_diff(&px, &base) < 1e-6, "{f}");
        }
    }
    // A portrait image pads left and right.
    let portrait = image::imageops::rotate90(&rgb);
    let side = rgb.width().max(rgb.height());
    let padded = medpo_models::preprocess::preprocess(&portrait, &model.config.image).unwrap().padded;
    assert_eq!(padded.dimensions(), (side, side));
}

#[test]
fn prompt_longer_than_the_context_is_rejected() {
    let model = load("llava-med-tiny");
    let question = "Is there a nodule in the left lung? ".repeat(300);
    let input = model.input(question.trim_end(), Some(&scan())).unwrap();
    let e = model.generate(std::slice::from_ref(&input), &Default::default(), &mut |_| {}).unwrap_err();
    let msg = e.to_string();
    let (n_img, ctx) = (model.config.num_image_tokens(), model.config.context_len);
    assert!(matches!(e, Error::ContextOverflow { image_tokens, context, .. } if image_tokens == n_img && context == ctx), "{msg}");
    assert!(msg.contains(&ctx.to_string()) && msg.contains("never truncated"), "{msg}");
    let item = medpo_models::ScoreItem { prompt: input, answer_ids: vec![2] };
    assert!(matches!(model.score(&[item]), Err(Error::ContextOverflow { .. })));
}

#[test]
fn mismatched_images_and_placeholders() {
    let model = load("llava-med-tiny");
    let mut input = model.input("What is this?", Some(&scan())).unwrap();
    input.pixel_values = None;
    let e = model.forward_train(&[input]).unwrap_err();
    assert!(e.to_string().contains("1 image placeholders but 0 images"), "{e}");
    let bad = medpo_models::GenerateParams { top_p: 0.0, ..Default::default() };
    let text_only = model.input("What is this?", None).unwrap();
    assert!(matches!(model.generate(&[text_only], &bad, &mut |_| {}), Err(Error::InvalidInput(_))));
}
