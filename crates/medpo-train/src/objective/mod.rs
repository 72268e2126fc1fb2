//! Preference objectives: one enum, one table of names, one loss function.
//!
//! Every objective reads sequence log-probabilities (sums over the completion tokens, EOS
//! included) of the policy and, where it needs one, of the reference model, and produces
//! per-sample loss terms as candle tensors, so gradients flow back into whatever produced the
//! policy log-probs. [`compute_loss`] is the only entry point: a shared prefix validates the
//! config, then a single dispatch on the objective hands it to its family's file, which
//! computes that objective's per-sample losses and rewards, and a shared tail reduces and
//! combines them with `loss_weights`, as TRL's `DPOTrainer._compute_loss` does. The families:
//! [`dpo`] (TRL's `DPOTrainer` loss types, SFT, cDPO, DPO+NLL), [`reference_free`] (SimPO, CPO,
//! ORPO), [`unpaired`] (KTO, APO-zero unpaired) and [`medical`] (CoPO, anchor, mDPO, MMedPO).
//!
//! Names: [`OBJECTIVES`] is the single table mapping each [`Objective`] to its `loss_type`
//! string. It drives `FromStr`, `Display` and serde. TRL's strings are used where TRL has the
//! objective (TRL 1.16 `DPOTrainer` loss types, KTO's `kto`/`apo_zero_unpaired`); the others
//! (`cdpo`, `simpo`, `cpo`, `orpo`, `dpo_nll`, `copo`, `anchor`, `mdpo`, `mmedpo`) are ours.
//!
//! Values are checked against `shared/fixtures/v1/dpo_golden.json` (TRL 1.16's own code and
//! the seed's formulas) by the table-driven test at the bottom of this file.

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::metrics::{self, Metrics};

mod dpo;
mod medical;
mod reference_free;
mod unpaired;

/// A preference objective (one `loss_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Objective {
    /// DPO (Rafailov et al. 2023, arXiv 2305.18290, Eq. 7): −log σ(β·h).
    Sigmoid,
    /// SLiC hinge (Zhao et al. 2023, arXiv 2305.10425, Eq. 10 with δ = 1/β): relu(1 − β·h).
    Hinge,
    /// IPO (Azar et al. 2023, arXiv 2310.12036, Eq. 17), length-normalised as TRL does.
    Ipo,
    /// EXO, pairwise (Ji et al. 2024, arXiv 2402.00856, Eq. 16).
    ExoPair,
    /// NCA, pairwise (Chen et al. 2024, arXiv 2402.05369, Eq. 12).
    NcaPair,
    /// Robust DPO (Chowdhury et al. 2024, arXiv 2403.00409, Eq. 21).
    Robust,
    /// BCO, pairwise (Jung et al. 2024, arXiv 2404.04656), without the running reward shift (TRL 1.16).
    BcoPair,
    /// SPPO with hard labels (Wu et al. 2024, arXiv 2405.00675, Eq. 4.7).
    SppoHard,
    /// AOT, paired (Melnyk et al. 2024, arXiv 2406.05882): sorted margins, batch-coupled.
    Aot,
    /// AOT, unpaired (same paper): chosen and rejected log-ratios sorted separately.
    AotUnpaired,
    /// APO-zero (D'Oosterlinck et al. 2024, arXiv 2408.06266, Eq. 6).
    ApoZero,
    /// APO-down (same paper, Eq. 7).
    ApoDown,
    /// DiscoPOP, log-ratio modulated loss (Lu et al. 2024, arXiv 2406.08414, Eq. 5).
    Discopop,
    /// NLL of the chosen completions, token mean over the batch (TRL's `sft`).
    Sft,
    /// Sigmoid DPO on length-normalised log-ratios (TRL's `sigmoid_norm`; keeps the reference).
    SigmoidNorm,
    /// Conservative DPO (Mitchell 2023, "A note on DPO with noisy preferences"): label smoothing ε.
    Cdpo,
    /// DPO + α·per-token NLL of the chosen answer (Pang et al. 2024, IRPO, arXiv 2404.19733,
    /// Eq. 1; med-vlm-dpo's per-sample form).
    DpoNll,
    /// CoPO, the conditional image term of mDPO (Wang et al. 2024, arXiv 2406.11839, Eq. 3):
    /// the chosen text on the clean vs the corrupted image.
    Copo,
    /// Reward anchor of mDPO (same paper, Eq. 4): −log σ(β·(pc − rc) − δ).
    Anchor,
    /// mDPO = DPO + CoPO + anchor (same paper, Eq. 5), using the corrupted image for real.
    Mdpo,
    /// MMedPO (Zhu et al. 2024, arXiv 2412.06141, Eq. 6): weight_i × DPO with the rejected text
    /// on the noised image.
    Mmedpo,
    /// SimPO (Meng et al. 2024, arXiv 2405.14734, Eq. 6), as TRL's CPO trainer computes it.
    Simpo,
    /// CPO (Xu et al. 2024, arXiv 2401.08417, Eq. 3 + NLL), as TRL's CPO trainer computes it.
    Cpo,
    /// ORPO odds-ratio term (Hong et al. 2024, arXiv 2403.07691, Eq. 6–7).
    Orpo,
    /// KTO (Ethayarajh et al. 2024, arXiv 2402.01306, Eq. 8), unpaired.
    Kto,
    /// APO-zero for unpaired data (D'Oosterlinck et al. 2024), KTO trainer's `apo_zero_unpaired`.
    ApoZeroUnpaired,
}

/// Which trainer of TRL (or which paper) defines an objective.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// TRL 1.16 `DPOTrainer` loss types.
    TrlDpo,
    /// TRL's CPO trainer (SimPO, CPO) or ORPO trainer.
    TrlCpoOrpo,
    /// TRL's KTO trainer.
    TrlKto,
    /// Own formulas: cDPO and the seed's medical objectives.
    Own,
}

/// One row of the name table.
#[derive(Clone, Copy, Debug)]
pub struct ObjectiveInfo {
    pub objective: Objective,
    /// The `loss_type` string.
    pub name: &'static str,
    pub family: Family,
    /// Whether it needs reference-model log-probs.
    pub needs_reference: bool,
}

macro_rules! row {
    ($o:ident, $n:literal, $f:ident, $r:literal) => {
        ObjectiveInfo {
            objective: Objective::$o,
            name: $n,
            family: Family::$f,
            needs_reference: $r,
        }
    };
}

