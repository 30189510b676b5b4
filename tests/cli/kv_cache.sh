#!/usr/bin/env bash
# The KV-cache flags from the outside: --verbose prints the per-layer plan before loading; bad
# values are one line and exit 1; a quantized cache still answers; a chat past -c drops old turns
# instead of failing; with --kv-window a chat runs past -c with the same cache.
set -euo pipefail
minfer="$1"
model="${MINFER_CACHE:-$HOME/.cache/minfer}/SmolLM2-135M-Instruct.Q4_1.gguf"
[ -f "$model" ] || { echo "FAIL: missing $model (run make model)" >&2; exit 1; }
fail() { echo "FAIL: $*" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

check_error() {  # check_error WHAT FRAGMENT ARGS...
    local what="$1" fragment="$2"; shift 2
    local rc=0
    "$@" </dev/null >"$tmp/out" 2>"$tmp/err" || rc=$?
    [ "$rc" = 1 ] || fail "$what: exit code $rc, expected 1 (stderr: $(cat "$tmp/err"))"
    [ "$(wc -l <"$tmp/err")" = 1 ] || fail "$what: expected one line on stderr, got: $(cat "$tmp/err")"
    grep -qF -- "$fragment" "$tmp/err" || fail "$what: stderr lacks '$fragment': $(cat "$tmp/err")"
}

check_error "unknown cache type" "-ctk: KV-cache type 'q2_k' is not supported (supported: f16, q8_0, q4_0)" \
    "$minfer" run -m "$model" -p hi -ctk q2_k
check_error "sinks without a window" "--kv-sinks needs a window" "$minfer" run -m "$model" -p hi --kv-sinks 4
check_error "negative window" "--kv-window expects an integer" "$minfer" run -m "$model" -p hi --kv-window -3

prompt=$'<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n'
out=$("$minfer" run -m "$model" -p "$prompt" -n 12 --temp 0 -t 2 -ctk q8_0 -ctv q8_0 --verbose 2>"$tmp/err")
grep -q "Paris" <<<"$out" || fail "run with a q8_0 cache did not answer Paris: $out"
grep -q "0-29    GQA        full        0      4096    q8_0    q8_0" "$tmp/err" || fail "no plan printed: $(cat "$tmp/err")"
grep -q "total   " "$tmp/err" || fail "no plan total: $(cat "$tmp/err")"

# -c 160: the third question no longer fits with the first two turns, so the oldest are dropped.
turns=$'Tell me about the history of Paris in detail.\nTell me about the history of Rome in detail.\nAnd London?\n/exit\n'
out=$(printf '%s' "$turns" | "$minfer" chat -m "$model" --temp 0 -n 40 -c 160 -t 2 2>/dev/null)
grep -q "dropped the oldest" <<<"$out" || fail "chat past -c did not drop turns: $out"

# Streaming: a window of 64 with 4 sinks in a context of 96 runs three long replies.
out=$(printf '%s' "$turns" | "$minfer" chat -m "$model" --temp 0 -n 60 -c 96 --kv-window 64 --kv-sinks 4 -t 2 --verbose 2>"$tmp/err")
grep -q "every layer windowed (streaming)" "$tmp/err" || fail "streaming plan not printed: $(cat "$tmp/err")"
grep -q "dropped" <<<"$out" && fail "streaming chat dropped turns: $out"
grep -qE "context [0-9]+/96" "$tmp/err" || fail "no context line: $(cat "$tmp/err")"
n_past=$(grep -oE "context [0-9]+/96" "$tmp/err" | tail -1 | sed -E 's/context ([0-9]+)\/96/\1/')
[ "$n_past" -gt 96 ] || fail "streaming chat stayed within -c ($n_past): $(cat "$tmp/err")"
echo "KV cache CLI: ok"
