#!/bin/bash
# Eighth session, second call: main (50b5bd0), wip/all8 (norm-quant + pdl-moe) and wip/moe-gate (all8 +
# softmax gating in the down projection), minfer and moe-gate's GPU suites built on the development
# machine (CUDA 13, sm_90, Release) and carried xz-compressed in .carry/bins8 (a device build of main
# and moe-gate from .device/moe-gate.patch if they do not run). MINFER_CUDA_FUSE_NORM=0 isolates the
# norm fusion inside one build. First the suites and the sanitizers (racecheck case by case on
# test_gpu_moe, memcheck on test_gpu_moe and test_gpu_ops), then the A/B rounds.
# Before: git diff main...wip/moe-gate -- cuda tests core models tools > .device/moe-gate.patch
# Carry: build-deps, .device, .carry/bins8
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
R=$PWD D=/root/bins
mkdir -p $D $OUT/san
for f in main all8 gate test_gpu_moe test_gpu_ops test_gpu_deepseek2; do
    python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" \
        .carry/bins8/$f.xz $D/$f && chmod +x $D/$f
done
B=$D/main X8=$D/all8 G=$D/gate TD=$D
if ! $G bench --help > /dev/null 2>&1 || ! $B bench --help > /dev/null 2>&1; then
    echo "carried binaries do not run: $($G bench --help 2>&1 | head -2)"
    branch_tree g $R/.device/moe-gate.patch
    (cd /root/t-g && bash .device/build.sh minfer test_gpu_ops test_gpu_moe test_gpu_deepseek2 > $OUT/build-g.log 2>&1) &
    bash .device/build.sh minfer > $OUT/build-main.log 2>&1
    wait
    B=$R/build-gpu/minfer X8="" G=/root/t-g/build-gpu/minfer TD=/root/t-g/build-gpu/tests
fi
echo "binaries ready: $SECONDS s"
$B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
$B synth --shape llama-1b --type q4_0 -o /root/l1.gguf > /dev/null 2>&1 &
$B synth --shape llama-8b --type q4_0 -o /root/l8.gguf > /dev/null 2>&1 &
i=0
for tc in "mul_mat_id on CUDA matches the CPU for every*" "weighted mul_mat_id*" "top_k on CUDA*" "sum_rows*" \
          "a whole build_ffn_moe*"; do
    i=$((i + 1))
    ( timeout 150 compute-sanitizer --tool racecheck --error-exitcode 9 $TD/test_gpu_moe -tc="$tc" > /root/race-$i.log 2>&1
      echo "racecheck [$tc] rc $?: $(grep -E 'RACECHECK SUMMARY|ERROR SUMMARY|test cases' /root/race-$i.log | paste -sd' ')"
      { echo "== [$tc]"; grep -v "^\[doctest\]\|^=====" /root/race-$i.log | head -60; } > $OUT/san/race-$i.txt ) &
done
for t in test_gpu_moe test_gpu_ops; do
    ( timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 $TD/$t > /root/mem-$t.log 2>&1
      echo "memcheck $t rc $?: $(grep -E 'ERROR SUMMARY|test cases' /root/mem-$t.log | paste -sd' ')"
      grep -B2 -A12 "Invalid\|ERROR:" /root/mem-$t.log | head -40 > $OUT/san/mem-$t.txt ) &
done
for t in test_gpu_ops test_gpu_moe test_gpu_deepseek2; do
    timeout 120 $TD/$t > $OUT/g-$t.log 2>&1
    echo "moe-gate $t rc $?: $(grep -E 'test cases' $OUT/g-$t.log)"
    grep -B3 -A12 "ERROR" $OUT/g-$t.log | head -30
done
wait
cat $OUT/san/race-*.txt > $OUT/san/racecheck.txt && rm -f $OUT/san/race-*.txt
echo "suites and sanitizers done: $SECONDS s"
run() { bench_rows "$@"; }
{
    for i in 1 2 3; do
        echo "v2l tg64 | main | $(run $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        [ -n "$X8" ] && echo "v2l tg64 | all8 | $(run $X8 -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | gate | $(run $G -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | gate FUSE_NORM=0 | $(MINFER_CUDA_FUSE_NORM=0 run $G -m /root/v2l.gguf -p 0 -n 64 -r 3)"
    done
    echo "at $SECONDS s"
    for i in 1 2; do
        echo "l8 pp512 tg128 | main | $(run $B -m /root/l8.gguf -p 512 -n 128 -r 3)"
        echo "l8 pp512 tg128 | gate | $(run $G -m /root/l8.gguf -p 512 -n 128 -r 3)"
        echo "l8 pp512 tg128 | gate FUSE_NORM=0 | $(MINFER_CUDA_FUSE_NORM=0 run $G -m /root/l8.gguf -p 512 -n 128 -r 3)"
    done
    for i in 1 2; do
        echo "l1 tg128 | main | $(run $B -m /root/l1.gguf -p 0 -n 128 -r 3)"
        echo "l1 tg128 | gate | $(run $G -m /root/l1.gguf -p 0 -n 128 -r 3)"
        echo "l1 tg128 | gate FUSE_NORM=0 | $(MINFER_CUDA_FUSE_NORM=0 run $G -m /root/l1.gguf -p 0 -n 128 -r 3)"
    done
    echo "at $SECONDS s"
    if [ $SECONDS -lt 420 ]; then
        echo "v2l tg16 @ 16384 | main | $(T=80 run $B -m /root/v2l.gguf -p 0 -n 16 -r 1 --depth 16384)"
        echo "v2l tg16 @ 16384 | gate | $(T=80 run $G -m /root/v2l.gguf -p 0 -n 16 -r 1 --depth 16384)"
    fi
} 2>&1 | tee $OUT/ab.log
echo "total $SECONDS s"
