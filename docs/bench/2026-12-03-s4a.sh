#!/bin/bash
# Fourth session, call 1 of 2 (back to back): build minfer, all GPU suites (the K-split shapes among
# them), synthesize the llama files, build llama.cpp's llama-bench from .lcpp in the background, and
# keep SmolLM2's first piece in /root/pieces. (The file went in three 40 MB pieces, split-for-carry.sh
# FILE 40; this call and its successor assumed two: test_gpu_model ran in two more calls that only
# added the pieces and ran it.)
# Carry: build-deps, .device, .lcpp, .carry/SmolLM2-135M-Instruct.Q4_1.gguf.part-aa.d
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
mkdir -p /root/pieces && cp .carry/*.part-aa.d/* /root/pieces/
bash .device/build.sh > $OUT/build.log 2>&1 || { tail -20 $OUT/build.log; exit 1; }
echo "minfer built: $SECONDS s"
(
    mkdir -p /root/lcpp && tar -xzf .lcpp/llama.cpp.tar.gz -C /root/lcpp --strip-components=1
    cmake -S /root/lcpp -B /root/lcpp/build -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
        -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
        -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF > $OUT/lcpp-cmake.log 2>&1
    timeout 420 nice ninja -C /root/lcpp/build llama-bench > $OUT/lcpp-build.log 2>&1
    echo "llama.cpp build rc $? at $SECONDS s"
) &
B=./build-gpu/minfer
for s in llama-8b:q4_0 llama-1b:q4_0 llama-1b:f16; do
    IFS=: read -r shape type <<< "$s"
    $B synth --shape $shape --type $type -o /root/$shape-$type.gguf > /dev/null 2>&1
done
echo "synth: $SECONDS s"
timeout 240 ctest --test-dir build-gpu -L gpu --output-on-failure > $OUT/ctest.log 2>&1
echo "ctest rc $?: $SECONDS s"
grep -E "tests passed|Failed|\*\*\*|Passed|Skipped|Not Run" $OUT/ctest.log | tail -20
wait
tail -3 $OUT/lcpp-build.log
echo "total $SECONDS s"
