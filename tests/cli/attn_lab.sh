#!/usr/bin/env bash
# `minfer attn-lab`: a 2-layer SmolLM2-shaped run on the CPU finishes quickly and writes the table,
# the JSON and the four charts; bad flags are one error line.
set -euo pipefail
minfer="$1"
fail() { echo "FAIL: $*" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

start=$(date +%s)
out=$("$minfer" attn-lab --shape smollm2-135m --layers 2 --ctx 64,128 -n 4 -r 1 --device cpu -o "$tmp/out" \
      --quality-model none \
      2>"$tmp/log") || fail "attn-lab failed: $(cat "$tmp/log")"
elapsed=$(( $(date +%s) - start ))
[ "$elapsed" -lt 45 ] || fail "took $elapsed s"
grep -q "^wrote $tmp/out/attn-lab.md, attn-lab.json and 4 charts: 4 variants x 2 context lengths" <<<"$out" \
    || fail "summary line was '$out'"

md="$tmp/out/attn-lab.md"
for v in MHA MQA MLA-256 MLA-512; do
    grep -qE "^\| $v \| (MHA|GQA|MQA|MLA) \|" "$md" || fail "table lacks the $v row"
    grep -qE "^\| $v \| 128 \| [0-9.]+ \+- [0-9.]+ \|" "$md" || fail "no decode speed for $v at ctx 128"
done
grep -qF 'n/a (no quality model)' "$md" || fail "quality column missing"
grep -qF 'device: CPU' "$md" || fail "device line missing"
grep -qF -- "--shape smollm2-135m --layers 2" "$md" || fail "command missing"

python3 - "$tmp/out/attn-lab.json" <<'PY' || fail "JSON check failed"
import json, sys
j = json.load(open(sys.argv[1]))
names = [v["name"] for v in j["variants"]]
assert names == ["MHA", "MQA", "MLA-256", "MLA-512"], names
mha, mqa, mla = j["variants"][0], j["variants"][1], j["variants"][2]
assert mha["kv_bytes_per_token"]["f16"]["layer"] == 2 * 576 * 2   # K and V of 9 heads of 64
assert mqa["kv_bytes_per_token"]["f16"]["layer"] == 2 * 64 * 2    # one head
assert mla["kv_bytes_per_token"]["f16"]["layer"] == (256 + 32) * 2  # latent + rope dims
assert j["not_run"] == ["GQA-2: 9 query heads do not split into groups of 2",
                        "GQA-4: 9 query heads do not split into groups of 4"], j["not_run"]
assert all(s["decode"]["tok_s"] > 0 for v in j["variants"] for s in v["speed"])
PY

for c in params kv decode prefill; do
    f="$tmp/out/attn-lab-$c.png"
    [ -s "$f" ] || fail "no chart $c"
    [ "$(head -c 8 "$f" | od -An -tx1 | tr -d ' ')" = "89504e470d0a1a0a" ] || fail "$c is not a PNG"
done

check_error() {  # check_error WHAT FRAGMENT ARGS...: exit code 1, one line on stderr
    local what="$1" fragment="$2"; shift 2
    local rc=0
    "$minfer" attn-lab "$@" >"$tmp/o" 2>"$tmp/e" || rc=$?
    [ "$rc" = 1 ] || fail "$what: exit code $rc, expected 1"
    [ "$(wc -l <"$tmp/e")" = 1 ] || fail "$what: stderr is not one line: $(cat "$tmp/e")"
    grep -qF -- "$fragment" "$tmp/e" || fail "$what: stderr lacks '$fragment': $(cat "$tmp/e")"
}
check_error "unknown shape" "unknown shape 'gpt-5'" --shape gpt-5 --device cpu -o "$tmp/x"
check_error "bad ctx" "--ctx expects an integer" --ctx 128,abc -o "$tmp/x"
check_error "bad device" "--device expects auto, cpu or cuda" --device tpu -o "$tmp/x"
check_error "both bases" "give --shape or -m, not both" --shape llama-1b -m x.gguf
echo ok
