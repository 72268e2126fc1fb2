#!/usr/bin/env bash
# Compiles the `cuda` feature of the engine crates, on a machine with or without a GPU.
#
#   scripts/cuda-build-check.sh            # compile only (no GPU or driver needed)
#   scripts/cuda-build-check.sh --test     # also build and run the CUDA device tests
#                                          # (needs an NVIDIA driver: libcuda.so.1)
#
# Without a system CUDA toolkit, the CUDA 13.2 compiler, headers and libraries are installed
# from PyPI into a virtualenv outside the repository (MEDPO_CUDA_TK, default
# ~/.cache/medpo/cuda-tk; about 1.5 GB). candle's kernels are compiled for CUDA_COMPUTE_CAP
# (default 90: H100/H200). Builds go to MEDPO_CUDA_TARGET (default target/cuda) so that they do
# not invalidate the CPU build. A cold run takes about 12 minutes on 2 cores, mostly nvcc.
set -euo pipefail
cd "$(dirname "$0")/.."

run_tests=0
for a in "$@"; do
    case "$a" in
        --test) run_tests=1 ;;
        *) echo "usage: scripts/cuda-build-check.sh [--test]" >&2; exit 2 ;;
    esac
done

if command -v nvcc >/dev/null 2>&1; then
    echo "using the system nvcc: $(command -v nvcc)"
else
    tk="${MEDPO_CUDA_TK:-$HOME/.cache/medpo/cuda-tk}"
    if [ ! -x "$tk/bin/pip" ]; then
        python3 -m venv "$tk"
    fi
    # One release line for every part: a newer nvvm than ptxas writes PTX ptxas refuses.
    "$tk/bin/pip" install -q "nvidia-cuda-nvcc==13.2.*" "nvidia-nvvm==13.2.*" "nvidia-cuda-crt==13.2.*" \
        "nvidia-cuda-runtime==13.2.*" "nvidia-cuda-cccl==13.2.*" "nvidia-cuda-nvrtc==13.2.*" \
        nvidia-cublas nvidia-curand
    cu="$(echo "$tk"/lib/python3*/site-packages/nvidia/cu13)"
    export PATH="$cu/bin:$PATH" CUDA_HOME="$cu" CUDA_PATH="$cu" CUDA_ROOT="$cu"
    export LIBRARY_PATH="$cu/lib:${LIBRARY_PATH:-}" LD_LIBRARY_PATH="$cu/lib:${LD_LIBRARY_PATH:-}"
fi
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export CARGO_TARGET_DIR="${MEDPO_CUDA_TARGET:-$PWD/target/cuda}"
nvcc --version | tail -1

# The libraries compile without a driver; binaries link against libcuda and need one.
cargo build -p medpo-models -p medpo-train -p medpo-cli --features cuda --lib
echo "cuda feature: compiled (the medpo-models, medpo-train and medpo-cli libraries)"

if [ "$run_tests" = 1 ]; then
    # Logits of every fixture model on the GPU against the CPU path, f32 and bf16.
    cargo test -p medpo-models --features cuda --test device -- --nocapture
fi