/// The single name table: serialisation, parsing and display all read it.
pub const OBJECTIVES: &[ObjectiveInfo] = &[
    row!(Sigmoid, "sigmoid", TrlDpo, true),
    row!(Hinge, "hinge", TrlDpo, true),
    row!(Ipo, "ipo", TrlDpo, true),
    row!(ExoPair, "exo_pair", TrlDpo, true),
    row!(NcaPair, "nca_pair", TrlDpo, true),
    row!(Robust, "robust", TrlDpo, true),
    row!(BcoPair, "bco_pair", TrlDpo, true),
    row!(SppoHard, "sppo_hard", TrlDpo, true),
    row!(Aot, "aot", TrlDpo, true),
    row!(AotUnpaired, "aot_unpaired", TrlDpo, true),
    row!(ApoZero, "apo_zero", TrlDpo, true),
    row!(ApoDown, "apo_down", TrlDpo, true),
    row!(Discopop, "discopop", TrlDpo, true),
    row!(Sft, "sft", TrlDpo, false),
    row!(SigmoidNorm, "sigmoid_norm", TrlDpo, true),
    row!(Cdpo, "cdpo", Own, true),
    row!(DpoNll, "dpo_nll", Own, true),
    row!(Copo, "copo", Own, true),
    row!(Anchor, "anchor", Own, true),
    row!(Mdpo, "mdpo", Own, true),
    row!(Mmedpo, "mmedpo", Own, true),
    row!(Simpo, "simpo", TrlCpoOrpo, false),
    row!(Cpo, "cpo", TrlCpoOrpo, false),
    row!(Orpo, "orpo", TrlCpoOrpo, false),
    row!(Kto, "kto", TrlKto, true),
    row!(ApoZeroUnpaired, "apo_zero_unpaired", TrlKto, true),
];

impl Objective {
    /// This objective's row of [`OBJECTIVES`].
    pub fn info(self) -> &'static ObjectiveInfo {
        OBJECTIVES
            .iter()
            .find(|r| r.objective == self)
            .expect("every variant has a table row")
    }
    /// The `loss_type` string.
    pub fn name(self) -> &'static str {
        self.info().name
    }
    /// Every valid name, comma-separated (for error messages and `--help`).
    pub fn valid_names() -> String {
        OBJECTIVES
            .iter()
            .map(|r| r.name)
            .collect::<Vec<_>>()
            .join(", ")
    }
    /// Whether the pairwise logit of this objective goes through `f_divergence_type`.
    fn uses_f_divergence(self) -> bool {
        matches!(
            self,
            Objective::Sigmoid
                | Objective::Hinge
                | Objective::ExoPair
                | Objective::Robust
                | Objective::Discopop
                | Objective::Cdpo
                | Objective::DpoNll
        )
    }
}

impl fmt::Display for Objective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Objective {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        OBJECTIVES
            .iter()
            .find(|r| r.name == s)
            .map(|r| r.objective)
            .ok_or_else(|| Error::UnknownObjective {
                name: s.to_string(),
                valid: Objective::valid_names(),
            })
    }
}

impl Serialize for Objective {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Objective {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// TRL's `f_divergence_type`: which f-divergence regularises the policy (Wang et al. 2023,
/// "Beyond Reverse KL", arXiv 2309.16240, Table 1). It replaces the log-ratio x = log π/π_ref in
/// the pairwise logit by f′(eˣ).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FDivergence {
    /// Standard DPO: h = x_c − x_r.
    #[default]
    ReverseKl,
    /// f′ = 1 − e^{−x} (up to a constant).
    ForwardKl,
    /// f′ = log 2 + log σ(x).
    JsDivergence,
    /// f′ = (1 − e^{−α·x})/α, with the exponent capped at 80 as TRL does.
    AlphaDivergence,
}

/// One entry or a list (TOML/JSON accept `loss_type = "sigmoid"` and `loss_type = ["sigmoid", "sft"]`).
/// Names are parsed after the shape is known, so an unknown name keeps its message.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<Objective>, D::Error> {
    let names = match OneOrMany::deserialize(d)? {
        OneOrMany::One(o) => vec![o],
        OneOrMany::Many(v) => v,
    };
    names
        .iter()
        .map(|n| n.parse().map_err(serde::de::Error::custom))
        .collect()
}

/// The loss settings, with TRL's field names and defaults (DPOConfig / CPOConfig / KTOConfig).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LossConfig {
    /// Objectives to combine (TRL: `loss_type`, a string or a list).
    #[serde(deserialize_with = "one_or_many")]
    pub loss_type: Vec<Objective>,
    /// One weight per `loss_type` entry; all 1 when absent.
    pub loss_weights: Option<Vec<f64>>,
    /// β, the inverse temperature of every reward (0.1 in the seed and in TRL).
    pub beta: f64,
    /// ε for `robust`, `exo_pair` (0 means TRL's 1e-3), `aot`, `aot_unpaired`, `cdpo`, `simpo`, `cpo`.
    pub label_smoothing: f64,
    /// f-divergence for the pairwise logit of `sigmoid`, `hinge`, `exo_pair`, `robust`,
    /// `discopop`, `cdpo` and `dpo_nll`.
    pub f_divergence_type: FDivergence,
    /// α of `alpha_divergence` (TRL's default 1.0).
    pub f_alpha_divergence_coef: f64,
    /// τ of `discopop` (TRL's default 0.05).
    pub discopop_tau: f64,
    /// γ of `simpo` (TRL's default 0.5).
    pub simpo_gamma: f64,
    /// Weight of the NLL term of `simpo`/`cpo` (TRL's CPOConfig default 1.0).
    pub cpo_alpha: f64,
    /// α of `dpo_nll`'s per-token NLL (the seed's `--sft_weight 1.0`).
    pub sft_weight: f64,
    /// δ of `anchor` and of mDPO's anchor term (0 in the seed).
    pub anchor_delta: f64,
    /// KTO: weight of desirable examples.
    pub desirable_weight: f64,
    /// KTO: weight of undesirable examples.
    pub undesirable_weight: f64,
}

impl Default for LossConfig {
    fn default() -> Self {
        LossConfig {
            loss_type: vec![Objective::Sigmoid],
            loss_weights: None,
            beta: 0.1,
            label_smoothing: 0.0,
            f_divergence_type: FDivergence::ReverseKl,
            f_alpha_divergence_coef: 1.0,
            discopop_tau: 0.05,
            simpo_gamma: 0.5,
            cpo_alpha: 1.0,
            sft_weight: 1.0,
            anchor_delta: 0.0,
            desirable_weight: 1.0,
            undesirable_weight: 1.0,
        }
    }
}

