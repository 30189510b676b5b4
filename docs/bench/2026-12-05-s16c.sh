#!/bin/bash
# Sixteenth session, prepared and not run (no device was lent after s16a): rope-beside, kept as a patch
# (docs/bench/2026-12-05-rope-beside.patch) because it changes main's default code: matvec_q_kernel's
# body moves into a device function (matvec_q_rows) that a second kernel shares, and 14 of the 100
# matvec kernels (the unstaged ones that read activations from the scratch: unaligned rows) compile to
# different SASS (registers and scheduling; the same operations). The staged and quantize-inside ones
# are unchanged.
# The change: with MINFER_CUDA_ROPE_BESIDE=1 a ROPE whose place is just after a decode matvec that
# quantizes x inside (MLA's q_pe after W_UK), reading and writing nothing the matvec writes or reads, is
# launched in the matvec's launch as CUDA blocks of its own (matvec_q_rope_kernel: the matvec's blocks,
# then ROPE blocks, a row a warp, through RopeOf: the ROPE kernel's bits). Its chain then runs beside
# W_UK's instead of after it, and one launch a layer goes. qrope (s14i, -1%) folded the same ROPE into
# the MLA kernel, after its wait: on the chain. s11b: moving a chain into its consumer saves only the
# launch's gap; running it beside saves the chain too.
# Prediction (written before any run): the ROPE's post-wait chain and its boundary, ~2-3 us of s12d's
# 3.9 in place, x 27 layers = 55-80 us of ~1,780: +2.5-4% at depth 0 and at 16k. The patched build's
# default path: within noise of main.
# Build (development machine, from main):
#   make build && pack_bins .carry/main minfer
#   git apply docs/bench/2026-12-05-rope-beside.patch && make build &&
#     pack_bins .carry/rope minfer test_gpu_ops test_gpu_moe test_gpu_attention && git checkout cuda tests
# Carry: build-deps, .carry/main, .carry/rope
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }  # the tests' compiled-in source dir
unpack_pack .carry/main /root/main
unpack_pack .carry/rope /root/rope
M=/root/main/minfer B=/root/rope/minfer
[ -f /root/v2l.gguf ] || $M synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
BINS=/root/rope run_suites test_gpu_ops test_gpu_moe test_gpu_attention
wait
greedy() { env "$@" $B run -m /root/v2l.gguf -p "The quick brown fox" -n 24 --temp 0 -s 1 2>/dev/null; }
greedy MINFER_NONE=1 > $OUT/greedy-default.txt
greedy MINFER_CUDA_ROPE_BESIDE=1 > $OUT/greedy-beside.txt
cmp -s $OUT/greedy-default.txt $OUT/greedy-beside.txt && echo "greedy beside: same tokens" || echo "greedy beside: DIFFERENT"
{
    for i in 1 2 3; do
        echo "v2l tg64 | main | $(bench_rows $M -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | patch | $(bench_rows $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | beside | $(MINFER_CUDA_ROPE_BESIDE=1 bench_rows $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
    done
    echo "v2l 16k | patch | $(T=120 bench_rows $B -m /root/v2l.gguf -p 0 -n 32 -r 2 --depth 16384)"
    echo "v2l 16k | beside | $(MINFER_CUDA_ROPE_BESIDE=1 T=120 bench_rows $B -m /root/v2l.gguf -p 0 -n 32 -r 2 --depth 16384)"
} 2>&1 | tee $OUT/s16c.log
echo "total $SECONDS s"
