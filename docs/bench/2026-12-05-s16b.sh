#!/bin/bash
# Sixteenth session, prepared and not run (the device stopped answering, then none was lent): split-
# steps. After scale-early (s16a) a split-row step is one round trip, but a decode warp still takes
# its steps one after another: V2-Lite's gate_up rows are 64 blocks (two steps a lane), the down's 44
# (two for lanes 0-11). docs/bench/2026-12-05-split-steps.patch makes split_rows_dot load both steps'
# blocks (2 rows x 2 steps, two activation blocks) and tie them all to the first IDP: a row of up to
# 64 blocks is one round trip. SASS: every LDG of both steps before the first IDP. Cost: registers,
# plain 46 -> 84, weighted 64 -> 106 (blocks an SM: plain 10 -> 5, weighted 5 -> 3).
# split-steps-cap.patch (on top) caps them at 80 / 64 (6 / 5 blocks an SM; no spills for Q4_0; some
# Q8_0 kernels spill 40-56 bytes). The twelfth session's id-steps (s12b: a 64-block step's loads
# before the first dot, stored rows, 64 registers instead of 40) lost 1.0%: as many bytes in flight
# as before, with fewer warps. The kernels were issue-bound then; they are latency-bound now.
# Prediction (written before any run): the chain loses one of ~5 round trips in the two routed
# kernels, ~1 us each in place, 26 layers: ~50 us of ~1,780, +3% if occupancy cost nothing; capped
# +1-2%; uncapped, the halved occupancy eats it: -1 to +1%. pp512 within 2%.
# Build (development machine, from main):
#   git apply docs/bench/2026-12-05-split-steps.patch && make build &&
#     pack_bins .carry/exp minfer test_gpu_moe test_gpu_deepseek2
#   git apply docs/bench/2026-12-05-split-steps-cap.patch && make build && pack_bins .carry/cap minfer test_gpu_moe
#   git checkout cuda tests && make build && pack_bins .carry/main minfer (main's suites too, if wanted)
# Carry: build-deps, .carry/main, .carry/exp, .carry/cap
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }  # the tests' compiled-in source dir
unpack_pack .carry/main /root/main
unpack_pack .carry/exp /root/bins
unpack_pack .carry/cap /root/cap
M=/root/main/minfer B=/root/bins/minfer C=/root/cap/minfer
[ -f /root/v2l.gguf ] || $B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
run_suites test_gpu_moe test_gpu_deepseek2
MINFER_CUDA_ID_ROWS=0 TAG=rows0 run_suites test_gpu_moe
BINS=/root/cap TAG=cap run_suites test_gpu_moe
wait
{
    for i in 1 2 3; do
        echo "v2l tg64 | main | $(bench_rows $M -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | steps | $(bench_rows $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | cap | $(bench_rows $C -m /root/v2l.gguf -p 0 -n 64 -r 3)"
    done
    for x in "main $M" "steps $B" "cap $C"; do
        set -- $x
        echo "v2l pp512 | $1 | $(bench_rows $2 -m /root/v2l.gguf -p 512 -n 0 -r 3)"
    done
    for x in "main $M" "steps $B" "cap $C"; do
        set -- $x
        echo "v2l 16k | $1 | $(T=120 bench_rows $2 -m /root/v2l.gguf -p 0 -n 32 -r 2 --depth 16384)"
    done
} 2>&1 | tee $OUT/s16b.log
echo "total $SECONDS s"