impl LossConfig {
    /// A config with one objective and TRL's defaults otherwise.
    pub fn new(objective: Objective, beta: f64) -> Self {
        LossConfig {
            loss_type: vec![objective],
            beta,
            ..Default::default()
        }
    }

    /// Checks every field once; errors name the key and the value.
    pub fn validate(&self) -> Result<()> {
        let bad = |key, value: String, reason: &str| {
            Err(Error::Config {
                key,
                value,
                reason: reason.into(),
            })
        };
        if self.loss_type.is_empty() {
            return bad(
                "loss_type",
                "[]".into(),
                &format!("give at least one of: {}", Objective::valid_names()),
            );
        }
        if let Some(w) = &self.loss_weights {
            if w.len() != self.loss_type.len() {
                return Err(Error::LossWeightsMismatch {
                    loss_types: self.loss_type.len(),
                    loss_weights: w.len(),
                });
            }
            if let Some(x) = w.iter().find(|x| !x.is_finite()) {
                return bad("loss_weights", x.to_string(), "weights must be finite");
            }
        }
        if !(self.beta.is_finite() && self.beta > 0.0) {
            return bad("beta", self.beta.to_string(), "must be a positive number");
        }
        if !(0.0..0.5).contains(&self.label_smoothing) {
            return bad(
                "label_smoothing",
                self.label_smoothing.to_string(),
                "must be in [0, 0.5)",
            );
        }
        if self.discopop_tau.is_nan() || self.discopop_tau <= 0.0 {
            return bad(
                "discopop_tau",
                self.discopop_tau.to_string(),
                "must be positive",
            );
        }
        if self.f_divergence_type == FDivergence::AlphaDivergence
            && (self.f_alpha_divergence_coef.is_nan() || self.f_alpha_divergence_coef <= 0.0)
        {
            return bad(
                "f_alpha_divergence_coef",
                self.f_alpha_divergence_coef.to_string(),
                "must be positive",
            );
        }
        if self.f_divergence_type != FDivergence::ReverseKl {
            if let Some(o) = self.loss_type.iter().find(|o| !o.uses_f_divergence()) {
                return bad(
                    "f_divergence_type",
                    format!("{:?} with loss_type `{o}`", self.f_divergence_type),
                    "only sigmoid, hinge, exo_pair, robust, discopop, cdpo and dpo_nll read it",
                );
            }
        }
        Ok(())
    }

    /// The weight of each `loss_type` entry.
    pub fn weights(&self) -> Vec<f64> {
        self.loss_weights
            .clone()
            .unwrap_or_else(|| vec![1.0; self.loss_type.len()])
    }
}

/// Unpaired examples for KTO-style objectives. Without it, KTO reads the paired batch's chosen
/// rows as desirable and its rejected rows as undesirable examples.
#[derive(Clone, Debug)]
pub struct UnpairedLogps {
    pub policy_desirable: Tensor,
    pub ref_desirable: Tensor,
    pub policy_undesirable: Tensor,
    pub ref_undesirable: Tensor,
}

/// Everything an objective may read, one entry per sample (shape `(B,)`), all in one dtype.
///
/// Log-probs are sums over the completion tokens, EOS included. Only `policy_*` carry gradients;
/// reference values should be detached (computed with adapters off or by a frozen copy).
#[derive(Clone, Debug, Default)]
pub struct PreferenceLogps {
    pub policy_chosen: Option<Tensor>,
    pub policy_rejected: Option<Tensor>,
    pub ref_chosen: Option<Tensor>,
    pub ref_rejected: Option<Tensor>,
    /// Completion token counts (EOS included), for `ipo`, `sigmoid_norm`, `sft`, `dpo_nll`,
    /// `simpo`, `cpo` and `orpo`.
    pub chosen_tokens: Option<Tensor>,
    pub rejected_tokens: Option<Tensor>,
    /// log π(chosen text | corrupted image), for `copo` and `mdpo`.
    pub policy_chosen_corrupt: Option<Tensor>,
    pub ref_chosen_corrupt: Option<Tensor>,
    /// log π(rejected text | noised image), for `mmedpo`.
    pub policy_rejected_noised: Option<Tensor>,
    pub ref_rejected_noised: Option<Tensor>,
    /// Per-sample clinical-relevance weight, for `mmedpo` (the seed's `weighted_score`).
    pub weight: Option<Tensor>,
    /// ORPO's NLL term (token-mean CE over the chosen prompt+completion), a scalar. When absent,
    /// ORPO uses the completion token mean −Σpc/Σn.
    pub nll_chosen: Option<Tensor>,
    /// KTO's KL pairs (policy and reference log-probs of mismatched completions).
    pub policy_kl: Option<Tensor>,
    pub ref_kl: Option<Tensor>,
    /// Unpaired examples for `kto`/`apo_zero_unpaired`.
    pub unpaired: Option<UnpairedLogps>,
}

impl PreferenceLogps {
    /// The four standard DPO inputs.
    pub fn paired(
        policy_chosen: Tensor,
        policy_rejected: Tensor,
        ref_chosen: Tensor,
        ref_rejected: Tensor,
    ) -> Self {
        PreferenceLogps {
            policy_chosen: Some(policy_chosen),
            policy_rejected: Some(policy_rejected),
            ref_chosen: Some(ref_chosen),
            ref_rejected: Some(ref_rejected),
            ..Default::default()
        }
    }
}

/// One objective's contribution.
#[derive(Clone, Debug)]
pub struct LossTerm {
    pub objective: Objective,
    /// Its `loss_weights` entry.
    pub weight: f64,
    /// Per-sample losses (per rank for `aot*`; desirable then undesirable for KTO). For `sft`
    /// this is each sample's own token-mean NLL; for `orpo` it is −β·log σ(log-odds).
    pub per_sample: Tensor,
    /// The batch loss of this term, before `weight`.
    pub loss: Tensor,
    /// Detached rewards this objective reports as `rewards/chosen` / `rewards/rejected`.
    pub chosen_rewards: Tensor,
    pub rejected_rewards: Tensor,
}

