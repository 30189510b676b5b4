#!/bin/bash
# Seventh session, last two calls, back to back on one warm machine. SmolLM2-135M Q4_1 (98 MB) is over
# one call's carry limit: `head -c 53000000` of it travels in .carry/s1 (call 1: `bash THIS park`),
# the rest in .carry/s2 with build-deps and .device (call 2: `bash THIS`), joined in /root.
# Call 2 builds main and runs every GPU suite (test_gpu_model included), then the headline decode.
set -u
if [ "${1:-}" = park ]; then mkdir -p /root/smol && cp .carry/s1/part1 /root/smol/ && ls -l /root/smol; exit; fi
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
mkdir -p /root/cache && cat /root/smol/part1 .carry/s2/part2 > /root/cache/SmolLM2-135M-Instruct.Q4_1.gguf
ls -l /root/cache
bash .device/build.sh > $OUT/build-main.log 2>&1 || { tail -20 $OUT/build-main.log; exit 1; }
echo "built: $SECONDS s"
(cd build-gpu && MINFER_CACHE=/root/cache timeout 200 ctest -L gpu --output-on-failure > $OUT/ctest.log 2>&1; echo "ctest rc $?")
grep -E "Test +#|tests passed" $OUT/ctest.log
grep -E "test cases" build-gpu/Testing/Temporary/LastTest.log | head -10
B=./build-gpu/minfer
$B synth --shape llama-8b --type q4_0 -o /root/l8.gguf > /dev/null 2>&1
run() { local x=$1; shift; timeout ${T:-40} $x bench "$@" 2>&1 | grep -E "^\| [a-z]" | grep -v "^| model" | sed 's/| [a-z0-9]* | cuda | flash //' | paste -sd' '; }
echo "l8 | $(run $B -m /root/l8.gguf -p 512 -n 128 -r 3)" | tee $OUT/bench.log
echo "total $SECONDS s"
