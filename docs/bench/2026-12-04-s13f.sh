#!/bin/bash
# Thirteenth session: two MUL_MAT_ID variants (branch id-tune, switches in one binary) and the decode
# masks updated instead of rewritten (branch mask-step), each against main's code in one call.
# Carried xz-compressed in the git-ignored .carry/s13f: minfer-idtune (main + the switches; without
# them it is main), minfer-mask, test_gpu_moe (id-tune), test_gpu_attention (mask-step).
# Predictions (written before the run):
# - MINFER_ID_HOIST=1 (a step's activation loads issued before its weights', so the two round trips
#   overlap): routed gate_up and down ~1 us a launch each faster, V2-Lite +2%.
# - MINFER_ID_SUM_ROWS=1 (the weighted down: one row a block instead of two, so a warp waits for two
#   round trips, not four, with twice the warps): ~2 us a down launch, V2-Lite +2.5%.
# - mask-step: the host's share at 16k ~85 -> ~45 us, V2-Lite at 16k +1.7%; depth 0 unchanged.
# Carry: build-deps, .carry/s13f
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }  # the tests' compiled-in source dir
unpack_bins .carry/s13f minfer-idtune minfer-mask test_gpu_moe test_gpu_attention
[ -f /root/v2l.gguf ] || /root/bins/minfer-mask synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
run_suites test_gpu_attention
run_suites test_gpu_moe
MINFER_ID_HOIST=1 run_suites test_gpu_moe
MINFER_ID_SUM_ROWS=1 run_suites test_gpu_moe
wait
busy() { timeout ${T:-60} "$@" 2>&1 | grep -E "^\| [a-z]|busy" | grep -v "^| model" | sed 's/| [a-z0-9]* | cuda | flash //' | paste -sd' '; }
B=/root/bins/minfer-idtune
{
    for i in 1 2 3; do
        echo "v2l tg64 | main | $(busy $B bench -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | hoist | $(MINFER_ID_HOIST=1 busy $B bench -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | sum1 | $(MINFER_ID_SUM_ROWS=1 busy $B bench -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | both | $(MINFER_ID_HOIST=1 MINFER_ID_SUM_ROWS=1 busy $B bench -m /root/v2l.gguf -p 0 -n 64 -r 3)"
    done
    for i in 1 2; do
        for b in minfer-idtune minfer-mask; do
            echo "v2l tg32 @ 16k | $b | $(T=90 busy /root/bins/$b bench -m /root/v2l.gguf -p 0 -n 32 -r 2 --depth 16384 --busy)"
        done
    done
} 2>&1 | tee $OUT/s13f.log
echo "total $SECONDS s"
