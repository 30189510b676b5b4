#!/bin/bash
# minfer against llama.cpp (llama-bench, CUDA backend, flash attention on) on the same random-weight
# GGUF files and the same GPU, the two alternating run by run. On the device, in the repository root,
# with .lcpp (docs/bench/prepare-llamacpp.sh) and build-deps carried and minfer built in build-gpu:
#   bash docs/bench/gpu-vs-llamacpp.sh [MODEL_SPEC ...]     MODEL_SPEC = shape:type[:depth], e.g. llama-8b:q4_0:16384
# Logs go to $OUT; the last thing printed is one table: pp512 and tg128 t/s of each engine.
set -uo pipefail
out=${OUT:-/tmp}
specs=("$@")
[ ${#specs[@]} -eq 0 ] && specs=(llama-8b:q4_0 llama-8b:q8_0 llama-1b:q4_0 llama-1b:f16)
minfer=./build-gpu/minfer
lb=/root/lcpp/build/bin/llama-bench
if [ ! -x "$lb" ]; then
    mkdir -p /root/lcpp && tar -xzf .lcpp/llama.cpp.tar.gz -C /root/lcpp --strip-components=1
    cmake -S /root/lcpp -B /root/lcpp/build -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
        -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
        -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF > "$out/lcpp-cmake.log" 2>&1
    ninja -C /root/lcpp/build llama-bench > "$out/lcpp-build.log" 2>&1 || { tail -20 "$out/lcpp-build.log"; exit 1; }
    echo "llama.cpp built in $SECONDS s ($(cat /root/lcpp/MINFER_SOURCE))"
fi
echo "| model | depth | engine | pp512 t/s | tg128 t/s |"
echo "| --- | ---: | --- | ---: | ---: |"
for spec in "${specs[@]}"; do
    IFS=: read -r shape type depth <<< "$spec"
    depth=${depth:-0}
    f=/root/$shape-$type.gguf
    [ -f "$f" ] || "$minfer" synth --shape "$shape" --type "$type" -o "$f" > /dev/null
    for round in 1 2; do
        m=$("$minfer" bench -m "$f" -p 512 -n 128 -r 3 --depth "$depth" -o json 2> /dev/null |
            python3 -c 'import json,sys; j=json.load(sys.stdin); print("%.1f | %.1f" % (j["pp"]["tok_s"], j["tg"]["tok_s"]))')
        l=$("$lb" -m "$f" -p 512 -n 128 -r 3 -d "$depth" -fa 1 -ngl 99 -o json 2> "$out/lcpp-$shape-$type.err" |
            python3 -c 'import json,sys; r=json.load(sys.stdin); pp=[x["avg_ts"] for x in r if x["n_prompt"]>0]; tg=[x["avg_ts"] for x in r if x["n_gen"]>0]; print("%.1f | %.1f" % (pp[0], tg[0]))')
        echo "| $shape $type | $depth | minfer (round $round) | $m |"
        echo "| $shape $type | $depth | llama.cpp (round $round) | ${l:-failed: see lcpp-$shape-$type.err} |"
    done
done
