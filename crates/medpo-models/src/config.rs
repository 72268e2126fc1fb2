//! Configs of the three on-disk dialects, resolved into one [`ModelConfig`].
//!
//! Resolution happens in two steps, as everywhere in the workspace: serde reads the raw
//! `config.json` (unknown keys are ignored, a missing required key is reported by name), then
//! [`ModelConfig::from_dir`] checks values, finds the vision tower and reads the preprocessing
//! and tokenizer settings.
//!
//! | `model_type`    | layout                    | vision tower weights                              |
//! |-----------------|---------------------------|---------------------------------------------------|
//! | `llava_mistral` | LLaVA-Med v1.5 (original) | separate CLIP folder named by `mm_vision_tower`   |
//! | `llava_qwen2`   | HuatuoGPT-Vision          | inside the checkpoint (`model.vision_tower.vision_tower.`) |
//! | `llava`         | llava-hf                  | inside the checkpoint (`vision_tower.`)           |

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::template::Template;

/// The accepted `model_type` values, for error messages.
pub const ACCEPTED_MODEL_TYPES: &str = "llava_mistral, llava_qwen2, llava";

/// The checkpoint layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// LLaVA-Med v1.5 (`LlavaMistralForCausalLM`).
    LlavaMistral,
    /// HuatuoGPT-Vision (`LlavaQwen2ForCausalLM`).
    LlavaQwen2,
    /// transformers' `LlavaForConditionalGeneration` (llava-hf/*).
    LlavaHf,
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Layout::LlavaMistral => "llava_mistral (LLaVA-Med v1.5 original layout)",
            Layout::LlavaQwen2 => "llava_qwen2 (HuatuoGPT-Vision layout)",
            Layout::LlavaHf => "llava (llava-hf LlavaForConditionalGeneration layout)",
        })
    }
}

/// The decoder family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextArch {
    Mistral,
    Llama,
    Qwen2,
}

/// Resolved decoder settings (Mistral, Llama or Qwen2).
#[derive(Debug, Clone)]
pub struct TextConfig {
    pub arch: TextArch,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    /// Rows of `embed_tokens` and `lm_head`; the softmax runs over all of them.
    pub vocab_size: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    /// Qwen2 has biases on q/k/v.
    pub attention_bias: bool,
    pub tie_word_embeddings: bool,
}

/// Activation of the CLIP MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisionAct {
    QuickGelu,
    Gelu,
}

/// Resolved CLIP vision tower settings.
#[derive(Debug, Clone)]
pub struct VisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub num_channels: usize,
    pub layer_norm_eps: f64,
    pub hidden_act: VisionAct,
}

impl VisionConfig {
    /// Number of patches (without CLS).
    pub fn num_patches(&self) -> usize {
        let side = self.image_size / self.patch_size;
        side * side
    }
}

/// Image preprocessing settings (LLaVA pad + CLIP processor).
#[derive(Debug, Clone)]
pub struct ImageConfig {
    /// Shortest-edge resize target.
    pub size: u32,
    /// Centre crop (square).
    pub crop_size: u32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Pad to square with the truncated mean colour first (`image_aspect_ratio = "pad"`).
    pub pad_to_square: bool,
}

/// Which CLIP tokens go to the projector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectFeature {
    /// Drop CLS.
    Patch,
    /// Keep CLS.
    ClsPatch,
}

/// Where every group of weights lives in the checkpoint.
#[derive(Debug, Clone)]
pub struct WeightNames {
    /// Prefix of the decoder body (`model.`), ending in a dot.
    pub lm_body: String,
    /// Full name of the output head.
    pub lm_head: String,
    /// Names of the two projector linears (without `.weight`).
    pub projector: [String; 2],
    /// Prefix of the CLIP vision transformer (`…vision_model.`).
    pub vision: String,
    /// The folder whose safetensors hold the vision weights (the model folder itself, or the CLIP
    /// folder for LLaVA-Med).
    pub vision_dir: PathBuf,
}

