//! float32 matrix-multiply throughput of candle's CPU backend (the `gemm` crate) on the medium
//! model's projection shapes, beside torch's on the same shapes (`--torch PY`: runs the same
//! products with that Python's torch, 2 threads). The DPO step and scoring are bound by these.
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo run --release -p medpo-models --example gemm_rate -- --torch target/bench-venv/bin/python
//! ```

use std::time::Instant;

use candle_core::{Device, Tensor};

const SHAPES: [(usize, usize, usize); 4] = [(1248, 512, 1408), (1248, 1408, 512), (1248, 512, 512), (1024, 384, 1536)];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let torch = args.iter().position(|a| a == "--torch").and_then(|i| args.get(i + 1).cloned());
    println!("| m × k × n | candle (gemm crate) GFLOP/s | torch GFLOP/s |");
    println!("|---|---|---|");
    for (m, k, n) in SHAPES {
        let a = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu)?;
        let b = Tensor::randn(0f32, 1.0, (k, n), &Device::Cpu)?;
        let _ = a.matmul(&b)?;
        let mut v = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            let c = a.matmul(&b)?;
            v.push(t.elapsed().as_secs_f64());
            drop(c);
        }
        v.sort_by(f64::total_cmp);
        let ours = 2.0 * (m * k * n) as f64 / v[10] / 1e9;
        let theirs = match &torch {
            Some(py) => {
                let code = format!(
                    "import torch,time,statistics as s\ntorch.set_num_threads(2)\na=torch.randn({m},{k});b=torch.randn({k},{n});a@b\nv=[]\nfor _ in range(20):\n t=time.perf_counter();c=a@b;v.append(time.perf_counter()-t)\nprint(2*{m}*{k}*{n}/s.median(v)/1e9)"
                );
                let out = std::process::Command::new(py).args(["-c", &code]).output()?;
                String::from_utf8_lossy(&out.stdout).trim().parse::<f64>().map(|x| format!("{x:.0}")).unwrap_or_else(|_| "?".into())
            }
            None => "—".into(),
        };
        println!("| {m} × {k} × {n} | {ours:.0} | {theirs} |");
    }
    Ok(())
}
