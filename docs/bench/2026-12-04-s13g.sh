#!/bin/bash
# Thirteenth session: main 11c2f68 against g = main + id-hoist (s13f's MINFER_ID_HOIST as the only
# order) + mask-step (now uploading only the changed mask entries), and h = g + act-first (the dense
# decode matvec's activation loads issued before the wait for its staged weights). The suites run on
# h, which holds all three. Carried xz-compressed in the git-ignored .carry/s13g.
# Predictions (written before the run): g: V2-Lite +1.4% at depth 0 (id-hoist), +2% at 16k (both);
# h over g: +0.5-1% on V2-Lite and the 1B (dense matvecs' act round trip overlapped with the weights').
# Carry: build-deps, .carry/s13g
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }  # the tests' compiled-in source dir
unpack_bins .carry/s13g minfer-main minfer-g minfer-h test_gpu_ops test_gpu_moe test_gpu_attention
B=/root/bins
[ -f /root/l1.gguf ] || $B/minfer-h synth --shape llama-1b --type q4_0 -o /root/l1.gguf > /dev/null 2>&1 &
[ -f /root/l8.gguf ] || $B/minfer-h synth --shape llama-8b --type q4_0 -o /root/l8.gguf > /dev/null 2>&1 &
[ -f /root/v2l.gguf ] || $B/minfer-h synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
run_suites test_gpu_ops test_gpu_moe test_gpu_attention
wait
{
    for i in 1 2 3; do
        for b in main g h; do echo "v2l tg64 | $b | $(bench_rows $B/minfer-$b -m /root/v2l.gguf -p 0 -n 64 -r 3)"; done
    done
    for i in 1 2; do
        for b in main g h; do echo "l1 tg64 | $b | $(bench_rows $B/minfer-$b -m /root/l1.gguf -p 0 -n 64 -r 3)"; done
    done
    for b in main g h; do echo "l8 tg64 | $b | $(bench_rows $B/minfer-$b -m /root/l8.gguf -p 0 -n 64 -r 3)"; done
    for b in main g h; do
        echo "v2l tg32 @ 16k | $b | $(T=90 bench_rows $B/minfer-$b -m /root/v2l.gguf -p 0 -n 32 -r 2 --depth 16384)"
    done
} 2>&1 | tee $OUT/s13g.log
echo "total $SECONDS s"