/// One resolved model config: everything the loader and the runtime need.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub dir: PathBuf,
    pub layout: Layout,
    pub text: TextConfig,
    pub vision: VisionConfig,
    pub image: ImageConfig,
    pub mm_hidden_size: usize,
    /// Index into CLIP `hidden_states` (negative counts from the end, -2 in every released model).
    pub select_layer: i64,
    pub select_feature: SelectFeature,
    /// Longest sequence (prompt + image tokens + answer) accepted.
    pub context_len: usize,
    /// Ids that end generation.
    pub eos_token_ids: Vec<u32>,
    /// The tokenizer's `eos_token` (`tokenizer_config.json`), appended to answers when scoring.
    pub eos_token: Option<String>,
    /// llava-hf: id of the `<image>` token; the others use -200 only.
    pub image_token_id: Option<u32>,
    /// Whether the tokenizer adds a BOS to each chunk (LLaVA keeps the first one only).
    pub add_bos: bool,
    pub template: Template,
    pub weights: WeightNames,
    /// Vision tower folder (config and preprocessing).
    pub vision_tower_dir: PathBuf,
}

impl ModelConfig {
    /// Number of CLIP hidden states computed: layers up to the selected one.
    pub fn vision_layers_used(&self) -> usize {
        let n = self.vision.num_hidden_layers as i64;
        let idx = if self.select_layer < 0 { n + 1 + self.select_layer } else { self.select_layer };
        idx.clamp(0, n) as usize
    }

    /// Image tokens per image.
    pub fn num_image_tokens(&self) -> usize {
        match self.select_feature {
            SelectFeature::Patch => self.vision.num_patches(),
            SelectFeature::ClsPatch => self.vision.num_patches() + 1,
        }
    }
}

// ------------------------------------------------------------------------------------------ raw

fn default_kv_heads() -> Option<usize> {
    None
}
fn default_rope_theta() -> f64 {
    10_000.0
}
fn default_select_layer() -> i64 {
    -2
}
fn default_patch() -> String {
    "patch".into()
}
fn default_ln_eps() -> f64 {
    1e-5
}
fn default_quick_gelu() -> String {
    "quick_gelu".into()
}
fn default_channels() -> usize {
    3
}
fn default_true() -> bool {
    true
}
fn default_gelu() -> String {
    "gelu".into()
}
fn default_strategy() -> String {
    "default".into()
}

#[derive(Debug, Deserialize)]
struct RopeParameters {
    rope_theta: Option<f64>,
}

/// The decoder keys shared by Mistral, Llama and Qwen2 configs.
#[derive(Debug, Deserialize)]
struct RawText {
    model_type: Option<String>,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    #[serde(default = "default_kv_heads")]
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    vocab_size: usize,
    rms_norm_eps: f64,
    /// Top-level spelling (before transformers 5).
    rope_theta: Option<f64>,
    /// transformers 5 spelling.
    rope_parameters: Option<RopeParameters>,
    #[serde(default)]
    tie_word_embeddings: bool,
    max_position_embeddings: Option<usize>,
    eos_token_id: Option<serde_json::Value>,
}

/// LLaVA original keys (`llava_mistral`, `llava_qwen2`), on top of [`RawText`].
#[derive(Debug, Deserialize)]
struct RawLlavaOriginal {
    mm_vision_tower: String,
    mm_hidden_size: usize,
    #[serde(default = "default_mlp2x")]
    mm_projector_type: String,
    #[serde(default = "default_select_layer")]
    mm_vision_select_layer: i64,
    #[serde(default = "default_patch")]
    mm_vision_select_feature: String,
    image_aspect_ratio: Option<String>,
    #[serde(default)]
    mm_use_im_start_end: bool,
    tokenizer_model_max_length: Option<usize>,
}

fn clip_default_hidden() -> usize {
    768
}
fn clip_default_intermediate() -> usize {
    3072
}
fn clip_default_layers() -> usize {
    12
}
fn clip_default_image() -> usize {
    224
}
fn clip_default_patch() -> usize {
    32
}

