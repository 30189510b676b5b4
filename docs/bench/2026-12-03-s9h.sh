#!/bin/bash
# Ninth session, last call (161 s of device time left): main with set_rows' one-tensor store as it
# was before concat-fuse (a template switch) against 8016357, binaries in .carry/c9: test_gpu_attention
# and test_gpu_ops, then the 1B (s9g: -1.9%) and V2-Lite in alternating rounds.
# Carry: build-deps, .carry/c9
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
D=/root/bins
mkdir -p $D
for f in old main test_gpu_attention test_gpu_ops; do
    python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" \
        .carry/c9/$f.xz $D/$f && chmod +x $D/$f
done
O=$D/old B=$D/main
$B synth --shape llama-1b --type q4_0 -o /root/l1.gguf > /dev/null 2>&1 &
$B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
for t in test_gpu_attention test_gpu_ops; do
    timeout 60 $D/$t > $OUT/$t.log 2>&1
    echo "$t rc $?: $(grep -E 'test cases' $OUT/$t.log)"
    grep -B3 -A12 "ERROR" $OUT/$t.log | head -30
done
wait
run() { bench_rows "$@"; }
for i in 1 2 3; do
    echo "l1 tg128 | old | $(run $O -m /root/l1.gguf -p 0 -n 128 -r 3)"
    echo "l1 tg128 | main | $(run $B -m /root/l1.gguf -p 0 -n 128 -r 3)"
done 2>&1 | tee $OUT/ab.log
echo "v2l tg64 | main | $(run $B -m /root/v2l.gguf -p 0 -n 64 -r 3)" | tee -a $OUT/ab.log
echo "total $SECONDS s"
