#!/bin/bash
# Tenth session, first call after s9i (which ran c46382b's binaries: suites, 1B old vs main, rope-fold).
# s9i found: test_gpu_moe's new fused-node count one short (its harness ordered the MoE graph by a
# fresh DFS, not as the forward does, so the routed down projection's ADD was never next to it: fixed
# in 639a1c6); the rope-fold test crashed uploading a leaf its graph never reads (fixed in the same
# commit); rope-fold's minfer printed no bench row. This call: main 639a1c6's test_gpu_moe and
# test_gpu_attention, rope-fold fba9d0e (rebased on 639a1c6) test and minfer with its stderr shown,
# then, if it runs, rope-fold against main on V2-Lite in three alternating rounds (predicted +1.5-2%).
# Carry: build-deps, .carry/next10
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
unpack_bins .carry/next10 main ropefold test_gpu_attention test_gpu_moe test_gpu_attention_ropefold
D=/root/bins B=$D/main R=$D/ropefold
$B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
run_suites test_gpu_moe test_gpu_attention test_gpu_attention_ropefold
wait
echo "--- ropefold bench, stderr shown"
timeout 60 $R bench -m /root/v2l.gguf -p 0 -n 16 -r 1 2>&1 | tail -8
{
    for i in 1 2 3; do
        echo "v2l tg64 | main | $(bench_rows $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | ropefold | $(bench_rows $R -m /root/v2l.gguf -p 0 -n 64 -r 3)"
    done
} 2>&1 | tee $OUT/ab.log
echo "total $SECONDS s"
