//! LoRA adapters (Hu et al. 2021, arXiv 2106.09685, Eq. 3: h = W₀x + (α/r)·B·A·x) with the
//! frozen base as the reference model, saved in Hugging Face PEFT's layout.
//!
//! - The base weight is a plain tensor (detached, never a `Var`): no gradient buffer and no
//!   optimizer state is ever allocated for it.
//! - The adapters A (r × in, Kaiming-uniform as PEFT) and B (out × r, zeros) are `Var`s in
//!   [`Lora`]'s own `VarMap`, named with PEFT's keys
//!   `base_model.model.<module path>.lora_A.weight` / `lora_B.weight`.
//! - [`Lora::set_enabled`]`(false)` (or [`Lora::reference`]) turns every adapter off at once: the
//!   model then computes the base function, which is the DPO reference. One copy of the weights.
//! - [`Lora::save_peft`] writes `adapter_config.json` + `adapter_model.safetensors` (metadata
//!   `format: pt`) that `peft.PeftModel.from_pretrained` loads; [`Lora::load_peft`] reads them
//!   back; [`LoraLinear::merged_weight`] / [`Lora::merge_into`] fold W + (α/r)·B·A for serving.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::rng::{RngState, TrainRng};

/// Linear layers LoRA may target (the decoder's attention and MLP projections).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TargetModule {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

/// The single name table of [`TargetModule`] (checkpoint names).
pub const TARGET_MODULES: &[(TargetModule, &str)] = &[
    (TargetModule::Q, "q_proj"),
    (TargetModule::K, "k_proj"),
    (TargetModule::V, "v_proj"),
    (TargetModule::O, "o_proj"),
    (TargetModule::Gate, "gate_proj"),
    (TargetModule::Up, "up_proj"),
    (TargetModule::Down, "down_proj"),
];

impl TargetModule {
    pub fn name(self) -> &'static str {
        TARGET_MODULES
            .iter()
            .find(|(t, _)| *t == self)
            .expect("in table")
            .1
    }
}

impl fmt::Display for TargetModule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TargetModule {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        // Short forms `q`, `gate`, … are accepted too.
        TARGET_MODULES
            .iter()
            .find(|(_, n)| *n == s || n.strip_suffix("_proj") == Some(s))
            .map(|(t, _)| *t)
            .ok_or_else(|| Error::Config {
                key: "target_modules",
                value: s.to_string(),
                reason: format!(
                    "valid: {}",
                    TARGET_MODULES
                        .iter()
                        .map(|(_, n)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
    }
}

impl Serialize for TargetModule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for TargetModule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// LoRA settings, with PEFT's field names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoraConfig {
    /// Rank r.
    pub r: usize,
    /// α; the adapter output is scaled by α/r.
    pub lora_alpha: f64,
    /// Dropout on the adapter's input, training only.
    pub lora_dropout: f64,
    pub target_modules: Vec<TargetModule>,
    /// Written to `adapter_config.json` so peft finds the base.
    pub base_model_name_or_path: Option<String>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig {
            r: 8,
            lora_alpha: 16.0,
            lora_dropout: 0.05,
            target_modules: vec![TargetModule::Q, TargetModule::V],
            base_model_name_or_path: None,
        }
    }
}

impl LoraConfig {
    pub fn validate(&self) -> Result<()> {
        if self.r == 0 {
            return Err(Error::Config {
                key: "r",
                value: "0".into(),
                reason: "rank must be ≥ 1".into(),
            });
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            return Err(Error::Config {
                key: "lora_dropout",
                value: self.lora_dropout.to_string(),
                reason: "must be in [0, 1)".into(),
            });
        }
        if self.target_modules.is_empty() {
            return Err(Error::Config {
                key: "target_modules",
                value: "[]".into(),
                reason: "give at least one module".into(),
            });
        }
        Ok(())
    }
    /// α/r.
    pub fn scale(&self) -> f64 {
        self.lora_alpha / self.r as f64
    }
}

/// `adapter_config.json` as PEFT (`peft.LoraConfig`) writes it. Only keys PEFT knows are written,
/// so older and newer PEFT versions load it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeftAdapterConfig {
    pub peft_type: String,
    pub task_type: String,
    pub base_model_name_or_path: Option<String>,
    pub r: usize,
    pub lora_alpha: f64,
    pub lora_dropout: f64,
    pub target_modules: Vec<String>,
    pub bias: String,
    pub fan_in_fan_out: bool,
    pub inference_mode: bool,
    pub init_lora_weights: bool,
    pub modules_to_save: Option<Vec<String>>,
    pub layers_to_transform: Option<Vec<usize>>,
    pub layers_pattern: Option<String>,
    pub rank_pattern: BTreeMap<String, usize>,
    pub alpha_pattern: BTreeMap<String, f64>,
    pub use_rslora: bool,
    pub use_dora: bool,
    pub revision: Option<String>,
}

