#!/bin/bash
# Thirteenth session, last call: id-pairs. s13j found the routed MUL_MAT_IDs issue-bound (a scheduler
# issues in 71% / 63% of cycles), their shared loads 2-way bank-conflicted (one 18-byte block a lane,
# read in 2-byte pieces). id-pairs gives them matvec_q_kernel's layout: a lane owns two adjacent blocks
# of a 64-block chunk copied by cp.async (16/8/4-byte pieces), read as 9 whole words.
# One binary: MINFER_CUDA_ID_PAIRS=1 turns the paired path on with the activation loads issued before
# the copy (ptxas, q4_0: 56 registers for the gate_up, was 32; 64 for the weighted down, was 40), =2
# with them after it (40 and 64, the latter with 24 bytes of spills); unset or 0 is the old loop.
# Not on main: the change is docs/bench/2026-12-04-s13k.patch (`git apply` it on a branch of main
# 9354ef9 or later), then build (sm_90, Release) and carry minfer and test_gpu_moe xz-compressed in
# .carry/s13k. With the patch, the old loop's kernels take their stages from dynamic shared memory:
# the first run_suites checks that path too.
# Prediction (written before the run): gate_up and down each ~3 us shorter in place, V2-Lite +5%;
# it may lose where the occupancy drop (down: 8 -> 5 blocks an SM, 1.55 waves) outweighs that.
# Carry: build-deps, .carry/s13k
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }  # the tests' compiled-in source dir
unpack_bins .carry/s13k minfer test_gpu_moe
B=/root/bins/minfer
[ -f /root/v2l.gguf ] || $B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
run_suites test_gpu_moe                            # the old loop
MINFER_CUDA_ID_PAIRS=1 run_suites test_gpu_moe     # the paired path against the CPU
MINFER_CUDA_ID_PAIRS=2 run_suites test_gpu_moe
wait
{
    for i in 1 2 3; do
        for m in 0 1 2; do echo "v2l tg64 | pairs=$m | $(MINFER_CUDA_ID_PAIRS=$m bench_rows $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"; done
    done
    for m in 0 1 2; do
        echo "v2l tg32 @ 16k | pairs=$m | $(MINFER_CUDA_ID_PAIRS=$m T=90 bench_rows $B -m /root/v2l.gguf -p 0 -n 32 -r 2 --depth 16384)"
    done
} 2>&1 | tee $OUT/s13k.log
echo "total $SECONDS s"
