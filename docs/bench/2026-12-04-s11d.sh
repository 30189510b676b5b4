#!/bin/bash
# Eleventh session, call 4: wip/latent-norm (MLA's c_kv RMS_NORM and its weight applied by the
# latent-row cache store; a helper subagent's branch, merged onto main 3b77816 as NORM_COMMIT) against
# main 3b77816. Binaries built on the development machine (sm_90, Release) in the git-ignored
# .carry/next-s11d: main.xz (3b77816), norm.xz, and the merged build's test_gpu_attention (the new
# bit-for-bit test), test_gpu_deepseek2 and test_gpu_ops.
# Prediction (written before the run): V2-Lite +1% (27 launches a step gone; s11b's quantizer
# launches gave ~0.5 us each, but this one also drops a whole kernel's read-reduce-write chain).
# Carry: build-deps, .carry/next-s11d
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }  # the tests' compiled-in source dir
unpack_bins .carry/next-s11d main norm test_gpu_attention test_gpu_deepseek2 test_gpu_ops
D=/root/bins B=$D/main N=$D/norm
[ -f /root/v2l.gguf ] || $B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
run_suites test_gpu_attention test_gpu_deepseek2 test_gpu_ops
wait
{
    for i in 1 2 3 4; do
        echo "v2l tg64 | main | $(bench_rows $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | norm | $(bench_rows $N -m /root/v2l.gguf -p 0 -n 64 -r 3)"
    done
    echo "v2l tg16 @ 16384 | main | $(T=90 bench_rows $B -m /root/v2l.gguf -p 0 -n 16 -r 1 --depth 16384)"
    echo "v2l tg16 @ 16384 | norm | $(T=90 bench_rows $N -m /root/v2l.gguf -p 0 -n 16 -r 1 --depth 16384)"
} 2>&1 | tee $OUT/ab.log
echo "total $SECONDS s"