impl PeftAdapterConfig {
    fn from_config(c: &LoraConfig) -> Self {
        PeftAdapterConfig {
            peft_type: "LORA".into(),
            task_type: "CAUSAL_LM".into(),
            base_model_name_or_path: c.base_model_name_or_path.clone(),
            r: c.r,
            lora_alpha: c.lora_alpha,
            lora_dropout: c.lora_dropout,
            target_modules: c
                .target_modules
                .iter()
                .map(|t| t.name().to_string())
                .collect(),
            bias: "none".into(),
            fan_in_fan_out: false,
            inference_mode: true,
            init_lora_weights: true,
            modules_to_save: None,
            layers_to_transform: None,
            layers_pattern: None,
            rank_pattern: BTreeMap::new(),
            alpha_pattern: BTreeMap::new(),
            use_rslora: false,
            use_dora: false,
            revision: None,
        }
    }
}

/// PEFT's key of one adapter matrix (`which` is `lora_A` or `lora_B`).
pub fn peft_key(module_path: &str, which: &str) -> String {
    format!("base_model.model.{module_path}.{which}.weight")
}

pub const ADAPTER_CONFIG: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

struct Shared {
    config: LoraConfig,
    varmap: VarMap,
    enabled: AtomicBool,
    training: AtomicBool,
    rng: Mutex<TrainRng>,
    /// Wrapped module paths, in creation order.
    modules: Mutex<Vec<String>>,
}

/// The adapters of one model: their `VarMap`, the on/off switch and the dropout RNG.
#[derive(Clone)]
pub struct Lora(Arc<Shared>);

impl Lora {
    /// New adapters; `seed` drives A's initialisation and the dropout masks.
    pub fn new(config: LoraConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        Ok(Lora(Arc::new(Shared {
            config,
            varmap: VarMap::new(),
            enabled: AtomicBool::new(true),
            training: AtomicBool::new(true),
            rng: Mutex::new(TrainRng::seed_from_u64(seed)),
            modules: Mutex::new(Vec::new()),
        })))
    }

    pub fn config(&self) -> &LoraConfig {
        &self.0.config
    }

    /// The trainable parameters (give these, and only these, to the optimizer).
    pub fn varmap(&self) -> &VarMap {
        &self.0.varmap
    }

    /// Trainable `Var`s, sorted by name.
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        let data = self.0.varmap.data().lock().expect("varmap lock");
        let mut v: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Adapters on (policy) or off (reference).
    pub fn set_enabled(&self, on: bool) {
        self.0.enabled.store(on, Ordering::SeqCst);
    }

    pub fn enabled(&self) -> bool {
        self.0.enabled.load(Ordering::SeqCst)
    }

    /// Runs `f` with the adapters off: the base model, i.e. the DPO reference.
    pub fn reference<T>(&self, f: impl FnOnce() -> T) -> T {
        let was = self.enabled();
        self.set_enabled(false);
        let out = f();
        self.set_enabled(was);
        out
    }

