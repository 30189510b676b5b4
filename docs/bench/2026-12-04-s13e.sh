#!/bin/bash
# Thirteenth session: a step's inputs from one pinned host block (branch step-inputs) against main
# 4daf831 (host-share merged), and the GPU suites s13d did not run, on the branch's build (which holds
# host-share's Graph::stamp and pinned logits). Carried xz-compressed in the git-ignored .carry/s13e:
# minfer (branch), minfer-main, test_gpu_ops, test_gpu_moe, test_gpu_gemma3, test_gpu_attn_backends.
# Prediction (written before the run): the host's share at 16k ~94 -> ~60 us (+1.4% at 16k); at depth
# 0 ~40 -> ~30 us (V2-Lite +0.5%, 1B +1.5%).
# Carry: build-deps, .carry/s13e
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }  # the tests' compiled-in source dir
unpack_bins .carry/s13e minfer minfer-main test_gpu_ops test_gpu_moe test_gpu_gemma3 test_gpu_attn_backends
[ -f /root/l1.gguf ] || /root/bins/minfer synth --shape llama-1b --type q4_0 -o /root/l1.gguf > /dev/null 2>&1 &
[ -f /root/v2l.gguf ] || /root/bins/minfer synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
run_suites test_gpu_ops test_gpu_moe test_gpu_gemma3 test_gpu_attn_backends
wait
busy() { timeout ${T:-60} "$@" 2>&1 | grep -E "^\| [a-z]|busy" | grep -v "^| model" | sed 's/| [a-z0-9]* | cuda | flash //' | paste -sd' '; }
{
    for i in 1 2 3; do
        for m in v2l l1; do
            for b in minfer-main minfer; do
                echo "$m tg64 | $b | $(busy /root/bins/$b bench -m /root/$m.gguf -p 0 -n 64 -r 3 --busy)"
            done
        done
    done
    for i in 1 2; do
        for b in minfer-main minfer; do
            echo "v2l tg16 @ 16k | $b | $(T=90 busy /root/bins/$b bench -m /root/v2l.gguf -p 0 -n 16 -r 2 --depth 16384 --busy)"
        done
    done
} 2>&1 | tee $OUT/step-inputs.log
echo "total $SECONDS s"
