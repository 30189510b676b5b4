#!/bin/bash
# Fourteenth session, first call: every GPU suite on main 6894c57 (none has run since the supports_op
# split, the session fixes and mul_mat_id_supported = is_weight_type), then the thirteenth session's
# prepared id-pairs experiment (docs/bench/2026-12-04-s13k.patch applied to main, built here):
# MINFER_CUDA_ID_PAIRS=0 (the old loop, stages in dynamic shared memory), =1 (paired, activation loads
# before the copy), =2 (after), and main's binary beside them, alternating, V2-Lite q4_0.
# Binaries: pack_bins (device-lib.sh) into the git-ignored .carry/main and .carry/s13k.
# Prediction (thirteenth session, written before any run): gate_up and down each ~3 us shorter in
# place, V2-Lite +5%; it may lose where the occupancy drop (down: 8 -> 5 blocks an SM) outweighs that.
# Carry: build-deps, .carry/main, .carry/s13k
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }  # the tests' compiled-in source dir
unpack_pack .carry/main
unpack_pack .carry/s13k /root/bins-s13k
B=/root/bins/minfer P=/root/bins-s13k/minfer
[ -f /root/v2l.gguf ] || $B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
run_suites test_gpu_ops test_gpu_moe test_gpu_attention test_gpu_deepseek2 test_gpu_gemma3 test_gpu_attn_backends
for m in 0 1 2; do MINFER_CUDA_ID_PAIRS=$m TAG=pairs$m BINS=/root/bins-s13k run_suites test_gpu_moe; done
wait
{
    for i in 1 2 3; do
        echo "v2l tg64 | main | $(bench_rows $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        for m in 0 1 2; do echo "v2l tg64 | pairs=$m | $(MINFER_CUDA_ID_PAIRS=$m bench_rows $P -m /root/v2l.gguf -p 0 -n 64 -r 3)"; done
    done
    echo "v2l tg32 @ 16k | main | $(T=90 bench_rows $B -m /root/v2l.gguf -p 0 -n 32 -r 2 --depth 16384)"
    for m in 1 2; do
        echo "v2l tg32 @ 16k | pairs=$m | $(MINFER_CUDA_ID_PAIRS=$m T=90 bench_rows $P -m /root/v2l.gguf -p 0 -n 32 -r 2 --depth 16384)"
    done
} 2>&1 | tee $OUT/s14a.log
echo "total $SECONDS s"
