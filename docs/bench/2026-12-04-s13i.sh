#!/bin/bash
# Thirteenth session: id-waves (the plain MUL_MAT_ID kernel capped at 32 registers for Q4_0 / Q5_0 /
# Q5_1 / Q8_0, so 16 blocks fit an SM: a V2-Lite gate_up's 4,224 blocks in 2 waves instead of 2.7)
# against main in one call; test_gpu_moe on the branch. Carried in the git-ignored .carry/s13i.
# Prediction (written before the run): gate_up ~25% shorter in place (~2.5 us of ~10), V2-Lite +3%
# at depth 0, +2.5% at 16k.
# Carry: build-deps, .carry/s13i
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }  # the tests' compiled-in source dir
unpack_bins .carry/s13i minfer-main minfer-w test_gpu_moe
B=/root/bins
[ -f /root/v2l.gguf ] || $B/minfer-w synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
run_suites test_gpu_moe
wait
{
    for i in 1 2 3; do
        for b in main w; do echo "v2l tg64 | $b | $(bench_rows $B/minfer-$b -m /root/v2l.gguf -p 0 -n 64 -r 3)"; done
    done
    for b in main w; do
        echo "v2l tg32 @ 16k | $b | $(T=90 bench_rows $B/minfer-$b -m /root/v2l.gguf -p 0 -n 32 -r 2 --depth 16384)"
    done
} 2>&1 | tee $OUT/s13i.log
echo "total $SECONDS s"