/// The result of [`compute_loss`].
#[derive(Clone, Debug)]
pub struct LossOutput {
    /// Σ_k weight_k · term_k.loss: the scalar to call `backward` on.
    pub loss: Tensor,
    pub terms: Vec<LossTerm>,
    /// Detached policy log-probs for the `logps/*` metrics.
    pub policy_chosen: Option<Tensor>,
    pub policy_rejected: Option<Tensor>,
    /// Reference log-probs, for the `ref_logps/*` metrics (when the objective reads them).
    pub ref_chosen: Option<Tensor>,
    pub ref_rejected: Option<Tensor>,
}

impl LossOutput {
    /// Σ_k weight_k · per_sample_k, when every term has one value per sample (TRL's loss of each
    /// sample as its own batch).
    pub fn per_sample(&self) -> Result<Tensor> {
        let mut acc: Option<Tensor> = None;
        for t in &self.terms {
            let x = (&t.per_sample * t.weight)?;
            acc = Some(match acc {
                None => x,
                Some(a) => (a + x)?,
            });
        }
        Ok(acc.expect("at least one term"))
    }

    /// Rewards of the first term (TRL reports β·(policy − ref) whatever the loss mix).
    pub fn rewards(&self) -> (&Tensor, &Tensor) {
        (
            &self.terms[0].chosen_rewards,
            &self.terms[0].rejected_rewards,
        )
    }

    /// TRL's metrics: `loss`, `rewards/{chosen,rejected,margins,accuracies}`, `logps/{chosen,rejected}`.
    pub fn metrics(&self) -> Result<Metrics> {
        let mut m = Metrics::new();
        m.insert(metrics::LOSS.into(), scalar(&self.loss)?);
        let (c, r) = self.rewards();
        let (mc, mr) = (mean(c)?, mean(r)?);
        m.insert(metrics::REWARDS_CHOSEN.into(), mc);
        m.insert(metrics::REWARDS_REJECTED.into(), mr);
        if c.dims() == r.dims() {
            m.insert(metrics::REWARDS_MARGINS.into(), mean(&(c - r)?)?);
            m.insert(
                metrics::REWARDS_ACCURACIES.into(),
                mean(&c.gt(r)?.to_dtype(DType::F64)?)?,
            );
        } else {
            m.insert(metrics::REWARDS_MARGINS.into(), mc - mr);
        }
        if let Some(p) = &self.policy_chosen {
            m.insert(metrics::LOGPS_CHOSEN.into(), mean(p)?);
        }
        if let Some(p) = &self.policy_rejected {
            m.insert(metrics::LOGPS_REJECTED.into(), mean(p)?);
        }
        if let Some(p) = &self.ref_chosen {
            m.insert(metrics::REF_LOGPS_CHOSEN.into(), mean(p)?);
        }
        if let Some(p) = &self.ref_rejected {
            m.insert(metrics::REF_LOGPS_REJECTED.into(), mean(p)?);
        }
        Ok(m)
    }
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

fn mean(t: &Tensor) -> Result<f64> {
    scalar(&t.to_dtype(DType::F64)?.mean_all()?)
}

// ------------------------------------------------------------------------------ numerics
//
// Every kinked form is avoided: at step 0 the policy equals the reference, z = 0 exactly, and
// candle's subgradients (relu′(0) = 1, abs′(0) = 1, max ties split 0.5) would give the wrong
// gradient there (shared/notes/stack.md). Branches are chosen with `where_cond`, and each branch
// is finite everywhere so no NaN leaks through the masked side in the backward pass.

/// log(1 + x) for x > −1, accurate for tiny x (Kahan's trick: log(u)·x/(u − 1), u = 1 + x).
pub fn log1p(x: &Tensor) -> Result<Tensor> {
    let u = (x + 1.0)?;
    let d = (&u - 1.0)?;
    let exact = d.eq(0.0)?;
    let safe_d = exact.where_cond(&d.ones_like()?, &d)?;
    let general = ((u.log()? * x)? / safe_d)?;
    Ok(exact.where_cond(x, &general)?)
}

/// log σ(z), stable for any z, with the true derivative σ(−z) at z = 0.
pub fn log_sigmoid(z: &Tensor) -> Result<Tensor> {
    let pos = z.ge(0.0)?;
    let zero = z.zeros_like()?;
    let zp = pos.where_cond(z, &zero)?;
    let zn = pos.where_cond(&zero, z)?;
    let a = log1p(&zp.neg()?.exp()?)?.neg()?; // z ≥ 0: −log(1 + e^{−z})
    let b = (&zn - log1p(&zn.exp()?)?)?; // z < 0: z − log(1 + e^{z})
    Ok(pos.where_cond(&a, &b)?)
}

/// σ(z) = exp(log σ(z)).
pub fn sigmoid(z: &Tensor) -> Result<Tensor> {
    Ok(log_sigmoid(z)?.exp()?)
}

/// log(1 − eˣ) for x < 0.
fn log1m_exp(x: &Tensor) -> Result<Tensor> {
    log1p(&x.exp()?.neg()?)
}

/// −(1 − ε)·log σ(z) − ε·log σ(−z): the label-smoothed sigmoid loss.
fn smoothed_sigmoid_loss(z: &Tensor, eps: f64) -> Result<Tensor> {
    let pos = log_sigmoid(z)?;
    if eps == 0.0 {
        return Ok(pos.neg()?);
    }
    Ok(((pos * -(1.0 - eps))? - (log_sigmoid(&z.neg()?)? * eps)?)?)
}

/// The values of `t` sorted ascending, differentiably (gather by the sort permutation).
fn sorted(t: &Tensor) -> Result<Tensor> {
    let idx = t.arg_sort_last_dim(true)?;
    Ok(t.gather(&idx, 0)?)
}

fn req<'a>(t: &'a Option<Tensor>, o: Objective, input: &'static str) -> Result<&'a Tensor> {
    t.as_ref().ok_or(Error::MissingInput {
        objective: o.name(),
        input,
    })
}

/// f′ applied to a log-ratio, for the pairwise logit under `f_divergence_type`.
fn f_prime(cfg: &LossConfig, x: &Tensor) -> Result<Tensor> {
    Ok(match cfg.f_divergence_type {
        FDivergence::ReverseKl => x.clone(),
        FDivergence::ForwardKl => (x.neg()?.exp()?.neg()? + 1.0)?,
        FDivergence::JsDivergence => (log_sigmoid(x)? + std::f64::consts::LN_2)?,
        FDivergence::AlphaDivergence => {
            let a = cfg.f_alpha_divergence_coef;
            (((x * -a)?.minimum(80.0)?.exp()?.neg()? + 1.0)? / a)?
        }
    })
}

// ------------------------------------------------------------------------------ the loss

/// How a term's per-sample losses become its batch loss.
enum Reduce {
    Mean,
    Given(Tensor),
}

/// What one objective contributes: per-sample losses, their reduction, and the chosen and
/// rejected rewards it reports.
type Term = (Tensor, Reduce, (Tensor, Tensor));

/// The inputs of one objective on one batch. Each accessor fetches only what it is asked for
/// and names the missing input, so an objective demands exactly what it uses.
struct Inputs<'a> {
    cfg: &'a LossConfig,
    b: &'a PreferenceLogps,
    o: Objective,
}

