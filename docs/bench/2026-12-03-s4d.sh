#!/bin/bash
# Fourth session, call 4: the MLA tensor-core decode kernel. GPU suites, then DeepSeek-V2-Lite q4_0
# (f16 latent cache) at depths 0 / 4096 / 16384 / 32768, with MINFER_CUDA_FA_TILE=0 (the old kernel)
# beside it at 4096 and 16384; the 8B at depth 32768 with the tile kernel.
# Carry: build-deps, .device
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
bash .device/build.sh > $OUT/build.log 2>&1 || { tail -30 $OUT/build.log; exit 1; }
echo "built: $SECONDS s"
B=./build-gpu/minfer
( $B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1; echo "v2l synth done: $SECONDS s" ) &
( $B synth --shape llama-8b --type q4_0 -o /root/l8.gguf > /dev/null 2>&1 ) &
timeout 200 ctest --test-dir build-gpu -L gpu --output-on-failure > $OUT/ctest.log 2>&1
echo "ctest rc $?: $SECONDS s"
grep -E "tests passed|Failed|\*\*\*|Passed|Skipped|Not Run" $OUT/ctest.log | tail -12
grep -B3 -A12 "ERROR" $OUT/ctest.log | head -60
wait
run() { timeout ${T:-100} $B bench -m /root/$1.gguf "${@:2}" 2>&1 | grep -E "^\| [a-z]" | tail -1 | sed 's/| [a-z0-9]* | cuda | flash //'; }
{
for d in 4096 16384; do
    for tile in 1 0; do echo "v2l d$d tile=$tile $(MINFER_CUDA_FA_TILE=$tile run v2l -p 0 -n 32 -r 1 --depth $d)"; done
done
echo "v2l d0 tile=1 $(run v2l -p 0 -n 64 -r 2)"
echo "v2l d32768 tile=1 $(run v2l -p 0 -n 32 -r 1 --depth 32768)"
[ $SECONDS -lt 470 ] && echo "8b d32768 tile=1 $(run l8 -p 0 -n 32 -r 1 --depth 32768)"
} 2>&1 | tee $OUT/v2l.log
echo "total $SECONDS s"
