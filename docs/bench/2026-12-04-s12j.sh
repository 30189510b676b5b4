#!/bin/bash
# Twelfth session, call 10: wip/id-async (0b79a7e) against main. The 32-element-block MUL_MAT_IDs copy a
# row's 64-block step into the warp's shared memory with cp.async (pieces of the rows' alignment: 16,
# 8 or 4 bytes) and then read it: one memory round trip a step, no registers held for it. The routed
# gate_up (K = 2048) keeps 40 registers and waits one round trip a row instead of two chunks; the
# routed down (K = 1408, 8-byte aligned rows) one a row instead of two, at 64 registers (5 blocks an
# SM instead of 8). MINFER_CUDA_ID_ASYNC=0 runs the old loop in the same binary.
# Binaries built on the development machine (sm_90, Release) in the git-ignored .carry/s12j.
# Prediction (written before the run): V2-Lite tg +2.3% (gate_up ~1.5 us a layer, down ~0.5).
# Carry: build-deps, .carry/s12j
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }  # the tests' compiled-in source dir
unpack_bins .carry/s12j main next test_gpu_moe test_gpu_deepseek2
D=/root/bins B=$D/main N=$D/next
[ -f /root/v2l.gguf ] || $B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
run_suites test_gpu_moe test_gpu_deepseek2
grep -h "us per step" $OUT/test_gpu_moe.log
MINFER_CUDA_ID_ASYNC=0 timeout 150 $D/test_gpu_moe -tc="decode-shape*" 2>&1 | grep "us per step"
wait
{
    for i in 1 2 3 4; do
        echo "v2l tg64 | main | $(bench_rows $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | next | $(bench_rows $N -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        [ $i -le 2 ] && echo "v2l tg64 | next, ID_ASYNC=0 | $(MINFER_CUDA_ID_ASYNC=0 bench_rows $N -m /root/v2l.gguf -p 0 -n 64 -r 3)"
    done
    echo "v2l tg16 @ 16384 | main | $(T=90 bench_rows $B -m /root/v2l.gguf -p 0 -n 16 -r 1 --depth 16384)"
    echo "v2l tg16 @ 16384 | next | $(T=90 bench_rows $N -m /root/v2l.gguf -p 0 -n 16 -r 1 --depth 16384)"
} 2>&1 | tee $OUT/ab.log
echo "total $SECONDS s"
