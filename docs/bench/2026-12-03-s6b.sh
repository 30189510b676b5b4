#!/bin/bash
# Sixth session, call 2: main (with wip/ds2-stack merged) and wip/mmq-wide (.device/wide.patch) built
# side by side; the branch's test_gpu_ops; 8B q4_0 pp512 alternating main / branch, then the branch
# with its 64 x 64 tile forced and with 4-byte copies forced; 1B q4_0 and 8B q8_0 pp512 main / branch.
# Carry: build-deps, .device
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
R=$PWD
rm -rf /root/t-wide; mkdir -p /root/t-wide
tar --exclude=./build-gpu --exclude=./.carry --exclude=./.device --exclude=./.lcpp --exclude=./build-deps -cf - . | tar -xf - -C /root/t-wide
(cd /root/t-wide && patch -p1 -s < $R/.device/wide.patch && mkdir -p .device && cp $R/.device/build.sh .device/ && ln -sfn $R/build-deps build-deps)
( cd /root/t-wide && bash .device/build.sh minfer test_gpu_ops > $OUT/build-wide.log 2>&1; echo "wide build rc $? at $SECONDS s" ) &
bash .device/build.sh minfer > $OUT/build-main.log 2>&1 || { tail -20 $OUT/build-main.log; exit 1; }
echo "main built: $SECONDS s"
B=./build-gpu/minfer X=/root/t-wide/build-gpu/minfer
[ -f /root/l8.gguf ] || $B synth --shape llama-8b --type q4_0 -o /root/l8.gguf > /dev/null 2>&1
$B synth --shape llama-1b --type q4_0 -o /root/l1.gguf > /dev/null 2>&1
$B synth --shape llama-8b --type q8_0 -o /root/l8q8.gguf > /dev/null 2>&1
wait
echo "synth + wide build done: $SECONDS s"
timeout 120 /root/t-wide/build-gpu/tests/test_gpu_ops > $OUT/wide-ops.log 2>&1; echo "wide test_gpu_ops rc $?: $(grep -E 'test cases' $OUT/wide-ops.log)"
grep -B2 -A8 "ERROR" $OUT/wide-ops.log | head -30
run() { local x=$1; shift; timeout ${T:-40} $x bench "$@" 2>&1 | grep -E "^\| [a-z]" | tail -1 | sed 's/| [a-z0-9]* | cuda | flash //'; }
for i in 1 2; do
    echo "l8 pp512 main      $(T=25 run $B -m /root/l8.gguf -p 512 -n 0 -r 3)"
    echo "l8 pp512 wide      $(T=25 run $X -m /root/l8.gguf -p 512 -n 0 -r 3)"
    echo "l8 pp512 wide-t64  $(MINFER_MMQ_TILE=64 T=25 run $X -m /root/l8.gguf -p 512 -n 0 -r 3)"
    echo "l8 pp512 wide-p4   $(MINFER_MMQ_PIECE8=0 T=25 run $X -m /root/l8.gguf -p 512 -n 0 -r 3)"
done 2>&1 | tee $OUT/ab.log
for m in l1 l8q8; do
    echo "$m pp512 main $(T=25 run $B -m /root/$m.gguf -p 512 -n 0 -r 3)"
    echo "$m pp512 wide $(T=25 run $X -m /root/$m.gguf -p 512 -n 0 -r 3)"
done 2>&1 | tee -a $OUT/ab.log
echo "l8 pp128 main $(T=25 run $B -m /root/l8.gguf -p 128 -n 0 -r 3)"
echo "l8 pp128 wide $(T=25 run $X -m /root/l8.gguf -p 128 -n 0 -r 3)"
echo "total $SECONDS s"
