//! [`Model`]: a loaded checkpoint (config, tokenizer, LLaVA) and the calls the trainer, the
//! evaluator, the server and the CLI make.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use image::RgbImage;

use crate::clip::ClipVision;
use crate::config::{Layout, ModelConfig, ResolveOptions, TextArch};
use crate::error::{Error, Result};
use crate::generate::{GenerateParams, Generation, TokenEvent};
use crate::llava::{EmbeddedBatch, LlavaModel, MultimodalInput, PadSide};
use crate::loader::{self, Linear, LinearAdapter, Params, WeightFiles};
use crate::projector::Projector;
use crate::score::ScoreItem;
use crate::template::PromptTokenizer;

/// Device and precision as written in config files (`device = "cuda:0"`, `dtype = "bf16"`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct RuntimeConfig {
    /// `cpu` or `cuda[:N]` (needs the `cuda` feature).
    #[serde(default = "default_device")]
    pub device: String,
    /// `f32` (CPU default), `bf16` or `f16` (CUDA), `f64` (gradient checks).
    #[serde(default = "default_dtype")]
    pub dtype: String,
}

fn default_device() -> String {
    "cpu".into()
}

fn default_dtype() -> String {
    "f32".into()
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig { device: default_device(), dtype: default_dtype() }
    }
}

impl RuntimeConfig {
    /// Resolves into load options (everything else at its default).
    pub fn load_options(&self) -> Result<LoadOptions> {
        Ok(LoadOptions { device: parse_device(&self.device)?, dtype: parse_dtype(&self.dtype)?, ..Default::default() })
    }
}

/// Parses `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(s: &str) -> Result<Device> {
    match s {
        "cpu" => Ok(Device::Cpu),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let n = s.strip_prefix("cuda:").unwrap_or("0");
            let n: usize = n.parse().map_err(|_| Error::InvalidInput(format!("bad device `{s}` (use cpu or cuda[:N])")))?;
            Device::new_cuda(n).map_err(|e| {
                Error::InvalidInput(format!("cannot open device `{s}`: {e} (is the engine built with the `cuda` feature?)"))
            })
        }
        other => Err(Error::InvalidInput(format!("unknown device `{other}` (use cpu or cuda[:N])"))),
    }
}

/// Parses `f32`, `bf16`, `f16` or `f64`.
pub fn parse_dtype(s: &str) -> Result<DType> {
    match s {
        "f32" => Ok(DType::F32),
        "bf16" => Ok(DType::BF16),
        "f16" => Ok(DType::F16),
        "f64" => Ok(DType::F64),
        other => Err(Error::InvalidInput(format!("unknown dtype `{other}` (use f32, bf16, f16 or f64)"))),
    }
}

/// How to load a model.
pub struct LoadOptions {
    pub device: Device,
    /// F32 on CPU; BF16/F16 on CUDA. F64 is accepted for gradient checks.
    pub dtype: DType,
    /// Register every weight as a [`candle_core::Var`] in [`Model::varmap`], so a trainer can
    /// optimise them (or pick a subset by name and freeze the rest).
    pub trainable: bool,
    /// With `trainable`: checkpoint-name prefixes whose weights stay plain tensors (frozen, never
    /// a `Var`, so no gradient is computed for them), e.g. the vision tower's prefix.
    pub frozen: Vec<String>,
    /// With `trainable`: keep the whole vision tower frozen (its prefix, as resolved for this
    /// checkpoint, is added to `frozen`).
    pub freeze_vision_tower: bool,
    /// Where hub-style `mm_vision_tower` names (`openai/clip-vit-large-patch14-336`) are looked up.
    pub models_dir: Option<PathBuf>,
    /// Bytes available for weights; `None` reads `MemAvailable` on the CPU and skips the check
    /// on other devices.
    pub available_memory: Option<u64>,
    /// Loading progress: (bytes loaded, bytes expected).
    pub progress: Option<Box<dyn Fn(u64, u64) + Send + Sync>>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            device: Device::Cpu,
            dtype: DType::F32,
            trainable: false,
            frozen: Vec::new(),
            freeze_vision_tower: false,
            models_dir: None,
            available_memory: None,
            progress: None,
        }
    }
}

