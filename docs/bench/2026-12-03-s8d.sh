#!/bin/bash
# Eighth session, fourth call: the GPU suites s8b did not carry (test_gpu_gemma3, test_gpu_attention,
# test_gpu_attn_backends; built here from wip/moe-gate, carried xz-compressed in .carry/bins9), and
# compute-sanitizer memcheck over test_gpu_gemma3 (whose q/k and post norms take the one-launch
# norm fusion). Carry: build-deps, .carry/bins9.
export LD_LIBRARY_PATH=$PWD/build-deps/lib
mkdir -p /root/b9
for t in test_gpu_gemma3 test_gpu_attention test_gpu_attn_backends; do
    python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" \
        .carry/bins9/$t.xz /root/b9/$t && chmod +x /root/b9/$t
done
for t in test_gpu_gemma3 test_gpu_attention test_gpu_attn_backends; do
    timeout 150 /root/b9/$t > $OUT/$t.log 2>&1
    echo "moe-gate $t rc $?: $(grep -E 'test cases' $OUT/$t.log)"
    grep -B3 -A12 ERROR $OUT/$t.log | head -30
done
echo "at $SECONDS"
timeout 120 compute-sanitizer --tool memcheck /root/b9/test_gpu_gemma3 > $OUT/mem-gemma3.log 2>&1
echo "memcheck gemma3 rc $?: $(grep -E 'ERROR SUMMARY|test cases' $OUT/mem-gemma3.log | paste -sd' ')"
echo "total $SECONDS"
