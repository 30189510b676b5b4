#!/bin/bash
# Sixteenth session, prepared and not run (the device stopped answering mid-call, then none was lent):
# three opt-in changes on main, each A/B'd against main's default in one binary.
# 1. Two steps at once (MINFER_CUDA_ID_STEPS). After scale-early (s16a) a split-row step
# is one round trip, but a decode warp still takes its steps one after another: V2-Lite's gate_up rows
# are 64 blocks (two steps a lane), the down's 44 (two for lanes 0-11). With STEPS = 2
# split_rows_dot loads both steps' blocks (2 rows x 2 steps, two activation blocks) and ties them all
# to the first IDP: a row of up to 64 blocks is one round trip. SASS: every LDG of both steps before
# the first IDP. Registers: capped at 80 (plain: 6 blocks an SM where one step has 10) and 64
# (weighted: 5 blocks of 6 warps, as one step); no spills for the Q4_0 kernels V2-Lite uses (some
# Q8_0 kernels spill 16-64 bytes). With the option unset every existing kernel's SASS is unchanged
# (68 of 68 identical, encodings included). The twelfth session's id-steps (s12b: a 64-block step's
# loads before the first dot, stored rows, 64 registers instead of 40) lost 1.0%: as many bytes in
# flight as before, with fewer warps; the kernels were issue-bound then, latency-bound now.
# Prediction (written before any run): one of ~5 round trips off each routed kernel's chain, ~1 us
# in place, 26 layers x 2: ~50 us of ~1,780 = +3% if occupancy cost nothing. weighted (down) only:
# +1-1.5% (same occupancy); plain (gate_up) only: 0 to +1% (waves 1.6 -> 2.7); both: +1-2%. pp512
# within 2%.
# 2. TOP_K folded into the routed gate_up (MINFER_CUDA_FUSE_TOPK=1): the TOP_K is not launched; each
# warp of the routed gate_up's MUL_MAT_ID takes its slot's expert from the router's logits (u + 1
# rounds of redux.sync max + ballot, ~26 instructions a round in SASS) and block 0's first warp writes
# the ids for the down projection. Every existing kernel's SASS is unchanged (80 + 6 compared).
# test_gpu_moe's new case checks bits against the unfolded backend (ties included) and the fused count.
# Prediction: as in s11b (the quantizer's chain moved into the matvec saved only the launch's gap),
# what goes is the TOP_K's own chain and gap but for ~0.2-0.3 us of rounds: ~1-1.5 us x 26 layers =
# ~25-40 us of ~1,780: +1.5-2.5% at depth 0 and at 16k; pp512 within 2%.
# 3. The router's logits loaded early in the weighted down (MINFER_CUDA_SLOT_EARLY=1): SOFTMAX gating
# took each slot's weight after the dots, loading the token's 64 logits then (SASS: two passes of
# loads after the warp sums); the split-row weighted kernels now load them with the weights (two a
# lane, SlotWeights::prefetch) and reduce from registers, of()'s arithmetic in its order. Every
# existing kernel's SASS is unchanged (92 compared); 61 registers instead of 64. test_gpu_moe's
# softmax-gated split cases compare it bit for bit with the stored rows' kernels.
# Prediction: one round trip (~0.7-1 us) off the down's chain, 26 layers: ~20-25 us, +1-1.5%.
# All three together: +3-5%.
# Binaries: .carry/main (main: minfer and the six GPU suites).
# Carry: build-deps, .carry/main
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }  # the tests' compiled-in source dir
unpack_pack .carry/main
B=/root/bins/minfer
[ -f /root/v2l.gguf ] || $B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
# The seventeenth session's MoE-block case (a cooperative launch, never run yet) is s17a's: left out
# here, so that a failure of it cannot take the other cases' results with it.
export SUITE_ARGS="-tce=*in?one?launch*"
run_suites test_gpu_moe
SUITE_ARGS= run_suites test_gpu_deepseek2
MINFER_CUDA_ID_STEPS=both TAG=both run_suites test_gpu_moe
MINFER_CUDA_SLOT_EARLY=1 TAG=early run_suites test_gpu_moe
MINFER_CUDA_ID_ROWS=0 TAG=rows0 run_suites test_gpu_moe
unset SUITE_ARGS
run_suites test_gpu_ops test_gpu_attention test_gpu_gemma3 test_gpu_attn_backends
wait
# test_gpu_deepseek2's fixtures are f32 (no split expert rows): the options' end-to-end check is V2-Lite's
# greedy tokens, which must not change (test_gpu_moe checks each layer's bits).
ALL="MINFER_CUDA_ID_STEPS=both MINFER_CUDA_FUSE_TOPK=1 MINFER_CUDA_SLOT_EARLY=1"
greedy() { env "$@" $B run -m /root/v2l.gguf -p "The quick brown fox" -n 24 --temp 0 -s 1 2>/dev/null; }
greedy MINFER_NONE=1 > $OUT/greedy-default.txt
for opt in MINFER_CUDA_FUSE_TOPK=1 MINFER_CUDA_ID_STEPS=both MINFER_CUDA_SLOT_EARLY=1 "$ALL"; do
    greedy $opt > "$OUT/greedy-${opt// /_}.txt"
    cmp -s $OUT/greedy-default.txt "$OUT/greedy-${opt// /_}.txt" && echo "greedy $opt: same tokens" ||
        echo "greedy $opt: DIFFERENT"
done
{
    for i in 1 2 3; do
        for opt in MINFER_NONE=1 MINFER_CUDA_ID_STEPS=weighted MINFER_CUDA_ID_STEPS=both MINFER_CUDA_FUSE_TOPK=1 \
            MINFER_CUDA_SLOT_EARLY=1 "$ALL"; do
            echo "v2l tg64 | $opt | $(export $opt; bench_rows $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        done
    done
    for opt in MINFER_NONE=1 "$ALL"; do
        echo "v2l pp512 | $opt | $(export $opt; bench_rows $B -m /root/v2l.gguf -p 512 -n 0 -r 3)"
        echo "v2l 16k | $opt | $(export $opt T=120; bench_rows $B -m /root/v2l.gguf -p 0 -n 32 -r 2 --depth 16384)"
    done
} 2>&1 | tee $OUT/s16b.log
# The launch floor's grid-barrier rows (added here in the seventeenth session) moved to s17a, which now
# runs first; their predictions stay here: pass rows ~0.8-1.2 us at 132
# blocks (an arrival a block and an acquire poll: two L2 round trips), ~1.5-2.5 us at 1,056 (1,056
# atomics on one address serialize in its L2 slice); read 4 MiB all ahead: launches ~1.6 us (as the
# pass row: the loads leave the chain, both kernels' blocks fit an SM at once), barrier at 132 x 1,024
# ~1.0-1.5 us.
echo "total $SECONDS s"