impl std::fmt::Debug for LoadOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadOptions")
            .field("device", &self.device)
            .field("dtype", &self.dtype)
            .field("trainable", &self.trainable)
            .field("frozen", &self.frozen)
            .field("models_dir", &self.models_dir)
            .finish()
    }
}

/// A loaded vision-language model.
pub struct Model {
    pub config: ModelConfig,
    pub tokenizer: PromptTokenizer,
    pub llava: LlavaModel,
    varmap: Option<VarMap>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("dir", &self.config.dir).field("layout", &self.config.layout).finish()
    }
}

/// Adjusts llava-hf names for checkpoints saved by transformers 5 (`model.language_model.*`).
fn adapt_names(cfg: &mut ModelConfig, files: &WeightFiles) {
    if cfg.layout == Layout::LlavaHf && files.contains("model.language_model.embed_tokens.weight") {
        let w = &mut cfg.weights;
        w.lm_body = "model.language_model.".into();
        w.lm_head = "lm_head.weight".into();
        w.projector = ["model.multi_modal_projector.linear_1".into(), "model.multi_modal_projector.linear_2".into()];
        w.vision = "model.vision_tower.vision_model.".into();
    }
}


impl Model {
    /// Checks a checkpoint folder before it is registered: config (and the vision tower it
    /// names), tokenizer and weight files with their headers; then, when the weights fit in
    /// half the available memory, a full load, which checks every tensor's name and shape.
    /// Returns what was checked; an error names the missing or wrong file.
    pub fn check(dir: &Path, models_dir: Option<PathBuf>) -> Result<String> {
        let mut config = ModelConfig::from_dir(dir, &ResolveOptions { models_dir: models_dir.clone() })?;
        PromptTokenizer::load(&config)?;
        let files = WeightFiles::open(dir)?;
        adapt_names(&mut config, &files);
        if config.weights.vision_dir != config.dir {
            WeightFiles::open(&config.weights.vision_dir)?;
        }
        let needed = loader::weight_bytes(&config, DType::F32);
        let fits = loader::available_memory_bytes(&Device::Cpu).is_some_and(|avail| needed.saturating_mul(2) <= avail);
        if !fits {
            return Ok(format!(
                "config, tokenizer and weight files checked; the full load was skipped ({} MiB of weights)",
                needed >> 20
            ));
        }
        Model::load(dir, &LoadOptions { models_dir, ..Default::default() })?;
        Ok("loaded completely: every tensor's name and shape checked".into())
    }

