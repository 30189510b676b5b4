#!/bin/bash
# Fourth session, call 5 (the session's last device time): --mla-expanded. The attention, deepseek2
# GPU suites (the expanded fixtures and the 192/128 tile kernel among them), then
# DeepSeek-V2-Lite q4_0, f16 caches, MLA (latent) against expanded per-head K/V at depths 4096 and 16384.
# Carry: build-deps, .device
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
bash .device/build.sh minfer test_gpu_attention test_gpu_deepseek2 > $OUT/build.log 2>&1 || { tail -30 $OUT/build.log; exit 1; }
echo "built: $SECONDS s"
B=./build-gpu/minfer
( $B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 ) &
for t in test_gpu_attention test_gpu_deepseek2; do
    timeout 60 build-gpu/tests/$t > $OUT/$t.log 2>&1; echo "$t rc $?: $(grep -E 'test cases' $OUT/$t.log)"
done
grep -h -B3 -A10 "ERROR" $OUT/test_gpu_*.log | head -40
wait
run() { timeout ${T:-60} $B bench -m /root/v2l.gguf "$@" 2>&1 | grep -E "^\| [a-z]" | tail -1 | sed 's/| deepseek2 | cuda | flash //'; }
for d in 4096 16384; do
    echo "v2l d$d mla      $(run -p 0 -n 16 -r 1 --depth $d)"
    echo "v2l d$d expanded $(run -p 0 -n 16 -r 1 --depth $d --mla-expanded)"
done 2>&1 | tee $OUT/v2l-expanded.log
echo "total $SECONDS s"
