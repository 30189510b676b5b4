#!/bin/bash
# Sixth session, call 4: main (MMQ wide tile, prefill tile attention merged) and wip/quant4
# (.device/q4.patch: activation quantization 8 lanes a block) built side by side; the branch's
# test_gpu_ops and test_gpu_moe; alternating: 8B q4_0 pp512, V2-Lite q4_0 tg64, 8B q4_0 tg128.
# Carry: build-deps, .device
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
R=$PWD
rm -rf /root/t-q4; mkdir -p /root/t-q4
tar --exclude=./build-gpu --exclude=./.carry --exclude=./.device --exclude=./.lcpp --exclude=./build-deps -cf - . | tar -xf - -C /root/t-q4
(cd /root/t-q4 && patch -p1 -s < $R/.device/q4.patch && mkdir -p .device && cp $R/.device/build.sh .device/ && ln -sfn $R/build-deps build-deps)
( cd /root/t-q4 && bash .device/build.sh minfer test_gpu_ops test_gpu_moe > $OUT/build-q4.log 2>&1; echo "q4 build rc $? at $SECONDS s" ) &
bash .device/build.sh minfer > $OUT/build-main.log 2>&1 || { tail -20 $OUT/build-main.log; exit 1; }
echo "main built: $SECONDS s"
B=./build-gpu/minfer X=/root/t-q4/build-gpu/minfer
[ -f /root/l8.gguf ] || $B synth --shape llama-8b --type q4_0 -o /root/l8.gguf > /dev/null 2>&1
[ -f /root/v2l.gguf ] || $B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1
wait
echo "synth + q4 build done: $SECONDS s"
timeout 90 /root/t-q4/build-gpu/tests/test_gpu_ops > $OUT/q4-ops.log 2>&1; echo "q4 test_gpu_ops rc $?: $(grep -E 'test cases' $OUT/q4-ops.log)"
grep -B4 -A12 "ERROR" $OUT/q4-ops.log | head -30
timeout 60 /root/t-q4/build-gpu/tests/test_gpu_moe > $OUT/q4-moe.log 2>&1; echo "q4 test_gpu_moe rc $?: $(grep -E 'test cases' $OUT/q4-moe.log)"
run() { local x=$1; shift; timeout ${T:-40} $x bench "$@" 2>&1 | grep -E "^\| [a-z]" | tail -1 | sed 's/| [a-z0-9]* | cuda | flash //'; }
for i in 1 2; do
    echo "l8 pp512 main  $(T=25 run $B -m /root/l8.gguf -p 512 -n 0 -r 3)"
    echo "l8 pp512 q4    $(T=25 run $X -m /root/l8.gguf -p 512 -n 0 -r 3)"
    echo "v2l tg64 main  $(T=25 run $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
    echo "v2l tg64 q4    $(T=25 run $X -m /root/v2l.gguf -p 0 -n 64 -r 3)"
    echo "l8 tg128 main  $(T=25 run $B -m /root/l8.gguf -p 0 -n 128 -r 2)"
    echo "l8 tg128 q4    $(T=25 run $X -m /root/l8.gguf -p 0 -n 128 -r 2)"
done 2>&1 | tee $OUT/ab.log
echo "total $SECONDS s"
