#!/bin/bash
# Fourteenth session: id-diet, the decode matvecs' instructions (SASS counted with cuobjdump here).
# - Q4_0 / Q5_0 blocks dotted as stored: the offset (8, 16) comes off once per activation block,
#   through dp4a(offset, x) (act_offset_sum), the same integer sum with ~3 instructions a quant word
#   fewer (and one sum per activation block, shared by a warp's rows).
# - The MUL_MAT_IDs take slot and token from grid y and z, the dense decode matvecs their batch dims:
#   no 64-bit (or 32-bit) division of blockIdx.x.
# - The MUL_MAT_IDs' staged blocks read through a pointer known to be shared (LDS, not generic LD).
# matvec_q_id_kernel<Q4_0, staged> for a 2048-wide row: ~448 -> ~300 instructions a warp.
# Prediction (written before the run): routed MUL_MAT_IDs (issue-bound, s13j) ~25% shorter, V2-Lite
# +5%; the dense decode matvecs (latency-bound) a little: 1B +2%, 8B +1%. Risk: the weighted down
# kernel went from 52 to 62 registers (the two rows now share the activation loads).
# Binaries: .carry/qx4 (main 1b2355a, mla-diet), .carry/idiet (the change), pack_bins.
# Carry: build-deps, .carry/qx4, .carry/idiet
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }  # the tests' compiled-in source dir
unpack_pack .carry/qx4 /root/bins-main
unpack_pack .carry/idiet
M=/root/bins-main/minfer B=/root/bins/minfer
[ -f /root/v2l.gguf ] || $B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
[ -f /root/l1.gguf ] || $B synth --shape llama-1b --type q4_0 -o /root/l1.gguf > /dev/null 2>&1 &
[ -f /root/l8.gguf ] || $B synth --shape llama-8b --type q4_0 -o /root/l8.gguf > /dev/null 2>&1 &
run_suites test_gpu_ops test_gpu_moe test_gpu_deepseek2 test_gpu_attention test_gpu_gemma3
wait
{
    for i in 1 2 3; do
        echo "v2l tg64 | main | $(bench_rows $M -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | idiet | $(bench_rows $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
    done
    echo "v2l tg32 @ 16k | main | $(T=90 bench_rows $M -m /root/v2l.gguf -p 0 -n 32 -r 2 --depth 16384)"
    echo "v2l tg32 @ 16k | idiet | $(T=90 bench_rows $B -m /root/v2l.gguf -p 0 -n 32 -r 2 --depth 16384)"
    echo "v2l pp512 | main | $(bench_rows $M -m /root/v2l.gguf -p 512 -n 0 -r 2)"
    echo "v2l pp512 | idiet | $(bench_rows $B -m /root/v2l.gguf -p 512 -n 0 -r 2)"
    for i in 1 2; do
        for m in l1 l8; do
            echo "$m tg64 | main | $(bench_rows $M -m /root/$m.gguf -p 0 -n 64 -r 3)"
            echo "$m tg64 | idiet | $(bench_rows $B -m /root/$m.gguf -p 0 -n 64 -r 3)"
        done
    done
} 2>&1 | tee $OUT/s14c.log
echo "total $SECONDS s"