impl Inputs<'_> {
    fn pc(&self) -> Result<&Tensor> {
        req(&self.b.policy_chosen, self.o, "policy_chosen")
    }
    fn pr(&self) -> Result<&Tensor> {
        req(&self.b.policy_rejected, self.o, "policy_rejected")
    }
    fn rc(&self) -> Result<&Tensor> {
        req(&self.b.ref_chosen, self.o, "ref_chosen")
    }
    fn rr(&self) -> Result<&Tensor> {
        req(&self.b.ref_rejected, self.o, "ref_rejected")
    }
    fn nc(&self) -> Result<&Tensor> {
        req(&self.b.chosen_tokens, self.o, "chosen_tokens")
    }
    fn nr(&self) -> Result<&Tensor> {
        req(&self.b.rejected_tokens, self.o, "rejected_tokens")
    }
    /// Log-ratio of the chosen side, x_c = pc − rc.
    fn xc(&self) -> Result<Tensor> {
        Ok((self.pc()? - self.rc()?)?)
    }
    /// Log-ratio of the rejected side, x_r = pr − rr.
    fn xr(&self) -> Result<Tensor> {
        Ok((self.pr()? - self.rr()?)?)
    }
    /// The DPO logit h = f′(x_c) − f′(x_r).
    fn h(&self) -> Result<Tensor> {
        Ok((f_prime(self.cfg, &self.xc()?)? - f_prime(self.cfg, &self.xr()?)?)?)
    }
    /// β·x_c and β·x_r, detached.
    fn dpo_rewards(&self) -> Result<(Tensor, Tensor)> {
        let beta = self.cfg.beta;
        Ok(((self.xc()? * beta)?.detach(), (self.xr()? * beta)?.detach()))
    }
    /// SFT's rewards: the DPO ones when the batch has the reference and rejected rows (SFT
    /// beside a DPO term); alone, SFT reads neither, and reports β·pc and 0.
    fn sft_rewards(&self) -> Result<(Tensor, Tensor)> {
        let b = self.b;
        if b.ref_chosen.is_some() && b.policy_rejected.is_some() && b.ref_rejected.is_some() {
            return self.dpo_rewards();
        }
        let pc = self.pc()?;
        Ok(((pc * self.cfg.beta)?.detach(), pc.zeros_like()?))
    }
    /// Token-mean NLL of the chosen completions over the whole batch: −Σpc / Σn.
    fn batch_nll(&self) -> Result<Tensor> {
        Ok((self.pc()?.sum_all()?.neg()? / self.nc()?.sum_all()?)?)
    }
}

