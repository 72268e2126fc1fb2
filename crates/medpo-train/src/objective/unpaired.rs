//! Unpaired objectives (TRL's KTO trainer): KTO with its detached KL reference point, and
//! APO-zero unpaired. Desirable and undesirable samples are scored separately.

use candle_core::Tensor;

use super::{req, sigmoid, Inputs, Objective, Reduce, Term, UnpairedLogps};
use crate::error::Result;

/// One unpaired objective's per-sample losses, reduction and rewards.
pub(super) fn term(o: Objective, x: &Inputs) -> Result<Term> {
    let (cfg, b, beta) = (x.cfg, x.b, x.cfg.beta);
    Ok(match o {
        // KTO, Ethayarajh et al. 2024, Eq. 8, and APO-zero unpaired. The KL reference point
        // z = max(0, mean(policy_kl − ref_kl)) is detached, as in TRL.
        Objective::Kto | Objective::ApoZeroUnpaired => {
            let u = match &b.unpaired {
                Some(u) => u.clone(),
                None => UnpairedLogps {
                    policy_desirable: x.pc()?.clone(),
                    ref_desirable: x.rc()?.clone(),
                    policy_undesirable: x.pr()?.clone(),
                    ref_undesirable: x.rr()?.clone(),
                },
            };
            let xd = (&u.policy_desirable - &u.ref_desirable)?;
            let xu = (&u.policy_undesirable - &u.ref_undesirable)?;
            let (ld, lu) = if o == Objective::Kto {
                let pk = req(&b.policy_kl, o, "policy_kl")?;
                let rk = req(&b.ref_kl, o, "ref_kl")?;
                let kl = (pk - rk)?.mean_all()?.maximum(0.0)?.detach();
                let ld = sigmoid(&(xd.broadcast_sub(&kl)? * -beta)?)?;
                let lu = sigmoid(&(xu.broadcast_sub(&kl)? * beta)?)?;
                (ld, lu)
            } else {
                (sigmoid(&(&xd * -beta)?)?, sigmoid(&(&xu * beta)?)?)
            };
            let l = Tensor::cat(
                &[(ld * cfg.desirable_weight)?, (lu * cfg.undesirable_weight)?],
                0,
            )?;
            (
                l,
                Reduce::Mean,
                ((xd * beta)?.detach(), (xu * beta)?.detach()),
            )
        }

        other => unreachable!("`{other}` is not a unpaired objective (dispatch in objective/mod.rs)"),
    })
}
