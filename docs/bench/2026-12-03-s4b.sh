#!/bin/bash
# Fourth session, call 2 of 2: join SmolLM2 and run test_gpu_model; K split on/off A/B
# (MINFER_CUDA_KSPLIT=0), alternating; then minfer against llama.cpp (docs/bench/gpu-vs-llamacpp.sh).
# Carry: build-deps, .device, .lcpp, .carry/SmolLM2-135M-Instruct.Q4_1.gguf.part-ab.d
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
M=SmolLM2-135M-Instruct.Q4_1.gguf
mkdir -p /root/.cache/minfer && cat /root/pieces/$M.part-aa .carry/$M.part-ab.d/$M.part-ab > /root/.cache/minfer/$M
echo "sha256 $(sha256sum /root/.cache/minfer/$M | cut -c1-16) (want b179c9523d0e6a0f)"
bash .device/build.sh > $OUT/build.log 2>&1 || { tail -20 $OUT/build.log; exit 1; }
timeout 120 build-gpu/tests/test_gpu_model > $OUT/model.log 2>&1; echo "test_gpu_model rc $?"; grep -E "SKIP|skipp|status|Status|test cases" $OUT/model.log | tail -4
B=./build-gpu/minfer
run() { timeout 60 $B bench -m /root/$1.gguf -p 0 -n 128 -r 3 2>&1 | grep -E "^\| [a-z]" | tail -1 | sed 's/| llama | cuda | flash //'; }
for rep in 1 2 3; do
    for m in llama-8b-q4_0 llama-1b-q4_0 llama-1b-f16; do
        echo "$m ksplit=1 $(run $m)"
        echo "$m ksplit=0 $(MINFER_CUDA_KSPLIT=0 run $m)"
    done
done > $OUT/ksplit-ab.log 2>&1
cut -c1-110 $OUT/ksplit-ab.log
echo "A/B done: $SECONDS s"
if [ ! -x /root/lcpp/build/bin/llama-bench ]; then
    timeout 200 ninja -C /root/lcpp/build llama-bench > $OUT/lcpp-build2.log 2>&1; echo "llama.cpp build rc $?"
fi
timeout $((560 - SECONDS)) bash docs/bench/gpu-vs-llamacpp.sh llama-8b:q4_0 llama-1b:q4_0 llama-1b:f16 llama-8b:q4_0:16384 2>&1 | tee $OUT/vs-llamacpp.md
echo "total $SECONDS s"
