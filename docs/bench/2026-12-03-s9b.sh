#!/bin/bash
# Ninth session, second call: main (f84f009: add-fuse merged), wip/q-load (6bf4d72: attention queries
# loaded with every load in flight at once) and wip/moe-order (8016357, on q-load: the shared experts'
# gate_up first so the routed one reuses its quantized x; both residual adds stored by the down
# projections), built on the development machine (sm_90, Release), carried xz-compressed in .carry/c2.
# Suites first (q-load's test_gpu_attention, moe-order's test_gpu_moe and
# test_gpu_deepseek2), then alternating A/B rounds, then V2-Lite at depth 16384.
# Carry: build-deps, .carry/c2
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
D=/root/bins
mkdir -p $D
for f in main qload moe test_gpu_attention test_gpu_deepseek2 test_gpu_moe; do
    python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" \
        .carry/c2/$f.xz $D/$f && chmod +x $D/$f
done
B=$D/main Q=$D/qload M=$D/moe
$M bench --help > /dev/null 2>&1 || { echo "carried binaries do not run: $($M bench --help 2>&1 | head -2)"; exit 1; }
echo "binaries ready: $SECONDS s"
$B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
$B synth --shape llama-1b --type q4_0 -o /root/l1.gguf > /dev/null 2>&1 &
$B synth --shape llama-8b --type q4_0 -o /root/l8.gguf > /dev/null 2>&1 &
for t in test_gpu_attention test_gpu_deepseek2 test_gpu_moe; do
    timeout 150 $D/$t > $OUT/$t.log 2>&1
    echo "$t rc $?: $(grep -E 'test cases' $OUT/$t.log)"
    grep -B3 -A12 "ERROR" $OUT/$t.log | head -30
done
wait
echo "suites done: $SECONDS s"
run() { bench_rows "$@"; }
{
    for i in 1 2 3; do
        echo "v2l tg64 | main | $(run $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | qload | $(run $Q -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | moe | $(run $M -m /root/v2l.gguf -p 0 -n 64 -r 3)"
    done
    for i in 1 2; do
        echo "l8 tg128 | main | $(run $B -m /root/l8.gguf -p 0 -n 128 -r 3)"
        echo "l8 tg128 | qload | $(run $Q -m /root/l8.gguf -p 0 -n 128 -r 3)"
        echo "l1 tg128 | main | $(run $B -m /root/l1.gguf -p 0 -n 128 -r 3)"
        echo "l1 tg128 | qload | $(run $Q -m /root/l1.gguf -p 0 -n 128 -r 3)"
    done
    echo "at $SECONDS s"
    echo "v2l tg16 @ 16384 | main | $(T=90 run $B -m /root/v2l.gguf -p 0 -n 16 -r 1 --depth 16384)"
    echo "v2l tg16 @ 16384 | moe | $(T=90 run $M -m /root/v2l.gguf -p 0 -n 16 -r 1 --depth 16384)"
    echo "at $SECONDS s"
    if [ $SECONDS -lt 420 ]; then
        echo "l8 tg16 @ 16384 | main | $(T=60 run $B -m /root/l8.gguf -p 0 -n 16 -r 1 --depth 16384)"
        echo "l8 tg16 @ 16384 | qload | $(T=60 run $Q -m /root/l8.gguf -p 0 -n 16 -r 1 --depth 16384)"
    fi
} 2>&1 | tee $OUT/ab.log
echo "total $SECONDS s"