/// Fills keys that llava-hf `text_config`s omit because they equal the transformers class
/// defaults (e.g. llava-1.5-7b-hf lists only `vocab_size`, `rms_norm_eps`, … for its Llama).
fn fill_text_defaults(text: &mut serde_json::Value) {
    let model_type = text.get("model_type").and_then(|v| v.as_str()).unwrap_or("llama").to_string();
    let defaults: &[(&str, serde_json::Value)] = match model_type.as_str() {
        "mistral" => &[
            ("hidden_size", serde_json::json!(4096)),
            ("intermediate_size", serde_json::json!(14336)),
            ("num_hidden_layers", serde_json::json!(32)),
            ("num_attention_heads", serde_json::json!(32)),
            ("num_key_value_heads", serde_json::json!(8)),
            ("vocab_size", serde_json::json!(32000)),
            ("rms_norm_eps", serde_json::json!(1e-6)),
        ],
        "qwen2" => &[
            ("hidden_size", serde_json::json!(4096)),
            ("intermediate_size", serde_json::json!(22016)),
            ("num_hidden_layers", serde_json::json!(32)),
            ("num_attention_heads", serde_json::json!(32)),
            ("vocab_size", serde_json::json!(151936)),
            ("rms_norm_eps", serde_json::json!(1e-6)),
        ],
        _ => &[
            ("hidden_size", serde_json::json!(4096)),
            ("intermediate_size", serde_json::json!(11008)),
            ("num_hidden_layers", serde_json::json!(32)),
            ("num_attention_heads", serde_json::json!(32)),
            ("vocab_size", serde_json::json!(32000)),
            ("rms_norm_eps", serde_json::json!(1e-6)),
        ],
    };
    if let Some(obj) = text.as_object_mut() {
        for (k, v) in defaults {
            obj.entry(k.to_string()).or_insert_with(|| v.clone());
        }
    }
}

fn default_mlp2x() -> String {
    "mlp2x_gelu".into()
}

/// llava-hf keys.
#[derive(Debug, Deserialize)]
struct RawLlavaHf {
    text_config: serde_json::Value,
    vision_config: serde_json::Value,
    #[serde(alias = "image_token_id")]
    image_token_index: u32,
    #[serde(default = "default_select_layer")]
    vision_feature_layer: i64,
    #[serde(default = "default_strategy")]
    vision_feature_select_strategy: String,
    #[serde(default = "default_gelu")]
    projector_hidden_act: String,
    #[serde(default = "default_true")]
    multimodal_projector_bias: bool,
}

/// CLIP vision keys (either a bare `CLIPVisionConfig` or `CLIPConfig.vision_config`).
/// transformers writes configs as a diff against the class defaults, so a key equal to the
/// `CLIPVisionConfig` default may be absent.
#[derive(Debug, Deserialize)]
struct RawClipVision {
    #[serde(default = "clip_default_hidden")]
    hidden_size: usize,
    #[serde(default = "clip_default_intermediate")]
    intermediate_size: usize,
    #[serde(default = "clip_default_layers")]
    num_hidden_layers: usize,
    #[serde(default = "clip_default_layers")]
    num_attention_heads: usize,
    #[serde(default = "clip_default_image")]
    image_size: usize,
    #[serde(default = "clip_default_patch")]
    patch_size: usize,
    #[serde(default = "default_channels")]
    num_channels: usize,
    #[serde(default = "default_ln_eps")]
    layer_norm_eps: f64,
    #[serde(default = "default_quick_gelu")]
    hidden_act: String,
}

/// `preprocessor_config.json`: sizes are integers (openai form) or dicts (transformers form).
#[derive(Debug, Deserialize)]
struct RawPreprocessor {
    size: Option<serde_json::Value>,
    crop_size: Option<serde_json::Value>,
    image_mean: Option<[f32; 3]>,
    image_std: Option<[f32; 3]>,
    do_pad: Option<bool>,
    resample: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
struct RawTokenizerConfig {
    #[serde(default)]
    add_bos_token: bool,
    eos_token: Option<serde_json::Value>,
    model_max_length: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
struct RawGenerationConfig {
    eos_token_id: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct RawHead {
    model_type: Option<String>,
    architectures: Option<Vec<String>>,
}

// ------------------------------------------------------------------------------------- helpers

/// Reads a JSON file into `T`, naming the file (and, through serde, the missing key) on failure.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::MissingFile { what: "config file", path: path.to_path_buf() }
        } else {
            Error::io(path, e)
        }
    })?;
    serde_json::from_str(&text).map_err(|e| Error::Config { path: path.to_path_buf(), message: e.to_string() })
}

fn from_value<T: DeserializeOwned>(v: serde_json::Value, path: &Path, within: &str) -> Result<T> {
    serde_json::from_value(v)
        .map_err(|e| Error::Config { path: path.to_path_buf(), message: format!("in `{within}`: {e}") })
}

