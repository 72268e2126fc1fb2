#!/usr/bin/env bash
# Sets up, builds (release) and runs MedPO Arena at http://127.0.0.1:3000 with the embedded
# SQLite database under ./data/ (created and migrated on first start).
#
# Models: every checkpoint folder in ./models is registered at start-up. If ./models is
# empty, it is filled with links to the phantom model zoo committed in ./zoo: an SFT model
# of LLaVA-Med's family trained from scratch on phantom scans and its preference variants
# (DPO, DPO+NLL, CoPO, mDPO, MMedPO, IPO, SimPO, ORPO, KTO, targeted), with model cards.
# `medpo zoo build` regenerates them (docs/phantom-benchmark.md).
# Extra arguments go to `medpo serve` (e.g. --bind 0.0.0.0:3000).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scripts/setup.sh
scripts/build.sh --release
mkdir -p models
if [ -z "$(ls -A models)" ]; then
    for m in zoo/*/; do
        m="$(basename "$m")"
        ln -s "../zoo/$m" "models/$m"
    done
    echo "==> models/ was empty: linked the phantom model zoo from ./zoo"
fi
exec target/release/medpo serve "$@"
