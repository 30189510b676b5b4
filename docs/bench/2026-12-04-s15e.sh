#!/bin/bash
# Fifteenth session, last call: every GPU suite on the final main (split rows, qrope taken out), then
# V2-Lite's figures with --busy as s14f took them, and the Q8_0 V2-Lite shape with its experts split
# against stored (the second type; split rows take Q8_0 too: 32-byte quants, two 16-byte loads).
# Prediction (Q8_0, written before the run): its MUL_MAT_IDs read twice the bytes of Q4_0's with the
# same instruction savings: ~+2% at depth 0.
# Binaries: pack_bins .carry/main minfer and the six GPU suites (main 6e9f727).
# Carry: build-deps, .carry/main
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }  # the tests' compiled-in source dir
unpack_pack .carry/main
B=/root/bins/minfer
[ -f /root/v2l.gguf ] || $B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
[ -f /root/v2l8.gguf ] || $B synth --shape deepseek-v2-lite --type q8_0 -o /root/v2l8.gguf > /dev/null 2>&1 &
run_suites test_gpu_ops test_gpu_moe test_gpu_attention test_gpu_deepseek2 test_gpu_gemma3 test_gpu_attn_backends
wait
busy() { timeout ${T:-60} $B bench "$@" 2>&1 | grep -E "^\| [a-z]|busy" | grep -v "^| model" | sed 's/| [a-z0-9]* | cuda | flash //' | paste -sd' '; }
{
    echo "v2l d0 | $(busy -m /root/v2l.gguf -p 512 -n 64 -r 3 --busy)"
    echo "v2l 4k | $(T=90 busy -m /root/v2l.gguf -p 0 -n 32 -r 2 --depth 4096 --busy)"
    echo "v2l 16k | $(T=120 busy -m /root/v2l.gguf -p 0 -n 32 -r 2 --depth 16384 --busy)"
    for i in 1 2; do
        echo "v2l q8_0 tg64 | split | $(bench_rows $B -m /root/v2l8.gguf -p 0 -n 64 -r 3)"
        echo "v2l q8_0 tg64 | stored | $(MINFER_CUDA_SPLIT_ROWS=0 bench_rows $B -m /root/v2l8.gguf -p 0 -n 64 -r 3)"
    done
} 2>&1 | tee $OUT/s15e.log
echo "total $SECONDS s"
