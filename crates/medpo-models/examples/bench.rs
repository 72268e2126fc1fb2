//! Inference benchmark with the workloads of `shared/bench/hf_reference.py` (README §4 a–c):
//! prefill, greedy decode (no EOS stop) and batched answer scoring, float32 on the CPU.
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo run --release -p medpo-models --example bench -- \
//!     ../shared/fixtures/v1/llava-hf-tiny [--reference target/ref-tiny.json] [--runs 10] [--new-tokens 64]
//! ```
//!
//! Prints a JSON with the reference's keys (`prefill.median_ms`, `decode.decode_tok_per_s`,
//! `score.pairs_per_s`, …) and, with `--reference`, the ratios (> 1 means faster than the
//! reference) and the correctness checks of README §5.7. Shortcut taken: the unused last CLIP
//! layer is not run (the outputs are the same).

use std::path::PathBuf;
use std::time::Instant;

use medpo_models::{GenerateParams, LoadOptions, Model, PadSide, ScoreItem};

const PAIRS: [(&str, &str); 4] = [
    ("Yes, there is a nodule in the left lung.", "No, the lungs are clear."),
    ("Yes. A small round nodule is seen in the left upper lobe.", "No abnormality is seen in the chest."),
    ("There is a round nodule in the left lung, which may be a tumor.", "The nodule is in the right lung."),
    ("Yes, the left lung has a nodule and the right lung is normal.", "Yes, there are many nodules in both lungs and the heart is enlarged."),
];

fn transform(img: &image::RgbImage, i: usize) -> image::RgbImage {
    match i % 4 {
        0 => img.clone(),
        1 => image::imageops::flip_horizontal(img),
        2 => image::imageops::flip_vertical(img),
        _ => image::imageops::rotate180(img),
    }
}

fn median_min(mut xs: Vec<f64>) -> (f64, f64) {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    (xs[xs.len() / 2], xs[0])
}

fn time<T>(runs: usize, warmup: usize, mut f: impl FnMut() -> T) -> (Vec<f64>, T) {
    for _ in 0..warmup {
        f();
    }
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..runs {
        let t = Instant::now();
        last = Some(f());
        times.push(t.elapsed().as_secs_f64());
    }
    (times, last.expect("runs >= 1"))
}

