#!/usr/bin/env bash
# Compiles the `cuda` feature of the engine crates, on a machine with or without a GPU.
#
#   scripts/cuda-build-check.sh            # compile only (no GPU or driver needed)
#   scripts/cuda-build-check.sh --test     # also build and run the CUDA device tests
#                                          # (needs an NVIDIA driver: libcuda.so.1)
#
# The CUDA compiler comes from scripts/cuda-env.sh (the system's, else CUDA 13.2 from PyPI).
# A cold run takes about 12 minutes on 2 cores, mostly nvcc. scripts/gpu-check.sh is the
# device check for a machine with a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."

run_tests=0
for a in "$@"; do
    case "$a" in
        --test) run_tests=1 ;;
        *) echo "usage: scripts/cuda-build-check.sh [--test]" >&2; exit 2 ;;
    esac
done

source scripts/cuda-env.sh

# The libraries compile without a driver; binaries link against libcuda and need one.
cargo build -p medpo-models -p medpo-train -p medpo-cli --features cuda --lib
echo "cuda feature: compiled (the medpo-models, medpo-train and medpo-cli libraries)"

if [ "$run_tests" = 1 ]; then
    # Logits of every fixture model on the GPU against the CPU path, f32 and bf16.
    cargo test -p medpo-models --features cuda --test device -- --nocapture
fi
