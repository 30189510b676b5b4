#!/bin/bash
# Seventh session, second call: main (the six branches merged) and wip/moe-small (few-row F32
# matvecs split over a block's warps; TOP_K a warp a row) side by side: the branch's GPU suites, V2-Lite
# q4_0 tg64 alternating, then V2-Lite at depth 32768 (main; the s7d attempt ran out of its 90 s).
# Before: git diff main...wip/moe-small -- cuda tests > .device/moe-small.patch. Carry: build-deps, .device
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
R=$PWD
rm -rf /root/t-b; mkdir -p /root/t-b
tar --exclude=./build-gpu --exclude=./.carry --exclude=./.device --exclude=./.lcpp --exclude=./build-deps -cf - . | tar -xf - -C /root/t-b
(cd /root/t-b && patch -p1 -s < $R/.device/moe-small.patch && mkdir -p .device && cp $R/.device/build.sh .device/ && ln -sfn $R/build-deps build-deps) || echo "patch failed"
T_B="test_gpu_ops test_gpu_moe test_gpu_deepseek2"
( cd /root/t-b && bash .device/build.sh minfer $T_B > $OUT/build-b.log 2>&1; echo "branch build rc $? at $SECONDS s" ) &
bash .device/build.sh minfer > $OUT/build-main.log 2>&1 || { tail -20 $OUT/build-main.log; exit 1; }
echo "main built: $SECONDS s"
B=./build-gpu/minfer X=/root/t-b/build-gpu/minfer
$B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1
wait
echo "built, synthesized: $SECONDS s"
for t in $T_B; do
    timeout 120 /root/t-b/build-gpu/tests/$t > $OUT/b-$t.log 2>&1
    echo "branch $t rc $?: $(grep -E 'test cases' $OUT/b-$t.log)"
    grep -B3 -A12 "ERROR" $OUT/b-$t.log | head -30
done
run() { local x=$1; shift; timeout ${T:-40} $x bench "$@" 2>&1 | grep -E "^\| [a-z]" | grep -v "^| model" | sed 's/| [a-z0-9]* | cuda | flash //' | paste -sd' '; }
{
    for i in 1 2 3; do
        echo "v2l tg64 | main | $(run $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | moe-small | $(run $X -m /root/v2l.gguf -p 0 -n 64 -r 3)"
    done
    echo "at $SECONDS s"
    echo "v2l tg16 @ 32768 | main | $(T=300 run $B -m /root/v2l.gguf -p 0 -n 16 -r 1 --depth 32768)"
} 2>&1 | tee $OUT/ab.log
echo "total $SECONDS s"