    /// Dropout active (training) or not (evaluation, reference, scoring).
    pub fn set_training(&self, on: bool) {
        self.0.training.store(on, Ordering::SeqCst);
    }

    pub fn rng_state(&self) -> RngState {
        self.0.rng.lock().expect("rng lock").state()
    }

    pub fn set_rng_state(&self, s: &RngState) -> Result<()> {
        let r = TrainRng::from_state(s).ok_or_else(|| Error::Config {
            key: "rng",
            value: format!("{s:?}"),
            reason: "not a valid RNG state".into(),
        })?;
        *self.0.rng.lock().expect("rng lock") = r;
        Ok(())
    }

    /// Whether a module path (`model.layers.3.self_attn.q_proj`) is a target.
    pub fn targets(&self, module_path: &str) -> bool {
        let last = module_path.rsplit('.').next().unwrap_or(module_path);
        self.0
            .config
            .target_modules
            .iter()
            .any(|t| t.name() == last)
    }

    /// Wraps one linear layer. The base `weight` (out × in) and `bias` are detached and stay
    /// plain tensors. Targeted modules get adapters (created once per path; a path seen before,
    /// e.g. after [`Lora::load_peft`], reuses its `Var`s).
    pub fn linear(
        &self,
        module_path: &str,
        weight: &Tensor,
        bias: Option<&Tensor>,
    ) -> Result<LoraLinear> {
        let weight = weight.detach();
        let bias = bias.map(Tensor::detach);
        let (out_f, in_f) = weight.dims2()?;
        let adapter =
            self.adapter_vars(module_path, out_f, in_f, weight.dtype(), weight.device())?;
        Ok(LoraLinear {
            path: module_path.to_string(),
            weight,
            bias,
            adapter,
            lora: self.clone(),
        })
    }

    /// The (A, B) `Var`s of `module_path` when it is a target (created on first use).
    fn adapter_vars(
        &self,
        module_path: &str,
        out_f: usize,
        in_f: usize,
        dt: candle_core::DType,
        dev: &Device,
    ) -> Result<Option<(Var, Var)>> {
        let adapter = if self.targets(module_path) {
            let (r, dev) = (self.0.config.r, dev.clone());
            let (ka, kb) = (
                peft_key(module_path, "lora_A"),
                peft_key(module_path, "lora_B"),
            );
            let mut data = self.0.varmap.data().lock().expect("varmap lock");
            if !data.contains_key(&ka) {
                // PEFT's default init: A ~ kaiming_uniform(a = √5) = U(−1/√in, 1/√in), B = 0.
                let bound = 1.0 / (in_f as f64).sqrt();
                let vals: Vec<f32> = {
                    let mut rng = self.0.rng.lock().expect("rng lock");
                    (0..r * in_f)
                        .map(|_| rng.range(-bound, bound) as f32)
                        .collect()
                };
                let a = Tensor::from_vec(vals, (r, in_f), &dev)?.to_dtype(dt)?;
                data.insert(ka.clone(), Var::from_tensor(&a)?);
                data.insert(kb.clone(), Var::zeros((out_f, r), dt, &dev)?);
                self.0
                    .modules
                    .lock()
                    .expect("modules lock")
                    .push(module_path.to_string());
            }
            let (a, b) = (data[&ka].clone(), data[&kb].clone());
            if a.dims() != [r, in_f] || b.dims() != [out_f, r] {
                return Err(Error::Config {
                    key: "r",
                    value: r.to_string(),
                    reason: format!(
                        "adapter of `{module_path}` has shapes {:?}/{:?}, base is {out_f}×{in_f}",
                        a.dims(),
                        b.dims()
                    ),
                });
            }
            Some((a, b))
        } else {
            None
        };
        Ok(adapter)
    }

