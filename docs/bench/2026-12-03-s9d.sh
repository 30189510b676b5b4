#!/bin/bash
# Ninth session, fourth call: main as merged (769f59d: q-load, moe-order, concat-fuse, norm-both)
# against main before the last two (8016357 code), built on the development machine (sm_90, Release),
# carried xz-compressed in .carry/c6. The merged build's remaining GPU suites (test_gpu_deepseek2,
# test_gpu_gemma3, test_gpu_attn_backends, test_gpu_moe), alternating A/B rounds on V2-Lite, the 8B and
# the 1B, then V2-Lite decode at depths 4096, 16384 and 32768 for the table.
# Carry: build-deps, .carry/c6
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
D=/root/bins
mkdir -p $D
for f in old main test_gpu_deepseek2 test_gpu_gemma3 test_gpu_attn_backends test_gpu_moe; do
    python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" \
        .carry/c6/$f.xz $D/$f && chmod +x $D/$f
done
O=$D/old B=$D/main
$B bench --help > /dev/null 2>&1 || { echo "carried binaries do not run: $($B bench --help 2>&1 | head -2)"; exit 1; }
echo "binaries ready: $SECONDS s"
$B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
$B synth --shape llama-8b --type q4_0 -o /root/l8.gguf > /dev/null 2>&1 &
$B synth --shape llama-1b --type q4_0 -o /root/l1.gguf > /dev/null 2>&1 &
for t in test_gpu_deepseek2 test_gpu_gemma3 test_gpu_attn_backends test_gpu_moe; do
    timeout 150 $D/$t > $OUT/$t.log 2>&1
    echo "$t rc $?: $(grep -E 'test cases' $OUT/$t.log)"
    grep -B3 -A12 "ERROR" $OUT/$t.log | head -30
done
wait
echo "suites done: $SECONDS s"
run() { bench_rows "$@"; }
{
    for i in 1 2; do
        echo "v2l tg64 | old | $(run $O -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | main | $(run $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
    done
    for i in 1 2 3; do
        echo "l8 tg128 | old | $(run $O -m /root/l8.gguf -p 0 -n 128 -r 3)"
        echo "l8 tg128 | main | $(run $B -m /root/l8.gguf -p 0 -n 128 -r 3)"
    done
    for i in 1 2; do
        echo "l1 tg128 | old | $(run $O -m /root/l1.gguf -p 0 -n 128 -r 3)"
        echo "l1 tg128 | main | $(run $B -m /root/l1.gguf -p 0 -n 128 -r 3)"
    done
    echo "at $SECONDS s"
    echo "v2l tg16 @ 4096 | main | $(T=60 run $B -m /root/v2l.gguf -p 0 -n 16 -r 1 --depth 4096)"
    echo "v2l tg16 @ 16384 | main | $(T=90 run $B -m /root/v2l.gguf -p 0 -n 16 -r 1 --depth 16384)"
    echo "at $SECONDS s"
    echo "v2l tg16 @ 32768 | main | $(T=170 run $B -m /root/v2l.gguf -p 0 -n 16 -r 1 --depth 32768)"
} 2>&1 | tee $OUT/ab.log
echo "total $SECONDS s"
