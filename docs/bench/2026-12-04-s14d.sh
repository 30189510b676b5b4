#!/bin/bash
# Fourteenth session: id-diet again after s14c's failure. s14c's weighted MUL_MAT_ID read its token
# from grid y while launch_id_slices put the tokens in z: every token of a prefill took token 0's
# experts (test_gpu_moe's T=5 cases and test_gpu_deepseek2's batched logits failed; decode, one token,
# was right). Fixed: blockIdx.z. The suites again, then V2-Lite against main 1b2355a.
# Prediction: as s14c (V2-Lite +5%); s14c measured +2.0% at depth 0 with the bug, whose effect on a
# one-token decode is nil, so expect +2% here, and pp512's +8% in s14c to change (it was wrong work).
# Carry: build-deps, .carry/qx4, .carry/idiet
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }  # the tests' compiled-in source dir
unpack_pack .carry/qx4 /root/bins-main
unpack_pack .carry/idiet
M=/root/bins-main/minfer B=/root/bins/minfer
[ -f /root/v2l.gguf ] || $B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
run_suites test_gpu_moe test_gpu_deepseek2 test_gpu_ops
wait
{
    for i in 1 2 3; do
        echo "v2l tg64 | main | $(bench_rows $M -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | idiet | $(bench_rows $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
    done
    echo "v2l tg32 @ 16k | main | $(T=90 bench_rows $M -m /root/v2l.gguf -p 0 -n 32 -r 2 --depth 16384)"
    echo "v2l tg32 @ 16k | idiet | $(T=90 bench_rows $B -m /root/v2l.gguf -p 0 -n 32 -r 2 --depth 16384)"
    for i in 1 2; do
        echo "v2l pp512 | main | $(bench_rows $M -m /root/v2l.gguf -p 512 -n 0 -r 3)"
        echo "v2l pp512 | idiet | $(bench_rows $B -m /root/v2l.gguf -p 512 -n 0 -r 3)"
    done
} 2>&1 | tee $OUT/s14d.log
echo "total $SECONDS s"
