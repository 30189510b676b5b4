#!/usr/bin/env bash
# `minfer bench` on the CPU with a tiny synthesized model: a markdown row for pp and for tg (both at a
# depth, as llama-bench's -d, and with a window whose ring the new tokens wrap), JSON output, and bad
# flags as one error line with exit code 1.
set -euo pipefail
minfer="$1"
fail() { echo "FAIL: $*" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$minfer" synth --shape smollm2-135m --type q4_0 --layers 2 -t 2 -o "$tmp/s.gguf" >/dev/null

out=$("$minfer" bench -m "$tmp/s.gguf" -p 32 -n 8 -r 2 --depth 40 --device cpu -t 2)
grep -qE '^\| llama \| cpu \| flash \| .* \| pp32 @ d40 \| [0-9.]+ ± [0-9.]+ \|' <<<"$out" || fail "no pp32 @ d40 row: $out"
grep -qE '^\| llama \| cpu \| flash \| .* \| tg8 @ d40 \| [0-9.]+ ± [0-9.]+ \| [0-9.]+ \| n/a \|$' <<<"$out" || fail "no tg8 @ d40 row: $out"
# 2 layers x 768 bytes (3 KV heads of 64, f16 K and V) x 73 positions (depth 40 + the longer of 32
# and 8, + 1), measured as planned.
grep -qF 'KV cache: 0.11 MiB planned, 0.11 MiB allocated' <<<"$out" || fail "no KV cache line: $out"

# A 16-token window with 2 sinks at depth 40: every repetition rewinds across a wrapped ring.
out=$("$minfer" bench -m "$tmp/s.gguf" -p 0 -n 8 -r 2 --depth 40 --kv-window 16 --kv-sinks 2 --device cpu -t 2)
grep -qE '\| tg8 @ d40 \| [0-9.]+ ± [0-9.]+ \|' <<<"$out" || fail "no windowed tg row: $out"
! grep -q "pp0" <<<"$out" || fail "-p 0 printed a pp row: $out"
# A prompt at depth through the same window: each repetition rewinds the ring the prompt wrapped.
out=$("$minfer" bench -m "$tmp/s.gguf" -p 16 -n 0 -r 2 --depth 20 --kv-window 16 --kv-sinks 2 --device cpu -t 2)
grep -qE '\| pp16 @ d20 \| [0-9.]+ ± [0-9.]+ \|' <<<"$out" || fail "no windowed pp row at depth: $out"

json=$("$minfer" bench -m "$tmp/s.gguf" -p 16 -n 4 -r 1 -o json --device cpu -t 2)
grep -q '"tg": {"n": 4, "tok_s": ' <<<"$json" || fail "json lacks tg: $json"
grep -q '"kv_planned_bytes": 26112, "kv_allocated_bytes": 26112' <<<"$json" || fail "json lacks the KV bytes: $json"

check_error() {  # check_error WHAT FRAGMENT ARGS...: exit code 1, one line on stderr
    local what="$1" fragment="$2"; shift 2
    local rc=0
    "$minfer" bench "$@" >"$tmp/out" 2>"$tmp/err" || rc=$?
    [ "$rc" = 1 ] || fail "$what: exit code $rc, expected 1"
    [ "$(wc -l <"$tmp/err")" = 1 ] || fail "$what: stderr is not one line: $(cat "$tmp/err")"
    grep -qF -- "$fragment" "$tmp/err" || fail "$what: stderr lacks '$fragment': $(cat "$tmp/err")"
}
check_error "unknown flag" "--bogus" -m "$tmp/s.gguf" --bogus
check_error "missing file" "$tmp/none.gguf" -m "$tmp/none.gguf" --device cpu
check_error "bad depth" "--depth" -m "$tmp/s.gguf" --depth x --device cpu
# --launch-floor measures the GPU: without one (CI, or a build without CUDA) it says why, in one line.
if ! nvidia-smi -L >/dev/null 2>&1; then
    check_error "launch floor without a GPU" "--launch-floor needs" --launch-floor
fi
# --busy times the device's own work; the CPU backend does not time itself.
check_error "busy on the CPU" "--busy needs a backend" -m "$tmp/s.gguf" --device cpu -p 0 -n 2 -r 1 --busy
echo "bench CLI: ok"
