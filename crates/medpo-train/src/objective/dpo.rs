//! The DPO family: TRL 1.16 `DPOTrainer` loss types on policy/reference log-ratios (sigmoid,
//! hinge, IPO, EXO, NCA, robust, BCO pair, SPPO hard, AOT, APO, DiscoPOP, SFT, sigmoid_norm),
//! plus cDPO and DPO+NLL. Values match `dpo_golden.json` (see the table test in `mod.rs`).

use super::{log_sigmoid, sigmoid, smoothed_sigmoid_loss, sorted, Inputs, Objective, Reduce, Term};
use crate::error::Result;

/// One DPO-family objective's per-sample losses, reduction and rewards.
pub(super) fn term(o: Objective, x: &Inputs) -> Result<Term> {
    let (cfg, beta) = (x.cfg, x.cfg.beta);
    Ok(match o {
        // DPO, Rafailov et al. 2023, Eq. 7.
        Objective::Sigmoid => (
            (log_sigmoid(&(x.h()? * beta)?)?.neg()?),
            Reduce::Mean,
            x.dpo_rewards()?,
        ),
        // SLiC-HF, Zhao et al. 2023, Eq. 10 (TRL's form, margin 1 on β·h).
        Objective::Hinge => (
            ((x.h()? * -beta)? + 1.0)?.relu()?,
            Reduce::Mean,
            x.dpo_rewards()?,
        ),
        // IPO, Azar et al. 2023, Eq. 17. Deliberate deviation (TRL's): log-ratios are divided
        // by the completion lengths.
        Objective::Ipo => {
            let d = ((x.xc()? / x.nc()?)? - (x.xr()? / x.nr()?)?)?;
            (
                (d - 1.0 / (2.0 * beta))?.sqr()?,
                Reduce::Mean,
                x.dpo_rewards()?,
            )
        }
        // EXO, Ji et al. 2024, Eq. 16. ε = label_smoothing (1e-3 when 0, as TRL). TRL holds ε
        // in a float32 tensor, so log(1−ε) and log ε are float32 values; we reproduce that.
        Objective::ExoPair => {
            let eps = if cfg.label_smoothing == 0.0 {
                1e-3
            } else {
                cfg.label_smoothing
            };
            let e32 = eps as f32 as f64;
            let log_1me = ((-e32).ln_1p() as f32) as f64;
            let log_e = (e32.ln() as f32) as f64;
            let z = (x.h()? * beta)?;
            let lp = log_sigmoid(&z)?;
            let ln = log_sigmoid(&z.neg()?)?;
            let a = (lp.exp()? * (&lp - log_1me)?)?;
            let c = (ln.exp()? * (&ln - log_e)?)?;
            ((a + c)?, Reduce::Mean, x.dpo_rewards()?)
        }
        // NCA, Chen et al. 2024, Eq. 12 (pairwise form).
        Objective::NcaPair => {
            let (rw, rl) = ((x.xc()? * beta)?, (x.xr()? * beta)?);
            let l = ((log_sigmoid(&rw)?.neg()? - (log_sigmoid(&rw.neg()?)? * 0.5)?)?
                - (log_sigmoid(&rl.neg()?)? * 0.5)?)?;
            (l, Reduce::Mean, x.dpo_rewards()?)
        }
        // Robust DPO, Chowdhury et al. 2024, Eq. 21: unbiased under label-flip rate ε.
        Objective::Robust => {
            let eps = cfg.label_smoothing;
            let z = (x.h()? * beta)?;
            let l = (((log_sigmoid(&z)? * -(1.0 - eps))? + (log_sigmoid(&z.neg()?)? * eps)?)?
                / (1.0 - 2.0 * eps))?;
            (l, Reduce::Mean, x.dpo_rewards()?)
        }
        // BCO, Jung et al. 2024, pairwise: −log σ(r_w) − log σ(−r_l), no running mean δ.
        Objective::BcoPair => {
            let (rw, rl) = ((x.xc()? * beta)?, (x.xr()? * beta)?);
            (
                (log_sigmoid(&rw)?.neg()? - log_sigmoid(&rl.neg()?)?)?,
                Reduce::Mean,
                x.dpo_rewards()?,
            )
        }
        // SPPO (hard labels), Wu et al. 2024, Eq. 4.7: (x_c − 1/(2β))² + (x_r + 1/(2β))².
        Objective::SppoHard => {
            let k = 0.5 / beta;
            (
                ((x.xc()? - k)?.sqr()? + (x.xr()? + k)?.sqr()?)?,
                Reduce::Mean,
                x.dpo_rewards()?,
            )
        }
        // AOT, Melnyk et al. 2024: sort the policy and reference margins separately over the
        // batch and apply the smoothed sigmoid loss rank by rank (batch-coupled).
        Objective::Aot => {
            let a = sorted(&(x.pc()? - x.pr()?)?)?;
            let r = sorted(&(x.rc()? - x.rr()?)?)?;
            (
                smoothed_sigmoid_loss(&((a - r)? * beta)?, cfg.label_smoothing)?,
                Reduce::Mean,
                x.dpo_rewards()?,
            )
        }
        Objective::AotUnpaired => {
            let a = sorted(&x.xc()?)?;
            let r = sorted(&x.xr()?)?;
            (
                smoothed_sigmoid_loss(&((a - r)? * beta)?, cfg.label_smoothing)?,
                Reduce::Mean,
                x.dpo_rewards()?,
            )
        }
        // APO-zero, D'Oosterlinck et al. 2024, Eq. 6: (1 − σ(r_w)) + σ(r_l).
        Objective::ApoZero => {
            let (rw, rl) = ((x.xc()? * beta)?, (x.xr()? * beta)?);
            (
                (sigmoid(&rw.neg()?)? + sigmoid(&rl)?)?,
                Reduce::Mean,
                x.dpo_rewards()?,
            )
        }
        // APO-down, same paper, Eq. 7: σ(r_w) + (1 − σ(r_w − r_l)).
        Objective::ApoDown => {
            let rw = (x.xc()? * beta)?;
            let z = ((x.xc()? - x.xr()?)? * beta)?;
            (
                (sigmoid(&rw)? + sigmoid(&z.neg()?)?)?,
                Reduce::Mean,
                x.dpo_rewards()?,
            )
        }
        // DiscoPOP (LRML), Lu et al. 2024, Eq. 5: −log σ(z)(1 − m) + e^{−z}·m, m = σ(z/τ).
        // e^{−z}·m is computed as exp(−z + log σ(z/τ)) so large |z| cannot give inf·0.
        Objective::Discopop => {
            let z = (x.h()? * beta)?;
            let log_m = log_sigmoid(&(&z / cfg.discopop_tau)?)?;
            let one_minus_m = sigmoid(&(&z / -cfg.discopop_tau)?)?;
            let a = (log_sigmoid(&z)?.neg()? * one_minus_m)?;
            let c = (z.neg()? + log_m)?.exp()?;
            ((a + c)?, Reduce::Mean, x.dpo_rewards()?)
        }
        // SFT: NLL of the chosen completion. Batch value is the token mean over the batch.
        Objective::Sft => (
            (x.pc()? / x.nc()?)?.neg()?,
            Reduce::Given(x.batch_nll()?),
            x.sft_rewards()?,
        ),
        // Length-normalised sigmoid DPO (TRL `sigmoid_norm`): x/n on each side.
        Objective::SigmoidNorm => {
            let d = ((x.xc()? / x.nc()?)? - (x.xr()? / x.nr()?)?)?;
            (
                log_sigmoid(&(d * beta)?)?.neg()?,
                Reduce::Mean,
                x.dpo_rewards()?,
            )
        }
        // cDPO, Mitchell 2023: preferences flipped with probability ε.
        Objective::Cdpo => (
            smoothed_sigmoid_loss(&(x.h()? * beta)?, cfg.label_smoothing)?,
            Reduce::Mean,
            x.dpo_rewards()?,
        ),
        // DPO + α·NLL, IRPO (Pang et al. 2024, Eq. 1) as med-vlm-dpo computes it: the NLL is
        // each sample's own token mean −pc/n, then the batch mean (not TRL's batch token mean).
        Objective::DpoNll => {
            let dpo = log_sigmoid(&(x.h()? * beta)?)?.neg()?;
            let nll = (x.pc()? / x.nc()?)?.neg()?;
            (
                (dpo + (nll * cfg.sft_weight)?)?,
                Reduce::Mean,
                x.dpo_rewards()?,
            )
        }
        other => unreachable!("`{other}` is not a DPO-family objective (dispatch in objective/mod.rs)"),
    })
}
