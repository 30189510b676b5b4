#!/usr/bin/env bash
# `minfer convert` on bad input: a missing config.json, an unknown architecture, missing or corrupt
# safetensors files, a tensor of the wrong shape or dtype, bad flags. Each must exit 1 with exactly one
# line on stderr and leave neither OUT.gguf nor a staged OUT.gguf.partial-* behind.
# Usage (from the repo root): bash tests/cli/convert_errors.sh path/to/minfer
set -u
minfer="${1:?usage: convert_errors.sh path/to/minfer}"
work=$(mktemp -d)
err="$work/stderr"
trap 'rm -rf "$work"' EXIT
failures=0
n=0

fail() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}

# expect_error FRAGMENT DIR ARGS...: `minfer convert DIR -o DIR/out.gguf ARGS...` fails as described.
expect_error() {
    local fragment="$1" dir="$2"
    shift 2
    n=$((n + 1))
    "$minfer" convert "$dir" -o "$dir/out.gguf" "$@" >/dev/null 2>"$err"
    local rc=$? lines
    lines=$(wc -l <"$err")
    if [[ $rc -ne 1 ]]; then
        fail "convert $dir $* exited $rc (want 1): $(head -c 300 "$err")"
    elif [[ $lines -ne 1 ]]; then
        fail "convert $dir $* wrote $lines lines on stderr (want 1): $(head -c 300 "$err")"
    elif ! grep -qF -- "$fragment" "$err"; then
        fail "convert $dir $*: '$(cat "$err")' lacks '$fragment'"
    fi
    if [[ -e "$dir/out.gguf" ]] || compgen -G "$dir/out.gguf.partial-*" >/dev/null; then
        fail "convert $dir $* left an output file behind"
    fi
}

# make_checkpoint DIR ARCH [MUTATION]: a tiny Llama-shaped checkpoint written with the standard
# library only (no torch), optionally broken: shape, dtype, truncate, index-missing.
make_checkpoint() {
    python3 - "$@" <<'EOF'
import json, os, struct, sys
d, arch = sys.argv[1], sys.argv[2]
mutation = sys.argv[3] if len(sys.argv) > 3 else ""
os.makedirs(d, exist_ok=True)
E, L, H, F, V = 32, 1, 4, 48, 40
json.dump({"architectures": [arch], "hidden_size": E, "num_hidden_layers": L, "num_attention_heads": H,
           "num_key_value_heads": 2, "intermediate_size": F, "vocab_size": V, "rms_norm_eps": 1e-5},
          open(os.path.join(d, "config.json"), "w"))
shapes = {"model.embed_tokens.weight": [V, E], "model.norm.weight": [E], "lm_head.weight": [V, E],
          "model.layers.0.input_layernorm.weight": [E], "model.layers.0.post_attention_layernorm.weight": [E],
          "model.layers.0.self_attn.q_proj.weight": [E, E], "model.layers.0.self_attn.k_proj.weight": [E // 2, E],
          "model.layers.0.self_attn.v_proj.weight": [E // 2, E], "model.layers.0.self_attn.o_proj.weight": [E, E],
          "model.layers.0.mlp.gate_proj.weight": [F, E], "model.layers.0.mlp.up_proj.weight": [F, E],
          "model.layers.0.mlp.down_proj.weight": [E, F]}
if mutation == "shape":
    shapes["model.layers.0.self_attn.k_proj.weight"] = [E, E]
header, data = {}, b""
for name, shape in shapes.items():
    n = 1
    for s in shape:
        n *= s
    dtype = "I64" if (mutation == "dtype" and name == "model.norm.weight") else "F32"
    size = n * (8 if dtype == "I64" else 4)
    header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + size]}
    data += bytes(size)
h = json.dumps(header).encode()
blob = struct.pack("<Q", len(h)) + h + data
if mutation == "truncate":
    blob = blob[: len(blob) - 100]
if mutation == "index-missing":
    json.dump({"weight_map": {**{k: "model-00001-of-00001.safetensors" for k in shapes}, "model.extra.weight": "model-00001-of-00001.safetensors"}},
              open(os.path.join(d, "model.safetensors.index.json"), "w"))
    open(os.path.join(d, "model-00001-of-00001.safetensors"), "wb").write(blob)
else:
    open(os.path.join(d, "model.safetensors"), "wb").write(blob)
EOF
}

mkdir -p "$work/empty"
expect_error "config.json: missing" "$work/empty"

make_checkpoint "$work/gpt2" GPT2LMHeadModel
expect_error "architecture 'GPT2LMHeadModel' is not supported (supported: LlamaForCausalLM (llama)" "$work/gpt2"

make_checkpoint "$work/nofile" LlamaForCausalLM
rm "$work/nofile/model.safetensors"
expect_error "no model.safetensors" "$work/nofile"

make_checkpoint "$work/trunc" LlamaForCausalLM truncate
expect_error "the file is truncated" "$work/trunc"

make_checkpoint "$work/index" LlamaForCausalLM index-missing
expect_error "tensor 'model.extra.weight' named in the index is absent from" "$work/index"

make_checkpoint "$work/shape" LlamaForCausalLM shape
expect_error "tensor 'model.layers.0.self_attn.k_proj.weight' has shape [32, 32], but" "$work/shape"

make_checkpoint "$work/dtype" LlamaForCausalLM dtype
expect_error "tensor 'model.norm.weight' has dtype I64" "$work/dtype"

# JSON nested a million deep (a hostile file): refused before it is parsed, never a stack overflow.
deep() { python3 -c "import sys; n = 1000000; sys.stdout.write('{\"a\": ' + '[' * n + ']' * n + '}')"; }
make_checkpoint "$work/deepcfg" LlamaForCausalLM
deep >"$work/deepcfg/config.json"
expect_error "config.json: JSON nested deeper than 256 levels" "$work/deepcfg"
make_checkpoint "$work/deeptok" LlamaForCausalLM
deep >"$work/deeptok/tokenizer.json"
expect_error "tokenizer.json: JSON nested deeper than 256 levels" "$work/deeptok"

make_checkpoint "$work/ok" LlamaForCausalLM
expect_error "unknown --type 'q9'" "$work/ok" --type q9
expect_error "output type q5_1 is not supported" "$work/ok" --type q5_1
expect_error "unknown KV cache type 'q3_k'" "$work/ok" --kv-type q3_k
expect_error "--kv-window expects an integer" "$work/ok" --kv-window -3
expect_error "unknown option '--bogus'" "$work/ok" --bogus

"$minfer" convert >/dev/null 2>"$err"
[[ $? -eq 1 && $(wc -l <"$err") -eq 1 ]] && grep -qF "missing HF_DIR" "$err" || fail "convert without arguments: $(cat "$err")"
"$minfer" convert "$work/ok" >/dev/null 2>"$err"
[[ $? -eq 1 ]] && grep -qF "missing -o OUT.gguf" "$err" || fail "convert without -o: $(cat "$err")"
"$minfer" convert --help >/dev/null 2>"$err" || fail "convert --help exited $?"

if [[ $failures -ne 0 ]]; then
    echo "$failures failure(s)"
    exit 1
fi
echo "ok: $n bad conversions each gave one error line and left no output"
