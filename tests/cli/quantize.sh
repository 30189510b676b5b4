#!/usr/bin/env bash
# `minfer quantize`: a synth model quantized to q4_k_m (summary, tensor types, it runs) and requantized;
# a bad TYPE, a missing, malformed or non-GGUF input, bad flags: exit 1, one line, no OUT and no staged OUT.partial-*.
set -euo pipefail
minfer="$1"
fail() { echo "FAIL: $*" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$minfer" synth --shape smollm2-135m --type f16 --layers 2 --seed 3 -t 2 -o "$tmp/in.gguf" >/dev/null

# stderr is not a terminal here: no progress lines, so stderr stays empty.
out=$("$minfer" quantize -t 2 "$tmp/in.gguf" "$tmp/q.gguf" q4_k_m 2>"$tmp/err")
[ ! -s "$tmp/err" ] || fail "quantize wrote to stderr: $(cat "$tmp/err")"
grep -q "^wrote $tmp/q.gguf (q4_k_m)" <<<"$out" || fail "summary: $out"
grep -qE '^  input: +[0-9.]+ MiB +16.00 bits per weight$' <<<"$out" || fail "input line: $out"
grep -qE '^  output: +[0-9.]+ MiB +[0-9.]+ bits per weight$' <<<"$out" || fail "output line: $out"
grep -qF '  tensors: f32: 5, q4_k: 1, q5_0: 11, q6_k: 1, q8_0: 2' <<<"$out" || fail "type counts: $out"
! compgen -G "$tmp/q.gguf.partial-*" >/dev/null || fail "left a staged q.gguf.partial-* behind"

info=$("$minfer" info "$tmp/q.gguf")
grep -qE 'general.file_type +u32 +15$' <<<"$info" || fail "file_type is not 15 (Q4_K_M)"
grep -qE 'general.quantization_version +u32 +2$' <<<"$info" || fail "quantization_version is not 2"
grep -qE 'blk.1.ffn_down.weight +q6_k ' <<<"$info" || fail "blk.1.ffn_down is not q6_k (use_more_bits layer)"
grep -qE 'blk.0.ffn_down.weight +q4_k ' <<<"$info" || fail "blk.0.ffn_down is not q4_k"
grep -qE 'blk.0.attn_q.weight +q5_0 ' <<<"$info" || fail "rows of 576: attn_q should fall back to q5_0"
grep -qE 'token_embd.weight +q8_0 ' <<<"$info" || fail "tied token_embd should be q8_0"
"$minfer" run -m "$tmp/q.gguf" -p "hello world" -n 4 --temp 0 -t 2 --device cpu >/dev/null || fail "run failed"

# Requantizing warns once (one line) and works.
"$minfer" quantize -t 2 "$tmp/q.gguf" "$tmp/r.gguf" q8_0 >/dev/null 2>"$tmp/err" || fail "requantize failed"
[ "$(wc -l <"$tmp/err")" = 1 ] && grep -q "warning: tensor .* is already" "$tmp/err" || fail "requantize warning: $(cat "$tmp/err")"

check_error() {  # check_error WHAT FRAGMENT ARGS...: exit 1, nothing on stdout, one stderr line, no output files
    local what="$1" fragment="$2"; shift 2
    local rc=0
    "$minfer" quantize "$@" >"$tmp/out" 2>"$tmp/err" || rc=$?
    [ "$rc" = 1 ] || fail "$what: exit code $rc, expected 1"
    [ ! -s "$tmp/out" ] || fail "$what: printed to stdout"
    [ "$(wc -l <"$tmp/err")" = 1 ] || fail "$what: stderr is not one line: $(cat "$tmp/err")"
    grep -qF -- "$fragment" "$tmp/err" || fail "$what: stderr lacks '$fragment': $(cat "$tmp/err")"
    [ ! -e "$tmp/x.gguf" ] && ! compgen -G "$tmp/x.gguf.partial-*" >/dev/null || fail "$what: left an output file"
}
check_error "bad type" "unknown type 'q3_k' (types: q8_0, q4_0" "$tmp/in.gguf" "$tmp/x.gguf" q3_k
check_error "missing input" "cannot open" "$tmp/none.gguf" "$tmp/x.gguf" q4_0
for f in tests/fixtures/malformed/*.gguf; do
    check_error "malformed $(basename "$f")" "$(basename "$f")" "$f" "$tmp/x.gguf" q4_0
done
check_error "not GGUF" "not a GGUF file" README.md "$tmp/x.gguf" q4_0
check_error "two arguments" "expected IN.gguf OUT.gguf TYPE, got 2" "$tmp/in.gguf" "$tmp/x.gguf"
check_error "bad threads" "-t expects an integer" -t 0 "$tmp/in.gguf" "$tmp/x.gguf" q4_0
check_error "unknown flag" "unknown option '--bogus'" --bogus "$tmp/in.gguf" "$tmp/x.gguf" q4_0
check_error "unwritable output" "cannot create" "$tmp/in.gguf" /nonexistent/dir/x.gguf q4_0

"$minfer" quantize --help | grep -q "usage: minfer quantize" || fail "--help"
echo "ok"
