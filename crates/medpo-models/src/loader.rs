//! Memory-mapped safetensors checkpoints: sharded (with `model.safetensors.index.json`) or a
//! single `model.safetensors`, plus the parameter source the model structs load from.
//!
//! Tensors are fetched by their checkpoint names, so the model struct tree is the key tree.
//! Extra keys are ignored. A missing shard, a missing index entry, a wrong shape or an integer
//! dtype is an error that names the file and the key.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;

use crate::config::ModelConfig;
use crate::error::{Error, Result};

/// The weight files of one folder.
pub struct WeightFiles {
    files: Vec<(PathBuf, MmapedSafetensors)>,
    /// key -> index into `files`.
    routing: HashMap<String, usize>,
    /// The file named in "missing tensor" errors: the index, or the single file.
    index_or_file: PathBuf,
}

impl std::fmt::Debug for WeightFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeightFiles").field("files", &self.files.iter().map(|f| &f.0).collect::<Vec<_>>()).finish()
    }
}

#[derive(serde::Deserialize)]
struct RawIndex {
    weight_map: HashMap<String, String>,
}

fn open_file(path: &Path) -> Result<MmapedSafetensors> {
    let meta = std::fs::metadata(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::MissingFile { what: "weight file", path: path.to_path_buf() }
        } else {
            Error::io(path, e)
        }
    })?;
    if meta.len() < 8 {
        return Err(Error::Safetensors { file: path.to_path_buf(), message: format!("file is {} bytes long", meta.len()) });
    }
    // SAFETY: the file is mapped read-only; like every mmap-based loader we assume that nobody
    // truncates it while the model is loading.
    unsafe { MmapedSafetensors::new(path) }
        .map_err(|e| Error::Safetensors { file: path.to_path_buf(), message: e.to_string() })
}

impl WeightFiles {
    /// Opens `dir/model.safetensors.index.json` and its shards, or `dir/model.safetensors`.
    pub fn open(dir: &Path) -> Result<Self> {
        let index = dir.join("model.safetensors.index.json");
        if index.is_file() {
            let raw: RawIndex = crate::config::read_json(&index)?;
            let mut names: Vec<&String> = raw.weight_map.values().collect();
            names.sort();
            names.dedup();
            let mut files = Vec::new();
            let mut pos = HashMap::new();
            for name in names {
                let path = dir.join(name);
                if !path.is_file() {
                    return Err(Error::MissingFile {
                        what: "weight shard (listed in model.safetensors.index.json)",
                        path,
                    });
                }
                pos.insert(name.clone(), files.len());
                files.push((path.clone(), open_file(&path)?));
            }
            let routing = raw.weight_map.iter().map(|(k, f)| (k.clone(), pos[f])).collect();
            return Ok(WeightFiles { files, routing, index_or_file: index });
        }
        let single = dir.join("model.safetensors");
        if !single.is_file() {
            return Err(Error::MissingFile { what: "weights (model.safetensors or model.safetensors.index.json)", path: single });
        }
        let st = open_file(&single)?;
        let routing = st.tensors().into_iter().map(|(k, _)| (k, 0)).collect();
        Ok(WeightFiles { files: vec![(single.clone(), st)], routing, index_or_file: single })
    }

    /// Whether the checkpoint (its index) names `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.routing.contains_key(key)
    }

    /// All keys.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.routing.keys()
    }

    /// Shape and dtype of `key`, without loading it.
    pub fn info(&self, key: &str) -> Result<(Vec<usize>, String)> {
        let (view, _) = self.view(key)?;
        Ok((view.shape().to_vec(), format!("{:?}", view.dtype())))
    }

    fn view(&self, key: &str) -> Result<(safetensors_view::View<'_>, &Path)> {
        let idx = *self
            .routing
            .get(key)
            .ok_or_else(|| Error::MissingTensor { key: key.into(), file: self.index_or_file.clone() })?;
        let (path, st) = &self.files[idx];
        let view = st.get(key).map_err(|_| Error::MissingTensor { key: key.into(), file: path.clone() })?;
        Ok((view, path))
    }

    /// Loads `key`, checking its shape and dtype, converted to `dtype` on `device`.
    pub fn load(&self, key: &str, shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
        let (view, path) = self.view(key)?;
        if view.shape() != shape {
            return Err(Error::ShapeMismatch {
                key: key.into(),
                file: path.to_path_buf(),
                expected: shape.to_vec(),
                found: view.shape().to_vec(),
            });
        }
        use candle_core::safetensors::Load;
        let src_dtype = view.dtype();
        let float = matches!(
            src_dtype,
            safetensors_view::Dtype::F32 | safetensors_view::Dtype::F16 | safetensors_view::Dtype::BF16 | safetensors_view::Dtype::F64
        );
        if !float {
            return Err(Error::DtypeMismatch { key: key.into(), file: path.to_path_buf(), found: format!("{src_dtype:?}") });
        }
        let t = view
            .load(device)
            .map_err(|e| Error::Safetensors { file: path.to_path_buf(), message: format!("tensor `{key}`: {e}") })?;
        Ok(t.to_dtype(dtype)?)
    }
}

