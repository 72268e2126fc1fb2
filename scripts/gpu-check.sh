#!/usr/bin/env bash
# The device check, for a machine with an NVIDIA GPU (never run in CI). In one go, meant to
# finish in under 8 minutes on a fresh 16-core GPU machine:
#
#   1. builds the `cuda` feature (release; the CUDA compiler from scripts/cuda-env.sh);
#   2. runs the device tests: fixture logits on the GPU against the CPU in float32 and
#      bfloat16, greedy generation, and one full-fine-tuning DPO step twice (loss, log-probs,
#      gradient norm and the updated weights against the same steps on the CPU);
#   3. measures a random-weight model with LLaVA-Med v1.5-7B's shapes in bfloat16: batch-1
#      prefill latency and greedy decode tokens/s, printed beside the HBM roofline of the GPU
#      it finds (bytes of weights read per token ÷ the device's bandwidth; goal ≥ 75 %).
#
#   scripts/gpu-check.sh [--skip-build] [--model-dir DIR]
#
# The 7B-shaped checkpoint (~14 GB) is written to DIR (default target/llava-med-7b-random) on
# first use. Everything printed also goes to target/gpu-check.log; copy the figures into
# docs/benchmarks.md ("GPU").
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

build=1
model_dir=target/llava-med-7b-random
while [ $# -gt 0 ]; do
    case "$1" in
        --skip-build) build=0 ;;
        --model-dir) model_dir="$2"; shift ;;
        *) echo "usage: scripts/gpu-check.sh [--skip-build] [--model-dir DIR]" >&2; exit 2 ;;
    esac
    shift
done
model_dir="$(realpath -m "$model_dir")"

exec > >(tee target/gpu-check.log) 2>&1
start=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv
source scripts/cuda-env.sh

if [ "$build" = 1 ]; then
    echo "==> build (cuda, release)"
    cargo build --release --features cuda -p medpo-models -p medpo-train --tests --examples
fi

echo "==> device tests"
cargo test --release --features cuda -p medpo-models --test device -- --nocapture
cargo test --release --features cuda -p medpo-train --test device -- --nocapture

echo "==> LLaVA-Med-7B-shaped decode and prefill, bfloat16, batch 1"
cargo run --release --features cuda -p medpo-models --example gpu_roofline -- \
    --dir "$model_dir" --dtype bf16 --new-tokens 64 --runs 5

echo "==> gpu-check done in $(( $(date +%s) - start )) s (log: target/gpu-check.log)"
