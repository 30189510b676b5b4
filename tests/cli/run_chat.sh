#!/usr/bin/env bash
# `minfer run` and `minfer chat` from the outside: bad input (missing file, not GGUF, unknown
# architecture, bad flag, a prompt larger than the context) is one line on stderr and exit code 1;
# the default model answers a factual question greedily; the chat reads piped turns and exits.
set -euo pipefail
minfer="$1"
shared="${MINFER_SHARED_DIR:?MINFER_SHARED_DIR must point at the shared test data}"
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

check_error "missing file" "/nonexistent/model.gguf" "$minfer" run -m /nonexistent/model.gguf -p hi
check_error "not a GGUF file" "README.md" "$minfer" run -m README.md -p hi
check_error "unknown architecture" "unknown architecture 'bert'" \
    "$minfer" run -m "$shared/vocab/ggml-vocab-bert-bge.gguf" -p hi
check_error "bad flag" "unknown flag '--bogus'" "$minfer" run -m "$model" --bogus
check_error "bad value" "--temp expects a number" "$minfer" run -m "$model" -p hi --temp warm
check_error "no model" "no model given" "$minfer" chat
check_error "prompt larger than the context" "raise -c" \
    "$minfer" run -m "$model" -c 8 -p "one two three four five six seven eight nine ten eleven twelve"
check_error "unknown chat template" "unknown chat template 'nope'" "$minfer" chat -m "$model" --chat-template nope
check_error "unknown command" "unknown command 'frobnicate'" "$minfer" frobnicate

prompt=$'<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n'
out=$("$minfer" run -m "$model" -p "$prompt" -n 12 --temp 0 -t 2)
grep -q "Paris" <<<"$out" || fail "run did not answer Paris: $out"

# On the CPU the weights are read where the file is mapped; --no-mmap copies them, same tokens.
"$minfer" run -m "$model" -p "$prompt" -n 12 --temp 0 -t 2 --device cpu -v >"$tmp/mapped" 2>"$tmp/mapped.err"
"$minfer" run -m "$model" -p "$prompt" -n 12 --temp 0 -t 2 --device cpu -v --no-mmap >"$tmp/copied" 2>"$tmp/copied.err"
grep -q "of weights mapped from the file" "$tmp/mapped.err" || fail "mapped: $(cat "$tmp/mapped.err")"
grep -q "of weights in cpu memory" "$tmp/copied.err" || fail "--no-mmap: $(cat "$tmp/copied.err")"
cmp -s "$tmp/mapped" "$tmp/copied" || fail "--no-mmap changed the tokens: $(cat "$tmp/mapped") / $(cat "$tmp/copied")"

# The prompt may come from standard input.
out=$(printf '%s' "$prompt" | "$minfer" run -m "$model" -n 12 --temp 0 -t 2)
grep -q "Paris" <<<"$out" || fail "run from stdin did not answer Paris: $out"

out=$(printf 'What is the capital of France?\n/reset\n/exit\n' | "$minfer" chat -m "$model" --temp 0 -n 16 -t 2 2>/dev/null)
[ "$(grep -c '^> ' <<<"$out")" -ge 3 ] || fail "chat did not prompt three times: $out"
[ -n "$(sed -n '2p' <<<"$out" | sed 's/^> //')" ] || fail "chat gave an empty reply: $out"
grep -q "(conversation reset)" <<<"$out" || fail "chat did not reset: $out"
echo "run/chat CLI: ok"
