//! Training on a real model: `llava-med-tiny` from `shared/fixtures/v1`, through medpo-models'
//! differentiable forward. Every size the tests expect (decoder layers, hidden size, sample
//! lengths) is read from the fixture's own config and tokenizer, so the suite holds on any
//! fixture set of the documented format.
//!
//! The pairs are VQA questions built from the fixture tokenizer's vocabulary ("Is there a
//! nodule in the left lung?") with a consistent preference (an affirmative finding over a
//! "normal" answer); held-out pairs ask about other organs, so a rising held-out margin means
//! the preference generalised rather than being memorised.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use candle_core::{DType, Device, Tensor};
use medpo_models::{LoadOptions, Model, ScoreItem};
use medpo_train::checkpoint;
use medpo_train::data::{PreferenceRecord, Source};
use medpo_train::lora::{self, Lora, LoraConfig, TargetModule, TARGET_MODULES};
use medpo_train::metrics::{self, JsonlWriter};
use medpo_train::objective::{LossConfig, Objective};
use medpo_train::policy::{export_merged, ModelAnswerer, PolicySpec, Tuning, VlmPolicy};
use medpo_train::rng::TrainRng;
use medpo_train::trainer::{PolicyModel, Stop, Trainer, TrainerArgs};

/// The shared folder: `$MEDPO_SHARED`, else `<CARGO_MANIFEST_DIR>/../../../shared`.
fn fixtures() -> PathBuf {
    let shared = match std::env::var_os("MEDPO_SHARED") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    };
    shared.join("fixtures/v1")
}

fn model_dir() -> PathBuf {
    fixtures().join("llava-med-tiny")
}

const FINDINGS: &[&str] = &["nodule", "mass", "lesion", "cyst"];
const TRAIN_ORGANS: &[&str] = &["left lung", "right lung", "liver", "heart"];
const HELD_OUT_ORGANS: &[&str] = &["kidney", "spleen", "brain"];

fn pair(organ: &str, finding: &str, i: usize) -> PreferenceRecord {
    PreferenceRecord {
        id: Some(format!("{finding}-{organ}")),
        prompt: format!("<image>\nIs there a {finding} in the {organ}?"),
        chosen: format!("Yes, there is a {finding} in the {organ}."),
        rejected: format!("No, the {organ} is normal."),
        image: Some("scan.png".into()),
        rejected_image: None,
        weight: None,
        roi: None,
        source: Source {
            file: "vlm-test".into(),
            index: i,
            line: None,
        },
    }
}

fn pairs(organs: &[&str]) -> Vec<PreferenceRecord> {
    let mut v = Vec::new();
    for o in organs {
        for f in FINDINGS {
            let n = v.len();
            v.push(pair(o, f, n));
        }
    }
    v
}

fn all_targets(dropout: f64) -> LoraConfig {
    LoraConfig {
        r: 4,
        lora_alpha: 8.0,
        lora_dropout: dropout,
        target_modules: TARGET_MODULES.iter().map(|(t, _)| *t).collect(),
        base_model_name_or_path: Some("llava-med-tiny".into()),
    }
}

fn spec(loss: LossConfig) -> PolicySpec {
    PolicySpec {
        loss,
        max_length: None,
        image_folder: Some(fixtures()),
        seed: 7,
    }
}

fn lora_policy(records: &[PreferenceRecord], dropout: f64, loss: LossConfig) -> VlmPolicy {
    VlmPolicy::load(
        &model_dir(),
        LoadOptions::default(),
        Tuning::Lora(all_targets(dropout)),
        records,
        spec(loss),
    )
    .unwrap()
}

fn args(steps: u64, lr: f64) -> TrainerArgs {
    TrainerArgs {
        per_device_train_batch_size: 4,
        gradient_accumulation_steps: 1,
        num_train_epochs: 1,
        max_steps: Some(steps),
        learning_rate: lr,
        warmup_ratio: 0.0,
        max_grad_norm: 10.0,
        seed: 3,
        save_steps: 0,
        ..Default::default()
    }
}

/// Randomises every B so that A gets a gradient too (B starts at zero, as in PEFT).
fn perturb(lora: &Lora, scale: f64) {
    let mut rng = TrainRng::seed_from_u64(5);
    for (k, v) in lora.named_vars() {
        if k.ends_with("lora_B.weight") {
            let vals: Vec<f32> = (0..v.elem_count())
                .map(|_| (rng.normal() * scale) as f32)
                .collect();
            v.set(&Tensor::from_vec(vals, v.shape(), &Device::Cpu).unwrap())
                .unwrap();
        }
    }
}

