#!/bin/bash
# Sixth session, call 1: main and wip/ds2-stack (.device/ds2.patch = `git diff main wip/ds2-stack --
# models tests core cuda`) built side by side; the branch's test_gpu_deepseek2; V2-Lite q4_0 tg at
# depth 0 alternating main / branch; then where the time goes: the V2-Lite decode step (branch) and
# one 8B q4_0 prefill of 512 (main), kernel by kernel (docs/bench/profile-decode.sh).
# Carry: build-deps, .device
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
R=$PWD
mkdir -p /root/t-ds2
tar --exclude=./build-gpu --exclude=./.carry --exclude=./.device --exclude=./.lcpp --exclude=./build-deps -cf - . | tar -xf - -C /root/t-ds2
(cd /root/t-ds2 && patch -p1 -s < $R/.device/ds2.patch && mkdir -p .device && cp $R/.device/build.sh .device/ && ln -sfn $R/build-deps build-deps)
( cd /root/t-ds2 && bash .device/build.sh minfer test_gpu_deepseek2 > $OUT/build-ds2.log 2>&1; echo "ds2 build rc $? at $SECONDS s" ) &
bash .device/build.sh minfer test_gpu_deepseek2 > $OUT/build-main.log 2>&1 || { tail -20 $OUT/build-main.log; exit 1; }
echo "main built: $SECONDS s"
B=./build-gpu/minfer X=/root/t-ds2/build-gpu/minfer
$B synth --shape llama-8b --type q4_0 -o /root/l8.gguf > /dev/null 2>&1 &
$B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1
wait
echo "synth + ds2 build done: $SECONDS s"
timeout 90 /root/t-ds2/build-gpu/tests/test_gpu_deepseek2 > $OUT/ds2-test.log 2>&1; echo "ds2 test_gpu_deepseek2 rc $?: $(grep -E 'test cases' $OUT/ds2-test.log)"
grep -B2 -A8 "ERROR" $OUT/ds2-test.log | head -20
run() { local x=$1; shift; timeout ${T:-40} $x bench "$@" 2>&1 | grep -E "^\| [a-z]" | tail -1 | sed 's/| [a-z0-9]* | cuda | flash //'; }
for i in 1 2; do
    echo "v2l tg64 main $(T=25 run $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
    echo "v2l tg64 ds2  $(T=25 run $X -m /root/v2l.gguf -p 0 -n 64 -r 3)"
done 2>&1 | tee $OUT/ab.log
echo "A/B done: $SECONDS s"
P=$X; grep -q "test cases:.*0 failed" $OUT/ds2-test.log || P=$B
mkdir -p $OUT/v2l $OUT/pp
OUT=$OUT/v2l timeout 200 bash docs/bench/profile-decode.sh $P /root/v2l.gguf 0 > $OUT/profile-v2l.md 2>&1; echo "v2l profile rc $? at $SECONDS s"
head -40 $OUT/profile-v2l.md
OUT=$OUT/pp PP=512 timeout 150 bash docs/bench/profile-decode.sh $B /root/l8.gguf 0 > $OUT/profile-pp512.md 2>&1; echo "pp profile rc $? at $SECONDS s"
head -30 $OUT/profile-pp512.md
echo "total $SECONDS s"
