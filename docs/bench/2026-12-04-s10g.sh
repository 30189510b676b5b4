#!/bin/bash
# Tenth session, seventh call. s10f's profile: rope_kernel (27 a V2-Lite step) and set_rows_kernel
# (27, now rotating k_pe) take 5.2 and 5.6 us a launch under ncu, mostly double-precision pow/cos/sin
# after the kernel's wait. wip/rope-early takes each thread's first angle before the wait when the
# positions are a step input (they are uploaded before the graph runs). Prediction: V2-Lite +1.5%
# (54 launches a step with the angle math off the critical path), 1B q4_0 +1% (32 ROPEs a step).
# This call: the branch's test_gpu_ops and test_gpu_attention (ROPE and the folded store, bit for
# bit), then main (664a386) vs rope-early, four alternating rounds each on V2-Lite and the 1B.
# Carry: build-deps, .carry/next12
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
unpack_bins .carry/next12 main early test_gpu_ops test_gpu_attention
D=/root/bins B=$D/main E=$D/early
$B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
$B synth --shape llama-1b --type q4_0 -o /root/l1.gguf > /dev/null 2>&1 &
run_suites test_gpu_ops test_gpu_attention
wait
{
    for i in 1 2 3 4; do
        echo "v2l tg64 | main | $(bench_rows $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | early | $(bench_rows $E -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "l1 tg128 | main | $(bench_rows $B -m /root/l1.gguf -p 0 -n 128 -r 5)"
        echo "l1 tg128 | early | $(bench_rows $E -m /root/l1.gguf -p 0 -n 128 -r 5)"
    done
} 2>&1 | tee $OUT/ab.log
echo "total $SECONDS s"
