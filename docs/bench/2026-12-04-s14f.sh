#!/bin/bash
# Fourteenth session, last figures: every GPU suite on main (mla-diet + id-diet), two options against
# it on V2-Lite, then every figure with --busy as s13h took them.
# - wreg: the weighted MUL_MAT_ID capped at 56 registers (__maxnreg__; id-diet took it from 52 to 62:
#   5 blocks an SM instead of 6 at 192 threads, its 1,024 blocks 1.55 waves instead of 1.29; ptxas:
#   20 bytes of spills). Predicted +1% on V2-Lite.
# - MINFER_CUDA_MLA16=1 (the 16-warp MLA kernel, also on the diet now): s13a found it within noise.
# Binaries: .carry/final (main), .carry/wreg (main + the cap), pack_bins.
# Carry: build-deps, .carry/final, .carry/wreg
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }  # the tests' compiled-in source dir
unpack_pack .carry/final
unpack_pack .carry/wreg /root/bins-wreg
B=/root/bins/minfer W=/root/bins-wreg/minfer
[ -f /root/v2l.gguf ] || $B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
[ -f /root/l1.gguf ] || $B synth --shape llama-1b --type q4_0 -o /root/l1.gguf > /dev/null 2>&1 &
[ -f /root/l8.gguf ] || $B synth --shape llama-8b --type q4_0 -o /root/l8.gguf > /dev/null 2>&1 &
run_suites test_gpu_ops test_gpu_moe test_gpu_attention test_gpu_deepseek2 test_gpu_gemma3 test_gpu_attn_backends
TAG=wreg BINS=/root/bins-wreg run_suites test_gpu_moe
wait
busy() { timeout ${T:-60} $B bench "$@" 2>&1 | grep -E "^\| [a-z]|busy" | grep -v "^| model" | sed 's/| [a-z0-9]* | cuda | flash //' | paste -sd' '; }
{
    for i in 1 2 3; do
        echo "v2l tg64 | main | $(bench_rows $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | wreg | $(bench_rows $W -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | mla16 | $(MINFER_CUDA_MLA16=1 bench_rows $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
    done
    echo "v2l 4k mla16 | $(MINFER_CUDA_MLA16=1 T=90 bench_rows $B -m /root/v2l.gguf -p 0 -n 32 -r 2 --depth 4096)"
    echo "v2l d0 | $(busy -m /root/v2l.gguf -p 512 -n 64 -r 3 --busy)"
    echo "v2l 4k | $(T=90 busy -m /root/v2l.gguf -p 0 -n 32 -r 2 --depth 4096 --busy)"
    echo "v2l 16k | $(T=120 busy -m /root/v2l.gguf -p 0 -n 32 -r 2 --depth 16384 --busy)"
    echo "v2l 32k | $(T=180 busy -m /root/v2l.gguf -p 0 -n 16 -r 2 --depth 32768 --busy)"
    for m in l1 l8; do
        echo "$m d0 | $(busy -m /root/$m.gguf -p 0 -n 64 -r 3 --busy)"
        echo "$m 16k | $(T=120 busy -m /root/$m.gguf -p 0 -n 32 -r 2 --depth 16384 --busy)"
    done
} 2>&1 | tee $OUT/s14f.log
echo "total $SECONDS s"
