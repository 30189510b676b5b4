#!/bin/bash
# Round 4 (2026-12-03, third session): main GPU tests, wip fusion tests, A/B/C decode bench, decode profile.
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
R=$PWD
( bash .device/build.sh > $OUT/build-main.log 2>&1; echo "main build rc $?" ) &
( cd .device/wip && mkdir -p .device && cp $R/.device/build.sh .device/ && ln -sf $R/build-deps build-deps && bash .device/build.sh minfer test_gpu_ops > $OUT/build-wip.log 2>&1; echo "wip build rc $?" ) &
( cd .device/base && mkdir -p .device && cp $R/.device/build.sh .device/ && ln -sf $R/build-deps build-deps && bash .device/build.sh minfer > $OUT/build-base.log 2>&1; echo "base build rc $?" ) &
wait
echo "builds $SECONDS s"
B=./build-gpu/minfer
$B synth --shape llama-8b --type q4_0 -o /root/l8.gguf > /dev/null 2>&1 &
$B synth --shape llama-1b --type q4_0 -o /root/l1.gguf > /dev/null 2>&1
$B synth --shape llama-1b --type f16 -o /root/l1f.gguf > /dev/null 2>&1
wait
echo "synth $SECONDS s"
timeout 200 ctest --test-dir build-gpu -L gpu --output-on-failure > $OUT/ctest.log 2>&1; echo "ctest rc $?"; grep -E "tests passed|Failed|\*\*\*|Passed|Skipped" $OUT/ctest.log | tail -20
timeout 60 .device/wip/build-gpu/test_gpu_ops > $OUT/wip-ops.log 2>&1; echo "wip test_gpu_ops rc $?"; tail -3 $OUT/wip-ops.log
echo "tests $SECONDS s"
run() { timeout 60 $1 bench -m $2 -p 0 -n 128 -r 3 2>&1 | grep -E "^\| [a-z]" | tail -1; }
for m in l8 l1 l1f; do
  for rep in 1 2; do
    for t in base main wip; do
      case $t in base) X=.device/base/build-gpu/minfer;; main) X=$B;; wip) X=.device/wip/build-gpu/minfer;; esac
      echo "$m $t $(run $X /root/$m.gguf)"
    done
  done
done > $OUT/ab.log 2>&1
echo "ab $SECONDS s"
timeout 60 $B bench -m /root/l8.gguf -p 512 -n 0 -r 3 2>&1 | grep -E "^\| [a-z]" | tail -1
timeout 60 $B bench -m /root/l8.gguf -p 0 -n 0 --depth 4095 2>&1 | grep -i "kv cache"
[ $SECONDS -lt 430 ] && timeout 120 bash docs/bench/profile-decode.sh $B /root/l8.gguf > $OUT/profile-l8.md 2>&1
head -30 $OUT/profile-l8.md
echo "=== A/B"; cat $OUT/ab.log | sed 's/| llama | cuda | flash //'
echo "total $SECONDS s"
