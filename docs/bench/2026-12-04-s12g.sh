#!/bin/bash
# Twelfth session, call 7: wip/topk-rank (fdaa03c) against main b09aa30. s12d measured a TOP_K launch at
# ~5.8 us in place: top_k_warp_kernel picks the k values in k rounds, each a chain of about 13
# comparisons (NaN-aware) and 10 shuffles. top_k_rank_kernel (rows of up to 64 values) has every
# value count its rank against the whole row at once and write its index at its rank: no rounds.
# Binaries built on the development machine (sm_90, Release) in the git-ignored .carry/s12g.
# Prediction (written before the run): TOP_K ~2 us in place; V2-Lite tg +4.5% (26 launches a step).
# Carry: build-deps, .carry/s12g
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }  # the tests' compiled-in source dir
unpack_bins .carry/s12g main topk test_gpu_moe test_gpu_deepseek2
D=/root/bins B=$D/main N=$D/topk
[ -f /root/v2l.gguf ] || $B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
run_suites test_gpu_moe test_gpu_deepseek2
wait
{
    for i in 1 2 3 4; do
        echo "v2l tg64 | main | $(bench_rows $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | topk | $(bench_rows $N -m /root/v2l.gguf -p 0 -n 64 -r 3)"
    done
    echo "v2l tg16 @ 16384 | main | $(T=90 bench_rows $B -m /root/v2l.gguf -p 0 -n 16 -r 1 --depth 16384)"
    echo "v2l tg16 @ 16384 | topk | $(T=90 bench_rows $N -m /root/v2l.gguf -p 0 -n 16 -r 1 --depth 16384)"
} 2>&1 | tee $OUT/ab.log
echo "total $SECONDS s"
