#!/bin/bash
# Seventh session, one call (the s7a..c series lost its machine between calls): main and wip/all (the
# six waiting branches merged, with swiglu-quant's test fixed) built side by side; every GPU suite but
# test_gpu_model on wip/all; then each workload alternating main / all, two rounds, and the switches
# that isolate one branch inside all (MINFER_CUDA_FUSE_SWIGLU=0).
# Before: git diff main...wip/all -- cuda tests core models tools > .device/all.patch
# Carry: build-deps, .device
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
R=$PWD
rm -rf /root/t-all; mkdir -p /root/t-all
tar --exclude=./build-gpu --exclude=./.carry --exclude=./.device --exclude=./.lcpp --exclude=./build-deps -cf - . | tar -xf - -C /root/t-all
(cd /root/t-all && patch -p1 -s < $R/.device/all.patch && mkdir -p .device && cp $R/.device/build.sh .device/ && ln -sfn $R/build-deps build-deps) || echo "patch failed"
GPU_TESTS="test_gpu_ops test_gpu_attention test_gpu_attn_backends test_gpu_deepseek2 test_gpu_gemma3 test_gpu_moe"
( cd /root/t-all && bash .device/build.sh minfer $GPU_TESTS > $OUT/build-all.log 2>&1; echo "all build rc $? at $SECONDS s" ) &
bash .device/build.sh minfer > $OUT/build-main.log 2>&1 || { tail -20 $OUT/build-main.log; exit 1; }
echo "main built: $SECONDS s"
B=./build-gpu/minfer X=/root/t-all/build-gpu/minfer
for s in llama-8b:q4_0:l8 llama-1b:f16:l1f deepseek-v2-lite:q4_0:v2l; do
    IFS=: read -r shape type name <<< "$s"
    $B synth --shape $shape --type $type -o /root/$name.gguf > /dev/null 2>&1 &
done
wait
echo "all built, models synthesized: $SECONDS s"
for t in $GPU_TESTS; do
    timeout 120 /root/t-all/build-gpu/tests/$t > $OUT/all-$t.log 2>&1
    echo "all $t rc $?: $(grep -E 'test cases' $OUT/all-$t.log)"
done
run() { local x=$1; shift; timeout ${T:-40} $x bench "$@" 2>&1 | grep -E "^\| [a-z]" | grep -v "^| model" | sed 's/| [a-z0-9]* | cuda | flash //' | paste -sd' '; }
{
    for i in 1 2; do
        for a in "-m /root/l8.gguf -p 512 -n 128 -r 3" "-m /root/l1f.gguf -p 512 -n 128 -r 3" \
                 "-m /root/v2l.gguf -p 512 -n 64 -r 3"; do
            echo "$a | main | $(run $B $a)"
            echo "$a | all | $(run $X $a)"
        done
        echo "l8 tg128 | all FUSE_SWIGLU=0 | $(MINFER_CUDA_FUSE_SWIGLU=0 run $X -m /root/l8.gguf -p 0 -n 128 -r 3)"
        echo "v2l tg64 | all FUSE_SWIGLU=0 | $(MINFER_CUDA_FUSE_SWIGLU=0 run $X -m /root/v2l.gguf -p 0 -n 64 -r 3)"
    done
    echo "at $SECONDS s"
    for a in "-m /root/l8.gguf -p 16 -n 0 -r 3 --depth 16384" "-m /root/v2l.gguf -p 0 -n 16 -r 2 --depth 16384"; do
        echo "$a | main | $(T=90 run $B $a)"
        echo "$a | all | $(T=90 run $X $a)"
    done
    [ $SECONDS -lt 480 ] && echo "-m v2l -n 16 --depth 32768 | all | $(T=90 run $X -m /root/v2l.gguf -p 0 -n 16 -r 1 --depth 32768)"
} 2>&1 | tee $OUT/ab.log
echo "total $SECONDS s"