    /// Wraps the targeted projections of a loaded model (`q_proj` … `down_proj` of every decoder
    /// layer, by their checkpoint module paths, which are also PEFT's) with adapters. The base
    /// weights stay as loaded: load the model without `trainable` so they are plain tensors.
    /// Returns the number of wrapped layers.
    pub fn attach(&self, model: &mut medpo_models::Model) -> Result<usize> {
        let n = model.set_adapters(|path, lin| {
            let (out_f, in_f) = (lin.out_dim()?, lin.in_dim()?);
            let w = lin.stored_weight();
            let vars = self
                .adapter_vars(path, out_f, in_f, w.dtype(), w.device())
                .map_err(|e| medpo_models::Error::InvalidInput(e.to_string()))?;
            Ok(vars.map(|(a, b)| {
                Arc::new(LoraAdapter {
                    path: path.to_string(),
                    a,
                    b,
                    lora: self.clone(),
                }) as Arc<dyn medpo_models::LinearAdapter>
            }))
        })?;
        if n == 0 {
            return Err(Error::Config {
                key: "lora_target_modules",
                value: format!("{:?}", self.0.config.target_modules),
                reason: "no layer of the model matched".into(),
            });
        }
        Ok(n)
    }

    /// (α/r)·B·A·dropout(x) for x (…, in).
    fn delta(&self, x: &Tensor, a: &Var, b: &Var) -> Result<Tensor> {
        let cfg = &self.0.config;
        let p = cfg.lora_dropout;
        let xd = if p > 0.0 && self.0.training.load(Ordering::SeqCst) {
            let n = x.elem_count();
            let keep = 1.0 / (1.0 - p);
            let mask: Vec<f32> = {
                let mut rng = self.0.rng.lock().expect("rng lock");
                (0..n)
                    .map(|_| if rng.uniform() < p { 0.0 } else { keep as f32 })
                    .collect()
            };
            let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
            (x * mask)?
        } else {
            x.clone()
        };
        let delta = xd
            .broadcast_matmul(&a.as_tensor().t()?)?
            .broadcast_matmul(&b.as_tensor().t()?)?;
        Ok((delta * cfg.scale())?)
    }

    /// Writes `adapter_config.json` and `adapter_model.safetensors` (PEFT layout).
    pub fn save_peft(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let cfg = PeftAdapterConfig::from_config(&self.0.config);
        let p = dir.join(ADAPTER_CONFIG);
        let text = serde_json::to_string_pretty(&cfg).map_err(|e| Error::json(&p, e))?;
        std::fs::write(&p, text + "\n").map_err(|e| Error::io(&p, e))?;
        let vars = self.named_vars();
        let tensors: Vec<(String, Tensor)> = vars
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        write_safetensors(&dir.join(ADAPTER_WEIGHTS), &tensors)
    }

