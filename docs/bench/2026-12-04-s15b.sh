#!/bin/bash
# Fifteenth session: split rows again after s15a's suites found the bug (the CUDA graph's signature
# did not say whether a source's rows were split, so a graph captured for one layout was replayed on
# the other; the signature now holds the owner's TENSOR_ID_WEIGHT). Every GPU suite, then split
# against stored (MINFER_CUDA_SPLIT_ROWS=0) in one binary, alternating.
# Prediction: as s15a measured it, V2-Lite +1.2% at depth 0, pp512 +4.8%, 16k within noise.
# Binaries: pack_bins .carry/main minfer and the six GPU suites.
# Carry: build-deps, .carry/main
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }  # the tests' compiled-in source dir
unpack_pack .carry/main
B=/root/bins/minfer
[ -f /root/v2l.gguf ] || $B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
run_suites test_gpu_moe test_gpu_deepseek2 test_gpu_ops test_gpu_attention test_gpu_gemma3 test_gpu_attn_backends
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
    for d in 4096 16384; do
        echo "v2l tg32 @ $d | split | $(T=90 bench_rows $B -m /root/v2l.gguf -p 0 -n 32 -r 2 --depth $d)"
        echo "v2l tg32 @ $d | stored | $(MINFER_CUDA_SPLIT_ROWS=0 T=90 bench_rows $B -m /root/v2l.gguf -p 0 -n 32 -r 2 --depth $d)"
    done
} 2>&1 | tee $OUT/s15b.log
echo "total $SECONDS s"
