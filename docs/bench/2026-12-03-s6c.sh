#!/bin/bash
# Sixth session, call 3: main (MMQ 64 x 128 tile merged) and wip/fa-prefill (.device/fap.patch: the
# f16 tile attention kernel takes prefill) built side by side; the branch's test_gpu_attention and
# main's test_gpu_ops; pp512 alternating main / branch / branch with MINFER_CUDA_FA_TILE_PREFILL=0 on
# the 8B q4_0 and the 1B f16; then the branch's kernel profile of one 8B pp512.
# Carry: build-deps, .device
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
R=$PWD
rm -rf /root/t-fap; mkdir -p /root/t-fap
tar --exclude=./build-gpu --exclude=./.carry --exclude=./.device --exclude=./.lcpp --exclude=./build-deps -cf - . | tar -xf - -C /root/t-fap
(cd /root/t-fap && patch -p1 -s < $R/.device/fap.patch && mkdir -p .device && cp $R/.device/build.sh .device/ && ln -sfn $R/build-deps build-deps)
( cd /root/t-fap && bash .device/build.sh minfer test_gpu_attention > $OUT/build-fap.log 2>&1; echo "fap build rc $? at $SECONDS s" ) &
bash .device/build.sh minfer test_gpu_ops > $OUT/build-main.log 2>&1 || { tail -20 $OUT/build-main.log; exit 1; }
echo "main built: $SECONDS s"
B=./build-gpu/minfer X=/root/t-fap/build-gpu/minfer
[ -f /root/l8.gguf ] || $B synth --shape llama-8b --type q4_0 -o /root/l8.gguf > /dev/null 2>&1
[ -f /root/l1f.gguf ] || $B synth --shape llama-1b --type f16 -o /root/l1f.gguf > /dev/null 2>&1
wait
echo "synth + fap build done: $SECONDS s"
timeout 150 /root/t-fap/build-gpu/tests/test_gpu_attention > $OUT/fap-attn.log 2>&1; echo "fap test_gpu_attention rc $?: $(grep -E 'test cases' $OUT/fap-attn.log)"
grep -B4 -A12 "ERROR" $OUT/fap-attn.log | head -40
timeout 90 ./build-gpu/tests/test_gpu_ops > $OUT/main-ops.log 2>&1; echo "main test_gpu_ops rc $?: $(grep -E 'test cases' $OUT/main-ops.log)"
run() { local x=$1; shift; timeout ${T:-40} $x bench "$@" 2>&1 | grep -E "^\| [a-z]" | tail -1 | sed 's/| [a-z0-9]* | cuda | flash //'; }
for i in 1 2; do
    for m in l8 l1f; do
        echo "$m pp512 main      $(T=25 run $B -m /root/$m.gguf -p 512 -n 0 -r 3)"
        echo "$m pp512 fap       $(T=25 run $X -m /root/$m.gguf -p 512 -n 0 -r 3)"
        echo "$m pp512 fap-off   $(MINFER_CUDA_FA_TILE_PREFILL=0 T=25 run $X -m /root/$m.gguf -p 512 -n 0 -r 3)"
    done
done 2>&1 | tee $OUT/ab.log
echo "l8 pp2048 main $(T=40 run $B -m /root/l8.gguf -p 2048 -n 0 -r 2)"
echo "l8 pp2048 fap  $(T=40 run $X -m /root/l8.gguf -p 2048 -n 0 -r 2)"
mkdir -p $OUT/pp
OUT=$OUT/pp PP=512 timeout 120 bash docs/bench/profile-decode.sh $X /root/l8.gguf 0 > $OUT/profile-pp512.md 2>&1; echo "pp profile rc $? at $SECONDS s"
head -14 $OUT/profile-pp512.md
echo "total $SECONDS s"