    /// Reads a PEFT adapter folder: the config, and the adapter tensors, which the next
    /// [`Lora::linear`] calls pick up by module path.
    pub fn load_peft(dir: &Path, device: &Device, seed: u64) -> Result<Self> {
        let p = dir.join(ADAPTER_CONFIG);
        let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
        let pc: PeftAdapterConfig = serde_json::from_str(&text).map_err(|e| Error::json(&p, e))?;
        let unsupported = |key: &'static str, value: String| Error::Config {
            key,
            value,
            reason: format!("not supported (in {})", p.display()),
        };
        if pc.peft_type != "LORA" {
            return Err(unsupported("peft_type", pc.peft_type));
        }
        if pc.bias != "none" {
            return Err(unsupported("bias", pc.bias));
        }
        if pc.use_dora || pc.use_rslora || pc.fan_in_fan_out {
            return Err(unsupported(
                "use_dora/use_rslora/fan_in_fan_out",
                "true".into(),
            ));
        }
        let config = LoraConfig {
            r: pc.r,
            lora_alpha: pc.lora_alpha,
            lora_dropout: pc.lora_dropout,
            target_modules: pc
                .target_modules
                .iter()
                .map(|s| s.parse())
                .collect::<Result<_>>()?,
            base_model_name_or_path: pc.base_model_name_or_path,
        };
        let lora = Lora::new(config, seed)?;
        let wp = dir.join(ADAPTER_WEIGHTS);
        let tensors = candle_core::safetensors::load(&wp, device)?;
        {
            let mut data = lora.0.varmap.data().lock().expect("varmap lock");
            let mut paths = Vec::new();
            for (k, t) in tensors {
                let Some(path) = k.strip_prefix("base_model.model.").and_then(|s| {
                    s.strip_suffix(".lora_A.weight")
                        .or(s.strip_suffix(".lora_B.weight"))
                }) else {
                    return Err(Error::Checkpoint {
                        path: wp.clone(),
                        message: format!("unexpected tensor `{k}` (not a PEFT LoRA key)"),
                    });
                };
                if k.ends_with(".lora_A.weight") {
                    paths.push(path.to_string());
                }
                data.insert(k, Var::from_tensor(&t)?);
            }
            paths.sort();
            for path in &paths {
                if !data.contains_key(&peft_key(path, "lora_B")) {
                    return Err(Error::Checkpoint {
                        path: wp.clone(),
                        message: format!("`{}` has no lora_B", path),
                    });
                }
            }
            *lora.0.modules.lock().expect("modules lock") = paths;
        }
        Ok(lora)
    }

    /// Copies adapter values from `other` (same keys), e.g. to restore a checkpoint in place.
    pub fn load_values_from(&self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        for (k, v) in self.named_vars() {
            let t = tensors.get(&k).ok_or_else(|| Error::Checkpoint {
                path: "adapter".into(),
                message: format!("missing `{k}`"),
            })?;
            v.set(&t.to_dtype(v.dtype())?)?;
        }
        Ok(())
    }

    /// Folds every adapter into a base state dict (`<module path>.weight` keys): W + (α/r)·B·A.
    pub fn merge_into(&self, base: &mut HashMap<String, Tensor>) -> Result<()> {
        let scale = self.0.config.scale();
        for path in self.0.modules.lock().expect("modules lock").iter() {
            let key = format!("{path}.weight");
            let w = base.get(&key).ok_or_else(|| Error::Checkpoint {
                path: "base".into(),
                message: format!("no base weight `{key}` for adapter `{path}`"),
            })?;
            let data = self.0.varmap.data().lock().expect("varmap lock");
            let (a, b) = (
                data[&peft_key(path, "lora_A")].as_tensor(),
                data[&peft_key(path, "lora_B")].as_tensor(),
            );
            let merged = (w + (b.matmul(a)? * scale)?.to_dtype(w.dtype())?)?;
            base.insert(key, merged);
        }
        Ok(())
    }
}

/// Writes a safetensors file with `{"format": "pt"}` metadata, as torch/peft write it.
pub fn write_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let contiguous: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(k, t)| Ok((k.clone(), t.contiguous()?)))
        .collect::<Result<_>>()?;
    let meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    safetensors::tensor::serialize_to_file(
        contiguous.iter().map(|(k, t)| (k.as_str(), t)),
        Some(meta),
        path,
    )
    .map_err(|e| Error::Safetensors {
        path: path.into(),
        message: e.to_string(),
    })
}

/// A linear layer with a frozen base and an optional adapter.
pub struct LoraLinear {
    path: String,
    weight: Tensor,
    bias: Option<Tensor>,
    adapter: Option<(Var, Var)>,
    lora: Lora,
}

impl LoraLinear {
    pub fn path(&self) -> &str {
        &self.path
    }
    /// The frozen base weight (a plain tensor).
    pub fn base_weight(&self) -> &Tensor {
        &self.weight
    }
    pub fn has_adapter(&self) -> bool {
        self.adapter.is_some()
    }

