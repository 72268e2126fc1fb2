#!/usr/bin/env bash
# The CPU benchmarks of docs/benchmarks.md and docs/benchmarks-train.md, every workload side by
# side with its Python reference in one run (reference first, then medpo), 2 threads each.
#
#   scripts/bench-cpu.sh [OUT_DIR]        # default target/bench-run; about 8 minutes
#
# Needs the reference's virtualenv (../shared/bench/README.md; created in target/bench-venv
# with the pinned versions if $PY is not set and it is missing: a ~3 GB download) and the
# medium model (generated into target/medium-fixture if missing, ~12 s). Writes the JSON of
# both sides and medpo's tables into OUT_DIR. Run it on a quiet machine: contention on two
# cores moves either side by large factors.
set -euo pipefail
cd "$(dirname "$0")/.."
O="${1:-target/bench-run}"
mkdir -p "$O"
SHARED="${MEDPO_SHARED:-../shared}"
if [ -z "${PY:-}" ]; then
    PY=target/bench-venv/bin/python
    if [ ! -x "$PY" ]; then
        python3.11 -m venv target/bench-venv
        target/bench-venv/bin/pip install -q torch==2.15.0 transformers==5.24.0 trl==1.16.0 peft==0.21.2 \
            accelerate==1.15.0 tokenizers==0.23.3 safetensors==0.8.0 pillow==13.0.0 numpy==2.4.6 datasets==5.2.0 psutil
    fi
fi
MEDIUM=target/medium-fixture/llava-hf-tiny
if [ ! -f "$MEDIUM/model.safetensors" ]; then
    $PY "$SHARED/fixtures/make_fixtures.py" --out target/medium-fixture --seed 1234 \
        --dims "$SHARED/bench/medium_dims.json" --data-dir "$SHARED/data/vqa"
fi
TINY="$SHARED/fixtures/v1/llava-hf-tiny"
cargo build --release -p medpo-models --example bench
cargo build --release -p medpo-train --example dpo_step_bench
export RAYON_NUM_THREADS=2
echo "start $(date -u) load: $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$O/run.log"
$PY "$SHARED/bench/hf_reference.py" "$TINY" --threads 2 --json "$O/ref-tiny.json" 2> "$O/ref-tiny.log"
target/release/examples/bench "$TINY" --reference "$O/ref-tiny.json" > "$O/medpo-tiny-infer.json"
$PY "$SHARED/bench/hf_reference.py" "$MEDIUM" --threads 2 --json "$O/ref-medium.json" 2> "$O/ref-medium.log"
target/release/examples/bench "$MEDIUM" --reference "$O/ref-medium.json" > "$O/medpo-medium-infer.json"
MEDPO_REF_TINY="$O/ref-tiny.json" MEDPO_REF_MEDIUM="$O/ref-medium.json" \
    target/release/examples/dpo_step_bench > "$O/medpo-dpo.md"
$PY crates/medpo-train/examples/medical_step_ref.py "$TINY" --bench-dir "$SHARED/bench" --threads 2 \
    --json "$O/ref-tiny-mdpo.json" --image-dir "$O/mdpo-images-tiny" 2> "$O/ref-tiny-mdpo.log"
$PY crates/medpo-train/examples/medical_step_ref.py "$MEDIUM" --bench-dir "$SHARED/bench" --threads 2 \
    --json "$O/ref-medium-mdpo.json" --image-dir "$O/mdpo-images-medium" 2> "$O/ref-medium-mdpo.log"
MEDPO_REF_MDPO_TINY="$O/ref-tiny-mdpo.json" MEDPO_REF_MDPO_MEDIUM="$O/ref-medium-mdpo.json" \
    target/release/examples/dpo_step_bench --objective mdpo > "$O/medpo-mdpo.md"
echo "end $(date -u) load: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$O/run.log"
python3 - "$O" <<'PY'
import json, sys
o = sys.argv[1]
for m in ("tiny", "medium"):
    d = json.load(open(f"{o}/medpo-{m}-infer.json"))
    print(m, "inference ratios (medpo ÷ transformers):", {k: round(v, 2) for k, v in d["ratios"].items()}, "checks:", d["checks"])
PY
cat "$O/medpo-dpo.md" "$O/medpo-mdpo.md"
