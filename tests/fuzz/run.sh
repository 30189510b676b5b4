#!/usr/bin/env bash
# Builds the GGUF reader fuzzer with clang (libFuzzer + ASan + UBSan) and runs it for SECONDS (default 60),
# seeded with the malformed fixtures, the Python-written fixture and the shared vocab files.
# Usage (from anywhere): bash tests/fuzz/run.sh [SECONDS] [extra libFuzzer flags...]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
seconds="${1:-60}"
shift || true
cxx="${CXX_FUZZ:-clang++}"
bin="$root/tests/fuzz/fuzz_gguf"
corpus="$root/tests/fuzz/corpus"   # grows across runs; git-ignored
seeds=$(mktemp -d)
trap 'rm -rf "$seeds"' EXIT

"$cxx" -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -I"$root" "$root/tests/fuzz/fuzz_gguf.cpp" "$root"/core/gguf*.cpp "$root/core/dtype.cpp" \
    "$root/core/common.cpp" "$root"/core/quants*.cpp -o "$bin"

cp "$root"/tests/fixtures/malformed/*.gguf "$root"/tests/fixtures/*.gguf "$seeds"/
# The vocab files are ~1 MB: their first 64 KiB (header and the start of the token arrays) seed the
# metadata paths without slowing every run down.
if [[ -d "$root/../shared/vocab" ]]; then
    for f in "$root"/../shared/vocab/*.gguf; do head -c 65536 "$f" >"$seeds/$(basename "$f")"; done
fi
mkdir -p "$corpus"
cd "$root/tests/fuzz"
"$bin" "$corpus" "$seeds" -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -timeout=10 \
    -print_final_stats=1 "$@"
