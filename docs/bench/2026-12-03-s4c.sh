#!/bin/bash
# Fourth session, call 3: the f16 prefill matmul and the decode attention tile kernel: GPU suites,
# then A/B with MINFER_CUDA_FA_TILE=0 (the old attention kernel) at depths 0 and 16384, f16 pp512,
# and DeepSeek-V2-Lite q4_0 at depths 0 / 4096 / 16384 / 32768 (issue 7).
# Carry: build-deps, .device
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
bash .device/build.sh > $OUT/build.log 2>&1 || { tail -30 $OUT/build.log; exit 1; }
echo "built: $SECONDS s"
B=./build-gpu/minfer
for s in llama-8b:q4_0 llama-1b:f16; do
    IFS=: read -r shape type <<< "$s"
    [ -f /root/$shape-$type.gguf ] || $B synth --shape $shape --type $type -o /root/$shape-$type.gguf > /dev/null 2>&1
done
( $B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1; echo "v2l synth done" ) &
timeout 200 ctest --test-dir build-gpu -L gpu --output-on-failure > $OUT/ctest.log 2>&1
echo "ctest rc $?: $SECONDS s"
grep -E "tests passed|Failed|\*\*\*|Passed|Skipped|Not Run" $OUT/ctest.log | tail -12
grep -B3 -A12 "ERROR" $OUT/ctest.log | head -60
run() { timeout ${T:-90} $B bench -m /root/$1.gguf "${@:2}" 2>&1 | grep -E "^\| [a-z]" | tail -1 | sed 's/| [a-z0-9]* | cuda | flash //'; }
for rep in 1 2; do
    for tile in 1 0; do
        echo "8b d16384 tile=$tile $(MINFER_CUDA_FA_TILE=$tile run llama-8b-q4_0 -p 0 -n 64 -r 2 --depth 16384)"
        echo "8b d0     tile=$tile $(MINFER_CUDA_FA_TILE=$tile run llama-8b-q4_0 -p 0 -n 128 -r 3)"
    done
done 2>&1 | tee $OUT/tile-ab.log
echo "1b f16 pp512 $(run llama-1b-f16 -p 512 -n 0 -r 3)"
echo "8b pp512 $(run llama-8b-q4_0 -p 512 -n 0 -r 3)"
echo "A/B done: $SECONDS s"
wait
for d in 0 4096 16384 32768; do
    [ $SECONDS -lt 480 ] && echo "v2l q4_0 d$d $(T=100 run v2l -p 0 -n 32 -r 1 --depth $d)"
done 2>&1 | tee $OUT/v2l.log
echo "total $SECONDS s"
