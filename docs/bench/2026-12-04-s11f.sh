#!/bin/bash
# Eleventh session, call 6: wip/side-stores (build_attn's k and v cache stores flagged TENSOR_SIDE:
# on the second stream beside the queries' ROPE; STORES_COMMIT) against main 5f67608 (the side stream
# for the MoE shared experts and MLA's store; = .carry/next-s11e/side.xz). Binaries built on the
# development machine (sm_90, Release) in the git-ignored .carry/next-s11f.
# Prediction (written before the run): llama 8B q4_0 tg128 +4%, 1B +6% (two store launches a layer
# off the critical path, ~3 us each, less a join); V2-Lite unchanged (its store was already beside).
# Carry: build-deps, .carry/next-s11f
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }  # the tests' compiled-in source dir
unpack_bins .carry/next-s11f main stores test_gpu_attention test_gpu_gemma3 test_gpu_attn_backends
D=/root/bins B=$D/main S=$D/stores
[ -f /root/l8.gguf ] || $B synth --shape llama-8b --type q4_0 -o /root/l8.gguf > /dev/null 2>&1 &
[ -f /root/l1.gguf ] || $B synth --shape llama-1b --type q4_0 -o /root/l1.gguf > /dev/null 2>&1 &
run_suites test_gpu_attention test_gpu_gemma3 test_gpu_attn_backends
wait
{
    for i in 1 2 3 4; do
        echo "l1 tg128 | main | $(bench_rows $B -m /root/l1.gguf -p 0 -n 128 -r 3)"
        echo "l1 tg128 | stores | $(bench_rows $S -m /root/l1.gguf -p 0 -n 128 -r 3)"
    done
    for i in 1 2 3; do
        echo "l8 tg128 | main | $(bench_rows $B -m /root/l8.gguf -p 0 -n 128 -r 3)"
        echo "l8 tg128 | stores | $(bench_rows $S -m /root/l8.gguf -p 0 -n 128 -r 3)"
    done
    echo "l8 tg32 @ 16384 | main | $(T=90 bench_rows $B -m /root/l8.gguf -p 0 -n 32 -r 1 --depth 16384)"
    echo "l8 tg32 @ 16384 | stores | $(T=90 bench_rows $S -m /root/l8.gguf -p 0 -n 32 -r 1 --depth 16384)"
} 2>&1 | tee $OUT/ab.log
echo "total $SECONDS s"
