#!/usr/bin/env bash
# Sets up, builds (release) and runs MedPO Arena at http://127.0.0.1:3000 with the embedded
# SQLite database under ./data/ (created and migrated on first start).
#
# Models: every checkpoint folder in ./models is registered at start-up. If ./models is
# empty and the shared fixtures are present (../shared/fixtures/v1), it is filled with links
# to the tiny same-architecture LLaVA-Med, HuatuoGPT-Vision and llava-hf fixtures so that
# the product runs end to end on a fresh machine (random weights: their answers are noise).
# Extra arguments go to `medpo serve` (e.g. --bind 0.0.0.0:3000).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh --release
mkdir -p models
fixtures="$(cd .. && pwd)/shared/fixtures/v1"
if [ -z "$(ls -A models)" ] && [ -d "$fixtures" ]; then
    for m in llava-med-tiny huatuogpt-vision-tiny llava-hf-tiny; do
        [ -d "$fixtures/$m" ] && ln -s "$fixtures/$m" "models/$m"
    done
    echo "==> models/ was empty: linked the tiny fixture models from $fixtures"
fi
exec target/release/medpo serve "$@"