/// Computes every configured objective on one batch and combines them with `loss_weights`.
pub fn compute_loss(cfg: &LossConfig, b: &PreferenceLogps) -> Result<LossOutput> {
    cfg.validate()?;
    let mut terms = Vec::with_capacity(cfg.loss_type.len());
    for (&o, w) in cfg.loss_type.iter().zip(cfg.weights()) {
        // TRL's single dispatch on `loss_type`, one file per loss family.
        let x = Inputs { cfg, b, o };
        let (per_sample, reduce, (chosen_rewards, rejected_rewards)) = match o {
            Objective::Copo | Objective::Anchor | Objective::Mdpo | Objective::Mmedpo => medical::term(o, &x)?,
            Objective::Simpo | Objective::Cpo | Objective::Orpo => reference_free::term(o, &x)?,
            Objective::Kto | Objective::ApoZeroUnpaired => unpaired::term(o, &x)?,
            _ => dpo::term(o, &x)?,
        };
        // Shared tail.
        let loss = match reduce {
            Reduce::Mean => per_sample.mean_all()?,
            Reduce::Given(t) => t,
        };
        terms.push(LossTerm {
            objective: o,
            weight: w,
            per_sample,
            loss,
            chosen_rewards,
            rejected_rewards,
        });
    }
    let mut loss: Option<Tensor> = None;
    for t in &terms {
        let x = (&t.loss * t.weight)?;
        loss = Some(match loss {
            None => x,
            Some(a) => (a + x)?,
        });
    }
    let kto_only = terms
        .iter()
        .all(|t| t.objective.info().family == Family::TrlKto)
        && b.unpaired.is_some();
    let (policy_chosen, policy_rejected) = if kto_only {
        let u = b.unpaired.as_ref().expect("checked");
        (
            Some(u.policy_desirable.detach()),
            Some(u.policy_undesirable.detach()),
        )
    } else {
        (
            b.policy_chosen.as_ref().map(Tensor::detach),
            b.policy_rejected.as_ref().map(Tensor::detach),
        )
    };
    Ok(LossOutput {
        loss: loss.expect("validated non-empty"),
        terms,
        policy_chosen,
        policy_rejected,
        ref_chosen: b.ref_chosen.as_ref().map(Tensor::detach),
        ref_rejected: b.ref_rejected.as_ref().map(Tensor::detach),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use serde_json::Value;

    /// `dpo_golden.json` read from the shared fixtures folder (never copied into the repo).
    pub(super) fn golden() -> Value {
        let path = crate::testutil::shared_dir().join("fixtures/v1/dpo_golden.json");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).expect("dpo_golden.json parses")
    }

    fn col(rows: &[&Value], key: &str, dtype: DType) -> Tensor {
        let v: Vec<f64> = rows
            .iter()
            .map(|r| r[key].as_f64().unwrap_or_else(|| panic!("row field {key}")))
            .collect();
        Tensor::new(v, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    }

    pub(super) fn batch_of(rows: &[&Value], dtype: DType) -> PreferenceLogps {
        let c = |k| Some(col(rows, k, dtype));
        PreferenceLogps {
            policy_chosen: c("policy_chosen_logps"),
            policy_rejected: c("policy_rejected_logps"),
            ref_chosen: c("ref_chosen_logps"),
            ref_rejected: c("ref_rejected_logps"),
            chosen_tokens: c("chosen_tokens"),
            rejected_tokens: c("rejected_tokens"),
            policy_chosen_corrupt: c("policy_chosen_corrupt_image_logps"),
            ref_chosen_corrupt: c("ref_chosen_corrupt_image_logps"),
            policy_rejected_noised: c("policy_rejected_noised_image_logps"),
            ref_rejected_noised: c("ref_rejected_noised_image_logps"),
            weight: c("weight"),
            ..Default::default()
        }
    }

    pub(super) fn vec_of(t: &Tensor) -> Vec<f64> {
        t.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap()
    }

    /// |got − want| ≤ tol·max(|want|, 1e-12·…): relative, with an absolute floor far below any
    /// golden value's magnitude except exact zeros.
    fn close(got: f64, want: f64, tol: Tol) -> bool {
        let d = (got - want).abs();
        match tol {
            Tol::Rel(t) => d <= t * want.abs() || d < 1e-300,
            Tol::RelFloor1(t) => d <= t * want.abs().max(1.0),
        }
    }

    /// Float64 goldens: purely relative. Float32 goldens: relative to max(|want|, 1), because
    /// TRL sums float32 per-token log-probs, whose rounding shows on near-cancelling rows
    /// (e.g. −33.4 − (−33.3)) at ~4e-7 absolute; check_fixtures.py uses the same floor.
    #[derive(Clone, Copy)]
    enum Tol {
        Rel(f64),
        RelFloor1(f64),
    }

    fn check(what: &str, got: &[f64], want: &Value, tol: Tol, failures: &mut Vec<String>) -> usize {
        let want: Vec<f64> = want
            .as_array()
            .unwrap_or_else(|| panic!("{what}: not an array"))
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            if !close(*g, *w, tol) {
                failures.push(format!(
                    "{what}[{i}]: got {g:e}, want {w:e}, rel {:e}",
                    (g - w).abs() / w.abs()
                ));
            }
        }
        want.len()
    }

    /// Maps a golden entry's key to our objective and config (the entry's `params` override).
    fn config_for(key: &str, entry: &Value) -> LossConfig {
        let base = key.split("_beta").next().unwrap();
        let objectives: Vec<Objective> = match base {
            "dpo_sigmoid_plus_sft_trl" => vec![Objective::Sigmoid, Objective::Sft],
            "dpo_mpo_combo" => vec![Objective::Sigmoid, Objective::BcoPair, Objective::Sft],
            "dpo_sigmoid_forward_kl"
            | "dpo_sigmoid_js_divergence"
            | "dpo_sigmoid_alpha_divergence" => vec![Objective::Sigmoid],
            "cdpo_label_smoothing" => vec![Objective::Cdpo],
            "dpo_nll_medvlm" => vec![Objective::DpoNll],
            "cpo_sigmoid" => vec![Objective::Cpo],
            "kto_apo_zero_unpaired" => vec![Objective::ApoZeroUnpaired],
            other => vec![other
                .strip_prefix("dpo_")
                .unwrap_or(other)
                .parse()
                .unwrap_or_else(|e| panic!("{key}: {e}"))],
        };
        let mut cfg = LossConfig {
            loss_type: objectives,
            ..Default::default()
        };
        let p = &entry["params"];
        let f = |k: &str| p.get(k).and_then(Value::as_f64);
        cfg.beta = f("beta").expect("beta");
        if let Some(x) = f("label_smoothing") {
            cfg.label_smoothing = x;
        }
        if let Some(x) = f("simpo_gamma") {
            cfg.simpo_gamma = x;
        }
        if let Some(x) = f("cpo_alpha") {
            cfg.cpo_alpha = x;
        }
        if let Some(x) = f("alpha") {
            cfg.sft_weight = x;
        }
        if let Some(x) = f("delta") {
            cfg.anchor_delta = x;
        }
        if let Some(x) = f("f_alpha_divergence_coef") {
            cfg.f_alpha_divergence_coef = x;
        }
        if let Some(x) = f("desirable_weight") {
            cfg.desirable_weight = x;
        }
        if let Some(x) = f("undesirable_weight") {
            cfg.undesirable_weight = x;
        }
        if let Some(w) = p.get("loss_weights") {
            cfg.loss_weights = Some(
                w.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect(),
            );
        }
        if let Some(fd) = p.get("f_divergence_type") {
            cfg.f_divergence_type = serde_json::from_value(fd.clone()).unwrap();
        }
        if base == "dpo_discopop" {
            cfg.discopop_tau = 0.05;
        }
        cfg
    }

    /// Every value of `shared/fixtures/v1/dpo_golden.json` (TRL 1.16's own code and the seed's
    /// formulas, float64), reproduced within 1e-6 relative; entries TRL computes in float32
    /// (`alpha_divergence`, ORPO) are computed in float32 and checked within 1e-5 (see [`Tol`]),
    /// per the fixtures README.
    #[test]
    fn golden_every_value() {
        let g = golden();
        let rows: Vec<&Value> = g["batch"].as_array().unwrap().iter().collect();
        let losses = g["losses"].as_object().unwrap();
        let mut failures = Vec::new();
        let mut unhandled = Vec::new();
        let mut checked = 0usize;
        let mut entries = 0usize;
        for (key, entry) in losses {
            let float32 = entry
                .get("dtype")
                .and_then(Value::as_str)
                .is_some_and(|d| d.starts_with("float32"))
                || entry["params"]
                    .get("dtype")
                    .and_then(Value::as_str)
                    .is_some_and(|d| d.starts_with("float32"));
            let tol = if float32 {
                Tol::RelFloor1(1e-5)
            } else {
                Tol::Rel(1e-6)
            };
            let used: Vec<&Value> = match entry.get("rows_used") {
                Some(ids) => {
                    let ids: Vec<&str> = ids
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_str().unwrap())
                        .collect();
                    rows.iter()
                        .copied()
                        .filter(|r| ids.contains(&r["id"].as_str().unwrap()))
                        .collect()
                }
                None => rows.clone(),
            };
            let cfg = config_for(key, entry);
            // Entries TRL computed in float32 are computed in float32 here too.
            let dtype = if float32 { DType::F32 } else { DType::F64 };
            let mut b = batch_of(&used, dtype);
            if let Some(n) = entry.get("nll_chosen_input").and_then(Value::as_f64) {
                b.nll_chosen = Some(
                    Tensor::new(n, &Device::Cpu)
                        .unwrap()
                        .to_dtype(dtype)
                        .unwrap(),
                );
            }
            if cfg.loss_type == [Objective::Kto] {
                let kl = &g["kto_kl_inputs"];
                let t = |k: &str| {
                    Tensor::new(
                        kl[k]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|x| x.as_f64().unwrap())
                            .collect::<Vec<_>>(),
                        &Device::Cpu,
                    )
                    .unwrap()
                };
                b.policy_kl = Some(t("policy_kl_logps"));
                b.ref_kl = Some(t("ref_kl_logps"));
            }
            let out = compute_loss(&cfg, &b).unwrap_or_else(|e| panic!("{key}: {e}"));
            let term = &out.terms[0];
            let mut n = 0;
            let mut cmp = |what: &str, got: Vec<f64>, want: &Value| {
                n += check(&format!("{key}.{what}"), &got, want, tol, &mut failures);
            };
            for (field, value) in entry.as_object().unwrap() {
                match field.as_str() {
                    "per_sample_loss" | "per_rank_loss" => {
                        cmp(field, vec_of(&term.per_sample), value)
                    }
                    "per_sample_or_term" => {
                        cmp(field, vec_of(&term.per_sample.neg().unwrap()), value)
                    }
                    "per_sample_loss_desirable" | "per_sample_loss_undesirable" => {
                        let all = vec_of(&term.per_sample);
                        let half = all.len() / 2;
                        let part =
                            if field.ends_with("_desirable") && !field.ends_with("undesirable") {
                                &all[..half]
                            } else {
                                &all[half..]
                            };
                        cmp(field, part.to_vec(), value)
                    }
                    "loss_of_each_sample_as_its_own_batch" => {
                        let v = if out.terms.len() == 1 {
                            vec_of(&term.per_sample)
                        } else {
                            vec_of(&out.per_sample().unwrap())
                        };
                        cmp(field, v, value)
                    }
                    "per_sample_dpo" | "per_sample_nll" | "per_sample_copo"
                    | "per_sample_anchor" => {
                        let part = field.trim_start_matches("per_sample_");
                        let mut c = LossConfig {
                            loss_type: vec![match part {
                                "dpo" => Objective::Sigmoid,
                                "copo" => Objective::Copo,
                                "anchor" => Objective::Anchor,
                                _ => Objective::Sft,
                            }],
                            ..cfg.clone()
                        };
                        c.loss_weights = None;
                        let o = compute_loss(&c, &b).unwrap();
                        cmp(field, vec_of(&o.terms[0].per_sample), value)
                    }
                    "chosen_rewards" => cmp(field, vec_of(out.rewards().0), value),
                    "rejected_rewards" => cmp(field, vec_of(out.rewards().1), value),
                    "batch_loss" | "per_rank_loss_mean" => cmp(
                        field,
                        vec![vec_of(&out.loss.unsqueeze(0).unwrap())[0]],
                        &Value::from(vec![value.clone()]),
                    ),
                    "nll_chosen_token_mean" => {
                        let c = LossConfig {
                            loss_type: vec![Objective::Sft],
                            loss_weights: None,
                            ..cfg.clone()
                        };
                        cmp(
                            field,
                            vec![
                                vec_of(&compute_loss(&c, &b).unwrap().loss.unsqueeze(0).unwrap())
                                    [0],
                            ],
                            &Value::from(vec![value.clone()]),
                        )
                    }
                    "sorted_delta" => {
                        let (a, r) = if key == "dpo_aot" {
                            (
                                (&b.policy_chosen.clone().unwrap()
                                    - b.policy_rejected.as_ref().unwrap())
                                .unwrap(),
                                (b.ref_chosen.clone().unwrap() - b.ref_rejected.as_ref().unwrap())
                                    .unwrap(),
                            )
                        } else {
                            (
                                (b.policy_chosen.clone().unwrap() - b.ref_chosen.as_ref().unwrap())
                                    .unwrap(),
                                (b.policy_rejected.clone().unwrap()
                                    - b.ref_rejected.as_ref().unwrap())
                                .unwrap(),
                            )
                        };
                        cmp(
                            field,
                            vec_of(&(sorted(&a).unwrap() - sorted(&r).unwrap()).unwrap()),
                            value,
                        )
                    }
                    "kl_estimate" => {
                        let got = match (&b.policy_kl, &b.ref_kl) {
                            (Some(p), Some(r)) => vec_of(
                                &(p - r)
                                    .unwrap()
                                    .mean_all()
                                    .unwrap()
                                    .maximum(0.0)
                                    .unwrap()
                                    .unsqueeze(0)
                                    .unwrap(),
                            )[0],
                            _ => 0.0,
                        };
                        cmp(field, vec![got], &Value::from(vec![value.clone()]))
                    }
                    "mean_log_odds" | "mean_logsigmoid_log_odds" => {
                        // −per_sample/β = log σ(log-odds); log-odds = logit of that.
                        let ls: Vec<f64> = vec_of(&term.per_sample)
                            .iter()
                            .map(|x| -x / cfg.beta)
                            .collect();
                        let got = if field == "mean_logsigmoid_log_odds" {
                            ls.iter().sum::<f64>() / ls.len() as f64
                        } else {
                            ls.iter()
                                .map(|l| {
                                    let p = l.exp();
                                    (p / (1.0 - p)).ln()
                                })
                                .sum::<f64>()
                                / ls.len() as f64
                        };
                        cmp(field, vec![got], &Value::from(vec![value.clone()]))
                    }
                    "batch_metrics_from_trl" => {
                        let m = out.metrics().unwrap();
                        for (mk, mv) in value.as_object().unwrap() {
                            if let Some(got) = m.get(mk.as_str()) {
                                cmp(
                                    &format!("metrics.{mk}"),
                                    vec![*got],
                                    &Value::from(vec![mv.clone()]),
                                );
                            }
                        }
                    }
                    // Descriptions, inputs and flags.
                    "source"
                    | "params"
                    | "formula"
                    | "rows_used"
                    | "dtype"
                    | "inputs"
                    | "nll_chosen_input"
                    | "check_mean_of_per_sample_equals_batch_loss" => {}
                    other => unhandled.push(format!("{key}: unhandled golden field `{other}`")),
                }
            }
            checked += n;
            entries += 1;
        }
        assert!(unhandled.is_empty(), "{}", unhandled.join("\n"));
        assert!(
            failures.is_empty(),
            "{} mismatches:\n{}",
            failures.len(),
            failures.join("\n")
        );
        assert!(entries >= 37, "only {entries} golden entries");
        assert!(checked > 400, "only {checked} values checked");
    }

    /// Every objective in the table is reachable by its name, and unknown names list them all.
    #[test]
    fn names_round_trip_through_the_table() {
        for r in OBJECTIVES {
            assert_eq!(r.name.parse::<Objective>().unwrap(), r.objective);
            assert_eq!(r.objective.to_string(), r.name);
            assert_eq!(
                serde_json::to_string(&r.objective).unwrap(),
                format!("\"{}\"", r.name)
            );
        }
        let err = "dpo".parse::<Objective>().unwrap_err().to_string();
        for r in OBJECTIVES {
            assert!(err.contains(r.name), "{err}");
        }
        let cfg: LossConfig = serde_json::from_str(r#"{"loss_type": "ipo"}"#).unwrap();
        assert_eq!(cfg.loss_type, vec![Objective::Ipo]);
        let cfg: LossConfig =
            serde_json::from_str(r#"{"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0]}"#)
                .unwrap();
        assert!(matches!(
            cfg.validate(),
            Err(Error::LossWeightsMismatch {
                loss_types: 2,
                loss_weights: 1
            })
        ));
        assert!(serde_json::from_str::<LossConfig>(r#"{"loss_type": "nope"}"#).is_err());
    }

    /// At z = 0 (policy = reference, step 0) d/d pc of mean(−log σ(β·h)) is exactly −β·σ(0)/B.
    /// Kinked softplus forms give 3× or 0.5× this in candle (shared/notes/stack.md).
    #[test]
    fn sigmoid_gradient_at_z0_is_analytic() {
        for dtype in [DType::F32, DType::F64] {
            let dev = Device::Cpu;
            let n = 4usize;
            let pc = Var::from_tensor(
                &Tensor::full(-20.0, n, &dev)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap(),
            )
            .unwrap();
            let pr = Var::from_tensor(
                &Tensor::full(-30.0, n, &dev)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap(),
            )
            .unwrap();
            let b = PreferenceLogps::paired(
                pc.as_tensor().clone(),
                pr.as_tensor().clone(),
                pc.as_tensor().detach(),
                pr.as_tensor().detach(),
            );
            for (obj, want_c) in [
                (Objective::Sigmoid, -0.1 * 0.5 / n as f64),
                (Objective::Cdpo, -0.1 * 0.5 / n as f64),
            ] {
                let out = compute_loss(&LossConfig::new(obj, 0.1), &b).unwrap();
                let g = out.loss.backward().unwrap();
                let gc = vec_of(g.get(pc.as_tensor()).unwrap());
                let gr = vec_of(g.get(pr.as_tensor()).unwrap());
                for i in 0..n {
                    assert!(
                        (gc[i] - want_c).abs() < 1e-7,
                        "{obj} {dtype:?} d/dpc {} vs {want_c}",
                        gc[i]
                    );
                    assert!(
                        (gr[i] + want_c).abs() < 1e-7,
                        "{obj} {dtype:?} d/dpr {} vs {}",
                        gr[i],
                        -want_c
                    );
                }
                assert!(
                    (vec_of(&out.loss.unsqueeze(0).unwrap())[0] - std::f64::consts::LN_2).abs()
                        < 1e-6
                );
            }
        }
    }

    /// Every objective's loss is finite, with a finite, nonzero gradient w.r.t. the policy
    /// log-probs it reads, in float64 and in float32 (the model's dtype).
    #[test]
    fn every_objective_has_a_gradient() {
        let g = golden();
        let rows: Vec<&Value> = g["batch"].as_array().unwrap().iter().collect();
        for dtype in [DType::F64, DType::F32] {
            let base = batch_of(&rows, dtype);
            for r in OBJECTIVES {
                let pc = Var::from_tensor(base.policy_chosen.as_ref().unwrap()).unwrap();
                let pr = Var::from_tensor(base.policy_rejected.as_ref().unwrap()).unwrap();
                let pcc = Var::from_tensor(base.policy_chosen_corrupt.as_ref().unwrap()).unwrap();
                let prn = Var::from_tensor(base.policy_rejected_noised.as_ref().unwrap()).unwrap();
                let mut b = base.clone();
                b.policy_chosen = Some(pc.as_tensor().clone());
                b.policy_rejected = Some(pr.as_tensor().clone());
                b.policy_chosen_corrupt = Some(pcc.as_tensor().clone());
                b.policy_rejected_noised = Some(prn.as_tensor().clone());
                let kl = Tensor::new(&[-1.0f64, -2.0], &Device::Cpu)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap();
                b.policy_kl = Some(kl.clone());
                b.ref_kl = Some((kl - 0.5).unwrap());
                let out = compute_loss(&LossConfig::new(r.objective, 0.1), &b).unwrap();
                let grads = out.loss.backward().unwrap();
                let mut total = 0.0;
                for v in [&pc, &pr, &pcc, &prn] {
                    if let Some(gr) = grads.get(v.as_tensor()) {
                        for x in vec_of(gr) {
                            assert!(x.is_finite(), "{}: non-finite gradient", r.name);
                            total += x.abs();
                        }
                    }
                }
                assert!(
                    total > 0.0,
                    "{}: no gradient reaches the policy log-probs",
                    r.name
                );
                assert!(
                    out.loss
                        .to_dtype(DType::F64)
                        .unwrap()
                        .to_scalar::<f64>()
                        .unwrap()
                        .is_finite(),
                    "{} {dtype:?}",
                    r.name
                );
            }
        }
    }

    #[test]
    fn missing_inputs_are_named() {
        let t = Tensor::new(&[-1.0f64], &Device::Cpu).unwrap();
        let b = PreferenceLogps::paired(t.clone(), t.clone(), t.clone(), t);
        let e = compute_loss(&LossConfig::new(Objective::Copo, 0.1), &b)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("copo") && e.contains("policy_chosen_corrupt"),
            "{e}"
        );
        let e = compute_loss(&LossConfig::new(Objective::Mmedpo, 0.1), &b)
            .unwrap_err()
            .to_string();
        assert!(e.contains("policy_rejected_noised"), "{e}");
        let mut c = LossConfig::new(Objective::Ipo, 0.1);
        c.f_divergence_type = FDivergence::ForwardKl;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("f_divergence_type"));
    }
}
