#!/bin/bash
# Round 1: build, GPU tests, the benches for #5/#6 with the reworked attention kernel. Logs in $OUT.
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv > $OUT/gpu.txt 2>&1
git log --oneline -1 >> $OUT/gpu.txt
S=$SECONDS
bash .device/build.sh > $OUT/build.log 2>&1 || { tail -40 $OUT/build.log; exit 1; }
echo "build $((SECONDS-S)) s"
S=$SECONDS
timeout 200 ctest --test-dir build-gpu -L gpu --output-on-failure --timeout 150 > $OUT/ctest.log 2>&1
grep -E "tests passed|Failed|Passed|Skipped|\*\*\*Exception|Timeout" $OUT/ctest.log | tail -20
echo "ctest $((SECONDS-S)) s"
B=./build-gpu/minfer
$B synth --shape llama-8b --type q4_0 -o /root/l8.gguf > /dev/null 2>&1
$B synth --shape llama-1b --type q4_0 -o /root/l1.gguf > /dev/null 2>&1
$B synth --shape llama-1b --type f16 -o /root/l1f.gguf > /dev/null 2>&1
run() { echo "== $*"; timeout 100 $B bench "$@" 2>&1 | grep -E "^\|" | tail -2; }
{
run -m /root/l8.gguf -p 512 -n 128 -r 3
run -m /root/l1.gguf -p 512 -n 128 -r 3
run -m /root/l1f.gguf -p 0 -n 128 -r 3
for kv in "f16 f16" "q8_0 q8_0"; do set -- $kv
  run -m /root/l8.gguf -p 0 -n 64 -r 2 --depth 4096 -ctk $1 -ctv $2
done
run -m /root/l8.gguf -p 0 -n 64 -r 2 --depth 4096 --kv-window 1024 --kv-sinks 4
for kv in "f16 f16" "q8_0 q8_0"; do set -- $kv
  [ $SECONDS -lt 480 ] && run -m /root/l8.gguf -p 0 -n 64 -r 1 --depth 16384 -ctk $1 -ctv $2
done
} > $OUT/bench.log 2>&1
cat $OUT/bench.log
