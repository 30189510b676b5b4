#!/usr/bin/env bash
# `minfer perplexity`: bad input (flags, missing files, a text too short) as one error line with exit
# code 1; on the default SmolLM2 model when present, the output format and a KL base saved and compared.
set -euo pipefail
minfer="$1"
model="${MINFER_CACHE:-$HOME/.cache/minfer}/SmolLM2-135M-Instruct.Q4_1.gguf"
text="tests/data/botchan.txt"
fail() { echo "FAIL: $*" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

check_error() {  # check_error WHAT ARGS...: exit code 1, nothing on stdout, one line on stderr
    local what="$1"; shift
    local rc=0
    "$minfer" perplexity "$@" >"$tmp/out" 2>"$tmp/err" || rc=$?
    [ "$rc" = 1 ] || fail "$what: exit code $rc, expected 1"
    [ ! -s "$tmp/out" ] || fail "$what: printed to stdout"
    [ "$(wc -l <"$tmp/err")" = 1 ] || fail "$what: stderr is not one line: $(cat "$tmp/err")"
    grep -q "^minfer perplexity: error: " "$tmp/err" || fail "$what: $(cat "$tmp/err")"
}
check_error "no model flag" -f "$text"
check_error "missing model file" -m /nonexistent/model.gguf -f "$text"
check_error "unknown flag" -m /nonexistent/model.gguf -f "$text" --bogus
check_error "--chunks without a value" -m /nonexistent/model.gguf -f "$text" --chunks
check_error "--chunks 0" -m /nonexistent/model.gguf -f "$text" --chunks 0
check_error "-b not a number" -m /nonexistent/model.gguf -f "$text" -b x
check_error "a KL base that is not one" -m /nonexistent/model.gguf --kl-base "$text"
"$minfer" perplexity --help | grep -q "usage: minfer perplexity" || fail "--help"

if [ ! -f "$model" ]; then
    echo "ok (skipped the model runs: $model is absent; \`make model\` fetches it)"
    exit 0
fi
check_error "missing text file" -m "$model" -f /nonexistent/text.txt
check_error "no text" -m "$model"
head -c 300 "$text" >"$tmp/short.txt"
check_error "a text shorter than two chunks" -m "$model" -f "$tmp/short.txt" -c 128
grep -q "needs at least 256 (two chunks)" "$tmp/err" || fail "short text: $(cat "$tmp/err")"

# A base run: progress "[1]x,[2]y," on stderr, "PPL = X +/- Y" alone on stdout, the base saved.
"$minfer" perplexity -m "$model" -f "$text" -c 128 --chunks 2 --kl-base "$tmp/base.kl" >"$tmp/out" 2>"$tmp/err" \
    || fail "base run: $(cat "$tmp/err")"
grep -Eq '^\[1\][0-9]+\.[0-9]{4},\[2\][0-9]+\.[0-9]{4},$' "$tmp/err" || fail "progress line: $(cat "$tmp/err")"
grep -Eq '^PPL = [0-9]+\.[0-9]{4} \+/- [0-9]+\.[0-9]{5}$' "$tmp/out" || fail "result: $(cat "$tmp/out")"
[ "$(wc -l <"$tmp/out")" = 1 ] || fail "stdout has more than the result: $(cat "$tmp/out")"
[ -s "$tmp/base.kl" ] || fail "no KL base written"
ppl=$(sed 's/^PPL = \([0-9.]*\).*/\1/' "$tmp/out")
awk -v p="$ppl" 'BEGIN { exit !(p > 1 && p < 1000) }' || fail "PPL $ppl is not plausible for SmolLM2 on English"

# The same run compared with its base: KL ~ 0, every top token the same, PPL ratio 1.
"$minfer" perplexity -m "$model" -f "$text" -c 128 --chunks 2 --kl-base "$tmp/base.kl" >"$tmp/out" 2>"$tmp/err" \
    || fail "compare run: $(cat "$tmp/err")"
grep -qx "PPL = $ppl +/- .*" "$tmp/out" || fail "compare run PPL differs: $(cat "$tmp/out")"
grep -Eq '^KL divergence = -?0\.0000[0-9]{2} \+/- ' "$tmp/out" || fail "self KL: $(cat "$tmp/out")"
grep -qx "same top token = 100.000% +/- 0.000%" "$tmp/out" || fail "same top: $(cat "$tmp/out")"
grep -qx "PPL ratio = 1.00000 +/- 0.00000" "$tmp/out" || fail "PPL ratio: $(cat "$tmp/out")"
check_error "a base made with another -c" -m "$model" -c 64 --kl-base "$tmp/base.kl"
echo "ok"
