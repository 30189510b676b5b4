#!/bin/bash
# Ninth session, last two calls, back to back on one warm machine: SmolLM2-135M-Instruct Q4_1 (98 MB)
# travels in two pieces, `head -c 57000000` in .carry/p1 (call 1: `bash THIS park`, carry .carry/p1
# only) and the rest in .carry/p2 with main's test_gpu_model (cb7c091, built on the development
# machine, xz) (call 2: `bash THIS`, carry build-deps and .carry/p2), joined in /root/cache. Then
# test_gpu_model: llama.cpp's golden choices and free-running greedy tokens against the CPU.
set -u
if [ "${1:-}" = park ]; then mkdir -p /root/smol && cp .carry/p1/part1 /root/smol/ && ls -l /root/smol; exit; fi
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
mkdir -p /root/cache && cat /root/smol/part1 .carry/p2/part2 > /root/cache/SmolLM2-135M-Instruct.Q4_1.gguf
echo "sha256 $(sha256sum /root/cache/SmolLM2-135M-Instruct.Q4_1.gguf | cut -c1-16) (want b179c9523d0e6a0f)"
python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" \
    .carry/p2/test_gpu_model.xz /root/test_gpu_model && chmod +x /root/test_gpu_model
MINFER_CACHE=/root/cache timeout 200 /root/test_gpu_model > $OUT/test_gpu_model.log 2>&1
echo "test_gpu_model rc $?: $(grep -E 'test cases' $OUT/test_gpu_model.log)"
grep -B3 -A12 "ERROR" $OUT/test_gpu_model.log | head -30
echo "total $SECONDS s"