fn ids_from_value(v: &serde_json::Value) -> Vec<u32> {
    match v {
        serde_json::Value::Number(n) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        serde_json::Value::Array(a) => a.iter().filter_map(|x| x.as_u64()).map(|x| x as u32).collect(),
        _ => vec![],
    }
}

fn token_string(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(str::to_string),
        _ => None,
    }
}

fn resolve_text(raw: RawText, arch: TextArch, path: &Path) -> Result<TextConfig> {
    let bad = |key: &str, value: String, reason: &str| Error::BadConfigValue {
        path: path.to_path_buf(),
        key: key.into(),
        value,
        reason: reason.into(),
    };
    if raw.num_attention_heads == 0 || raw.hidden_size == 0 {
        return Err(bad("num_attention_heads", raw.num_attention_heads.to_string(), "must be positive"));
    }
    let kv = raw.num_key_value_heads.unwrap_or(raw.num_attention_heads);
    if kv == 0 || !raw.num_attention_heads.is_multiple_of(kv) {
        return Err(bad("num_key_value_heads", kv.to_string(), "must divide num_attention_heads"));
    }
    let head_dim = raw.head_dim.unwrap_or(raw.hidden_size / raw.num_attention_heads);
    if !head_dim.is_multiple_of(2) || head_dim == 0 {
        return Err(bad("head_dim", head_dim.to_string(), "must be even and positive"));
    }
    let rope_theta = raw
        .rope_theta
        .or(raw.rope_parameters.and_then(|r| r.rope_theta))
        .unwrap_or_else(default_rope_theta);
    Ok(TextConfig {
        arch,
        hidden_size: raw.hidden_size,
        intermediate_size: raw.intermediate_size,
        num_hidden_layers: raw.num_hidden_layers,
        num_attention_heads: raw.num_attention_heads,
        num_key_value_heads: kv,
        head_dim,
        vocab_size: raw.vocab_size,
        rms_norm_eps: raw.rms_norm_eps,
        rope_theta,
        attention_bias: arch == TextArch::Qwen2,
        tie_word_embeddings: raw.tie_word_embeddings,
    })
}

fn resolve_vision(raw: RawClipVision, path: &Path) -> Result<VisionConfig> {
    let hidden_act = match raw.hidden_act.as_str() {
        "quick_gelu" => VisionAct::QuickGelu,
        "gelu" => VisionAct::Gelu,
        other => {
            return Err(Error::BadConfigValue {
                path: path.to_path_buf(),
                key: "hidden_act".into(),
                value: other.into(),
                reason: "the CLIP tower supports quick_gelu and gelu".into(),
            })
        }
    };
    if raw.patch_size == 0 || !raw.image_size.is_multiple_of(raw.patch_size) || raw.num_attention_heads == 0 {
        return Err(Error::BadConfigValue {
            path: path.to_path_buf(),
            key: "patch_size".into(),
            value: raw.patch_size.to_string(),
            reason: format!("must divide image_size {}", raw.image_size),
        });
    }
    Ok(VisionConfig {
        hidden_size: raw.hidden_size,
        intermediate_size: raw.intermediate_size,
        num_hidden_layers: raw.num_hidden_layers,
        num_attention_heads: raw.num_attention_heads,
        image_size: raw.image_size,
        patch_size: raw.patch_size,
        num_channels: raw.num_channels,
        layer_norm_eps: raw.layer_norm_eps,
        hidden_act,
    })
}

/// Reads a CLIP config: a full `CLIPModel` config (`model_type: clip`, tower in `vision_config`)
/// or a bare vision config.
fn read_clip_vision(dir: &Path) -> Result<VisionConfig> {
    let path = dir.join("config.json");
    let v: serde_json::Value = read_json(&path)?;
    let inner = match v.get("vision_config") {
        Some(vc) => vc.clone(),
        None => v,
    };
    resolve_vision(from_value(inner, &path, "vision_config")?, &path)
}

fn size_of(v: &serde_json::Value) -> Option<u32> {
    match v {
        serde_json::Value::Number(n) => n.as_u64().map(|x| x as u32),
        serde_json::Value::Object(o) => o
            .get("shortest_edge")
            .or_else(|| o.get("height"))
            .and_then(|x| x.as_u64())
            .map(|x| x as u32),
        _ => None,
    }
}

