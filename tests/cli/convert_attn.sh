#!/usr/bin/env bash
# `minfer convert --attn`: a one-layer SmolLM2-shaped file (minfer synth) converted to GQA-3, MQA and
# MLA runs; bad specs and unsupported files exit 1 with one line on stderr and leave no output file.
# Usage (from the repo root): bash tests/cli/convert_attn.sh path/to/minfer
set -u
minfer="${1:?usage: convert_attn.sh path/to/minfer}"
work=$(mktemp -d)
err="$work/stderr"
trap 'rm -rf "$work"' EXIT
failures=0

fail() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}

# 9 query heads, 3 KV heads of 64, n_embd 576.
"$minfer" synth --shape smollm2-135m --type q8_0 --layers 1 --seed 3 -t 2 -o "$work/in.gguf" >/dev/null ||
    { echo "FAIL: synth"; exit 1; }

# A GGUF whose architecture --attn does not convert (no tensors needed: it is refused first).
python3 - "$work/mamba.gguf" <<'EOF'
import struct, sys
key, val = b"general.architecture", b"mamba"
b = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(key)) + key + struct.pack("<IQ", 8, len(val)) + val
b += b"\0" * (-len(b) % 32)
open(sys.argv[1], "wb").write(b)
EOF

for spec in gqa:3 mqa mla:64 mla:128:16; do
    out="$work/ok.gguf"
    if ! "$minfer" convert --attn "$spec" "$work/in.gguf" "$out" -t 2 >"$work/stdout" 2>"$err"; then
        fail "--attn $spec: $(head -c 300 "$err")"
        continue
    fi
    grep -q "^wrote $out" "$work/stdout" || fail "--attn $spec: no summary line: $(cat "$work/stdout")"
    "$minfer" run -m "$out" -p "hello world" -n 3 --temp 0 -t 2 --device cpu >/dev/null 2>"$err" ||
        fail "--attn $spec: the converted file does not run: $(head -c 300 "$err")"
    rm -f "$out"
done

# expect_error FRAGMENT ARGS...: `minfer convert ARGS...` (writing $work/out.gguf) fails as described.
expect_error() {
    local fragment="$1"
    shift
    "$minfer" convert "$@" >/dev/null 2>"$err"
    local rc=$? lines
    lines=$(wc -l <"$err")
    if [[ $rc -ne 1 ]]; then
        fail "convert $* exited $rc (want 1): $(head -c 300 "$err")"
    elif [[ $lines -ne 1 ]]; then
        fail "convert $* wrote $lines lines on stderr (want 1): $(head -c 300 "$err")"
    elif ! grep -qF -- "$fragment" "$err"; then
        fail "convert $*: '$(cat "$err")' lacks '$fragment'"
    fi
    if [[ -e "$work/out.gguf" ]] || compgen -G "$work/out.gguf.partial-*" >/dev/null; then
        fail "convert $* left an output file behind"
        rm -f "$work/out.gguf" "$work"/out.gguf.partial-*
    fi
}

expect_error "must divide attention.head_count (9)" --attn gqa:2 "$work/in.gguf" "$work/out.gguf"
expect_error "asks for 9 KV heads" --attn gqa:1 "$work/in.gguf" "$work/out.gguf"
expect_error "--attn 'mla:0'" --attn mla:0 "$work/in.gguf" "$work/out.gguf"
expect_error "--attn 'mla:8:3'" --attn mla:8:3 "$work/in.gguf" "$work/out.gguf"
expect_error "--attn 'mha'" --attn mha "$work/in.gguf" "$work/out.gguf"
expect_error "at most embedding_length (576)" --attn mla:577 "$work/in.gguf" "$work/out.gguf"
expect_error "not architecture 'mamba'" --attn mqa "$work/mamba.gguf" "$work/out.gguf"
expect_error "needs IN.gguf and OUT.gguf" --attn mqa "$work/in.gguf"
expect_error "unknown --type" --attn mqa "$work/in.gguf" "$work/out.gguf" --type q9_9
expect_error "cannot open" --attn mqa "$work/missing.gguf" "$work/out.gguf"

if [[ $failures -gt 0 ]]; then
    echo "$failures failure(s)"
    exit 1
fi
echo "convert_attn: all passed"
