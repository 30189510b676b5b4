#!/bin/bash
# Prepared at the end of the twelfth session for the next one (not run): the 16-warp MLA kernel
# (MINFER_CUDA_MLA16=1, on main, off by default) against the 8-warp one, in one binary. Build main here
# (sm_90, Release) and carry minfer, test_gpu_attention and test_gpu_deepseek2 xz-compressed in the
# git-ignored .carry/s13a.
# Prediction (written before the run): the MLA launch ~12 -> ~7 us (s12i: one block of 8 warps, ~4,350
# instructions a warp, at depth 0 and each split at 4k; 16 warps halve each warp's share of the query
# load, the K copies, the scores, P V and the output); V2-Lite tg +6% at depth 0 and 4k, +5% at 16k.
# Carry: build-deps, .carry/s13a
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }  # the tests' compiled-in source dir
unpack_bins .carry/s13a minfer test_gpu_attention test_gpu_deepseek2
B=/root/bins/minfer
[ -f /root/v2l.gguf ] || $B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
run_suites test_gpu_attention test_gpu_deepseek2      # the 8-warp kernel
export MINFER_CUDA_MLA16=1
run_suites test_gpu_attention test_gpu_deepseek2      # the 16-warp kernel against the CPU
unset MINFER_CUDA_MLA16
wait
{
    for i in 1 2 3 4; do
        for m in 0 1; do
            echo "v2l tg64 | MLA16=$m | $(MINFER_CUDA_MLA16=$m bench_rows $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        done
    done
    for d in 4096 16384; do
        for m in 0 1; do
            echo "v2l tg16 @ $d | MLA16=$m | $(MINFER_CUDA_MLA16=$m T=90 bench_rows $B -m /root/v2l.gguf -p 0 -n 16 -r 1 --depth $d)"
        done
    done
    echo "v2l pp512 | MLA16=0 | $(MINFER_CUDA_MLA16=0 bench_rows $B -m /root/v2l.gguf -p 512 -n 0 -r 3)"
    echo "v2l pp512 | MLA16=1 | $(MINFER_CUDA_MLA16=1 bench_rows $B -m /root/v2l.gguf -p 512 -n 0 -r 3)"
} 2>&1 | tee $OUT/mla16.log
echo "total $SECONDS s"
