#!/bin/bash
# Fifteenth session: split rows for MUL_MAT_ID's experts (MINFER_CUDA_SPLIT_ROWS, on by default; =0
# keeps the stored layout, so one binary runs both). The CUDA backend keeps Q4_0 / Q8_0 expert weights
# (TENSOR_ID_WEIGHT) as each row's quants, then its scales (rows_split, core/quants.h): a lane loads a
# block's quants as one 16-byte vector and its scale as one 2-byte load, no stage in shared memory.
# SASS (development machine): the Q4_0 kernel's loop went from ~93 instructions a block (stage copy,
# 9 two-byte shared loads, 4 PRMTs, 64-bit block indices) to ~53 (~41 when 4 blocks a lane unroll).
# Prediction (written before the run): the MUL_MAT_IDs are issue-bound (s13j: a scheduler issues in
# 63-71% of cycles), their instructions after the wait -27% (gate_up ~315 -> ~235 a warp): ~15% off
# their ~10 us in place, 2 a layer: V2-Lite +4-5% at depth 0, +3-4% at 16k; pp512 +5-10% (its
# MUL_MAT_IDs take the same kernels with 512 tokens).
# Binaries: build main + split rows (sm_90, Release); pack_bins .carry/main minfer and the GPU suites.
# Carry: build-deps, .carry/main
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }  # the tests' compiled-in source dir
unpack_pack .carry/main
B=/root/bins/minfer
[ -f /root/v2l.gguf ] || $B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
run_suites test_gpu_moe test_gpu_deepseek2 test_gpu_ops
MINFER_CUDA_SPLIT_ROWS=0 TAG=stored run_suites test_gpu_deepseek2
wait
{
    for i in 1 2 3; do
        echo "v2l tg64 | split | $(bench_rows $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | stored | $(MINFER_CUDA_SPLIT_ROWS=0 bench_rows $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
    done
    for i in 1 2; do
        echo "v2l pp512 | split | $(bench_rows $B -m /root/v2l.gguf -p 512 -n 0 -r 3)"
        echo "v2l pp512 | stored | $(MINFER_CUDA_SPLIT_ROWS=0 bench_rows $B -m /root/v2l.gguf -p 512 -n 0 -r 3)"
    done
    echo "v2l tg32 @ 16384 | split | $(T=90 bench_rows $B -m /root/v2l.gguf -p 0 -n 32 -r 2 --depth 16384)"
    echo "v2l tg32 @ 16384 | stored | $(MINFER_CUDA_SPLIT_ROWS=0 T=90 bench_rows $B -m /root/v2l.gguf -p 0 -n 32 -r 2 --depth 16384)"
} 2>&1 | tee $OUT/s15a.log
for mode in 1 0; do  # the CSVs are read on the development machine (as s14h's)
    for k in matvec_q_id_kernel matvec_q_id_weighted_kernel; do
        MINFER_CUDA_SPLIT_ROWS=$mode MINFER_CUDA_GRAPHS=0 timeout 60 ncu --clock-control none -k regex:$k -s 60 -c 1 \
            --csv --page raw --metrics gpu__time_duration.sum,smsp__inst_executed.sum,smsp__cycles_active.max,launch__registers_per_thread,regex:smsp__average_warps_issue_stalled_.*_per_issue_active.ratio \
            $B bench -m /root/v2l.gguf -p 0 -n 4 -r 1 > $OUT/ncu-split$mode-$k.csv 2>&1
    done
done
echo "total $SECONDS s"