/// The safetensors view types candle hands out.
mod safetensors_view {
    pub type View<'a> = safetensors::tensor::TensorView<'a>;
    pub use safetensors::Dtype;
}

/// Called while loading with (bytes loaded, bytes expected).
pub type ProgressFn<'a> = &'a (dyn Fn(u64, u64) + Sync);

/// Where model structs take their parameters from: the weight files, converted to the runtime
/// dtype and device, optionally registered as trainable [`Var`]s in a [`VarMap`].
pub struct Params<'a> {
    files: &'a WeightFiles,
    pub(crate) dtype: DType,
    pub(crate) device: Device,
    varmap: Option<&'a VarMap>,
    progress: Option<ProgressFn<'a>>,
    loaded: Mutex<(u64, u64)>,
    /// Name prefixes kept as plain tensors even with a VarMap.
    frozen: Vec<String>,
}

impl<'a> Params<'a> {
    pub fn new(
        files: &'a WeightFiles,
        dtype: DType,
        device: &Device,
        varmap: Option<&'a VarMap>,
        progress: Option<ProgressFn<'a>>,
        expected_bytes: u64,
    ) -> Self {
        Params {
            files,
            dtype,
            device: device.clone(),
            varmap,
            progress,
            loaded: Mutex::new((0, expected_bytes)),
            frozen: Vec::new(),
        }
    }

    /// Keeps the weights whose names start with one of `prefixes` as plain tensors.
    pub fn with_frozen(mut self, prefixes: &[String]) -> Self {
        self.frozen = prefixes.to_vec();
        self
    }

    /// Whether `key` becomes a trainable `Var`.
    pub fn is_trainable(&self, key: &str) -> bool {
        self.varmap.is_some() && !self.frozen.iter().any(|p| key.starts_with(p.as_str()))
    }

    /// Loads `key` with the given shape.
    pub fn get(&self, key: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.files.load(key, shape, self.dtype, &self.device)?;
        let t = match self.varmap {
            Some(vm) if self.is_trainable(key) => {
                let var = Var::from_tensor(&t)?;
                let out = var.as_tensor().clone();
                let mut data = vm.data().lock().map_err(|_| Error::InvalidInput("VarMap lock poisoned".into()))?;
                data.insert(key.to_string(), var);
                out
            }
            _ => t,
        };
        if let Some(p) = self.progress {
            if let Ok(mut l) = self.loaded.lock() {
                l.0 += (t.elem_count() * self.dtype.size_in_bytes()) as u64;
                p(l.0, l.1);
            }
        }
        Ok(t)
    }

    /// Whether the checkpoint has `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.files.contains(key)
    }

    /// Loads a linear layer `{prefix}.weight` (out, in) and, when `bias`, `{prefix}.bias`.
    pub fn linear(&self, prefix: &str, in_dim: usize, out_dim: usize, bias: bool) -> Result<Linear> {
        let w = self.get(&format!("{prefix}.weight"), &[out_dim, in_dim])?;
        let b = if bias { Some(self.get(&format!("{prefix}.bias"), &[out_dim])?) } else { None };
        Linear::new(w, b, !self.is_trainable(&format!("{prefix}.weight")))
    }

    /// Whether weights are registered as trainable variables.
    pub fn trainable(&self) -> bool {
        self.varmap.is_some()
    }
}

