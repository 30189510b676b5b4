#!/bin/bash
# Fifteenth session, s15d: split rows staged whole, the weights only (s15c staged the activation row
# too and lost: -11%) (MINFER_CUDA_ID_WHOLE, on by default; =0 keeps s15b's
# direct split path; MINFER_CUDA_SPLIT_ROWS=0 the stored layout: one binary runs all three). A warp
# copies its rows of one expert (split rows lie contiguous) and its activation row into shared
# memory with cp.async at once, waits once, and dots from there. s15a's ncu put the MUL_MAT_IDs'
# stalls on long scoreboard, and ptxas issues a lane's next block's loads only after its last block's
# dot: the gate_up (64 blocks a row: two a lane) waits for ids, then two weight round trips; the
# weighted down (two rows of 44 blocks a warp) for ids, then four.
# s15d: the activation blocks are loaded directly again (each once for the warp's rows; ptxas puts
# the first after the rows' wait); only the rows go through cp.async. Prediction (written before the
# run): gate_up ids + 1 DRAM + 2 L2 round trips instead of ids + 2 DRAM, the weighted down ids + 1
# DRAM + 2 L2 instead of ids + 4 DRAM: the down gains, the gate_up about even; V2-Lite +2%.
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
MINFER_CUDA_ID_WHOLE=0 TAG=direct run_suites test_gpu_moe
wait
{
    for i in 1 2 3; do
        echo "v2l tg64 | whole | $(bench_rows $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | direct | $(MINFER_CUDA_ID_WHOLE=0 bench_rows $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
    done
    echo "v2l pp512 | whole | $(bench_rows $B -m /root/v2l.gguf -p 512 -n 0 -r 3)"
    echo "v2l pp512 | direct | $(MINFER_CUDA_ID_WHOLE=0 bench_rows $B -m /root/v2l.gguf -p 512 -n 0 -r 3)"
    echo "v2l tg32 @ 16384 | whole | $(T=90 bench_rows $B -m /root/v2l.gguf -p 0 -n 32 -r 2 --depth 16384)"
    echo "v2l tg32 @ 16384 | direct | $(MINFER_CUDA_ID_WHOLE=0 T=90 bench_rows $B -m /root/v2l.gguf -p 0 -n 32 -r 2 --depth 16384)"
} 2>&1 | tee $OUT/s15d.log
for mode in 1 0; do  # the CSVs are read on the development machine
    for k in matvec_q_id_kernel matvec_q_id_weighted_kernel; do
        MINFER_CUDA_ID_WHOLE=$mode MINFER_CUDA_GRAPHS=0 timeout 60 ncu --clock-control none -k regex:$k -s 60 -c 1 \
            --csv --page raw --metrics gpu__time_duration.sum,smsp__inst_executed.sum,smsp__cycles_active.max,launch__registers_per_thread,regex:smsp__average_warps_issue_stalled_.*_per_issue_active.ratio \
            $B bench -m /root/v2l.gguf -p 0 -n 4 -r 1 > $OUT/ncu-whole$mode-$k.csv 2>&1
    done
done
echo "total $SECONDS s"
