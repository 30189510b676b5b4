#!/bin/bash
# Fifth session, last call (about 4 minutes of device time left): main (mmq cp.async, new combine,
# 16-bit decode rows, 8-warp MLA) and wip/f16-coalesced (.device/coal.patch) built side by side.
# First what issue 7 needs: V2-Lite q4_0 (f16 latent) MLA against --mla-expanded at depths 4096 and
# 16384 with the new combine; then the branch's test_gpu_ops and pp512 A/B; time allowing, headline tg.
# Carry: build-deps, .device
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
R=$PWD
mkdir -p /root/t-coal
tar --exclude=./build-gpu --exclude=./.carry --exclude=./.device --exclude=./.lcpp --exclude=./build-deps -cf - . | tar -xf - -C /root/t-coal
(cd /root/t-coal && patch -p1 -s < $R/.device/coal.patch && mkdir -p .device && cp $R/.device/build.sh .device/ && ln -sfn $R/build-deps build-deps)
( cd /root/t-coal && bash .device/build.sh minfer test_gpu_ops > $OUT/build-coal.log 2>&1; echo "coal build rc $? at $SECONDS s" ) &
bash .device/build.sh minfer > $OUT/build-main.log 2>&1 || { tail -20 $OUT/build-main.log; exit 1; }
echo "main built: $SECONDS s"
B=./build-gpu/minfer X=/root/t-coal/build-gpu/minfer
( $B synth --shape llama-8b --type q4_0 -o /root/l8.gguf > /dev/null 2>&1; $B synth --shape llama-1b --type f16 -o /root/l1f.gguf > /dev/null 2>&1 ) &
$B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1
run() { local x=$1; shift; timeout ${T:-40} $x bench "$@" 2>&1 | grep -E "^\| [a-z]" | tail -1 | sed 's/| [a-z0-9]* | cuda | flash //'; }
for d in 16384 4096; do
    echo "v2l d$d mla      $(run $B -m /root/v2l.gguf -p 0 -n 16 -r 1 --depth $d)"
    echo "v2l d$d expanded $(run $B -m /root/v2l.gguf -p 0 -n 16 -r 1 --depth $d --mla-expanded)"
done 2>&1 | tee $OUT/mla-vs-expanded.log
wait
timeout 30 /root/t-coal/build-gpu/tests/test_gpu_ops > $OUT/coal-ops.log 2>&1; echo "coal test_gpu_ops rc $?: $(grep -E 'test cases' $OUT/coal-ops.log)"
grep -B2 -A8 "ERROR" $OUT/coal-ops.log | head -20
for m in l1f l8; do
    [ $SECONDS -lt 200 ] || break
    echo "$m pp512 main $(T=25 run $B -m /root/$m.gguf -p 512 -n 0 -r 3)"
    echo "$m pp512 coal $(T=25 run $X -m /root/$m.gguf -p 512 -n 0 -r 3)"
done 2>&1 | tee $OUT/ab.log
[ $SECONDS -lt 215 ] && echo "l8 tg128 main $(T=20 run $B -m /root/l8.gguf -p 0 -n 128 -r 2)"
[ $SECONDS -lt 225 ] && echo "l1f tg128 main $(T=15 run $B -m /root/l1f.gguf -p 0 -n 128 -r 2)"
echo "total $SECONDS s"
