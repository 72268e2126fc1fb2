# Sourced by scripts/cuda-build-check.sh and scripts/gpu-check.sh: puts a CUDA compiler on
# PATH and sets the variables candle's build needs.
#
# Uses the system nvcc when there is one. Otherwise the CUDA 13.2 compiler, headers and
# libraries are installed from PyPI into a virtualenv outside the repository (MEDPO_CUDA_TK,
# default ~/.cache/medpo/cuda-tk; about 1.5 GB). candle's kernels are compiled for
# CUDA_COMPUTE_CAP (default: the first GPU's, from nvidia-smi, else 90: H100/H200). Builds go
# to MEDPO_CUDA_TARGET (default target/cuda) so that they do not invalidate the CPU build.
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
if [ -z "${CUDA_COMPUTE_CAP:-}" ]; then
    cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '. ' || true)
    export CUDA_COMPUTE_CAP="${cap:-90}"
fi
export CARGO_TARGET_DIR="${MEDPO_CUDA_TARGET:-$PWD/target/cuda}"
nvcc --version | tail -1
