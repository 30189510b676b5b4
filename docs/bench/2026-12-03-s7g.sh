#!/bin/bash
# Seventh session, last call, with too little device time left to build there: minfer of main
# (eb6eede's kernels) and of wip/moe-wsum, and wip/moe-wsum's test_gpu_moe, built on the development
# machine (CUDA 13, sm_90, Release) and carried xz-compressed in .carry/bins. test_gpu_moe first, then
# V2-Lite q4_0 tg64, three rounds alternating.
# Carry: build-deps, .carry/bins
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
mkdir -p /root/bins && for f in main wsum test_gpu_moe; do
    python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" \
        .carry/bins/$f.xz /root/bins/$f && chmod +x /root/bins/$f
done
ls -l /root/bins
B=/root/bins/main X=/root/bins/wsum
$B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
timeout 60 /root/bins/test_gpu_moe > $OUT/wsum-test_gpu_moe.log 2>&1
echo "wsum test_gpu_moe rc $?: $(grep -E 'test cases' $OUT/wsum-test_gpu_moe.log)"
grep -B3 -A10 "ERROR" $OUT/wsum-test_gpu_moe.log | head -30
wait
echo "at $SECONDS s"
source docs/bench/device-lib.sh
run() { bench_rows "$@"; }
for i in 1 2 3; do
    echo "v2l tg64 | main | $(run $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
    echo "v2l tg64 | moe-wsum | $(run $X -m /root/v2l.gguf -p 0 -n 64 -r 3)"
done 2>&1 | tee $OUT/ab.log
echo "total $SECONDS s"
