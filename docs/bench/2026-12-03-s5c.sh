#!/bin/bash
# Fifth session, call 3 of 3 (right after s5b): SmolLM2's last piece, joined and checked; the whole
# test_gpu_model suite (GPU against CPU and against the llama.cpp golden outputs), then
# compute-sanitizer memcheck over the attention suites (main and wip/mla-8warp), whose tensor-core
# kernels have not been under the sanitizer.
# Carry: .device, .carry/SmolLM2-135M-Instruct.Q4_1.gguf.part-ac.d
set -u
export LD_LIBRARY_PATH=/root/bd/lib:${LD_LIBRARY_PATH:-}
[ -d /root/pieces ] && [ -x build-gpu/minfer ] || { echo "the machine went cold: /root or build-gpu is gone"; exit 1; }
cp .carry/*.part-ac.d/* /root/pieces/
mkdir -p /root/.cache/minfer && cat /root/pieces/*.part-* > /root/.cache/minfer/SmolLM2-135M-Instruct.Q4_1.gguf
sha256sum /root/.cache/minfer/SmolLM2-135M-Instruct.Q4_1.gguf | cut -c1-16
timeout 200 build-gpu/tests/test_gpu_model > $OUT/test_gpu_model.log 2>&1; echo "test_gpu_model rc $?: $SECONDS s"
grep -E "test cases|assertions|SKIP" $OUT/test_gpu_model.log; grep -B3 -A12 "ERROR" $OUT/test_gpu_model.log | head -40
for t in main:build-gpu mla:/root/t-mla/build-gpu; do
    IFS=: read -r w dir <<< "$t"
    [ $SECONDS -lt 380 ] || break
    timeout 200 compute-sanitizer --tool memcheck --error-exitcode 3 $dir/tests/test_gpu_attention > $OUT/sanitizer-$w.log 2>&1
    echo "sanitizer $w test_gpu_attention rc $?: $(grep -E 'ERROR SUMMARY|test cases' $OUT/sanitizer-$w.log | tr '\n' ' ')"
done
echo "total $SECONDS s"
