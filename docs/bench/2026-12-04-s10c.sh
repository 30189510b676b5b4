#!/bin/bash
# Tenth session, third call. s10b: the MoE layer failure at T=6 goes away with MINFER_CUDA_FUSE_ADD=0
# and stays with every other switch; initcheck and memcheck report nothing (the stray writes land
# inside the arena). Cause: the ADD's result planned over the weighted MUL_MAT_ID's sources, which the
# fused kernel still reads (fixed in 83c0189). rope-fold ran after its fix: test 6/6, V2-Lite
# +0.7% over three rounds (within noise). This call: main 83c0189's test_gpu_moe (T=6 and 20 added)
# and test_gpu_deepseek2; V2-Lite: c46382b (before the fix, "prefix") vs main vs rope-fold (rebased on
# main), four rounds; the fix should cost nothing at decode (predicted +-0.5%: the test asserts the
# fusion still fires at T=1).
# Carry: build-deps, .carry/next10
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }  # the tests' compiled-in source dir
unpack_bins .carry/next10 main ropefold prefix test_gpu_moe test_gpu_deepseek2
D=/root/bins B=$D/main R=$D/ropefold P=$D/prefix
$B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
run_suites test_gpu_moe test_gpu_deepseek2
wait
{
    for i in 1 2 3 4; do
        echo "v2l tg64 | prefix | $(bench_rows $P -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | main | $(bench_rows $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | ropefold | $(bench_rows $R -m /root/v2l.gguf -p 0 -n 64 -r 3)"
    done
    echo "v2l pp512 | prefix | $(bench_rows $P -m /root/v2l.gguf -p 512 -n 0 -r 3)"
    echo "v2l pp512 | main | $(bench_rows $B -m /root/v2l.gguf -p 512 -n 0 -r 3)"
    echo "v2l tg16 @ 16384 | main | $(T=90 bench_rows $B -m /root/v2l.gguf -p 0 -n 16 -r 1 --depth 16384)"
    echo "v2l tg16 @ 16384 | ropefold | $(T=90 bench_rows $R -m /root/v2l.gguf -p 0 -n 16 -r 1 --depth 16384)"
} 2>&1 | tee $OUT/ab.log
echo "total $SECONDS s"