    /// Reads the config, the tokenizer and the weights of the checkpoint in `dir`.
    pub fn load(dir: &Path, opts: &LoadOptions) -> Result<Model> {
        if !matches!(opts.dtype, DType::F32 | DType::F64 | DType::BF16 | DType::F16) {
            return Err(Error::InvalidInput(format!("unsupported weight dtype {:?}", opts.dtype)));
        }
        if opts.dtype == DType::BF16 && opts.device.is_cpu() {
            return Err(Error::InvalidInput(
                "bf16 is not supported on the CPU (candle has no CPU bf16 matmul); use f32 or f16".into(),
            ));
        }
        let mut config = ModelConfig::from_dir(dir, &ResolveOptions { models_dir: opts.models_dir.clone() })?;
        let tokenizer = PromptTokenizer::load(&config)?;
        let needed = loader::weight_bytes(&config, opts.dtype);
        let available = opts.available_memory.or_else(|| loader::available_memory_bytes(&opts.device));
        if let Some(avail) = available {
            if needed > avail {
                return Err(Error::OutOfMemory {
                    needed_mib: needed >> 20,
                    available_mib: avail >> 20,
                    device: format!("{:?}", opts.device),
                });
            }
        }
        let files = WeightFiles::open(dir)?;
        adapt_names(&mut config, &files);
        let separate_vision = config.weights.vision_dir != config.dir;
        let vision_files = if separate_vision { Some(WeightFiles::open(&config.weights.vision_dir)?) } else { None };
        let varmap = if opts.trainable { Some(VarMap::new()) } else { None };
        let progress = opts.progress.as_deref().map(|p| p as &(dyn Fn(u64, u64) + Sync));
        let mut frozen = opts.frozen.clone();
        if opts.freeze_vision_tower {
            frozen.push(config.weights.vision.clone());
        }
        let params = Params::new(&files, opts.dtype, &opts.device, varmap.as_ref(), progress, needed)
            .with_frozen(&frozen);
        let vparams = vision_files.as_ref().map(|vf| {
            Params::new(vf, opts.dtype, &opts.device, varmap.as_ref(), progress, needed).with_frozen(&frozen)
        });
        let vp = vparams.as_ref().unwrap_or(&params);
        tracing::info!(dir = %dir.display(), layout = %config.layout, params = loader::parameter_count(&config), "loading model");
        let vision = ClipVision::load(vp, &config.weights.vision, &config.vision, config.vision_layers_used())?;
        let projector = Projector::load(&params, &config.weights.projector, config.mm_hidden_size, config.text.hidden_size)?;
        let decoder = match config.text.arch {
            TextArch::Qwen2 => crate::qwen2::load(&params, &config.weights.lm_body, &config.weights.lm_head, &config.text)?,
            TextArch::Mistral | TextArch::Llama => {
                crate::mistral::load(&params, &config.weights.lm_body, &config.weights.lm_head, &config.text)?
            }
        };
        let llava = LlavaModel::new(vision, projector, decoder, &config);
        Ok(Model { config, tokenizer, llava, varmap })
    }

    /// The trainable weights (when loaded with `trainable`), keyed by checkpoint name.
    pub fn varmap(&self) -> Option<&VarMap> {
        self.varmap.as_ref()
    }

