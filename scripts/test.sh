#!/usr/bin/env bash
# Runs every test of MedPO Arena on this machine, installing what is missing first:
#   1. scripts/setup.sh --test   (wasm32 target, wasm-bindgen-cli, Chromium, PostgreSQL, Playwright)
#   2. a release build of the server and the wasm front end (scripts/build.sh --release)
#   3. Playwright in headless Chromium against that release server (end2end/), then the
#      OpenAI-compatible API with curl and the `openai` Python package (scripts/test-api.sh)
#   4. every crate's unit, integration and doc tests (`cargo test --workspace`, the command a
#      contributor runs), the storage tests against SQLite and against a real throwaway
#      PostgreSQL started here and stopped at exit
# Screenshots and Playwright reports land in end2end/artifacts and end2end/playwright-report.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TERM_COLOR=never
# One clean build: incremental caches would only cost disk (tens of GB) and time here.
export CARGO_INCREMENTAL=0
unset RUST_LOG
start=$(date +%s)

scripts/setup.sh --test

echo "==> release build"
scripts/build.sh --release

echo "==> browser tests (Playwright, /usr/bin/chromium)"
rm -rf end2end/artifacts
e2e_log=$(mktemp)
export MEDPO_E2E_PORT
MEDPO_E2E_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export MEDPO_E2E_DATA_DIR
MEDPO_E2E_DATA_DIR=$(mktemp -d /tmp/medpo-e2e.XXXXXX)
# A synthetic CT DICOM carrying patient-identifying tags, written by the DICOM crate; the
# upload test asserts none of them reaches the data folder.
export MEDPO_E2E_DICOM
MEDPO_E2E_DICOM="$(mktemp -d /tmp/medpo-e2e-in.XXXXXX)/synthetic-ct.dcm"
cargo build --release -q -p medpo-imaging --example make_test_dicom
target/release/examples/make_test_dicom "$MEDPO_E2E_DICOM"
(cd end2end && npx playwright test) 2>&1 | tee "$e2e_log"
rm -rf "$MEDPO_E2E_DATA_DIR" "$(dirname "$MEDPO_E2E_DICOM")"
e2e_passed=$(grep -Eo '^ *[0-9]+ passed' "$e2e_log" | tail -n1 | grep -Eo '[0-9]+' || echo 0)

echo "==> OpenAI-compatible API (curl and the openai Python package, release server)"
api_log=$(mktemp)
scripts/test-api.sh 2>&1 | tee "$api_log"
api_passed=$(grep -Eo '^api: [0-9]+ passed' "$api_log" | grep -Eo '[0-9]+' || echo 0)

echo "==> graceful shutdown on SIGTERM (release server)"
sd_dir=$(mktemp -d)
sd_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
target/release/medpo serve --bind "127.0.0.1:$sd_port" --data-dir "$sd_dir/data" --models-dir "$sd_dir/none" \
    --log info >"$sd_dir/log" 2>&1 &
sd_pid=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$sd_port/readyz" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$sd_port/readyz" >/dev/null || { cat "$sd_dir/log"; exit 1; }
kill -TERM "$sd_pid"
if wait "$sd_pid" && grep -q "SIGTERM received" "$sd_dir/log" && grep -q "closing the database" "$sd_dir/log"; then
    echo "graceful shutdown: ok"
else
    echo "graceful shutdown: FAILED"; cat "$sd_dir/log"; exit 1
fi
rm -rf "$sd_dir"

echo "==> crate tests (SQLite and a throwaway PostgreSQL)"
# shellcheck source=postgres-throwaway.sh
source scripts/postgres-throwaway.sh
export MEDPO_REQUIRE_POSTGRES=1
unit_log=$(mktemp)
# Exactly what a contributor types (plus --no-fail-fast, so one failure does not hide others).
set +e
cargo test --workspace --no-fail-fast 2>&1 | tee "$unit_log"
unit_rc=${PIPESTATUS[0]}
set -e
unit_passed=$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed' "$unit_log" | grep -Eo '[0-9]+ passed' | grep -Eo '[0-9]+' | awk '{s+=$1} END {print s+0}')
unit_failed=$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed; [0-9]+ failed' "$unit_log" | grep -Eo '[0-9]+ failed' | grep -Eo '[0-9]+' | awk '{s+=$1} END {print s+0}')
if [ "$unit_rc" != 0 ]; then
    echo "==> crate tests FAILED (cargo test exit $unit_rc)"
    echo "tests: $((e2e_passed + api_passed + unit_passed)) passed, $((unit_failed > 0 ? unit_failed : 1)) failed"
    exit 1
fi

echo "==> all tests passed in $(( $(date +%s) - start )) s (browser: $e2e_passed, API: $api_passed, crates: $unit_passed)"
echo "tests: $((e2e_passed + api_passed + unit_passed)) passed, 0 failed"
