#!/bin/bash
# Ninth session, third call: main (8016357 code: q-load + moe-order), wip/norm-both alone (on main: a
# normed x with several readers, one a quantized matmul, written and quantized by one launch) and
# wip/all9 (7fae969: main + concat-fuse + router-topk + norm-both; concat-fuse: MLA's q and latent-row
# CONCATs read by the attention kernel and the cache store; router-topk: the router's matvec picks
# the experts from its last block), built on the development machine (sm_90, Release), carried
# xz-compressed in .carry/c5. all9's suites first (new cases in test_gpu_attention, test_gpu_moe and
# test_gpu_ops), then alternating A/B rounds (MINFER_CUDA_FUSE_CONCAT=0 / MINFER_CUDA_FUSE_TOP_K=0
# take one fusion out of all9), then depth 16384.
# Carry: build-deps, .carry/c5
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
D=/root/bins
mkdir -p $D
for f in main normboth all9 test_gpu_attention test_gpu_moe test_gpu_ops; do
    python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" \
        .carry/c5/$f.xz $D/$f && chmod +x $D/$f
done
B=$D/main N=$D/normboth A=$D/all9
$A bench --help > /dev/null 2>&1 || { echo "carried binaries do not run: $($A bench --help 2>&1 | head -2)"; exit 1; }
echo "binaries ready: $SECONDS s"
$B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
$B synth --shape llama-8b --type q4_0 -o /root/l8.gguf > /dev/null 2>&1 &
for t in test_gpu_attention test_gpu_moe test_gpu_ops; do
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
        echo "v2l tg64 | normboth | $(run $N -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | all9 | $(run $A -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | all9 FUSE_CONCAT=0 | $(MINFER_CUDA_FUSE_CONCAT=0 run $A -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | all9 FUSE_TOP_K=0 | $(MINFER_CUDA_FUSE_TOP_K=0 run $A -m /root/v2l.gguf -p 0 -n 64 -r 3)"
    done
    echo "l8 tg128 | main | $(run $B -m /root/l8.gguf -p 0 -n 128 -r 3)"
    echo "l8 tg128 | all9 | $(run $A -m /root/l8.gguf -p 0 -n 128 -r 3)"
    echo "at $SECONDS s"
    echo "v2l tg16 @ 16384 | main | $(T=90 run $B -m /root/v2l.gguf -p 0 -n 16 -r 1 --depth 16384)"
    echo "v2l tg16 @ 16384 | all9 | $(T=90 run $A -m /root/v2l.gguf -p 0 -n 16 -r 1 --depth 16384)"
} 2>&1 | tee $OUT/ab.log
echo "total $SECONDS s"
