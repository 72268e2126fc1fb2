#!/usr/bin/env bash
# Installs what MedPO Arena needs on a fresh Debian machine of this project's kind, and skips
# whatever is already there (safe to run again; a second run takes seconds).
#
#   scripts/setup.sh          what running the product needs: the wasm32 target and
#                             wasm-bindgen-cli (the version pinned in Cargo.lock)
#   scripts/setup.sh --test   also what the tests need: Chromium and ChromeDriver, the
#                             PostgreSQL server (Debian packages) and Playwright (npm ci)
#
# Never downloads a browser or a binary outside the package registries: Playwright drives
# Debian's /usr/bin/chromium, and wasm-opt from Debian (binaryen 108) is not used because it
# breaks hydration.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

apt_install() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "==> apt-get install ${missing[*]}"
        local sudo=""
        [ "$(id -u)" = 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

# Build essentials: gcc/g++ for the C parts of sqlite and tokenizers, pkg-config.
command -v cc >/dev/null && command -v c++ >/dev/null || apt_install build-essential
command -v python3 >/dev/null || apt_install python3

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    echo "==> rustup target add wasm32-unknown-unknown"
    rustup target add wasm32-unknown-unknown
fi

want_bindgen=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')
have_bindgen=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
if [ "$have_bindgen" != "$want_bindgen" ]; then
    echo "==> cargo install wasm-bindgen-cli $want_bindgen (about 2 to 6 minutes)"
    # No --locked: the CLI's own lockfile pins a yanked crate.
    cargo install wasm-bindgen-cli --version "$want_bindgen" --force
fi

if [ "$want_test" = 1 ]; then
    apt_install chromium chromium-driver postgresql fonts-dejavu-core curl sqlite3
    lock_sum=$(sha256sum end2end/package-lock.json | cut -d' ' -f1)
    if [ ! -x end2end/node_modules/.bin/playwright ] || [ "$(cat end2end/node_modules/.medpo-lock-sha256 2>/dev/null)" != "$lock_sum" ]; then
        echo "==> npm ci (Playwright test runner; uses the system Chromium)"
        (cd end2end && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
        echo "$lock_sum" > end2end/node_modules/.medpo-lock-sha256
    fi
fi
echo "==> setup done"