fn read_image_config(dir: &Path, vision: &VisionConfig, pad_default: bool) -> Result<ImageConfig> {
    let path = dir.join("preprocessor_config.json");
    const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
    const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];
    let raw: RawPreprocessor = if path.exists() {
        read_json(&path)?
    } else {
        tracing::warn!(path = %path.display(), "no preprocessor_config.json; using the CLIP defaults");
        RawPreprocessor { size: None, crop_size: None, image_mean: None, image_std: None, do_pad: None, resample: None }
    };
    if let Some(r) = raw.resample {
        if r != 3 {
            return Err(Error::BadConfigValue {
                path,
                key: "resample".into(),
                value: r.to_string(),
                reason: "only bicubic (3) is implemented".into(),
            });
        }
    }
    let size = raw.size.as_ref().and_then(size_of).unwrap_or(vision.image_size as u32);
    let crop_size = raw.crop_size.as_ref().and_then(size_of).unwrap_or(vision.image_size as u32);
    if crop_size as usize != vision.image_size || size == 0 {
        return Err(Error::BadConfigValue {
            path,
            key: "crop_size".into(),
            value: crop_size.to_string(),
            reason: format!("must equal the vision tower's image_size {}", vision.image_size),
        });
    }
    Ok(ImageConfig {
        size,
        crop_size,
        mean: raw.image_mean.unwrap_or(CLIP_MEAN),
        std: raw.image_std.unwrap_or(CLIP_STD),
        pad_to_square: raw.do_pad.unwrap_or(pad_default),
    })
}

/// Finds the vision tower folder named by `mm_vision_tower`: an absolute path, a path relative to
/// the model folder, or a hub-style name (`openai/clip-vit-large-patch14-336`) inside `models_dir`
/// (as `models_dir/openai/clip-…`, `models_dir/clip-…` or a Hugging Face cache snapshot).
pub fn resolve_vision_tower(model_dir: &Path, value: &str, models_dir: Option<&Path>) -> Result<PathBuf> {
    let mut tried = Vec::new();
    let mut candidates = vec![];
    let p = Path::new(value);
    if p.is_absolute() {
        candidates.push(p.to_path_buf());
    } else {
        candidates.push(model_dir.join(p));
        if let Some(md) = models_dir {
            candidates.push(md.join(p));
            if let Some(last) = p.file_name() {
                candidates.push(md.join(last));
            }
            let cache = md.join(format!("models--{}", value.replace('/', "--"))).join("snapshots");
            if let Ok(rd) = std::fs::read_dir(&cache) {
                let mut snaps: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
                snaps.sort();
                candidates.extend(snaps);
            } else {
                tried.push(cache.display().to_string());
            }
        }
    }
    for c in candidates {
        if c.join("config.json").is_file() {
            return Ok(c);
        }
        tried.push(c.display().to_string());
    }
    if models_dir.is_none() {
        tried.push("(no models dir configured)".into());
    }
    Err(Error::VisionTowerNotFound { value: value.into(), tried: tried.join(", ") })
}

// ------------------------------------------------------------------------------------ resolve

/// Options that influence config resolution.
#[derive(Debug, Clone, Default)]
pub struct ResolveOptions {
    /// Local folder in which hub-style `mm_vision_tower` names are looked up.
    pub models_dir: Option<PathBuf>,
}

