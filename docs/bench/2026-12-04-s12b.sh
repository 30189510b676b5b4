#!/bin/bash
# Twelfth session, call 2: wip/id-steps (8d7beb8) against main b09aa30. MUL_MAT_ID's 32-element-block
# rows go in steps of 64 blocks (two a lane), every load of a step issued before its first dot, and a
# weighted block's two rows together: the routed gate_up (K = 2048) waits one round trip a warp
# instead of two, the routed down (K = 1408, 44 blocks a row, two rows a warp) one instead of four,
# at 64 registers instead of 40 (5 blocks an SM instead of 8). Same bits (each row's sum keeps its
# order). Binaries built on the development machine (sm_90, Release) in the git-ignored .carry/s12b;
# test_gpu_moe_main is main's suite, for its decode-shape MUL_MAT_ID time beside the branch's.
# Prediction (written before the run): V2-Lite tg +2.5% (gate_up ~1 us and down ~1.5 us a layer).
# Carry: build-deps, .carry/s12b
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }  # the tests' compiled-in source dir
unpack_bins .carry/s12b main next test_gpu_moe_main test_gpu_moe test_gpu_deepseek2
D=/root/bins B=$D/main N=$D/next
[ -f /root/v2l.gguf ] || $B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
run_suites test_gpu_moe test_gpu_deepseek2 test_gpu_moe_main
grep -h "us per step" $OUT/test_gpu_moe_main.log $OUT/test_gpu_moe.log
wait
{
    for i in 1 2 3 4; do
        echo "v2l tg64 | main | $(bench_rows $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | next | $(bench_rows $N -m /root/v2l.gguf -p 0 -n 64 -r 3)"
    done
    echo "v2l pp512 | main | $(bench_rows $B -m /root/v2l.gguf -p 512 -n 0 -r 3)"
    echo "v2l pp512 | next | $(bench_rows $N -m /root/v2l.gguf -p 512 -n 0 -r 3)"
    echo "v2l tg16 @ 16384 | main | $(T=90 bench_rows $B -m /root/v2l.gguf -p 0 -n 16 -r 1 --depth 16384)"
    echo "v2l tg16 @ 16384 | next | $(T=90 bench_rows $N -m /root/v2l.gguf -p 0 -n 16 -r 1 --depth 16384)"
} 2>&1 | tee $OUT/ab.log
echo "total $SECONDS s"
