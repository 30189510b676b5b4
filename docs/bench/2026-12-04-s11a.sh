#!/bin/bash
# Prepared at the end of the tenth session for the next one (not run: the session's device time was
# spent). Binaries built on the development machine (sm_90, Release), xz-compressed in the git-ignored
# .carry/next-s11 (MAIN_COMMIT and QROPE_COMMIT name their commits): main 80a4f66's minfer and
# test_gpu_attention (its q CONCAT count now asserted at 32 heads too), test_gpu_moe (the ADD-fusion
# count now asserted at T = 3 and 6 too) and test_gpu_ops, the last two built at a3d43f3 (their
# sources unchanged since); wip/qrope-mla 3a1b60b's minfer and test_gpu_attention (the queries' ROPE
# folded into the MLA kernel). Rebuild them if main moved.
# Prediction for wip/qrope-mla (written before the run): V2-Lite +1% (27 ROPE launches a step gone;
# the k_pe fold gave +1%, and rope-early already took the angle math off the critical path).
# Carry: build-deps, .carry/next-s11
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
unpack_bins .carry/next-s11 main qrope test_gpu_moe test_gpu_ops test_gpu_attention test_gpu_attention_qrope
D=/root/bins B=$D/main Q=$D/qrope
$B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
run_suites test_gpu_moe test_gpu_ops test_gpu_attention test_gpu_attention_qrope
wait
{
    for i in 1 2 3 4; do
        echo "v2l tg64 | main | $(bench_rows $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | qrope | $(bench_rows $Q -m /root/v2l.gguf -p 0 -n 64 -r 3)"
    done
    echo "v2l tg16 @ 16384 | main | $(T=90 bench_rows $B -m /root/v2l.gguf -p 0 -n 16 -r 1 --depth 16384)"
    echo "v2l tg16 @ 16384 | qrope | $(T=90 bench_rows $Q -m /root/v2l.gguf -p 0 -n 16 -r 1 --depth 16384)"
} 2>&1 | tee $OUT/ab.log
echo "total $SECONDS s"
