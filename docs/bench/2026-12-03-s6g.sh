#!/bin/bash
# Sixth session, call 7 (the last ~5 minutes of device time): main plus the one-token fast path of
# the attention kernels' row indexing (uncommitted when run): test_gpu_attention, compute-sanitizer
# memcheck over test_gpu_attention and test_gpu_ops (s6f's call had a bad option), V2-Lite q4_0 tg64
# (s6f: main 263-265, the ds2-stack merge 271-272 t/s).
# Carry: build-deps, .device
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
bash .device/build.sh minfer test_gpu_attention test_gpu_ops > $OUT/build-main.log 2>&1 || { tail -20 $OUT/build-main.log; exit 1; }
echo "main built: $SECONDS s"
B=./build-gpu/minfer
$B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
timeout 40 ./build-gpu/tests/test_gpu_attention > $OUT/attn.log 2>&1; echo "test_gpu_attention rc $?: $(grep -E 'test cases' $OUT/attn.log)"
wait
run() { local x=$1; shift; timeout ${T:-40} $x bench "$@" 2>&1 | grep -E "^\| [a-z]" | tail -1 | sed 's/| [a-z0-9]* | cuda | flash //'; }
echo "v2l tg64 fix  $(T=25 run $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
echo "v2l tg64 fix  $(T=25 run $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
for t in test_gpu_attention test_gpu_ops; do
    timeout 75 compute-sanitizer --tool memcheck ./build-gpu/tests/$t > $OUT/san-$t.log 2>&1
    echo "sanitizer $t rc $?: $(grep -E 'ERROR SUMMARY' $OUT/san-$t.log | tail -1) | $(grep -E 'test cases' $OUT/san-$t.log)"
done
echo "total $SECONDS s"
