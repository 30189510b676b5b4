#!/bin/bash
# Seventeenth session, prepared and not run (no device was lent): a decode token's routed experts in
# one persistent launch (MINFER_CUDA_MOE_BLOCK=1; launch_moe_block in cuda/matvec_id.cu, the fold in
# CudaBackend::moe_block_foldable). The TOP_K, the stacked gate_up, SWIGLU's quantizer and the
# weighted down with its ADD (four launches on the main stream) become one cooperative launch of one
# 32-warp block an SM: each block ranks the experts itself and asks L2 for the down rows it will read;
# the gate_up's units (slot, 32 outputs) end in SWIGLU's quantization; one grid barrier; the down's
# row pairs. Every existing kernel's SASS is unchanged (104 of matvec_id.cu, 100 of matvec.cu).
# Prediction (written before any run): the four launches cost ~25 us a layer in place (s12d, s14h,
# scaled to today's kernels); the block ~12-14 us (the top-k ~1 us, the gate_up's work ~6 us, a
# barrier 1-2 us, the down from L2 ~3-4 us, ~1 us for starting without an overlap): ~11-13 us a
# layer, 26 layers, ~300 us of ~1,780: the model says +15-19%. Past predictions of this kind came in
# at a fifth to a half: +4-10% at depth 0 and at 16k; pp512 unchanged (a prefill does not fold).
# Risks: a cooperative launch inside a captured CUDA graph; phase 1 has 32 warps an SM where the
# gate_up launch has up to 24 of 4-warp blocks; a barrier that never opens traps after 2 s (the test
# then fails with a CUDA error instead of hanging the call).
# Binaries: .carry/main (main at or after this script's commit: minfer, test_gpu_moe).
# Carry: build-deps, .carry/main
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }  # the tests' compiled-in source dir
unpack_pack .carry/main
B=/root/bins/minfer
# Moved here from s16b's end (eighteenth session, no device lent again): the launch floor's grid-barrier
# rows give S, the cost of a barrier, which decides whether the persistent design is worth building on
# (PERFORMANCE "What a kernel a layer would have to deliver"; predictions in s16b's last comment). This
# call runs first, so that one short lease answers both halves of that question: S, and the first
# block's gain. It runs before the synth starts, so that nothing else runs beside it. Timeout: a
# barrier that never opens must not take the call with it.
timeout 60 $B bench --launch-floor 2>&1 | tee $OUT/floor.txt
[ -f /root/v2l.gguf ] || $B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
# The new case: bits against the four launches, Q4_0 and Q8_0, four shapes, three runs each.
SUITE_ARGS="-tc=*in?one?launch*" run_suites test_gpu_moe
# The same launched plainly (no cooperative attribute): plan B should a captured graph refuse it.
MINFER_CUDA_MOE_BLOCK_PLAIN=1 TAG=plain SUITE_ARGS="-tc=*in?one?launch*" run_suites test_gpu_moe
# (Eighteenth session) the captured step's report that the step-shape rows below read.
SUITE_ARGS="-tc=*report?of?a?captured?step*" run_suites test_gpu_ops
wait
greedy() { env "$@" $B run -m /root/v2l.gguf -p "The quick brown fox" -n 24 --temp 0 -s 1 2>/dev/null; }
greedy MINFER_NONE=1 > $OUT/greedy-default.txt
greedy MINFER_CUDA_MOE_BLOCK=1 > $OUT/greedy-block.txt
cmp -s $OUT/greedy-default.txt $OUT/greedy-block.txt && echo "greedy MOE_BLOCK: same tokens" ||
    echo "greedy MOE_BLOCK: DIFFERENT"
{
    for i in 1 2 3; do
        for opt in MINFER_NONE=1 MINFER_CUDA_MOE_BLOCK=1 "MINFER_CUDA_MOE_BLOCK=1 MINFER_CUDA_MOE_BLOCK_PLAIN=1"; do
            echo "v2l tg64 | $opt | $(export $opt; bench_rows $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        done
    done
    for opt in MINFER_NONE=1 MINFER_CUDA_MOE_BLOCK=1; do
        echo "v2l tg64 busy | $opt | $(export $opt; bench_rows $B -m /root/v2l.gguf -p 0 -n 64 -r 3 --busy)"
        echo "v2l 16k | $opt | $(export $opt T=120; bench_rows $B -m /root/v2l.gguf -p 0 -n 32 -r 2 --depth 16384)"
    done
    echo "v2l pp512 | MINFER_CUDA_MOE_BLOCK=1 | $(MINFER_CUDA_MOE_BLOCK=1 bench_rows $B -m /root/v2l.gguf -p 512 -n 0 -r 3)"
    # (Eighteenth session) a decode step's shape, from its captured CUDA graph (`bench --busy`'s last
    # line): kernels a token, and the most of them on one chain of dependencies, the cost model's
    # "~324 dependent launches" measured; and the folded nodes, which show each option taking effect
    # (the block folds 3 more nodes a MoE layer, 78 a token; FUSE_TOPK 1 a layer). 16k adds the combine.
    for opt in MINFER_NONE=1 MINFER_CUDA_MOE_BLOCK=1 MINFER_CUDA_FUSE_TOPK=1 \
        "MINFER_CUDA_ID_STEPS=both MINFER_CUDA_FUSE_TOPK=1 MINFER_CUDA_SLOT_EARLY=1"; do
        echo "v2l step shape | $opt | $(export $opt; timeout 60 $B bench -m /root/v2l.gguf -p 0 -n 16 -r 2 --busy 2>&1 |
            grep -E "^(device busy|last tg step)" | paste -sd' ')"
    done
} 2>&1 | tee $OUT/s17a.log
echo "total $SECONDS s"
