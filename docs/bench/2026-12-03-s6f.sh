#!/bin/bash
# Sixth session, call 6: compute-sanitizer memcheck over test_gpu_ops and test_gpu_attention on main
# (the new MMQ tile, the prefill tile attention, the 8-lane quantizer), and V2-Lite q4_0 tg64
# alternating main / base 3eeccdb with main first this time (s6e ran base first).
# Carry: build-deps, .device
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
R=$PWD
rm -rf /root/t-base; mkdir -p /root/t-base
tar --exclude=./build-gpu --exclude=./.carry --exclude=./.device --exclude=./.lcpp --exclude=./build-deps -cf - . | tar -xf - -C /root/t-base
(cd /root/t-base && patch -p1 -s < $R/.device/base.patch && mkdir -p .device && cp $R/.device/build.sh .device/ && ln -sfn $R/build-deps build-deps)
( cd /root/t-base && bash .device/build.sh minfer > $OUT/build-base.log 2>&1; echo "base build rc $? at $SECONDS s" ) &
bash .device/build.sh minfer test_gpu_ops test_gpu_attention > $OUT/build-main.log 2>&1 || { tail -20 $OUT/build-main.log; exit 1; }
echo "main built: $SECONDS s"
B=./build-gpu/minfer X=/root/t-base/build-gpu/minfer
$B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
for t in test_gpu_ops test_gpu_attention; do
    timeout 150 compute-sanitizer --tool memcheck --leak-check none ./build-gpu/tests/$t > $OUT/san-$t.log 2>&1
    echo "sanitizer $t rc $?: $(grep -E 'ERROR SUMMARY' $OUT/san-$t.log | tail -1) | $(grep -E 'test cases' $OUT/san-$t.log)"
done
wait
run() { local x=$1; shift; timeout ${T:-40} $x bench "$@" 2>&1 | grep -E "^\| [a-z]" | tail -1 | sed 's/| [a-z0-9]* | cuda | flash //'; }
for i in 1 2; do
    echo "v2l tg64 main  $(T=25 run $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
    echo "v2l tg64 base  $(T=25 run $X -m /root/v2l.gguf -p 0 -n 64 -r 3)"
done 2>&1 | tee $OUT/ab.log
echo "total $SECONDS s"
