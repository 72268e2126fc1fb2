//! The differentiable path really is differentiable: every trainable parameter gets a non-zero
//! gradient from the answer log-prob, and the analytic gradient agrees with central finite
//! differences in f64 (the failure mode these guard against is in shared/notes/stack.md:
//! candle's fused ops cut gradients silently).

mod common;

use candle_core::{DType, Tensor, Var};
use common::*;
use medpo_models::{LoadOptions, Model, ScoreItem};

fn load_trainable(name: &str) -> Model {
    let opts = LoadOptions { dtype: DType::F64, trainable: true, ..Default::default() };
    Model::load(&fixtures().join(name), &opts).unwrap()
}

fn item(model: &Model) -> ScoreItem {
    let q = expected()["question"].as_str().unwrap().to_string();
    let a = expected()["answer"].as_str().unwrap().to_string();
    ScoreItem { prompt: model.input(&q, Some(&scan())).unwrap(), answer_ids: model.answer_ids(&a).unwrap() }
}

fn check_coverage(name: &str) {
    let model = load_trainable(name);
    let it = item(&model);
    let loss = model.sequence_logprobs(std::slice::from_ref(&it)).unwrap().sum_all().unwrap().neg().unwrap();
    let grads = loss.backward().unwrap();
    let vars = model.varmap().unwrap().data().lock().unwrap().clone();
    assert!(vars.len() > 20, "{name}: only {} vars", vars.len());
    let mut missing = Vec::new();
    for (k, v) in &vars {
        let ok = match grads.get(v.as_tensor()) {
            Some(g) => g.abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap() > 0.0,
            None => false,
        };
        if !ok {
            missing.push(k.clone());
        }
    }
    missing.sort();
    assert!(missing.is_empty(), "{name}: {} of {} params get no gradient: {missing:?}", missing.len(), vars.len());
    eprintln!("{name}: all {} trainable tensors get a non-zero gradient", vars.len());
}

#[test]
fn every_parameter_gets_a_gradient_llava_med() {
    check_coverage("llava-med-tiny");
}

#[test]
fn every_parameter_gets_a_gradient_huatuo() {
    check_coverage("huatuogpt-vision-tiny");
}

