#!/usr/bin/env bash
# Builds the file-reader fuzzers with clang (libFuzzer + ASan + UBSan) and runs each for SECONDS
# (default 60): the GGUF reader, seeded with the malformed fixtures, the Python-written fixture and the
# shared vocab files; the safetensors reader, seeded with small files written here.
# Usage (from anywhere): bash tests/fuzz/run.sh [SECONDS] [extra libFuzzer flags...]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
seconds="${1:-60}"
shift || true
cxx="${CXX_FUZZ:-clang++}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
core_sources=("$root"/core/gguf*.cpp "$root/core/dtype.cpp" "$root/core/common.cpp" "$root"/core/quants*.cpp)

# build NAME [SOURCES...]: tests/fuzz/NAME from tests/fuzz/NAME.cpp and the core sources.
build() {
    local name=$1
    shift
    "$cxx" -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I"$root" \
        "$root/tests/fuzz/$name.cpp" "$@" "${core_sources[@]}" -o "$root/tests/fuzz/$name"
}

# run NAME SEEDS: NAME's corpus (grows across runs; git-ignored) and SEEDS, for SECONDS.
run() {
    local corpus="$root/tests/fuzz/corpus"  # the GGUF reader's, as before
    [[ $1 == fuzz_gguf ]] || corpus="$root/tests/fuzz/corpus_${1#fuzz_}"
    mkdir -p "$corpus"
    (cd "$root/tests/fuzz" && "./$1" "$corpus" "$2" -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 \
        -timeout=10 -print_final_stats=1 "${extra[@]}")
}
extra=("$@")

build fuzz_gguf
build fuzz_safetensors "$root/core/safetensors.cpp"

mkdir -p "$work/gguf" "$work/safetensors"
cp "$root"/tests/fixtures/malformed/*.gguf "$root"/tests/fixtures/*.gguf "$work/gguf"/
# The vocab files are ~1 MB: their first 64 KiB (header and the start of the token arrays) seed the
# metadata paths without slowing every run down.
if [[ -d "$root/../shared/vocab" ]]; then
    for f in "$root"/../shared/vocab/*.gguf; do head -c 65536 "$f" >"$work/gguf/$(basename "$f")"; done
fi
python3 - "$work/safetensors" <<'PY'
import json, struct, sys
def write(path, tensors, meta=None):
    header, data = {}, b""
    if meta is not None:
        header["__metadata__"] = meta
    for name, dtype, shape, size in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + size]}
        data += bytes(range(256)) * (size // 256) + bytes(size % 256)
    h = json.dumps(header).encode()
    open(path, "wb").write(struct.pack("<Q", len(h)) + h + data)
d = sys.argv[1]
write(d + "/one.safetensors", [("w", "F32", [2, 3], 24)])
write(d + "/mixed.safetensors", [("a", "F16", [4], 8), ("b", "BF16", [2, 2], 8), ("ids", "I64", [3], 24),
                                  ("s", "F32", [], 4)], {"format": "pt"})
write(d + "/empty.safetensors", [])
PY
run fuzz_gguf "$work/gguf"
run fuzz_safetensors "$work/safetensors"
