#!/bin/bash
# Twelfth session, call 11: wip/matvec-aim (df2349b). s12e's MINFER_MATVEC_WARPS_PER_SM=4 gave the 1B
# +4.7% and V2-Lite -2.3%. The matvecs it changes in both are q/kv (R 2 -> 4) and o (R 1 -> 2); in the
# 1B also down (K = 8192), in V2-Lite also W_UV, which quantizes x inside (K = 512). Here the switch
# leaves the matvecs that quantize inside at 8; unset, the binary is main.
# Binary built on the development machine (sm_90, Release) in the git-ignored .carry/s12k.
# Prediction (written before the run): the 1B +4.5%, V2-Lite within +-1%, the 8B within +-1%.
# Carry: build-deps, .carry/s12k
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
unpack_bins .carry/s12k aim
B=/root/bins/aim
[ -f /root/v2l.gguf ] || $B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
[ -f /root/l1.gguf ] || $B synth --shape llama-1b --type q4_0 -o /root/l1.gguf > /dev/null 2>&1 &
[ -f /root/l8.gguf ] || $B synth --shape llama-8b --type q4_0 -o /root/l8.gguf > /dev/null 2>&1 &
wait
{
    for i in 1 2 3; do
        for n in 8 4; do
            echo "l1 tg128 | N=$n | $(MINFER_MATVEC_WARPS_PER_SM=$n bench_rows $B -m /root/l1.gguf -p 0 -n 128 -r 3)"
            echo "v2l tg64 | N=$n | $(MINFER_MATVEC_WARPS_PER_SM=$n bench_rows $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        done
    done
    for i in 1 2; do
        for n in 8 4; do
            echo "l8 tg128 | N=$n | $(MINFER_MATVEC_WARPS_PER_SM=$n bench_rows $B -m /root/l8.gguf -p 0 -n 128 -r 3)"
        done
    done
} 2>&1 | tee $OUT/aim.log
echo "total $SECONDS s"