impl ModelConfig {
    /// Reads `dir/config.json` and everything it refers to.
    pub fn from_dir(dir: &Path, opts: &ResolveOptions) -> Result<ModelConfig> {
        let path = dir.join("config.json");
        let value: serde_json::Value = read_json(&path)?;
        let head: RawHead = from_value(value.clone(), &path, "config")?;
        let model_type = head.model_type.clone().unwrap_or_default();
        let layout = match model_type.as_str() {
            "llava_mistral" => Layout::LlavaMistral,
            "llava_qwen2" => Layout::LlavaQwen2,
            "llava" => Layout::LlavaHf,
            "" => match head.architectures.as_ref().and_then(|a| a.first()).map(String::as_str) {
                Some("LlavaMistralForCausalLM") => Layout::LlavaMistral,
                Some("LlavaQwen2ForCausalLM") => Layout::LlavaQwen2,
                Some("LlavaForConditionalGeneration") => Layout::LlavaHf,
                _ => {
                    return Err(Error::Config { path, message: "missing field `model_type`".into() });
                }
            },
            other => {
                return Err(Error::UnknownModelType {
                    path,
                    value: other.into(),
                    accepted: ACCEPTED_MODEL_TYPES,
                })
            }
        };

        let tok_cfg_path = dir.join("tokenizer_config.json");
        let tok_cfg: RawTokenizerConfig =
            if tok_cfg_path.exists() { read_json(&tok_cfg_path)? } else { RawTokenizerConfig::default() };
        let gen_path = dir.join("generation_config.json");
        let gen_cfg: RawGenerationConfig =
            if gen_path.exists() { read_json(&gen_path)? } else { RawGenerationConfig::default() };

        let (text, vision, image, vision_tower_dir, weights, mm_hidden, select_layer, select_feature, image_token_id, ctx, cfg_eos) =
            match layout {
                Layout::LlavaMistral | Layout::LlavaQwen2 => {
                    let arch = if layout == Layout::LlavaMistral { TextArch::Mistral } else { TextArch::Qwen2 };
                    let raw_text: RawText = from_value(value.clone(), &path, "config")?;
                    let raw: RawLlavaOriginal = from_value(value.clone(), &path, "config")?;
                    let cfg_eos = raw_text.eos_token_id.as_ref().map(ids_from_value).unwrap_or_default();
                    let max_pos = raw_text.max_position_embeddings;
                    let text = resolve_text(raw_text, arch, &path)?;
                    if raw.mm_projector_type != "mlp2x_gelu" && raw.mm_projector_type != "linear" {
                        return Err(Error::BadConfigValue {
                            path,
                            key: "mm_projector_type".into(),
                            value: raw.mm_projector_type,
                            reason: "supported: mlp2x_gelu, linear".into(),
                        });
                    }
                    if raw.mm_projector_type == "linear" {
                        return Err(Error::BadConfigValue {
                            path,
                            key: "mm_projector_type".into(),
                            value: raw.mm_projector_type,
                            reason: "only mlp2x_gelu is implemented".into(),
                        });
                    }
                    if raw.mm_use_im_start_end {
                        return Err(Error::BadConfigValue {
                            path,
                            key: "mm_use_im_start_end".into(),
                            value: "true".into(),
                            reason: "image start/end tokens are not implemented".into(),
                        });
                    }
                    let select_feature = match raw.mm_vision_select_feature.as_str() {
                        "patch" => SelectFeature::Patch,
                        "cls_patch" => SelectFeature::ClsPatch,
                        other => {
                            return Err(Error::BadConfigValue {
                                path,
                                key: "mm_vision_select_feature".into(),
                                value: other.into(),
                                reason: "supported: patch, cls_patch".into(),
                            })
                        }
                    };
                    let vt_dir = resolve_vision_tower(dir, &raw.mm_vision_tower, opts.models_dir.as_deref())?;
                    let vision = read_clip_vision(&vt_dir)?;
                    let pad = raw.image_aspect_ratio.as_deref() == Some("pad");
                    let mut image = read_image_config(&vt_dir, &vision, pad)?;
                    image.pad_to_square = pad;
                    let weights = if layout == Layout::LlavaMistral {
                        WeightNames {
                            lm_body: "model.".into(),
                            lm_head: "lm_head.weight".into(),
                            projector: ["model.mm_projector.0".into(), "model.mm_projector.2".into()],
                            vision: "vision_model.".into(),
                            vision_dir: vt_dir.clone(),
                        }
                    } else {
                        WeightNames {
                            lm_body: "model.".into(),
                            lm_head: "lm_head.weight".into(),
                            projector: ["model.mm_projector.0".into(), "model.mm_projector.2".into()],
                            vision: "model.vision_tower.vision_tower.vision_model.".into(),
                            vision_dir: dir.to_path_buf(),
                        }
                    };
                    let ctx = raw
                        .tokenizer_model_max_length
                        .or(tok_cfg.model_max_length.filter(|m| *m < 1e9).map(|m| m as usize))
                        .or(max_pos)
                        .unwrap_or(2048);
                    (text, vision, image, vt_dir, weights, raw.mm_hidden_size, raw.mm_vision_select_layer, select_feature, None, ctx, cfg_eos)
                }
                Layout::LlavaHf => {
                    let raw: RawLlavaHf = from_value(value.clone(), &path, "config")?;
                    let mut text_value = raw.text_config.clone();
                    if text_value.is_object() {
                        fill_text_defaults(&mut text_value);
                    }
                    let raw_text: RawText = from_value(text_value, &path, "text_config")?;
                    let arch = match raw_text.model_type.as_deref() {
                        Some("mistral") => TextArch::Mistral,
                        Some("llama") | None => TextArch::Llama,
                        Some("qwen2") => TextArch::Qwen2,
                        Some(other) => {
                            return Err(Error::UnknownModelType {
                                path,
                                value: format!("text_config.model_type = {other}"),
                                accepted: "mistral, llama, qwen2",
                            })
                        }
                    };
                    if raw.projector_hidden_act != "gelu" || !raw.multimodal_projector_bias {
                        return Err(Error::BadConfigValue {
                            path,
                            key: "projector_hidden_act".into(),
                            value: raw.projector_hidden_act,
                            reason: "only the gelu projector with biases is implemented".into(),
                        });
                    }
                    let select_feature = match raw.vision_feature_select_strategy.as_str() {
                        "default" => SelectFeature::Patch,
                        "full" => SelectFeature::ClsPatch,
                        other => {
                            return Err(Error::BadConfigValue {
                                path,
                                key: "vision_feature_select_strategy".into(),
                                value: other.into(),
                                reason: "supported: default, full".into(),
                            })
                        }
                    };
                    let cfg_eos = raw_text.eos_token_id.as_ref().map(ids_from_value).unwrap_or_default();
                    let max_pos = raw_text.max_position_embeddings;
                    let text = resolve_text(raw_text, arch, &path)?;
                    let vision = resolve_vision(from_value(raw.vision_config.clone(), &path, "vision_config")?, &path)?;
                    let image = read_image_config(dir, &vision, true)?;
                    let mm_hidden = vision.hidden_size;
                    let weights = WeightNames {
                        lm_body: "language_model.model.".into(),
                        lm_head: "language_model.lm_head.weight".into(),
                        projector: ["multi_modal_projector.linear_1".into(), "multi_modal_projector.linear_2".into()],
                        vision: "vision_tower.vision_model.".into(),
                        vision_dir: dir.to_path_buf(),
                    };
                    let ctx = tok_cfg
                        .model_max_length
                        .filter(|m| *m < 1e9)
                        .map(|m| m as usize)
                        .or(max_pos)
                        .unwrap_or(4096);
                    (text, vision, image, dir.to_path_buf(), weights, mm_hidden, raw.vision_feature_layer, select_feature, Some(raw.image_token_index), ctx, cfg_eos)
                }
            };

        let template = Template::for_layout(layout, text.arch);
        let mut eos_token_ids = gen_cfg.eos_token_id.as_ref().map(ids_from_value).unwrap_or_default();
        for id in cfg_eos {
            if !eos_token_ids.contains(&id) {
                eos_token_ids.push(id);
            }
        }
        let eos_str = tok_cfg.eos_token.as_ref().and_then(token_string);
        let cfg = ModelConfig {
            dir: dir.to_path_buf(),
            layout,
            text,
            vision,
            image,
            mm_hidden_size: mm_hidden,
            select_layer,
            select_feature,
            context_len: ctx,
            eos_token_ids,
            eos_token: eos_str,
            image_token_id,
            add_bos: tok_cfg.add_bos_token,
            template,
            weights,
            vision_tower_dir,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values that span sub-configs.
    pub fn validate(&self) -> Result<()> {
        let n = self.vision.num_hidden_layers as i64;
        if self.select_layer < -(n + 1) || self.select_layer > n {
            return Err(Error::BadConfigValue {
                path: self.dir.join("config.json"),
                key: "mm_vision_select_layer".into(),
                value: self.select_layer.to_string(),
                reason: format!("the vision tower has {n} layers"),
            });
        }
        if self.mm_hidden_size != self.vision.hidden_size {
            return Err(Error::BadConfigValue {
                path: self.dir.join("config.json"),
                key: "mm_hidden_size".into(),
                value: self.mm_hidden_size.to_string(),
                reason: format!("the vision tower's hidden_size is {}", self.vision.hidden_size),
            });
        }
        Ok(())
    }
}
