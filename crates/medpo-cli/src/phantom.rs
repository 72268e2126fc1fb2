//! `medpo phantom generate`: the phantom benchmark (synthetic scans with ground truth, VQA
//! items, reports and preference pairs) written to a folder.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use medpo_phantom::write::write_benchmark;
use medpo_phantom::Config;

/// `medpo phantom …`
#[derive(Debug, Subcommand)]
pub enum PhantomCommand {
    /// Write a phantom benchmark: images/, cases.jsonl (ground truth), vqa_{train,val,test}.jsonl
    /// (LLaVA-Med format), reports_*.jsonl, pairs_*.jsonl (TRL preference pairs with
    /// clinically meaningful edits), sft_*.jsonl (LLaVA conversations) and manifest.json (every
    /// file's sha256). The same seed writes the same bytes.
    Generate(GenerateArgs),
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Output folder (created if missing; files in it are overwritten).
    #[arg(long)]
    pub out: PathBuf,
    /// Seed of everything: cases, splits, pixels, phrasing.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Number of scans.
    #[arg(long, default_value_t = 600)]
    pub scans: usize,
    /// Fraction of the scans in the validation split.
    #[arg(long, default_value_t = 0.15)]
    pub val_fraction: f64,
    /// Fraction of the scans in the test split.
    #[arg(long, default_value_t = 0.15)]
    pub test_fraction: f64,
}

pub fn run(cmd: PhantomCommand) -> anyhow::Result<()> {
    match cmd {
        PhantomCommand::Generate(a) => {
            let cfg = Config { seed: a.seed, scans: a.scans, val_fraction: a.val_fraction, test_fraction: a.test_fraction };
            let bar = ProgressBar::new(a.scans as u64);
            bar.set_style(
                ProgressStyle::with_template("{bar:40} {pos}/{len} scans ({per_sec}, eta {eta})")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            let m = write_benchmark(&a.out, &cfg, &mut |done, _| bar.set_position(done as u64))?;
            bar.finish_and_clear();
            println!("{} (seed {}) in {}", m.generator, cfg.seed, a.out.display());
            for (split, [scans, vqa, pairs]) in &m.counts {
                println!("  {split:<5} {scans:>5} scans  {vqa:>6} VQA items  {pairs:>6} preference pairs");
            }
            Ok(())
        }
    }
}
