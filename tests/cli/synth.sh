#!/usr/bin/env bash
# `minfer synth`: a tiny file in a real model's shape that `minfer info` reads and `minfer run`
# generates from; bad flags (unknown shape or type, missing output, bad numbers) are one error line.
set -euo pipefail
minfer="$1"
fail() { echo "FAIL: $*" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

out=$("$minfer" synth --shape smollm2-135m --type q4_0 --layers 1 --seed 7 -t 2 -o "$tmp/s.gguf")
grep -q "^wrote $tmp/s.gguf: smollm2-135m q4_0, 11 tensors" <<<"$out" || fail "summary line was '$out'"

info=$("$minfer" info "$tmp/s.gguf")
grep -q 'general.name .*"minfer synth smollm2-135m"' <<<"$info" || fail "info lacks general.name: $info"
grep -qE 'llama.block_count +u32 +1$' <<<"$info" || fail "info lacks block_count 1"
grep -qE 'blk.0.ffn_down.weight +q4_0 +\[1536, 576\]' <<<"$info" || fail "info lacks ffn_down as q4_0 [1536, 576]"

"$minfer" run -m "$tmp/s.gguf" -p "hello world" -n 4 --temp 0 -t 2 --device cpu >/dev/null || fail "run failed"

# The same flags give the same file.
"$minfer" synth --shape smollm2-135m --type q4_0 --layers 1 --seed 7 -t 1 -o "$tmp/t.gguf" >/dev/null
cmp -s "$tmp/s.gguf" "$tmp/t.gguf" || fail "equal flags gave different files"

check_error() {  # check_error WHAT FRAGMENT ARGS...: exit code 1, nothing on stdout, one line on stderr
    local what="$1" fragment="$2"; shift 2
    local rc=0
    "$minfer" synth "$@" >"$tmp/out" 2>"$tmp/err" || rc=$?
    [ "$rc" = 1 ] || fail "$what: exit code $rc, expected 1"
    [ ! -s "$tmp/out" ] || fail "$what: printed to stdout"
    [ "$(wc -l <"$tmp/err")" = 1 ] || fail "$what: stderr is not one line: $(cat "$tmp/err")"
    grep -qF -- "$fragment" "$tmp/err" || fail "$what: stderr lacks '$fragment': $(cat "$tmp/err")"
}
check_error "unknown shape" "shapes: llama-1b, llama-8b, smollm2-135m, qwen2-0.5b" \
    --shape gpt-5 --type q4_0 -o "$tmp/x.gguf"
check_error "unknown type" "types: f32, f16, bf16, q8_0, q4_0" --shape llama-1b --type q3_k -o "$tmp/x.gguf"
check_error "no shape" "missing --shape" --type q4_0 -o "$tmp/x.gguf"
check_error "no type" "missing --type" --shape llama-1b -o "$tmp/x.gguf"
check_error "no output" "missing -o" --shape llama-1b --type q4_0
check_error "zero layers" "--layers expects an integer in 1..4096" --shape llama-1b --type q4_0 --layers 0 -o "$tmp/x.gguf"
check_error "bad seed" "--seed expects an integer" --shape llama-1b --type q4_0 --seed x -o "$tmp/x.gguf"
check_error "flag without value" "needs a value" --shape llama-1b --type q4_0 -o
check_error "unknown flag" "unknown option '--bogus'" --bogus
check_error "unwritable output" "cannot create" --shape smollm2-135m --type q4_0 --layers 1 -o /nonexistent/dir/x.gguf
[ ! -e "$tmp/x.gguf" ] || fail "a failed synth left a file"

"$minfer" synth --help | grep -q "usage: minfer synth" || fail "--help"
echo "ok"