fn values(vars: &[(String, candle_core::Var)]) -> Vec<(String, Vec<f32>)> {
    vars.iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap(),
            )
        })
        .collect()
}

/// DPO (sigmoid, β 0.1) with LoRA on llava-med-tiny raises the reward margin and the
/// preference accuracy on held-out pairs (other organs), starting from exactly 0 (policy =
/// reference). The training log is written as JSONL with TRL's keys.
#[test]
fn dpo_raises_held_out_margin_and_accuracy_on_llava_med_tiny() {
    let train = pairs(TRAIN_ORGANS);
    let held_out = pairs(HELD_OUT_ORGANS);
    let mut policy = lora_policy(&train, 0.0, LossConfig::new(Objective::Sigmoid, 0.1));
    let m0 = policy.evaluate(&held_out).unwrap().metrics().unwrap();
    assert_eq!(
        m0[metrics::REWARDS_MARGINS],
        0.0,
        "adapters start as a no-op (B = 0)"
    );
    assert_eq!(m0[metrics::REWARDS_ACCURACIES], 0.0);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("metrics.jsonl");
    let mut writer = JsonlWriter::append(&log).unwrap();
    let mut t = Trainer::new(
        args(12, 2e-2),
        policy.trainable_vars(),
        train.len(),
        None,
        "dpo",
    )
    .unwrap();
    let stop = t
        .run(
            &mut policy,
            &mut [&mut writer],
            &AtomicBool::new(false),
            None,
        )
        .unwrap();
    assert_eq!(stop, Stop::Finished);
    let m1 = policy.evaluate(&held_out).unwrap().metrics().unwrap();
    eprintln!("held-out before {m0:?}\nafter {m1:?}");
    assert!(
        m1[metrics::REWARDS_MARGINS] > 0.1,
        "held-out margin {}",
        m1[metrics::REWARDS_MARGINS]
    );
    assert!(
        m1[metrics::REWARDS_ACCURACIES] >= 0.9,
        "held-out accuracy {}",
        m1[metrics::REWARDS_ACCURACIES]
    );
    assert!(m1[metrics::LOSS] < m0[metrics::LOSS]);
    let recs = JsonlWriter::read(&log).unwrap();
    assert_eq!(recs.len(), 12);
    for k in [
        metrics::LOSS,
        metrics::REWARDS_MARGINS,
        metrics::LOGPS_CHOSEN,
        metrics::REF_LOGPS_CHOSEN,
        metrics::LEARNING_RATE,
        metrics::GRAD_NORM,
    ] {
        assert!(
            recs[0].metrics.contains_key(k),
            "{k} missing in the metrics log"
        );
    }
    assert!(
        (recs[0].metrics[metrics::LOSS] - std::f64::consts::LN_2).abs() < 1e-6,
        "step 1 loss is log 2"
    );
}

