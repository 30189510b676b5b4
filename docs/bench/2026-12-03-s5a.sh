#!/bin/bash
# Fifth session, call 1 of 3 (back to back): main and three branches built side by side (main's tree
# plus each branch's code diff, .device/{mla,f16,mmq}.patch = `git diff main wip/X -- cuda tests core`),
# main's GPU suites (test_gpu_model waits for SmolLM2, whose first piece this call keeps in /root),
# each branch's suites, then alternating A/B: V2-Lite q4_0 at depth 16384 and 4096 (wip/mla-8warp),
# llama-1b f16 tg128 (wip/f16-rows), llama-8b q4_0 pp512 (wip/mmq-i2f).
# Carry: build-deps, .device, .carry/SmolLM2-135M-Instruct.Q4_1.gguf.part-aa.d
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
R=$PWD
mkdir -p /root/pieces /root/bd && cp .carry/*.part-aa.d/* /root/pieces/ && cp -r build-deps/. /root/bd/
for w in mla f16 mmq; do
    mkdir -p /root/t-$w
    tar --exclude=./build-gpu --exclude=./.carry --exclude=./.device --exclude=./.lcpp --exclude=./build-deps -cf - . | tar -xf - -C /root/t-$w
    (cd /root/t-$w && patch -p1 -s < $R/.device/$w.patch && mkdir -p .device && cp $R/.device/build.sh .device/ && ln -sfn $R/build-deps build-deps)
done
( bash .device/build.sh > $OUT/build-main.log 2>&1; echo "main build rc $? at $SECONDS s" ) &
( cd /root/t-mla && bash .device/build.sh minfer test_gpu_attention test_gpu_deepseek2 > $OUT/build-mla.log 2>&1; echo "mla build rc $? at $SECONDS s" ) &
( cd /root/t-f16 && bash .device/build.sh minfer test_gpu_ops > $OUT/build-f16.log 2>&1; echo "f16 build rc $? at $SECONDS s" ) &
( cd /root/t-mmq && bash .device/build.sh minfer test_gpu_ops > $OUT/build-mmq.log 2>&1; echo "mmq build rc $? at $SECONDS s" ) &
wait
B=./build-gpu/minfer
[ -x $B ] || { tail -30 $OUT/build-main.log; exit 1; }
( for s in deepseek-v2-lite:q4_0:v2l llama-1b:f16:l1f llama-8b:q4_0:l8; do
    IFS=: read -r shape type name <<< "$s"; $B synth --shape $shape --type $type -o /root/$name.gguf > /dev/null 2>&1
  done; echo "synth done at $SECONDS s" ) &
timeout 200 ctest --test-dir build-gpu -L gpu -E test_gpu_model --output-on-failure > $OUT/ctest.log 2>&1
echo "ctest rc $?: $SECONDS s"
grep -E "tests passed|Failed|\*\*\*|Passed|Skipped|Not Run" $OUT/ctest.log | tail -10
for t in mla:test_gpu_attention mla:test_gpu_deepseek2 f16:test_gpu_ops mmq:test_gpu_ops; do
    IFS=: read -r w name <<< "$t"
    timeout 90 /root/t-$w/build-gpu/tests/$name > $OUT/$w-$name.log 2>&1; echo "$w $name rc $?: $(grep -E 'test cases' $OUT/$w-$name.log)"
done
grep -h -B3 -A10 "ERROR" $OUT/*-test_gpu_*.log | head -40
wait
run() { local x=$1; shift; timeout ${T:-60} $x bench "$@" 2>&1 | grep -E "^\| [a-z]" | tail -1 | sed 's/| [a-z0-9]* | cuda | flash //'; }
{
for rep in 1 2; do
    for w in main mmq; do X=$B; [ $w = main ] || X=/root/t-$w/build-gpu/minfer; echo "l8 pp512 $w $(run $X -m /root/l8.gguf -p 512 -n 0 -r 3)"; done
    for w in main f16; do X=$B; [ $w = main ] || X=/root/t-$w/build-gpu/minfer; echo "l1f tg128 $w $(run $X -m /root/l1f.gguf -p 0 -n 128 -r 3)"; done
done
for d in 16384 4096 16384; do
    for w in main mla; do
        X=$B; [ $w = main ] || X=/root/t-$w/build-gpu/minfer
        [ $SECONDS -lt 520 ] && echo "v2l d$d $w $(T=70 run $X -m /root/v2l.gguf -p 0 -n 16 -r 1 --depth $d)"
    done
done
} 2>&1 | tee $OUT/ab.log
echo "total $SECONDS s"
