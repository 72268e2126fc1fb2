//! The CLIP ViT vision tower, run up to the selected hidden state (LLaVA uses
//! `hidden_states[-2]`: the output of the second-to-last layer; the last layer and
//! `post_layernorm` are not loaded).
//!
//! Only differentiable ops are used (`layer_norm_slow`, `ops::softmax`), so the tower can be
//! fine-tuned; it is a small part of the cost next to the decoder.

use candle_core::Tensor;
use crate::loader::Linear;

use crate::config::{VisionAct, VisionConfig};
use crate::error::Result;
use crate::loader::Params;

#[derive(Debug, Clone)]
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    fn load(p: &Params, prefix: &str, dim: usize, eps: f64) -> Result<Self> {
        Ok(LayerNorm {
            weight: p.get(&format!("{prefix}.weight"), &[dim])?,
            bias: p.get(&format!("{prefix}.bias"), &[dim])?,
            eps: eps as f32,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        crate::fused::layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

#[derive(Debug, Clone)]
struct EncoderLayer {
    layer_norm1: LayerNorm,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    heads: usize,
    act: VisionAct,
}

impl EncoderLayer {
    fn load(p: &Params, prefix: &str, cfg: &VisionConfig) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let a = format!("{prefix}.self_attn");
        Ok(EncoderLayer {
            layer_norm1: LayerNorm::load(p, &format!("{prefix}.layer_norm1"), h, cfg.layer_norm_eps)?,
            q_proj: p.linear(&format!("{a}.q_proj"), h, h, true)?,
            k_proj: p.linear(&format!("{a}.k_proj"), h, h, true)?,
            v_proj: p.linear(&format!("{a}.v_proj"), h, h, true)?,
            out_proj: p.linear(&format!("{a}.out_proj"), h, h, true)?,
            layer_norm2: LayerNorm::load(p, &format!("{prefix}.layer_norm2"), h, cfg.layer_norm_eps)?,
            fc1: p.linear(&format!("{prefix}.mlp.fc1"), h, i, true)?,
            fc2: p.linear(&format!("{prefix}.mlp.fc2"), i, h, true)?,
            heads: cfg.num_attention_heads,
            act: cfg.hidden_act,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, h) = x.dims3()?;
        let hd = h / self.heads;
        let y = self.layer_norm1.forward(x)?;
        let split = |l: &Linear| -> Result<Tensor> {
            Ok(l.forward(&y)?.reshape((b, t, self.heads, hd))?.transpose(1, 2)?.contiguous()?)
        };
        let (q, k, v) = (split(&self.q_proj)?, split(&self.k_proj)?, split(&self.v_proj)?);
        // Scaling q (t × d) rather than the scores (t × t) is the same up to rounding.
        let scores = (q * (hd as f64).powf(-0.5))?.matmul(&k.t()?)?;
        let att = crate::fused::softmax_last_dim(&scores)?.matmul(&v)?;
        let att = att.transpose(1, 2)?.reshape((b, t, h))?;
        let x = (x + self.out_proj.forward(&att)?)?;
        let y = self.fc1.forward(&self.layer_norm2.forward(&x)?)?;
        let y = match self.act {
            VisionAct::QuickGelu => crate::fused::quick_gelu(&y)?,
            VisionAct::Gelu => y.gelu_erf()?,
        };
        Ok((x + self.fc2.forward(&y)?)?)
    }
}

/// CLIP vision transformer (`vision_model.*`), truncated after the selected layer.
#[derive(Debug, Clone)]
pub struct ClipVision {
    patch_embedding: Tensor,
    class_embedding: Tensor,
    position_embedding: Tensor,
    pre_layrnorm: LayerNorm,
    layers: Vec<EncoderLayer>,
    patch_size: usize,
    image_size: usize,
}

impl ClipVision {
    /// Loads the embeddings, `pre_layrnorm` and the first `layers_used` encoder layers from
    /// `{prefix}` (ending in `vision_model.`).
    pub fn load(p: &Params, prefix: &str, cfg: &VisionConfig, layers_used: usize) -> Result<Self> {
        let h = cfg.hidden_size;
        let ps = cfg.patch_size;
        let layers = (0..layers_used)
            .map(|i| EncoderLayer::load(p, &format!("{prefix}encoder.layers.{i}"), cfg))
            .collect::<Result<Vec<_>>>()?;
        Ok(ClipVision {
            patch_embedding: p.get(&format!("{prefix}embeddings.patch_embedding.weight"), &[h, cfg.num_channels, ps, ps])?,
            class_embedding: p.get(&format!("{prefix}embeddings.class_embedding"), &[h])?,
            position_embedding: p.get(&format!("{prefix}embeddings.position_embedding.weight"), &[cfg.num_patches() + 1, h])?,
            pre_layrnorm: LayerNorm::load(p, &format!("{prefix}pre_layrnorm"), h, cfg.layer_norm_eps)?,
            layers,
            patch_size: ps,
            image_size: cfg.image_size,
        })
    }

    /// The selected hidden state, (N, 1 + patches, hidden), CLS first.
    pub fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let (n, _c, hgt, wid) = pixel_values.dims4()?;
        if hgt != self.image_size || wid != self.image_size {
            return Err(crate::Error::InvalidInput(format!(
                "pixel values are {hgt}x{wid}, the vision tower expects {0}x{0}",
                self.image_size
            )));
        }
        let pixel_values = pixel_values.to_dtype(self.patch_embedding.dtype())?;
        let patches = pixel_values.conv2d(&self.patch_embedding, 0, self.patch_size, 1, 1)?;
        let hidden = self.class_embedding.dim(0)?;
        let patches = patches.flatten_from(2)?.transpose(1, 2)?; // (N, P, H), row-major grid
        let cls = self.class_embedding.reshape((1, 1, hidden))?.broadcast_as((n, 1, hidden))?;
        let x = Tensor::cat(&[&cls, &patches], 1)?;
        let x = x.broadcast_add(&self.position_embedding.unsqueeze(0)?)?;
        let mut x = self.pre_layrnorm.forward(&x)?;
        for layer in &self.layers {
            x = layer.forward(&x)?;
        }
        Ok(x)
    }
}
