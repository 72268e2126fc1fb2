#!/usr/bin/env bash
# The OpenAI-compatible API against the release server, from outside: `curl` and the official
# `openai` Python package (pinned, in a venv under target/). Called by scripts/test.sh after
# the release build; prints "api: N passed, M failed".
#   - starts `target/release/medpo serve` on a free loopback port, fresh data folder, the tiny
#     fixture models; makes a clinician and an API key with the CLI;
#   - curl: model list, a completion with an image, a streamed one ending in [DONE], and the
#     error statuses (401 no key, 404 unknown model, 400 malformed JSON, 415 wrong type);
#   - pytest end2end/api (the openai client: list, whole and streamed completions with an
#     image, DICOM, logprobs, error classes).
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${MEDPO_SHARED:-$(cd .. && pwd)/shared}
bin=target/release/medpo

venv=target/api-venv
if [ ! -x "$venv/bin/pytest" ] || ! "$venv/bin/python" -c 'import openai' 2>/dev/null; then
    echo "==> python venv for the API client tests (openai, pytest from PyPI)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "openai==3.51.0" "pytest==8.*"
fi

dir=$(mktemp -d /tmp/medpo-api.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
MEDPO_PASSWORD=clinician-password "$bin" user add apiuser --role clinician --data-dir "$dir/data" >/dev/null
key=$("$bin" api-key create apiuser --name ci --data-dir "$dir/data" 2>/dev/null)
burst=$("$bin" api-key create apiuser --name burst --data-dir "$dir/data" 2>/dev/null)
"$bin" serve --bind "127.0.0.1:$port" --data-dir "$dir/data" --models-dir "$shared/fixtures/v1" --log warn \
    --max-upload-mb 1 --api-rate-limit 30 >"$dir/log" 2>&1 &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
base="http://127.0.0.1:$port/v1"

passed=0; failed=0
check() { # name, expected status, actual status, [body grep]
    if [ "$2" = "$3" ] && { [ -z "${4:-}" ] || grep -q -- "$4" "$dir/out"; }; then
        passed=$((passed + 1)); echo "  ok    curl: $1"
    else
        failed=$((failed + 1)); echo "  FAIL  curl: $1 (status $3, wanted $2)"; head -c 400 "$dir/out"; echo
    fi
}
req() { curl -s -o "$dir/out" -w '%{http_code}' "$@"; }
png=$(base64 -w0 "$shared/fixtures/v1/scan.png")
body() { printf '{"model":"llava-med-tiny","max_tokens":8,%s"messages":[{"role":"user","content":[{"type":"text","text":"Is there a nodule?"},{"type":"image_url","image_url":{"url":"data:image/png;base64,%s"}}]}]}' "$1" "$png"; }

echo "==> API: curl"
check "models listed" 200 "$(req -H "Authorization: Bearer $key" "$base/models")" '"llava-med-tiny"'
body '' > "$dir/body.json"
check "completion with an image" 200 "$(req -H "Authorization: Bearer $key" -H 'Content-Type: application/json' --data-binary @"$dir/body.json" "$base/chat/completions")" '"chat.completion"'
body '"stream":true,' > "$dir/body.json"
check "streamed completion ends with [DONE]" 200 "$(req -N -H "Authorization: Bearer $key" -H 'Content-Type: application/json' --data-binary @"$dir/body.json" "$base/chat/completions")" 'data: \[DONE\]'
check "no key: 401" 401 "$(req "$base/models")" '"authentication_error"'
check "unknown model: 404" 404 "$(req -H "Authorization: Bearer $key" -H 'Content-Type: application/json' -d '{"model":"nope","messages":[{"role":"user","content":"hi"}]}' "$base/chat/completions")" '"model_not_found"'
check "malformed JSON: 400" 400 "$(req -H "Authorization: Bearer $key" -H 'Content-Type: application/json' -d '{"model":' "$base/chat/completions")" '"invalid_request_error"'
check "wrong content type: 415" 415 "$(req -H "Authorization: Bearer $key" -H 'Content-Type: text/plain' -d 'hello' "$base/chat/completions")" 'application/json'
head -c 2000000 /dev/zero | base64 -w0 | sed 's/^/{"model":"llava-med-tiny","messages":[{"role":"user","content":[{"type":"text","text":"q"},{"type":"image_url","image_url":{"url":"data:image\/png;base64,/; s/$/"}}]}]}/' > "$dir/huge.json"
check "body over the limit: 413" 413 "$(req -H "Authorization: Bearer $key" -H 'Content-Type: application/json' --data-binary @"$dir/huge.json" "$base/chat/completions")" '"invalid_request_error"'
# 30 a minute allows a burst of 30 and refills one every 2 s: a fast burst of 40 meets a 429.
code=""
for _ in $(seq 1 40); do
    code=$(req -H "Authorization: Bearer $burst" "$base/models")
    [ "$code" = 429 ] && break
done
check "over the key's rate: 429" 429 "$code" '"rate_limit_exceeded"'

echo "==> API: the openai Python package"
py_log="$dir/pytest.log"
set +e
MEDPO_API_BASE="$base" MEDPO_API_KEY="$key" MEDPO_SHARED="$shared" "$venv/bin/pytest" -q -p no:cacheprovider end2end/api 2>&1 | tee "$py_log"
set -e
py_passed=$(grep -Eo '[0-9]+ passed' "$py_log" | tail -n1 | grep -Eo '[0-9]+' || echo 0)
py_failed=$(awk '{for (i = 2; i <= NF; i++) if ($i ~ /^(failed|errors?),?$/) s += $(i-1)} END {print s+0}' "$py_log")
[ "$py_passed" -gt 0 ] || py_failed=$((py_failed + 1))
if ! kill -0 "$pid" 2>/dev/null; then echo "the server died:"; cat "$dir/log"; failed=$((failed + 1)); fi
echo "api: $((passed + py_passed)) passed, $((failed + py_failed)) failed"
[ $((failed + py_failed)) -eq 0 ]
