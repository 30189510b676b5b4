#!/bin/bash
# Thirteenth session, last figures: main 409f645 (host-share, step-inputs, id-hoist, mask-step) — the
# suites s13g did not run on it, then V2-Lite at depths 0 / 4k / 16k / 32k, the 1B and the 8B at 0 and
# 16k, V2-Lite pp512, each with --busy. Carried xz-compressed in the git-ignored .carry/s13h.
# Carry: build-deps, .carry/s13h
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }  # the tests' compiled-in source dir
unpack_bins .carry/s13h minfer test_gpu_deepseek2 test_gpu_gemma3 test_gpu_attn_backends test_gpu_moe
B=/root/bins/minfer
[ -f /root/l1.gguf ] || $B synth --shape llama-1b --type q4_0 -o /root/l1.gguf > /dev/null 2>&1 &
[ -f /root/l8.gguf ] || $B synth --shape llama-8b --type q4_0 -o /root/l8.gguf > /dev/null 2>&1 &
[ -f /root/v2l.gguf ] || $B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
run_suites test_gpu_deepseek2 test_gpu_gemma3 test_gpu_attn_backends test_gpu_moe
wait
busy() { timeout ${T:-60} $B bench "$@" 2>&1 | grep -E "^\| [a-z]|busy" | grep -v "^| model" | sed 's/| [a-z0-9]* | cuda | flash //' | paste -sd' '; }
{
    echo "v2l d0 | $(busy -m /root/v2l.gguf -p 512 -n 64 -r 3 --busy)"
    echo "v2l 4k | $(T=90 busy -m /root/v2l.gguf -p 0 -n 32 -r 2 --depth 4096 --busy)"
    echo "v2l 16k | $(T=120 busy -m /root/v2l.gguf -p 0 -n 32 -r 2 --depth 16384 --busy)"
    echo "v2l 32k | $(T=180 busy -m /root/v2l.gguf -p 0 -n 16 -r 2 --depth 32768 --busy)"
    for m in l1 l8; do
        echo "$m d0 | $(busy -m /root/$m.gguf -p 0 -n 64 -r 3 --busy)"
        echo "$m 16k | $(T=120 busy -m /root/$m.gguf -p 0 -n 32 -r 2 --depth 16384 --busy)"
    done
} 2>&1 | tee $OUT/s13h.log
echo "total $SECONDS s"
