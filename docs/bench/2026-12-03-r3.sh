#!/bin/bash
# Round 3: attn-lab on llama-1b (issue 8), DeepSeek-V2-Lite shape decode (issue 7), llama-1b depth
# sweep with q8_0 and windowed caches (issue 6). One log ($OUT/r3.log) plus attn-lab's files.
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
bash .device/build.sh minfer > $OUT/r3.log 2>&1 || { tail -40 $OUT/r3.log; exit 1; }
echo "build $SECONDS s"
B=./build-gpu/minfer
mkdir -p $OUT/lab
timeout 230 $B attn-lab --shape llama-1b -r 1 --max-seconds 15 -o $OUT/lab >> $OUT/r3.log 2>&1
echo "attn-lab rc $? at $SECONDS s"
run() { echo "== $*"; timeout ${T:-60} $B bench "$@" 2>&1 | grep -E "^\| [a-z]" | tail -1; }
{
[ $SECONDS -lt 300 ] && $B synth --shape deepseek-v2-lite --type q4_0 -o /root/ds.gguf > /dev/null 2>&1 && $B info /root/ds.gguf 2>&1 | grep -i -E "total|MLA" | head -3
for d in 0 4096; do
  [ $SECONDS -lt 360 ] && T=45 run -m /root/ds.gguf -p 0 -n 32 -r 1 --depth $d
done
$B synth --shape llama-1b --type q4_0 -o /root/l1.gguf > /dev/null 2>&1
for d in 32768 16384 4096; do
  for kv in "-ctk q8_0 -ctv q8_0" "--kv-window 1024 --kv-sinks 4" "-ctk f16 -ctv f16"; do
    [ $SECONDS -lt 410 ] && T=40 run -m /root/l1.gguf -p 0 -n 64 -r 1 --depth $d $kv
  done
done
} > $OUT/r3b.log 2>&1
cat $OUT/r3b.log | sed 's/| llama | cuda | flash //'
grep -E "^\| (MHA|GQA|MQA|MLA)" $OUT/lab/attn-lab.md | head -40
echo "total $SECONDS s"
