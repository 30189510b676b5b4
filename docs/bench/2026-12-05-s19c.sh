#!/bin/bash
# Nineteenth session, last call: what a quantized latent costs on CUDA. With -ctk q8_0 / q4_0 the
# latent's c_kv is quantized and its rope part kept in f16 (9fdd822); attention then takes the scalar
# flash_attn_kernel (HDR = 64), not the tensor-core MLA kernel an f16 latent takes. Prediction: at 16k
# the latent is ~0.5 GB a token either way (0.3 GB in q8_0), so bytes do not decide; the scalar kernel
# took V2-Lite's attention from ~1.2 ms to ~2 ms a token before the MLA kernel (PERFORMANCE, sixth to
# fourteenth sessions): tg32 at 16k 480 -> ~300-350 t/s with q8_0; depth 0 within 2%.
# Binaries: .carry/main (main: minfer). Carry: build-deps, .carry/main
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
unpack_pack .carry/main /root/main
M=/root/main/minfer
[ -f /root/v2l.gguf ] || $M synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1
{
    for t in f16 q8_0 q4_0; do
        echo "v2l 16k | -ctk $t | $(T=90 bench_rows $M -m /root/v2l.gguf -p 0 -n 32 -r 2 --depth 16384 -ctk $t)"
    done
    echo "v2l tg64 | -ctk q8_0 | $(bench_rows $M -m /root/v2l.gguf -p 0 -n 64 -r 3 -ctk q8_0)"
    echo "v2l tg64 | -ctk f16 | $(bench_rows $M -m /root/v2l.gguf -p 0 -n 64 -r 3)"
} 2>&1 | tee $OUT/s19c.log
echo "total $SECONDS s"