/// Gradient coverage on the LoRA path through the whole model: every adapter matrix gets a
/// non-zero gradient; the base weights (plain tensors, the model has no VarMap) get none.
#[test]
fn lora_gradient_coverage_on_the_model() {
    let train = pairs(&TRAIN_ORGANS[..1]);
    let mut policy = lora_policy(&train, 0.0, LossConfig::new(Objective::Sigmoid, 0.1));
    let lora = policy.lora().unwrap().clone();
    perturb(&lora, 0.05);
    assert!(
        policy.model().varmap().is_none(),
        "the base is loaded without Vars"
    );
    let layers = policy.model().config.text.num_hidden_layers;
    let vars = policy.trainable_vars();
    assert_eq!(
        vars.len(),
        layers * TARGET_MODULES.len() * 2,
        "{layers} layers × {} projections × (A, B)",
        TARGET_MODULES.len()
    );
    let out = policy.loss(&[0, 1, 2]).unwrap();
    let grads = out.loss.backward().unwrap();
    for (k, v) in &vars {
        let g = grads
            .get(v.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {k}"));
        let n = g
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(n > 0.0, "{k} has a zero gradient");
    }
    let projections = policy.model().projections();
    assert_eq!(projections.len(), layers * TARGET_MODULES.len());
    let mut base: Vec<&Tensor> = projections.iter().map(|(_, l)| l.stored_weight()).collect();
    base.extend(projections.iter().filter_map(|(_, l)| l.bias()));
    assert_eq!(
        lora::grad_bytes(&grads, &base),
        0,
        "the frozen base must not get gradient buffers"
    );
    assert!(projections.iter().all(|(_, l)| l.has_adapter()));
}

/// Killing a LoRA run (dropout on, so the RNG state matters) and resuming from its last
/// checkpoint gives bit-identical adapters to an uninterrupted run.
#[test]
fn resume_after_kill_equals_uninterrupted_on_the_model() {
    let train = pairs(&TRAIN_ORGANS[..2]);
    let a = TrainerArgs {
        save_steps: 2,
        ..args(5, 1e-2)
    };
    let run = |out: &Path, kill_after: Option<u64>| -> Vec<(String, Vec<f32>)> {
        let mut p = lora_policy(&train, 0.1, LossConfig::new(Objective::Sigmoid, 0.1));
        let mut t = Trainer::new(
            a.clone(),
            p.trainable_vars(),
            train.len(),
            Some(out.into()),
            "resume",
        )
        .unwrap();
        let stop = t
            .run(&mut p, &mut [], &AtomicBool::new(false), kill_after)
            .unwrap();
        if kill_after.is_none() {
            assert_eq!(stop, Stop::Finished);
            return values(&p.trainable_vars());
        }
        assert_eq!(stop, Stop::Interrupted);
        drop((p, t));
        let mut p = lora_policy(&train, 0.1, LossConfig::new(Objective::Sigmoid, 0.1));
        let mut t = Trainer::new(
            a.clone(),
            p.trainable_vars(),
            train.len(),
            Some(out.into()),
            "resume",
        )
        .unwrap();
        let ck = checkpoint::latest(out).unwrap();
        assert_eq!(ck, checkpoint::checkpoint_dir(out, 2));
        t.resume_from(&ck, &mut p).unwrap();
        assert_eq!(
            t.run(&mut p, &mut [], &AtomicBool::new(false), None)
                .unwrap(),
            Stop::Finished
        );
        values(&p.trainable_vars())
    };
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let full = run(d1.path(), None);
    let resumed = run(d2.path(), Some(3));
    assert_eq!(full, resumed);
}

/// The adapter folder has PEFT's key names for the real module paths and its config fields;
/// reloading it gives the same function; the merged full model (written in the base's layout)
/// gives the same answer log-probs as the adapters on.
#[test]
fn peft_files_and_merged_model_match_the_adapters() {
    let train = pairs(&TRAIN_ORGANS[..1]);
    let mut cfg = all_targets(0.0);
    cfg.target_modules = vec![TargetModule::Q, TargetModule::V, TargetModule::Down];
    let policy = VlmPolicy::load(
        &model_dir(),
        LoadOptions::default(),
        Tuning::Lora(cfg),
        &train,
        spec(LossConfig::default()),
    )
    .unwrap();
    let lora = policy.lora().unwrap().clone();
    perturb(&lora, 0.2);
    lora.set_training(false);
    let dir = tempfile::tempdir().unwrap();
    let adapter = dir.path().join("adapter");
    lora.save_peft(&adapter).unwrap();

    let conf: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(adapter.join(lora::ADAPTER_CONFIG)).unwrap())
            .unwrap();
    assert_eq!(conf["peft_type"], "LORA");
    assert_eq!(conf["task_type"], "CAUSAL_LM");
    assert_eq!(conf["r"], 4);
    assert_eq!(
        conf["target_modules"],
        serde_json::json!(["q_proj", "v_proj", "down_proj"])
    );
    let bytes = std::fs::read(adapter.join(lora::ADAPTER_WEIGHTS)).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<&str> = st.names();
    names.sort();
    let text = &policy.model().config.text;
    let (layers, hidden) = (text.num_hidden_layers, text.hidden_size);
    let mut want = Vec::new();
    for l in 0..layers {
        for m in ["mlp.down_proj", "self_attn.q_proj", "self_attn.v_proj"] {
            for w in ["lora_A", "lora_B"] {
                want.push(format!("base_model.model.model.layers.{l}.{m}.{w}.weight"));
            }
        }
    }
    want.sort();
    assert_eq!(names, want.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(
        st.tensor("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight")
            .unwrap()
            .shape(),
        &[4, hidden]
    );
    let last = format!("base_model.model.model.layers.{}.mlp.down_proj.lora_B.weight", layers - 1);
    assert_eq!(st.tensor(&last).unwrap().shape(), &[hidden, 4]);

    let img = medpo_models::preprocess::load_image(&fixtures().join("scan.png")).unwrap();
    let item = |m: &Model| ScoreItem {
        prompt: m
            .input("Is there a nodule in the left lung?", Some(&img))
            .unwrap(),
        answer_ids: m
            .answer_ids("Yes, there is a nodule in the left lung.")
            .unwrap(),
    };
    let on = policy
        .model()
        .sequence_logprobs(&[item(policy.model())])
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()[0];
    let off = lora
        .reference(|| {
            policy
                .model()
                .sequence_logprobs(&[item(policy.model())])
                .unwrap()
        })
        .to_vec1::<f32>()
        .unwrap()[0];
    assert!(
        (on - off).abs() > 1e-3,
        "the adapters change the model ({on} vs {off})"
    );

    // Reload the PEFT folder onto a fresh base.
    let mut fresh = Model::load(&model_dir(), &LoadOptions::default()).unwrap();
    let back = Lora::load_peft(&adapter, &Device::Cpu, 0).unwrap();
    back.attach(&mut fresh).unwrap();
    back.set_training(false);
    let reloaded = fresh
        .sequence_logprobs(&[item(&fresh)])
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()[0];
    assert_eq!(reloaded, on);

    // Merge: a plain checkpoint in the base's layout, loadable by Model::load.
    let merged_dir = dir.path().join("merged");
    export_merged(policy.model(), &lora, &merged_dir).unwrap();
    assert!(
        merged_dir.join("tokenizer.json").is_file() && merged_dir.join("config.json").is_file()
    );
    let merged = Model::load(&merged_dir, &LoadOptions::default()).unwrap();
    let m = merged
        .sequence_logprobs(&[item(&merged)])
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()[0];
    assert!((m - on).abs() < 1e-4, "merged {m} vs adapters on {on}");
    let (l1, _) = merged.forward_train(&[item(&merged).prompt]).unwrap();
    let (l2, _) = policy
        .model()
        .forward_train(&[item(policy.model()).prompt])
        .unwrap();
    let d = (l1 - l2)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(
        d < 1e-4,
        "merged logits differ from adapters-on logits by {d}"
    );
}

/// Writes scan.png and a vertically flipped copy (a stand-in corrupted image) into `dir`.
fn images(dir: &Path) {
    let img = image::open(fixtures().join("scan.png")).unwrap().to_rgb8();
    img.save(dir.join("scan.png")).unwrap();
    image::imageops::flip_vertical(&img)
        .save(dir.join("flipped.png"))
        .unwrap();
    image::imageops::rotate180(&img)
        .save(dir.join("rotated.png"))
        .unwrap();
}

/// mDPO on the model reads the corrupted image for real: changing only `rejected_image` changes
/// the loss (the seed's release would not notice). MMedPO reads the noised image and the weight.
#[test]
fn mdpo_and_mmedpo_read_the_corrupted_image() {
    let dir = tempfile::tempdir().unwrap();
    images(dir.path());
    let mk = |corrupt: &str, weight: f64| -> Vec<PreferenceRecord> {
        let mut r = pairs(&TRAIN_ORGANS[..1]);
        for x in &mut r {
            x.rejected_image = Some(corrupt.into());
            x.weight = Some(weight);
        }
        r
    };
    let loss_of = |records: &[PreferenceRecord], o: Objective| -> f64 {
        let mut s = spec(LossConfig::new(o, 0.1));
        s.image_folder = Some(dir.path().into());
        let mut p = VlmPolicy::load(
            &model_dir(),
            LoadOptions::default(),
            Tuning::Lora(all_targets(0.0)),
            records,
            s,
        )
        .unwrap();
        perturb(p.lora().unwrap(), 0.2);
        let out = p.loss(&[0, 1, 2, 3]).unwrap();
        out.loss
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let a = loss_of(&mk("flipped.png", 1.0), Objective::Mdpo);
    let b = loss_of(&mk("rotated.png", 1.0), Objective::Mdpo);
    assert!(
        (a - b).abs() > 1e-7,
        "mdpo loss {a} vs {b}: the CoPO term must read the corrupted image"
    );
    let c = loss_of(&mk("flipped.png", 1.0), Objective::Mmedpo);
    let d = loss_of(&mk("rotated.png", 1.0), Objective::Mmedpo);
    assert!((c - d).abs() > 1e-7, "mmedpo loss {c} vs {d}");
    let e = loss_of(&mk("flipped.png", 0.5), Objective::Mmedpo);
    assert!(
        (e - c / 2.0).abs() < 1e-6 * c.abs().max(1.0),
        "mmedpo scales with weighted_score: {e} vs {c}/2"
    );
    // copo without a corrupted image names the missing field.
    let mut s = spec(LossConfig::new(Objective::Copo, 0.1));
    s.image_folder = Some(dir.path().into());
    let mut p = VlmPolicy::load(
        &model_dir(),
        LoadOptions::default(),
        Tuning::Lora(all_targets(0.0)),
        &pairs(&TRAIN_ORGANS[..1]),
        s,
    )
    .unwrap();
    let err = p.loss(&[0]).err().unwrap().to_string();
    assert!(err.contains("rejected_image"), "{err}");
}

/// Samples longer than `max_length` are skipped and counted (never truncated); full fine-tuning
/// of the language model with a frozen reference copy lowers the DPO loss.
#[test]
fn over_long_samples_are_skipped_and_full_fine_tuning_trains() {
    let mut train = pairs(&TRAIN_ORGANS[..2]);
    train[3].chosen = "Yes, there is a nodule in the left lung, ".repeat(8);
    // The longest ordinary sample, measured on this fixture (image tokens included), is the
    // limit: exactly the padded sample is over it.
    let lengths = lora_policy(&train, 0.0, LossConfig::default()).sample_lengths();
    let limit = lengths.iter().enumerate().filter(|(i, _)| *i != 3).map(|(_, &n)| n).max().unwrap();
    assert!(lengths[3] > limit, "the padded sample ({}) must be the longest ({limit})", lengths[3]);
    let mut s = spec(LossConfig::new(Objective::DpoNll, 0.1));
    s.max_length = Some(limit);
    let mut p = VlmPolicy::load(
        &model_dir(),
        LoadOptions::default(),
        Tuning::Full { train_vision_tower: false },
        &train,
        s,
    )
    .unwrap();
    assert_eq!(p.over_long(), 1);
    assert!(!p.keep(3) && p.keep(0));
    let vars = p.trainable_vars();
    assert!(vars
        .iter()
        .any(|(k, _)| k == "model.layers.0.self_attn.q_proj.weight"));
    assert!(vars
        .iter()
        .any(|(k, _)| k.starts_with("model.mm_projector")));
    assert!(
        vars.iter().all(|(k, _)| !k.starts_with("vision_model")),
        "the vision tower stays frozen"
    );
    let before = values(&vars);
    let held = pairs(&TRAIN_ORGANS[..2]);
    let l0 = p.evaluate(&held).unwrap().metrics().unwrap()[metrics::LOSS];
    let mut t = Trainer::new(args(4, 1e-3), vars.clone(), train.len(), None, "full").unwrap();
    t.run(&mut p, &mut [], &AtomicBool::new(false), None)
        .unwrap();
    assert!(t.skipped_samples() >= 1, "the over-long sample is counted");
    let l1 = p.evaluate(&held).unwrap().metrics().unwrap()[metrics::LOSS];
    assert!(l1 < l0, "dpo_nll loss {l0} → {l1}");
    let after = values(&p.trainable_vars());
    let moved = before
        .iter()
        .zip(&after)
        .filter(|(a, b)| a.1 != b.1)
        .count();
    assert!(
        moved > before.len() / 2,
        "{moved} of {} tensors moved",
        before.len()
    );
}

/// The targeted pairs on the model: pooled vision features for retrieval and the model's own
/// answer on the similar image as the rejected response.
#[test]
fn targeted_pairs_use_the_models_features_and_answers() {
    use medpo_train::pairs::{build_targeted_pairs, TargetedMode, VqaItem};
    let dir = tempfile::tempdir().unwrap();
    images(dir.path());
    let model = Model::load(&model_dir(), &LoadOptions::default()).unwrap();
    let mut ans = ModelAnswerer {
        model: &model,
        images: dir.path().into(),
        max_new_tokens: 6,
    };
    let items: Vec<VqaItem> = ["scan.png", "flipped.png", "rotated.png"]
        .iter()
        .enumerate()
        .map(|(i, im)| VqaItem {
            id: i.to_string(),
            image: im.to_string(),
            question: "Is there a nodule in the left lung?".into(),
            answer: "Yes, there is a nodule.".into(),
        })
        .collect();
    let imgs: Vec<String> = items.iter().map(|i| i.image.clone()).collect();
    let f = ans.features(&imgs).unwrap();
    assert_eq!(f.dims(), &[3, model.config.text.hidden_size], "one pooled projector output per image");
    let rep = build_targeted_pairs(&items, &f, 1, TargetedMode::Mixed, &mut ans).unwrap();
    assert_eq!(rep.records.len() + rep.same_answer, 3);
    let mut seen = HashMap::new();
    for r in &rep.records {
        assert_ne!(r.image, r.rejected_image);
        assert!(!r.rejected.is_empty());
        seen.insert(r.id.clone(), r.rejected.clone());
    }
}
