#!/usr/bin/env bash
# Builds MedPO Arena: the wasm front end (frontend/ → target/site/pkg, content-hashed), the
# static files (public/ → target/site) and the `medpo` server binary.
#
#   scripts/build.sh            debug build   → target/debug/medpo
#   scripts/build.sh --release  release build → target/release/medpo
#
# Needs the wasm32 target and wasm-bindgen-cli (scripts/setup.sh installs both). Uses a
# wasm-opt found on PATH only if it is binaryen ≥ 116 (Debian's 108 breaks hydration).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

release=0
features=()
for arg in "$@"; do
    case "$arg" in
        --release) release=1 ;;
        --features=*) features=(--features "${arg#--features=}") ;;
        *) echo "usage: scripts/build.sh [--release] [--features=cuda]" >&2; exit 2 ;;
    esac
done

if [ "$release" = 1 ]; then
    wasm_profile=wasm-release; wasm_dir=wasm-release; server_profile=(--release); server_dir=release
else
    wasm_profile=dev; wasm_dir=debug; server_profile=(); server_dir=debug
fi

want_bindgen=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')
have_bindgen=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
if [ "$have_bindgen" != "$want_bindgen" ]; then
    echo "error: wasm-bindgen $want_bindgen is needed (found: ${have_bindgen:-none}); run scripts/setup.sh" >&2
    exit 1
fi

echo "==> front end (wasm, profile $wasm_profile)"
cargo build -p frontend --lib --target wasm32-unknown-unknown --profile "$wasm_profile"

site=target/site
pkg="$site/pkg"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
wasm-bindgen --target web --no-typescript --out-dir "$tmp" --out-name medpo \
    "target/wasm32-unknown-unknown/$wasm_dir/frontend.wasm"
if [ "$release" = 1 ] && command -v wasm-opt >/dev/null; then
    binaryen=$(wasm-opt --version | grep -o 'version [0-9]*' | awk '{print $2}')
    if [ "${binaryen:-0}" -ge 116 ]; then
        echo "==> wasm-opt (binaryen $binaryen)"
        wasm-opt -Oz --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext --enable-reference-types \
            "$tmp/medpo_bg.wasm" -o "$tmp/medpo_bg.opt.wasm" && mv "$tmp/medpo_bg.opt.wasm" "$tmp/medpo_bg.wasm"
    else
        echo "==> skipping wasm-opt: binaryen ${binaryen:-?} is older than 116 and breaks hydration"
    fi
fi
cp style/main.css "$tmp/medpo.css"

# Content-hash the three files so they can be cached forever. The server reads the hashes
# from hash.txt next to its binary (Leptos' `hash_files` convention).
h() { sha256sum "$1" | cut -c1-16; }
js_h=$(h "$tmp/medpo.js"); wasm_h=$(h "$tmp/medpo_bg.wasm"); css_h=$(h "$tmp/medpo.css")
rm -rf "$pkg"
mkdir -p "$pkg"
cp "$tmp/medpo.js" "$pkg/medpo.$js_h.js"
cp "$tmp/medpo_bg.wasm" "$pkg/medpo.$wasm_h.wasm"
cp "$tmp/medpo.css" "$pkg/medpo.$css_h.css"
cp -r public/. "$site/"

echo "==> server (${server_profile[*]:-debug})"
cargo build -p medpo-server --bin medpo "${server_profile[@]}" "${features[@]}"
printf 'js: %s\nwasm: %s\ncss: %s\n' "$js_h" "$wasm_h" "$css_h" > "target/$server_dir/hash.txt"
echo "==> built target/$server_dir/medpo and $site ($(du -h "$pkg/medpo.$wasm_h.wasm" | cut -f1) of wasm)"
