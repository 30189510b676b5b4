#!/bin/bash
# Ninth session, sixth call: main b42f0db (the tile kernel's query loads as q-load made them, the MLA
# kernel's through a two-part loader; s9e had measured cb7c091 2.7% slower on the 8B and 3.7% on the
# 1B than 8016357) against main before concat-fuse and norm-both (8016357 code), built on the
# development machine (sm_90, Release), carried xz-compressed in .carry/c8: the build's
# test_gpu_attention and test_gpu_ops, then alternating A/B rounds on V2-Lite, the 8B and the 1B.
# Carry: build-deps, .carry/c8
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
D=/root/bins
mkdir -p $D
for f in old main test_gpu_attention test_gpu_ops; do
    python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" \
        .carry/c8/$f.xz $D/$f && chmod +x $D/$f
done
O=$D/old B=$D/main
$B bench --help > /dev/null 2>&1 || { echo "carried binaries do not run: $($B bench --help 2>&1 | head -2)"; exit 1; }
$B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
$B synth --shape llama-8b --type q4_0 -o /root/l8.gguf > /dev/null 2>&1 &
$B synth --shape llama-1b --type q4_0 -o /root/l1.gguf > /dev/null 2>&1 &
for t in test_gpu_attention test_gpu_ops; do
    timeout 150 $D/$t > $OUT/$t.log 2>&1
    echo "$t rc $?: $(grep -E 'test cases' $OUT/$t.log)"
    grep -B3 -A12 "ERROR" $OUT/$t.log | head -30
done
wait
echo "suites done: $SECONDS s"
run() { bench_rows "$@"; }
{
    for i in 1 2 3; do
        echo "v2l tg64 | old | $(run $O -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | main | $(run $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | main FUSE_CONCAT=0 | $(MINFER_CUDA_FUSE_CONCAT=0 run $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "l8 tg128 | old | $(run $O -m /root/l8.gguf -p 0 -n 128 -r 3)"
        echo "l8 tg128 | main | $(run $B -m /root/l8.gguf -p 0 -n 128 -r 3)"
        echo "l1 tg128 | old | $(run $O -m /root/l1.gguf -p 0 -n 128 -r 3)"
        echo "l1 tg128 | main | $(run $B -m /root/l1.gguf -p 0 -n 128 -r 3)"
    done
    echo "at $SECONDS s"
} 2>&1 | tee $OUT/ab.log
echo "total $SECONDS s"
