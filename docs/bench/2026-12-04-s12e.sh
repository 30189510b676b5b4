#!/bin/bash
# Twelfth session, call 5: fewer, fuller matvec blocks. s12d measured a decode matvec at ~4 us in
# place even with its weights in L2, against 1.6-2 us for s12c's trivial kernels of that grid. A
# likely cause: a matvec's blocks (80 registers x 128 threads, up to 6 an SM) leave no room for the
# next kernel's, so the next one's weight loads, issued before its wait, only start once this one's
# blocks have gone. MINFER_MATVEC_WARPS_PER_SM=N (wip/launch-floor; default 8) sets how many warps an
# SM the legacy-block matvec aims for: fewer means 4 rows a warp sooner and fewer blocks a launch.
# Binary built on the development machine (sm_90, Release) in the git-ignored .carry/s12e.
# Prediction (written before the run): N=2 gives V2-Lite +5% and the 1B +5% (about 1 us off each
# small matvec on the critical path); N=4 half of that.
# Carry: build-deps, .carry/s12e
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
unpack_bins .carry/s12e mv
B=/root/bins/mv
[ -f /root/v2l.gguf ] || $B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
[ -f /root/l1.gguf ] || $B synth --shape llama-1b --type q4_0 -o /root/l1.gguf > /dev/null 2>&1 &
[ -f /root/l8.gguf ] || $B synth --shape llama-8b --type q4_0 -o /root/l8.gguf > /dev/null 2>&1 &
wait
{
    for i in 1 2 3; do
        for n in 8 4 2; do
            echo "v2l tg64 | N=$n | $(MINFER_MATVEC_WARPS_PER_SM=$n bench_rows $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        done
    done
    for i in 1 2; do
        for n in 8 4 2; do
            echo "l1 tg128 | N=$n | $(MINFER_MATVEC_WARPS_PER_SM=$n bench_rows $B -m /root/l1.gguf -p 0 -n 128 -r 3)"
        done
    done
    for n in 8 2; do
        echo "l8 tg128 | N=$n | $(MINFER_MATVEC_WARPS_PER_SM=$n bench_rows $B -m /root/l8.gguf -p 0 -n 128 -r 3)"
    done
    echo "v2l tg64 | N=2, twice MUL_MAT | $(MINFER_MATVEC_WARPS_PER_SM=2 MINFER_CUDA_TWICE=MUL_MAT bench_rows $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
} 2>&1 | tee $OUT/mv.log
echo "total $SECONDS s"
