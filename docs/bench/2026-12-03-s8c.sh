#!/bin/bash
# Eighth session, third call, on the machine s8b left warm (its /root/bins and /root/*.gguf): llama-1b
# f16 (which the norm fusion does not quantize), llama-8b at depth 16384, V2-Lite at depth 32768 with
# the latent cache and with --mla-expanded. Run as one command line; carry: build-deps.
export LD_LIBRARY_PATH=$PWD/build-deps/lib; source docs/bench/device-lib.sh; B=/root/bins/main G=/root/bins/gate
ls /root/bins /root/*.gguf | head
$B synth --shape llama-1b --type f16 -o /root/l1f.gguf >/dev/null 2>&1
{
    for i in 1 2; do
        echo "l1 f16 tg128 | main | $(bench_rows $B -m /root/l1f.gguf -p 512 -n 128 -r 3)"
        echo "l1 f16 tg128 | gate | $(bench_rows $G -m /root/l1f.gguf -p 512 -n 128 -r 3)"
    done
    echo "l8 tg16 @ 16384 | main | $(T=90 bench_rows $B -m /root/l8.gguf -p 0 -n 16 -r 1 --depth 16384)"
    echo "l8 tg16 @ 16384 | gate | $(T=90 bench_rows $G -m /root/l8.gguf -p 0 -n 16 -r 1 --depth 16384)"
    echo "at $SECONDS"
    echo "v2l tg16 @ 32768 | gate | $(T=150 bench_rows $G -m /root/v2l.gguf -p 0 -n 16 -r 1 --depth 32768)"
    echo "at $SECONDS"
    echo "v2l tg16 @ 32768 | gate --mla-expanded | $(T=150 bench_rows $G -m /root/v2l.gguf -p 0 -n 16 -r 1 --depth 32768 --mla-expanded)"
} 2>&1 | tee $OUT/ab2.log
echo "total $SECONDS"
