//! Reference-free objectives (TRL's CPO and ORPO trainers): SimPO, CPO and ORPO read only
//! the policy's log-probs (average or summed) and add an NLL term to the batch loss.

use super::{log1m_exp, log_sigmoid, smoothed_sigmoid_loss, Inputs, Objective, Reduce, Term};
use crate::error::Result;

/// One reference-free objective's per-sample losses, reduction and rewards.
pub(super) fn term(o: Objective, x: &Inputs) -> Result<Term> {
    let (cfg, b, beta) = (x.cfg, x.b, x.cfg.beta);
    Ok(match o {
        // SimPO, Meng et al. 2024, Eq. 6 (TRL CPOTrainer.cpo_loss, loss_type "simpo"):
        // reference-free, average log-probs, margin γ; plus cpo_alpha·NLL.
        Objective::Simpo => {
            let (a, c) = ((x.pc()? / x.nc()?)?, (x.pr()? / x.nr()?)?);
            let z = (((&a - &c)? * beta)? - cfg.simpo_gamma)?;
            let l = smoothed_sigmoid_loss(&z, cfg.label_smoothing)?;
            let red = Reduce::Given((l.mean_all()? + (x.batch_nll()? * cfg.cpo_alpha)?)?);
            (l, red, ((a * beta)?.detach(), (c * beta)?.detach()))
        }
        // CPO, Xu et al. 2024, Eq. 3 (TRL cpo_loss, loss_type "sigmoid"): reference-free DPO on
        // summed log-probs, plus cpo_alpha·NLL.
        Objective::Cpo => {
            let z = ((x.pc()? - x.pr()?)? * beta)?;
            let l = smoothed_sigmoid_loss(&z, cfg.label_smoothing)?;
            let red = Reduce::Given((l.mean_all()? + (x.batch_nll()? * cfg.cpo_alpha)?)?);
            (l, red, ((x.pc()? * beta)?.detach(), (x.pr()? * beta)?.detach()))
        }
        // ORPO, Hong et al. 2024, Eq. 6–7 (TRL ORPOTrainer.odds_ratio_loss): on average
        // log-probs a, c, log-odds = (a − c) − (log(1 − eᵃ) − log(1 − eᶜ)); the per-sample
        // loss is −β·log σ(log-odds); the batch adds the NLL input.
        Objective::Orpo => {
            let (a, c) = ((x.pc()? / x.nc()?)?, (x.pr()? / x.nr()?)?);
            let log_odds = ((&a - &c)? - (log1m_exp(&a)? - log1m_exp(&c)?)?)?;
            let l = (log_sigmoid(&log_odds)? * -beta)?;
            let nll = match &b.nll_chosen {
                Some(n) => n.clone(),
                None => x.batch_nll()?,
            };
            let red = Reduce::Given((nll + l.mean_all()?)?);
            (l, red, ((a * beta)?.detach(), (c * beta)?.detach()))
        }
        other => unreachable!("`{other}` is not a reference-free objective (dispatch in objective/mod.rs)"),
    })
}
