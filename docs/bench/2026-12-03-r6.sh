#!/bin/bash
# Round 6 (2026-12-03, third session). This tree: overlapped launches + matvec register cap + the decode
# matvec quantizing its own activations (wip/qx). Beside it: .device/pdl (the same without the
# in-kernel quantization), .device/fuse (pdl + the add/rms_norm/mul fusion), .device/w24 (this tree
# with MIN_WARPS_PER_SM 24). GPU tests, the gemma3 seed with and without overlap, sanitizer on
# test_gpu_ops, tg A/B, then 32k depths and V2-Lite as time allows.
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
R=$PWD
( bash .device/build.sh > $OUT/build-new.log 2>&1; echo "new build rc $?" ) &
for v in pdl fuse w24; do
  ( cd .device/$v && mkdir -p .device && cp $R/.device/build.sh .device/ && ln -sf $R/build-deps build-deps && bash .device/build.sh minfer test_gpu_ops > $OUT/build-$v.log 2>&1; echo "$v build rc $?" ) &
done
wait
echo "builds $SECONDS s"
B=./build-gpu/minfer
[ -f /root/l8.gguf ] || $B synth --shape llama-8b --type q4_0 -o /root/l8.gguf > /dev/null 2>&1 &
[ -f /root/l1.gguf ] || $B synth --shape llama-1b --type q4_0 -o /root/l1.gguf > /dev/null 2>&1 &
[ -f /root/l1q8.gguf ] || $B synth --shape llama-1b --type q8_0 -o /root/l1q8.gguf > /dev/null 2>&1 &
[ -f /root/ds.gguf ] || $B synth --shape deepseek-v2-lite --type q4_0 -o /root/ds.gguf > /dev/null 2>&1 &
timeout 150 ctest --test-dir build-gpu -L gpu --output-on-failure > $OUT/ctest.log 2>&1; echo "ctest rc $?"; grep -E "tests passed|\*\*\*Failed|ERROR|values:" $OUT/ctest.log | head -12
for pdl in 1 0; do
  echo "gemma3 seed 3962424991 PDL=$pdl: $(MINFER_CUDA_PDL=$pdl MINFER_SEED=3962424991 build-gpu/tests/test_gpu_gemma3 2>&1 | grep -E 'max relative|Status' | tr '\n' ' ')"
done
for v in pdl fuse w24; do echo "$v test_gpu_ops: $(timeout 60 .device/$v/build-gpu/tests/test_gpu_ops 2>&1 | tail -2 | tr '\n' ' ')"; done
timeout 150 compute-sanitizer --tool memcheck build-gpu/tests/test_gpu_ops > $OUT/san-ops.log 2>&1
grep -E "=========" $OUT/san-ops.log | grep -v "^========= *$" | head -30
wait
echo "tests $SECONDS s"
run() { timeout ${T:-60} "$@" 2>&1 | grep -E "^\| [a-z]|KV cache" | tail -2 | sed 's/| llama | cuda | flash //' | tr '\n' ' '; echo; }
for m in l8 l1 l1q8; do
  for rep in 1 2; do
    echo "$m qx   $(run $B bench -m /root/$m.gguf -p 0 -n 128 -r 3)"
    for v in pdl fuse w24; do echo "$m $v $(run .device/$v/build-gpu/minfer bench -m /root/$m.gguf -p 0 -n 128 -r 3)"; done
  done
done > $OUT/ab.log 2>&1
cat $OUT/ab.log
echo "ab $SECONDS s"
echo "ds mem $(T=30 run $B bench -m /root/ds.gguf -p 0 -n 0 --depth 4095)"
[ $SECONDS -lt 430 ] && echo "ds d0 qx: $(T=40 run $B bench -m /root/ds.gguf -p 0 -n 64 -r 2)"
for kv in "-ctk f16 -ctv f16" "-ctk q8_0 -ctv q8_0" "--kv-window 1024 --kv-sinks 4"; do
  [ $SECONDS -lt 470 ] && echo "l8 d32768 $kv: $(T=70 run $B bench -m /root/l8.gguf -p 0 -n 32 -r 1 --depth 32768 $kv)"
done
echo "total $SECONDS s"
