#!/bin/bash
# Twelfth session, call 4: what each op's launches cost in place in a V2-Lite decode step. With
# MINFER_CUDA_TWICE=OP (wip/launch-floor) every node of OP whose result lies apart from its sources
# is launched twice in a row, the second time on warm caches; the step's growth over the plain run,
# divided by the op's launches a step, is what one launch costs in place apart from its DRAM traffic.
# Plain runs open, close and sit between the others, to see the drift. Then the 1B for MUL_MAT.
# Binary built on the development machine (sm_90, Release) in the git-ignored .carry/s12d.
# Prediction (written before the run): each repeated launch costs 2-4 us in place (the launch floor
# measured in s12c is 0.4-1.6 us; the rest is each kernel's own chain of memory round trips).
# Carry: build-deps, .carry/s12d
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
unpack_bins .carry/s12d twice
B=/root/bins/twice
[ -f /root/v2l.gguf ] || $B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
[ -f /root/l1.gguf ] || $B synth --shape llama-1b --type q4_0 -o /root/l1.gguf > /dev/null 2>&1 &
wait
{
    echo "v2l tg64 | plain | $(bench_rows $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
    for op in MUL_MAT MUL_MAT_ID FLASH_ATTN TOP_K ROPE; do
        echo "v2l tg64 | twice $op | $(MINFER_CUDA_TWICE=$op bench_rows $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
    done
    echo "v2l tg64 | plain | $(bench_rows $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
    for op in SET_ROWS MUL_MAT_ID MUL_MAT; do
        echo "v2l tg64 | twice $op | $(MINFER_CUDA_TWICE=$op bench_rows $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
    done
    echo "v2l tg64 | plain | $(bench_rows $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
    echo "l1 tg128 | plain | $(bench_rows $B -m /root/l1.gguf -p 0 -n 128 -r 3)"
    for op in MUL_MAT FLASH_ATTN ROPE; do
        echo "l1 tg128 | twice $op | $(MINFER_CUDA_TWICE=$op bench_rows $B -m /root/l1.gguf -p 0 -n 128 -r 3)"
    done
    echo "l1 tg128 | plain | $(bench_rows $B -m /root/l1.gguf -p 0 -n 128 -r 3)"
} 2>&1 | tee $OUT/twice.log
echo "total $SECONDS s"
