//! The `mlp2x_gelu` multimodal projector: Linear → GELU (exact erf) → Linear.

use candle_core::Tensor;
use crate::loader::Linear;

use crate::error::Result;
use crate::loader::Params;

/// LLaVA `mm_projector` / llava-hf `multi_modal_projector`.
#[derive(Debug, Clone)]
pub struct Projector {
    linear_1: Linear,
    linear_2: Linear,
}

impl Projector {
    /// Loads the two linears named `names[0]` and `names[1]` (without `.weight`).
    pub fn load(p: &Params, names: &[String; 2], mm_hidden: usize, hidden: usize) -> Result<Self> {
        Ok(Projector {
            linear_1: p.linear(&names[0], mm_hidden, hidden, true)?,
            linear_2: p.linear(&names[1], hidden, hidden, true)?,
        })
    }

    /// (…, mm_hidden) → (…, hidden).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.linear_2.forward(&self.linear_1.forward(x)?.gelu_erf()?)
    }
}