    /// x (…, in) → (…, out): W₀x + b, plus (α/r)·B·A·dropout(x) when adapters are on.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut y = x.broadcast_matmul(&self.weight.t()?)?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        let Some((a, b)) = &self.adapter else {
            return Ok(y);
        };
        if !self.lora.enabled() {
            return Ok(y);
        }
        Ok((y + self.lora.delta(x, a, b)?)?)
    }

    /// W + (α/r)·B·A as a new plain tensor (the base itself is unchanged).
    pub fn merged_weight(&self) -> Result<Tensor> {
        match &self.adapter {
            None => Ok(self.weight.clone()),
            Some((a, b)) => Ok((&self.weight
                + (b.as_tensor().matmul(a.as_tensor())? * self.lora.0.config.scale())?)?),
        }
    }
}

/// The adapter of one projection inside a `medpo_models::Model` (see [`Lora::attach`]): adds
/// (α/r)·B·A·dropout(x) while the adapters are on, nothing while they are off (the reference).
pub struct LoraAdapter {
    path: String,
    a: Var,
    b: Var,
    lora: Lora,
}

impl fmt::Debug for LoraAdapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoraAdapter")
            .field("path", &self.path)
            .field("r", &self.lora.0.config.r)
            .finish()
    }
}

impl medpo_models::LinearAdapter for LoraAdapter {
    fn delta(&self, x: &Tensor) -> candle_core::Result<Option<Tensor>> {
        if !self.lora.enabled() {
            return Ok(None);
        }
        match self.lora.delta(x, &self.a, &self.b) {
            Ok(d) => Ok(Some(d)),
            Err(Error::Candle(e)) => Err(e),
            Err(e) => Err(candle_core::Error::msg(e.to_string())),
        }
    }
}

