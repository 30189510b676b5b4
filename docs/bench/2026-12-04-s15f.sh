#!/bin/bash
# Fifteenth session: id-rows. SASS of s15b's direct split path shows each block step waiting for two
# round trips in turn: ptxas issues the quants' and the activations' loads together, but the scale's
# and the activation scale's only after the dot's first IDPs (which wait for the first loads). A
# warp's rows are dotted one after another, so the weighted down (two rows of 44 blocks a warp) waits
# for 2 x 2 x 2 round trips, the gate_up (one row of 64) for 2 x 2. With id-rows a warp takes two
# rows at once (QIdDot::split_rows_dot: one activation block a step for both, every row's dot
# computed so no load sinks into a branch): the down 4 round trips instead of 8, the gate_up 4 for
# two rows instead of one (half the warps). Same lanes and order a row: the same bits.
# MINFER_CUDA_ID_ROWS=0 keeps a row at a time (one binary).
# Prediction (written before the run): the down ~12 -> ~8 us, the gate_up ~10 -> ~8 us: ~5 us a
# layer, V2-Lite +6% at depth 0, +5% at 16k; pp512 +3%.
# Binaries: pack_bins .carry/main minfer test_gpu_moe test_gpu_deepseek2.
# Carry: build-deps, .carry/main
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }  # the tests' compiled-in source dir
unpack_pack .carry/main
B=/root/bins/minfer
[ -f /root/v2l.gguf ] || $B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
run_suites test_gpu_moe test_gpu_deepseek2
MINFER_CUDA_ID_ROWS=0 TAG=rows0 run_suites test_gpu_moe
wait
{
    for i in 1 2 3; do
        echo "v2l tg64 | rows | $(bench_rows $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | row | $(MINFER_CUDA_ID_ROWS=0 bench_rows $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
    done
    echo "v2l pp512 | rows | $(bench_rows $B -m /root/v2l.gguf -p 512 -n 0 -r 3)"
    echo "v2l pp512 | row | $(MINFER_CUDA_ID_ROWS=0 bench_rows $B -m /root/v2l.gguf -p 512 -n 0 -r 3)"
} 2>&1 | tee $OUT/s15f.log
echo "total $SECONDS s"
