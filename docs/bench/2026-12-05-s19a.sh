#!/bin/bash
# Nineteenth session: the quantized MLA latent with its rope part apart in f16 (9fdd822) checked on the
# GPU, then s17a as prepared (it runs on the same binaries: main at 9fdd822 holds everything s17a needs).
# New cases: test_gpu_attention "...quantized latent's rope part apart..." (the scalar and fused kernels
# with HDR > 0, five latent shapes, q8_0 and q4_0, against the CPU, 1e-4) and test_gpu_deepseek2
# "...q8_0 / q4_0 latent cache..." (whole fixtures, decode and prefill, against the CPU).
# Binaries: .carry/main (main 9fdd822 or later). Carry: build-deps, .carry/main
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }  # the tests' compiled-in source dir
unpack_pack .carry/main
SUITE_ARGS="-tc=*rope?part?apart*" run_suites test_gpu_attention
run_suites test_gpu_deepseek2
grep -h "latent on CUDA" $OUT/test_gpu_deepseek2.log | head -4
bash docs/bench/2026-12-04-s17a.sh
