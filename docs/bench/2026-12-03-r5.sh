#!/bin/bash
# Round 5 (2026-12-03, third session): overlapped launches + capped matvec (this tree) against main
# 64e03b4 (.device/base): GPU tests, compute-sanitizer, tg A/B/C (base, new, new with MINFER_CUDA_PDL=0),
# decode profile, then 32k depths and V2-Lite depths as time allows.
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
R=$PWD
( bash .device/build.sh > $OUT/build-new.log 2>&1; echo "new build rc $?"; tail -3 $OUT/build-new.log ) &
( cd .device/base && mkdir -p .device && cp $R/.device/build.sh .device/ && ln -sf $R/build-deps build-deps && bash .device/build.sh minfer > $OUT/build-base.log 2>&1; echo "base build rc $?" ) &
wait
echo "builds $SECONDS s"
B=./build-gpu/minfer
$B synth --shape llama-8b --type q4_0 -o /root/l8.gguf > /dev/null 2>&1 &
$B synth --shape llama-1b --type q4_0 -o /root/l1.gguf > /dev/null 2>&1
$B synth --shape llama-1b --type f16 -o /root/l1f.gguf > /dev/null 2>&1
$B synth --shape llama-1b --type q8_0 -o /root/l1q8.gguf > /dev/null 2>&1
wait
timeout 150 ctest --test-dir build-gpu -L gpu --output-on-failure > $OUT/ctest.log 2>&1; echo "ctest rc $?"; grep -E "tests passed|Failed|\*\*\*|Passed|Skipped" $OUT/ctest.log | tail -9
echo "tests $SECONDS s"
run() { timeout 60 "$@" 2>&1 | grep -E "^\| [a-z]" | tail -1 | sed 's/| llama | cuda | flash //'; }
for m in l8 l1 l1f l1q8; do
  for rep in 1 2; do
    echo "$m base   $(run .device/base/build-gpu/minfer bench -m /root/$m.gguf -p 0 -n 128 -r 3)"
    echo "$m new    $(run $B bench -m /root/$m.gguf -p 0 -n 128 -r 3)"
    echo "$m nopdl  $(MINFER_CUDA_PDL=0 run $B bench -m /root/$m.gguf -p 0 -n 128 -r 3)"
  done
done > $OUT/ab.log 2>&1
echo "ab $SECONDS s"
echo "8B pp512 new $(run $B bench -m /root/l8.gguf -p 512 -n 0 -r 3)"
mkdir -p $OUT/san
for t in build-gpu/tests/test_gpu_ops build-gpu/tests/test_gpu_model build-gpu/tests/test_gpu_attention build-gpu/tests/test_gpu_gemma3 build-gpu/tests/test_gpu_deepseek2; do
  n=$(basename $t)
  ( timeout 120 compute-sanitizer --tool memcheck --error-exitcode 9 $t > $OUT/san/$n.log 2>&1; echo "$n sanitizer rc $?" ) &
done
wait
grep -h -E "ERROR SUMMARY" $OUT/san/*.log | sort | uniq -c
echo "sanitizer $SECONDS s"
[ $SECONDS -lt 400 ] && timeout 100 bash docs/bench/profile-decode.sh $B /root/l8.gguf > $OUT/profile-l8.md 2>&1
echo "profile $SECONDS s"
cat $OUT/ab.log
cat $OUT/profile-l8.md | head -14
echo "total $SECONDS s"
