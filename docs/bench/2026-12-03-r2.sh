#!/bin/bash
# Round 2: build this tree and the base commit's tree side by side, GPU tests, d0 benches A/B (new
# matvec + MMQ prefill vs base), then depth runs with the new build while time lasts. Logs in $OUT.
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
git log --oneline -1 > $OUT/gpu.txt
S=$SECONDS
( rm -rf /root/base && cp -r .base /root/base && cp -r build-deps .device /root/base/ &&
  cd /root/base && bash .device/build.sh minfer > $OUT/build-base.log 2>&1 ) &
bash .device/build.sh > $OUT/build.log 2>&1 || { tail -40 $OUT/build.log; exit 1; }
echo "build $((SECONDS-S)) s"
timeout 200 ctest --test-dir build-gpu -L gpu --output-on-failure --timeout 150 > $OUT/ctest.log 2>&1
grep -E "tests passed|Failed|\*\*\*Exception|Timeout" $OUT/ctest.log | tail -10
B=./build-gpu/minfer
for s in "llama-8b q4_0 l8" "llama-8b q8_0 l8q8" "llama-1b q4_0 l1" "llama-1b f16 l1f"; do set -- $s
  [ -f /root/$3.gguf ] || $B synth --shape $1 --type $2 -o /root/$3.gguf > /dev/null 2>&1 &
done
wait
echo "synth+base build done at $SECONDS s"
run() { local bin=$1; shift; echo "== $(basename $(dirname $(dirname $bin))) $*"; timeout 100 $bin bench "$@" 2>&1 | grep -E "^\| [a-z]" | tail -2; }
NEW=$PWD/build-gpu/minfer; OLD=/root/base/build-gpu/minfer
{
for m in l8 l8q8 l1 l1f; do
  for bin in $OLD $NEW $OLD $NEW; do run $bin -m /root/$m.gguf -p 512 -n 128 -r 3; done
done
} > $OUT/ab.log 2>&1
cat $OUT/ab.log | grep -E "==|tg|pp" | sed 's/| llama | cuda | flash //'
{
for d in 4096 16384 32768; do
  for kv in "f16 f16" "q8_0 q8_0"; do set -- $kv
    [ $SECONDS -lt 500 ] && run $NEW -m /root/l8.gguf -p 0 -n 64 -r 2 --depth $d -ctk $1 -ctv $2
  done
  [ $SECONDS -lt 500 ] && run $NEW -m /root/l8.gguf -p 0 -n 64 -r 2 --depth $d --kv-window 1024 --kv-sinks 4
done
} > $OUT/depth.log 2>&1
grep -E "==|tg" $OUT/depth.log | sed 's/| llama | cuda | flash //'
echo "total $SECONDS s"
