#!/bin/bash
# Twelfth session, call 1: wip/prefetch against main b09aa30. The branch (1) runs MLA's query ROPE
# on the second stream beside W_UK's product (TENSOR_SIDE, placed in the graph first), and (2) has
# weights asked of L2 before each kernel's wait where nothing else was requested early: the unstaged
# part of the quantized matvec's rows (MLA's W_UK and W_UV, K <= 512) and, where the ids were written
# two launches back, the routed experts' rows of a MUL_MAT_ID (the down projection).
# MINFER_CUDA_PREFETCH=0 switches (2) off, so "next, PREFETCH=0" is (1) alone.
# Binaries built on the development machine (sm_90, Release) in the git-ignored .carry/s12a.
# Prediction (written before the run): V2-Lite tg +4% at depth 0: (1) +2% (the ROPE, ~3 us a layer
# under ncu, off the critical path, less a join), (2) +2% (the down projection's 9.7 MB a layer from
# L2 instead of DRAM after its wait, ~1.5 us a layer; W_UK and W_UV ~0.3 us each). 1B unchanged.
# Carry: build-deps, .carry/s12a
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }  # the tests' compiled-in source dir
unpack_bins .carry/s12a main next test_gpu_moe test_gpu_ops test_gpu_attention test_gpu_deepseek2
D=/root/bins B=$D/main N=$D/next
[ -f /root/v2l.gguf ] || $B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
[ -f /root/l1.gguf ] || $B synth --shape llama-1b --type q4_0 -o /root/l1.gguf > /dev/null 2>&1 &
run_suites test_gpu_moe test_gpu_deepseek2 test_gpu_attention test_gpu_ops
wait
{
    for i in 1 2 3 4; do
        echo "v2l tg64 | main | $(bench_rows $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | next | $(bench_rows $N -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | next, PREFETCH=0 | $(MINFER_CUDA_PREFETCH=0 bench_rows $N -m /root/v2l.gguf -p 0 -n 64 -r 3)"
    done
    for i in 1 2; do
        echo "l1 tg128 | main | $(bench_rows $B -m /root/l1.gguf -p 0 -n 128 -r 3)"
        echo "l1 tg128 | next | $(bench_rows $N -m /root/l1.gguf -p 0 -n 128 -r 3)"
    done
    echo "v2l tg16 @ 16384 | main | $(T=90 bench_rows $B -m /root/v2l.gguf -p 0 -n 16 -r 1 --depth 16384)"
    echo "v2l tg16 @ 16384 | next | $(T=90 bench_rows $N -m /root/v2l.gguf -p 0 -n 16 -r 1 --depth 16384)"
} 2>&1 | tee $OUT/ab.log
echo "total $SECONDS s"
