#!/bin/bash
# Prepared in the fourteenth session, not run (no machine was lent for its last calls): qrope, the
# queries' ROPE folded into the MLA kernel (MINFER_CUDA_MLA_QROPE=1; off by default until this runs).
# The kernel takes the 32 pairs' cos and sin once, before its griddepcontrol.wait (the positions are a
# graph input), and its float4 query loader rotates q_pe's pairs with the ROPE kernel's unfused
# arithmetic; the ROPE node is not launched (one launch a layer fewer). The eleventh session's
# wip/qrope-mla inlined the double-precision angle into every element's load and lost -15.8%.
# test_gpu_attention checks the fold's bits against the launched ROPE (both modes; it folds only
# ROPE_NORMAL, one token) and counts the nodes not launched.
# Prediction (written before any run): the ROPE's ~3.9 us in place (s12d) less the MLA kernel's added
# work (one barrier, one float4 rotation a thread): ~2.5 us a layer, V2-Lite +3.5% at depth 0.
# Binaries: build main (sm_90, Release) and pack_bins .carry/main minfer and the six GPU suites
# (device-lib.sh); every suite runs, as no commit after 1437b92 had run on a GPU.
# Carry: build-deps, .carry/main
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }  # the tests' compiled-in source dir
unpack_pack .carry/main
B=/root/bins/minfer
[ -f /root/v2l.gguf ] || $B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
run_suites test_gpu_attention test_gpu_deepseek2 test_gpu_ops test_gpu_moe test_gpu_gemma3 test_gpu_attn_backends
MINFER_CUDA_MLA_QROPE=1 TAG=qrope run_suites test_gpu_deepseek2
wait
{
    for i in 1 2 3; do
        echo "v2l tg64 | main | $(bench_rows $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | qrope | $(MINFER_CUDA_MLA_QROPE=1 bench_rows $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
    done
    for d in 4096 16384; do
        echo "v2l tg32 @ $d | main | $(T=90 bench_rows $B -m /root/v2l.gguf -p 0 -n 32 -r 2 --depth $d)"
        echo "v2l tg32 @ $d | qrope | $(MINFER_CUDA_MLA_QROPE=1 T=90 bench_rows $B -m /root/v2l.gguf -p 0 -n 32 -r 2 --depth $d)"
    done
} 2>&1 | tee $OUT/s14i.log
echo "total $SECONDS s"
