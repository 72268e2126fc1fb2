//! `medpo zoo build --quick` end to end (tiny data, a tiny model, a few steps), twice with the
//! same seed: every model folder is written, loads with the model engine, carries its card and
//! lineage, the table has a row per model, and the second build reproduces the first's
//! weights and numbers.

use std::path::{Path, PathBuf};

use medpo_cli::zoo::{build, model_folders, BuildArgs};


fn run(root: &Path) -> (PathBuf, String) {
    let args = BuildArgs {
        out: root.join("zoo"),
        work: root.join("work"),
        seed: 0,
        quick: true,
        plan: None,
        sft_only: false,
        table: Some(root.join("table.md")),
    };
    build(&args).expect("zoo build --quick");
    let table = std::fs::read_to_string(root.join("table.md")).unwrap();
    (root.join("zoo"), table)
}

/// The table without the line that states the build's duration.
fn numbers(table: &str) -> String {
    table.lines().filter(|l| !l.starts_with("Written by")).collect::<Vec<_>>().join("\n")
}

#[test]
fn quick_zoo_builds_loads_and_reproduces() {
    let a = tempfile::tempdir().unwrap();
    let (zoo, table) = run(a.path());
    assert!(zoo.join("phantom-clip/model.safetensors").is_file());
    let models = model_folders();
    assert_eq!(models.len(), 11, "SFT and ten variants: {models:?}");
    for m in &models {
        let dir = zoo.join(m);
        for f in ["config.json", "model.safetensors", "tokenizer.json", "README.md", "medpo.json"] {
            assert!(dir.join(f).is_file(), "{m}: {f} missing");
        }
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
        assert_eq!(cfg["model_type"], "llava_mistral", "{m}");
        assert_eq!(cfg["mm_vision_tower"], "../phantom-clip", "{m}: the tower is shared, by a relative path");
        let card = std::fs::read_to_string(dir.join("README.md")).unwrap();
        assert!(card.contains("Not for clinical use") && card.contains("phantom"), "{m}: {card}");
        let lineage: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("medpo.json")).unwrap()).unwrap();
        if m == "phantom-sft" {
            assert!(lineage["parent"].is_null());
        } else {
            assert_eq!(lineage["parent"], "phantom-sft", "{m}");
        }
        medpo_models::Model::load(&dir, &Default::default()).unwrap_or_else(|e| panic!("{m}: {e}"));
        assert!(table.contains(&format!("`{m}`")), "table lacks {m}:\n{table}");
    }
    // SFT trained the vision tower too (LLaVA's `unfreeze_mm_vision_tower`).
    let key = "vision_model.embeddings.patch_embedding.weight";
    let get = |p: PathBuf| {
        let t = candle_core::safetensors::load(p, &candle_core::Device::Cpu).unwrap();
        t[key].to_dtype(candle_core::DType::F32).unwrap()
    };
    let before = get(a.path().join("work/init/clip/model.safetensors"));
    let after = get(zoo.join("phantom-clip/model.safetensors"));
    let moved: f32 = (before - after).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
    assert!(moved > 1e-3, "the vision tower did not train (max change {moved})");
    // The preference variants really changed the SFT weights.
    let sft = std::fs::read(zoo.join("phantom-sft/model.safetensors")).unwrap();
    let dpo = std::fs::read(zoo.join("phantom-dpo/model.safetensors")).unwrap();
    assert_ne!(sft, dpo, "DPO left the weights untouched");
    assert!(table.contains("images blanked"), "{table}");

    // Same seed, fresh folders: the same weights and the same table.
    let b = tempfile::tempdir().unwrap();
    let (zoo2, table2) = run(b.path());
    for m in ["phantom-clip", "phantom-sft", "phantom-dpo", "phantom-targeted"] {
        let x = std::fs::read(zoo.join(m).join("model.safetensors")).unwrap();
        let y = std::fs::read(zoo2.join(m).join("model.safetensors")).unwrap();
        assert!(x == y, "{m}: weights differ between two builds with the same seed");
    }
    assert_eq!(numbers(&table), numbers(&table2));
}
