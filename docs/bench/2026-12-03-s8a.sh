#!/bin/bash
# Eighth session, first call: main (9eaf154) and wip/moe-wsum (MUL_MAT_ID's weighted form: the down
# projection sums each token's slots) built side by side. The branch's GPU suites; compute-sanitizer
# memcheck over the seventh session's new kernels (warp TOP_K, split F32 matvec, weighted MUL_MAT_ID,
# mmq-big, f16-wide, fused SWIGLU quantizer: test_gpu_moe and test_gpu_ops) and racecheck over
# test_gpu_moe (the weighted kernels sum through shared memory); V2-Lite q4_0 tg64, three rounds
# alternating, then depth 4096 and 16384; llama-1b q4_0 tg128 (not measured since the sixth session).
# Before: git diff main...wip/moe-wsum -- cuda tests core models tools > .device/moe-wsum.patch
# Carry: build-deps, .device
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
branch_tree w $PWD/.device/moe-wsum.patch
T_B="test_gpu_ops test_gpu_moe test_gpu_deepseek2"
( cd /root/t-w && bash .device/build.sh minfer $T_B > $OUT/build-w.log 2>&1; echo "branch build rc $? at $SECONDS s" ) &
bash .device/build.sh minfer > $OUT/build-main.log 2>&1 || { tail -20 $OUT/build-main.log; exit 1; }
echo "main built: $SECONDS s"
B=./build-gpu/minfer X=/root/t-w/build-gpu/minfer
$B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1
$B synth --shape llama-1b --type q4_0 -o /root/l1.gguf > /dev/null 2>&1
wait
echo "built, synthesized: $SECONDS s"
for t in $T_B; do
    timeout 120 /root/t-w/build-gpu/tests/$t > $OUT/w-$t.log 2>&1
    echo "branch $t rc $?: $(grep -E 'test cases' $OUT/w-$t.log)"
    grep -B3 -A12 "ERROR" $OUT/w-$t.log | head -30
done
echo "tests done: $SECONDS s"
mkdir -p $OUT/san
for t in test_gpu_moe test_gpu_ops; do
    ( timeout 200 compute-sanitizer --tool memcheck --error-exitcode 9 /root/t-w/build-gpu/tests/$t > $OUT/san/mem-$t.log 2>&1
      echo "memcheck $t rc $?: $(grep -E 'ERROR SUMMARY|test cases' $OUT/san/mem-$t.log | paste -sd' ')" ) &
done
( timeout 200 compute-sanitizer --tool racecheck --error-exitcode 9 /root/t-w/build-gpu/tests/test_gpu_moe > $OUT/san/race-moe.log 2>&1
  echo "racecheck test_gpu_moe rc $?: $(grep -E 'RACECHECK SUMMARY|ERROR SUMMARY|test cases' $OUT/san/race-moe.log | paste -sd' ')" ) &
wait
echo "sanitizers done: $SECONDS s"
run() { bench_rows "$@"; }
{
    for i in 1 2 3; do
        echo "v2l tg64 | main | $(run $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | moe-wsum | $(run $X -m /root/v2l.gguf -p 0 -n 64 -r 3)"
    done
    echo "l1 tg128 | main | $(run $B -m /root/l1.gguf -p 0 -n 128 -r 3)"
    echo "v2l tg16 @ 4096 | main | $(T=60 run $B -m /root/v2l.gguf -p 0 -n 16 -r 1 --depth 4096)"
    echo "v2l tg16 @ 4096 | moe-wsum | $(T=60 run $X -m /root/v2l.gguf -p 0 -n 16 -r 1 --depth 4096)"
    echo "at $SECONDS s"
    echo "v2l tg16 @ 16384 | main | $(T=120 run $B -m /root/v2l.gguf -p 0 -n 16 -r 1 --depth 16384)"
    echo "v2l tg16 @ 16384 | moe-wsum | $(T=120 run $X -m /root/v2l.gguf -p 0 -n 16 -r 1 --depth 16384)"
} 2>&1 | tee $OUT/ab.log
echo "total $SECONDS s"
