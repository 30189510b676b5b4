#!/bin/bash
# Eleventh session, call 2. Binaries built on the development machine (sm_90, Release), carried
# xz-compressed in the git-ignored .carry/next-s11b: main 80a4f66's minfer (the code of main b30ff27),
# wip/qrope-mla 3a1b60b's minfer, wip/quant-inside (QX_COMMIT) minfer, test_gpu_ops, test_gpu_deepseek2.
# 1. wip/quant-inside's suites. 2. main against quant-inside, 4 alternating rounds, and at 16k.
# 3. Why qrope-mla lost 16% in s11a: ncu times of the MLA and ROPE kernels in both builds.
# Prediction for wip/quant-inside (written before the run): V2-Lite +3% (54 quantizer launches a step
# gone, 2 of 21 a layer; each matvec now quantizes its 128 or 512 values itself after its wait).
# Carry: build-deps, .carry/next-s11b
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }  # the tests' compiled-in source dir
unpack_bins .carry/next-s11b main qrope qx test_gpu_ops_qx test_gpu_deepseek2_qx
D=/root/bins B=$D/main X=$D/qx Q=$D/qrope
[ -f /root/v2l.gguf ] || $B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
run_suites test_gpu_ops_qx test_gpu_deepseek2_qx
wait
{
    for i in 1 2 3 4; do
        echo "v2l tg64 | main | $(bench_rows $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | qx | $(bench_rows $X -m /root/v2l.gguf -p 0 -n 64 -r 3)"
    done
    echo "v2l tg16 @ 16384 | main | $(T=90 bench_rows $B -m /root/v2l.gguf -p 0 -n 16 -r 1 --depth 16384)"
    echo "v2l tg16 @ 16384 | qx | $(T=90 bench_rows $X -m /root/v2l.gguf -p 0 -n 16 -r 1 --depth 16384)"
} 2>&1 | tee $OUT/ab.log
for b in main qrope; do
    mkdir -p $OUT/ncu-$b
    echo "ncu $b:"
    OUT=$OUT/ncu-$b timeout 150 bash docs/bench/profile-decode.sh $D/$b /root/v2l.gguf 0 'flash_attn|rope|matvec_q_kernel' 2>&1 | tail -8
done
echo "total $SECONDS s"