/// Bytes of gradient a backward pass allocated for `vars` (to show the base got none).
pub fn grad_bytes(grads: &candle_core::backprop::GradStore, tensors: &[&Tensor]) -> usize {
    tensors
        .iter()
        .filter_map(|t| grads.get(t))
        .map(|g| g.elem_count() * g.dtype().size_in_bytes())
        .sum()
}

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Lora>()
};

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    const IN: usize = 12;
    const OUT: usize = 10;

    /// A toy decoder layer set: every target kind plus an untargeted module.
    fn toy(lora: &Lora, seed: u64) -> Vec<LoraLinear> {
        let mut rng = TrainRng::seed_from_u64(seed);
        let mut mk = |path: &str, bias: bool| {
            let w: Vec<f32> = (0..OUT * IN).map(|_| rng.normal() as f32 * 0.3).collect();
            let w = Tensor::from_vec(w, (OUT, IN), &Device::Cpu).unwrap();
            let b = bias.then(|| {
                Tensor::from_vec(
                    (0..OUT).map(|i| i as f32 * 0.01).collect::<Vec<_>>(),
                    OUT,
                    &Device::Cpu,
                )
                .unwrap()
            });
            lora.linear(path, &w, b.as_ref()).unwrap()
        };
        vec![
            mk("model.layers.0.self_attn.q_proj", true),
            mk("model.layers.0.self_attn.k_proj", true),
            mk("model.layers.0.self_attn.v_proj", true),
            mk("model.layers.0.self_attn.o_proj", false),
            mk("model.layers.0.mlp.gate_proj", false),
            mk("model.layers.0.mlp.up_proj", false),
            mk("model.layers.0.mlp.down_proj", false),
            mk("model.mm_projector.0", true),
        ]
    }

    fn input() -> Tensor {
        let mut rng = TrainRng::seed_from_u64(99);
        Tensor::from_vec(
            (0..2 * 3 * IN)
                .map(|_| rng.normal() as f32)
                .collect::<Vec<_>>(),
            (2, 3, IN),
            &Device::Cpu,
        )
        .unwrap()
    }

    fn all_targets(dropout: f64) -> LoraConfig {
        LoraConfig {
            r: 4,
            lora_alpha: 8.0,
            lora_dropout: dropout,
            target_modules: TARGET_MODULES.iter().map(|(t, _)| *t).collect(),
            base_model_name_or_path: Some("microsoft/llava-med-v1.5-mistral-7b".into()),
        }
    }

    /// Randomises B so the adapters are not a no-op (B starts at zero, as in PEFT).
    fn perturb(lora: &Lora) {
        let mut rng = TrainRng::seed_from_u64(5);
        for (k, v) in lora.named_vars() {
            if k.ends_with("lora_B.weight") {
                let n = v.elem_count();
                let t = Tensor::from_vec(
                    (0..n)
                        .map(|_| rng.normal() as f32 * 0.1)
                        .collect::<Vec<_>>(),
                    v.shape(),
                    &Device::Cpu,
                )
                .unwrap();
                v.set(&t).unwrap();
            }
        }
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// Every adapter gets a gradient; the frozen base and bias get none (no buffer at all).
    #[test]
    fn gradient_coverage_and_frozen_base() {
        let lora = Lora::new(all_targets(0.0), 1).unwrap();
        let layers = toy(&lora, 2);
        assert_eq!(lora.named_vars().len(), 14, "7 targeted modules × (A, B)");
        assert!(!layers[7].has_adapter());
        let x = input();
        let loss = |layers: &[LoraLinear]| {
            let mut s = Tensor::zeros((), DType::F32, &Device::Cpu).unwrap();
            for l in layers {
                s = (s + l.forward(&x).unwrap().sqr().unwrap().sum_all().unwrap()).unwrap();
            }
            s
        };
        // At init B = 0, so only B gets a nonzero gradient; after one SGD step A does too.
        let g = loss(&layers).backward().unwrap();
        for (k, v) in lora.named_vars() {
            let gv = g
                .get(v.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for {k}"));
            let norm = gv
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            if k.ends_with("lora_B.weight") {
                assert!(norm > 0.0, "{k}");
                v.set(&(v.as_tensor() - (gv * 1e-2).unwrap()).unwrap())
                    .unwrap();
            }
        }
        let g = loss(&layers).backward().unwrap();
        for (k, v) in lora.named_vars() {
            let norm = g
                .get(v.as_tensor())
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(norm > 0.0, "{k} has a zero gradient");
        }
        let bases: Vec<&Tensor> = layers.iter().map(|l| l.base_weight()).collect();
        assert_eq!(
            grad_bytes(&g, &bases),
            0,
            "the frozen base must not get gradient buffers"
        );
        for l in &layers {
            assert!(l.bias.as_ref().is_none_or(|b| g.get(b).is_none()));
        }
    }

    /// Adapters off = the base model exactly (the reference); on = base + adapter.
    #[test]
    fn disabled_adapters_are_the_reference() {
        let lora = Lora::new(all_targets(0.0), 1).unwrap();
        let layers = toy(&lora, 2);
        perturb(&lora);
        let x = input();
        for l in &layers {
            let plain = x.broadcast_matmul(&l.base_weight().t().unwrap()).unwrap();
            let plain = match &l.bias {
                Some(b) => plain.broadcast_add(b).unwrap(),
                None => plain,
            };
            let off = lora.reference(|| l.forward(&x).unwrap());
            assert_eq!(max_diff(&off, &plain), 0.0, "{}", l.path());
            let on = l.forward(&x).unwrap();
            if l.has_adapter() {
                assert!(max_diff(&on, &plain) > 1e-4, "{}", l.path());
            }
        }
        assert!(lora.enabled(), "reference() restores the switch");
    }

    /// PEFT layout: key names, config fields, `format: pt`; reload gives the same function; the
    /// merged weight equals the adapter forward.
    #[test]
    fn peft_save_load_merge() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = all_targets(0.1);
        cfg.target_modules = vec![TargetModule::Q, TargetModule::V, TargetModule::Down];
        let lora = Lora::new(cfg, 3).unwrap();
        let layers = toy(&lora, 4);
        perturb(&lora);
        lora.save_peft(dir.path()).unwrap();

        let conf: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join(ADAPTER_CONFIG)).unwrap(),
        )
        .unwrap();
        assert_eq!(conf["peft_type"], "LORA");
        assert_eq!(conf["task_type"], "CAUSAL_LM");
        assert_eq!(conf["r"], 4);
        assert_eq!(conf["lora_alpha"], 8.0);
        assert_eq!(conf["lora_dropout"], 0.1);
        assert_eq!(conf["bias"], "none");
        assert_eq!(conf["fan_in_fan_out"], false);
        assert_eq!(conf["inference_mode"], true);
        assert_eq!(
            conf["base_model_name_or_path"],
            "microsoft/llava-med-v1.5-mistral-7b"
        );
        assert_eq!(
            conf["target_modules"],
            serde_json::json!(["q_proj", "v_proj", "down_proj"])
        );

        let bytes = std::fs::read(dir.path().join(ADAPTER_WEIGHTS)).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(meta.metadata().as_ref().unwrap()["format"], "pt");
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut names: Vec<&str> = st.names();
        names.sort();
        assert_eq!(
            names,
            vec![
                "base_model.model.model.layers.0.mlp.down_proj.lora_A.weight",
                "base_model.model.model.layers.0.mlp.down_proj.lora_B.weight",
                "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
                "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight",
                "base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight",
                "base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight",
            ]
        );
        assert_eq!(
            st.tensor("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight")
                .unwrap()
                .shape(),
            &[4, IN]
        );
        assert_eq!(
            st.tensor("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight")
                .unwrap()
                .shape(),
            &[OUT, 4]
        );

        let back = Lora::load_peft(dir.path(), &Device::Cpu, 0).unwrap();
        assert_eq!(back.config(), lora.config());
        let layers2 = toy(&back, 4);
        lora.set_training(false);
        back.set_training(false);
        let x = input();
        let mut base = HashMap::new();
        for (l1, l2) in layers.iter().zip(&layers2) {
            assert_eq!(
                max_diff(&l1.forward(&x).unwrap(), &l2.forward(&x).unwrap()),
                0.0,
                "{}",
                l1.path()
            );
            // Merge: a plain linear with W + (α/r)·B·A equals the adapter forward.
            let merged = l1.merged_weight().unwrap();
            let mut y = x.broadcast_matmul(&merged.t().unwrap()).unwrap();
            if let Some(b) = &l1.bias {
                y = y.broadcast_add(b).unwrap();
            }
            assert!(
                max_diff(&y, &l1.forward(&x).unwrap()) < 1e-5,
                "{}",
                l1.path()
            );
            base.insert(format!("{}.weight", l1.path()), l1.base_weight().clone());
        }
        back.merge_into(&mut base).unwrap();
        for l in &layers {
            assert!(
                max_diff(
                    &base[&format!("{}.weight", l.path())],
                    &l.merged_weight().unwrap()
                ) < 1e-6
            );
        }
    }

    /// Dropout is active only in training mode and is reproducible from the RNG state.
    #[test]
    fn dropout_is_seeded_and_training_only() {
        let lora = Lora::new(all_targets(0.5), 1).unwrap();
        let layers = toy(&lora, 2);
        perturb(&lora);
        let x = input();
        let s = lora.rng_state();
        let a = layers[0].forward(&x).unwrap();
        lora.set_rng_state(&s).unwrap();
        let b = layers[0].forward(&x).unwrap();
        assert_eq!(max_diff(&a, &b), 0.0);
        let c = layers[0].forward(&x).unwrap();
        assert!(max_diff(&a, &c) > 0.0);
        lora.set_training(false);
        assert_eq!(
            max_diff(
                &layers[0].forward(&x).unwrap(),
                &layers[0].forward(&x).unwrap()
            ),
            0.0
        );
        assert!(
            "q".parse::<TargetModule>().is_ok()
                && "w_proj"
                    .parse::<TargetModule>()
                    .unwrap_err()
                    .to_string()
                    .contains("gate_proj")
        );
    }
}
