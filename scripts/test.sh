#!/usr/bin/env bash
# Runs every test of MedPO Arena on this machine, installing what is missing first:
#   1. scripts/setup.sh --test   (wasm32 target, wasm-bindgen-cli, Chromium, PostgreSQL, Playwright)
#   2. a release build of the server and the wasm front end (scripts/build.sh --release)
#   3. Playwright in headless Chromium against that release server (end2end/)
#   4. every crate's unit and integration tests (cargo nextest), the storage tests against
#      SQLite and against a real throwaway PostgreSQL started here and stopped at exit
# Screenshots and Playwright reports land in end2end/artifacts and end2end/playwright-report.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TERM_COLOR=never
start=$(date +%s)

scripts/setup.sh --test

echo "==> release build"
scripts/build.sh --release

echo "==> browser tests (Playwright, /usr/bin/chromium)"
rm -rf end2end/artifacts
e2e_log=$(mktemp)
(cd end2end && npx playwright test) 2>&1 | tee "$e2e_log"
e2e_passed=$(grep -Eo '^ *[0-9]+ passed' "$e2e_log" | tail -n1 | grep -Eo '[0-9]+' || echo 0)

echo "==> crate tests (SQLite and a throwaway PostgreSQL)"
# shellcheck source=postgres-throwaway.sh
source scripts/postgres-throwaway.sh
export MEDPO_REQUIRE_POSTGRES=1
unit_log=$(mktemp)
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --exclude frontend --no-fail-fast 2>&1 | tee "$unit_log"
    unit_passed=$(grep -Eo '[0-9]+ tests run: [0-9]+ passed' "$unit_log" | tail -n1 | grep -Eo '[0-9]+ passed' | grep -Eo '[0-9]+' || echo 0)
else
    cargo test --workspace --exclude frontend --no-fail-fast 2>&1 | tee "$unit_log"
    unit_passed=$(grep -Eo 'test result: ok\. [0-9]+ passed' "$unit_log" | grep -Eo '[0-9]+ passed' | grep -Eo '[0-9]+' | awk '{s+=$1} END {print s+0}')
fi

echo "==> all tests passed in $(( $(date +%s) - start )) s (browser: $e2e_passed, crates: $unit_passed)"
echo "tests: $((e2e_passed + unit_passed)) passed, 0 failed"
