#!/bin/bash
# Fourteenth session: wrow. weight_row (the decode matvecs' row address) divided four times, int64
# (the broadcast ratios and the batch indices), each a ~25-instruction dependent chain behind a
# 64-bit check: ~126 of a staged Q4_0 matvec warp's ~212 instructions before its first cp.async.
# Without a broadcast (every weight matrix) it now adds the strides and divides nothing.
# Prediction (written before the run): ~0.25 us a dense decode matvec; 1B +2.3%, V2-Lite +2%, 8B +1%.
# Binaries: .carry/base (main 1437b92, id-diet), .carry/wrow (the change).
# Carry: build-deps, .carry/base, .carry/wrow
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }  # the tests' compiled-in source dir
unpack_pack .carry/base /root/bins-main
unpack_pack .carry/wrow
M=/root/bins-main/minfer B=/root/bins/minfer
[ -f /root/v2l.gguf ] || $B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
[ -f /root/l1.gguf ] || $B synth --shape llama-1b --type q4_0 -o /root/l1.gguf > /dev/null 2>&1 &
[ -f /root/l8.gguf ] || $B synth --shape llama-8b --type q4_0 -o /root/l8.gguf > /dev/null 2>&1 &
run_suites test_gpu_ops test_gpu_attention
wait
{
    for i in 1 2 3; do
        for m in l1 v2l l8; do
            echo "$m tg64 | main | $(bench_rows $M -m /root/$m.gguf -p 0 -n 64 -r 3)"
            echo "$m tg64 | wrow | $(bench_rows $B -m /root/$m.gguf -p 0 -n 64 -r 3)"
        done
    done
} 2>&1 | tee $OUT/s14e.log
echo "total $SECONDS s"
