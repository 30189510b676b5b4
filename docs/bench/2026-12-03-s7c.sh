#!/bin/bash
# Seventh session, call 3 (warm machine after s7b): SmolLM2 joined from its three pieces;
# test_gpu_model on wip/all; then the headline workloads, main and wip/all alternated.
# Carry: build-deps, .device, .carry/SmolLM2-135M-Instruct.Q4_1.gguf.part-ac.d
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
mkdir -p /root/smol && cp .carry/*/SmolLM2-135M-Instruct.Q4_1.gguf.part-* /root/smol/ 2>/dev/null
mkdir -p /root/.cache/minfer && cat /root/smol/SmolLM2-135M-Instruct.Q4_1.gguf.part-a? > /root/.cache/minfer/SmolLM2-135M-Instruct.Q4_1.gguf
ls -l /root/.cache/minfer/
X=/root/t-all/build-gpu
(cd /root/t-all && bash .device/build.sh test_gpu_model > $OUT/build-model.log 2>&1) || tail -5 $OUT/build-model.log
MINFER_CACHE=/root/.cache/minfer timeout 200 $X/tests/test_gpu_model > $OUT/all-test_gpu_model.log 2>&1
echo "all test_gpu_model rc $?: $(grep -E 'test cases' $OUT/all-test_gpu_model.log)"
B=./build-gpu/minfer
[ -f /root/v2lq8.gguf ] || $B synth --shape deepseek-v2-lite --type q8_0 -o /root/v2lq8.gguf > /dev/null 2>&1
run() { local x=$1; shift; timeout ${T:-40} $x bench "$@" 2>&1 | grep -E "^\| [a-z]" | grep -v "^| model" | sed 's/| [a-z0-9]* | cuda | flash //' | paste -sd' '; }
{
    for i in 1 2; do
        for a in "-m /root/l8.gguf -p 512 -n 128 -r 3" "-m /root/l1f.gguf -p 512 -n 128 -r 3" \
                 "-m /root/v2l.gguf -p 512 -n 64 -r 3"; do
            echo "$a | main | $(run $B $a)"
            echo "$a | all | $(run $X/minfer $a)"
        done
    done
    for a in "-m /root/v2l.gguf -p 0 -n 16 -r 2 --depth 32768" "-m /root/v2lq8.gguf -p 0 -n 16 -r 2 --depth 16384" \
             "-m /root/l8.gguf -p 0 -n 32 -r 2 --depth 16384"; do
        echo "$a | all | $(T=90 run $X/minfer $a)"
    done
} 2>&1 | tee $OUT/headline.log
echo "total $SECONDS s"
