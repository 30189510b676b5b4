#!/bin/bash
# Thirteenth session: the host's share of a decode step cut (branch host-share: Graph::stamp lets the
# CUDA backend skip the graph's signature and compute_graph its supports_op pass when the same graph
# comes again; a session's logits are pinned host memory), against main (bench --busy) in one call.
# Both built here (sm_90, Release) and carried xz-compressed in the git-ignored .carry/s13d:
# minfer (branch), minfer-main, and the branch's test_gpu_attention and test_gpu_deepseek2.
# Prediction (written before the run; s13c's host timings: V2-Lite signature 83 us, logits read back
# 76 us, a 1B's 18 and 75 us): V2-Lite 2.23 -> ~2.08 ms a token (+7%), the 1B 0.76 -> ~0.69 ms (+10%),
# the 8B +3%; --busy's device time unchanged.
# Carry: build-deps, .carry/s13d
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }  # the tests' compiled-in source dir
unpack_bins .carry/s13d minfer minfer-main test_gpu_attention test_gpu_deepseek2
[ -f /root/l1.gguf ] || /root/bins/minfer synth --shape llama-1b --type q4_0 -o /root/l1.gguf > /dev/null 2>&1 &
[ -f /root/l8.gguf ] || /root/bins/minfer synth --shape llama-8b --type q4_0 -o /root/l8.gguf > /dev/null 2>&1 &
[ -f /root/v2l.gguf ] || /root/bins/minfer synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
run_suites test_gpu_attention test_gpu_deepseek2
wait
busy() { timeout ${T:-60} "$@" 2>&1 | grep -E "^\| [a-z]|busy" | grep -v "^| model" | sed 's/| [a-z0-9]* | cuda | flash //' | paste -sd' '; }
{
    for i in 1 2 3; do
        for m in v2l l1 l8; do
            for b in minfer-main minfer; do
                echo "$m tg64 | $b | $(busy /root/bins/$b bench -m /root/$m.gguf -p 0 -n 64 -r 3 --busy)"
            done
        done
    done
    for b in minfer-main minfer; do
        echo "v2l tg16 @ 16k | $b | $(T=90 busy /root/bins/$b bench -m /root/v2l.gguf -p 0 -n 16 -r 1 --depth 16384 --busy)"
    done
} 2>&1 | tee $OUT/host-share.log
echo "total $SECONDS s"
