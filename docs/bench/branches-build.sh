#!/bin/bash
# Builds main and the branches prepared for a GPU session side by side, then runs each branch's GPU
# suites (first of two back-to-back calls; branches-ab.sh is the second, on the still-warm machine).
# Before the call, on the development machine, for each branch B in $BRANCHES:
#   git diff main...wip/B -- cuda tests core models tools > .device/B.patch   (three dots: the branch's own changes)
# Carry: build-deps, .device. Trees live in /root/t-B (kept while the machine is warm). A tree alone
# builds in ~80 s on the 16 cores; seven at once may not fit one 600 s call: pass a subset
# (BRANCHES="mmq-big f16-wide" bash ...) and the rest in a second call. The branch "all" (every
# waiting branch merged, wip/all) runs every GPU suite but test_gpu_model, which needs SmolLM2.
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
R=$PWD
BRANCHES=${BRANCHES:-"mmq-big f16-wide moe-stack fa-prefill-splits swiglu-quant mla-chains"}
declare -A TESTS=([mmq-big]="test_gpu_ops" [f16-wide]="test_gpu_ops" [moe-stack]="test_gpu_deepseek2 test_gpu_moe"
                  [fa-prefill-splits]="test_gpu_attention" [swiglu-quant]="test_gpu_ops test_gpu_moe test_gpu_deepseek2"
                  [mla-chains]="test_gpu_attention test_gpu_deepseek2"
                  [all]="test_gpu_ops test_gpu_attention test_gpu_attn_backends test_gpu_deepseek2 test_gpu_gemma3 test_gpu_moe")
for b in $BRANCHES; do
    branch_tree $b $R/.device/$b.patch
    ( cd /root/t-$b && bash .device/build.sh minfer ${TESTS[$b]} > $OUT/build-$b.log 2>&1; echo "$b build rc $? at $SECONDS s" ) &
done
bash .device/build.sh minfer > $OUT/build-main.log 2>&1 || { tail -20 $OUT/build-main.log; exit 1; }
echo "main built: $SECONDS s"
B=./build-gpu/minfer
for s in llama-8b:q4_0:l8 llama-1b:f16:l1f deepseek-v2-lite:q4_0:v2l; do
    IFS=: read -r shape type name <<< "$s"
    [ -f /root/$name.gguf ] || $B synth --shape $shape --type $type -o /root/$name.gguf > /dev/null 2>&1
done
wait
echo "all built, models synthesized: $SECONDS s"
for b in $BRANCHES; do
    for t in ${TESTS[$b]}; do
        timeout 120 /root/t-$b/build-gpu/tests/$t > $OUT/$b-$t.log 2>&1
        echo "$b $t rc $?: $(grep -E 'test cases' $OUT/$b-$t.log)"
    done
done
echo "total $SECONDS s"
