#!/bin/bash
# Twelfth session, call 6: fewer MUL_MAT_ID blocks. s12d measured each routed-expert MUL_MAT_ID at
# ~10 us in place with its weights in L2; the routed gate_up launches 4,224 blocks of 4 warps (a warp
# a row), the weighted down 1,024 blocks of 6 warps (2 rows a block), and s12c measured block
# scheduling alone at ~0.8 us more for 1,056 trivial blocks than for 132. MINFER_ID_ROWS=R gives a
# plain MUL_MAT_ID warp R rows (1, 2, 4; default 1), MINFER_ID_SUM_ROWS=S a weighted block S rows
# (2, 4, 8; default 2); each row's sum keeps its order, so the bits do not change.
# Binaries built on the development machine (sm_90, Release) in the git-ignored .carry/s12f.
# Prediction (written before the run): R=4 +2%, S=8 +1.5%, both +3.5% on V2-Lite.
# Carry: build-deps, .carry/s12f
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }  # the tests' compiled-in source dir
unpack_bins .carry/s12f ids test_gpu_moe
B=/root/bins/ids
[ -f /root/v2l.gguf ] || $B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
run_suites test_gpu_moe
MINFER_ID_ROWS=4 MINFER_ID_SUM_ROWS=8 timeout 150 /root/bins/test_gpu_moe > $OUT/moe-r4s8.log 2>&1
echo "test_gpu_moe R=4 S=8 rc $?: $(grep -E 'test cases' $OUT/moe-r4s8.log)"
MINFER_ID_ROWS=2 MINFER_ID_SUM_ROWS=4 timeout 150 /root/bins/test_gpu_moe > $OUT/moe-r2s4.log 2>&1
echo "test_gpu_moe R=2 S=4 rc $?: $(grep -E 'test cases' $OUT/moe-r2s4.log)"
wait
{
    for i in 1 2; do
        for rs in "1 2" "2 2" "4 2" "1 4" "1 8" "4 8"; do
            set -- $rs
            echo "v2l tg64 | R=$1 S=$2 | $(MINFER_ID_ROWS=$1 MINFER_ID_SUM_ROWS=$2 bench_rows $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        done
    done
} 2>&1 | tee $OUT/ids.log
echo "total $SECONDS s"