    /// The trainable weights whose checkpoint names pass `keep` (e.g. only the projector, or
    /// everything but the vision tower); the others stay in the graph but are never updated.
    pub fn trainable_vars(&self, keep: impl Fn(&str) -> bool) -> Vec<(String, candle_core::Var)> {
        let Some(vm) = &self.varmap else { return Vec::new() };
        let Ok(data) = vm.data().lock() else { return Vec::new() };
        let mut vars: Vec<(String, candle_core::Var)> =
            data.iter().filter(|(k, _)| keep(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars
    }

    /// The decoder's attention and MLP projections by checkpoint module path
    /// (`model.layers.0.self_attn.q_proj`, …): the layers LoRA may wrap.
    pub fn projections(&self) -> Vec<(String, &Linear)> {
        self.llava.decoder.projections()
    }

    /// Attaches an adapter to each decoder projection for which `make(module path, layer)`
    /// returns one (and removes it where `make` returns `None`). Returns how many were attached.
    /// The base weights are untouched: loaded without `trainable` they stay plain tensors.
    pub fn set_adapters(
        &mut self,
        mut make: impl FnMut(&str, &Linear) -> Result<Option<Arc<dyn LinearAdapter>>>,
    ) -> Result<usize> {
        let mut n = 0;
        for (path, lin) in self.llava.decoder.projections_mut() {
            let a = make(&path, lin)?;
            n += usize::from(a.is_some());
            lin.set_adapter(a);
        }
        Ok(n)
    }

    /// Differentiable forward from input embeddings (B, T, H) with an optional (B, T) mask of
    /// real positions: logits (B, T, vocab).
    pub fn forward_embeds(&self, embeds: &Tensor, attention_mask: Option<&Tensor>) -> Result<Tensor> {
        self.llava.decoder().forward_train(embeds, attention_mask)
    }

    /// The device of the weights.
    pub fn device(&self) -> &Device {
        self.llava.device()
    }

    /// Preprocesses one image into (1, 3, S, S) pixel values on the model's device.
    pub fn preprocess_image(&self, image: &RgbImage) -> Result<Tensor> {
        let p = crate::preprocess::preprocess(image, &self.config.image)?;
        p.tensor(self.device())
    }

    /// The templated single-turn prompt text.
    pub fn prompt(&self, question: &str, with_image: bool) -> String {
        self.config.template.prompt(question, with_image)
    }

    /// Prompt ids with -200 at the image placeholder.
    pub fn prompt_ids(&self, question: &str, with_image: bool) -> Result<Vec<i64>> {
        self.tokenizer.encode_prompt(&self.prompt(question, with_image))
    }

    /// A ready input for `question` about `image` (or text only).
    pub fn input(&self, question: &str, image: Option<&RgbImage>) -> Result<MultimodalInput> {
        let ids = self.prompt_ids(question, image.is_some())?;
        let pixel_values = image.map(|i| self.preprocess_image(i)).transpose()?;
        Ok(MultimodalInput { ids, pixel_values })
    }

    /// Answer ids (text + EOS).
    pub fn answer_ids(&self, answer: &str) -> Result<Vec<u32>> {
        self.tokenizer.encode_answer(answer)
    }

    /// Splices and pads a batch.
    pub fn embed(&self, inputs: &[MultimodalInput], side: PadSide) -> Result<EmbeddedBatch> {
        self.llava.embed_batch(inputs, side)
    }

    /// Differentiable forward: logits (B, T, vocab) for right-padded inputs, and the batch.
    pub fn forward_train(&self, inputs: &[MultimodalInput]) -> Result<(Tensor, EmbeddedBatch)> {
        let batch = self.llava.embed_batch(inputs, PadSide::Right)?;
        let logits = self.llava.forward_train(&batch)?;
        Ok((logits, batch))
    }

    /// Differentiable summed answer log-probs (B,).
    pub fn sequence_logprobs(&self, items: &[ScoreItem]) -> Result<Tensor> {
        crate::score::score_batch(&self.llava, items)
    }

    /// [`Model::sequence_logprobs`] sharing frozen vision-tower outputs through `cache` with
    /// other passes of the same step (see [`crate::llava::VisionCache`] for when that is valid).
    pub fn sequence_logprobs_cached(&self, items: &[ScoreItem], cache: &mut crate::llava::VisionCache) -> Result<Tensor> {
        crate::score::score_packed(&self.llava, items, Some(cache))
    }

    /// Answer log-prob sums as numbers, on the fast inference path (evaluation, the CLI).
    pub fn score(&self, items: &[ScoreItem]) -> Result<Vec<f64>> {
        crate::score::score_fast(&self.llava, items)
    }

    /// Generates for a batch, streaming tokens to `on_token`.
    pub fn generate(
        &self,
        inputs: &[MultimodalInput],
        params: &GenerateParams,
        on_token: &mut dyn FnMut(TokenEvent<'_>),
    ) -> Result<Vec<Generation>> {
        crate::generate::generate(&self.llava, &self.tokenizer, inputs, params, on_token)
    }

    /// [`Model::generate`] with per-token log-probs (`top_logprobs` alternatives each step) and
    /// early stopping: a row ends when `on_token` returns `false`.
    pub fn generate_with(
        &self,
        inputs: &[MultimodalInput],
        params: &GenerateParams,
        top_logprobs: usize,
        on_token: &mut dyn FnMut(TokenEvent<'_>) -> bool,
    ) -> Result<Vec<Generation>> {
        crate::generate::generate_with(&self.llava, &self.tokenizer, inputs, params, top_logprobs, on_token)
    }

    /// Tokens the model reads for `input`: its ids with each image placeholder expanded to the
    /// image's tokens (what counts against the context and as OpenAI's `prompt_tokens`).
    pub fn prompt_tokens(&self, input: &MultimodalInput) -> usize {
        let images = input.ids.iter().filter(|&&id| id == crate::IMAGE_TOKEN_INDEX).count();
        input.ids.len() - images + images * self.config.num_image_tokens()
    }

    /// Parameters loaded.
    pub fn parameter_count(&self) -> u64 {
        loader::parameter_count(&self.config)
    }
}