/// An extra term a trainer adds to a linear layer's output: y = x·Wᵀ + b + δ(x).
///
/// This is the seam LoRA plugs into (the trainer implements it; this crate knows nothing of
/// training): the base weight stays whatever [`Model::load`](crate::Model::load) made it (a plain
/// tensor when not `trainable`, so it never gets a gradient buffer), and only the adapter's own
/// parameters can be trained. An adapter that returns `None` is switched off, which turns the
/// model back into the base model (the DPO reference) without a second copy of the weights.
pub trait LinearAdapter: Send + Sync + std::fmt::Debug {
    /// δ(x) for a (rows, in) input, shaped (rows, out); `None` when switched off.
    fn delta(&self, x: &Tensor) -> candle_core::Result<Option<Tensor>>;
}

/// A linear layer y = x Wᵀ + b over the last dimension, plus an optional [`LinearAdapter`].
///
/// Frozen (inference) weights are stored transposed and contiguous, (in, out): the CPU GEMM reads
/// a contiguous right-hand side markedly faster, which matters most for decoding (M = 1).
/// Trainable weights keep the checkpoint's (out, in) layout, so the Vars match the file.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
    transposed: bool,
    adapter: Option<Arc<dyn LinearAdapter>>,
}

impl Linear {
    /// `weight` is (out, in) as in the checkpoint; `store_transposed` keeps a contiguous (in, out)
    /// copy instead.
    pub fn new(weight: Tensor, bias: Option<Tensor>, store_transposed: bool) -> Result<Self> {
        let weight = if store_transposed { weight.t()?.contiguous()? } else { weight };
        Ok(Linear { weight, bias, transposed: store_transposed, adapter: None })
    }

    /// Output width.
    pub fn out_dim(&self) -> Result<usize> {
        Ok(if self.transposed { self.weight.dim(1)? } else { self.weight.dim(0)? })
    }

    /// Input width.
    pub fn in_dim(&self) -> Result<usize> {
        Ok(if self.transposed { self.weight.dim(0)? } else { self.weight.dim(1)? })
    }

    /// The weight as stored (see the type's docs for the layout). Use it to check which tensors
    /// received gradients; [`Linear::weight_out_in`] gives the checkpoint's orientation.
    pub fn stored_weight(&self) -> &Tensor {
        &self.weight
    }

    /// The weight in the checkpoint's (out, in) orientation (a view when stored transposed).
    pub fn weight_out_in(&self) -> Result<Tensor> {
        Ok(if self.transposed { self.weight.t()? } else { self.weight.clone() })
    }

    /// The bias, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// Attaches (or, with `None`, removes) an adapter.
    pub fn set_adapter(&mut self, adapter: Option<Arc<dyn LinearAdapter>>) {
        self.adapter = adapter;
    }

    /// Whether an adapter is attached (switched on or not).
    pub fn has_adapter(&self) -> bool {
        self.adapter.is_some()
    }

    /// (…, in) → (…, out), as one 2-D GEMM.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let Some((&in_dim, lead)) = dims.split_last() else {
            return Err(Error::InvalidInput("linear layer applied to a scalar".into()));
        };
        let rows: usize = lead.iter().product();
        let x2 = if x.is_contiguous() { x.reshape((rows, in_dim))? } else { x.contiguous()?.reshape((rows, in_dim))? };
        let w = if self.transposed { self.weight.clone() } else { self.weight.t()? };
        let small = rows <= crate::gemv::MAX_ROWS
            && x2.device().is_cpu()
            && x2.dtype() == DType::F32
            && self.weight.dtype() == DType::F32
            && self.weight.is_contiguous()
            && !x2.track_op()
            && !self.weight.track_op();
        let y = if small {
            // A decode step: one pass over the weight instead of a packed GEMM (`gemv.rs`).
            x2.apply_op2_no_bwd(&self.weight, &crate::gemv::SmallRowsMatmul { w_out_in: !self.transposed })?
        } else if x2.track_op() && !self.weight.track_op() && x2.device().is_cpu() {
            // Training through a frozen layer (LoRA): only the input needs a gradient.
            x2.apply_op1(FrozenMatmul { w })?
        } else {
            x2.matmul(&w)?
        };
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let y = match self.adapter.as_ref().map(|a| a.delta(&x2)).transpose()?.flatten() {
            Some(d) => {
                let d = d.to_dtype(y.dtype())?;
                (y + d)?
            }
            None => y,
        };
        let mut out = lead.to_vec();
        out.push(self.out_dim()?);
        Ok(y.reshape(out)?)
    }
}

