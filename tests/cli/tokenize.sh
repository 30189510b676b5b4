#!/usr/bin/env bash
# `minfer tokenize`: ids of a known text under the llama-spm vocabulary (BOS per the model's flag),
# the per-token listing, and bad input (missing model, bad flags) as one error line with exit code 1.
set -euo pipefail
minfer="$1"
vocab="${MINFER_SHARED_DIR:?MINFER_SHARED_DIR must point at the shared test data}/vocab/ggml-vocab-llama-spm.gguf"
fail() { echo "FAIL: $*" >&2; exit 1; }

out=$("$minfer" tokenize -m "$vocab" -p "Hello world" --ids)
[ "$out" = "[1, 15043, 3186]" ] || fail "--ids printed '$out', expected '[1, 15043, 3186]'"

out=$("$minfer" tokenize -m "$vocab" -p "Hello world" --ids --no-bos)
[ "$out" = "[15043, 3186]" ] || fail "--no-bos printed '$out'"

out=$("$minfer" tokenize -m "$vocab" -p "Hello world")
expected=$'1 -> \'<s>\'\n15043 -> \' Hello\'\n3186 -> \' world\''
[ "$out" = "$expected" ] || fail "listing was '$out'"

# Special tokens in the text are single ids; the text can come from a file.
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
printf '<s>Hello world</s>' >"$tmp"
out=$("$minfer" tokenize -m "$vocab" -f "$tmp" --ids --no-bos)
[ "$out" = "[1, 15043, 3186, 2]" ] || fail "-f with special tokens printed '$out'"

check_error() {  # check_error WHAT ARGS...: exit code 1, nothing on stdout, one line on stderr
    local what="$1"; shift
    local rc=0
    "$minfer" tokenize "$@" >"$tmp.out" 2>"$tmp.err" || rc=$?
    [ "$rc" = 1 ] || fail "$what: exit code $rc, expected 1"
    [ ! -s "$tmp.out" ] || fail "$what: printed to stdout"
    [ "$(wc -l <"$tmp.err")" = 1 ] || fail "$what: stderr is not one line: $(cat "$tmp.err")"
    rm -f "$tmp.out" "$tmp.err"
}
check_error "missing model file" -m /nonexistent/model.gguf -p "Hello"
check_error "no model flag" -p "Hello"
check_error "no text" -m "$vocab"
check_error "unknown flag" -m "$vocab" -p "Hello" --bogus
check_error "WordPiece vocabulary" -m "${vocab%/*}/ggml-vocab-bert-bge.gguf" -p "Hello"

"$minfer" tokenize --help | grep -q "usage: minfer tokenize" || fail "--help"
echo "ok"
