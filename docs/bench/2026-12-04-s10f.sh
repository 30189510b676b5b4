#!/bin/bash
# Tenth session, sixth call: main 664a386 (rope-fold merged; its minfer is s10e's "ropefold"
# binary, the same code). A fresh kernel profile of the V2-Lite q4_0 decode step at depth 0
# (docs/bench/profile-decode.sh) and the depth figures for the record.
# Carry: build-deps, .carry/next11
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
unpack_bins .carry/next11 main
B=/root/bins/main
$B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1
bash docs/bench/profile-decode.sh $B /root/v2l.gguf 0 | tee $OUT/profile-d0.md
{
    for d in 4096 16384 32768; do
        echo "v2l tg16 @ $d | main | $(T=150 bench_rows $B -m /root/v2l.gguf -p 0 -n 16 -r 1 --depth $d)"
    done
} 2>&1 | tee $OUT/depths.log
echo "total $SECONDS s"
