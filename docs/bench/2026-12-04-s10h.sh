#!/bin/bash
# Tenth session, eighth and ninth calls, run back to back on the machine s10g left warm (its
# /root/bins and /root/v2l.gguf still there): the 8B q4_0, main vs rope-early, three rounds, then
# V2-Lite and the 8B at depth 16384, one run each. Carry: build-deps.
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
B=/root/bins/main E=/root/bins/early
$B synth --shape llama-8b --type q4_0 -o /root/l8.gguf > /dev/null 2>&1
for i in 1 2 3; do
    echo "l8 tg128 | main | $(bench_rows $B -m /root/l8.gguf -p 0 -n 128 -r 3)"
    echo "l8 tg128 | early | $(bench_rows $E -m /root/l8.gguf -p 0 -n 128 -r 3)"
done
# (the second call)
for x in $B $E; do
    echo "v2l tg16 @ 16384 | $(basename $x) | $(T=90 bench_rows $x -m /root/v2l.gguf -p 0 -n 16 -r 1 --depth 16384)"
    echo "l8 tg32 @ 16384 | $(basename $x) | $(T=90 bench_rows $x -m /root/l8.gguf -p 0 -n 32 -r 1 --depth 16384)"
done
