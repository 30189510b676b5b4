#!/bin/bash
# Nineteenth session, second call: s16c (rope-beside, its patch regenerated on main c81bb6e with the
# captured-step report test kept) A/B against main, main's new default (the router's logits loaded early,
# s16b +1.0%) against MINFER_CUDA_SLOT_EARLY=0, and the quantized latent's new GPU cases (--attn fused
# and naive sessions, supports_op refusals). Predictions: rope-beside +2.5-4% at depth 0 and at 16k
# (s16c's header); SLOT_EARLY=0 about 1% below the default.
# Binaries: .carry/main (main: minfer, test_gpu_attention, test_gpu_deepseek2), .carry/rope (main plus
# docs/bench/2026-12-05-rope-beside.patch: minfer, test_gpu_ops, test_gpu_moe, test_gpu_attention).
# Carry: build-deps, .carry/main, .carry/rope
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }  # the tests' compiled-in source dir
unpack_pack .carry/main /root/main
unpack_pack .carry/rope /root/rope
M=/root/main/minfer B=/root/rope/minfer
[ -f /root/v2l.gguf ] || $M synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
BINS=/root/main SUITE_ARGS="-tc=*rope?part?apart*" run_suites test_gpu_attention
BINS=/root/main run_suites test_gpu_deepseek2
BINS=/root/rope SUITE_ARGS="-tc=*rope?beside*" run_suites test_gpu_ops
wait
greedy() { env "$@" $B run -m /root/v2l.gguf -p "The quick brown fox" -n 24 --temp 0 -s 1 2>/dev/null; }
greedy MINFER_NONE=1 > $OUT/greedy-default.txt
greedy MINFER_CUDA_ROPE_BESIDE=1 > $OUT/greedy-beside.txt
cmp -s $OUT/greedy-default.txt $OUT/greedy-beside.txt && echo "greedy beside: same tokens" || echo "greedy beside: DIFFERENT"
{
    for i in 1 2 3; do
        echo "v2l tg64 | main | $(bench_rows $M -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | main SLOT_EARLY=0 | $(MINFER_CUDA_SLOT_EARLY=0 bench_rows $M -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | rope beside | $(MINFER_CUDA_ROPE_BESIDE=1 bench_rows $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
    done
    echo "v2l 16k | main | $(T=120 bench_rows $M -m /root/v2l.gguf -p 0 -n 32 -r 2 --depth 16384)"
    echo "v2l 16k | rope beside | $(MINFER_CUDA_ROPE_BESIDE=1 T=120 bench_rows $B -m /root/v2l.gguf -p 0 -n 32 -r 2 --depth 16384)"
} 2>&1 | tee $OUT/s19b.log
echo "total $SECONDS s"
