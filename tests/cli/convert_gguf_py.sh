#!/usr/bin/env bash
# `minfer convert` output read by the independent `gguf` Python package (PyPI): every key and tensor
# llama.cpp writes for a sharded Llama checkpoint is intact, and f32 data equals the safetensors'.
set -euo pipefail
minfer="$1"
fail() { echo "FAIL: $*" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fixture=tests/fixtures/hf/llama_gqa  # GQA, 4 shards + model.safetensors.index.json

rc=0
"$minfer" convert "$fixture" -o "$tmp/m.gguf" --type f32 >"$tmp/out" 2>"$tmp/err" || rc=$?
[ "$rc" = 0 ] || fail "minfer convert exited $rc: $(tail -n 1 "$tmp/err")"
[ -s "$tmp/m.gguf" ] || fail "minfer convert wrote no $tmp/m.gguf"

py=python3
if ! python3 -c "import gguf, numpy" 2>/dev/null; then
    venv="${TMPDIR:-/tmp}/minfer-gguf-venv"
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv" >/dev/null || fail "cannot create a venv at $venv"
    if ! "$venv/bin/python" -c "import gguf, numpy" 2>/dev/null; then
        "$venv/bin/python" -m pip install -q gguf numpy >"$tmp/pip" 2>&1 || fail "pip install gguf numpy: $(tail -n 1 "$tmp/pip")"
    fi
    py="$venv/bin/python"
fi

"$py" - "$tmp/m.gguf" "$fixture" <<'EOF'
import json, os, struct, sys

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType

path, fixture = sys.argv[1], sys.argv[2]


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


try:
    reader = GGUFReader(path)
except Exception as e:
    fail(f"gguf.GGUFReader cannot read {path}: {type(e).__name__}: {e}")


def value(key):
    f = reader.fields.get(key)
    if f is None:
        fail(f"missing key {key}")
    t = f.types[0]
    if t == GGUFValueType.STRING:
        return bytes(f.parts[f.data[0]]).decode("utf-8")
    if t == GGUFValueType.ARRAY:
        if f.types[-1] == GGUFValueType.STRING:
            return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
        return [f.parts[i].tolist()[0] for i in f.data]
    return f.parts[f.data[0]].tolist()[0]


def expect(key, want):
    got = value(key)
    ok = abs(got - want) <= 1e-6 * abs(want) if isinstance(want, float) else got == want
    if not ok:
        fail(f"{key} is {got!r}, expected {want!r}")


# Keys llama.cpp's convert_hf_to_gguf.py writes for this checkpoint (LlamaModel, gpt2 vocab).
expect("general.architecture", "llama")
expect("general.file_type", 0)  # ALL_F32
expect("general.quantization_version", 2)
expect("llama.block_count", 2)
expect("llama.context_length", 2048)
expect("llama.embedding_length", 64)
expect("llama.feed_forward_length", 128)
expect("llama.attention.head_count", 4)
expect("llama.attention.head_count_kv", 2)
expect("llama.rope.freq_base", 500000.0)
expect("llama.rope.dimension_count", 16)
expect("llama.attention.layer_norm_rms_epsilon", 1e-5)
expect("llama.vocab_size", 480)
tok = json.load(open(os.path.join(fixture, "tokenizer.json")))
tc = json.load(open(os.path.join(fixture, "tokenizer_config.json")))
expect("tokenizer.ggml.model", "gpt2")
expect("tokenizer.ggml.pre", "llama-bpe")
vocab = sorted(tok["model"]["vocab"].items(), key=lambda kv: kv[1])
expect("tokenizer.ggml.tokens", [t for t, _ in vocab])
expect("tokenizer.ggml.token_type", [3 if i < 4 else 1 for i in range(len(vocab))])  # CONTROL, NORMAL
merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
expect("tokenizer.ggml.merges", merges)
expect("tokenizer.ggml.bos_token_id", 0)
expect("tokenizer.ggml.eos_token_id", 1)
expect("tokenizer.ggml.add_bos_token", True)
expect("tokenizer.chat_template", tc["chat_template"])

# Every tensor, nothing else: ggml order (row length first), all F32.
want = {"token_embd.weight": [64, 480], "output_norm.weight": [64], "output.weight": [64, 480]}
for il in range(2):
    for name, shape in [("attn_norm", [64]), ("attn_q", [64, 64]), ("attn_k", [64, 32]), ("attn_v", [64, 32]),
                        ("attn_output", [64, 64]), ("ffn_norm", [64]), ("ffn_gate", [64, 128]),
                        ("ffn_up", [64, 128]), ("ffn_down", [128, 64])]:
        want[f"blk.{il}.{name}.weight"] = shape
tensors = {t.name: t for t in reader.tensors}
if set(tensors) != set(want):
    fail(f"tensors differ: missing {sorted(set(want) - set(tensors))}, unexpected {sorted(set(tensors) - set(want))}")
for name, shape in want.items():
    t = tensors[name]
    if [int(x) for x in t.shape] != shape:
        fail(f"{name} has shape {[int(x) for x in t.shape]}, expected {shape}")
    if t.tensor_type != GGMLQuantizationType.F32:
        fail(f"{name} is {t.tensor_type.name}, expected F32")


def safetensor(name):
    index = json.load(open(os.path.join(fixture, "model.safetensors.index.json")))
    with open(os.path.join(fixture, index["weight_map"][name]), "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))[name]
        if h["dtype"] != "F32":
            fail(f"{name} is {h['dtype']} in the checkpoint")
        a, b = h["data_offsets"]
        f.seek(8 + n + a)
        return np.frombuffer(f.read(b - a), dtype="<f4").reshape(h["shape"])


emb = safetensor("model.embed_tokens.weight")
if not np.array_equal(np.asarray(tensors["token_embd.weight"].data).reshape(emb.shape), emb):
    fail("token_embd.weight differs from model.embed_tokens.weight")
# K rows permuted per KV head for llama.cpp's rotary layout (its LlamaModel.permute).
k = safetensor("model.layers.1.self_attn.k_proj.weight")
n_kv = 2
k_perm = k.reshape(n_kv, 2, k.shape[0] // n_kv // 2, k.shape[1]).swapaxes(1, 2).reshape(k.shape)
if not np.array_equal(np.asarray(tensors["blk.1.attn_k.weight"].data).reshape(k.shape), k_perm):
    fail("blk.1.attn_k.weight is not k_proj permuted as llama.cpp permutes it")
EOF