/// y = x·W for a frozen W (a plain tensor) whose backward returns the input's gradient only.
///
/// candle's own matmul backward also computes a gradient for the right-hand side even when it
/// is a constant, and keeps it in the `GradStore`: a weight-sized buffer per frozen layer (the
/// `lm_head` alone is vocab × hidden) and a third of the backward GEMMs, for a weight that can
/// never be updated. CPU only; other devices use the plain matmul.
struct FrozenMatmul {
    /// (in, out), possibly a transposed view.
    w: Tensor,
}

impl candle_core::CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(
        &self,
        s: &candle_core::CpuStorage,
        l: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use candle_core::CpuStorage as C;
        let (a, b) = l
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::msg("frozen-matmul: the input must be contiguous"))?;
        let cpu = Device::Cpu;
        let x = match s {
            C::F32(v) => Tensor::from_slice(&v[a..b], l.shape(), &cpu)?,
            C::F64(v) => Tensor::from_slice(&v[a..b], l.shape(), &cpu)?,
            C::F16(v) => Tensor::from_slice(&v[a..b], l.shape(), &cpu)?,
            C::BF16(v) => Tensor::from_slice(&v[a..b], l.shape(), &cpu)?,
            _ => return Err(candle_core::Error::msg("frozen-matmul: unsupported dtype")),
        };
        let y = x.matmul(&self.w)?.contiguous()?;
        let shape = y.shape().clone();
        let (st, lay) = y.storage_and_layout();
        match (&*st, lay.contiguous_offsets()) {
            (candle_core::Storage::Cpu(c), Some((0, e))) if e == shape.elem_count() => Ok((c.clone(), shape)),
            _ => Err(candle_core::Error::msg("frozen-matmul: unexpected output layout")),
        }
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad_res.matmul(&self.w.t()?)?))
    }
}

/// Bytes of memory available for weights on `device`: `MemAvailable` from `/proc/meminfo` on the
/// CPU; `None` when unknown (then the caller's number, if any, is used).
pub fn available_memory_bytes(device: &Device) -> Option<u64> {
    if !device.is_cpu() {
        return None;
    }
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines()
        .find(|l| l.starts_with("MemAvailable:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// Parameter count implied by the config (the tensors that are actually loaded: CLIP layers
/// past the selected one and its post-layernorm are skipped).
pub fn parameter_count(cfg: &ModelConfig) -> u64 {
    let t = &cfg.text;
    let (h, i, v) = (t.hidden_size as u64, t.intermediate_size as u64, t.vocab_size as u64);
    let (q, kv) = ((t.num_attention_heads * t.head_dim) as u64, (t.num_key_value_heads * t.head_dim) as u64);
    let mut layer = h * q + 2 * h * kv + q * h + 3 * h * i + 2 * h;
    if t.attention_bias {
        layer += q + 2 * kv;
    }
    let mut text = v * h + t.num_hidden_layers as u64 * layer + h;
    if !t.tie_word_embeddings {
        text += v * h;
    }
    let vc = &cfg.vision;
    let (hv, iv) = (vc.hidden_size as u64, vc.intermediate_size as u64);
    let np = vc.num_patches() as u64;
    let p = vc.patch_size as u64;
    let vlayer = 4 * (hv * hv + hv) + hv * iv + iv + iv * hv + hv + 4 * hv;
    let vision = vc.num_channels as u64 * p * p * hv + hv + (np + 1) * hv + 2 * hv + cfg.vision_layers_used() as u64 * vlayer;
    let proj = cfg.mm_hidden_size as u64 * h + h + h * h + h;
    text + vision + proj
}

/// Weight memory in bytes at `dtype`.
pub fn weight_bytes(cfg: &ModelConfig, dtype: DType) -> u64 {
    parameter_count(cfg) * dtype.size_in_bytes() as u64
}
