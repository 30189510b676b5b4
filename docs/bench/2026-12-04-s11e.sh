#!/bin/bash
# Eleventh session, call 5: wip/side-stream (a second stream for nodes flagged TENSOR_SIDE: a MoE
# layer's shared experts beside the routing and routed experts, MLA's latent-row store beside the
# queries' ROPE and W_UK; SIDE_COMMIT) against main 5ba55d6 (= .carry/next-s11d/norm.xz). Binaries
# built on the development machine (sm_90, Release) in the git-ignored .carry/next-s11e.
# Prediction (written before the run): V2-Lite +6% at depth 0 (the shared experts' three launches
# and one quantizer, ~8 us a MoE layer, and the store, ~3 us a layer, off the critical path, less a
# fork and a join a chain), provided the planner's placement lets the chains overlap.
# Carry: build-deps, .carry/next-s11e
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }  # the tests' compiled-in source dir
unpack_bins .carry/next-s11e main side test_gpu_moe test_gpu_deepseek2 test_gpu_attention test_gpu_ops
D=/root/bins B=$D/main S=$D/side
[ -f /root/v2l.gguf ] || $B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
run_suites test_gpu_moe test_gpu_deepseek2 test_gpu_attention test_gpu_ops
wait
{
    for i in 1 2 3 4; do
        echo "v2l tg64 | main | $(bench_rows $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | side | $(bench_rows $S -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        [ $i -le 2 ] && echo "v2l tg64 | side, MINFER_CUDA_SIDE=0 | $(MINFER_CUDA_SIDE=0 bench_rows $S -m /root/v2l.gguf -p 0 -n 64 -r 3)"
    done
    echo "v2l pp512 | main | $(bench_rows $B -m /root/v2l.gguf -p 512 -n 0 -r 3)"
    echo "v2l pp512 | side | $(bench_rows $S -m /root/v2l.gguf -p 512 -n 0 -r 3)"
    echo "v2l tg16 @ 16384 | main | $(T=90 bench_rows $B -m /root/v2l.gguf -p 0 -n 16 -r 1 --depth 16384)"
    echo "v2l tg16 @ 16384 | side | $(T=90 bench_rows $S -m /root/v2l.gguf -p 0 -n 16 -r 1 --depth 16384)"
} 2>&1 | tee $OUT/ab.log
echo "total $SECONDS s"
