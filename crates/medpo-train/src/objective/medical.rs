//! The medical objectives of the seed study: CoPO (chosen text on the clean vs corrupted
//! image), the anchor term, mDPO (DPO + CoPO + anchor, reading the corrupted image, unlike the
//! seed's release) and MMedPO (weighted, lesion-noised rejected image).

use super::{log_sigmoid, req, Inputs, Objective, Reduce, Term};
use crate::error::Result;

/// One medical objective's per-sample losses, reduction and rewards.
pub(super) fn term(o: Objective, x: &Inputs) -> Result<Term> {
    let (cfg, b, beta) = (x.cfg, x.b, x.cfg.beta);
    Ok(match o {
        // CoPO, mDPO paper Eq. 3: same chosen text, clean image m vs corrupted image m̃:
        // h_c = (pc − pcc) − (rc − rcc).
        Objective::Copo => {
            let (pcc, rcc) = (
                req(&b.policy_chosen_corrupt, o, "policy_chosen_corrupt")?,
                req(&b.ref_chosen_corrupt, o, "ref_chosen_corrupt")?,
            );
            let hc = (x.xc()? - (pcc - rcc)?)?;
            let rej = ((pcc - rcc)? * beta)?.detach();
            (
                log_sigmoid(&(hc * beta)?)?.neg()?,
                Reduce::Mean,
                ((x.xc()? * beta)?.detach(), rej),
            )
        }
        // Anchor, mDPO paper Eq. 4: keeps the chosen reward above δ.
        Objective::Anchor => {
            let z = ((x.xc()? * beta)? - cfg.anchor_delta)?;
            let rw = (x.xc()? * beta)?.detach();
            (
                log_sigmoid(&z)?.neg()?,
                Reduce::Mean,
                (rw.clone(), rw.zeros_like()?),
            )
        }
        // mDPO, Eq. 5: DPO(text pair, same image) + CoPO(same text, image vs corrupted image)
        // + anchor, all weight 1 and the same β. Unlike the seed's release (whose method
        // resolution made the CoPO term a second text DPO term), the CoPO part reads the
        // corrupted-image log-probs.
        Objective::Mdpo => {
            let (pcc, rcc) = (
                req(&b.policy_chosen_corrupt, o, "policy_chosen_corrupt")?,
                req(&b.ref_chosen_corrupt, o, "ref_chosen_corrupt")?,
            );
            let dpo = log_sigmoid(&(x.h()? * beta)?)?.neg()?;
            let copo = log_sigmoid(&((x.xc()? - (pcc - rcc)?)? * beta)?)?.neg()?;
            let anchor = log_sigmoid(&((x.xc()? * beta)? - cfg.anchor_delta)?)?.neg()?;
            (((dpo + copo)? + anchor)?, Reduce::Mean, x.dpo_rewards()?)
        }
        // MMedPO, Zhu et al. 2024, Eq. 6: weight_i · −log σ(β·[(pc − prn) − (rc − rrn)]), the
        // rejected side being the rejected text on the lesion-noised image; plain batch mean.
        Objective::Mmedpo => {
            let prn = req(&b.policy_rejected_noised, o, "policy_rejected_noised")?;
            let rrn = req(&b.ref_rejected_noised, o, "ref_rejected_noised")?;
            let wgt = req(&b.weight, o, "weight (per-sample weighted_score)")?;
            let xrn = (prn - rrn)?;
            let l = (log_sigmoid(&((x.xc()? - &xrn)? * beta)?)?.neg()? * wgt)?;
            (
                l,
                Reduce::Mean,
                ((x.xc()? * beta)?.detach(), (xrn * beta)?.detach()),
            )
        }
        other => unreachable!("`{other}` is not a medical objective (dispatch in objective/mod.rs)"),
    })
}

#[cfg(test)]
mod tests {
    use candle_core::DType;
    use serde_json::Value;

    use super::super::tests::{batch_of, golden, vec_of};
    use super::super::{compute_loss, LossConfig, Objective, PreferenceLogps};

    /// Regression for the seed's mDPO bug (shared/notes/seed-code.md §1.5): its CoPO term never
    /// read the corrupted image, making mDPO = 2·DPO + anchor. Here changing only the
    /// corrupted-image log-probs must change the CoPO term and mDPO, and leave DPO unchanged.
    #[test]
    fn issue4_mdpo_copo_term_reads_the_corrupted_image() {
        let g = golden();
        let rows: Vec<&Value> = g["batch"].as_array().unwrap().iter().collect();
        let b1 = batch_of(&rows, DType::F64);
        let mut b2 = b1.clone();
        b2.policy_chosen_corrupt =
            Some((b1.policy_chosen_corrupt.as_ref().unwrap() - 3.0).unwrap());
        let val = |o: Objective, b: &PreferenceLogps| {
            vec_of(&compute_loss(&LossConfig::new(o, 0.1), b).unwrap().terms[0].per_sample)
        };
        for o in [Objective::Copo, Objective::Mdpo] {
            let (a, c) = (val(o, &b1), val(o, &b2));
            assert!(
                a.iter().zip(&c).all(|(x, y)| (x - y).abs() > 1e-6),
                "{o} ignores the corrupted image: {a:?} vs {c:?}"
            );
        }
        assert_eq!(val(Objective::Sigmoid, &b1), val(Objective::Sigmoid, &b2));
        // mDPO = DPO + CoPO + anchor, not 2·DPO + anchor.
        let (d, c, an, m) = (
            val(Objective::Sigmoid, &b2),
            val(Objective::Copo, &b2),
            val(Objective::Anchor, &b2),
            val(Objective::Mdpo, &b2),
        );
        for i in 0..d.len() {
            assert!((m[i] - (d[i] + c[i] + an[i])).abs() < 1e-9);
        }
    }
}
