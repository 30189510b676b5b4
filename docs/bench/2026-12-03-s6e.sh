#!/bin/bash
# Sixth session, call 5: main (ds2-stack, MMQ wide tile, prefill tile attention, 8-lane activation
# quantization) and the ds2-stack merge 3eeccdb (.device/base.patch reverts main's code to it) built
# side by side: main's GPU suites (test_gpu_model needs SmolLM2, not carried here); V2-Lite q4_0 tg64
# alternating base / main (did decode move?); then main's headline figures.
# Carry: build-deps, .device
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
R=$PWD
rm -rf /root/t-base; mkdir -p /root/t-base
tar --exclude=./build-gpu --exclude=./.carry --exclude=./.device --exclude=./.lcpp --exclude=./build-deps -cf - . | tar -xf - -C /root/t-base
(cd /root/t-base && patch -p1 -s < $R/.device/base.patch && mkdir -p .device && cp $R/.device/build.sh .device/ && ln -sfn $R/build-deps build-deps)
( cd /root/t-base && bash .device/build.sh minfer > $OUT/build-base.log 2>&1; echo "base build rc $? at $SECONDS s" ) &
bash .device/build.sh > $OUT/build-main.log 2>&1 || { tail -20 $OUT/build-main.log; exit 1; }
echo "main built: $SECONDS s"
B=./build-gpu/minfer X=/root/t-base/build-gpu/minfer
( $B synth --shape llama-8b --type q4_0 -o /root/l8.gguf > /dev/null 2>&1; $B synth --shape llama-1b --type f16 -o /root/l1f.gguf > /dev/null 2>&1 ) &
$B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1
timeout 150 ctest --test-dir build-gpu -L gpu -E test_gpu_model --output-on-failure > $OUT/ctest.log 2>&1
echo "ctest rc $?: $SECONDS s"
grep -E "tests passed|Failed|\*\*\*|Skipped|Not Run" $OUT/ctest.log | tail -8
wait
run() { local x=$1; shift; timeout ${T:-40} $x bench "$@" 2>&1 | grep -E "^\| [a-z]" | tail -1 | sed 's/| [a-z0-9]* | cuda | flash //'; }
for i in 1 2; do
    echo "v2l tg64 base  $(T=25 run $X -m /root/v2l.gguf -p 0 -n 64 -r 3)"
    echo "v2l tg64 main  $(T=25 run $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
done 2>&1 | tee $OUT/ab.log
echo "l8 pp512 main  $(T=25 run $B -m /root/l8.gguf -p 512 -n 0 -r 3)"
echo "l8 tg128 main  $(T=25 run $B -m /root/l8.gguf -p 0 -n 128 -r 3)"
echo "l1f pp512 main $(T=25 run $B -m /root/l1f.gguf -p 512 -n 0 -r 3)"
echo "v2l d16384 main $(T=60 run $B -m /root/v2l.gguf -p 0 -n 16 -r 1 --depth 16384)"
echo "total $SECONDS s"