fn full_workload_prompt(path: &std::path::Path) -> Result<Option<Vec<i64>>, Box<dyn std::error::Error>> {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    Ok(v["workload"]["prompt_ids"].as_array().map(|a| a.iter().filter_map(|x| x.as_i64()).collect()))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    medpo_models::alloc::retain_freed_memory();
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or("usage: bench MODEL_DIR [--reference JSON] [--runs N] [--new-tokens N] [--batch B]")?);
    let (mut reference, mut runs, mut new_tokens, mut batch) = (None, 10usize, 64usize, 4usize);
    while let Some(a) = args.next() {
        let v = args.next().ok_or("missing value")?;
        match a.as_str() {
            "--reference" => reference = Some(PathBuf::from(v)),
            "--runs" => runs = v.parse()?,
            "--new-tokens" => new_tokens = v.parse()?,
            "--batch" => batch = v.parse()?,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all cores".into());
    let model = Model::load(&dir, &LoadOptions::default())?;
    let image = medpo_models::preprocess::load_image(&dir.join("../scan.png"))?;
    let question = "Is there a nodule in the left lung?";

    let t = Instant::now();
    let (pre_times, _) = time(runs, 1, || model.preprocess_image(&image).map(|_| ()));
    let _ = t;
    let input = model.input(question, Some(&image))?;

    // a. prefill: vision + projector + LM over the prompt, last-position logits, KV cache built.
    let (times, _) = time(runs, 1, || -> medpo_models::Result<()> {
        let b = model.llava.embed_batch(std::slice::from_ref(&input), PadSide::Left)?;
        let mut cache = model.llava.new_cache();
        model.llava.forward_cached(&b.embeds, &mut cache, None, true)?;
        Ok(())
    });
    let prompt_tokens = model.llava.embed_batch(std::slice::from_ref(&input), PadSide::Left)?.lengths[0];
    let (prefill_med, prefill_min) = median_min(times);

    // b. decode: greedy, no EOS stop; steady rate = (n - 1) / (t(n) - t(1)).
    let gen = |n: usize| {
        let p = GenerateParams { max_new_tokens: n, stop_at_eos: false, ..Default::default() };
        model.generate(std::slice::from_ref(&input), &p, &mut |_| {})
    };
    let (t1, _) = time(runs, 1, || gen(1));
    let (tn, out) = time(runs, 1, || gen(new_tokens));
    let generated_ids = out?.remove(0).ids;
    let (t1m, _) = median_min(t1);
    let (tnm, _) = median_min(tn);
    let decode_tok_per_s = (new_tokens - 1) as f64 / (tnm - t1m);

    // c. score: B pairs (prompt + transformed image i + chosen answer i), one right-padded batch.
    let mut items = Vec::new();
    for i in 0..batch {
        let img = transform(&image, i);
        items.push(ScoreItem { prompt: model.input(question, Some(&img))?, answer_ids: model.answer_ids(PAIRS[i % 4].0)? });
    }
    let (times, sums) = time(runs, 1, || model.score(&items));
    let sums = sums?;
    let (score_med, score_min) = median_min(times);

    let (pre_med, _) = median_min(pre_times);
    let mut report = serde_json::json!({
        "implementation": "medpo-models (candle 0.11.1)",
        "threads": threads,
        "model": dir.display().to_string(),
        "preprocess": { "median_ms": pre_med * 1e3 },
        "prefill": { "median_ms": prefill_med * 1e3, "min_ms": prefill_min * 1e3, "prompt_tokens": prompt_tokens,
                      "prompt_tok_per_s": prompt_tokens as f64 / prefill_med },
        "decode": { "new_tokens": new_tokens, "decode_tok_per_s": decode_tok_per_s,
                    "end_to_end_tok_per_s": new_tokens as f64 / tnm, "generated_ids": generated_ids },
        "score": { "batch": batch, "median_ms": score_med * 1e3, "min_ms": score_min * 1e3,
                   "pairs_per_s": batch as f64 / score_med, "logprob_sums": sums },
    });
    if let Some(path) = reference {
        let full: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
        // hf_reference.py nests the inference figures under results.infer.
        let r = if full["results"]["infer"].is_object() { full["results"]["infer"].clone() } else { full };
        let f = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
        let ref_sums: Vec<f64> = r["score"]["logprob_sums"].as_array().map(|a| a.iter().map(f).collect()).unwrap_or_default();
        let sums_ok = ref_sums.len() == sums.len() && ref_sums.iter().zip(&sums).all(|(a, b)| (a - b).abs() < 1e-3);
        let ids_ok = r["decode"]["generated_ids"] == report["decode"]["generated_ids"];
        report["reference"] = serde_json::json!(path.display().to_string());
        report["ratios"] = serde_json::json!({
            "prefill": f(&r["prefill"]["median_ms"]) / (prefill_med * 1e3),
            "decode_tok_per_s": decode_tok_per_s / f(&r["decode"]["decode_tok_per_s"]),
            "score_pairs_per_s": (batch as f64 / score_med) / f(&r["score"]["pairs_per_s"]),
        });
        // The same work: our prompt ids, with -200 expanded as llava-hf does, equal the workload's.
        let image_id = model.config.image_token_id.map_or(-200, i64::from);
        let n_img = model.config.num_image_tokens();
        let expanded: Vec<i64> = input
            .ids
            .iter()
            .flat_map(|&id| if id == medpo_models::IMAGE_TOKEN_INDEX { vec![image_id; n_img] } else { vec![id] })
            .collect();
        let prompt_ok = full_workload_prompt(&path)? == Some(expanded);
        report["checks"] = serde_json::json!({
            "prompt_ids_equal": prompt_ok,
            "logprob_sums_within_1e-3": sums_ok,
            "generated_ids_equal": ids_ok,
        });
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
