#!/bin/bash
# Sixteenth session, first call: branch wip/scale-early (rewritten this session: the fifteenth's
# branches did not survive into this checkout), two changes on the split-row MUL_MAT_IDs:
# - id-rows' bits: split_rows_dot adds a row's product as `acc = r < rows ? acc + dot : acc`, so ptxas
#   fuses it (FFMA) as lane_dot does; test_gpu_moe compares split against stored bits in both
#   MINFER_CUDA_ID_ROWS modes again.
# - scale-early: each step's offset sum starts from (weights' scale and first quant word | the
#   activation scale) & a zero read from a volatile global, so the first IDP waits for every load and
#   ptxas issues all of them first. SASS (gate_up, 16-byte split): 2 LDG.U16 + 2 LDG.128 + LDG act
#   scale + 2 LDG.128 act quants, then the first LOP3/IDP: one round trip a step instead of two.
# Prediction (written before the run): V2-Lite q4_0 +5% at depth 0 (555 -> ~580), +4% at 16k;
# pp512 +2%. Q8_0 +3%.
# Binaries: .carry/main (main ed8a14b: minfer + six suites), .carry/exp (the branch: the same).
# Carry: build-deps, .carry/main, .carry/exp
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }  # the tests' compiled-in source dir
unpack_pack .carry/main /root/main
unpack_pack .carry/exp /root/bins
M=/root/main/minfer B=/root/bins/minfer
[ -f /root/v2l.gguf ] || $B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
run_suites test_gpu_moe test_gpu_deepseek2
MINFER_CUDA_ID_ROWS=0 TAG=rows0 run_suites test_gpu_moe
run_suites test_gpu_ops test_gpu_attention test_gpu_gemma3 test_gpu_attn_backends
wait
{
    for i in 1 2 3; do
        echo "v2l tg64 | main | $(bench_rows $M -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | exp | $(bench_rows $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
    done
    echo "v2l pp512 | main | $(bench_rows $M -m /root/v2l.gguf -p 512 -n 0 -r 3)"
    echo "v2l pp512 | exp | $(bench_rows $B -m /root/v2l.gguf -p 512 -n 0 -r 3)"
    echo "v2l 16k | main | $(T=120 bench_rows $M -m /root/v2l.gguf -p 0 -n 32 -r 2 --depth 16384)"
    echo "v2l 16k | exp | $(T=120 bench_rows $B -m /root/v2l.gguf -p 0 -n 32 -r 2 --depth 16384)"
} 2>&1 | tee $OUT/s16a.log
echo "total $SECONDS s"
