#!/bin/bash
# Round 7 (2026-12-03, third session): llama-1b q4_0 at depth 32k with f16 and q8_0 caches, and depth 0
# (wip/pdl tree: overlapped launches + matvec register cap).
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
bash .device/build.sh minfer > $OUT/build.log 2>&1 || { tail -20 $OUT/build.log; exit 1; }
echo "build $SECONDS s"
B=./build-gpu/minfer
[ -f /root/l1.gguf ] || $B synth --shape llama-1b --type q4_0 -o /root/l1.gguf > /dev/null 2>&1
run() { timeout ${T:-60} "$@" 2>&1 | grep -E "^\| [a-z]" | tail -1 | sed 's/| llama | cuda | flash //'; }
echo "l1 d0: $(T=30 run $B bench -m /root/l1.gguf -p 0 -n 64 -r 2)"
for kv in "-ctk q8_0 -ctv q8_0" "-ctk f16 -ctv f16"; do
  [ $SECONDS -lt 140 ] && echo "l1 d32768 $kv: $(T=75 run $B bench -m /root/l1.gguf -p 0 -n 32 -r 1 --depth 32768 $kv)"
done
echo "total $SECONDS s"