/// A deterministic direction with entries in [-1, 1].
fn direction(like: &Tensor, seed: u64) -> Tensor {
    let n = like.elem_count();
    let mut s = seed;
    let v: Vec<f64> = (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(v, like.shape(), like.device()).unwrap()
}

#[test]
fn gradients_agree_with_finite_differences() {
    let name = "huatuogpt-vision-tiny";
    let model = load_trainable(name);
    let it = item(&model);
    let f = || model.sequence_logprobs(std::slice::from_ref(&it)).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap();
    let out = model.sequence_logprobs(std::slice::from_ref(&it)).unwrap().sum_all().unwrap();
    let grads = out.backward().unwrap();
    let vars = model.varmap().unwrap().data().lock().unwrap().clone();
    // The first and the last decoder layer, whatever the fixture's depth.
    let last = model.config.text.num_hidden_layers - 1;
    let checked: Vec<String> = [
        "model.embed_tokens.weight",
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.k_proj.bias",
        "model.layers.{last}.input_layernorm.weight",
        "model.layers.{last}.mlp.gate_proj.weight",
        "model.norm.weight",
        "lm_head.weight",
        "model.mm_projector.0.weight",
        "model.vision_tower.vision_tower.vision_model.embeddings.patch_embedding.weight",
        "model.vision_tower.vision_tower.vision_model.embeddings.class_embedding",
        "model.vision_tower.vision_tower.vision_model.encoder.layers.0.layer_norm1.weight",
        "model.vision_tower.vision_tower.vision_model.pre_layrnorm.bias",
    ]
    .iter()
    .map(|k| k.replace("{last}", &last.to_string()))
    .collect();
    for (i, key) in checked.iter().enumerate() {
        let var: &Var = vars.get(key.as_str()).unwrap_or_else(|| panic!("no var {key}"));
        let w0 = var.as_tensor().copy().unwrap();
        let u = direction(&w0, i as u64 + 1);
        let g = grads.get(var.as_tensor()).unwrap();
        let analytic = (g * &u).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap();
        let eps = 1e-5;
        var.set(&(&w0 + (&u * eps).unwrap()).unwrap()).unwrap();
        let fp = f();
        var.set(&(&w0 - (&u * eps).unwrap()).unwrap()).unwrap();
        let fm = f();
        var.set(&w0).unwrap();
        let numeric = (fp - fm) / (2.0 * eps);
        let rel = (analytic - numeric).abs() / analytic.abs().max(numeric.abs()).max(1e-8);
        eprintln!("{key}: analytic {analytic:.8e} numeric {numeric:.8e} rel {rel:.2e}");
        assert!(rel < 1e-5, "{key}: analytic {analytic} vs finite difference {numeric} (rel {rel})");
    }
}

#[test]
fn unused_vision_layers_are_not_loaded() {
    // select_layer -2: the tower's last layer and post_layernorm never influence the output, so
    // they are not parameters at all (they would otherwise be trainable with zero gradient).
    let model = load_trainable("llava-med-tiny");
    let n = model.config.vision.num_hidden_layers;
    let vars = model.varmap().unwrap().data().lock().unwrap().clone();
    let last = format!("encoder.layers.{}.", n - 1);
    assert!(vars.keys().all(|k| !k.contains(&last) && !k.contains("post_layernorm")));
    assert!(vars.contains_key(&format!("vision_model.encoder.layers.{}.mlp.fc2.weight", n - 2)));
    let projector = model.trainable_vars(|k| k.contains("mm_projector"));
    assert_eq!(projector.len(), 4);
    // The weight-memory estimate counts exactly the loaded tensors.
    let loaded: usize = vars.values().map(|v| v.as_tensor().elem_count()).sum();
    assert_eq!(model.parameter_count(), loaded as u64);
}

/// A frozen linear layer inside a trained graph (the LoRA case) passes the input's gradient
/// exactly as a plain matmul does, and allocates no gradient for its weight.
#[test]
fn frozen_linear_gives_the_input_gradient_and_no_weight_gradient() {
    use medpo_models::Linear;
    let dev = candle_core::Device::Cpu;
    let w = direction(&Tensor::zeros((5, 7), DType::F64, &dev).unwrap(), 3);
    let x = Var::from_tensor(&direction(&Tensor::zeros((2, 3, 7), DType::F64, &dev).unwrap(), 4)).unwrap();
    for transposed in [true, false] {
        let lin = Linear::new(w.clone(), None, transposed).unwrap();
        let y = lin.forward(x.as_tensor()).unwrap();
        let grads = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        assert!(grads.get(lin.stored_weight()).is_none(), "the frozen weight got a gradient");
        // Reference: the same function with the weight as a Var (candle's plain matmul).
        let wv = Var::from_tensor(&w).unwrap();
        let y2 = x.as_tensor().broadcast_matmul(&wv.as_tensor().t().unwrap()).unwrap();
        let g2 = y2.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let (a, b) = (grads.get(x.as_tensor()).unwrap(), g2.get(x.as_tensor()).unwrap());
        assert!(max_abs_diff(a, b) < 1e-12);
        assert!(max_abs_diff(&y, &y2) < 1e-12);
    }
}

/// Rows that share a prompt and its image are packed into one sequence (the prompt computed
/// once, each answer attending to it and to itself). The log-probs and every parameter's
/// gradient equal those of the rows scored one by one, and a frozen-tower cache shared by two
/// passes changes nothing.
#[test]
fn packed_rows_equal_separate_rows_in_value_and_gradient() {
    let model = load_trainable("llava-med-tiny");
    let it = item(&model);
    let other = ScoreItem {
        prompt: model.input("What does the image show?", Some(&scan())).unwrap(),
        answer_ids: model.answer_ids("A chest X-ray.").unwrap(),
    };
    let short = ScoreItem { prompt: it.prompt.clone(), answer_ids: model.answer_ids("No.").unwrap() };
    // Rows 0 and 2 share the prompt and the pixel tensor: one packed row with two answers.
    let items = vec![it.clone(), other.clone(), short.clone()];
    let w = [1.0, -0.5, 2.0];
    let packed = model.sequence_logprobs(&items).unwrap();
    let separate: Vec<Tensor> = items.iter().map(|x| model.sequence_logprobs(std::slice::from_ref(x)).unwrap()).collect();
    let separate = Tensor::cat(&separate, 0).unwrap();
    let pv = packed.to_vec1::<f64>().unwrap();
    let sv = separate.to_vec1::<f64>().unwrap();
    for i in 0..3 {
        assert!((pv[i] - sv[i]).abs() < 1e-9, "row {i}: packed {} vs separate {}", pv[i], sv[i]);
    }
    let weights = Tensor::new(&w, packed.device()).unwrap();
    let gp = (&packed * &weights).unwrap().sum_all().unwrap().backward().unwrap();
    let gs = (&separate * &weights).unwrap().sum_all().unwrap().backward().unwrap();
    let vars = model.varmap().unwrap().data().lock().unwrap().clone();
    for (k, v) in &vars {
        let (a, b) = (gp.get(v.as_tensor()).unwrap(), gs.get(v.as_tensor()).unwrap());
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
        let scale = b.abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
        // Absolute floor: some gradients are 0 in exact arithmetic (CLIP's key bias) and only
        // rounding noise here.
        assert!(d < 1e-9 * scale + 1e-12, "{k}: packed and separate gradients differ by {d} (max {scale})");
    }
    // A cache of tower outputs: the second pass reuses the first's, with the same result.
    let mut cache = medpo_models::VisionCache::default();
    let a = model.sequence_logprobs_cached(&items, &mut cache).unwrap().to_vec1::<f64>().unwrap();
    assert_eq!(cache.len(), 2, "two pixel tensors (rows 0 and 2 share one)");
    let b = model.sequence_logprobs_cached(&items, &mut cache).unwrap().to_vec1::<f64>().unwrap();
    for i in 0..3 {
        assert!((a[i] - pv[i]).abs() < 1e-9 && (b[i] - pv[i]).abs() < 1e-9, "row {i}: cached {} {} vs {}", a[i], b[i], pv[i]);
    }
}
